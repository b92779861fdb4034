"""The chaos sidecar against a pod author who writes its annotations: every fault held within
the platform's limits (given as flags, or the built-in caps), the fault state never exposed
beyond loopback, and bodies streamed so concurrent large uploads cannot grow its memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web

from chaos.sidecar.faultstate import FaultState
from chaos.sidecar.metrics import SidecarMetrics
from chaos.sidecar.podinfo import write_annotations
from chaos.sidecar.proxy import CHUNK, run_sidecar
from chaos.sidecar.stress import Stress
from harbinger import contract, sidecar
from harbinger.cli import main
from harbinger.clock import ManualClock
from harbinger.sidecar import SidecarLimits
from harbinger_dev.localcluster.cluster import free_port

if TYPE_CHECKING:
    from tests.conftest import ServeApp

#: Ports Istio uses (its proxy in every meshed pod, and istiod); the sidecar must not take one.
ISTIO_PORTS = {15000, 15001, 15004, 15006, 15008, 15009, 15010, 15012, 15014, 15017, 15020, 15021, 15053, 15090}


def _tenant_annotations(fault: str, expires: str = "9999-12-31T23:59:59Z") -> dict[str, str]:
    """What a pod's author can write on their own pod, without any controller."""
    return {contract.CHAOS_FAULT: fault, contract.CHAOS_EXPIRES: expires, contract.CHAOS_EXPERIMENT: "mine"}


async def test_without_flags_the_built_in_caps_hold_a_tenants_fault(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    state = FaultState(tmp_path / "annotations", Stress(max_cpu_cores=0.0, max_memory_bytes=0), SidecarMetrics(),
                       clock=clock)
    write_annotations(state.annotations_file, _tenant_annotations(
        '{"cpu_cores": 8, "delay_ms": 120000, "memory_bytes": "1Gi", "bandwidth_bps": 1}'))
    state.reload()
    active = state.current()
    caps = SidecarLimits()
    assert active is not None
    assert active.fault.cpu_cores == caps.max_cpu_cores and active.fault.delay_ms == caps.max_delay_ms
    assert active.fault.memory_bytes == caps.max_memory_bytes and active.fault.bandwidth_bps == caps.min_bandwidth_bps
    assert active.expires == clock.now() + timedelta(seconds=caps.max_fault_seconds)  # not year 9999
    assert state.describe()["clamped"] == ["bandwidth_bps", "cpu_cores", "delay_ms", "memory_bytes", "expires"]
    # Re-reading the same declaration (the kubelet rewrites the file for any annotation)
    # keeps the first reading's cap: touching the pod does not extend the fault.
    await clock.advance(600)
    write_annotations(state.annotations_file, {"other": "touched", **_tenant_annotations(
        '{"cpu_cores": 8, "delay_ms": 120000, "memory_bytes": "1Gi", "bandwidth_bps": 1}')})
    state.reload()
    assert state.current() is not None and state.current().expires == active.expires  # type: ignore[union-attr]
    await clock.advance((active.expires - clock.now()).total_seconds())
    assert state.current() is None


def test_the_webhook_passes_the_platforms_limits_as_flags() -> None:
    limits = SidecarLimits(max_fault_seconds=300, max_delay_ms=5000, max_cpu_cores=0.5, max_memory_bytes=2**20,
                           min_bandwidth_bps=1e6)
    container = sidecar.sidecar_container("harbinger:test", 9000, limits)
    args = container["args"]
    for flag in ("--max-fault-seconds=300", "--max-delay-ms=5000", "--max-cpu=0.5", f"--max-memory={2**20}",
                 "--min-bandwidth=1e+06", f"--admin-port={sidecar.ADMIN_PORT}",
                 f"--metrics-port={sidecar.METRICS_PORT}"):
        assert flag in args
    assert "--max-cpu=2" in sidecar.sidecar_args(9000)  # no limits given: the built-in caps, said explicitly
    ports = {p["containerPort"] for p in container["ports"]}
    assert not ports & ISTIO_PORTS and sidecar.ADMIN_PORT not in ports  # the admin port is loopback-only
    with pytest.raises(ValueError, match="max_cpu_cores"):
        SidecarLimits(max_cpu_cores=float("nan"))


def test_sidecar_limit_flags_are_checked_and_named(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["chaos", "sidecar", "--listen=127.0.0.1:1", "--upstream=127.0.0.1:2", "--annotations-file=x"]
    assert main([*base, "--max-cpu=99"]) == 2
    assert "sidecar_max_cpu_cores" in capsys.readouterr().err
    assert main([*base, "--max-memory=lots"]) == 2
    assert "--max-memory" in capsys.readouterr().err


@contextlib.asynccontextmanager
async def _sidecar(tmp_path: Path, upstream: str, *, listen_host: str = "127.0.0.1",
                   limits: SidecarLimits | None = None) -> AsyncIterator[dict[str, Any]]:
    ports = {"listen": free_port(), "metrics": free_port(), "admin": free_port()}
    annotations = tmp_path / "annotations"
    stop = asyncio.Event()
    task = asyncio.create_task(run_sidecar(
        listen=f"{listen_host}:{ports['listen']}", upstream=upstream, annotations_file=annotations,
        metrics_port=ports["metrics"], admin_port=ports["admin"], poll_seconds=0.05, limits=limits, stop=stop))
    admin = f"http://127.0.0.1:{ports['admin']}"
    deadline = time.monotonic() + 10
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{admin}/healthz") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            assert not task.done(), task
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    try:
        yield {"admin": admin, "metrics": f"http://{listen_host}:{ports['metrics']}",
               "proxy": f"http://{listen_host}:{ports['listen']}", "annotations": annotations, "ports": ports}
    finally:
        stop.set()
        await task


@pytest.fixture
async def upstream(serve_app: ServeApp) -> AsyncIterator[str]:
    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    async with serve_app(app) as url:
        yield url.removeprefix("http://")


async def test_flags_bound_a_tenants_fault_and_year_9999_ends_at_the_limit(tmp_path: Path, upstream: str) -> None:
    limits = SidecarLimits(max_fault_seconds=2.0, max_delay_ms=50.0, max_cpu_cores=0.0, max_memory_bytes=2**20)
    async with _sidecar(tmp_path, upstream, limits=limits) as running, aiohttp.ClientSession() as session:
        write_annotations(running["annotations"], _tenant_annotations(
            '{"cpu_cores": 8, "delay_ms": 120000, "memory_bytes": "64Mi"}'))

        async def state() -> dict[str, Any]:
            async with session.get(f"{running['admin']}/fault") as response:
                return dict(await response.json())

        deadline = time.monotonic() + 10
        while not (current := await state())["active"]:
            assert time.monotonic() < deadline, current
            await asyncio.sleep(0.05)
        assert current["fault"]["delay_ms"] == 50.0 and current["fault"]["cpu_cores"] == 0.0
        assert current["stress"] == {"cpu_cores": 0.0, "memory_bytes": 2**20, "burners": 0}
        expires = datetime.fromisoformat(current["expires"])
        assert expires <= datetime.now(UTC) + timedelta(seconds=2.0)
        async with session.get(running["proxy"] + "/") as response:
            assert response.status == 200
        # The annotation still says 9999; the sidecar ends the fault at its own limit.
        deadline = time.monotonic() + 15
        while (current := await state())["active"] or current["stress"]["memory_bytes"]:
            assert time.monotonic() < deadline, current
            await asyncio.sleep(0.1)
        async with session.get(f"{running['metrics']}/metrics") as response:
            text = await response.text()
        assert 'harbinger_chaos_fault_clamped_total{field="expires"} 1.0' in text


async def test_the_fault_state_is_served_on_loopback_only(tmp_path: Path, upstream: str) -> None:
    # 127.0.0.2 stands for the pod's address: the proxy and metrics listen there, the admin port does not.
    async with _sidecar(tmp_path, upstream, listen_host="127.0.0.2") as running, \
            aiohttp.ClientSession() as session:
        async with session.get(f"{running['admin']}/fault") as response:
            assert response.status == 200 and (await response.json())["active"] is False
        async with session.get(f"{running['metrics']}/metrics") as response:
            assert response.status == 200 and "harbinger_chaos_requests_total" in await response.text()
        async with session.get(f"{running['metrics']}/fault") as response:
            assert response.status == 404  # the state is not on the port the network reaches
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(f"http://127.0.0.2:{running['ports']['admin']}/fault"):
                pass


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


UPLOAD_BYTES = 60 * 2**20
UPLOADS = 3


async def test_concurrent_large_uploads_stream_through_in_bounded_memory(tmp_path: Path, serve_app: ServeApp) -> None:
    """Three 60 MiB uploads at once through a sidecar process: its peak resident memory grows by
    a small multiple of the chunk size, not by the bodies (it used to buffer each one whole)."""
    received: list[int] = []

    async def sink(request: web.Request) -> web.Response:
        total = 0
        async for chunk in request.content.iter_chunked(CHUNK):
            total += len(chunk)
        received.append(total)
        return web.Response(text=str(total))

    app = web.Application()
    app.router.add_post("/upload", sink)
    annotations = tmp_path / "annotations"
    write_annotations(annotations, {"app": "x"})
    listen, metrics = free_port(), free_port()
    async with serve_app(app) as url:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "harbinger.cli", "--log-level=WARNING", "chaos", "sidecar",
            f"--listen=127.0.0.1:{listen}", f"--upstream={url.removeprefix('http://')}",
            f"--annotations-file={annotations}", f"--metrics-port={metrics}",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
                deadline = time.monotonic() + 30
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(f"http://127.0.0.1:{metrics}/healthz") as response:
                            if response.status == 200:
                                break
                    assert process.returncode is None and time.monotonic() < deadline
                    await asyncio.sleep(0.1)
                async def body(size: int) -> AsyncIterator[bytes]:
                    block = os.urandom(CHUNK)
                    for _ in range(size // CHUNK):
                        yield block

                async def upload(sized: bool, size: int) -> int:
                    # One with Content-Length (as most clients send), the others chunked.
                    headers = {"Content-Length": str(size)} if sized else {}
                    async with session.post(f"http://127.0.0.1:{listen}/upload", data=body(size),
                                            headers=headers) as response:
                        assert response.status == 200, await response.text()
                        return int(await response.text())

                # Warm the same paths with small bodies first (imports, connection pools, the
                # allocator's arenas), so the baseline holds everything but the bodies' cost.
                await asyncio.gather(*(upload(i == 0, 64 * CHUNK) for i in range(UPLOADS)))
                before = _rss_kib(process.pid, "VmHWM")
                sizes = await asyncio.gather(*(upload(i == 0, UPLOAD_BYTES) for i in range(UPLOADS)))
                peak = _rss_kib(process.pid, "VmHWM")
        finally:
            process.terminate()
            _, err = await process.communicate()
    assert sizes == [UPLOAD_BYTES] * UPLOADS and received[-UPLOADS:] == [UPLOAD_BYTES] * UPLOADS, err.decode()[-2000:]
    growth = (peak - before) * 1024
    # Flow control keeps a few chunks per connection in flight; 256 chunks (4 MiB) is far
    # below one body (60 MiB), which is what buffering would cost per upload.
    print(f"sidecar peak RSS growth during {UPLOADS} concurrent {UPLOAD_BYTES // 2**20} MiB uploads: "
          f"{growth / 2**20:.2f} MiB")
    assert growth < 256 * CHUNK, f"sidecar RSS grew by {growth / 2**20:.1f} MiB during the uploads"
