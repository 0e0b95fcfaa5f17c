"""Bounds on what a node reports: every string field of its status and events, every repeated field's count,
and the serialized size of each report.

Central refuses a heartbeat or a report past a bound, naming the field, its length and the limit
(:func:`problem`); the agent clips its own reports to the same bounds before it spools them (:func:`clip`),
so a long error message or a box with a hundred sensors costs detail, never its reports. The bounds are
keyed by each field's full protobuf name, and a unit test walks the messages' descriptors, so a string or
repeated field added to the proto without a bound fails the tests instead of going unchecked.

Why these figures: a ListNodes page carries up to 1,000 node statuses and a GetNode reply up to 1,000
reports, inside gRPC's 8 MiB message limit (central.server, edgefleet.channels); a status of 7 KiB at
most keeps either under 8 MiB with room for the rest of the page. A real status is about 350 bytes.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

# The most characters of each string field (keyed by full field name).
STRING_BOUNDS: dict[str, int] = {
    "edgefleet.v1.NodeStatus.agent_version": 64,
    "edgefleet.v1.NodeStatus.model_slot": 8,
    "edgefleet.v1.ModelRef.name": 256,  # a local model's file name, or a registry name (64 at most there)
    "edgefleet.v1.ModelRef.version": 256,
    "edgefleet.v1.ModelRef.sha256": 64,
    "edgefleet.v1.Temperature.sensor": 128,
    "edgefleet.v1.GpuMetrics.name": 128,
    "edgefleet.v1.GpuMetrics.source": 32,
    "edgefleet.v1.Activation.reason": 2048,
    "edgefleet.v1.RoutingSummary.audit_head_hash": 128,
    "edgefleet.v1.RouteCount.data_class": 256,  # central.routing.MAX_TEXT
    "edgefleet.v1.RouteCount.route": 256,
    "edgefleet.v1.Event.kind": 64,
    "edgefleet.v1.Event.message": 2048,
    "edgefleet.v1.Event.AttributesEntry.key": 64,
    "edgefleet.v1.Event.AttributesEntry.value": 512,
    "edgefleet.v1.UpstreamUsage.upstream": 64,
    "edgefleet.v1.UpstreamUsage.tenant": 128,
    "edgefleet.v1.UpstreamUsage.data_class": 256,
    "edgefleet.v1.UpstreamUsage.currency": 8,
}
# The most entries of each repeated (or map) field.
REPEATED_BOUNDS: dict[str, int] = {
    "edgefleet.v1.SystemMetrics.temperatures": 64,
    "edgefleet.v1.SystemMetrics.gpus": 16,
    "edgefleet.v1.RoutingSummary.counts": 64,
    "edgefleet.v1.Event.attributes": 32,
    # One entry per bucket of edgefleet.histogram_buckets (BOUNDS_MS and +Inf).
    "edgefleet.v1.InferenceStats.latency_buckets": 32,
    "edgefleet.v1.InferenceStats.ttft_buckets": 32,
    # Per (upstream, tenant, data class) in one heartbeat window; the agent folds the rest into "(other)".
    "edgefleet.v1.InferenceStats.upstream_usage": 24,
}
# The most bytes of one serialized status or event.
MAX_REPORT_BYTES = 7 * 1024
# The most characters of a spool epoch (the agent makes 32 hex digits).
MAX_EPOCH_CHARS = 64


def problem(message: Message, name: str = "status", max_bytes: int = MAX_REPORT_BYTES) -> str:
    """Why central refuses this status or event ("" when it takes it): the first field past its bound, with
    its length and the limit, else the whole message's size. `name` starts the field paths it gives."""
    found = _field_problem(message, name)
    if found:
        return found
    size = message.ByteSize()
    if size > max_bytes:
        return f"{name} is {size} bytes serialized; at most {max_bytes}"
    return ""


def clip(message: Message, max_bytes: int = MAX_REPORT_BYTES) -> bool:
    """Cut, in place, every string and repeated field to its bound (the first entries and characters are
    kept); True when the message then fits `max_bytes` as well, False when it is still too big."""
    _clip(message)
    return message.ByteSize() <= max_bytes


def _is_repeated(field: FieldDescriptor) -> bool:
    """`is_repeated` where protobuf has it (6.x deprecates `label`), `label` before."""
    is_repeated = getattr(field, "is_repeated", None)
    return bool(is_repeated) if is_repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _field_problem(message: Message, path: str) -> str:
    for field, value in message.ListFields():
        where = f"{path}.{field.name}"
        if _is_repeated(field):
            limit = REPEATED_BOUNDS[field.full_name]
            if len(value) > limit:
                return f"{where} has {len(value)} entries; at most {limit}"
            if _is_map(field):
                found = _map_problem(field, value, where)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                found = next((p for i, v in enumerate(value) if (p := _field_problem(v, f"{where}[{i}]"))), "")
            else:
                found = next((p for i, v in enumerate(value) if (p := _scalar_problem(field, v, f"{where}[{i}]"))), "")
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            found = _field_problem(value, where)
        else:
            found = _scalar_problem(field, value, where)
        if found:
            return found
    return ""


def _map_problem(field: FieldDescriptor, value, where: str) -> str:
    key_field, value_field = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
    for key in sorted(value):
        found = _scalar_problem(key_field, key, f"{where} key {str(key)[:40]!r}") or (
            _scalar_problem(value_field, value[key], f"{where}[{str(key)[:40]!r}]")
            if value_field.type != FieldDescriptor.TYPE_MESSAGE
            else _field_problem(value[key], f"{where}[{str(key)[:40]!r}]")
        )
        if found:
            return found
    return ""


def _scalar_problem(field: FieldDescriptor, value, where: str) -> str:
    if field.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        return ""
    limit = STRING_BOUNDS[field.full_name]
    unit = "characters" if field.type == FieldDescriptor.TYPE_STRING else "bytes"
    return f"{where} is {len(value)} {unit}; at most {limit}" if len(value) > limit else ""


def _clip(message: Message) -> None:
    for field, value in message.ListFields():
        if _is_map(field):
            limit = REPEATED_BOUNDS[field.full_name]
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            entries = sorted(value.items())
            value.clear()
            for key, item in entries[:limit]:
                value[_cut(key_field, key)] = _cut(value_field, item)
        elif _is_repeated(field):
            del value[REPEATED_BOUNDS[field.full_name] :]
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for item in value:
                    _clip(item)
            else:
                value[:] = [_cut(field, v) for v in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            _clip(value)
        elif field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            setattr(message, field.name, _cut(field, value))


def _cut(field: FieldDescriptor, value):
    if field.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        return value
    return value[: STRING_BOUNDS[field.full_name]]
