"""Central's addresses kept in fleet.json and followed: the check on a list (from a heartbeat or an operator), the
file written atomically with the rest of it unchanged, the control loop taking a new list from central or from
the file edited on disk, and `edge-agent central-addresses [set]`."""

import contextlib
import datetime as dt
import json
import re
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge_agent import cli
from edge_agent.config import FleetConfig
from edge_agent.control import policy
from edge_agent.control.client import FleetClient
from edge_agent.control.identity import FleetFiles, FleetIdentity
from edge_agent.control.loop import ControlLoop
from edgefleet import pki


def _identity(fleet_addresses: tuple[str, ...]) -> FleetIdentity:
    ca_key, ca = pki.create_ca()
    key = pki.generate_key()
    now = pki.utcnow()
    cert = pki.issue_certificate(
        ca_key, ca, key.public_key(), pki.Identity("node", "n1"), not_before=now, not_after=now + dt.timedelta(days=1)
    )
    return FleetIdentity(
        node_id="n1",
        labels={"site": "fra"},
        central=fleet_addresses[0],
        enroll_address="enroll-host:7444",
        enrolled_at=time.time(),
        ca_pem=pki.certificate_pem(ca),
        certificate_pem=pki.certificate_pem(cert),
        key_pem=pki.private_key_pem(key),
        signing_public_key_pem=ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        superlink="enroll-host:9092",
        fleet_addresses=fleet_addresses,
    )


@pytest.fixture
def files(tmp_path) -> FleetFiles:
    files = FleetFiles(tmp_path)
    files.save(_identity(("c1:7443", "c2:7443")))
    return files


# -- the check ------------------------------------------------------------------------------------------------


def test_addresses_are_kept_in_order_without_blanks_or_repeats():
    assert policy.check_fleet_addresses([" c2:7443", "c1:7443", "", "c2:7443"]) == ("c2:7443", "c1:7443")
    assert policy.check_fleet_addresses(["[::1]:7443", "10.0.0.5:1", "central.example:65535"]) == (
        "[::1]:7443",
        "10.0.0.5:1",
        "central.example:65535",
    )


@pytest.mark.parametrize(
    "entry",
    [
        "central",  # no port
        "central:",  # an empty port
        ":7443",  # no host
        "[]:7443",
        "central:0",  # port 0 cannot be dialled
        "central:65536",
        "central:-1",
        "central:７４４３",  # digits, but not ASCII ones
        "cen tral:7443",
        "central\x00:7443",
        "central\u202e:7443",  # a bidi override: not printable
        "c" * 300 + ":7443",
        "2001:db8::5:7443",  # IPv6 without brackets: gRPC reads it as an address with no port
        "::1:7443",
        "[not-ipv6]:7443",
        "[2001:db8::5:7443",
        "http://central:7443",  # a URL pasted in: gRPC would resolve "http://central" as a name
        "admin@central:7443",
        "zentrale.bücher.example:7443",  # not ASCII: the xn-- form is what the resolver takes
    ],
)
def test_an_entry_that_is_not_host_port_is_refused_by_name(entry):
    with pytest.raises(ValueError, match=r"is not HOST:PORT with a port 1\.\.65535"):
        policy.check_fleet_addresses(["ok:7443", entry])


def test_an_ipv6_address_in_brackets_is_kept():
    assert policy.check_fleet_addresses(["[2001:db8::5]:7443", "[fe80::1%eth0]:7443"]) == (
        "[2001:db8::5]:7443",
        "[fe80::1%eth0]:7443",
    )


def test_an_empty_or_huge_list_is_refused():
    with pytest.raises(ValueError, match="no address given"):
        policy.check_fleet_addresses([])
    with pytest.raises(ValueError, match="no address given"):
        policy.check_fleet_addresses([" ", ""])
    with pytest.raises(ValueError, match="65 addresses; at most 64"):
        policy.check_fleet_addresses([f"c{i}:7443" for i in range(65)])


# -- fleet.json ---------------------------------------------------------------------------------------------


def test_saving_addresses_replaces_only_them_and_the_first_as_central(files):
    before = json.loads(files.meta.read_text())
    files.save_fleet_addresses(("new1:7443", "new2:7443"))
    after = json.loads(files.meta.read_text())
    assert after == {**before, "central": "new1:7443", "fleet_addresses": ["new1:7443", "new2:7443"]}
    assert files.load_addresses() == ("new1:7443", ("new1:7443", "new2:7443"))
    identity = files.load()
    assert (identity.node_id, identity.labels, identity.superlink) == ("n1", {"site": "fra"}, "enroll-host:9092")
    assert not list(files.root.glob("*.tmp*")), "written through a temporary file renamed into place"
    with pytest.raises(ValueError, match="at least one"):
        files.save_fleet_addresses(())


def test_the_stamp_changes_when_fleet_json_is_written_and_is_none_without_it(files, tmp_path):
    stamp = files.meta_stamp()
    assert stamp is not None and files.meta_stamp() == stamp
    files.save_fleet_addresses(("c1:7443", "c2:7443"))  # the same content, written again: a new file
    assert files.meta_stamp() != stamp
    assert FleetFiles(tmp_path / "elsewhere").meta_stamp() is None


def test_an_enrollment_from_before_replicas_reads_its_one_address(tmp_path):
    files = FleetFiles(tmp_path)
    files.save(_identity(("old:7443",)))
    meta = json.loads(files.meta.read_text())
    del meta["fleet_addresses"]
    files.meta.write_text(json.dumps(meta))
    assert files.load_addresses() == ("old:7443", ())


# -- the client and the control loop ---------------------------------------------------------------------------


def test_the_client_keeps_its_current_address_when_the_new_list_has_it(files):
    client = FleetClient(files.load(), rpc_timeout_s=1, start=1)
    try:
        assert client.address == "c2:7443"
        client.set_addresses(("c3:7443", "c2:7443"), rand=0.0)
        assert client.addresses == ("c3:7443", "c2:7443") and client.address == "c2:7443"
        client.set_addresses(("c4:7443", "c5:7443"), rand=0.9)
        assert client.address == "c5:7443", "not in the new list: one picked with rand, as at start"
        assert not client.streaming
    finally:
        client.close()


@contextlib.contextmanager
def _loop(files, central_addresses=()):
    """A control loop not started: its methods called by the test, its client and spool closed after."""
    loop = ControlLoop(files, FleetConfig(), lambda: b"", rand=lambda: 0.0, central_addresses=central_addresses)
    try:
        yield loop
    finally:
        loop.client.close()
        loop.spool.close()


def test_the_loop_keeps_and_dials_the_addresses_central_sends(files):
    with _loop(files) as loop:
        loop._adopt_fleet_addresses(("c9:7443", "c1:7443"))
        assert files.load_addresses() == ("c9:7443", ("c9:7443", "c1:7443"))
        assert loop.client.addresses == ("c9:7443", "c1:7443")
        assert loop.client.address == "c1:7443", "the address in use stays while the new list has it"
        stamp = files.meta_stamp()
        loop._adopt_fleet_addresses(("c9:7443", "c1:7443"))
        assert files.meta_stamp() == stamp, "the same list again: fleet.json is not written"
        loop._adopt_fleet_addresses(("c1:7443", "c9:7443"))
        assert files.meta_stamp() == stamp, "another replica lists itself first: the same replicas, no change"


def test_the_loop_ignores_a_list_from_central_that_is_not_addresses(files, caplog):
    with _loop(files) as loop:
        before = files.meta.read_bytes()
        loop._adopt_fleet_addresses(("c9:7443", "not an address"))
        assert files.meta.read_bytes() == before
        assert loop.client.addresses == ("c1:7443", "c2:7443")
        assert "ignored the central addresses central sent" in caplog.text


def test_the_loop_rereads_fleet_json_edited_on_disk_before_it_reconnects(files):
    with _loop(files) as loop:
        FleetFiles(files.root.parent).save_fleet_addresses(("restored:7443",))  # as the CLI does, another process
        loop._reread_addresses()
        assert loop.client.addresses == ("restored:7443",) and loop.client.address == "restored:7443"
        assert loop.identity.fleet_addresses == ("restored:7443",) and loop.identity.central == "restored:7443"
        files.meta.write_text("{not json")
        loop._reread_addresses()  # a broken edit: warned, the addresses in use stay
        assert loop.client.addresses == ("restored:7443",)


def test_the_configs_central_addresses_still_win(files):
    with _loop(files, central_addresses=("lb:7443",)) as loop:
        loop._adopt_fleet_addresses(("c9:7443",))
        assert files.load_addresses() == ("c9:7443", ("c9:7443",)), "kept, for when the config drops its list"
        assert loop.client.addresses == ("lb:7443",)


# -- edge-agent central-addresses ----------------------------------------------------------------------------------


def test_the_command_shows_and_sets_the_addresses(files, tmp_path, capsys):
    data_dir = str(tmp_path)
    assert cli.main(["central-addresses", "--data-dir", data_dir, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["fleet_addresses"] == shown["dialled"] == ["c1:7443", "c2:7443"]
    assert shown["config_addresses"] == [] and shown["fleet_json"] == str(files.meta)
    assert cli.main(["central-addresses", "set", "new:7443", "new2:7443", "--data-dir", data_dir]) == 0
    out = capsys.readouterr().out
    assert "new:7443, new2:7443" in out and "next reconnect" in out
    assert files.load_addresses() == ("new:7443", ("new:7443", "new2:7443"))
    assert files.load().node_id == "n1"
    # --data-dir before `set` works as well.
    assert cli.main(["central-addresses", "--data-dir", data_dir, "set", "other:7443"]) == 0
    assert files.load_addresses()[1] == ("other:7443",)


def test_the_command_refuses_a_bad_address_and_leaves_fleet_json_alone(files, tmp_path, capsys):
    before = files.meta.read_bytes()
    assert cli.main(["central-addresses", "set", "good:7443", "bad", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'bad' is not HOST:PORT" in err and "fleet.json unchanged" in err
    assert files.meta.read_bytes() == before


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "is not JSON"),
        ("[]", "holds a JSON list, not the object enrollment wrote"),
        ('{"node_id": "n1", "central": "c1:7443", "fleet_addresses": "c2:7443"}', "a list of strings"),
        ('{"node_id": "n1", "central": 7443}', "`central` must be a string"),
        ('{"node_id": "n1", "central": "c1:7443", "fleet_addresses": ["c2"]}', "'c2' is not HOST:PORT"),
    ],
)
def test_a_fleet_json_edited_into_something_else_is_said_not_dialled(files, tmp_path, capsys, content, problem):
    """An operator's hand edit gone wrong: the command says what is wrong (exit 1, no traceback) and the daemon
    keeps dialling what it dials; `set` does not write over a file it cannot read."""
    with _loop(files) as loop:
        files.meta.write_text(content)
        with pytest.raises(ValueError, match=re.escape(problem)):
            files.load_addresses()
        loop._reread_addresses()
        assert loop.client.addresses == ("c1:7443", "c2:7443"), "the addresses in use stay"
    # The daemon's warning goes wherever logging was set up (in the full suite, an earlier test's handler on a
    # stream since closed prints "--- Logging error ---" here): only the command's own output is judged below.
    capsys.readouterr()
    assert cli.main(["central-addresses", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert problem in err and "central-addresses set HOST:PORT" in err and "Traceback" not in err
    if not content.startswith("{"):  # a file that is no object cannot be updated in place
        assert cli.main(["central-addresses", "set", "new:7443", "--data-dir", str(tmp_path)]) == 1
        assert "cannot update it" in capsys.readouterr().err
        assert files.meta.read_text() == content


def test_the_command_on_a_data_dir_not_enrolled_says_so(tmp_path, capsys):
    assert cli.main(["central-addresses", "set", "c:7443", "--data-dir", str(tmp_path / "none")]) == 1
    assert "is not enrolled" in capsys.readouterr().err


def test_setting_warns_when_the_config_addresses_win(files, tmp_path, capsys):
    config = tmp_path / "agent.toml"
    config.write_text(f'data_dir = "{tmp_path}"\n[central]\naddresses = ["lb:7443"]\n')
    assert cli.main(["central-addresses", "--config", str(config), "set", "new:7443"]) == 0
    captured = capsys.readouterr()
    assert "still win" in captured.err
    assert cli.main(["central-addresses", "--config", str(config), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dialled"] == ["lb:7443"] and shown["fleet_addresses"] == ["new:7443"]
