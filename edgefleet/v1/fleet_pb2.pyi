import datetime

from edgefleet.v1 import common_pb2 as _common_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HeartbeatRequest(_message.Message):
    __slots__ = ("node_id", "status")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    status: _common_pb2.NodeStatus
    def __init__(self, node_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.NodeStatus, _Mapping]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("desired", "heartbeat_interval", "fleet_addresses", "trust")
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    FLEET_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    TRUST_FIELD_NUMBER: _ClassVar[int]
    desired: DesiredState
    heartbeat_interval: _duration_pb2.Duration
    fleet_addresses: _containers.RepeatedScalarFieldContainer[str]
    trust: TrustBundle
    def __init__(self, desired: _Optional[_Union[DesiredState, _Mapping]] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., fleet_addresses: _Optional[_Iterable[str]] = ..., trust: _Optional[_Union[TrustBundle, _Mapping]] = ...) -> None: ...

class TrustBundle(_message.Message):
    __slots__ = ("version", "ca_certificates_pem", "cross_certificates_pem", "signing_key_statements", "renew_now")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATES_PEM_FIELD_NUMBER: _ClassVar[int]
    CROSS_CERTIFICATES_PEM_FIELD_NUMBER: _ClassVar[int]
    SIGNING_KEY_STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    RENEW_NOW_FIELD_NUMBER: _ClassVar[int]
    version: int
    ca_certificates_pem: _containers.RepeatedScalarFieldContainer[str]
    cross_certificates_pem: _containers.RepeatedScalarFieldContainer[str]
    signing_key_statements: _containers.RepeatedCompositeFieldContainer[SigningKeyStatement]
    renew_now: bool
    def __init__(self, version: _Optional[int] = ..., ca_certificates_pem: _Optional[_Iterable[str]] = ..., cross_certificates_pem: _Optional[_Iterable[str]] = ..., signing_key_statements: _Optional[_Iterable[_Union[SigningKeyStatement, _Mapping]]] = ..., renew_now: bool = ...) -> None: ...

class SigningKeyStatement(_message.Message):
    __slots__ = ("body", "signature")
    BODY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    signature: str
    def __init__(self, body: _Optional[bytes] = ..., signature: _Optional[str] = ...) -> None: ...

class DesiredState(_message.Message):
    __slots__ = ("config_generation", "model", "manifest")
    CONFIG_GENERATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    config_generation: int
    model: _common_pb2.ModelRef
    manifest: _common_pb2.SignedManifest
    def __init__(self, config_generation: _Optional[int] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., manifest: _Optional[_Union[_common_pb2.SignedManifest, _Mapping]] = ...) -> None: ...

class RenewCertificateRequest(_message.Message):
    __slots__ = ("node_id", "csr_pem")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    csr_pem: str
    def __init__(self, node_id: _Optional[str] = ..., csr_pem: _Optional[str] = ...) -> None: ...

class RenewCertificateResponse(_message.Message):
    __slots__ = ("certificate_pem", "ca_certificate_pem")
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    certificate_pem: str
    ca_certificate_pem: str
    def __init__(self, certificate_pem: _Optional[str] = ..., ca_certificate_pem: _Optional[str] = ...) -> None: ...

class FetchArtifactRequest(_message.Message):
    __slots__ = ("sha256", "offset")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    offset: int
    def __init__(self, sha256: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class FetchArtifactResponse(_message.Message):
    __slots__ = ("offset", "data", "total_size")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    total_size: int
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_size: _Optional[int] = ...) -> None: ...

class ReportEventRequest(_message.Message):
    __slots__ = ("node_id", "reports", "dropped_count", "spool_epoch")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_COUNT_FIELD_NUMBER: _ClassVar[int]
    SPOOL_EPOCH_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reports: _containers.RepeatedCompositeFieldContainer[Report]
    dropped_count: int
    spool_epoch: str
    def __init__(self, node_id: _Optional[str] = ..., reports: _Optional[_Iterable[_Union[Report, _Mapping]]] = ..., dropped_count: _Optional[int] = ..., spool_epoch: _Optional[str] = ...) -> None: ...

class ReportEventResponse(_message.Message):
    __slots__ = ("acknowledged_sequence",)
    ACKNOWLEDGED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    acknowledged_sequence: int
    def __init__(self, acknowledged_sequence: _Optional[int] = ...) -> None: ...

class Report(_message.Message):
    __slots__ = ("sequence", "observed_at", "status", "event")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    observed_at: _timestamp_pb2.Timestamp
    status: _common_pb2.NodeStatus
    event: Event
    def __init__(self, sequence: _Optional[int] = ..., observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[_common_pb2.NodeStatus, _Mapping]] = ..., event: _Optional[_Union[Event, _Mapping]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("kind", "message", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    kind: str
    message: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, kind: _Optional[str] = ..., message: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...
