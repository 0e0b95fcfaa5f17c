"""Errors of central's handlers. The servicers map each class to one gRPC status, in one place.

    CentralError
    ├── Unauthenticated     no usable identity (UNAUTHENTICATED)
    ├── PermissionDenied    an identity that may not do this (PERMISSION_DENIED)
    ├── InvalidArgument     a malformed request (INVALID_ARGUMENT)
    ├── NotFound            no such node or token (NOT_FOUND)
    └── Unimplemented       not built yet (UNIMPLEMENTED)
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


class Unimplemented(CentralError):
    pass
