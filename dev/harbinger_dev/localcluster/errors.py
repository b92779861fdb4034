"""The harness's own error type."""

from __future__ import annotations

from harbinger.errors import HarbingerError


class ClusterError(HarbingerError):
    """The local control plane could not start or stop; names the component."""
