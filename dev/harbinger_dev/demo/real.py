"""``python -m harbinger_dev.demo [--out DIR] [--peak-in MINUTES]`` (``make demo``): the
Harbinger story on a real install, told step by step.

1. Harbinger's images built without Docker, a local cluster with a real node, Prometheus
   with four weeks of a shop's traffic; ``kubectl apply -k manifests/`` as shipped.
2. Every component comes up as a pod.
3. The shop (frontend -> checkout -> payments) in an opted-in namespace; the shipped CronJob
   trains a model for each service from Prometheus.
4. The webhook stamps new pods with their forecast and injects the chaos sidecar.
5. Warm-up pods are placed by harbinger-scheduler where the bandwidth is.
6. Chaos rehearsals fail, then delay, real requests, breach the SLO and roll back.
7. The planner raises frontend's floor before its scripted daily peak; then ``harbinger uninstall``
   and ``kubectl delete -k manifests/`` leave nothing behind.

``--replay`` tells the older, faster story instead: a recorded day at 180x on a replay clock,
with KWOK nodes and Harbinger's components as host processes (``harbinger_dev.demo.story``).
Progress is printed as it happens; ``OUT/summary.json`` records what happened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harbinger import contract
from harbinger_dev.chaosdemo import LoadStats
from harbinger_dev.demo import story
from harbinger_dev.demo.shop import (
    ERRORS,
    LATENCY,
    NAMESPACE,
    PEAK_NEED,
    PEAK_RAMP,
    SERVICES,
    Shop,
    installed_shop,
)

STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


async def tell(shop: Shop) -> dict[str, Any]:
    """The steps after the install, each printed as it happens; what was seen, for summary.json."""
    seen: dict[str, Any] = {"images": {name: mib(size) for name, size in shop.image_sizes.items()}}
    say("2/7 every component comes up as a pod")
    shop.components_ready()
    for line in shop.kubectl("get", "pods", "-n", "harbinger-system").stdout.splitlines():
        say(f"    {line}")

    say(f"3/7 the shop in namespace {NAMESPACE} ({contract.ENABLED_LABEL}={contract.ENABLED_VALUE}): "
        f"{', '.join(SERVICES)}; the CronJob harbinger-train, run now, trains each from Prometheus")
    models = shop.deploy_and_train()
    seen["models"] = {}
    for service, stored in models.items():
        annotations = stored["metadata"]["annotations"]
        seen["models"][service] = annotations[contract.MODEL_VERSION]
        say(f"  {service:9s} model {annotations[contract.MODEL_VERSION]} in ConfigMap "
            f"harbinger-system/{stored['metadata']['name']}")

    say("4/7 the webhook (called by the apiserver through its Service) stamps a new frontend pod")
    pod = shop.stamped_pod("frontend")
    annotations = pod["metadata"]["annotations"]
    requests = pod["spec"]["containers"][0].get("resources", {}).get("requests", {})
    sidecar = next(c["image"] for c in pod["spec"]["containers"] if c["name"] == contract.CHAOS_SIDECAR_NAME)
    say(f"  {pod['metadata']['name']}: predicted {float(annotations[contract.PREDICTED_TPS]):.1f} req/s by model "
        f"{annotations[contract.MODEL_VERSION]}, egress {annotations.get(contract.EGRESS_BANDWIDTH)}, "
        f"cpu {requests.get('cpu')}, memory {requests.get('memory')}; sidecar {sidecar}")
    seen["stamped"] = {"pod": pod["metadata"]["name"], **{k: v for k, v in annotations.items()
                                                          if k.startswith(contract.PREFIX)}}

    say("5/7 warm-up pods go where the bandwidth is")
    with shop.roomy_node() as roomy:
        plain = shop.default_placement()
        say(f"  a plain pod: the default scheduler binds it to {plain}"
            + (" (64 CPUs, almost no bandwidth)" if plain == roomy else ""))
        warm, _ = shop.warmup_pod("frontend")
    egress = warm["metadata"]["annotations"].get(contract.EGRESS_BANDWIDTH)
    say(f"  frontend's warm-up pod {warm['metadata']['name']}: {warm['spec']['schedulerName']} binds it to "
        f"{warm['spec']['nodeName']} (bandwidth 10G; its egress {egress})")
    seen["placement"] = {"plain": plain, "warmup": warm["spec"]["nodeName"]}

    say("6/7 rehearsals in payments under 10 req/s of real requests to frontend: errors (1 %, then 60 %), "
        "then latency (20 ms, then 2.5 s); SLO at its callers: errors <= 10 %, p99 <= 1 s")
    seen["rehearsals"] = {}
    for experiment in (ERRORS, LATENCY):
        name = experiment["metadata"]["name"]
        rehearsal = await shop.rehearse(experiment)
        status = rehearsal.status
        breach = status.get("breach") or {}
        rollback = status.get("rollback") or {}
        say(f"  ChaosExperiment {name}: {status.get('phase')}"
            + (f" at {breach.get('service')}" if breach else "") + f"; rolled back ({rollback.get('reason')})")
        say(f"    the load generator during it: {_answers(rehearsal.during)} (at payments' own sidecar: "
            f"{_answers(rehearsal.at_target)}); after the rollback: {_answers(rehearsal.after)}")
        seen["rehearsals"][name] = {"phase": status.get("phase"), "breach": breach,
                                    "faults_left": rehearsal.faults_left, "during": rehearsal.during.by_status,
                                    "at_payments": rehearsal.at_target.by_status,
                                    "after": rehearsal.after.by_status}

    say(f"7/7 the planner: a CapacityPlan per Deployment; frontend's daily peak (4x, from "
        f"{shop.peak_at - PEAK_RAMP:%H:%M} UTC) is learned from the days before")
    shop.plans()
    for line in shop.kubectl("get", "capacityplans", "-n", NAMESPACE).stdout.splitlines():
        say(f"    {line}")
    raises = shop.floor_raises("frontend", to_at_least=PEAK_NEED)
    jump = shop.peak_at - PEAK_RAMP
    for at, before, after in raises:
        say(f"  frontend's floor raised {before} -> {after} at {at:%H:%M:%S}, "
            f"{(jump - at) / timedelta(minutes=1):.1f} min before the jump")
    seen["raised"] = [{"at": at.isoformat(), "from": before, "to": after} for at, before, after in raises]

    say("uninstall: harbinger uninstall, then kubectl delete -k manifests/ --ignore-not-found")
    result = shop.uninstall()
    for line in (result.stdout + result.stderr).strip().splitlines():
        say(f"    {line}")
    floors = {service: shop.get("hpa", service, "-n", NAMESPACE)["spec"]["minReplicas"] for service in SERVICES}
    deleted = shop.delete_manifests()
    say(f"  HPA floors back to {floors}; delete -k exited {deleted.returncode}")
    seen["uninstall"] = {"exit": result.returncode, "floors": floors, "delete_exit": deleted.returncode}
    return seen


def _answers(stats: LoadStats) -> str:
    slowest = stats.slowest
    return (", ".join(f"{count} x {status or 'no answer'}" for status, count in sorted(stats.by_status.items()))
            + (f", slowest {slowest:.2f}s" if slowest is not None else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harbinger_dev.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="where summary.json goes")
    parser.add_argument("--peak-in", type=float, default=9.0, metavar="MINUTES",
                        help="minutes from the install to the top of frontend's scripted peak (default 9; the "
                             "planner raises the floor about four minutes before it)")
    parser.add_argument("--replay", action="store_true",
                        help="the replay story instead (KWOK nodes, host processes, a recorded day at 180x)")
    parser.add_argument("--fast", action="store_true", help="with --replay: a faster clock (its own test)")
    args = parser.parse_args(argv)
    if args.replay:
        return story.main(["--out", str(args.out), *(["--fast"] if args.fast else [])])
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    say("1/7 Harbinger's images (built without Docker, cached after the first run), Prometheus with 29 days of "
        "the shop's traffic, a local cluster with a real node; kubectl apply -k manifests/")
    with installed_shop(out / "work", timedelta(minutes=args.peak_in)) as shop:
        say(f"  images loaded into node {shop.node}: "
            + ", ".join(f"{name} {mib(size)}" for name, size in shop.image_sizes.items()))
        seen = asyncio.run(tell(shop))
    seen["wall_seconds"] = round(time.monotonic() - STARTED, 1)
    seen["finished"] = datetime.now(UTC).isoformat()
    (out / "summary.json").write_text(json.dumps(seen, indent=2, default=str))
    say(f"done in {seen['wall_seconds']}s; the cluster and Prometheus are stopped; summary: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
