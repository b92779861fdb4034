"""Extender benchmark: filter + prioritize latency at 100, 1,000 and 5,000 nodes (in process
and over HTTP), and the real kube-scheduler's throughput with and without the extender.

Every latency comes with a baseline measured the same way in the same run: in process,
the least any extender must do (parse the body, write the node names back); over HTTP, a
bare aiohttp handler doing that on the same server stack. Throughput: 1,000 pods onto
1,000 KWOK nodes on a LocalCluster of its own, as pods/s and the ratio to the run without
any extender: then with do-nothing extenders (bench/echo_extender, in Go and on aiohttp),
which measure what the HTTP extender mechanism itself costs, and then with Harbinger's
extender (warm-up pods, every one checked; plain pods, the fast path; warm-up pods with
the filter verb only).

Writes bench/results/extender.json and extender.md. Not collected by pytest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import yaml
from aiohttp import web
from benchinfo import machine, realistic_pod
from kubernetes_asyncio import client

from extender.answer import Extender
from extender.server import make_app
from extender.state import ClusterState
from harbinger import contract
from harbinger.httpserver import serve
from harbinger.kube import Reflector, api_client
from harbinger_dev.localcluster import LocalCluster
from harbinger_dev.localcluster.cluster import free_port, http_ok
from harbinger_dev.localcluster.process import ManagedProcess

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (100, 1_000, 5_000)
CALLS = 300
PODS_PER_NODE = 5
SERVICES = 50
THROUGHPUT_NODES = 1_000
THROUGHPUT_PODS = 1_000
TARGET_P99_MS = 2.0
TARGET_RATIO = 0.70


# --- the objects ------------------------------------------------------------------------
def node_name(i: int) -> str:
    return f"bench-node-{i:05d}.pool-a.example.internal"


def scheduler_pod(*, warmup: bool, service: str = "svc-1") -> dict[str, Any]:
    """A pod as kube-scheduler sends it: the whole object, defaults filled in."""
    annotations = {contract.WARMUP: "true", contract.EGRESS_BANDWIDTH: "20M", contract.INGRESS_BANDWIDTH: "10M",
                   contract.PREDICTED_TPS: "412.5", contract.MODEL_VERSION: "v7"} if warmup else {}
    pod = realistic_pod(annotations=annotations)
    pod["metadata"].update({"name": "cart-7d9f8-x2k4q", "uid": "6a1f0f6e-93a4-4d55-9d37-3f1c6e0b9a11",
                            "resourceVersion": "123456"})
    pod["metadata"]["labels"][contract.APP_NAME_LABEL] = service
    pod["status"] = {"phase": "Pending", "qosClass": "Burstable"}
    return pod


def loaded_state(nodes: int) -> tuple[ClusterState, list[str]]:
    """``nodes`` nodes in three zones with 10G each, and PODS_PER_NODE bound pods on each."""
    state = ClusterState()
    names = [node_name(i) for i in range(nodes)]
    for i, name in enumerate(names):
        state.on_node_event("ADDED", {"metadata": {"name": name, "labels": {
            contract.NODE_BANDWIDTH: "10G", contract.ZONE_LABEL: f"zone-{i % 3}"}}})
    for i in range(nodes * PODS_PER_NODE):
        state.on_pod_event("ADDED", {
            "metadata": {"name": f"p{i}", "namespace": "shop", "uid": f"bound-{i}",
                         "labels": {contract.APP_NAME_LABEL: f"svc-{i % SERVICES}"},
                         "annotations": {contract.EGRESS_BANDWIDTH: f"{10 + i % 90}M",
                                         contract.INGRESS_BANDWIDTH: f"{5 + i % 40}M"}},
            "spec": {"nodeName": names[(i * 7919) % nodes]}, "status": {"phase": "Running"}})
    return state, names


def body_for(pod: dict[str, Any], names: list[str]) -> bytes:
    return json.dumps({"Pod": pod, "Nodes": None, "NodeNames": names}).encode()


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4)}


def bare_answer(body: bytes) -> bytes:
    """The baseline: parse the request and write the node names back, nothing else."""
    return json.dumps({"NodeNames": json.loads(body)["NodeNames"]}).encode()


# --- latency ------------------------------------------------------------------------------
def in_process(extender: Extender, bodies: dict[str, bytes]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, body in bodies.items():
        for verb, call in (("filter", extender.filter), ("prioritize", extender.prioritize)):
            timings = []
            for _ in range(CALLS):
                started = time.perf_counter()
                status, _ = call(body)
                timings.append(time.perf_counter() - started)
                assert status == 200
            out[f"{kind}_{verb}"] = percentiles(timings)
        # filter + prioritize, as one scheduling cycle asks both
        timings = []
        for _ in range(CALLS):
            started = time.perf_counter()
            extender.filter(body)
            extender.prioritize(body)
            timings.append(time.perf_counter() - started)
        out[f"{kind}_filter+prioritize"] = percentiles(timings)
    baseline = []
    body = bodies["warmup"]
    for _ in range(CALLS):
        started = time.perf_counter()
        bare_answer(body)
        baseline.append(time.perf_counter() - started)
    out["baseline_parse_and_echo"] = percentiles(baseline)
    return out


def baseline_app() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=bare_answer(await request.read()), content_type="application/json")

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/filter", echo)
    app.router.add_post("/prioritize", echo)
    return app


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> Any:
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, host="127.0.0.1", port=port, stop=stop, shutdown_grace_seconds=1))
    for _ in range(200):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await task


async def over_http(extender: Extender, bodies: dict[str, bytes]) -> dict[str, Any]:
    """One call at a time on a kept-alive connection, as kube-scheduler calls an extender."""
    out: dict[str, Any] = {}
    headers = {"Content-Type": "application/json"}

    async def measure(url: str, body: bytes, verbs: tuple[str, ...]) -> dict[str, float]:
        timings = []
        async with aiohttp.ClientSession(url) as http:
            for _ in range(CALLS):
                started = time.perf_counter()
                for verb in verbs:
                    async with http.post(f"/{verb}", data=body, headers=headers) as response:
                        await response.read()
                        assert response.status == 200
                timings.append(time.perf_counter() - started)
        return percentiles(timings)

    async with serving(make_app(extender, ready=lambda: True)) as url:
        for kind, body in bodies.items():
            for verbs in (("filter",), ("prioritize",), ("filter", "prioritize")):
                out[f"{kind}_{'+'.join(verbs)}"] = await measure(url, body, verbs)
    async with serving(baseline_app()) as url:
        out["baseline_bare_aiohttp_filter"] = await measure(url, bodies["warmup"], ("filter",))
        out["baseline_bare_aiohttp_filter+prioritize"] = await measure(url, bodies["warmup"], ("filter", "prioritize"))
    return out


async def latency() -> dict[str, Any]:
    results: dict[str, Any] = {}
    for nodes in SIZES:
        state, names = loaded_state(nodes)
        bodies = {"warmup": body_for(scheduler_pod(warmup=True), names),
                  "plain": body_for(scheduler_pod(warmup=False), names)}
        extender = Extender(state)
        results[str(nodes)] = {
            "request_bytes": len(bodies["warmup"]),
            "in_process": in_process(extender, bodies),
            "http": await over_http(extender, bodies),
        }
        print(f"  latency at {nodes} nodes done", flush=True)
    return results


# --- the real scheduler -------------------------------------------------------------------
async def create_nodes(core: client.CoreV1Api, count: int) -> None:
    resources = {"cpu": "32", "memory": "128Gi", "pods": "110"}
    semaphore = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with semaphore:
            await core.create_node(client.V1Node(
                metadata=client.V1ObjectMeta(name=f"tp-{i:04d}", labels={
                    "type": "kwok", contract.NODE_BANDWIDTH: "10G", contract.ZONE_LABEL: f"zone-{i % 3}"}),
                status=client.V1NodeStatus(allocatable=resources, capacity=resources)))

    await asyncio.gather(*(one(i) for i in range(count)))

    async def schedulable() -> int:
        nodes = (await core.list_node()).items
        return sum(1 for n in nodes if not n.spec.taints and any(
            c.type == "Ready" and c.status == "True" for c in n.status.conditions or []))

    deadline = time.monotonic() + 300
    while await schedulable() < count:
        if time.monotonic() > deadline:
            raise RuntimeError("the benchmark's nodes did not all become Ready and untainted")
        await asyncio.sleep(1)


async def create_pods(core: client.CoreV1Api, namespace: str, count: int, *, warmup: bool) -> None:
    semaphore = asyncio.Semaphore(32)
    annotations = {contract.WARMUP: "true", contract.EGRESS_BANDWIDTH: "10M"} if warmup else None

    async def one(i: int) -> None:
        async with semaphore:
            await core.create_namespaced_pod(namespace, client.V1Pod(
                metadata=client.V1ObjectMeta(name=f"p-{i:04d}", annotations=annotations,
                                             labels={contract.APP_NAME_LABEL: f"svc-{i % 20}"}),
                spec=client.V1PodSpec(containers=[client.V1Container(
                    name="app", image="example.invalid/app:1",
                    resources=client.V1ResourceRequirements(requests={"cpu": "100m", "memory": "64Mi"}))])))

    await asyncio.gather(*(one(i) for i in range(count)))


async def scheduling_run(cluster: LocalCluster, api: client.ApiClient, label: str, extenders: list[dict[str, Any]],
                         *, warmup: bool) -> dict[str, Any]:
    """Stop the scheduler, queue THROUGHPUT_PODS pods, start it, time until all are bound."""
    core = client.CoreV1Api(api)
    namespace = f"bench-{label}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    cluster.processes.pop("kube-scheduler").stop()
    await create_pods(core, namespace, THROUGHPUT_PODS, warmup=warmup)

    bound: set[str] = set()
    done = asyncio.Event()
    finished_at = 0.0

    def on_event(kind: str, pod: dict[str, Any], _old: dict[str, Any] | None) -> None:
        nonlocal finished_at
        if (pod.get("spec") or {}).get("nodeName"):
            bound.add(pod["metadata"]["name"])
            if len(bound) == THROUGHPUT_PODS and not done.is_set():
                finished_at = time.perf_counter()
                done.set()

    watcher = Reflector(core.list_namespaced_pod, name=f"bench-{label}", on_event=on_event, namespace=namespace)
    watcher.start()
    await watcher.wait_synced(60)
    await asyncio.to_thread(cluster.restart_scheduler, extenders)
    started = time.perf_counter()
    try:
        await asyncio.wait_for(done.wait(), timeout=600)
    finally:
        await watcher.stop()
    seconds = finished_at - started
    return {"pods": THROUGHPUT_PODS, "seconds": round(seconds, 3),
            "pods_per_second": round(THROUGHPUT_PODS / seconds, 1)}


@contextlib.contextmanager
def extender_process(kubeconfig: Path, port: int, log_dir: Path) -> Any:
    """The extender as its own process, as it runs beside kube-scheduler in production."""
    with served("extender", [sys.executable, "-m", "harbinger.cli", "--log-level=WARNING", "extender",
                             "--kubeconfig", str(kubeconfig), "--port", str(port)], port, log_dir) as url:
        yield url


@contextlib.contextmanager
def served(name: str, command: list[str], port: int, log_dir: Path) -> Any:
    """Run ``command`` (an HTTP server on ``port``, dying with this process, logging to
    ``log_dir``) until the block ends; yields its URL."""
    process = ManagedProcess(name, command, log_dir / f"{name}.log")
    process.start()
    try:
        deadline = time.monotonic() + 60
        while not http_ok(f"http://127.0.0.1:{port}/readyz"):
            process.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not become ready; log: {process.log_path}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop(timeout=15)


ECHO = Path(__file__).resolve().parent / "echo_extender"


def echo_commands(workdir: Path) -> dict[str, list[str]]:
    """The do-nothing extenders (bench/echo_extender): Go when a Go toolchain is on PATH (the
    project's setup needs one for the control plane), and aiohttp, Harbinger's own stack."""
    commands: dict[str, list[str]] = {}
    go = shutil.which("go")
    if go:
        binary = workdir / "echo-extender"
        subprocess.run([go, "build", "-o", str(binary), "."], cwd=ECHO, check=True,
                       env={**os.environ, "CGO_ENABLED": "0"})
        commands["go"] = [str(binary)]
    commands["python"] = [sys.executable, str(ECHO / "echo.py")]
    return commands


def without_prioritize(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key != "prioritizeVerb"}


def extender_config(url: str) -> dict[str, Any]:
    shipped = Path(__file__).resolve().parents[1] / "manifests" / "base" / "extender" / "scheduler-config.yaml"
    config = yaml.safe_load(yaml.safe_load(shipped.read_text())["data"]["kube-scheduler.yaml"])
    return {**config["extenders"][0], "urlPrefix": url}


def extender_seconds(url: str) -> dict[str, float]:
    """The extender's own time spent answering, by verb: (sum, count) from its histogram."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        for verb in ("filter", "prioritize"):
            for part in ("sum", "count"):
                if line.startswith(f'harbinger_extender_request_seconds_{part}{{verb="{verb}"}}'):
                    out[f"{verb}_{part}"] = float(line.rsplit(" ", 1)[1])
    return out


def server_side(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    figures = {}
    for verb in ("filter", "prioritize"):
        calls = after.get(f"{verb}_count", 0) - before.get(f"{verb}_count", 0)
        spent = after.get(f"{verb}_sum", 0) - before.get(f"{verb}_sum", 0)
        figures[f"{verb}_calls"] = calls
        figures[f"{verb}_mean_ms"] = round(spent / calls * 1e3, 4) if calls else 0.0
    return figures


async def throughput() -> dict[str, Any]:
    runs: dict[str, Any] = {}
    with LocalCluster() as cluster, tempfile.TemporaryDirectory() as workdir:
        echoes = echo_commands(Path(workdir))
        async with api_client(cluster.kubeconfig) as api:
            await create_nodes(client.CoreV1Api(api), THROUGHPUT_NODES)
            print("  nodes ready", flush=True)

            async def run(key: str, extenders: list[dict[str, Any]], *, warmup: bool = True) -> dict[str, Any]:
                runs[key] = await scheduling_run(cluster, api, key.replace("_", "-"), extenders, warmup=warmup)
                print(f"  {key}: {runs[key]}", flush=True)
                return runs[key]

            await run("without_extender", [])
            # The do-nothing extenders first: what the mechanism costs before any work is done.
            for language, command in echoes.items():
                port = free_port()
                with served(f"{language}-echo", [*command, str(port)], port, Path(workdir)) as url:
                    echo = extender_config(url)
                    if language == "go":
                        # Configured but interested in no pod (a resource nothing requests):
                        # never called, yet it turns off the scheduler's batching as any
                        # extender does. Separates that cost from the calls themselves.
                        never = [{"name": "harbinger.io/bench-never", "ignoredByScheduler": True}]
                        await run("extender_never_called", [{**echo, "managedResources": never}])
                        await run("go_echo_filter_only", [without_prioritize(echo)])
                    await run(f"{language}_echo_filter_prioritize", [echo])
            with extender_process(cluster.kubeconfig, free_port(), Path(workdir)) as url:
                config = extender_config(url)
                for key, extenders, warmup in (
                        ("with_extender_warmup_pods", [config], True),
                        ("with_extender_plain_pods", [config], False),
                        ("with_extender_warmup_pods_filter_only", [without_prioritize(config)], True)):
                    before = extender_seconds(url)
                    figures = await run(key, extenders, warmup=warmup)
                    figures["extender_side"] = server_side(before, extender_seconds(url))
    base = runs["without_extender"]["pods_per_second"]
    for figures in runs.values():
        figures["ratio_to_without"] = round(figures["pods_per_second"] / base, 3)
    runs["nodes"] = THROUGHPUT_NODES
    runs["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    runs["order"] = "as listed; earlier runs' pods stay bound, so later runs schedule onto a fuller cluster"
    return runs


# --- report -------------------------------------------------------------------------------
def markdown(result: dict[str, Any]) -> str:
    lines = ["# Extender benchmark", "",
             f"Machine: {result['machine']['platform']}, {result['machine']['cpus']} CPUs, Python "
             f"{result['machine']['python']}, load average at start {result['machine']['load_average_at_start']}.",
             "", "## filter + prioritize latency (one scheduling cycle: both calls)", "",
             "| nodes | where | pod | p50 ms | p99 ms | baseline p50 ms | ratio p50 to baseline |",
             "| ---: | --- | --- | ---: | ---: | ---: | ---: |"]
    for nodes, per in result["latency"].items():
        for where, key in (("in process", "baseline_parse_and_echo"),
                           ("HTTP", "baseline_bare_aiohttp_filter+prioritize")):
            figures = per["in_process" if where == "in process" else "http"]
            base = figures[key]["p50_ms"]
            if where == "in process":
                base = base * 2  # the baseline is one call; a cycle is two
            for pod in ("warmup", "plain"):
                f = figures[f"{pod}_filter+prioritize"]
                lines.append(f"| {nodes} | {where} | {pod} | {f['p50_ms']:.3f} | {f['p99_ms']:.3f} | {base:.3f} | "
                             f"{f['p50_ms'] / base:.2f} |")
    tp = result["throughput"]
    lines += ["", f"## real kube-scheduler, {THROUGHPUT_PODS} pods onto {tp['nodes']} KWOK nodes", "",
              "| run | seconds | pods/s | ratio to without | extender's own time per call (filter / prioritize) |",
              "| --- | ---: | ---: | ---: | --- |"]
    names = {"without_extender": "without extender",
             "extender_never_called": "an extender configured, interested in no pod (batching off, no calls)",
             "go_echo_filter_only": "do-nothing Go extender, filter only",
             "go_echo_filter_prioritize": "do-nothing Go extender, filter + prioritize",
             "python_echo_filter_prioritize": "do-nothing aiohttp extender, filter + prioritize",
             "with_extender_warmup_pods": "**Harbinger's extender, warm-up pods (checked)**",
             "with_extender_plain_pods": "Harbinger's extender, plain pods (fast path)",
             "with_extender_warmup_pods_filter_only": "Harbinger's extender, warm-up pods, filter verb only"}
    for key, name in names.items():
        if key not in tp:
            continue
        run = tp[key]
        side = run.get("extender_side")
        own = ""
        if side:
            own = f"{side['filter_mean_ms']:.3f} ms"
            if side["prioritize_calls"]:
                own += f" / {side['prioritize_mean_ms']:.3f} ms"
        lines.append(f"| {name} | {run['seconds']} | {run['pods_per_second']} | "
                     f"{run['ratio_to_without']:.2f} | {own} |")
    lines += ["", f"Run order: {tp['order']}. Load average after: {tp['load_average_after']}.", "",
              f"Targets: p99 <= {TARGET_P99_MS} ms per call at 5,000 nodes; throughput with the extender >= "
              f"{TARGET_RATIO:.0%} of without.", ""]
    return "\n".join(lines)


async def main() -> None:
    result: dict[str, Any] = {"machine": machine(
        ("aiohttp", "numpy", "pydantic", "pydantic-core", "kubernetes-asyncio"),
        kubernetes="v1.37.2 (kube-scheduler from the project's Go build)")}
    print("extender bench: latency", flush=True)
    result["latency"] = await latency()
    print("extender bench: real kube-scheduler throughput", flush=True)
    result["throughput"] = await throughput()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "extender.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "extender.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    asyncio.run(main())
