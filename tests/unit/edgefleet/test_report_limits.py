"""edgefleet.report_limits: every string and repeated field a node reports has a bound, walked from the messages'
descriptors (a field added to the proto without one fails here), each bound refuses one past it and takes one at
it, and a full ListNodes page or GetNode reply of the largest reports still fits gRPC's message limit."""

import pytest
from google.protobuf.descriptor import FieldDescriptor

from edgefleet import report_limits
from edgefleet.report_limits import _is_repeated
from edgefleet.v1 import admin_pb2, common_pb2, fleet_pb2

ROOTS = {"status": common_pb2.NodeStatus, "event": fleet_pb2.Event}
MESSAGE_LIMIT = 8 * 1024 * 1024  # central.server and edgefleet.channels: grpc.max_receive_message_length


def _fields(descriptor, path=(), seen=()):
    """(path of fields from the root, field) of every field reachable from a message descriptor."""
    for field in descriptor.fields:
        yield (*path, field), field
        sub = field.message_type
        if sub is not None and sub.full_name not in seen and not sub.full_name.startswith("google.protobuf."):
            yield from _fields(sub, (*path, field), (*seen, descriptor.full_name))


def _all_fields():
    return [(name, path, field) for name, root in ROOTS.items() for path, field in _fields(root.DESCRIPTOR)]


def _text_fields():
    return [
        (name, path, field)
        for name, path, field in _all_fields()
        if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)
    ]


def test_every_string_field_a_node_reports_has_a_bound():
    missing = sorted({f.full_name for _, _, f in _text_fields()} - set(report_limits.STRING_BOUNDS))
    assert not missing, f"string fields without a bound in edgefleet.report_limits.STRING_BOUNDS: {missing}"


def test_every_repeated_field_a_node_reports_has_a_bound():
    repeated = {f.full_name for _, _, f in _all_fields() if _is_repeated(f)}
    missing = sorted(repeated - set(report_limits.REPEATED_BOUNDS))
    assert not missing, f"repeated fields without a bound in edgefleet.report_limits.REPEATED_BOUNDS: {missing}"


def test_no_bound_names_a_field_that_does_not_exist():
    known = {f.full_name for _, _, f in _all_fields()}
    assert set(report_limits.STRING_BOUNDS) <= known and set(report_limits.REPEATED_BOUNDS) <= known


def _is_map(field):
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _message_with(root_name, path, value):
    """A root message with the field at `path` set to `value` (repeated fields and maps get one entry)."""
    root = ROOTS[root_name]()
    message = root
    for field in path[:-1]:
        if _is_map(field):  # the last field is the entry's key or value
            entries = getattr(message, field.name)
            if path[-1].name == "key":
                entries[value] = "v"
            else:
                entries["k"] = value
            return root
        repeated = _is_repeated(field)
        message = getattr(message, field.name).add() if repeated else getattr(message, field.name)
    setattr(message, path[-1].name, value)
    return root


def _path_text(path):
    return ".".join(f.name for f in path)


@pytest.mark.parametrize(
    "root_name, path, field", _text_fields(), ids=[f"{n}.{_path_text(p)}" for n, p, _ in _text_fields()]
)
def test_each_string_bound_takes_the_limit_and_refuses_one_more(root_name, path, field):
    limit = report_limits.STRING_BOUNDS[field.full_name]
    at_limit = _message_with(root_name, path, "x" * limit)
    assert report_limits.problem(at_limit, root_name) == ""
    over = _message_with(root_name, path, "x" * (limit + 1))
    problem = report_limits.problem(over, root_name)
    assert problem.startswith(root_name + ".") and f"is {limit + 1} characters; at most {limit}" in problem, problem


def test_a_problem_names_the_field_its_length_and_the_limit():
    status = common_pb2.NodeStatus()
    status.activation.reason = "r" * 5000
    assert report_limits.problem(status) == "status.activation.reason is 5000 characters; at most 2048"
    status = common_pb2.NodeStatus()
    status.system.temperatures.add(sensor="s" * 129)
    assert report_limits.problem(status) == "status.system.temperatures[0].sensor is 129 characters; at most 128"


@pytest.mark.parametrize("full_name", sorted(report_limits.REPEATED_BOUNDS))
def test_each_count_bound_takes_the_limit_and_refuses_one_more(full_name):
    limit = report_limits.REPEATED_BOUNDS[full_name]
    field_name = full_name.rsplit(".", 1)[1]
    root_name, path = next((n, p) for n, p, f in _all_fields() if f.full_name == full_name)

    def build(count):
        root = ROOTS[root_name]()
        owner = root
        for field in path[:-1]:
            owner = getattr(owner, field.name)
        entries = getattr(owner, field_name)
        message_type = path[-1].message_type
        for i in range(count):
            if message_type is None:  # repeated scalars: the latency and TTFT bucket counts
                entries.append(0)
            elif message_type.GetOptions().map_entry:
                entries[f"k{i}"] = "v"
            else:
                entries.add()
        return root

    assert report_limits.problem(build(limit), root_name, max_bytes=10**9) == ""
    problem = report_limits.problem(build(limit + 1), root_name, max_bytes=10**9)
    assert problem.endswith(f"{field_name} has {limit + 1} entries; at most {limit}"), problem


def test_the_whole_size_is_bounded_too():
    status = common_pb2.NodeStatus()
    for i in range(report_limits.REPEATED_BOUNDS["edgefleet.v1.RoutingSummary.counts"]):
        status.routing.counts.add(data_class="c" * 200, route=f"upstream:{i}", count=1)
    problem = report_limits.problem(status)
    assert problem == f"status is {status.ByteSize()} bytes serialized; at most {report_limits.MAX_REPORT_BYTES}"


def test_clip_cuts_strings_and_counts_to_the_bounds_and_keeps_the_rest():
    event = fleet_pb2.Event(
        kind="k" * 100, message="m" * 3000, attributes={f"a{i:02}": "v" * (600 if i < 3 else 9) for i in range(40)}
    )
    assert report_limits.clip(event)
    assert report_limits.problem(event, "event") == ""
    assert event.kind == "k" * 64 and len(event.message) == 2048
    assert sorted(event.attributes) == [f"a{i:02}" for i in range(32)] and event.attributes["a00"] == "v" * 512
    status = common_pb2.NodeStatus(agent_version="1.0")
    status.system.temperatures.extend(common_pb2.Temperature(sensor=f"s{i}", celsius=40.0) for i in range(100))
    assert report_limits.clip(status) and len(status.system.temperatures) == 64 and status.agent_version == "1.0"


def test_clip_says_when_a_report_is_still_too_big():
    status = common_pb2.NodeStatus()
    for i in range(64):
        status.routing.counts.add(data_class="c" * 256, route="r" * 256, count=i)
    assert not report_limits.clip(status)


def _largest_status():
    """A status just inside the size bound, its strings as long as their bounds allow."""
    status = common_pb2.NodeStatus(agent_version="v" * 64)
    status.activation.reason = "r" * 2048
    for i in range(64):
        status.system.temperatures.add(sensor=f"{i:03}" + "s" * 40, celsius=40.0)
    while status.ByteSize() + 140 < report_limits.MAX_REPORT_BYTES and len(status.system.gpus) < 16:
        status.system.gpus.add(name="g" * 128, source="nvml", memory_total_bytes=2**40)
    assert report_limits.problem(status) == ""
    return status


def test_a_full_nodes_page_of_the_largest_statuses_fits_a_message():
    status = _largest_status()
    assert status.ByteSize() > report_limits.MAX_REPORT_BYTES - 300
    node = admin_pb2.Node(
        node_id="n" * 36, hostname="h" * 253, labels={f"label{i}": "v" * 20 for i in range(10)}, status=status
    )
    page = admin_pb2.ListNodesResponse(nodes=[node] * 1000, next_page_token="n" * 36)
    assert page.ByteSize() < MESSAGE_LIMIT


def test_a_getnode_reply_of_the_most_reports_fits_a_message():
    from central import reports

    # Central keeps at most KEEP_REPORT_BYTES of a node's payloads, whatever their number.
    assert reports.KEEP_REPORT_BYTES + reports.KEEP_REPORTS * 64 < MESSAGE_LIMIT
