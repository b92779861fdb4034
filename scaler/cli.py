"""``harbinger plan`` and ``harbinger simulate``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from pathlib import Path

from aiohttp import web

from harbinger.clock import SystemClock, clock_from_spec
from harbinger.errors import InvalidInput
from harbinger.httpserver import add_standard_routes, serve
from harbinger.kube import api_client
from harbinger.settings import Settings, load_settings
from models.traffic import history_source
from scaler.controller import Planner
from scaler.forecasting import ModelForecasts
from scaler.headroom import ShortTermFloors
from scaler.inputs import PlannerInputs, PrometheusEdges, load_inputs
from scaler.leader import LeaderElector

log = logging.getLogger(__name__)


# --- harbinger plan --------------------------------------------------------------------
def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", type=Path, help="kubeconfig (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    parser.add_argument("--interval", type=float, metavar="S", help="seconds between planner runs (default 60)")
    parser.add_argument("--no-short-horizon", action="store_true",
                        help="plan floors from the forecaster's plan only, not from the short-horizon "
                             "forecast and the policy learned from each service's history (docs/scaling.md)")
    parser.add_argument("--forecast-only", action="store_true",
                        help="compute and record plans (log, metrics), change nothing on the cluster")
    parser.add_argument("--profiles", type=Path, metavar="YAML", help="capacity profiles {defaults, services}")
    parser.add_argument("--graph", type=Path, metavar="YAML", help="service dependency graph {services, edges}")
    parser.add_argument("--graph-prometheus", metavar="URL",
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
    overrides = {key: value for key, value in {
        "interval_seconds": args.interval,
        "forecast_only": True if args.forecast_only else None,
        "models_dir": args.models_dir,
        "metrics_port": args.metrics_port,
        "graph_prometheus_url": args.graph_prometheus,
        "short_horizon": False if args.no_short_horizon else None,
    }.items() if value is not None}
    base = load_settings()
    history = base.history.model_dump()
    if args.prometheus_url:
        history["prometheus_url"] = args.prometheus_url
    if args.history_trace:
        history["traces"] = args.history_trace
    all_settings = load_settings(planner=base.planner.model_copy(update=overrides).model_dump(),
                                 kube=base.kube.model_dump(), history=history)
    # Bad files are refused here, before the planner talks to the cluster at all.
    inputs = load_inputs(args.profiles, args.graph, args.events)
    return asyncio.run(_plan(args, all_settings, inputs, args.kubeconfig or all_settings.kube.kubeconfig))


async def _plan(args: argparse.Namespace, all_settings: Settings, inputs: PlannerInputs,
                kubeconfig: Path | None) -> int:
    settings = all_settings.planner
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    # The wall clock, or trace time in a rehearsal (HARBINGER_REPLAY_CLOCK).
    clock = clock_from_spec(all_settings.replay_clock)
    async with api_client(kubeconfig) as api:
        # The Lease is about which live process acts: always wall-clock time, even when the
        # plan runs on trace time.
        elector = LeaderElector(api, name=settings.lease_name, namespace=settings.lease_namespace,
                                identity=identity, duration_seconds=settings.lease_duration_seconds,
                                clock=SystemClock())
        history = history_source(all_settings.history, all_settings.prometheus)
        forecasts = ModelForecasts(settings.models_dir, history,
                                   lookback_seconds=all_settings.history.lookback_seconds, events=inputs.events)
        edges = (PrometheusEdges(settings.graph_prometheus_url, settings.graph_query, settings.graph_window_seconds)
                 if settings.graph_prometheus_url else None)
        planner = Planner(api, forecasts=forecasts, clock=clock, inputs=inputs,
                          stabilization_seconds=settings.stabilization_seconds,
                          forecast_only=settings.forecast_only, elector=elector, identity=identity,
                          history=history, graph_edges=edges,
                          short_term=ShortTermFloors(history) if settings.short_horizon else None)
        if args.once:
            if not settings.forecast_only:
                await elector.try_acquire_or_renew()
            try:
                report = await planner.run_once()
            finally:
                await elector.release()
            print(json.dumps({
                "outcome": report.outcome,
                # As the plan annotation shows it, learned profile values included.
                "plans": {s: {**p.annotation(report.allocation.granted.get(s, report.floors[s])
                                             if report.allocation else report.floors[s]),
                              "learned": report.learned.get(s) or {}}
                          for s, p in report.plans.items()},
                "changes": [c.__dict__ for c in report.changes],
            }, indent=2, default=str))
            return 0

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        app = web.Application()
        add_standard_routes(app, ready=lambda: planner.runs > 0)
        tasks = [
            asyncio.create_task(serve(app, host=settings.metrics_host, port=settings.metrics_port, stop=stop)),
            asyncio.create_task(planner.run(stop, settings.interval_seconds)),
        ]
        if not settings.forecast_only:
            tasks.append(asyncio.create_task(elector.run(stop)))
        try:
            await asyncio.gather(*tasks)
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
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
