"""Hypothesis strategies for any protobuf message, built by walking its descriptor; and the fleet API's RPCs.

Generic over descriptors, so a field, message or RPC added to proto/ is fuzzed without a change here:

- every scalar type at its extremes (int32/int64/uint64 bounds, NaN and infinities, float32 width),
- strings with unicode, control characters, bidi overrides and NULs, sometimes a long one (up to
  :data:`HUGE_MAX_CHARS`), and bytes likewise,
- enums with their declared values and unknown numbers (proto3 enums are open),
- nested messages (to :data:`MAX_DEPTH`), repeated fields, maps, oneofs (one member or none),
- google.protobuf.Duration and Timestamp both in range and out of it.

`hints` are strings mixed into every string field and map key (a real node id, a real token, a real model
name): random text alone never reaches the code behind a lookup that succeeds.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

MAX_DEPTH = 4  # nested messages below this are left unset
MAX_REPEATED = 3
HUGE_MAX_CHARS = 300_000  # a few of these in one message stay under central's 8 MiB receive limit

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: INT32,
    FieldDescriptor.TYPE_SINT32: INT32,
    FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_INT64: INT64,
    FieldDescriptor.TYPE_SINT64: INT64,
    FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT32: UINT32,
    FieldDescriptor.TYPE_FIXED32: UINT32,
    FieldDescriptor.TYPE_UINT64: UINT64,
    FieldDescriptor.TYPE_FIXED64: UINT64,
}

# Characters that break naive handling: NUL and other controls, a terminal escape, bidi overrides, a BOM,
# combining marks, astral-plane emoji, a character that changes length when lowercased.
_NASTY = ["\x00", "\x1b[2J", "\r\n", "\t", "\u202e", "\ufeff", "\u0301", "😀", "İ", "\x7f", "../", "%s", "'\""]


def integers(type_: int) -> st.SearchStrategy[int]:
    """Any value of the integer field type, with its bounds and the values around 0 and 2^31 drawn often."""
    low, high = _INT_RANGES[type_]
    edges = sorted(
        {v for v in (low, low + 1, -1, 0, 1, 2**31 - 1, 2**31, 2**32 - 1, high - 1, high) if low <= v <= high}
    )
    return st.one_of(
        st.sampled_from(edges), st.integers(low, high), st.integers(-1000, 1000).filter(lambda v: low <= v <= high)
    )


def text() -> st.SearchStrategy[str]:
    """Unicode (no surrogates: protobuf refuses them), often with nasty characters, sometimes long."""
    huge = st.builds(
        operator.mul, st.sampled_from(["x", "é", "\x00", "😀", "\u202e"]), st.integers(1000, HUGE_MAX_CHARS)
    )
    nasty = st.lists(st.one_of(st.sampled_from(_NASTY), st.text(max_size=8)), max_size=6).map("".join)
    return st.one_of(st.text(max_size=40), nasty, st.just(""), huge)


def binary() -> st.SearchStrategy[bytes]:
    huge = st.builds(operator.mul, st.sampled_from([b"\x00", b"\xff", b"A"]), st.integers(1000, HUGE_MAX_CHARS))
    return st.one_of(st.binary(max_size=64), huge)


def duration_fields() -> st.SearchStrategy[dict[str, int]]:
    """google.protobuf.Duration: in range (±10,000 years), at the limit, and beyond it (int64 seconds)."""
    valid = st.fixed_dictionaries(
        {"seconds": st.integers(-315_576_000_000, 315_576_000_000), "nanos": st.integers(-999_999_999, 999_999_999)}
    )
    return st.one_of(
        valid,
        st.fixed_dictionaries(
            {"seconds": integers(FieldDescriptor.TYPE_INT64), "nanos": integers(FieldDescriptor.TYPE_INT32)}
        ),
    )


def timestamp_fields() -> st.SearchStrategy[dict[str, int]]:
    """google.protobuf.Timestamp: between years 1 and 9999, around now, and beyond both ends."""
    valid = st.fixed_dictionaries(
        {"seconds": st.integers(-62_135_596_800, 253_402_300_799), "nanos": st.integers(0, 999_999_999)}
    )
    now = st.fixed_dictionaries({"seconds": st.integers(1_700_000_000, 1_900_000_000), "nanos": st.just(0)})
    return st.one_of(
        valid,
        now,
        st.fixed_dictionaries(
            {"seconds": integers(FieldDescriptor.TYPE_INT64), "nanos": integers(FieldDescriptor.TYPE_INT32)}
        ),
    )


_WELL_KNOWN = {"google.protobuf.Duration": duration_fields, "google.protobuf.Timestamp": timestamp_fields}


def messages(descriptor: Descriptor, hints: Sequence[str] = (), depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of `descriptor`'s type: each field set or not, each oneof with one member or none."""
    return _messages(descriptor, tuple(hints), depth)


@functools.cache
def _messages(descriptor: Descriptor, hints: tuple[str, ...], depth: int) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(descriptor)
    known = _WELL_KNOWN.get(descriptor.full_name)
    if known is not None:
        return known().map(lambda fields: cls(**fields))
    if depth >= MAX_DEPTH:
        return st.just(cls())
    oneof_members = {f.name for o in descriptor.oneofs for f in o.fields}
    plain = {f.name: _field_value(f, hints, depth) for f in descriptor.fields if f.name not in oneof_members}
    oneofs = [
        st.one_of(st.none(), *(st.tuples(st.just(f.name), _field_value(f, hints, depth)) for f in o.fields))
        for o in descriptor.oneofs
    ]

    def build(args: tuple[dict, list]) -> Message:
        values, chosen = args
        msg = cls()
        for name, value in values.items():
            _assign(msg, descriptor.fields_by_name[name], value)
        for pick in chosen:
            if pick is not None:
                _assign(msg, descriptor.fields_by_name[pick[0]], pick[1])
        return msg

    return st.tuples(st.fixed_dictionaries({}, optional=plain), st.tuples(*oneofs).map(list)).map(build)


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _is_repeated(field: FieldDescriptor) -> bool:
    # `label` is deprecated in newer protobuf releases in favour of `is_repeated`; both where they exist.
    is_repeated = getattr(field, "is_repeated", None)
    return bool(is_repeated) if is_repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _single(field: FieldDescriptor, hints: tuple[str, ...], depth: int) -> st.SearchStrategy:
    t = field.type
    if t in _INT_RANGES:
        return integers(t)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if t == FieldDescriptor.TYPE_FLOAT:
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if t == FieldDescriptor.TYPE_STRING:
        # Half of them a hint: one_of would flatten text()'s branches beside the hints and draw them a fifth as often.
        return st.booleans().flatmap(lambda hint: st.sampled_from(hints) if hint else text()) if hints else text()
    if t == FieldDescriptor.TYPE_BYTES:
        return binary()
    if t == FieldDescriptor.TYPE_ENUM:
        declared = [v.number for v in field.enum_type.values]
        if getattr(field.enum_type, "is_closed", False):  # proto2 enums refuse unknown numbers
            return st.sampled_from(declared)
        return st.one_of(st.sampled_from(declared), integers(FieldDescriptor.TYPE_INT32))
    if t == FieldDescriptor.TYPE_MESSAGE:
        return _messages(field.message_type, hints, depth + 1)
    raise TypeError(f"{field.full_name}: field type {t} is not handled")  # groups: proto2 only


def _field_value(field: FieldDescriptor, hints: tuple[str, ...], depth: int) -> st.SearchStrategy:
    if _is_map(field):
        entry = field.message_type
        key = _single(entry.fields_by_name["key"], hints, depth)
        value = _single(entry.fields_by_name["value"], hints, depth)
        return st.dictionaries(key, value, max_size=MAX_REPEATED)
    if _is_repeated(field):
        return st.lists(_single(field, hints, depth), max_size=MAX_REPEATED)
    return _single(field, hints, depth)


def _assign(msg: Message, field: FieldDescriptor, value) -> None:
    name = field.name
    if _is_map(field):
        target = getattr(msg, name)
        message_values = field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE
        for k, v in value.items():
            if message_values:
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif _is_repeated(field):
        getattr(msg, name).extend(value)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(msg, name).CopyFrom(value)
    else:
        setattr(msg, name, value)


# -- the RPCs of generated modules ------------------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    """One method of one service, as its descriptor says; `path` is what a generic multicallable dials."""

    service: ServiceDescriptor
    method: MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.service.full_name}/{self.method.name}"

    @property
    def name(self) -> str:
        return f"{self.service.name}.{self.method.name}"

    @property
    def request_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.input_type)

    @property
    def response_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.output_type)

    @property
    def client_streaming(self) -> bool:
        return bool(self.method.client_streaming)

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)


def rpcs(*modules: ModuleType) -> Iterator[Rpc]:
    """Every method of every service the generated `*_pb2` modules declare, in declaration order."""
    for module in modules:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield Rpc(service, method)
