"""The Harbinger story on a real install: the local cluster with a real node, Harbinger's
images loaded, ``kubectl apply -k manifests/`` as shipped, and a shop of three real HTTP
services (frontend -> checkout -> payments) with weeks of traffic history in Prometheus.

Each step of the story is a method of :class:`Shop` that waits for the cluster to do its part
and returns what it saw. ``make demo`` tells the steps in order (``harbinger_dev.demo``), and
``tests/install/test_install.py`` asserts on each: one story, told and tested.

The history runs on to ``AHEAD`` after the start, standing in for the scrapes that would go on
in a cluster (the planner's short-horizon floor reads the last minutes' rate). Checkout's and
payments' are the nasa trace (scaled, so each has its own level); frontend's is a steady rate
with a scripted daily peak whose top today comes ``peak_in`` after the start: the planner must
raise its floor before it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from harbinger import contract
from harbinger.clock import format_time, parse_time
from harbinger_dev import REPO_ROOT
from harbinger_dev.chaosdemo import LoadGenerator, LoadStats
from harbinger_dev.localcluster import LocalCluster, LocalPrometheus
from harbinger_dev.localcluster.addons import ready_for_manifests
from harbinger_dev.localcluster.binaries import find_binaries
from harbinger_dev.localcluster.errors import ClusterError
from harbinger_dev.localcluster.imagebuild import installable_images, unpacked_size
from harbinger_dev.localcluster.node import HELLO_IMAGE
from harbinger_dev.traces import load_trace

T = TypeVar("T")

NAMESPACE = "shop"
#: The services and their share of the trace's traffic.
SERVICES = {"frontend": 1.0, "checkout": 0.5, "payments": 0.25}
#: Who calls whom: each service's pods call the next one's Service, through its sidecar.
CHAIN = {"frontend": "checkout", "checkout": "payments"}
#: Where the injected sidecar listens (its Service's targetPort) and serves its metrics.
SIDECAR_PORT, SIDECAR_METRICS_PORT = 15080, 15081
HISTORY_DAYS = 29
AHEAD = timedelta(hours=3)
#: Frontend's traffic: FRONTEND_RPS (give or take a tenth) but for a scripted peak every day
#: at the same clock time: within PEAK_RAMP it climbs to PEAK_FACTOR times that and stays there
#: for PEAK_LENGTH. A jump the HPA, a minute's rate a scrape late and pods that take
#: ``warmupSeconds`` to serve, follows too late every day: what the planner learns to raise
#: its floor ahead of (from the same clock time on the days before).
FRONTEND_RPS, PEAK_FACTOR, PEAK_RAMP, PEAK_LENGTH = 1.0, 4.0, timedelta(minutes=1), timedelta(minutes=20)
#: A floor only frontend's peak needs (4 req/s at 0.5 a replica is 8; its usual 1 req/s needs 2,
#: 3 with a margin): the planner raises the floor to this or more before the peak's jump (it
#: reached 4 about three minutes before it, tried by hand, and 8 at the jump).
PEAK_NEED = 4
#: The platform team's policy for the namespace: at least two replicas of everything (the
#: HPAs, as the teams wrote them, say one), at most eight.
POLICY = {"apiVersion": "harbinger.io/v1alpha1", "kind": "HarbingerPolicy",
          "metadata": {"name": "shop", "namespace": NAMESPACE},
          "spec": {"capacity": {"rpsPerReplica": 0.5, "warmupSeconds": 240, "minReplicas": 2, "maxReplicas": 8}}}
SLO = {"maxErrorRate": 0.10, "maxP99Seconds": 1.0, "minThroughputRatio": 0.3, "breachSamples": 2}


def rehearsal(name: str, kind: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """A ChaosExperiment on payments, its steps ramped 30 s each, watched at its callers."""
    return {"apiVersion": "harbinger.io/v1alpha1", "kind": "ChaosExperiment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"target": "payments", "kind": kind, "watch": ["checkout", "frontend"], "dwellSeconds": 30,
                     "steps": steps, "slo": SLO}}


#: The rehearsals: errors in payments, then latency.
ERRORS = rehearsal("error-payments", "error", [{"abortStatus": 503, "abortPercent": 1},
                                                {"abortStatus": 503, "abortPercent": 60}])
LATENCY = rehearsal("latency-payments", "latency", [{"delayMs": 20}, {"delayMs": 2500}])
#: The planner's Events on a floor change: "<kind> <field> <before> -> <after>[ for a predicted
#: peak ...]" (scaler.controller.change_reason).
FLOOR_CHANGE = re.compile(r"(\d+) -> (\d+)")
#: A rehearsal's phases once it is over (docs/chaos.md).
ENDED = {"Held", "Breached", "Aborted", "NotSteady", "Failed", "Interrupted", "Invalid", "Expired"}
#: What users apply: ``kubectl apply -k manifests/``.
MANIFESTS = REPO_ROOT / "manifests"
COMPONENTS = ("harbinger-webhook", "harbinger-scheduler", "harbinger-planner", "harbinger-chaos")


class StoryError(ClusterError):
    """A step of the story did not happen in time; the message says what the cluster showed."""


def daily_peak(stamps: pd.Index, peak_at: datetime) -> np.ndarray:
    """The factor on each timestamp's rate: 1, rising linearly over PEAK_RAMP to PEAK_FACTOR
    at ``peak_at``'s clock time, held for PEAK_LENGTH, every day."""
    start = pd.Timestamp(peak_at) - pd.Timedelta(PEAK_RAMP)
    since = np.asarray(((pd.DatetimeIndex(stamps) - start) % pd.Timedelta(days=1)).total_seconds())
    ramp, top = PEAK_RAMP.total_seconds(), (PEAK_RAMP + PEAK_LENGTH).total_seconds()
    rising = 1 + (PEAK_FACTOR - 1) * since / ramp
    return np.where(since < ramp, rising, np.where(since < top, PEAK_FACTOR, 1.0))


def history(now: datetime, peak_at: datetime) -> str:
    """OpenMetrics for ``istio_requests_total`` of each service (the series the manifests'
    default query reads): a counter every minute for the last HISTORY_DAYS days and the next
    AHEAD. Checkout's and payments' rates are the nasa trace's, moved by whole weeks (weekdays
    stay weekdays); frontend's is FRONTEND_RPS with its daily peak."""
    trace = load_trace("nasa", step_seconds=60).fillna(0.0)
    end = now.replace(second=0, microsecond=0) + AHEAD
    # Whole weeks, enough for the trace to reach past ``end`` (the cut below ends it there).
    weeks = (end - trace.index[-1].to_pydatetime()) // timedelta(weeks=1) + 1
    shifted = trace.copy()
    shifted.index = shifted.index + timedelta(weeks=weeks)
    shifted = shifted[(shifted.index > end - timedelta(days=HISTORY_DAYS)) & (shifted.index <= end)]
    lines = ["# HELP istio_requests_total Requests.", "# TYPE istio_requests counter"]
    for service, scale in SERVICES.items():
        labels = (f'destination_workload="{service}",destination_workload_namespace="{NAMESPACE}",'
                  'reporter="destination"')
        if service == "frontend":
            noise = 1 + 0.1 * np.random.default_rng(0).standard_normal(len(shifted))
            rate = FRONTEND_RPS * daily_peak(shifted.index, peak_at) * noise
        else:
            rate = shifted.to_numpy() * scale
        totals = np.cumsum(rate * 60.0)
        lines.extend(f"istio_requests_total{{{labels}}} {total:.1f} {int(stamp.timestamp())}"
                     for stamp, total in zip(shifted.index, totals, strict=True))
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def application(name: str) -> list[dict[str, Any]]:
    """A service as its team writes it: the Deployment, its HPA (floor 1) and its Service (to
    the sidecar's port, as a team that opts into chaos points it)."""
    labels = {contract.APP_NAME_LABEL: name}
    env = [{"name": "UPSTREAM", "value": f"http://{CHAIN[name]}.{NAMESPACE}.svc/"}] if name in CHAIN else []
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "app", "image": HELLO_IMAGE, "imagePullPolicy": "Never", "env": env,
                "ports": [{"name": "http", "containerPort": 8080}],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}},
    }
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": name, "namespace": NAMESPACE},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": 1, "maxReplicas": 10,
                    "metrics": [{"type": "Resource", "resource": {
                        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NAMESPACE},
               "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": SIDECAR_PORT}]}}
    return [deployment, hpa, service]


@dataclass
class Rehearsal:
    """What a rehearsal's ChaosExperiment ended with, and what the load generator saw during
    it (through frontend, and at payments' own sidecar: the injected fault itself) and after
    the rollback (until every request succeeded quickly again, or a minute)."""

    status: dict[str, Any]
    during: LoadStats
    at_target: LoadStats
    after: LoadStats
    faults_left: list[str]


@dataclass
class Shop:
    cluster: LocalCluster
    prometheus: LocalPrometheus
    node: str
    image_sizes: dict[str, int]
    peak_at: datetime
    #: Where whole pod logs go when a step fails (``$INSTALL_TEST_LOGS``), else only their tails.
    logs: Path | None = None

    # --- talking to the cluster ----------------------------------------------------------------

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, check=check, input=input)

    def get(self, *args: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json").stdout)
        return found

    def apply(self, *objects: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))

    def wait(self, what: str, check: Callable[[], T | None], timeout: float = 180.0) -> T:
        """``check()`` every second until it returns something true; else StoryError with what
        the cluster shows. A check that raises is tried again (the object may not exist yet)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except Exception as error:  # shown in the error if it persists
                last = error
            else:
                if last:
                    found: T = last
                    return found
            time.sleep(1.0)
        raise StoryError(f"{what}: not within {timeout:.0f}s (last: {last!r})\n{self.diagnose()}")

    def diagnose(self) -> str:
        """What went on, for a failure: pods, Events, each pod's last log lines."""
        pods = self.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
        events = self.kubectl("get", "events", "-A", "--sort-by=.lastTimestamp", check=False).stdout
        tails = []
        for namespace in ("harbinger-system", NAMESPACE):
            listed = self.kubectl("get", "pods", "-n", namespace, "-o", "json", check=False)
            for pod in json.loads(listed.stdout or '{"items": []}')["items"]:
                name = pod["metadata"]["name"]
                out = self.kubectl("logs", "-n", namespace, name, "--all-containers", check=False)
                if self.logs:
                    self.logs.mkdir(parents=True, exist_ok=True)
                    (self.logs / f"{namespace}_{name}.log").write_text(out.stdout + out.stderr)
                tail = "\n".join((out.stdout + out.stderr).splitlines()[-15:])
                tails.append(f"--- {namespace}/{name}\n{tail}")
        return f"{pods}\n{events[-6000:]}\n" + "\n".join(tails)[-12000:]

    def harbinger(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The ``harbinger`` command, as a user runs it against this cluster."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARBINGER_")}
        argv = [sys.executable, "-m", "harbinger.cli", *args, f"--kubeconfig={self.cluster.kubeconfig}"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)

    # --- the story -----------------------------------------------------------------------------

    def components_ready(self) -> dict[str, Any]:
        """The cert Job done, every component's Deployment available; the webhook configuration."""
        self.wait("the certificate Job completed", lambda: self.get(
            "job", "harbinger-webhook-certs", "-n", "harbinger-system")["status"].get("succeeded"))
        for name in COMPONENTS:
            self.wait(f"Deployment {name} available", functools.partial(self.available, name))
        return self.get("mutatingwebhookconfiguration", "harbinger-webhook")

    def available(self, deployment: str) -> bool:
        return bool(self.get("deployment", deployment, "-n", "harbinger-system")["status"].get("availableReplicas"))

    def deploy_and_train(self) -> dict[str, dict[str, Any]]:
        """The opted-in namespace, its policy and three services; a training Job from the
        shipped CronJob. The stored model of each service, by name."""
        self.kubectl("create", "namespace", NAMESPACE)
        self.kubectl("label", "namespace", NAMESPACE, f"{contract.ENABLED_LABEL}={contract.ENABLED_VALUE}",
                     f"{contract.CHAOS}={contract.CHAOS_ENABLED}")
        self.apply(POLICY, *(obj for name in SERVICES for obj in application(name)))
        self.kubectl("create", "job", "train-now", "--from=cronjob/harbinger-train", "-n", "harbinger-system")
        self.wait("the training Job completed", lambda: self.get(
            "job", "train-now", "-n", "harbinger-system")["status"].get("succeeded"), timeout=300)
        return {service: self.get("configmap", f"model-{NAMESPACE}-{service}", "-n", "harbinger-system")
                for service in SERVICES}

    def stamped_pod(self, service: str = "frontend") -> dict[str, Any]:
        """A live pod of ``service`` that the webhook stamped with its model's forecast, Ready
        with its chaos sidecar (pods admitted before the webhook had the model are replaced)."""
        selector = f"{contract.APP_NAME_LABEL}={service}"

        def stamped() -> dict[str, Any] | None:
            pod: dict[str, Any]
            for pod in self.get("pods", "-n", NAMESPACE, "-l", selector)["items"]:
                if contract.MODEL_VERSION in pod["metadata"].get("annotations", {}) \
                        and not pod["metadata"].get("deletionTimestamp"):
                    return pod
            self.kubectl("delete", "pods", "-n", NAMESPACE, "-l", selector, "--wait=false")
            time.sleep(3)
            return None

        pod = self.wait(f"a {service} pod stamped with its forecast", stamped)
        name = pod["metadata"]["name"]
        self.wait(f"pod {name} Ready with its chaos sidecar", lambda: all(
            c.get("ready") for c in self.get("pod", name, "-n", NAMESPACE)["status"].get("containerStatuses", [])))
        return pod

    @contextmanager
    def roomy_node(self) -> Iterator[str]:
        """A KWOK node with far more CPU and memory than the real node, which the default
        scheduler prefers, and almost no bandwidth; the real node is labelled with 10G."""
        self.kubectl("label", "node", self.node, f"{contract.NODE_BANDWIDTH}=10G", "--overwrite")
        roomy = {"apiVersion": "v1", "kind": "Node",
                 "metadata": {"name": "roomy", "labels": {contract.NODE_BANDWIDTH: "1", "type": "kwok",
                                                          "kubernetes.io/hostname": "roomy"}},
                 "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"}}}
        self.apply(roomy)
        try:
            self.wait("the roomy node Ready and schedulable", self._roomy_ready)
            yield "roomy"
        finally:
            self.kubectl("delete", "node", "roomy", "--ignore-not-found")
            self.kubectl("delete", "pod", "plain", "-n", "default", "--ignore-not-found", "--wait=false")

    def _roomy_ready(self) -> bool:
        """Ready, and without the not-ready taint, which the node lifecycle controller removes
        only after it sees the Ready condition (until then the pod would go elsewhere)."""
        node = self.get("node", "roomy")
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
        return ready and not any(t.get("effect") in {"NoSchedule", "NoExecute"}
                                 for t in node["spec"].get("taints", []))

    def default_placement(self) -> str:
        """Where the default scheduler binds a pod of no service."""
        plain = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain", "namespace": "default"},
                 "spec": {"containers": [{"name": "c", "image": HELLO_IMAGE, "imagePullPolicy": "Never"}]}}
        self.apply(plain)
        node: str = self.wait("the plain pod bound", lambda: self.get("pod", "plain", "-n", "default")[
            "spec"].get("nodeName"))
        self.kubectl("delete", "pod", "plain", "-n", "default", "--wait=false")
        return node

    def warmup_pod(self, service: str = "frontend") -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """``service``'s pods enter a warm-up window (as the planner writes it before a peak):
        the rollout's new pods are stamped for harbinger-scheduler. A bound warm-up pod, and
        the Events about it."""
        now = datetime.now(UTC)
        window = {contract.WARMUP_FROM: format_time(now - timedelta(minutes=5)),
                  contract.WARMUP_UNTIL: format_time(now + timedelta(hours=1))}
        self.kubectl("patch", "deployment", service, "-n", NAMESPACE, "--type=merge", "-p",
                     json.dumps({"spec": {"template": {"metadata": {"annotations": window}}}}))

        def placed() -> dict[str, Any] | None:
            pod: dict[str, Any]
            for pod in self.pods(service):
                if pod["metadata"].get("annotations", {}).get(contract.WARMUP) == "true" \
                        and pod["spec"].get("nodeName"):
                    return pod
            return None

        pod = self.wait(f"a warm-up pod of {service} bound", placed)
        events = self.get("events", "-n", NAMESPACE, "--field-selector",
                          f"involvedObject.name={pod['metadata']['name']}")
        return pod, events["items"]

    def pods(self, service: str) -> list[dict[str, Any]]:
        """The pods of one of the shop's services, as the API lists them."""
        items: list[dict[str, Any]] = self.get("pods", "-n", NAMESPACE, "-l",
                                               f"{contract.APP_NAME_LABEL}={service}")["items"]
        return items

    def ready_pods(self, service: str) -> list[dict[str, Any]] | None:
        """Every live pod of ``service``, once all are Ready with their sidecars."""
        found = [p for p in self.pods(service)
                 if p["metadata"].get("deletionTimestamp") is None]
        ready = [p for p in found if p["status"].get("podIP")
                 and all(c.get("ready") for c in p["status"].get("containerStatuses", []))
                 and any(c["name"] == contract.CHAOS_SIDECAR_NAME for c in p["spec"]["containers"])]
        return ready if ready and len(ready) == len(found) else None

    async def rehearse(self, experiment: dict[str, Any]) -> Rehearsal:
        """A declared ChaosExperiment while a load generator sends 10 requests a second through
        frontend's sidecar (and 5 to a payments pod's own); then requests until all succeed
        within half a second."""
        pods = {name: await asyncio.to_thread(self.wait, f"{name}'s pods Ready with their sidecars",
                                               lambda name=name: self.ready_pods(name))
                for name in SERVICES}
        # Prometheus scrapes every sidecar (the host routes to the node's pods), one job per
        # service: what the chaos controller's steady-state queries select by default. Pods
        # started later (a floor raised, a pod replaced) are added as they come: a baseline
        # read from replaced pods alone once found "no traffic" for checkout.
        await asyncio.to_thread(self._scrape_running_pods)
        scraping = asyncio.create_task(self._keep_scraping())
        entry = f"http://{pods['frontend'][0]['status']['podIP']}:{SIDECAR_PORT}/"

        name = experiment["metadata"]["name"]

        def finished() -> dict[str, Any] | None:
            status: dict[str, Any] = self.get("chaosexperiments.harbinger.io", name, "-n", NAMESPACE).get("status", {})
            return status if status.get("phase") in ENDED else None

        target = f"http://{pods['payments'][0]['status']['podIP']}:{SIDECAR_PORT}/"
        try:
            async with LoadGenerator(entry, rate=10, max_seconds=400) as during, \
                    LoadGenerator(target, rate=5, max_seconds=400) as at_target:
                await asyncio.sleep(20)  # steady traffic first: the controller measures its baseline after this
                await asyncio.to_thread(self.apply, experiment)
                status = await asyncio.to_thread(self.wait, "the rehearsal finished", finished, 400)
        finally:
            scraping.cancel()
        # Every payments pod there is now (one may have been replaced meanwhile).
        faults = [f"{pod['metadata']['name']}: {key}"
                  for pod in self.pods("payments")
                  for key in pod["metadata"].get("annotations", {}) if key.startswith(contract.CHAOS_PREFIX + "fault")]
        # The sidecars see the fault gone at the kubelet's next sync of their pods (downward API).
        for _ in range(12):
            async with LoadGenerator(entry, rate=10, max_seconds=6) as after:
                await asyncio.sleep(5)
            if set(after.stats.by_status) == {200} and (after.stats.slowest or 1.0) < 0.5:
                break
        return Rehearsal(status, during.stats, at_target.stats, after.stats, faults)

    def _scrape_running_pods(self) -> None:
        """A scrape target for each running pod of the shop (added once, however often seen)."""
        for name in SERVICES:
            for pod in self.pods(name):
                if pod["status"].get("podIP") and pod["status"].get("phase") == "Running":
                    self.prometheus.add_target(name, f"{pod['status']['podIP']}:{SIDECAR_METRICS_PORT}")

    async def _keep_scraping(self) -> None:
        while True:
            await asyncio.sleep(2)
            await asyncio.to_thread(self._scrape_running_pods)

    def plans(self) -> dict[str, dict[str, Any]]:
        """Every service's CapacityPlan once each has a forecast and a floor; the HPAs' floors
        then follow the plans."""
        def planned() -> dict[str, dict[str, Any]] | None:
            found = {p["metadata"]["name"]: p for p in self.get("capacityplans.harbinger.io", "-n", NAMESPACE)["items"]
                     if p.get("status", {}).get("forecast") and p["status"].get("plannedReplicas")}
            return found if set(found) >= set(SERVICES) else None

        found = self.wait("a CapacityPlan with a forecast and a floor for every service", planned, timeout=240)

        def applied() -> bool:
            plans = {p["metadata"]["name"]: p["status"].get("plannedReplicas", 0)
                     for p in self.get("capacityplans.harbinger.io", "-n", NAMESPACE)["items"]}
            return all(self.get("hpa", name, "-n", NAMESPACE)["spec"]["minReplicas"] == max(1, plans[name])
                       for name in SERVICES)

        self.wait("the HPAs' floors at the plans'", applied, timeout=120)
        return found

    def floor_raises(self, service: str = "frontend", *, to_at_least: int) -> list[tuple[datetime, int, int]]:
        """The planner's FloorRaised Events on ``service`` (when, from, to), once one has raised
        its floor to ``to_at_least`` or more; waits until a minute past the scripted peak's top."""
        def raises() -> list[tuple[datetime, int, int]] | None:
            events = self.get("events", "-n", NAMESPACE, "--field-selector",
                              f"involvedObject.name={service},reason=FloorRaised")["items"]
            found = []
            for event in events:
                match = FLOOR_CHANGE.search(event.get("message", ""))
                stamp = event.get("eventTime") or event.get("firstTimestamp") or event["metadata"]["creationTimestamp"]
                if match:
                    found.append((parse_time(stamp, what=f"Event {event['metadata']['name']}"),
                                  int(match.group(1)), int(match.group(2))))
            return sorted(found) if any(after >= to_at_least for _, _, after in found) else None

        timeout = max((self.peak_at - datetime.now(UTC)).total_seconds() + 60, 30)
        return self.wait(f"{service}'s floor raised to {to_at_least} or more by its peak's top at "
                         f"{self.peak_at:%H:%M:%S}", raises, timeout=timeout)

    def uninstall(self) -> subprocess.CompletedProcess[str]:
        return self.harbinger("uninstall")

    def delete_manifests(self) -> subprocess.CompletedProcess[str]:
        """``kubectl delete -k manifests/`` as documented (after ``harbinger uninstall`` the
        webhook configuration is already gone)."""
        return self.kubectl("delete", "-k", str(MANIFESTS), "--ignore-not-found", "--wait=true", "--timeout=180s",
                            check=False)


@contextmanager
def installed_shop(work: Path, peak_in: timedelta, logs: Path | None = None) -> Iterator[Shop]:
    """Harbinger's images built (cached after the first run), Prometheus with the shop's
    history, the local cluster with one real node ready for the manifests, and
    ``kubectl apply -k manifests/`` as a user runs it. Everything stops on leaving."""
    images = installable_images(work / "images", Path(find_binaries()["kube-scheduler"]))
    # After the images (minutes on a first run): the scripted peak is timed from the history.
    now = datetime.now(UTC)
    peak_at = (now + peak_in).replace(second=0, microsecond=0)
    # The history runs AHEAD past now: live scrapes older than its end are out-of-order samples.
    window = f"{int(AHEAD.total_seconds()) + 3600}s"
    with LocalPrometheus(retention="60d", openmetrics=history(now, peak_at), out_of_order_window=window) \
            as prometheus, LocalCluster(real_nodes=1, hpa_sync_seconds=2) as cluster:
        node = cluster.real_nodes[0]
        ready_for_manifests(cluster, prometheus, images)
        applied = cluster.kubectl("apply", "-k", str(MANIFESTS), check=False)
        if applied.returncode != 0:
            raise StoryError(f"kubectl apply -k manifests/ failed: {applied.stderr.strip()}")
        yield Shop(cluster, prometheus, node.name, {image.name: unpacked_size(image) for image in images}, peak_at,
                   logs)
