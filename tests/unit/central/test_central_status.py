"""`edgefleet central status` on a SQLite data dir: read from the store itself, with no replica running.

Tried: a fresh data dir (no leader yet), a replica that announced itself and leads, one that went quiet (gone),
the JSON form, a PostgreSQL URL's password never printed, a data dir that is not one (exit 2, why).
"""

from __future__ import annotations

import contextlib
import io
import json
import time

from central.cli import main
from central.datadir import CentralPaths, initialize
from central.store import ReplicaRecord, SqliteFleetStore, display_store


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_status_names_the_store_the_leader_and_each_replica(tmp_path):
    data = tmp_path / "central"
    initialize(data, "127.0.0.1:7443")
    code, out, _ = run("central", "status", "--data-dir", str(data))
    assert code == 0
    assert out.splitlines()[:2] == [f"store: {CentralPaths(data).store}", "leader: none yet (no replica has served)"]

    now = time.time()
    store = SqliteFleetStore(CentralPaths(data).store)
    store.announce_replica(ReplicaRecord("a.example:7443", "a.example:7443", "a.example:7444", now - 60, now))
    store.announce_replica(ReplicaRecord("b.example:7443", "b.example:7443", "b.example:7444", now - 600, now - 300))
    store.claim_leadership("a.example:7443", now - 30)
    store.close()

    code, out, _ = run("central", "status", "--data-dir", str(data))
    assert code == 0
    assert "leader: a.example:7443, term 1, since " in out
    rows = {line.split()[0]: line.split()[2] for line in out.splitlines()[3:]}
    assert rows == {"a.example:7443": "leader", "b.example:7443": "gone"}

    code, out, _ = run("central", "status", "--data-dir", str(data), "--json")
    doc = json.loads(out)
    assert doc["leader"]["replica"] == "a.example:7443" and doc["leader"]["term"] == 1
    assert [(r["replica"], r["state"], r["enroll_address"]) for r in doc["replicas"]] == [
        ("a.example:7443", "leader", "a.example:7444"),
        ("b.example:7443", "gone", "b.example:7444"),
    ]


def test_a_store_password_is_never_shown():
    assert display_store("postgresql://central:s3cret@db:5432/fleet") == "postgresql://central:***@db:5432/fleet"


def test_status_of_a_dir_that_is_no_data_dir_says_why(tmp_path):
    code, out, err = run("central", "status", "--data-dir", str(tmp_path / "nothing"))
    assert code == 2 and not out
    assert "is not an initialized central data dir" in err
