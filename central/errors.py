"""Errors of central's handlers. The servicers map each class to one gRPC status, in one place.

    CentralError
    ├── Unauthenticated     no usable identity (UNAUTHENTICATED)
    ├── PermissionDenied    an identity that may not do this (PERMISSION_DENIED)
    ├── InvalidArgument     a malformed request (INVALID_ARGUMENT)
    ├── NotFound            no such node, token or model (NOT_FOUND)
    ├── AlreadyExists       an immutable thing exists with other content (ALREADY_EXISTS)
    └── FailedPrecondition  refused because of the fleet's state, e.g. a model in use (FAILED_PRECONDITION)
"""


class CentralError(Exception):
    """Root of central's handler errors; the message is shown to the caller."""


class Unauthenticated(CentralError):
    pass


class PermissionDenied(CentralError):
    pass


class InvalidArgument(CentralError):
    pass


class NotFound(CentralError):
    pass


class AlreadyExists(CentralError):
    pass


class FailedPrecondition(CentralError):
    pass
