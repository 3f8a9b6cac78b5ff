"""Typed errors of the engine.

Every failure that reaches a client is one of these classes. Each class names the
containerd error class it stands for; `core/services/status.py` turns them into
gRPC status codes in one place, so no concept module knows about gRPC. Messages
say what was wrong in the words an operator would search for, and end with the
class text the way containerd's do (`...: not found`).
"""

from __future__ import annotations


class CtrdeckError(Exception):
    """Base class; `kind` is containerd's error class text."""

    kind = "unknown"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        if self.message.endswith(self.kind):
            return self.message
        return f"{self.message}: {self.kind}"


class InvalidArgument(CtrdeckError):
    kind = "invalid argument"


class NotFound(CtrdeckError):
    kind = "not found"


class AlreadyExists(CtrdeckError):
    kind = "already exists"


class FailedPrecondition(CtrdeckError):
    kind = "failed precondition"


class Unauthenticated(CtrdeckError):
    """A peer (a registry, its token server) wants credentials we lack or it refused."""

    kind = "unauthenticated"


class PermissionDenied(CtrdeckError):
    """A peer knows who we are and refuses the operation."""

    kind = "permission denied"


class Unavailable(CtrdeckError):
    kind = "unavailable"


class NotImplementedYet(CtrdeckError):
    kind = "not implemented"


class OutOfRange(CtrdeckError):
    kind = "out of range"


class DataLoss(CtrdeckError):
    kind = "data loss"


class DeadlineExceeded(CtrdeckError):
    kind = "context deadline exceeded"


class Canceled(CtrdeckError):
    kind = "context canceled"


class ResourceExhausted(CtrdeckError):
    kind = "resource exhausted"


class Internal(CtrdeckError):
    kind = "internal"
