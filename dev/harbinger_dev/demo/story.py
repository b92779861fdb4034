"""``python -m harbinger_dev.demo --replay [--fast] [--out DIR]`` (``make demo-replay``): a
recorded day of the Harbinger story, told live at 180x (``make demo`` tells it on a real
install, ``harbinger_dev.demo.real``).

1. A real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
   KWOK) and a real Prometheus on 127.0.0.1.
2. Harbinger's components as real processes: the webhook (TLS, registered with the
   apiserver by the shipped MutatingWebhookConfiguration), the extender (in the
   scheduler's configuration), the planner.
3. Forecasters trained on a recorded trace, with a declared campaign.
4. A shop of three services; the replay clock moves through the day's peak: the planner
   raises floors ahead of it, bottleneck first; the real HPA and ReplicaSet controllers
   make pods; the webhook stamps them; the scheduler asks the extender where they fit.
5. A chaos rehearsal of the peak: faults ramp in the bottleneck until the callers'
   SLO breaks, everything is rolled back, and the report is written.

Progress is printed as it happens; ``OUT/summary.json`` records what happened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from chaos.backends.files import AnnotationsFileBackend
from chaos.experiment import SLO, Experiment, FaultKind
from chaos.faults import Fault
from chaos.monitor import Monitor, Queries
from chaos.record import RunStatus
from chaos.report import write_report
from chaos.runner import RunConfig, run_experiment
from harbinger import contract
from harbinger.clock import ReplayClock
from harbinger.kube import KubeObject, api_client, read_json
from harbinger.prometheus import PrometheusClient
from harbinger.quantity import parse_quantity
from harbinger_dev.chaosdemo import LoadGenerator, local_topology
from harbinger_dev.demo import scenario
from harbinger_dev.demo.processes import Components
from harbinger_dev.demo.shop import FLOOR_CHANGE
from harbinger_dev.localcluster import LocalCluster, LocalPrometheus
from harbinger_dev.localcluster.cluster import free_port
from harbinger_dev.localcluster.install import MANIFESTS, local_scheduler_extenders, local_webhook_configuration
from harbinger_dev.traces import traces_dir
from scaler.apply import COMPONENT as PLANNER_COMPONENT

STARTED = time.monotonic()


CRDS = MANIFESTS / "crds"


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


@dataclass
class Pace:
    """How fast trace time runs, and how long the replay lasts (trace seconds)."""

    speed: float
    replay_seconds: float


FULL = Pace(speed=180.0, replay_seconds=11 * 3600)
FAST = Pace(speed=360.0, replay_seconds=10 * 3600)


@dataclass
class Observed:
    floor_changes: list[dict[str, Any]] = field(default_factory=list)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    chaos: dict[str, Any] = field(default_factory=dict)


# --- the parts of the story -------------------------------------------------------------------

def start_components(cluster: LocalCluster, prometheus: LocalPrometheus, work: Path, inputs: dict[str, Path],
                     clock: ReplayClock) -> Components:
    env = {
        "HARBINGER_REPLAY_CLOCK": clock.spec(),
        "HARBINGER_WEBHOOK__FORECAST_REFRESH_SECONDS": "1",
        "HARBINGER_WEBHOOK__FORECAST_MISS_BUDGET_SECONDS": "1.0",
        "HARBINGER_PLANNER__LEASE_NAMESPACE": "default",
        "HARBINGER_PLANNER__STABILIZATION_SECONDS": "1800",
        "PYTHONUNBUFFERED": "1",
    }
    components = Components(work / "logs", env)
    kube = f"--kubeconfig={cluster.kubeconfig}"
    # Harbinger's own API objects (CapacityPlan), as `kubectl apply -k manifests/` installs them.
    cluster.kubectl("apply", "-k", str(CRDS))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/capacityplans.harbinger.io",
                    "crd/harbingerpolicies.harbinger.io", "crd/clusterharbingerpolicies.harbinger.io")

    certs = work / "certs"
    components.run("certs", ["certs", f"--out={certs}", "--hosts=127.0.0.1,localhost"], timeout=60)
    webhook_port = free_port()
    tls = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    components.start("webhook", ["webhook", f"--cert-dir={certs}", "--host=127.0.0.1", f"--port={webhook_port}",
                                 kube, f"--models-dir={work / 'models'}", *_history_flags(inputs)],
                     ready_url=f"https://127.0.0.1:{webhook_port}/readyz", tls=tls)
    configuration = local_webhook_configuration(f"https://127.0.0.1:{webhook_port}/mutate",
                                                (certs / "ca.crt").read_bytes())
    cluster.kubectl("apply", "-f", "-", input=json.dumps(configuration))
    say(f"  webhook    https://127.0.0.1:{webhook_port}/mutate  (registered: {configuration['metadata']['name']}, "
        "failurePolicy Ignore)")

    extender_port = free_port()
    components.start("extender", ["extender", "--host=127.0.0.1", f"--port={extender_port}", kube],
                     ready_url=f"http://127.0.0.1:{extender_port}/healthz")
    cluster.restart_scheduler(local_scheduler_extenders(f"http://127.0.0.1:{extender_port}"))
    say(f"  extender   http://127.0.0.1:{extender_port}  (kube-scheduler restarted with it: ignorable, "
        "nodeCacheCapable)")

    del prometheus
    return components


def start_planner(cluster: LocalCluster, components: Components, work: Path, inputs: dict[str, Path],
                  clock: ReplayClock) -> None:
    planner_port = free_port()
    # The demo tells the day-ahead story (the forecaster's peak, raised a warm-up ahead, callees
    # first), so it plans from the forecaster's plan alone; the short-horizon floor that
    # 'harbinger plan' adds by default reacts within minutes and is shown by 'make bench'.
    components.start("planner", ["plan", "--no-short-horizon", f"--kubeconfig={cluster.kubeconfig}", "--interval=1",
                                 f"--profiles={inputs['profiles']}", f"--graph={inputs['graph']}",
                                 f"--events={inputs['events']}", f"--models-dir={work / 'models'}",
                                 f"--metrics-port={planner_port}", *_history_flags(inputs)],
                     ready_url=f"http://127.0.0.1:{planner_port}/healthz")
    say(f"  planner    metrics on http://127.0.0.1:{planner_port}/metrics, runs every second "
        f"(= {clock.speed / 60:.0f} trace minutes)")


def _history_flags(inputs: dict[str, Path]) -> list[str]:
    """Each service's traffic history comes from its recorded trace, cut at the replay clock."""
    return [f"--history-trace={s.name}={inputs[f'{s.name}-trace']}" for s in scenario.SERVICES]


def train_models(work: Path, inputs: dict[str, Path], components: Components) -> None:
    for service in scenario.SERVICES:
        out = work / "models" / scenario.NAMESPACE / service.name  # models.layout: namespace/service
        components.run(f"train-{service.name}", [
            "train", f"--trace={inputs[f'{service.name}-training']}", f"--service={service.name}",
            f"--events={inputs['events']}", f"--out={out}"])
        metadata = json.loads((out / "metadata.json").read_text())
        say(f"  {service.name:9s} model {metadata['model_version']}: {metadata['period']} seasonality, "
            f"{metadata['step_seconds'] // 60} min steps, trained on {metadata['training_start'][:10]} .. "
            f"{metadata['training_end'][:16]}")


def create_shop(cluster: LocalCluster, work: Path) -> None:
    """``kubectl apply`` the shop, as a team would: nodes, the opted-in namespace, and a
    Deployment with an HPA per service (written to ``OUT/shop.yaml`` for reading)."""
    manifest = work / "shop.yaml"
    manifest.write_text(scenario.shop_manifest())
    cluster.kubectl("apply", "-f", str(manifest))
    for name, spec in scenario.NODES.items():
        say(f"  node {name}: bandwidth {spec['bandwidth']}, {spec['zone']}, {scenario.NODE_PODS} pods")
    for service in scenario.SERVICES:
        say(f"  deployment {scenario.NAMESPACE}/{service.name} + HPA (min 1): {service.profile['rps_per_replica']} "
            f"req/s per replica, warm-up {service.profile['warmup_seconds'] // 60:.0f} min"
            + (f", calls {', '.join(service.calls)}" if service.calls else ""))


async def watch_the_peak(api: client.ApiClient, clock: ReplayClock, pace: Pace, components: Components,
                         observed: Observed) -> None:
    """Print the planner's changes (its own Events, in the order the apiserver stored them),
    and each new pod with its stamps and node, until the replay ends."""
    core = client.CoreV1Api(api)
    seen_events: set[str] = set()
    end = clock.start.timestamp() + pace.replay_seconds
    next_tick = 0.0
    while clock.now().timestamp() < end:
        components.check_alive()
        now = clock.now()
        if time.monotonic() >= next_tick:
            say(f"trace time {now:%a %H:%M} UTC")
            next_tick = time.monotonic() + 10
        events = await read_json(core.list_namespaced_event(scenario.NAMESPACE, _preload_content=False))
        fresh = [e for e in events["items"]
                 if e.get("reportingComponent") == PLANNER_COMPONENT and e["metadata"]["name"] not in seen_events]
        for event in sorted(fresh, key=lambda e: int(e["metadata"]["resourceVersion"])):
            seen_events.add(event["metadata"]["name"])
            await _observe_floor_change(api, event, observed)
        pods = await read_json(core.list_namespaced_pod(scenario.NAMESPACE, _preload_content=False))
        egress_by_node = _egress_by_node(pods["items"])
        for pod in pods["items"]:
            _observe_pod(pod, observed, egress_by_node)
        await asyncio.sleep(0.5)


async def _observe_floor_change(api: client.ApiClient, event: KubeObject, observed: Observed) -> None:
    service = event["involvedObject"]["name"]
    match = FLOOR_CHANGE.search(event.get("message", ""))
    if not match:
        return
    before, after = int(match.group(1)), int(match.group(2))
    plan, window = await _plan_annotation(api, service)
    say(f"  planner {'raised' if after > before else 'lowered'} {service} floor {before} -> {after}"
        + (f" (next peak {str(plan.get('next_peak', '?'))[11:16]}, {plan.get('peak_tps') or 0:.0f} req/s"
           f"{', warm-up window ' + window if window else ''})" if plan else ""))
    observed.floor_changes.append({"service": service, "from": before, "to": after,
                                   "trace_time": event.get("firstTimestamp"), "wall": time.monotonic() - STARTED})


async def _plan_annotation(api: client.ApiClient, name: str) -> tuple[dict[str, Any], str]:
    """The planner's annotations on a Deployment: the plan, and its warm-up window as text."""
    deployment = await read_json(client.AppsV1Api(api).read_namespaced_deployment(
        name, scenario.NAMESPACE, _preload_content=False))
    annotations = deployment["metadata"].get("annotations") or {}
    window = ""
    if contract.WARMUP_FROM in annotations and contract.WARMUP_UNTIL in annotations:
        window = f"{annotations[contract.WARMUP_FROM][11:16]}-{annotations[contract.WARMUP_UNTIL][11:16]}"
    try:
        plan: dict[str, Any] = json.loads(annotations.get(contract.PLAN, "{}"))
    except json.JSONDecodeError:
        return {}, window
    return plan, window


def _egress_by_node(pods: list[KubeObject]) -> dict[str, float]:
    """Declared egress bandwidth (bits/s) of the live pods bound to each node."""
    totals: dict[str, float] = {}
    for pod in pods:
        node = pod["spec"].get("nodeName")
        egress = (pod["metadata"].get("annotations") or {}).get(contract.EGRESS_BANDWIDTH)
        if node and egress and not pod["metadata"].get("deletionTimestamp"):
            totals[node] = totals.get(node, 0.0) + float(parse_quantity(egress))
    return totals


def _observe_pod(pod: KubeObject, observed: Observed, egress_by_node: dict[str, float]) -> None:
    name = pod["metadata"]["name"]
    node = pod["spec"].get("nodeName")
    if name in observed.pods or not node:
        return
    annotations = pod["metadata"].get("annotations") or {}
    requests = pod["spec"]["containers"][0].get("resources", {}).get("requests", {})
    record = {
        "service": pod["metadata"].get("labels", {}).get(contract.APP_NAME_LABEL),
        "node": node,
        "predicted_tps": annotations.get(contract.PREDICTED_TPS),
        "model_version": annotations.get(contract.MODEL_VERSION),
        "egress_bandwidth": annotations.get(contract.EGRESS_BANDWIDTH),
        "warmup": annotations.get(contract.WARMUP) == "true",
        "cpu": requests.get("cpu"), "memory": requests.get("memory"),
        # What the node carries once this pod is there: the extender keeps it within capacity.
        "node_egress_bits": egress_by_node.get(node, 0.0),
        "node_capacity_bits": float(parse_quantity(scenario.NODES[node]["bandwidth"])) if node in scenario.NODES
        else None,
    }
    observed.pods[name] = record
    stamp = (f"predicted-tps={record['predicted_tps']} egress={record['egress_bandwidth']} "
             f"cpu={record['cpu']} mem={record['memory']}") if record["predicted_tps"] else "no forecast yet"
    say(f"  pod {name} -> {node} ({scenario.NODES.get(node, {}).get('bandwidth', '?')})"
        f"{' [warm-up]' if record['warmup'] else ''}: {stamp}")


async def rehearse(prometheus: LocalPrometheus, work: Path, observed: Observed, fast: bool) -> None:
    """A chaos rehearsal of the peak on three local services behind the chaos sidecar."""
    peak = max((float(p["predicted_tps"] or 0) for p in observed.pods.values()), default=10.0)
    experiment = Experiment(
        name="rehearse-payments-errors", kind=FaultKind.ERROR, target="payments", watch=["checkout", "frontend"],
        steps=[Fault(abort_status=503, abort_percent=p) for p in (1.0, 5.0, 30.0)],
        slo=SLO(max_error_rate=0.10, max_p99_seconds=2.0, min_throughput_ratio=0.3, breach_samples=2),
    )
    window = 4.0
    config = RunConfig(dwell_seconds=4.0 if fast else 8.0, baseline_seconds=3.0, sample_interval_seconds=0.5,
                       fault_ttl_seconds=30.0, recovery_seconds=2.0)
    rate = min(60.0, max(20.0, peak))
    async with local_topology(work / "chaos", prometheus, job_prefix="demo-") as topology:
        for service in topology.sidecars:
            await asyncio.to_thread(prometheus.wait_for, f'up{{job="{topology.job(service)}"}} == 1', 30.0)
        say(f"  frontend -> checkout -> payments behind chaos sidecars; load {rate:.0f} req/s; "
            "SLO: callers' errors <= 10 %")
        backend = AnnotationsFileBackend(experiment, {s: [p.annotations_file] for s, p in topology.sidecars.items()})
        prom = PrometheusClient(prometheus.url)
        monitor = Monitor(prom, namespace="default", window_seconds=window, queries=Queries(selector=topology.selector))
        try:
            async with LoadGenerator(topology.entry_url, rate=rate, max_seconds=120):
                await asyncio.sleep(window)
                record = await run_experiment(
                    experiment, backend, monitor, config,
                    on_step=lambda i, f: say(f"  step {i + 1}: {f.describe() if hasattr(f, 'describe') else f}"))
                states = await topology.fault_states()
        finally:
            await prom.close()
    analysis = write_report(record, work / "reports" / record.run_id)
    breach = analysis.get("breach") or {}
    observed.chaos = {
        "status": record.status.value if hasattr(record.status, "value") else str(record.status),
        "breached": record.status is RunStatus.BREACHED,
        "breach_service": breach.get("service"), "breach_step": breach.get("step"),
        "rollback_seconds": record.rollback.seconds if record.rollback else None,
        "faults_left": sum(1 for s in states.values() if s["active"]),
        "report": str(work / "reports" / record.run_id / "report.html"),
    }
    say(f"  breach: {breach.get('service')} at step {breach.get('step')} ({breach.get('intensity', '')}); "
        f"rolled back in {observed.chaos['rollback_seconds']:.3f}s; faults left: {observed.chaos['faults_left']}")


# --- the whole run -----------------------------------------------------------------------------

async def story(cluster: LocalCluster, prometheus: LocalPrometheus, work: Path, pace: Pace, fast: bool) -> Observed:
    observed = Observed()
    inputs = scenario.write_inputs(work / "inputs", traces_dir() / scenario.TRACE)
    env_components = Components(work / "logs", {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    say("2/6 training forecasters on the ELB trace up to the replay start (scikit-learn -> ONNX)")
    train_models(work, inputs, env_components)

    clock = ReplayClock(scenario.REPLAY_START, pace.speed, origin=time.time())
    say(f"3/6 starting Harbinger's components on the replay clock ({pace.speed:.0f}x, from "
        f"{scenario.REPLAY_START:%a %Y-%m-%d %H:%M} UTC)")
    components = start_components(cluster, prometheus, work, inputs, clock)
    try:
        async with api_client(cluster.kubeconfig) as api:
            say("4/6 the shop: namespace shop (harbinger.io/enabled=true), three services, three nodes")
            create_shop(cluster, work)
            start_planner(cluster, components, work, inputs, clock)
            say("5/6 replaying the day: the planner raises floors ahead of the peak")
            await watch_the_peak(api, clock, pace, components, observed)
            # What the planner recorded on the API, as a team would look at it.
            plans = cluster.kubectl("get", "capacityplans", "-n", scenario.NAMESPACE).stdout
            say("  kubectl get capacityplans -n " + scenario.NAMESPACE + "\n" + "\n".join(
                f"    {line}" for line in plans.splitlines()))
    finally:
        components.stop_all()
    say("6/6 chaos rehearsal of the peak")
    await rehearse(prometheus, work, observed, fast)
    return observed


def summarize(observed: Observed, out: Path) -> dict[str, Any]:
    placements = Counter(p["node"] for p in observed.pods.values())
    warmup_nodes = Counter(p["node"] for p in observed.pods.values() if p["warmup"])
    raised = [c for c in observed.floor_changes if c["to"] > c["from"]]
    summary = {
        "floor_changes": observed.floor_changes,
        "first_raised": [c["service"] for c in raised],
        "pods": observed.pods,
        "stamped_pods": sum(1 for p in observed.pods.values() if p["predicted_tps"]),
        "warmup_pods": sum(1 for p in observed.pods.values() if p["warmup"]),
        "placements": dict(placements),
        "warmup_placements": dict(warmup_nodes),
        "chaos": observed.chaos,
        "wall_seconds": round(time.monotonic() - STARTED, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harbinger_dev.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="a faster clock and shorter dwell (the demo's own test)")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="where reports and summary go")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    pace = FAST if args.fast else FULL
    say("1/6 starting the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, "
        "KWOK) and Prometheus")
    with LocalCluster(hpa_sync_seconds=2) as cluster, LocalPrometheus(scrape_interval="1s") as prometheus:
        say(f"  control plane ready at {cluster.server}; Prometheus at {prometheus.url}")
        observed = asyncio.run(story(cluster, prometheus, out, pace, args.fast))
    summary = summarize(observed, out)
    say(f"done in {summary['wall_seconds']}s; every process stopped")
    say(f"  floors raised, in order: {' -> '.join(summary['first_raised']) or 'none'}")
    say(f"  pods stamped by the webhook: {summary['stamped_pods']} of {len(summary['pods'])}; warm-up pods by node: "
        f"{summary['warmup_placements']}")
    say(f"  chaos report: {observed.chaos.get('report')}")
    say(f"  summary: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
