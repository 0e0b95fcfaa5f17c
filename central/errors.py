"""Central's exception tree; one root, under edgefleet's, so callers can catch it whole.

    CentralError           (central.errors)          central's root
    ├── ServiceError       (central.errors)          a refused call; the servicers map each class to one gRPC status
    │   ├── Unauthenticated    (central.errors)      no usable identity (UNAUTHENTICATED)
    │   ├── PermissionDenied   (central.errors)      an identity that may not do this (PERMISSION_DENIED)
    │   ├── InvalidArgument    (central.errors)      a malformed request (INVALID_ARGUMENT)
    │   ├── NotFound           (central.errors)      no such node, token or model (NOT_FOUND)
    │   ├── AlreadyExists      (central.errors)      an immutable thing exists with other content (ALREADY_EXISTS)
    │   ├── FailedPrecondition (central.errors)      refused because of the fleet's state, e.g. a model in use
    │   └── ResourceExhausted  (central.services.enrollment)  over the enrollment port's limits; says when to retry
    ├── Refusal            (central.services.enrollment)  an enrollment refused, with its audit reason (.error)
    ├── StoreError         (central.store.records)   the store cannot do what was asked
    ├── BlobError          (central.blobs)           a blob cannot be stored or read
    ├── DataDirError       (central.datadir)         a data dir that is not initialized, or already is
    │   └── RotationError  (central.rotation)        a rotation the trust's state refuses, or trust files that disagree
    ├── BackupError        (central.backup)          a backup that cannot be taken, read, verified or restored
    │   ├── BackupUsageError (central.backup_commands)  flags a backup command cannot run with (exit 2)
    │   └── ArchiveError   (central.backup.archive)  an archive that cannot be read; the subclasses say why
    │       ├── NotABackupError    (central.backup.archive)  not an edgefleet backup, or a header it cannot hold
    │       ├── FormatVersionError (central.backup.archive)  written in a newer format than this edgefleet reads
    │       ├── WrongKeyError      (central.backup.archive)  the passphrase or identity does not open it
    │       └── DamagedError       (central.backup.archive)  a chunk fails authentication: altered or truncated
    ├── RestoreStateError  (central.restore_state)   a restore point that cannot be recorded (malformed)
    ├── CredentialError    (central.credential)      the CLI's credential file is missing or unusable
    ├── ListenError        (central.server)          a port could not be bound
    ├── MetricsListenError (central.metrics_server)  --metrics-listen cannot be served as asked (address, mTLS)
    ├── LabelError         (central.labels)          a malformed label or selector; also a ValueError
    ├── RolloutError       (central.rollout)         an invalid rollout spec or flag; also a ValueError
    │   └── PhaseError     (central.rollout)         a transition the rollout's phase forbids
    ├── RollupError        (central.rollups)         a malformed --rollup-labels list; also a ValueError
    ├── ObjectiveError     (central.slo)             an invalid service level objective; also a ValueError
    ├── RulesError         (central.slo_rules)       objectives Prometheus cannot judge exactly; also a ValueError
    └── AdminCallError     (central.client)          an AdminService call failed; carries the CLI's exit code

Only ServiceErrors reach a caller as a status: the handlers wrap the others at their boundary
(`raise InvalidArgument(str(exc)) from None`), and anything else is a bug that gRPC reports as UNKNOWN.
"""

from edgefleet.errors import EdgefleetError


class CentralError(EdgefleetError):
    """Root of every error central/ raises on purpose."""


# A refusal's message often quotes what the caller sent (a node id, a model name), which can be megabytes. gRPC
# carries it percent-encoded in a trailer (up to 12 bytes a character) that clients refuse past 16 KiB, and
# then report RESOURCE_EXHAUSTED instead of the refusal: the message keeps its first MAX_MESSAGE_CHARS.
MAX_MESSAGE_CHARS = 500


class ServiceError(CentralError):
    """Root of the handlers' refusals; the message is shown to the caller, bounded to MAX_MESSAGE_CHARS."""

    def __init__(self, message: str = "") -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            message = f"{message[:MAX_MESSAGE_CHARS]}... ({len(message) - MAX_MESSAGE_CHARS} more characters)"
        super().__init__(message)


class Unauthenticated(ServiceError):
    pass


class PermissionDenied(ServiceError):
    pass


class InvalidArgument(ServiceError):
    pass


class NotFound(ServiceError):
    pass


class AlreadyExists(ServiceError):
    pass


class FailedPrecondition(ServiceError):
    pass
