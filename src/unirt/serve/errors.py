"""Errors of the inference server, each carrying the HTTP status and gRPC code it is answered with.

They are `unirt.UnirtError`s, so the protocol layers answer every error unirt raises on purpose the same way:
a v2 error body `{"error": "..."}` (HTTP) or a status with the message (gRPC).
"""

from __future__ import annotations

from ..errors import InputError, UnirtError

__all__ = [
    "ServeError",
    "BadRequest",
    "LoadFailed",
    "NotFound",
    "Unavailable",
    "QueueFull",
    "TimedOut",
    "TooLarge",
    "Unsupported",
    "status_of",
]


class ServeError(UnirtError):
    """Base of the server's errors. `status` is the HTTP status, `grpc_code` the name of the gRPC status code."""

    status = 400
    grpc_code = "INVALID_ARGUMENT"


class BadRequest(ServeError, ValueError):
    """Malformed request: bad JSON or binary framing, wrong shape or datatype, bad parameters."""


class LoadFailed(BadRequest):
    """A load request's model failed to load: its config, its model file or its backend refused it."""


class NotFound(ServeError):
    """Unknown model, version, shared-memory region or endpoint."""

    status = 404
    grpc_code = "NOT_FOUND"


class Unavailable(ServeError):
    """The model exists but is not ready (loading, unloading, failed), or the server is shutting down."""

    status = 503
    grpc_code = "UNAVAILABLE"


class QueueFull(Unavailable):
    """The model's queue is at its bound: the request is refused at once (HTTP 503 with Retry-After, gRPC
    UNAVAILABLE), as Triton answers "Exceeds maximum queue size"."""

    retry_after = 1  # seconds, the Retry-After header


class TimedOut(Unavailable):
    """The request waited in the queue past its timeout and was dropped without running (Triton: UNAVAILABLE,
    "Request timeout expired")."""


class TooLarge(ServeError):
    """The request body or message is larger than the server's limit."""

    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class Unsupported(ServeError):
    """A protocol feature unirt serve does not offer (CUDA shared memory, sequences, ...)."""

    grpc_code = "UNIMPLEMENTED"


def status_of(exc: BaseException) -> tuple[int, str]:
    """HTTP status and gRPC code name for any exception: unirt's own errors are the client's fault (4xx)
    except a failed run; anything else is an internal error (500)."""
    if isinstance(exc, ServeError):
        return exc.status, exc.grpc_code
    if isinstance(exc, InputError):
        return 400, "INVALID_ARGUMENT"
    if isinstance(exc, UnirtError):
        return 500, "INTERNAL"
    return 500, "INTERNAL"
