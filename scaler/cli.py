"""``harbinger plan`` and ``harbinger simulate``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path

from harbinger.errors import InvalidInput
from harbinger.flags import KUBE_FLAGS, add_kube_flags
from harbinger.settings import settings_from_flags
from scaler.inputs import load_inputs
from scaler.run import plan_once, run_planner

log = logging.getLogger(__name__)


# --- harbinger plan --------------------------------------------------------------------
def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    add_kube_flags(parser)
    parser.add_argument("--interval", type=float, metavar="S", help="seconds between planner runs (default 60)")
    parser.add_argument("--no-short-horizon", action="store_true",
                        help="plan floors from the forecaster's plan only, not from the short-horizon "
                             "forecast and the policy learned from each service's history (docs/scaling.md)")
    parser.add_argument("--forecast-only", action="store_true",
                        help="compute and record plans (log, metrics), change nothing on the cluster")
    parser.add_argument("--profiles", type=Path, metavar="YAML", help="capacity profiles {defaults, services}")
    parser.add_argument("--graph", type=Path, metavar="YAML", help="service dependency graph {services, edges}")
    parser.add_argument("--graph-from-prometheus", metavar="URL",
                        help="also derive the graph every run from istio_requests_total caller -> callee "
                             "workloads at this Prometheus")
    parser.add_argument("--events", type=Path, metavar="YAML", help="scheduled events for the forecasters")
    parser.add_argument("--models-dir", type=Path, metavar="DIR", help="trained forecasters, one directory per service")
    parser.add_argument("--prometheus-url", help="where the request-rate history comes from")
    parser.add_argument("--history-trace", action="append", metavar="SERVICE=CSV[*SCALE]",
                        help="rehearsals: read SERVICE's traffic from a recorded trace instead of Prometheus "
                             "(repeatable; use with HARBINGER_REPLAY_CLOCK)")
    parser.add_argument("--metrics-port", type=int, help="port of /metrics, /healthz, /readyz (default 8080)")
    parser.add_argument("--once", action="store_true",
                        help="one run (taking the Lease if it is free), print the plans as JSON, exit")


def run_plan(args: argparse.Namespace) -> int:
    settings = settings_from_flags(args, {
        "interval": "planner.interval_seconds", "models_dir": "planner.models_dir",
        "metrics_port": "planner.metrics_port", "graph_from_prometheus": "planner.graph_prometheus_url",
        "prometheus_url": "history.prometheus_url", "history_trace": "history.traces", **KUBE_FLAGS,
    })
    changes: dict[str, bool] = {}
    if args.forecast_only:
        changes["forecast_only"] = True
    if args.no_short_horizon:
        changes["short_horizon"] = False
    settings = settings.model_copy(update={"planner": settings.planner.model_copy(update=changes)})
    # Bad files are refused here, before the planner talks to the cluster at all.
    inputs = load_inputs(args.profiles, args.graph, args.events)
    if not args.once:
        asyncio.run(run_planner(settings, inputs))
        return 0
    report = asyncio.run(plan_once(settings, inputs))
    print(json.dumps({
        "outcome": report.outcome,
        # As the plan annotation shows it, learned profile values included.
        "plans": {s: {**p.annotation(report.allocation.granted.get(s, report.floors[s])
                                     if report.allocation else report.floors[s]),
                      "learned": report.learned.get(s) or {}}
                  for s, p in report.plans.items()},
        "changes": [c.__dict__ for c in report.changes],
        "released": [c.__dict__ for c in report.released],
        # Deployments left out (namespace/name -> why); each also has a Warning Event.
        "skipped": report.skipped,
    }, indent=2, default=str))
    return 0


# --- harbinger simulate ----------------------------------------------------------------
def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trace", type=Path, required=True, metavar="CSV", help="a timestamp,value count CSV")
    parser.add_argument("--profile", type=Path, metavar="YAML",
                        help="capacity profile: a replica's capacity, warm-up, min and max "
                             "(default: sized to the trace, see docs/scaling.md)")
    parser.add_argument("--json", action="store_true",
                        help="print the HPA sweep, Harbinger and the oracle as one JSON object (the last line)")
    parser.add_argument("--plot", type=Path, metavar="PNG",
                        help="write the HPA's cost/violation curve with Harbinger's point")
    parser.add_argument("--train-fraction", type=float, default=0.7,
                        help="share of the trace the policy is learned on; the rest is scored (0.7)")
    parser.add_argument("--replay-days", type=float, help="score only this many days after the training part")
    parser.add_argument("--window", type=int, metavar="S",
                        help="the HPA's rate window in seconds (default 60, or the trace's interval when coarser)")


def run_simulate(args: argparse.Namespace) -> int:
    from harbinger.extras import require
    from scaler.simulate import SimulationSetup, plot_curve, read_profile, simulate

    if args.replay_days is not None and args.replay_days <= 0:
        raise InvalidInput(f"must be positive, got {args.replay_days}", source="--replay-days")
    if args.window is not None and (args.window <= 0 or args.window % 15):
        raise InvalidInput(f"must be a positive multiple of 15 s, got {args.window}", source="--window")
    profile = read_profile(args.profile, args.trace.stem) if args.profile else None
    result = simulate(args.trace, profile=profile,
                      setup=SimulationSetup(train_fraction=args.train_fraction, replay_days=args.replay_days,
                                            window_seconds=args.window))
    if args.plot:
        require("plots", "--plot")
        plot_curve(result, args.plot)
    summary = result.summary()
    if not args.json:
        print(f"{result.trace.name}: {result.intervals} intervals of {result.trace.interval_seconds} s scored, "
              f"a replica serves {result.service.saturation:.4g} req/s; HPA metric: "
              f"{result.window_seconds} s rate, one scrape late")
        print(f"  policy: {result.policy.basis}")
        rows = [(f"hpa@{row['target']}", row) for row in summary["hpa"]]
        rows += [(f"harbinger@{result.policy.fallback_target}", summary["harbinger"]), ("oracle", summary["oracle"])]
        for label, row in rows:
            print(f"  {label:<14} {row['violations']:7d} violations {row['replica_hours']:12.1f} replica-hours "
                  f"{100 * row['unserved_share']:8.3f} % unserved {row['changes']:8d} changes")
        return 0
    print(json.dumps(summary))
    return 0
