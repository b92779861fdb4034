"""Typed errors. Callers branch on the type, never on message text (as kr8s does).

Every entry point (HTTP bodies, annotations, files, CLI flags) turns bad input into
an :class:`InvalidInput` that says *where* (``source``, ``line``) and *what*; the HTTP
layer maps it to 400 and the CLI to exit code 2, each in one place.
"""

from __future__ import annotations


class HarbingerError(Exception):
    """Base of every error Harbinger raises on purpose."""


class InvalidInput(HarbingerError, ValueError):
    """Input that Harbinger refuses, with where it came from."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.source = source
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.source or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        return f"{where}: {self.message}" if where else self.message


class PrometheusUnavailable(HarbingerError):
    """Prometheus at ``url`` could not be reached, or did not answer as Prometheus does."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"Prometheus at {url} is unavailable: {reason}")


class PrometheusQueryError(HarbingerError):
    """Prometheus refused ``query`` or answered it in a shape the caller cannot use."""

    def __init__(self, query: str, reason: str) -> None:
        self.query = query
        self.reason = reason
        super().__init__(f"Prometheus query {query!r}: {reason}")


class KubeApiError(HarbingerError):
    """The Kubernetes API refused a call on one object; ``status`` is the HTTP status."""

    def __init__(self, action: str, obj: str, status: int, reason: str) -> None:
        self.action = action
        self.object = obj
        self.status = status
        self.reason = reason
        super().__init__(f"cannot {action} {obj}: {reason} (HTTP {status})")


class NotFound(KubeApiError):
    """The object does not exist (HTTP 404)."""


class Conflict(KubeApiError):
    """The object changed since it was read, or already exists (HTTP 409)."""
