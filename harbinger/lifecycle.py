"""How a long-running Harbinger process learns it should stop, and keeps its background
tasks alive until then.

Every component (the HTTP servers, the planner, the chaos controller and a one-off chaos
run) ends on SIGTERM or SIGINT the same way: the signal sets an :class:`asyncio.Event`
that the component's ``run(settings, stop)`` is already watching, so in-flight work is
finished or rolled back instead of being cut off.

A background loop that dies of a bug or of something it did not expect must not leave the
process up and silently doing nothing: :func:`supervise` logs the crash with its traceback,
counts it (``harbinger_task_restarts_total``) and starts the loop again after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import Counter

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
TASK_RESTARTS = Counter("harbinger_task_restarts_total",
                        "Background loops that crashed (or ended early) and were started again", ["task"])
#: The first restart waits this long; each further one twice as long, up to the maximum.
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[asyncio.Event]:
    """Within the block, SIGTERM and SIGINT set ``stop``; the previous handling comes back after.

    Outside the main thread (tests that run a component in a thread) the loop cannot take
    signal handlers; the block then runs without them and ``stop`` is the only way out.
    """
    loop = asyncio.get_running_loop()
    installed = []
    for sig in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield stop
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def supervise(name: str, loop: Callable[[], Awaitable[None]], stop: asyncio.Event, *,
                    first_backoff: float = FIRST_BACKOFF_SECONDS, max_backoff: float = MAX_BACKOFF_SECONDS) -> None:
    """Run ``loop()`` until ``stop``; when it raises, or returns before ``stop`` is set, log it,
    count it and run it again after a growing backoff (reset once a run lasted a minute)."""
    backoff = first_backoff
    while not stop.is_set():
        started = asyncio.get_running_loop().time()
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task %s crashed; restarting in %.1f s", name, backoff)
        else:
            if stop.is_set():
                return
            log.error("background task %s ended while the process runs; restarting in %.1f s", name, backoff)
        TASK_RESTARTS.labels(name).inc()
        if asyncio.get_running_loop().time() - started > 60:
            backoff = first_backoff
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), backoff)
        backoff = min(backoff * 2, max_backoff)
