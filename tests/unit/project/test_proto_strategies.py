"""The fuzz's strategies (tests/proto_strategies.py) cover the whole API: every RPC the .proto files declare,
and for every message, requests that serialize and parse back unchanged."""

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.v1 import admin_pb2, common_pb2, enrollment_pb2, fleet_pb2
from proto_strategies import messages, rpcs

PROTO = Path(__file__).resolve().parents[3] / "proto" / "edgefleet" / "v1"
MODULES = (admin_pb2, common_pb2, enrollment_pb2, fleet_pb2)
DESCRIPTORS = sorted(
    (d for m in MODULES for d in m.DESCRIPTOR.message_types_by_name.values()), key=lambda d: d.full_name
)


def test_every_rpc_in_the_protos_is_enumerated():
    declared = {
        f"{service}.{method}"
        for path in PROTO.glob("*.proto")
        for service, body in re.findall(r"service (\w+) \{(.*?)\n\}", path.read_text(), re.S)
        for method in re.findall(r"rpc (\w+)\(", body)
    }
    assert declared
    assert {rpc.name for rpc in rpcs(*MODULES)} == declared


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_generated_messages_serialize_and_parse_back(data):
    descriptor = data.draw(st.sampled_from(DESCRIPTORS), label="message type")
    message = data.draw(messages(descriptor, hints=("node-1",)), label="message")
    assert message.DESCRIPTOR is descriptor
    assert type(message).FromString(message.SerializeToString()) == message


def test_the_walk_reaches_every_field_of_a_deep_message():
    """Across examples, every field of NodeStatus (nested, repeated, well-known types) gets set."""
    seen: set[str] = set()

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(messages(common_pb2.NodeStatus.DESCRIPTOR))
    def draw(message):
        seen.update(f.name for f, _ in message.ListFields())

    draw()
    assert seen == set(common_pb2.NodeStatus.DESCRIPTOR.fields_by_name)
