"""Bounded CPU and memory stress next to the application.

CPU: ``ceil(cores)`` child processes, each busy for its share of every 50 ms slice. Each
child stops by itself at the fault's expiry or when the sidecar dies (its parent pid
changes), so no burner outlives the fault even if the sidecar is killed.

Memory: one buffer with every page written (so it is resident, not just reserved),
capped below the sidecar container's own limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
import time

log = logging.getLogger(__name__)

_BURNER = """
import os, sys, time
parent, deadline, duty = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
slice_ = 0.05
while time.time() < deadline and os.getppid() == parent:
    busy_until = time.perf_counter() + slice_ * duty
    while time.perf_counter() < busy_until:
        pass
    if duty < 1:
        time.sleep(slice_ * (1 - duty))
"""

PAGE = 4096


class Stress:
    def __init__(self, *, max_cpu_cores: float, max_memory_bytes: int) -> None:
        self.max_cpu_cores = max_cpu_cores
        self.max_memory_bytes = max_memory_bytes
        self.cpu_cores = 0.0
        self.memory_bytes = 0
        self._burners: list[asyncio.subprocess.Process] = []
        self._ballast: bytearray | None = None
        self._deadline = 0.0

    async def set(self, cpu_cores: float, memory_bytes: int, expires_epoch: float) -> None:
        """Hold exactly this much stress until ``expires_epoch`` (0 and 0 stop it)."""
        cpu_cores = min(max(cpu_cores, 0.0), self.max_cpu_cores)
        memory_bytes = min(max(memory_bytes, 0), self.max_memory_bytes)
        if cpu_cores != self.cpu_cores or (cpu_cores and expires_epoch != self._deadline):
            await self._stop_cpu()
            if cpu_cores > 0:
                await self._start_cpu(cpu_cores, expires_epoch)
        if memory_bytes != self.memory_bytes:
            self._ballast = None
            if memory_bytes > 0:
                ballast = bytearray(memory_bytes)
                for offset in range(0, memory_bytes, PAGE):
                    ballast[offset] = 1
                self._ballast = ballast
            self.memory_bytes = memory_bytes

    async def stop(self) -> None:
        await self.set(0.0, 0, 0.0)

    async def _start_cpu(self, cores: float, deadline: float) -> None:
        count = math.ceil(cores)
        duty = cores / count
        for _ in range(count):
            self._burners.append(await asyncio.create_subprocess_exec(
                sys.executable, "-c", _BURNER, str(os.getpid()), repr(deadline), repr(duty),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            ))
        self.cpu_cores = cores
        self._deadline = deadline
        log.info("burning %.2f CPU cores in %d processes until %s", cores, count,
                 time.strftime("%H:%M:%S", time.gmtime(deadline)))

    async def _stop_cpu(self) -> None:
        burners, self._burners = self._burners, []
        for proc in burners:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in burners:
            try:
                await asyncio.wait_for(proc.wait(), 2.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self.cpu_cores = 0.0
        self._deadline = 0.0

    def burner_pids(self) -> list[int]:
        return [p.pid for p in self._burners if p.returncode is None]
