"""A three-service system on 127.0.0.1 for rehearsing chaos without a cluster: frontend ->
checkout -> payments, each a small aiohttp app behind its own chaos sidecar process
(``harbinger chaos sidecar``), a bounded open-loop load generator, and the sidecars
registered with a (local) Prometheus. Used by the end-to-end test, the benchmark and demos.

The apps are deliberately naive, like many real ones: they pass a downstream error on as
a 502 and have no retry, so faults in payments reach the frontend.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp
from aiohttp import web

from chaos.sidecar.podinfo import write_annotations
from harbinger import contract
from harbinger_dev.localcluster.cluster import free_port

CHAIN = ("frontend", "checkout", "payments")
CALL_TIMEOUT_SECONDS = 5.0


class ScrapeTargets(Protocol):
    def add_target(self, job: str, address: str, labels: dict[str, str] | None = None) -> None: ...
    def remove_job(self, job: str) -> None: ...


def demo_app(name: str, downstream: str | None) -> web.Application:
    app = web.Application()
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_SECONDS)) as session:
            app[session_key] = session
            yield

    async def handle(request: web.Request) -> web.Response:
        if downstream is None:
            return web.json_response({"service": name, "ok": True})
        try:
            async with request.app[session_key].get(downstream) as response:
                await response.read()
                if response.status >= 500:
                    return web.json_response({"service": name, "downstream": response.status}, status=502)
        except (aiohttp.ClientError, TimeoutError):
            return web.json_response({"service": name, "downstream": "unreachable"}, status=502)
        return web.json_response({"service": name, "ok": True})

    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/", handle)
    return app


@dataclass
class SidecarProcess:
    service: str
    listen_port: int
    metrics_port: int
    annotations_file: Path
    process: asyncio.subprocess.Process

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"


@dataclass
class Topology:
    sidecars: dict[str, SidecarProcess]
    runners: list[web.AppRunner] = field(default_factory=list)
    #: Prepended to each service's scrape job, so two topologies never share series.
    job_prefix: str = ""

    @property
    def selector(self) -> str:
        """The PromQL label matchers picking one service's sidecar (``Queries.selector``)."""
        return f'job="{self.job_prefix}{{service}}"'

    def job(self, service: str) -> str:
        return self.job_prefix + service

    @property
    def entry_url(self) -> str:
        return f"http://127.0.0.1:{self.sidecars[CHAIN[0]].listen_port}/"

    def annotation_flags(self) -> list[str]:
        return [f"--annotations-file={s}={p.annotations_file}" for s, p in self.sidecars.items()]

    async def fault_states(self) -> dict[str, dict[str, object]]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            states = {}
            for service, sidecar in self.sidecars.items():
                async with session.get(f"{sidecar.admin_url}/fault") as response:
                    states[service] = await response.json()
            return states


async def _wait_healthy(url: str, process: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"sidecar exited with {process.returncode} before it was healthy")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"sidecar at {url} not healthy within {timeout:.0f}s")
            await asyncio.sleep(0.1)


async def _stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


@contextlib.asynccontextmanager
async def local_topology(workdir: Path, prometheus: ScrapeTargets | None = None,
                         job_prefix: str = "") -> AsyncIterator[Topology]:
    """Start the chain; on exit stop everything it started and unregister its scrape jobs."""
    workdir.mkdir(parents=True, exist_ok=True)
    ports = {s: (free_port(), free_port()) for s in CHAIN}
    topology = Topology({}, job_prefix=job_prefix)
    jobs: list[str] = []
    try:
        for index, service in reversed(list(enumerate(CHAIN))):
            downstream = (f"http://127.0.0.1:{ports[CHAIN[index + 1]][0]}/" if index + 1 < len(CHAIN) else None)
            runner = web.AppRunner(demo_app(service, downstream), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            topology.runners.append(runner)
            app_port = runner.addresses[0][1]
            annotations = workdir / f"{service}.annotations"
            write_annotations(annotations, {contract.SERVICE: service})
            listen, metrics = ports[service]
            log_fd = os.open(workdir / f"{service}.sidecar.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "harbinger.cli", "--log-level=WARNING", "chaos", "sidecar",
                f"--listen=127.0.0.1:{listen}", f"--upstream=127.0.0.1:{app_port}",
                f"--annotations-file={annotations}", f"--metrics-port={metrics}", "--poll-seconds=0.1",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=log_fd, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            os.close(log_fd)  # the child has its own copy
            topology.sidecars[service] = SidecarProcess(service, listen, metrics, annotations, process)
        for sidecar in topology.sidecars.values():
            await _wait_healthy(f"{sidecar.admin_url}/healthz", sidecar.process)
            if prometheus is not None:
                job = job_prefix + sidecar.service
                prometheus.add_target(job, f"127.0.0.1:{sidecar.metrics_port}")
                jobs.append(job)
        yield topology
    finally:
        for job in jobs:
            if prometheus is not None:
                prometheus.remove_job(job)
        await asyncio.gather(*(_stop_process(s.process) for s in topology.sidecars.values()))
        for runner in topology.runners:
            await runner.cleanup()


@dataclass
class LoadStats:
    sent: int = 0
    dropped: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    #: Seconds from sending each answered request to reading its whole answer.
    latencies: list[float] = field(default_factory=list)

    @property
    def slowest(self) -> float | None:
        """The longest latency of an answered request (None before any answer)."""
        return max(self.latencies, default=None)


class LoadGenerator:
    """Open-loop GETs at ``rate`` per second to ``url``, at most ``max_in_flight`` at once,
    for at most ``max_seconds``: it stops itself even if nobody stops it."""

    def __init__(self, url: str, *, rate: float, max_seconds: float, max_in_flight: int = 64) -> None:
        self.url = url
        self.rate = rate
        self.max_seconds = max_seconds
        self.stats = LoadStats()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._task: asyncio.Task[None] | None = None
        self._requests: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> LoadGenerator:
        self._task = asyncio.create_task(self._run(), name="load-generator")
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            loop = asyncio.get_running_loop()
            start = loop.time()
            count = 0
            try:
                while loop.time() - start < self.max_seconds:
                    count += 1
                    await asyncio.sleep(max(start + count / self.rate - loop.time(), 0))
                    if self._slots.locked():
                        self.stats.dropped += 1
                        continue
                    await self._slots.acquire()
                    task = asyncio.create_task(self._one(session))
                    self._requests.add(task)
                    task.add_done_callback(self._requests.discard)
            finally:
                for task in list(self._requests):
                    task.cancel()
                await asyncio.gather(*self._requests, return_exceptions=True)

    async def _one(self, session: aiohttp.ClientSession) -> None:
        try:
            self.stats.sent += 1
            sent = time.monotonic()
            async with session.get(self.url) as response:
                await response.read()
                self.stats.latencies.append(time.monotonic() - sent)
                self.stats.by_status[response.status] = self.stats.by_status.get(response.status, 0) + 1
        except (aiohttp.ClientError, TimeoutError):
            self.stats.by_status[0] = self.stats.by_status.get(0, 0) + 1
        finally:
            self._slots.release()
