"""The forecaster's typed errors.

Each one is an :class:`harbinger.errors.InvalidInput`, so the CLI maps it to exit code 2
and the HTTP layer to 400 in one place; callers branch on the type, never on the text.
"""

from __future__ import annotations

from harbinger.errors import InvalidInput


class BadSeries(InvalidInput):
    """A traffic series (CSV file, Prometheus answer or in-memory history) that cannot be used."""


class HistoryTooShort(BadSeries):
    """Less history than the model needs; the message says the minimum."""


class BadEvents(InvalidInput):
    """An events file, or one event in it, that does not validate."""


class ModelMismatch(InvalidInput):
    """A model directory whose graph and metadata do not belong together."""


class BadRequest(InvalidInput):
    """A forecast request the model cannot answer (horizon too long, unknown service, ...)."""
