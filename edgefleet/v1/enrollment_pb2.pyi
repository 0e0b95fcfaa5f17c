import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnrollRequest(_message.Message):
    __slots__ = ("token", "csr_pem", "hostname", "flower_public_key")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    FLOWER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    token: str
    csr_pem: str
    hostname: str
    flower_public_key: str
    def __init__(self, token: _Optional[str] = ..., csr_pem: _Optional[str] = ..., hostname: _Optional[str] = ..., flower_public_key: _Optional[str] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("node_id", "labels", "certificate_pem", "ca_certificate_pem", "fleet_port", "signing_public_key_pem", "heartbeat_interval", "superlink_port", "fleet_addresses")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    FLEET_PORT_FIELD_NUMBER: _ClassVar[int]
    SIGNING_PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    SUPERLINK_PORT_FIELD_NUMBER: _ClassVar[int]
    FLEET_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    labels: _containers.ScalarMap[str, str]
    certificate_pem: str
    ca_certificate_pem: str
    fleet_port: int
    signing_public_key_pem: str
    heartbeat_interval: _duration_pb2.Duration
    superlink_port: int
    fleet_addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., certificate_pem: _Optional[str] = ..., ca_certificate_pem: _Optional[str] = ..., fleet_port: _Optional[int] = ..., signing_public_key_pem: _Optional[str] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., superlink_port: _Optional[int] = ..., fleet_addresses: _Optional[_Iterable[str]] = ...) -> None: ...
