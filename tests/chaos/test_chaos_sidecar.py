"""The chaos sidecar in front of a real upstream: it injects what its annotations file says,
drops a fault at its expiry by itself, refuses what it cannot read, and bounds stress."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web

from chaos.faults import ActiveFault, Fault
from chaos.sidecar.faultstate import FaultState
from chaos.sidecar.metrics import SidecarMetrics
from chaos.sidecar.podinfo import write_annotations
from chaos.sidecar.proxy import run_sidecar
from chaos.sidecar.stress import Stress
from harbinger.sidecar import SidecarLimits
from harbinger_dev.localcluster.cluster import free_port

if TYPE_CHECKING:  # the fixture's type; pytest loads the conftest itself
    from tests.conftest import ServeApp


@dataclass
class Running:
    proxy: str
    admin: str
    annotations: Path

    def set_fault(self, fault: Fault, seconds: float = 30.0) -> None:
        active = ActiveFault(fault, datetime.now(UTC) + timedelta(seconds=seconds), "test")
        write_annotations(self.annotations, {"app": "x", **active.annotations()})

    async def state(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(f"{self.admin}/fault") as r:
            return dict(await r.json())

    async def wait_state(self, check: Any, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = await self.state()
            if check(state):
                return state
            assert time.monotonic() < deadline, state
            await asyncio.sleep(0.05)


@pytest.fixture
async def upstream(serve_app: ServeApp) -> AsyncIterator[str]:
    """The application behind the sidecar, as ``host:port``: 64 kB on ``/``."""
    async def hello(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * 64_000)

    app = web.Application()
    app.router.add_get("/", hello)
    async with serve_app(app) as url:
        yield url.removeprefix("http://")


@pytest.fixture
async def sidecar(tmp_path: Path, upstream: str) -> AsyncIterator[Running]:
    listen, admin = free_port(), free_port()
    annotations = tmp_path / "annotations"
    stop = asyncio.Event()
    task = asyncio.create_task(run_sidecar(
        listen=f"127.0.0.1:{listen}", upstream=upstream, annotations_file=annotations,
        metrics_port=admin, poll_seconds=0.05, limits=SidecarLimits(max_cpu_cores=1.0, max_memory_bytes=8 * 2**20),
        stop=stop))
    running = Running(f"http://127.0.0.1:{listen}/", f"http://127.0.0.1:{admin}", annotations)
    deadline = time.monotonic() + 10
    while True:
        try:
            await running.state()
            break
        except aiohttp.ClientError:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    try:
        yield running
    finally:
        stop.set()
        await task


async def _statuses(url: str, n: int) -> list[int]:
    async with aiohttp.ClientSession() as session:
        out = []
        for _ in range(n):
            async with session.get(url) as response:
                await response.read()
                out.append(response.status)
        return out


async def test_no_fault_passes_everything_through(sidecar: Running) -> None:
    assert await _statuses(sidecar.proxy, 20) == [200] * 20


async def test_abort_share_and_expiry_enforced_by_the_sidecar(sidecar: Running) -> None:
    sidecar.set_fault(Fault(abort_status=503, abort_percent=100), seconds=1.5)
    await sidecar.wait_state(lambda s: s["active"])
    assert set(await _statuses(sidecar.proxy, 10)) == {503}
    # The file still declares the fault; past its expiry the sidecar drops it on its own.
    await sidecar.wait_state(lambda s: not s["active"], timeout=5)
    assert await _statuses(sidecar.proxy, 10) == [200] * 10
    async with aiohttp.ClientSession() as s, s.get(f"{sidecar.admin}/metrics") as r:
        metrics = await r.text()
    assert 'harbinger_chaos_requests_total{code="503"} 10.0' in metrics
    assert 'harbinger_chaos_faults_injected_total{effect="abort"} 10.0' in metrics


async def test_partial_abort_is_a_share(sidecar: Running) -> None:
    sidecar.set_fault(Fault(abort_status=500, abort_percent=30))
    await sidecar.wait_state(lambda s: s["active"])
    statuses = await _statuses(sidecar.proxy, 200)
    assert 20 <= statuses.count(500) <= 100 and statuses.count(200) == 200 - statuses.count(500)


async def test_delay_and_bandwidth_slow_responses(sidecar: Running) -> None:
    sidecar.set_fault(Fault(delay_ms=300, bandwidth_bps="2M"))
    await sidecar.wait_state(lambda s: s["active"])
    started = time.monotonic()
    assert await _statuses(sidecar.proxy, 2) == [200, 200]
    # 2 x (300 ms delay + 64 kB at 250 kB/s = 256 ms): the proxy held each response back.
    assert time.monotonic() - started >= 2 * (0.3 + 0.25)


async def test_unreadable_or_expiry_less_faults_are_refused(sidecar: Running) -> None:
    write_annotations(sidecar.annotations, {"harbinger.io/chaos-fault": '{"abort_status": 503}'})
    state = await sidecar.wait_state(lambda s: s["error"])
    assert "must carry its expiry" in state["error"] and not state["active"]
    write_annotations(sidecar.annotations, {"harbinger.io/chaos-fault": '{"abort_status": 42}',
                                            "harbinger.io/chaos-expires": "2999-01-01T00:00:00Z"})
    state = await sidecar.wait_state(lambda s: s["error"] and "abort_status" in s["error"])
    assert not state["active"]
    assert await _statuses(sidecar.proxy, 5) == [200] * 5


async def test_cpu_and_memory_stress_are_bounded_and_stop_with_the_fault(sidecar: Running) -> None:
    sidecar.set_fault(Fault(cpu_cores=4.0, memory_bytes="64Mi"), seconds=4.0)
    state = await sidecar.wait_state(lambda s: s["stress"]["burners"] > 0, timeout=15)
    assert state["stress"]["cpu_cores"] == 1.0  # capped by --max-cpu
    assert state["stress"]["memory_bytes"] == 8 * 2**20  # capped by --max-memory
    # The state endpoint reads the clock, the stress loop acts on it: wait for both to agree.
    state = await sidecar.wait_state(
        lambda s: not s["active"] and s["stress"]["burners"] == 0 and s["stress"]["memory_bytes"] == 0,
        timeout=15)
    assert state["stress"]["cpu_cores"] == 0.0


def test_the_stress_loop_wakes_at_the_expiry_when_it_comes_before_the_next_poll(tmp_path: Path) -> None:
    state = FaultState(tmp_path / "annotations", Stress(max_cpu_cores=1.0, max_memory_bytes=2**20), SidecarMetrics())
    assert state._next_wake(5.0) == 5.0  # no fault: the plain poll interval
    for seconds, poll in ((1.0, 5.0), (30.0, 5.0)):
        active = ActiveFault(Fault(memory_bytes="1Mi"), datetime.now(UTC) + timedelta(seconds=seconds), "test")
        write_annotations(state.annotations_file, active.annotations())
        state.reload()
        assert state.current() is not None
        assert 0.0 < state._next_wake(poll) <= min(seconds, poll) + 0.01
