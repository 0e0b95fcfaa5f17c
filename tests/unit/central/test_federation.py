"""central.federation's pure parts: Flower key checks, a run's config from an operator's request, its status,
the SuperLink's certificate names, and which keys to register after a SuperLink restart."""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from central import federation
from central.errors import InvalidArgument
from edgefleet.nodekeys import generate_node_key
from federated import fab

# --- Flower keys ----------------------------------------------------------------------------------------


def _ed25519_openssh() -> bytes:
    return (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )


def test_validate_flower_key():
    _, public = generate_node_key()
    federation.validate_flower_key(public.decode())
    federation.validate_flower_key("  " + public.decode() + "\n")
    p256 = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    federation.validate_flower_key(p256.decode())
    with pytest.raises(InvalidArgument, match="must be ECDSA on a NIST curve"):
        federation.validate_flower_key(_ed25519_openssh().decode())
    for garbage in ("garbage", "", "ssh-rsa AAAA"):
        with pytest.raises(InvalidArgument, match="not an OpenSSH public key"):
            federation.validate_flower_key(garbage)


@pytest.mark.parametrize("line", ["not a key", "foo AAAAB3NzaC1yc2E="])
def test_validate_flower_key_refuses_unknown_key_type_as_invalid_argument(line):
    """An enrolling agent's flower_public_key of "not a key": central must refuse it as InvalidArgument (audited
    by enroll); today cryptography's UnsupportedAlgorithm escapes enroll's except clause."""
    with pytest.raises(InvalidArgument, match="not an OpenSSH public key"):
        federation.validate_flower_key(line)


# --- central: run config, status, names -----------------------------------------------------------------


def _request(**fields):
    base = {"task": "sensitivity", "rounds": 3, "min_nodes": 3}
    return federation.RunRequest(**{**base, **fields})


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"task": "nope"}, "unknown task 'nope'; known tasks: sensitivity, usage-stats"),
        ({"rounds": 0}, "--rounds must be between 1 and 1000, got 0"),
        ({"rounds": federation.MAX_ROUNDS + 1}, "--rounds must be between 1 and 1000, got 1001"),
        ({"min_nodes": 1, "secagg": False}, "--min-nodes must be at least 2"),
        ({"min_nodes": 2}, r"SecAgg\+ needs at least 3 nodes"),
        ({"min_nodes": 5, "secagg_shares": 2}, "--secagg-shares must be between 3 and --min-nodes \\(5\\), got 2"),
        ({"min_nodes": 5, "secagg_shares": 6}, "--secagg-shares must be between 3 and --min-nodes \\(5\\), got 6"),
        ({"min_nodes": 2, "secagg_shares": 3}, "--secagg-shares must be between 3 and --min-nodes \\(2\\)"),
        ({"min_nodes": 5, "secagg_threshold": 5}, "--secagg-threshold must be at least 2 and below the shares \\(5\\)"),
        ({"min_nodes": 5, "secagg_shares": 4, "secagg_threshold": 4}, "below the shares \\(4\\), got 4"),
        ({"min_nodes": 5, "secagg_threshold": 1}, "--secagg-threshold must be at least 2"),
        ({"secagg": False, "secagg_shares": 3}, "--secagg-shares and --secagg-threshold need SecAgg"),
        ({"secagg": False, "secagg_threshold": 2}, "--secagg-shares and --secagg-threshold need SecAgg"),
        ({"clip": -1.0}, "--clip and --noise cannot be negative"),
        ({"clip": 1.0, "noise": -0.1}, "--clip and --noise cannot be negative"),
        ({"noise": 0.5}, "--noise needs --clip"),
        ({"stage_timeout_s": -1.0}, "timeouts cannot be negative"),
        ({"wait_nodes_s": -0.5}, "timeouts cannot be negative"),
    ],
)
def test_run_config_refusals(fields, message, tmp_path):
    with pytest.raises(InvalidArgument, match=message):
        federation.run_config(_request(**fields), tmp_path)


def test_run_config_valid_request(tmp_path):
    config = federation.run_config(
        _request(min_nodes=5, secagg_shares=4, secagg_threshold=3, clip=2, noise=0.1, record_received=True),
        tmp_path / "results",
    )
    assert config == {
        "task": "sensitivity",
        "rounds": 3,
        "min-nodes": 5,
        "secagg": True,
        "secagg-shares": 4,
        "secagg-threshold": 3,
        "clip": 2.0,
        "noise": 0.1,
        "results-dir": str(tmp_path / "results"),
        "record-received": True,
    }
    assert isinstance(config["clip"], float)
    assert set(config) <= set(fab.DEFAULT_RUN_CONFIG)
    timed = federation.run_config(
        _request(task="usage-stats", min_nodes=2, secagg=False, rounds=1000, stage_timeout_s=30, wait_nodes_s=5),
        tmp_path,
    )
    assert timed["timeout-s"] == 30.0 and timed["wait-nodes-s"] == 5.0
    assert timed["secagg"] is False and timed["rounds"] == 1000
    assert set(timed) <= set(fab.DEFAULT_RUN_CONFIG)


@pytest.mark.parametrize(
    "flower, sub, details, report, expected",
    [
        ("running", "", "", {"status": "completed"}, ("completed", "")),
        ("finished", "failed", "x", {"status": "completed"}, ("completed", "")),
        ("running", "", "", {"status": "failed", "error": "round 2: no nodes"}, ("failed", "round 2: no nodes")),
        ("running", "", "", {"status": "failed"}, ("failed", "the run failed")),
        ("finished", "completed", "", None, ("failed", "the ServerApp finished without writing its outcome")),
        (
            "finished",
            "completed",
            "",
            {"status": "running"},
            ("failed", "the ServerApp finished without writing its outcome"),
        ),
        ("finished", "failed", "ServerApp exited with code 1", None, ("failed", "ServerApp exited with code 1")),
        ("finished", "stopped", "", {"status": "running"}, ("failed", "the run stopped")),
        ("finished", "", "", None, ("failed", "the run stopped")),
        ("running", "", "", {"status": "waiting-for-nodes"}, ("waiting-for-nodes", "")),
        ("running", "", "", {"status": "running"}, ("running", "")),
        ("starting", "", "", {"status": "starting"}, ("pending", "")),
        ("pending", "", "", None, ("pending", "")),
    ],
)
def test_run_status(flower, sub, details, report, expected):
    assert federation.run_status(flower, sub, details, report) == expected


def test_last_line():
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1\n    boom()\nTaskError: no examples  \n\n'
    assert federation.last_line(trace) == "TaskError: no examples"
    assert federation.last_line("") == "unknown error"
    assert federation.last_line(" \n\t\n") == "unknown error"
    assert federation.last_line("x" * 600) == "x" * 500


def test_superlink_names_wildcard_adds_fqdn(monkeypatch):
    monkeypatch.setattr(federation.socket, "getfqdn", lambda: "central-box.example.org")
    for listen in ("0.0.0.0", "::", ""):
        assert federation.superlink_names(listen, "") == [
            "central.edgefleet",
            "localhost",
            "127.0.0.1",
            "::1",
            "central-box.example.org",
        ]
    names = federation.superlink_names("0.0.0.0", "fl.example.org")
    assert names[:4] == ["central.edgefleet", "localhost", "127.0.0.1", "::1"]
    assert "fl.example.org" in names and names[-1] == "central-box.example.org"


def test_superlink_names_concrete_host_once():
    names = federation.superlink_names("10.1.2.3", "10.1.2.3")
    assert names == ["central.edgefleet", "localhost", "127.0.0.1", "::1", "10.1.2.3"]
    assert federation.superlink_names("10.1.2.3", "fl.example.org") == [
        "central.edgefleet",
        "localhost",
        "127.0.0.1",
        "::1",
        "fl.example.org",
        "10.1.2.3",
    ]
    assert federation.superlink_names("127.0.0.1", "central.edgefleet") == [
        "central.edgefleet",
        "localhost",
        "127.0.0.1",
        "::1",
    ]


# --- SuperLink restart ----------------------------------------------------------------------------------


def test_key_actions_register_new_and_lost_keys_and_unregister_revoked_ones():
    """After a SuperLink restart (state in memory) it knows no key: every unrevoked key is registered again."""
    from central.federation import REGISTER, UNREGISTER, key_actions
    from central.store import FlowerKeyRecord

    new = FlowerKeyRecord("node-new", "ecdsa-sha2-nistp384 AAAA", 0, False, False)
    known = FlowerKeyRecord("node-known", "ecdsa-sha2-nistp384 BBBB", 11, False, False)
    lost = FlowerKeyRecord("node-lost", "ecdsa-sha2-nistp384 CCCC", 12, False, False)
    revoked = FlowerKeyRecord("node-revoked", "ecdsa-sha2-nistp384 DDDD", 13, True, False)
    done = FlowerKeyRecord("node-done", "ecdsa-sha2-nistp384 EEEE", 14, True, True)
    revoked_never_registered = FlowerKeyRecord("node-never", "ecdsa-sha2-nistp384 FFFF", 0, True, False)
    registered = {11: "online", 13: "online", 14: "unregistered"}
    actions = key_actions([new, known, lost, revoked, done, revoked_never_registered], registered)
    assert [(a, k.node_id) for a, k in actions] == [
        (REGISTER, "node-new"),
        (REGISTER, "node-lost"),
        (UNREGISTER, "node-revoked"),
    ]
    # A key the SuperLink lists as unregistered (not revoked here) is registered again too.
    assert key_actions([known], {11: "unregistered"}) == [(REGISTER, known)]


def test_run_status_of_a_run_the_restarted_superlink_lost():
    from central.federation import COMPLETED, FAILED, run_status

    assert run_status("", "", "", {"status": "running"}, lost=True)[0] == FAILED
    assert "restarted during the run" in run_status("", "", "", None, lost=True)[1]
    # A report that already says completed stands: the outcome was written before the restart.
    assert run_status("", "", "", {"status": "completed"}, lost=True) == (COMPLETED, "")
