"""The shop the demo runs: three services, their traffic, profiles, graph, nodes and a
declared campaign. Everything the story creates is described here, as data.

Traffic is a real recorded trace (the AWS ELB request counts shipped in
``../shared/data/traces``), scaled per service: the demo replays its last days on the
replay clock, so a day of traffic passes in minutes while every component runs for real.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from harbinger import contract
from harbinger.clock import parse_time

TRACE = "elb_request_count_8c0756.csv"
#: Trace time at which the replay starts: a Monday morning, before the day's peak (the
#: trace's traffic climbs from about 11:00 UTC). Training sees only what came before.
REPLAY_START = datetime(2014, 4, 21, 9, 0, tzinfo=UTC)
NAMESPACE = "shop"


@dataclass(frozen=True)
class Service:
    name: str
    #: The trace's counts times this, so the three services differ in size.
    scale: float
    profile: dict[str, Any]
    calls: tuple[str, ...] = ()


SERVICES = (
    Service("frontend", 60.0, {"rps_per_replica": 12, "bytes_per_request": 2_000_000, "warmup_seconds": 900,
                               "min_replicas": 1, "max_replicas": 12, "headroom": 0.2}, calls=("checkout",)),
    Service("checkout", 40.0, {"rps_per_replica": 10, "bytes_per_request": 1_500_000, "warmup_seconds": 900,
                               "min_replicas": 1, "max_replicas": 12, "headroom": 0.2}, calls=("payments",)),
    # The bottleneck: small replicas, and everything upstream depends on it.
    Service("payments", 30.0, {"rps_per_replica": 4, "bytes_per_request": 1_000_000, "warmup_seconds": 900,
                               "min_replicas": 1, "max_replicas": 12, "headroom": 0.2}),
)

#: Nodes of very different network bandwidth: warm-up pods must avoid the thin one.
NODES = {
    "node-a": {"bandwidth": "10G", "zone": "zone-a"},
    "node-b": {"bandwidth": "2G", "zone": "zone-b"},
    "node-c": {"bandwidth": "100M", "zone": "zone-c"},
}
#: Room for 12 pods in all: less than the three services' plans need at the peak, so the
#: planner must choose, bottleneck first.
NODE_PODS = 4

#: A campaign the team declared: checkout traffic up by half in the afternoon.
EVENTS = [{"name": "spring-campaign", "services": ["frontend", "checkout", "payments"],
           "start": "2014-04-21T15:00:00Z", "end": "2014-04-21T19:00:00Z", "multiplier": 1.5}]


def write_inputs(workdir: Path, trace_path: Path) -> dict[str, Path]:
    """Per-service trace CSVs (full, for the replayed history; and cut at the replay start,
    for training), the profiles, the graph and the events, as files the CLIs read."""
    workdir.mkdir(parents=True, exist_ok=True)
    rows = list(csv.reader(trace_path.open()))[1:]
    paths: dict[str, Path] = {}
    for service in SERVICES:
        full, history = workdir / f"{service.name}.csv", workdir / f"{service.name}-training.csv"
        with full.open("w", newline="") as whole, history.open("w", newline="") as cut:
            writers = csv.writer(whole), csv.writer(cut)
            for writer in writers:
                writer.writerow(["timestamp", "value"])
            for stamp, value in rows:
                scaled = f"{float(value) * service.scale:.1f}"
                writers[0].writerow([stamp, scaled])
                if parse_time(stamp, what="trace timestamp") < REPLAY_START:
                    writers[1].writerow([stamp, scaled])
        paths[f"{service.name}-trace"] = full
        paths[f"{service.name}-training"] = history
    paths["profiles"] = workdir / "profiles.yaml"
    paths["profiles"].write_text(yaml.safe_dump({"services": {s.name: s.profile for s in SERVICES}}))
    paths["graph"] = workdir / "graph.yaml"
    paths["graph"].write_text(yaml.safe_dump({
        "services": [s.name for s in SERVICES],
        "edges": [{"from": s.name, "to": callee} for s in SERVICES for callee in s.calls],
    }))
    paths["events"] = workdir / "events.yaml"
    paths["events"].write_text(yaml.safe_dump({"events": EVENTS}))
    return paths


def node_body(name: str) -> dict[str, Any]:
    spec = NODES[name]
    allocatable = {"cpu": "16", "memory": "64Gi", "pods": str(NODE_PODS)}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            contract.NODE_BANDWIDTH: spec["bandwidth"], contract.ZONE_LABEL: spec["zone"],
            "type": "kwok", "kubernetes.io/hostname": name}},
        "status": {"allocatable": allocatable, "capacity": allocatable},
    }


def deployment_body(service: Service) -> dict[str, Any]:
    labels = {contract.APP_NAME_LABEL: service.name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": service.name, "labels": labels, "annotations": {
            contract.RESOURCES: contract.RESOURCES_FORECAST,
            contract.CAPACITY_PROFILE: json.dumps(service.profile),
        }},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                "name": "app", "image": f"example.invalid/shop/{service.name}:1",
                "ports": [{"containerPort": 8080}],
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "4", "memory": "4Gi"}},
            }]}},
        },
    }


def hpa_body(service: Service) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": service.name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": service.name},
            "minReplicas": int(service.profile["min_replicas"]), "maxReplicas": int(service.profile["max_replicas"]),
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}],
        },
    }


def namespace_body() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {contract.ENABLED_LABEL: contract.ENABLED_VALUE}}}


def shop_manifest() -> str:
    """Everything the shop's team applies, as one multi-document YAML."""
    objects = [node_body(name) for name in NODES] + [namespace_body()]
    for service in SERVICES:
        for body in (deployment_body(service), hpa_body(service)):
            body["metadata"]["namespace"] = NAMESPACE
            objects.append(body)
    return yaml.safe_dump_all(objects, sort_keys=False)
