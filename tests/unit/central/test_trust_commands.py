"""What `edgefleet ca status` prints of central's answer: a fleet mid-rotation with thousands of nodes still on the
previous CA gets a line naming the first ones and how many more, not one line per node; --json keeps them all."""

from __future__ import annotations

import argparse
import json

from central import trust_commands
from central.services.trust import MAX_NAMED_HOLDERS
from edgefleet.v1 import admin_pb2


class _Answers:
    """Stands in for the AdminService connection: answers a call with a prepared response."""

    def __init__(self, response):
        self.response = response

    def call(self, method, request):
        return self.response


def _mid_rotation(holders: list[str]) -> admin_pb2.GetTrustResponse:
    return admin_pb2.GetTrustResponse(
        cas=[
            admin_pb2.CertificateAuthority(fingerprint="sha256:" + "b" * 64, state="current"),
            admin_pb2.CertificateAuthority(fingerprint="sha256:" + "a" * 64, state="previous"),
        ],
        on_previous_ca=holders,
        version=3,
    )


def test_ca_status_names_the_first_holders_and_counts_the_rest(capsys):
    holders = [f"node:n{i:05d}" for i in range(5000)]
    client = _Answers(_mid_rotation(holders))
    assert trust_commands._ca_status(client, argparse.Namespace(json=False)) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("5000 still on the previous CA: node:n00000, node:n00001")
    assert f"and {5000 - MAX_NAMED_HOLDERS} more (all of them: --json)" in line
    assert "node:n04999" not in line
    assert trust_commands._ca_status(client, argparse.Namespace(json=True)) == 0
    assert json.loads(capsys.readouterr().out)["on_previous_ca"] == holders
