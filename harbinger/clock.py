"""Where every component gets the time from, and the one way Harbinger reads and writes it.

Everything that depends on "now" (which forecast step is next, when a lease expires,
when a floor may be lowered, whether a pod is created inside a warm-up window) asks a
:class:`Clock`, never the system directly:

- :class:`SystemClock` in production;
- :class:`ManualClock` in tests, which move time through a scripted peak in seconds
  while the real control plane does the rest;
- :class:`ReplayClock` for rehearsals and ``make demo``: time inside a recorded trace,
  running faster than the wall clock. Separate processes (webhook, planner) agree on it
  because it is a pure function of the wall clock and one shared setting,
  ``HARBINGER_REPLAY_CLOCK``.

Times on the cluster (annotations, Lease times, report fields, the forecaster's JSON) are
RFC 3339 in UTC with a ``Z``; :func:`format_time` writes them and :func:`parse_time` reads
them strictly (a date alone, a zoneless time or ISO 8601's other shapes are refused), so a
value one component writes is one every other component reads the same way.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from harbinger.errors import InvalidInput

#: RFC 3339 section 5.6 ``date-time`` (with ``T``, ``t`` or a space between date and time).
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})")


def parse_timestamp(text: object) -> datetime | None:
    """An RFC 3339 time as UTC, else None (missing, garbage or zoneless). For fields a
    component may meet in any state (``creationTimestamp``, a tenant's annotation) where
    "no usable time" is an answer, not an error."""
    if not isinstance(text, str):
        return None
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        return None
    day, clock_time, fraction, zone = match.groups()
    # Python reads at most microseconds; Kubernetes' MicroTime writes exactly six digits.
    micros = f".{(fraction or '')[:6].ljust(6, '0')}" if fraction else ""
    offset = "+00:00" if zone in ("Z", "z") else zone
    try:
        return datetime.fromisoformat(f"{day}T{clock_time}{micros}{offset}").astimezone(UTC)
    except ValueError:  # month 13, hour 25, ...
        return None


def parse_time(text: object, *, what: str) -> datetime:
    """An RFC 3339 time as UTC; :class:`InvalidInput` naming ``what`` otherwise."""
    moment = parse_timestamp(text)
    if moment is None:
        raise InvalidInput(f"{text!r} is not an RFC 3339 time with a zone (example: 2025-01-01T12:00:00Z)",
                           source=what)
    return moment


def format_time(moment: datetime, *, precision: Literal["seconds", "milliseconds", "microseconds"] = "seconds") -> str:
    """RFC 3339 in UTC with a ``Z``, the form Kubernetes writes timestamps in (``microseconds``
    for a Lease's MicroTime)."""
    if moment.tzinfo is None:
        raise ValueError("format_time needs a timezone-aware time")
    return moment.astimezone(UTC).isoformat(timespec=precision).replace("+00:00", "Z")


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


#: The wall clock, for callers given no other.
SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """A clock that moves only when told to; sleepers wake when it passes their deadline."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")
        self._now = start.astimezone(UTC)
        self._moved = asyncio.Condition()

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        deadline = self._now + timedelta(seconds=seconds)
        async with self._moved:
            await self._moved.wait_for(lambda: self._now >= deadline)

    async def advance(self, seconds: float) -> datetime:
        """Move time forward and wake every sleeper whose deadline has passed."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        async with self._moved:
            self._now += timedelta(seconds=seconds)
            self._moved.notify_all()
        return self._now


class ReplayClock:
    """Trace time: ``start`` at wall-clock ``origin`` (epoch seconds), advancing ``speed``
    times faster than the wall clock."""

    def __init__(self, start: datetime, speed: float, origin: float) -> None:
        if start.tzinfo is None:
            raise ValueError("ReplayClock needs a timezone-aware start time")
        if speed <= 0:
            raise ValueError("ReplayClock needs a positive speed")
        self.start = start.astimezone(UTC)
        self.speed = speed
        self.origin = origin

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.time() - self.origin) * self.speed)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.speed)

    def spec(self) -> str:
        """The ``HARBINGER_REPLAY_CLOCK`` value that makes another process agree with this clock."""
        return f"{format_time(self.start, precision='microseconds')},{self.speed:g},{self.origin:.3f}"


def clock_from_spec(spec: str | None) -> Clock:
    """``None`` or empty: the system clock. Otherwise ``START,SPEED,ORIGIN`` (RFC 3339 time in
    the trace, speed-up factor, wall-clock epoch seconds when the trace time was START)."""
    if not spec:
        return SystemClock()
    parts = spec.split(",")
    try:
        if len(parts) != 3:
            raise ValueError("expected START,SPEED,ORIGIN")
        start = parse_timestamp(parts[0])
        if start is None:
            raise ValueError("START must be an RFC 3339 time with a zone")
        return ReplayClock(start, float(parts[1]), float(parts[2]))
    except ValueError as exc:
        raise InvalidInput(f"replay clock {spec!r}: {exc}", source="HARBINGER_REPLAY_CLOCK") from exc
