"""The FleetService addresses central sends at enrollment (central.services.enrollment.parse_fleet_addresses)."""

import re

import pytest

from central.services.enrollment import parse_fleet_addresses


def test_addresses_are_kept_in_order_without_repeats():
    assert parse_fleet_addresses("c1:7443, c2:7443,c1:7443") == ("c1:7443", "c2:7443")
    assert parse_fleet_addresses("[::1]:7443,10.0.0.5:7443") == ("[::1]:7443", "10.0.0.5:7443")


def test_empty_means_agents_dial_the_enrollment_host():
    assert parse_fleet_addresses("") == ()
    assert parse_fleet_addresses(" , ") == ()


@pytest.mark.parametrize(
    "bad",
    [
        "c1",
        "c1:",
        ":7443",
        "c1:0",
        "c1:65536",
        "c1:port",
        "[]:7443",
        "2001:db8::5:7443",  # IPv6 without brackets: agents would read it as an address with no port
        "http://c1:7443",  # agents refuse a list with it, so central refuses it at start
        "c 1:7443",
    ],
)
def test_a_malformed_address_is_named(bad):
    with pytest.raises(ValueError, match=re.escape(f"fleet address '{bad}' is not HOST:PORT")):
        parse_fleet_addresses(f"ok:7443,{bad}")
