"""Which central address the agent dials (edge_agent.control.policy), where the list comes from (the config's
[central] addresses, fleet.json) and how it survives a restart."""

import datetime as dt
import time

import pytest

from edge_agent.config import ConfigError, parse_config
from edge_agent.control import policy
from edge_agent.control.identity import FleetFiles, FleetIdentity
from edgefleet import pki


def test_the_config_wins_then_the_enrollment_then_the_one_old_address():
    enrolled = ("c1:7443", "c2:7443")
    assert policy.central_addresses(("lb:7443",), enrolled, "old:7443") == ("lb:7443",)
    assert policy.central_addresses((), enrolled, "old:7443") == enrolled
    assert policy.central_addresses((), (), "old:7443") == ("old:7443",)
    assert policy.central_addresses((), (" ", ""), "old:7443") == ("old:7443",), "blank entries are no list"
    with pytest.raises(ValueError, match="no central address"):
        policy.central_addresses((), (), "")


def test_repeats_go_and_the_order_stays():
    assert policy.central_addresses((), ("c2:1", "c1:1", "c2:1", " c1:1 "), "x:1") == ("c2:1", "c1:1")


def test_next_address_is_round_robin():
    assert [policy.next_address(3, i) for i in range(3)] == [1, 2, 0]
    assert policy.next_address(1, 0) == 0
    assert policy.next_address(0, 0) == 0


def test_first_address_spreads_agents_over_the_list():
    assert policy.first_address(3, 0.0) == 0
    assert policy.first_address(3, 0.5) == 1
    assert policy.first_address(3, 0.9999) == 2
    assert policy.first_address(3, 1.0) == 2, "a rand of exactly 1 stays inside the list"
    assert policy.first_address(0, 0.5) == 0
    assert {policy.first_address(4, i / 100) for i in range(100)} == {0, 1, 2, 3}


def test_central_addresses_config_key():
    assert parse_config({}).central.addresses == ()
    config = parse_config({"central": {"addresses": ["c1.example:7443", "[::1]:7443"]}})
    assert config.central.addresses == ("c1.example:7443", "[::1]:7443")
    with pytest.raises(ConfigError, match=r"central\.addresses\[1\]: expected HOST:PORT"):
        parse_config({"central": {"addresses": ["c1:7443", "c2"]}})
    with pytest.raises(ConfigError, match=r"central\.addresses\[0\]: port 0"):
        parse_config({"central": {"addresses": ["c1:0"]}})
    with pytest.raises(ConfigError, match=r"central\.addresses: expected a list of strings"):
        parse_config({"central": {"addresses": "c1:7443"}})
    with pytest.raises(ConfigError, match=r"central\.address: unknown key"):
        parse_config({"central": {"address": "c1:7443"}})


def _identity(fleet_addresses: tuple[str, ...]) -> FleetIdentity:
    ca_key, ca = pki.create_ca()
    key = pki.generate_key()
    now = pki.utcnow()
    cert = pki.issue_certificate(
        ca_key, ca, key.public_key(), pki.Identity("node", "n1"), not_before=now, not_after=now + dt.timedelta(days=1)
    )
    return FleetIdentity(
        node_id="n1",
        labels={},
        central=fleet_addresses[0] if fleet_addresses else "enroll-host:7443",
        enroll_address="enroll-host:7444",
        enrolled_at=time.time(),
        ca_pem=pki.certificate_pem(ca),
        certificate_pem=pki.certificate_pem(cert),
        key_pem=pki.private_key_pem(key),
        signing_public_key_pem=b"",
        fleet_addresses=fleet_addresses,
    )


def test_fleet_json_keeps_the_addresses(tmp_path):
    files = FleetFiles(tmp_path)
    files.save(_identity(("c1:7443", "c2:7443")))
    assert files.load().fleet_addresses == ("c1:7443", "c2:7443")


def test_an_enrollment_from_before_replicas_reads_as_its_one_address(tmp_path):
    files = FleetFiles(tmp_path)
    files.save(_identity(()))
    # What an older agent wrote: no fleet_addresses key at all.
    meta = files.meta.read_text().replace('"fleet_addresses": [],', "").replace(',\n  "fleet_addresses": []', "")
    files.meta.write_text(meta)
    assert "fleet_addresses" not in files.meta.read_text()
    identity = files.load()
    assert identity.fleet_addresses == ()
    assert policy.central_addresses((), identity.fleet_addresses, identity.central) == ("enroll-host:7443",)
