"""federated.fast_supernode against a real TLS SuperLink with supernode auth: a SecAgg+ round whose aggregate is
the mean of the nodes' own updates, and a node whose key was never registered kept out."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgefleet import pki
from edgefleet.nodekeys import generate_node_key
from federated import control, fab, local_data, results, superlink
from federated.superlink_credentials import ClientAuthority
from federated.tasks import get_task

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="flwr 1.42 needs Python 3.11+")

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
# Generous: a busy machine starts the SuperLink and SuperNodes slowly; it is slow, not broken.
STARTUP_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group the process leads (it was started in its own session), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
            break
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything the leader left behind in its group


class Link:
    """A SuperLink in tmp_path and the fast SuperNodes started against it."""

    def __init__(self, root: Path):
        self.root, self.procs = root, []
        self.env = dict(
            os.environ,
            PATH=f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            FLWR_HOME=str(root / "flwr-home"),
            TMPDIR=str(root / "tmp"),  # the SuperLink's sandbox (federated.sandbox) writes only under root
        )
        (root / "tmp").mkdir(exist_ok=True)
        self.results_dir = root / "results"

    def spawn(self, command: list[str], log: Path) -> subprocess.Popen:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=log.parent, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        ca_key, ca = pki.create_ca()
        key = pki.generate_key()
        cert = pki.issue_server_certificate(ca_key, ca, key.public_key(), valid_days=1, extra_names=["127.0.0.1"])
        (self.root / "ca.pem").write_bytes(pki.certificate_pem(ca))
        (self.root / "superlink.crt").write_bytes(pki.certificate_pem(cert))
        pki.write_private(self.root / "superlink.key", pki.private_key_pem(key))
        self.address = f"127.0.0.1:{_free_port()}"
        # The Control and Runtime APIs open only to certificates from a CA made for this SuperLink.
        authority = ClientAuthority.create()
        central_dir = self.root / "central"
        central_dir.mkdir(mode=0o700, exist_ok=True)
        self.control_cert = authority.issue_control(central_dir)
        runtime_cert, runtime_key = authority.issue_runtime(self.root)
        flower_args = [
            "--host",
            "127.0.0.1",
            "--port",
            self.address.rsplit(":", 1)[1],
            "--ssl-certfile",
            str(self.root / "superlink.crt"),
            "--ssl-keyfile",
            str(self.root / "superlink.key"),
            "--ssl-ca-certfile",
            str(self.root / "ca.pem"),
            "--enable-supernode-auth",
            "--database",
            str(self.root / "superlink.db"),
            "--disable-runtime-dependency-installation",
        ]
        client_ca = authority.write_certificate(self.root / "client-ca.crt")
        self.superlink = self.spawn(
            superlink.command(self.root, client_ca, runtime_cert, runtime_key, flower_args, [self.control_cert[1]]),
            self.root / "superlink.log",
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            ctl = control.FlowerControl(self.address, (self.root / "ca.pem").read_bytes(), *self.control_cert)
            try:
                ctl.registered_nodes()
                self.ctl = ctl
                return
            except control.FlowerControlError:
                ctl.close()
                assert self.superlink.poll() is None, (self.root / "superlink.log").read_text()[-3000:]
                assert time.monotonic() < deadline, f"the SuperLink did not answer within {STARTUP_TIMEOUT_S} s"
                time.sleep(0.3)

    def node(self, index: int, *, register: bool = True) -> tuple[Path, subprocess.Popen]:
        """A data dir with 12 labeled prompts of its own and a fast SuperNode on it."""
        data = self.root / f"node{index}"
        private, public = generate_node_key()
        data.mkdir()
        pki.write_private(data / "flower.key", private)
        if register:
            self.ctl.register_node(public, f"node{index}")
        for k in range(6):
            local_data.append_example(
                data, f"patient {index}-{k} card 4111 1111 1111 {1000 + 13 * k + index}", "sensitive", "operator"
            )
            local_data.append_example(
                data, f"how do I sort a list in python, variant {k + 3 * index}", "public", "operator"
            )
        proc = self.spawn(
            [
                PY,
                "-m",
                "federated.fast_supernode",
                "--superlink",
                self.address,
                "--root-certificates",
                str(self.root / "ca.pem"),
                "--auth-supernode-private-key",
                str(data / "flower.key"),
                "--node-config",
                f"data-dir='{data}'",
                "--poll-interval",
                "0.1",
            ],
            data / "supernode.log",
        )
        return data, proc

    def wait_online(self, count: int, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while sum(s == "online" for s in self.ctl.registered_nodes().values()) < count:
            assert time.monotonic() < deadline, f"nodes online: {self.ctl.registered_nodes()}"
            time.sleep(0.3)

    def run(self, config: dict, timeout_s: float = 180) -> tuple[int, control.FlowerRun, dict]:
        blob, digest = fab.build()
        run_id = self.ctl.start_run(blob, digest, {"results-dir": str(self.results_dir), **config})
        deadline = time.monotonic() + timeout_s
        while (run := self.ctl.runs(run_id)[0]).status != "finished":
            assert time.monotonic() < deadline, f"run {run_id} not finished: {run}"
            time.sleep(0.3)
        return run_id, run, results.read_report(self.results_dir, run_id) or {}

    def stop(self) -> None:
        if getattr(self, "ctl", None) is not None:
            self.ctl.close()
        for proc in reversed(self.procs):
            _stop(proc)


@pytest.fixture
def link(tmp_path):
    link = Link(tmp_path)
    try:
        link.start()
        yield link
    finally:
        link.stop()


def test_secagg_round_aggregate_is_the_mean_of_the_local_updates(link):
    nodes = [link.node(i) for i in range(3)]
    link.wait_online(3)
    overrides = {
        "task": "sensitivity",
        "rounds": 1,
        "min-nodes": 3,
        "secagg": True,
        "local-epochs": 5,
        "timeout-s": 120.0,
        "wait-nodes-s": 120.0,
    }
    run_id, run, report = link.run(overrides)

    logs = {d: (d / "supernode.log").read_text() for d, _ in nodes}
    assert run.sub_status == "completed" and report.get("status") == "completed", (run, report, logs)
    stages = [e["stage"] for e in report["exchanges"]]
    assert stages == ["secagg:setup", "secagg:share_keys", "secagg:collect_masked_vectors", "secagg:unmask"]
    for data, proc in nodes:
        assert proc.poll() is None, logs[data]
        assert logs[data].count(f"run {run_id} round 1: train secagg:") == 4, logs[data]

    with np.load(results.aggregate_path(link.results_dir, run_id)) as npz:
        aggregate = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    task = get_task("sensitivity")
    config = {**fab.DEFAULT_RUN_CONFIG, **overrides}
    updates = [task.local_update(data, task.initial_arrays(config), config).arrays for data, _ in nodes]
    expected = [np.mean([u[i] for u in updates], axis=0) for i in range(len(aggregate))]
    # SecAgg+ quantizes each value within +-clipping_range (8) to 2^22 levels: steps of about 4e-6.
    for got, want in zip(aggregate, expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert np.abs(expected[0]).max() > 1e-3  # the nodes did train: not a trivially equal zero vector


def test_node_whose_key_is_not_registered_cannot_join(link):
    (good, _), (stranger, proc) = link.node(0), link.node(1, register=False)
    assert proc.wait(60) != 0
    log = (stranger / "supernode.log").read_text()
    assert "Failed to activate SuperNode" in log and "is this node's public key registered" in log, log
    link.wait_online(1)
    assert list(link.ctl.registered_nodes().values()) == ["online"]

    _, run, report = link.run(
        {"task": "sensitivity", "rounds": 1, "min-nodes": 2, "secagg": True, "wait-nodes-s": 3.0, "timeout-s": 10.0},
        timeout_s=120,
    )
    assert run.sub_status == "failed" and report.get("status") == "failed", (run, report)
    assert "only 1 of the 2 nodes needed connected" in report["error"], report
    assert " train " not in (good / "supernode.log").read_text()  # the run never reached the node


def test_only_the_code_free_edgefleet_fab_is_accepted():
    import hashlib

    import tomli_w
    from flwr.cli.build import build_fab_from_files

    from federated.fast_supernode import FabRefused, check_fab

    blob, digest = fab.build()
    check_fab(blob, digest)

    def built(files: dict) -> tuple[bytes, str]:
        data, _ = build_fab_from_files(files)
        return data, hashlib.sha256(data).hexdigest()

    pyproject = tomli_w.dumps(fab.pyproject()).encode()
    with pytest.raises(FabRefused, match=re.escape("more than configuration: evil.py")):
        check_fab(*built({"pyproject.toml": pyproject, "evil.py": b"import os; os.system('id')\n"}))
    other = fab.pyproject()
    other["tool"]["flwr"]["app"]["components"]["clientapp"] = "evil:client_app"
    with pytest.raises(FabRefused, match="names components"):
        check_fab(*built({"pyproject.toml": tomli_w.dumps(other).encode()}))
    with pytest.raises(FabRefused, match="sha256"):
        check_fab(blob, "0" * 64)
