import datetime

from edgefleet.v1 import fleet_pb2 as _fleet_pb2
from edgefleet.v1 import common_pb2 as _common_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATE_UNSPECIFIED: _ClassVar[NodeState]
    NODE_STATE_ENROLLED: _ClassVar[NodeState]
    NODE_STATE_ONLINE: _ClassVar[NodeState]
    NODE_STATE_OFFLINE: _ClassVar[NodeState]
    NODE_STATE_REVOKED: _ClassVar[NodeState]

class AuditOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIT_OUTCOME_UNSPECIFIED: _ClassVar[AuditOutcome]
    AUDIT_OUTCOME_ALLOWED: _ClassVar[AuditOutcome]
    AUDIT_OUTCOME_REFUSED: _ClassVar[AuditOutcome]

class FederatedRunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEDERATED_RUN_STATUS_UNSPECIFIED: _ClassVar[FederatedRunStatus]
    FEDERATED_RUN_STATUS_PENDING: _ClassVar[FederatedRunStatus]
    FEDERATED_RUN_STATUS_WAITING_FOR_NODES: _ClassVar[FederatedRunStatus]
    FEDERATED_RUN_STATUS_RUNNING: _ClassVar[FederatedRunStatus]
    FEDERATED_RUN_STATUS_COMPLETED: _ClassVar[FederatedRunStatus]
    FEDERATED_RUN_STATUS_FAILED: _ClassVar[FederatedRunStatus]

class OperatorRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATOR_ROLE_UNSPECIFIED: _ClassVar[OperatorRole]
    OPERATOR_ROLE_ADMIN: _ClassVar[OperatorRole]
    OPERATOR_ROLE_VIEWER: _ClassVar[OperatorRole]

class RollupResolution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLUP_RESOLUTION_UNSPECIFIED: _ClassVar[RollupResolution]
    ROLLUP_RESOLUTION_MINUTE: _ClassVar[RollupResolution]
    ROLLUP_RESOLUTION_HOUR: _ClassVar[RollupResolution]
NODE_STATE_UNSPECIFIED: NodeState
NODE_STATE_ENROLLED: NodeState
NODE_STATE_ONLINE: NodeState
NODE_STATE_OFFLINE: NodeState
NODE_STATE_REVOKED: NodeState
AUDIT_OUTCOME_UNSPECIFIED: AuditOutcome
AUDIT_OUTCOME_ALLOWED: AuditOutcome
AUDIT_OUTCOME_REFUSED: AuditOutcome
FEDERATED_RUN_STATUS_UNSPECIFIED: FederatedRunStatus
FEDERATED_RUN_STATUS_PENDING: FederatedRunStatus
FEDERATED_RUN_STATUS_WAITING_FOR_NODES: FederatedRunStatus
FEDERATED_RUN_STATUS_RUNNING: FederatedRunStatus
FEDERATED_RUN_STATUS_COMPLETED: FederatedRunStatus
FEDERATED_RUN_STATUS_FAILED: FederatedRunStatus
OPERATOR_ROLE_UNSPECIFIED: OperatorRole
OPERATOR_ROLE_ADMIN: OperatorRole
OPERATOR_ROLE_VIEWER: OperatorRole
ROLLUP_RESOLUTION_UNSPECIFIED: RollupResolution
ROLLUP_RESOLUTION_MINUTE: RollupResolution
ROLLUP_RESOLUTION_HOUR: RollupResolution

class Token(_message.Message):
    __slots__ = ("token_id", "labels", "created_at", "expires_at", "uses_total", "uses_left", "revoked", "created_by")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    USES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    USES_LEFT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    labels: _containers.ScalarMap[str, str]
    created_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    uses_total: int
    uses_left: int
    revoked: bool
    created_by: str
    def __init__(self, token_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., uses_total: _Optional[int] = ..., uses_left: _Optional[int] = ..., revoked: bool = ..., created_by: _Optional[str] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("labels", "ttl", "uses")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    USES_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.ScalarMap[str, str]
    ttl: _duration_pb2.Duration
    uses: int
    def __init__(self, labels: _Optional[_Mapping[str, str]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., uses: _Optional[int] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("token", "info", "ca_fingerprint", "enroll_address")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    CA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ENROLL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    token: str
    info: Token
    ca_fingerprint: str
    enroll_address: str
    def __init__(self, token: _Optional[str] = ..., info: _Optional[_Union[Token, _Mapping]] = ..., ca_fingerprint: _Optional[str] = ..., enroll_address: _Optional[str] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[Token]
    def __init__(self, tokens: _Optional[_Iterable[_Union[Token, _Mapping]]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("token_id",)
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    def __init__(self, token_id: _Optional[str] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: Token
    def __init__(self, token: _Optional[_Union[Token, _Mapping]] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("node_id", "labels", "state", "enrolled_at", "last_seen_at", "status", "certificate_serial", "certificate_expires_at", "hostname", "dropped_reports")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_SERIAL_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    DROPPED_REPORTS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    labels: _containers.ScalarMap[str, str]
    state: NodeState
    enrolled_at: _timestamp_pb2.Timestamp
    last_seen_at: _timestamp_pb2.Timestamp
    status: _common_pb2.NodeStatus
    certificate_serial: str
    certificate_expires_at: _timestamp_pb2.Timestamp
    hostname: str
    dropped_reports: int
    def __init__(self, node_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., state: _Optional[_Union[NodeState, str]] = ..., enrolled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_seen_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[_common_pb2.NodeStatus, _Mapping]] = ..., certificate_serial: _Optional[str] = ..., certificate_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., hostname: _Optional[str] = ..., dropped_reports: _Optional[int] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ("selector", "page_size", "page_token")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    selector: _containers.ScalarMap[str, str]
    page_size: int
    page_token: str
    def __init__(self, selector: _Optional[_Mapping[str, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes", "next_page_token")
    NODES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    next_page_token: str
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetNodeRequest(_message.Message):
    __slots__ = ("node_id", "report_limit")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REPORT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    report_limit: int
    def __init__(self, node_id: _Optional[str] = ..., report_limit: _Optional[int] = ...) -> None: ...

class GetNodeResponse(_message.Message):
    __slots__ = ("node", "reports")
    NODE_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    node: Node
    reports: _containers.RepeatedCompositeFieldContainer[_fleet_pb2.Report]
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ..., reports: _Optional[_Iterable[_Union[_fleet_pb2.Report, _Mapping]]] = ...) -> None: ...

class LabelNodeRequest(_message.Message):
    __slots__ = ("node_id", "set_labels", "remove_labels")
    class SetLabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SET_LABELS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_LABELS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    set_labels: _containers.ScalarMap[str, str]
    remove_labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., set_labels: _Optional[_Mapping[str, str]] = ..., remove_labels: _Optional[_Iterable[str]] = ...) -> None: ...

class LabelNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class RevokeNodeRequest(_message.Message):
    __slots__ = ("node_id", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("sequence", "at", "actor", "action", "target", "outcome", "detail", "peer", "previous_hash", "hash", "at_seconds")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    AT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    at: _timestamp_pb2.Timestamp
    actor: str
    action: str
    target: str
    outcome: AuditOutcome
    detail: str
    peer: str
    previous_hash: str
    hash: str
    at_seconds: float
    def __init__(self, sequence: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., outcome: _Optional[_Union[AuditOutcome, str]] = ..., detail: _Optional[str] = ..., peer: _Optional[str] = ..., previous_hash: _Optional[str] = ..., hash: _Optional[str] = ..., at_seconds: _Optional[float] = ...) -> None: ...

class ListAuditEntriesRequest(_message.Message):
    __slots__ = ("after_sequence", "limit")
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    limit: int
    def __init__(self, after_sequence: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListAuditEntriesResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ...) -> None: ...

class VerifyAuditRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VerifyAuditResponse(_message.Message):
    __slots__ = ("intact", "entries_checked", "first_bad_sequence", "problem", "anchor")
    INTACT_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_CHECKED_FIELD_NUMBER: _ClassVar[int]
    FIRST_BAD_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_FIELD_NUMBER: _ClassVar[int]
    intact: bool
    entries_checked: int
    first_bad_sequence: int
    problem: str
    anchor: AuditAnchor
    def __init__(self, intact: bool = ..., entries_checked: _Optional[int] = ..., first_bad_sequence: _Optional[int] = ..., problem: _Optional[str] = ..., anchor: _Optional[_Union[AuditAnchor, _Mapping]] = ...) -> None: ...

class AuditAnchor(_message.Message):
    __slots__ = ("sequence", "hash", "at_seconds", "signature")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    AT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    hash: str
    at_seconds: float
    signature: str
    def __init__(self, sequence: _Optional[int] = ..., hash: _Optional[str] = ..., at_seconds: _Optional[float] = ..., signature: _Optional[str] = ...) -> None: ...

class ArchiveAuditRequest(_message.Message):
    __slots__ = ("before_sequence", "last_hash")
    BEFORE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAST_HASH_FIELD_NUMBER: _ClassVar[int]
    before_sequence: int
    last_hash: str
    def __init__(self, before_sequence: _Optional[int] = ..., last_hash: _Optional[str] = ...) -> None: ...

class ArchiveAuditResponse(_message.Message):
    __slots__ = ("anchor", "entries_pruned")
    ANCHOR_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_PRUNED_FIELD_NUMBER: _ClassVar[int]
    anchor: AuditAnchor
    entries_pruned: int
    def __init__(self, anchor: _Optional[_Union[AuditAnchor, _Mapping]] = ..., entries_pruned: _Optional[int] = ...) -> None: ...

class ListRoutingTotalsRequest(_message.Message):
    __slots__ = ("node_id", "page_size", "page_token")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    page_size: int
    page_token: str
    def __init__(self, node_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRoutingTotalsResponse(_message.Message):
    __slots__ = ("nodes", "next_page_token")
    NODES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeRouting]
    next_page_token: str
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeRouting, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class NodeRouting(_message.Message):
    __slots__ = ("node_id", "hostname", "counts", "audit_sequence", "audit_head_hash", "updated_at")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    hostname: str
    counts: _containers.RepeatedCompositeFieldContainer[_common_pb2.RouteCount]
    audit_sequence: int
    audit_head_hash: str
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, node_id: _Optional[str] = ..., hostname: _Optional[str] = ..., counts: _Optional[_Iterable[_Union[_common_pb2.RouteCount, _Mapping]]] = ..., audit_sequence: _Optional[int] = ..., audit_head_hash: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "version", "format", "sha256", "size", "params", "created_at", "pushed_by", "assigned_nodes")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PUSHED_BY_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_NODES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    format: str
    sha256: str
    size: int
    params: _containers.ScalarMap[str, str]
    created_at: _timestamp_pb2.Timestamp
    pushed_by: str
    assigned_nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., format: _Optional[str] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ..., params: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pushed_by: _Optional[str] = ..., assigned_nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelUpload(_message.Message):
    __slots__ = ("name", "version", "format", "params", "size", "sha256")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    format: str
    params: _containers.ScalarMap[str, str]
    size: int
    sha256: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., format: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class PushModelRequest(_message.Message):
    __slots__ = ("upload", "chunk")
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    upload: ModelUpload
    chunk: bytes
    def __init__(self, upload: _Optional[_Union[ModelUpload, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class PushModelResponse(_message.Message):
    __slots__ = ("model", "already_present")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    model: Model
    already_present: bool
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ..., already_present: bool = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model", "manifest")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    model: Model
    manifest: _common_pb2.SignedManifest
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ..., manifest: _Optional[_Union[_common_pb2.SignedManifest, _Mapping]] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ("blob_removed",)
    BLOB_REMOVED_FIELD_NUMBER: _ClassVar[int]
    blob_removed: bool
    def __init__(self, blob_removed: bool = ...) -> None: ...

class AssignModelRequest(_message.Message):
    __slots__ = ("node_id", "name", "version")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    name: str
    version: str
    def __init__(self, node_id: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class AssignModelResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class RolloutNode(_message.Message):
    __slots__ = ("node_id", "desired_version", "active_version", "activation_state", "in_step")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DESIRED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_STATE_FIELD_NUMBER: _ClassVar[int]
    IN_STEP_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    desired_version: str
    active_version: str
    activation_state: str
    in_step: bool
    def __init__(self, node_id: _Optional[str] = ..., desired_version: _Optional[str] = ..., active_version: _Optional[str] = ..., activation_state: _Optional[str] = ..., in_step: bool = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("rollout_id", "model", "selector", "steps", "bake", "max_error_rate", "max_p99_ms", "phase", "step_index", "step_started_at", "reason", "created_at", "nodes", "waiting_on")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    BAKE_FIELD_NUMBER: _ClassVar[int]
    MAX_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_MS_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    STEP_STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    WAITING_ON_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    model: _common_pb2.ModelRef
    selector: _containers.ScalarMap[str, str]
    steps: _containers.RepeatedScalarFieldContainer[int]
    bake: _duration_pb2.Duration
    max_error_rate: float
    max_p99_ms: float
    phase: str
    step_index: int
    step_started_at: _timestamp_pb2.Timestamp
    reason: str
    created_at: _timestamp_pb2.Timestamp
    nodes: _containers.RepeatedCompositeFieldContainer[RolloutNode]
    waiting_on: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, rollout_id: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., selector: _Optional[_Mapping[str, str]] = ..., steps: _Optional[_Iterable[int]] = ..., bake: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_error_rate: _Optional[float] = ..., max_p99_ms: _Optional[float] = ..., phase: _Optional[str] = ..., step_index: _Optional[int] = ..., step_started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[RolloutNode, _Mapping]]] = ..., waiting_on: _Optional[_Iterable[str]] = ...) -> None: ...

class StartRolloutRequest(_message.Message):
    __slots__ = ("name", "version", "selector", "canary", "steps", "bake", "max_error_rate", "max_p99_ms")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    BAKE_FIELD_NUMBER: _ClassVar[int]
    MAX_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    selector: _containers.ScalarMap[str, str]
    canary: int
    steps: _containers.RepeatedScalarFieldContainer[int]
    bake: _duration_pb2.Duration
    max_error_rate: float
    max_p99_ms: float
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., selector: _Optional[_Mapping[str, str]] = ..., canary: _Optional[int] = ..., steps: _Optional[_Iterable[int]] = ..., bake: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_error_rate: _Optional[float] = ..., max_p99_ms: _Optional[float] = ...) -> None: ...

class StartRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class GetRolloutRequest(_message.Message):
    __slots__ = ("rollout_id",)
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    def __init__(self, rollout_id: _Optional[str] = ...) -> None: ...

class GetRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class ListRolloutsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRolloutsResponse(_message.Message):
    __slots__ = ("rollouts",)
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    rollouts: _containers.RepeatedCompositeFieldContainer[Rollout]
    def __init__(self, rollouts: _Optional[_Iterable[_Union[Rollout, _Mapping]]] = ...) -> None: ...

class PauseRolloutRequest(_message.Message):
    __slots__ = ("rollout_id",)
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    def __init__(self, rollout_id: _Optional[str] = ...) -> None: ...

class PauseRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class ResumeRolloutRequest(_message.Message):
    __slots__ = ("rollout_id",)
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    def __init__(self, rollout_id: _Optional[str] = ...) -> None: ...

class ResumeRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class AbortRolloutRequest(_message.Message):
    __slots__ = ("rollout_id", "reason")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    reason: str
    def __init__(self, rollout_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AbortRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class FederatedRun(_message.Message):
    __slots__ = ("run_id", "task", "status", "rounds", "round_seconds", "nodes", "error", "secagg", "model", "outcome_json", "started_at", "finished_at", "started_by", "node_errors")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    ROUND_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SECAGG_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_JSON_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_BY_FIELD_NUMBER: _ClassVar[int]
    NODE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    run_id: int
    task: str
    status: FederatedRunStatus
    rounds: int
    round_seconds: _containers.RepeatedScalarFieldContainer[float]
    nodes: int
    error: str
    secagg: bool
    model: str
    outcome_json: str
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    started_by: str
    node_errors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, run_id: _Optional[int] = ..., task: _Optional[str] = ..., status: _Optional[_Union[FederatedRunStatus, str]] = ..., rounds: _Optional[int] = ..., round_seconds: _Optional[_Iterable[float]] = ..., nodes: _Optional[int] = ..., error: _Optional[str] = ..., secagg: bool = ..., model: _Optional[str] = ..., outcome_json: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_by: _Optional[str] = ..., node_errors: _Optional[_Iterable[str]] = ...) -> None: ...

class StartFederatedRunRequest(_message.Message):
    __slots__ = ("task", "rounds", "min_nodes", "no_secagg", "secagg_shares", "secagg_threshold", "clip", "noise", "stage_timeout_s", "wait_nodes_s", "record_received")
    TASK_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    MIN_NODES_FIELD_NUMBER: _ClassVar[int]
    NO_SECAGG_FIELD_NUMBER: _ClassVar[int]
    SECAGG_SHARES_FIELD_NUMBER: _ClassVar[int]
    SECAGG_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    STAGE_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    WAIT_NODES_S_FIELD_NUMBER: _ClassVar[int]
    RECORD_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    task: str
    rounds: int
    min_nodes: int
    no_secagg: bool
    secagg_shares: int
    secagg_threshold: int
    clip: float
    noise: float
    stage_timeout_s: float
    wait_nodes_s: float
    record_received: bool
    def __init__(self, task: _Optional[str] = ..., rounds: _Optional[int] = ..., min_nodes: _Optional[int] = ..., no_secagg: bool = ..., secagg_shares: _Optional[int] = ..., secagg_threshold: _Optional[int] = ..., clip: _Optional[float] = ..., noise: _Optional[float] = ..., stage_timeout_s: _Optional[float] = ..., wait_nodes_s: _Optional[float] = ..., record_received: bool = ...) -> None: ...

class StartFederatedRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: FederatedRun
    def __init__(self, run: _Optional[_Union[FederatedRun, _Mapping]] = ...) -> None: ...

class GetFederatedRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: int
    def __init__(self, run_id: _Optional[int] = ...) -> None: ...

class GetFederatedRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: FederatedRun
    def __init__(self, run: _Optional[_Union[FederatedRun, _Mapping]] = ...) -> None: ...

class ListFederatedRunsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFederatedRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[FederatedRun]
    def __init__(self, runs: _Optional[_Iterable[_Union[FederatedRun, _Mapping]]] = ...) -> None: ...

class Operator(_message.Message):
    __slots__ = ("name", "role", "certificate_serial", "expires_at", "created_at", "created_by", "revoked_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_SERIAL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: OperatorRole
    certificate_serial: str
    expires_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    revoked_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[OperatorRole, str]] = ..., certificate_serial: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateOperatorRequest(_message.Message):
    __slots__ = ("name", "role", "ttl", "csr_pem")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: OperatorRole
    ttl: _duration_pb2.Duration
    csr_pem: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[OperatorRole, str]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., csr_pem: _Optional[str] = ...) -> None: ...

class CreateOperatorResponse(_message.Message):
    __slots__ = ("operator", "certificate_pem", "ca_certificate_pem")
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    operator: Operator
    certificate_pem: str
    ca_certificate_pem: str
    def __init__(self, operator: _Optional[_Union[Operator, _Mapping]] = ..., certificate_pem: _Optional[str] = ..., ca_certificate_pem: _Optional[str] = ...) -> None: ...

class ListOperatorsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListOperatorsResponse(_message.Message):
    __slots__ = ("operators",)
    OPERATORS_FIELD_NUMBER: _ClassVar[int]
    operators: _containers.RepeatedCompositeFieldContainer[Operator]
    def __init__(self, operators: _Optional[_Iterable[_Union[Operator, _Mapping]]] = ...) -> None: ...

class RevokeOperatorRequest(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeOperatorResponse(_message.Message):
    __slots__ = ("operator",)
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    operator: Operator
    def __init__(self, operator: _Optional[_Union[Operator, _Mapping]] = ...) -> None: ...

class RenewOperatorRequest(_message.Message):
    __slots__ = ("name", "ttl", "csr_pem")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    name: str
    ttl: _duration_pb2.Duration
    csr_pem: str
    def __init__(self, name: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., csr_pem: _Optional[str] = ...) -> None: ...

class RenewOperatorResponse(_message.Message):
    __slots__ = ("operator", "certificate_pem", "ca_certificate_pem", "replaced_serial")
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    REPLACED_SERIAL_FIELD_NUMBER: _ClassVar[int]
    operator: Operator
    certificate_pem: str
    ca_certificate_pem: str
    replaced_serial: str
    def __init__(self, operator: _Optional[_Union[Operator, _Mapping]] = ..., certificate_pem: _Optional[str] = ..., ca_certificate_pem: _Optional[str] = ..., replaced_serial: _Optional[str] = ...) -> None: ...

class GetMetricsHistoryRequest(_message.Message):
    __slots__ = ("scopes", "resolution", "start", "end")
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    scopes: _containers.RepeatedScalarFieldContainer[str]
    resolution: RollupResolution
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, scopes: _Optional[_Iterable[str]] = ..., resolution: _Optional[_Union[RollupResolution, str]] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetMetricsHistoryResponse(_message.Message):
    __slots__ = ("series",)
    SERIES_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[MetricsSeries]
    def __init__(self, series: _Optional[_Iterable[_Union[MetricsSeries, _Mapping]]] = ...) -> None: ...

class MetricsSeries(_message.Message):
    __slots__ = ("scope", "points")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    scope: str
    points: _containers.RepeatedCompositeFieldContainer[RollupPoint]
    def __init__(self, scope: _Optional[str] = ..., points: _Optional[_Iterable[_Union[RollupPoint, _Mapping]]] = ...) -> None: ...

class RollupPoint(_message.Message):
    __slots__ = ("start", "period_seconds", "requests", "errors", "generated_tokens", "prompt_tokens", "cached_prompt_tokens", "tokens_per_second", "latency_p50_ms", "latency_p99_ms", "ttft_p50_ms", "ttft_p99_ms", "cache_hits", "cache_lookups", "queue_depth_max", "queue_depth_mean", "heartbeats", "upstream_requests", "upstream_prompt_tokens", "upstream_completion_tokens", "upstream_cost")
    START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_P50_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_P99_MS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    CACHE_LOOKUPS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_MAX_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_MEAN_FIELD_NUMBER: _ClassVar[int]
    HEARTBEATS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_COST_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    period_seconds: int
    requests: int
    errors: int
    generated_tokens: int
    prompt_tokens: int
    cached_prompt_tokens: int
    tokens_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    cache_hits: int
    cache_lookups: int
    queue_depth_max: int
    queue_depth_mean: float
    heartbeats: int
    upstream_requests: int
    upstream_prompt_tokens: int
    upstream_completion_tokens: int
    upstream_cost: float
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_seconds: _Optional[int] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., generated_tokens: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., cached_prompt_tokens: _Optional[int] = ..., tokens_per_second: _Optional[float] = ..., latency_p50_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., ttft_p50_ms: _Optional[float] = ..., ttft_p99_ms: _Optional[float] = ..., cache_hits: _Optional[int] = ..., cache_lookups: _Optional[int] = ..., queue_depth_max: _Optional[int] = ..., queue_depth_mean: _Optional[float] = ..., heartbeats: _Optional[int] = ..., upstream_requests: _Optional[int] = ..., upstream_prompt_tokens: _Optional[int] = ..., upstream_completion_tokens: _Optional[int] = ..., upstream_cost: _Optional[float] = ...) -> None: ...

class Objective(_message.Message):
    __slots__ = ("name", "selector", "availability_percent", "latency_threshold_ms", "latency_percent", "window", "updated_at", "updated_by")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_THRESHOLD_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    name: str
    selector: _containers.ScalarMap[str, str]
    availability_percent: float
    latency_threshold_ms: float
    latency_percent: float
    window: _duration_pb2.Duration
    updated_at: _timestamp_pb2.Timestamp
    updated_by: str
    def __init__(self, name: _Optional[str] = ..., selector: _Optional[_Mapping[str, str]] = ..., availability_percent: _Optional[float] = ..., latency_threshold_ms: _Optional[float] = ..., latency_percent: _Optional[float] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_by: _Optional[str] = ...) -> None: ...

class ObjectiveStatus(_message.Message):
    __slots__ = ("requests", "errors", "slow_requests", "availability_percent", "latency_good_percent", "compliant", "error_budget_remaining", "burn_rates", "alert")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    SLOW_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_GOOD_PERCENT_FIELD_NUMBER: _ClassVar[int]
    COMPLIANT_FIELD_NUMBER: _ClassVar[int]
    ERROR_BUDGET_REMAINING_FIELD_NUMBER: _ClassVar[int]
    BURN_RATES_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    requests: int
    errors: int
    slow_requests: int
    availability_percent: float
    latency_good_percent: float
    compliant: bool
    error_budget_remaining: float
    burn_rates: _containers.RepeatedCompositeFieldContainer[BurnRate]
    alert: str
    def __init__(self, requests: _Optional[int] = ..., errors: _Optional[int] = ..., slow_requests: _Optional[int] = ..., availability_percent: _Optional[float] = ..., latency_good_percent: _Optional[float] = ..., compliant: bool = ..., error_budget_remaining: _Optional[float] = ..., burn_rates: _Optional[_Iterable[_Union[BurnRate, _Mapping]]] = ..., alert: _Optional[str] = ...) -> None: ...

class BurnRate(_message.Message):
    __slots__ = ("window_seconds", "availability", "latency")
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    window_seconds: int
    availability: float
    latency: float
    def __init__(self, window_seconds: _Optional[int] = ..., availability: _Optional[float] = ..., latency: _Optional[float] = ...) -> None: ...

class SetObjectiveRequest(_message.Message):
    __slots__ = ("objective",)
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    objective: Objective
    def __init__(self, objective: _Optional[_Union[Objective, _Mapping]] = ...) -> None: ...

class SetObjectiveResponse(_message.Message):
    __slots__ = ("objective",)
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    objective: Objective
    def __init__(self, objective: _Optional[_Union[Objective, _Mapping]] = ...) -> None: ...

class ListObjectivesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListObjectivesResponse(_message.Message):
    __slots__ = ("objectives", "statuses")
    OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    objectives: _containers.RepeatedCompositeFieldContainer[Objective]
    statuses: _containers.RepeatedCompositeFieldContainer[ObjectiveStatus]
    def __init__(self, objectives: _Optional[_Iterable[_Union[Objective, _Mapping]]] = ..., statuses: _Optional[_Iterable[_Union[ObjectiveStatus, _Mapping]]] = ...) -> None: ...

class DeleteObjectiveRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteObjectiveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBurstUsageRequest(_message.Message):
    __slots__ = ("group_by", "since")
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    group_by: _containers.RepeatedScalarFieldContainer[str]
    since: _timestamp_pb2.Timestamp
    def __init__(self, group_by: _Optional[_Iterable[str]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListBurstUsageResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[BurstUsage]
    def __init__(self, rows: _Optional[_Iterable[_Union[BurstUsage, _Mapping]]] = ...) -> None: ...

class BurstUsage(_message.Message):
    __slots__ = ("upstream", "group", "requests", "prompt_tokens", "completion_tokens", "cost", "currency", "last_at")
    class GroupEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    LAST_AT_FIELD_NUMBER: _ClassVar[int]
    upstream: str
    group: _containers.ScalarMap[str, str]
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost: float
    currency: str
    last_at: _timestamp_pb2.Timestamp
    def __init__(self, upstream: _Optional[str] = ..., group: _Optional[_Mapping[str, str]] = ..., requests: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cost: _Optional[float] = ..., currency: _Optional[str] = ..., last_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RotateSigningKeyRequest(_message.Message):
    __slots__ = ("overlap",)
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    overlap: _duration_pb2.Duration
    def __init__(self, overlap: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RotateSigningKeyResponse(_message.Message):
    __slots__ = ("current", "previous", "manifests_resigned")
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    MANIFESTS_RESIGNED_FIELD_NUMBER: _ClassVar[int]
    current: SigningKey
    previous: SigningKey
    manifests_resigned: int
    def __init__(self, current: _Optional[_Union[SigningKey, _Mapping]] = ..., previous: _Optional[_Union[SigningKey, _Mapping]] = ..., manifests_resigned: _Optional[int] = ...) -> None: ...

class FinishSigningKeyRotationRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FinishSigningKeyRotationResponse(_message.Message):
    __slots__ = ("retired",)
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    retired: SigningKey
    def __init__(self, retired: _Optional[_Union[SigningKey, _Mapping]] = ...) -> None: ...

class SigningKey(_message.Message):
    __slots__ = ("key_id", "public_key_pem", "created_at", "valid_until", "state")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    public_key_pem: str
    created_at: _timestamp_pb2.Timestamp
    valid_until: _timestamp_pb2.Timestamp
    state: str
    def __init__(self, key_id: _Optional[str] = ..., public_key_pem: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., valid_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[str] = ...) -> None: ...

class RotateCaRequest(_message.Message):
    __slots__ = ("now",)
    NOW_FIELD_NUMBER: _ClassVar[int]
    now: bool
    def __init__(self, now: bool = ...) -> None: ...

class RotateCaResponse(_message.Message):
    __slots__ = ("current", "previous")
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    current: CertificateAuthority
    previous: CertificateAuthority
    def __init__(self, current: _Optional[_Union[CertificateAuthority, _Mapping]] = ..., previous: _Optional[_Union[CertificateAuthority, _Mapping]] = ...) -> None: ...

class FinishCaRotationRequest(_message.Message):
    __slots__ = ("force",)
    FORCE_FIELD_NUMBER: _ClassVar[int]
    force: bool
    def __init__(self, force: bool = ...) -> None: ...

class FinishCaRotationResponse(_message.Message):
    __slots__ = ("retired", "stranded")
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    STRANDED_FIELD_NUMBER: _ClassVar[int]
    retired: CertificateAuthority
    stranded: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, retired: _Optional[_Union[CertificateAuthority, _Mapping]] = ..., stranded: _Optional[_Iterable[str]] = ...) -> None: ...

class CertificateAuthority(_message.Message):
    __slots__ = ("fingerprint", "certificate_pem", "not_after", "state")
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    fingerprint: str
    certificate_pem: str
    not_after: _timestamp_pb2.Timestamp
    state: str
    def __init__(self, fingerprint: _Optional[str] = ..., certificate_pem: _Optional[str] = ..., not_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[str] = ...) -> None: ...

class GetTrustRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetTrustResponse(_message.Message):
    __slots__ = ("cas", "signing_keys", "on_previous_ca", "version")
    CAS_FIELD_NUMBER: _ClassVar[int]
    SIGNING_KEYS_FIELD_NUMBER: _ClassVar[int]
    ON_PREVIOUS_CA_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    cas: _containers.RepeatedCompositeFieldContainer[CertificateAuthority]
    signing_keys: _containers.RepeatedCompositeFieldContainer[SigningKey]
    on_previous_ca: _containers.RepeatedScalarFieldContainer[str]
    version: int
    def __init__(self, cas: _Optional[_Iterable[_Union[CertificateAuthority, _Mapping]]] = ..., signing_keys: _Optional[_Iterable[_Union[SigningKey, _Mapping]]] = ..., on_previous_ca: _Optional[_Iterable[str]] = ..., version: _Optional[int] = ...) -> None: ...

class GetRestoreReportRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRestoreReportResponse(_message.Message):
    __slots__ = ("restored", "backup_at", "restored_at", "backup_id", "audit_head_sequence", "findings")
    RESTORED_FIELD_NUMBER: _ClassVar[int]
    BACKUP_AT_FIELD_NUMBER: _ClassVar[int]
    RESTORED_AT_FIELD_NUMBER: _ClassVar[int]
    BACKUP_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HEAD_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    restored: bool
    backup_at: _timestamp_pb2.Timestamp
    restored_at: _timestamp_pb2.Timestamp
    backup_id: str
    audit_head_sequence: int
    findings: _containers.RepeatedCompositeFieldContainer[RestoreFinding]
    def __init__(self, restored: bool = ..., backup_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., restored_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., backup_id: _Optional[str] = ..., audit_head_sequence: _Optional[int] = ..., findings: _Optional[_Iterable[_Union[RestoreFinding, _Mapping]]] = ...) -> None: ...

class RestoreFinding(_message.Message):
    __slots__ = ("kind", "node_id", "detail", "found_at", "action")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    FOUND_AT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    kind: str
    node_id: str
    detail: str
    found_at: _timestamp_pb2.Timestamp
    action: str
    def __init__(self, kind: _Optional[str] = ..., node_id: _Optional[str] = ..., detail: _Optional[str] = ..., found_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., action: _Optional[str] = ...) -> None: ...
