"""Replay errors, one class per gRPC status code, so both backends fail the same way.

`code` is the gRPC status code name: the server turns it into a status, the client turns a status
back into the same class, and callers (and the contract tests) can branch on it without grpc.
"""

from __future__ import annotations


class ReplayError(Exception):
    code = "UNKNOWN"

    def __init__(self, message: str = "", code: str | None = None):
        super().__init__(message)
        if code:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {super().__str__()}"


class InvalidArgument(ReplayError, ValueError):
    """Schema mismatch, wrong dtype or shape, NaN, undecodable message, bad batch size."""

    code = "INVALID_ARGUMENT"


class TableNotFound(ReplayError, LookupError):
    code = "NOT_FOUND"


class ResourceExhausted(ReplayError):
    """A batch larger than the table (or than the message limit)."""

    code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(ReplayError, TimeoutError):
    """The rate limiter (or the network) did not let the call through before its deadline."""

    code = "DEADLINE_EXCEEDED"


class FailedPrecondition(ReplayError):
    """E.g. a network insert into a read-only table."""

    code = "FAILED_PRECONDITION"


class Unauthenticated(ReplayError, PermissionError):
    code = "UNAUTHENTICATED"


class Unavailable(ReplayError, ConnectionError):
    """The server is unreachable or shutting down; retrying later may succeed."""

    code = "UNAVAILABLE"


class Cancelled(ReplayError):
    code = "CANCELLED"


_BY_CODE = {
    cls.code: cls
    for cls in (InvalidArgument, TableNotFound, ResourceExhausted, DeadlineExceeded, FailedPrecondition,
                Unauthenticated, Unavailable, Cancelled)
}


def from_code(code: str, message: str) -> ReplayError:
    """The exception class for a status code name; unknown codes keep their name on a ReplayError."""
    cls = _BY_CODE.get(code)
    return cls(message) if cls else ReplayError(message, code=code)
