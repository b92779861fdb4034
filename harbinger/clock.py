"""Where every component gets the time from.

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
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

from harbinger.errors import InvalidInput


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
        return f"{self.start.isoformat()},{self.speed:g},{self.origin:.3f}"


def clock_from_spec(spec: str | None) -> Clock:
    """``None`` or empty: the system clock. Otherwise ``START,SPEED,ORIGIN`` (RFC 3339 time in
    the trace, speed-up factor, wall-clock epoch seconds when the trace time was START)."""
    if not spec:
        return SystemClock()
    parts = spec.split(",")
    try:
        if len(parts) != 3:
            raise ValueError("expected START,SPEED,ORIGIN")
        start = datetime.fromisoformat(parts[0].strip())
        if start.tzinfo is None:
            raise ValueError("START must carry a time zone")
        return ReplayClock(start, float(parts[1]), float(parts[2]))
    except ValueError as exc:
        raise InvalidInput(f"replay clock {spec!r}: {exc}", source="HARBINGER_REPLAY_CLOCK") from exc
