"""How a long-running Harbinger process learns it should stop.

Every component (the HTTP servers, the planner, the chaos controller and a one-off chaos
run) ends on SIGTERM or SIGINT the same way: the signal sets an :class:`asyncio.Event`
that the component's ``run(settings, stop)`` is already watching, so in-flight work is
finished or rolled back instead of being cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
