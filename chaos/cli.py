"""``harbinger chaos generate|run|report|controller|sweep|sidecar``.

Exit codes: 0 the run held (or the command did its work), 1 a steady state broke or the
run could not judge it, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client

from chaos.backends.base import FaultBackend
from chaos.backends.files import AnnotationsFileBackend, parse_file_mapping, sweep_files
from chaos.backends.istio import IstioBackend, sweep_virtual_services
from chaos.backends.pods import PodAnnotationBackend, sweep_pods
from chaos.experiment import BackendKind, Experiment, FaultKind, Plan, dump, load_experiments
from chaos.monitor import Monitor, Queries
from chaos.record import RunRecord, RunStatus
from chaos.report import RUN_JSON, write_report
from chaos.runner import RunConfig, run_experiment
from harbinger.clock import clock_from_spec, parse_time
from harbinger.errors import InvalidInput
from harbinger.flags import KUBE_FLAGS, add_json_flag, add_kube_flags
from harbinger.httpserver import add_standard_routes, serve
from harbinger.kube import new_api_client
from harbinger.prometheus import PrometheusClient
from harbinger.quantity import parse_nonnegative
from harbinger.settings import ChaosSettings, load_settings, settings_from_flags
from harbinger.sidecar import METRICS_PORT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="chaos_command", metavar="ACTION", required=True)

    gen = sub.add_parser("generate", help="rank experiments from the graph, failure history and forecasts")
    gen.add_argument("--graph", type=Path, help="dependency graph YAML (services, edges)")
    gen.add_argument("--graph-from-prometheus", metavar="URL",
                     help="derive the graph from istio_requests_total caller -> callee edges")
    gen.add_argument("--graph-from-virtual-services", action="store_true",
                     help="add services and caller-pinned calls from the cluster's VirtualServices")
    gen.add_argument("--profiles", type=Path, help="capacity profiles YAML (defaults, services)")
    gen.add_argument("--forecasts", type=Path, help="forecast JSON (one or a list, as 'harbinger forecast' writes)")
    gen.add_argument("--incidents", type=Path, help="incident history CSV or JSON (time, service, kind)")
    gen.add_argument("--schedule", choices=["before-peak", "low-traffic"], default="before-peak")
    gen.add_argument("--rehearsal-lead", type=float, default=600.0,
                     help="seconds between a rehearsal window's end and the peak it rehearses")
    gen.add_argument("--rehearsal-window", type=float, default=3600.0, help="length of a rehearsal window (s)")
    gen.add_argument("--backend", choices=[b.value for b in BackendKind], default=BackendKind.SIDECAR.value)
    gen.add_argument("--kinds", nargs="+", choices=[k.value for k in FaultKind],
                     help="kinds of experiment to generate (default: all)")
    gen.add_argument("--namespace", default="default")
    gen.add_argument("--max", type=int, dest="max_experiments", help="keep only the N riskiest")
    gen.add_argument("--now", help="RFC 3339 time to plan from (default: now)")
    gen.add_argument("--out", type=Path, help="write the plan here (.yaml or .json); default: stdout as YAML")
    add_kube_flags(gen)

    run = sub.add_parser("run", help="run one experiment: baseline, ramp, watch, roll back, report")
    run.add_argument("experiment", type=Path, help="experiment or plan file (YAML or JSON)")
    run.add_argument("--name", help="which experiment of a plan (default: the only, or the first)")
    run.add_argument("--forecasts", type=Path, help="forecast JSON ('harbinger forecast --out'): the report shows "
                                                    "each watched service's forecast band against its traffic")
    _run_flags(run)

    report = sub.add_parser("report", help="(re)write a run's report.json and report.html and print its summary")
    report.add_argument("run", type=Path, help="a run directory or its run.json")
    report.add_argument("--out", type=Path, help="directory for the report (default: the run's)")

    ctl = sub.add_parser("controller", help="run declared ChaosExperiments and scheduled rehearsals from a plan, "
                                            "sweeping leftover faults")
    ctl.add_argument("--plan", type=Path, help="plan file from 'chaos generate' (re-read each cycle); without it, "
                                               "only the ChaosExperiments teams declare run")
    ctl.add_argument("--once", action="store_true", help="run what is due now, then exit")
    ctl.add_argument("--cycle", type=float, help="seconds between controller cycles")
    ctl.add_argument("--metrics-port", type=int, help="serve /metrics, /healthz, /readyz on this port")
    _run_flags(ctl)

    sweep = sub.add_parser("sweep", help="remove faults left behind (expired ones, or --all)")
    sweep.add_argument("--all", action="store_true", help="every fault chaos owns, expired or not")
    sweep.add_argument("--annotations-file", action="append", default=[], metavar="SERVICE=PATH")
    add_kube_flags(sweep)
    add_json_flag(sweep)

    side = sub.add_parser("sidecar", help="the fault-injecting proxy the webhook injects next to an application")
    side.add_argument("--listen", required=True, metavar="HOST:PORT")
    side.add_argument("--upstream", required=True, metavar="HOST:PORT")
    side.add_argument("--annotations-file", required=True, type=Path)
    side.add_argument("--metrics-port", type=int, default=METRICS_PORT,
                      help="/metrics, /healthz, /readyz, on the --listen host")
    side.add_argument("--admin-port", type=int,
                      help="/fault on 127.0.0.1 (without it: on the metrics port, if that is loopback)")
    side.add_argument("--poll-seconds", type=float, default=0.2, help="how often the annotations file is re-read")
    # Platform limits on any fault (default: settings.chaos.sidecar_*, else the built-in caps).
    side.add_argument("--max-fault-seconds", type=float, help="a fault ends at most this long after it is read")
    side.add_argument("--max-delay-ms", type=float, help="longest delay a fault may add")
    side.add_argument("--max-cpu", type=float, help="most CPU cores stress may burn")
    side.add_argument("--max-memory", help="most memory stress may hold (stay below the limit)")
    side.add_argument("--min-bandwidth", help="lowest bandwidth limit (bits/s) a fault may set")
    side.add_argument("--upstream-timeout", type=float, default=30.0)


def _run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prometheus-url", help="the Prometheus that watches the services (default: settings)")
    parser.add_argument("--annotations-file", action="append", default=[], metavar="SERVICE=PATH",
                        help="local sidecars: write faults to these annotation files instead of the cluster")
    parser.add_argument("--query-preset", choices=["sidecar", "istio"])
    parser.add_argument("--selector", help="PromQL label matchers for one service, with {service}, {namespace}")
    for flag, what in (("dwell", "seconds each step is held (when the experiment does not say)"),
                       ("baseline", "seconds of steady state measured first"),
                       ("sample-interval", "seconds between samples"),
                       ("window", "PromQL rate window in seconds"),
                       ("ttl", "seconds each fault lives unless renewed"),
                       ("recovery", "seconds sampled after rollback")):
        parser.add_argument(f"--{flag}", type=float, dest=f"{flag.replace('-', '_')}_seconds", help=what)
    parser.add_argument("--reports-dir", type=Path)
    add_kube_flags(parser)


def run(args: argparse.Namespace) -> int:
    command: str = args.chaos_command
    handlers: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
        "generate": _generate, "run": _run, "report": _report, "controller": _controller, "sweep": _sweep,
        "sidecar": _sidecar,
    }
    return asyncio.run(handlers[command](args))


# --- settings ---------------------------------------------------------------------------

#: Flag attribute -> setting, shared by ``chaos run`` and ``chaos controller``.
_RUN_FLAGS = {
    "prometheus_url": "chaos.prometheus_url", "dwell_seconds": "chaos.dwell_seconds",
    "baseline_seconds": "chaos.baseline_seconds", "sample_interval_seconds": "chaos.sample_interval_seconds",
    "window_seconds": "chaos.query_window_seconds", "ttl_seconds": "chaos.fault_ttl_seconds",
    "recovery_seconds": "chaos.recovery_seconds", "reports_dir": "chaos.reports_dir",
    "query_preset": "chaos.query_preset", "selector": "chaos.query_selector",
    "cycle": "chaos.controller_interval_seconds", "metrics_port": "chaos.controller_metrics_port", **KUBE_FLAGS,
}


def _config(settings: ChaosSettings) -> RunConfig:
    return RunConfig(dwell_seconds=settings.dwell_seconds, baseline_seconds=settings.baseline_seconds,
                     sample_interval_seconds=settings.sample_interval_seconds,
                     fault_ttl_seconds=settings.fault_ttl_seconds, recovery_seconds=settings.recovery_seconds)


def _queries(settings: ChaosSettings) -> Queries:
    queries = Queries.istio() if settings.query_preset == "istio" else Queries()
    if settings.query_selector:
        if "{service}" not in settings.query_selector:
            raise InvalidInput("the selector must contain {service}", source="--selector")
        queries = queries.model_copy(update={"selector": settings.query_selector})
    return queries


@dataclass
class _Backends:
    """Where faults go: local annotation files, or the cluster (pods or VirtualServices)."""

    files: dict[str, list[Path]]
    api: client.ApiClient | None

    def make(self, experiment: Experiment) -> FaultBackend:
        if self.files:
            if experiment.backend is not BackendKind.SIDECAR:
                raise InvalidInput(f"{experiment.name}: local annotation files serve the sidecar backend only",
                                   source="--annotations-file")
            return AnnotationsFileBackend(experiment, self.files)
        assert self.api is not None
        if experiment.backend is BackendKind.ISTIO:
            return IstioBackend(experiment, self.api)
        return PodAnnotationBackend(experiment, self.api)

    async def sweep(self, everything: bool) -> int:
        if self.files:
            return sweep_files([p for paths in self.files.values() for p in paths], everything=everything)
        assert self.api is not None
        # Each kind is swept even when the other cannot be (no pods list right, the apiserver
        # refusing one list); the first failure is raised once both have been tried.
        swept, failures = 0, []
        for sweep in (sweep_pods, sweep_virtual_services):
            try:
                swept += await sweep(self.api, everything=everything)
            except Exception as exc:
                failures.append(exc)
        if failures:
            raise failures[0]
        return swept


@contextlib.asynccontextmanager
async def _backends(args: argparse.Namespace) -> AsyncIterator[_Backends]:
    files = parse_file_mapping(args.annotations_file)
    if files:
        yield _Backends(files, None)
        return
    settings = settings_from_flags(args, KUBE_FLAGS).kube
    api = await new_api_client(settings.kubeconfig, settings.context)
    try:
        yield _Backends({}, api)
    finally:
        await api.close()


# --- commands -----------------------------------------------------------------------------

async def _generate(args: argparse.Namespace) -> int:
    from chaos import graphsource
    from chaos.forecasts import load_forecasts
    from chaos.generate import GenerateOptions, generate
    from chaos.incidents import load_incidents
    from harbinger.graph import ServiceGraph
    from harbinger.profile import load_profiles

    if not (args.graph or args.graph_from_prometheus or args.graph_from_virtual_services):
        raise InvalidInput("give --graph, --graph-from-prometheus or --graph-from-virtual-services", source="generate")
    services: set[str] = set()
    edges: set[tuple[str, str]] = set()
    if args.graph:
        graph = ServiceGraph.load(args.graph)
        services |= set(graph.services)
        edges |= {(caller, callee) for caller, callees in graph.calls.items() for callee in callees}
    if args.graph_from_prometheus:
        async with PrometheusClient(args.graph_from_prometheus, load_settings().prometheus) as prometheus:
            edges |= await graphsource.edges_from_prometheus(prometheus)
    if args.graph_from_virtual_services:
        async with contextlib.AsyncExitStack() as stack:
            kube = settings_from_flags(args, KUBE_FLAGS).kube
            api = await new_api_client(kube.kubeconfig, kube.context)
            stack.push_async_callback(api.close)
            found, vs_edges = graphsource.edges_from_virtual_services(
                await graphsource.virtual_services(api, args.namespace))
            services |= found
            edges |= vs_edges
    graph = graphsource.merge(services, edges, source="generate")
    now = parse_time(args.now, what="--now") if args.now else clock_from_spec(load_settings().replay_clock).now()
    options = GenerateOptions(
        namespace=args.namespace, backend=BackendKind(args.backend),
        kinds=[FaultKind(k) for k in args.kinds] if args.kinds else list(FaultKind), schedule=args.schedule,
        rehearsal_lead_seconds=args.rehearsal_lead, rehearsal_window_seconds=args.rehearsal_window,
        max_experiments=args.max_experiments)
    plan = generate(
        graph, profiles=load_profiles(args.profiles) if args.profiles else None,
        forecasts=load_forecasts(args.forecasts) if args.forecasts else None,
        history=load_incidents(args.incidents) if args.incidents else None, options=options, now=now)
    if args.out:
        dump(plan, args.out)
    else:
        import yaml
        sys.stdout.write(yaml.safe_dump(plan.model_dump(mode="json", exclude_none=True), sort_keys=False))
    _print_ranking(plan)
    return 0


def _print_ranking(plan: Plan) -> None:
    for rank, exp in enumerate(plan.experiments, start=1):
        window = f"{exp.window.start:%Y-%m-%d %H:%M}Z" if exp.window else "on demand"
        print(f"{rank:3d}. {exp.risk:.3f}  {exp.name:40s} {len(exp.steps)} steps  {window}", file=sys.stderr)
    for reason in plan.skipped:
        print(f"  skipped: {reason}", file=sys.stderr)


def _pick(experiments: list[Experiment], name: str | None, source: str) -> Experiment:
    if name is None:
        return experiments[0]
    for exp in experiments:
        if exp.name == name:
            return exp
    raise InvalidInput(f"no experiment named {name!r} (have: {', '.join(e.name for e in experiments)})",
                       source=source)


async def _run(args: argparse.Namespace) -> int:
    from chaos.bands import with_bands
    from chaos.forecasts import load_forecasts

    experiment = _pick(load_experiments(args.experiment), args.name, str(args.experiment))
    forecasts = load_forecasts(args.forecasts) if args.forecasts else {}  # a bad file fails before any fault
    everything = settings_from_flags(args, _RUN_FLAGS)
    settings, clock = everything.chaos, clock_from_spec(everything.replay_clock)
    config = _config(settings)
    async with _backends(args) as backends:
        backend = backends.make(experiment)
        await backends.sweep(False)
        async with PrometheusClient(settings.prometheus_url, everything.prometheus) as prometheus:
            monitor = Monitor(prometheus, namespace=experiment.namespace,
                              window_seconds=settings.query_window_seconds, queries=_queries(settings), clock=clock)
            record = await run_experiment(experiment, backend, monitor, config, clock=clock)
    record = with_bands(record, forecasts)
    directory = settings.reports_dir / record.run_id
    analysis = write_report(record, directory)
    _print_summary(analysis, directory)
    return _exit_code(record)


def _exit_code(record: RunRecord) -> int:
    if record.status is RunStatus.HELD:
        return 0
    return 130 if record.status is RunStatus.ABORTED else 1


def _print_summary(analysis: dict[str, Any], directory: Path) -> None:
    print(json.dumps({k: analysis[k] for k in ("run_id", "status", "steps_reached", "steps_planned", "breach",
                                               "resilience_score", "weaknesses", "notes")}, indent=2))
    rollback = analysis.get("rollback")
    if rollback:
        print(f"faults removed {rollback['seconds']:.3f}s after {rollback['reason']}", file=sys.stderr)
    print(f"report: {directory / 'report.html'}", file=sys.stderr)


async def _report(args: argparse.Namespace) -> int:
    path: Path = args.run / RUN_JSON if args.run.is_dir() else args.run
    record = RunRecord.load(path)
    directory = args.out or path.parent
    analysis = write_report(record, directory)
    _print_summary(analysis, directory)
    return 0


async def _controller(args: argparse.Namespace) -> int:
    from chaos.controller import run_controller
    from chaos.experiments_api import ExperimentRecords

    everything = settings_from_flags(args, _RUN_FLAGS)
    settings, clock = everything.chaos, clock_from_spec(everything.replay_clock)
    queries = _queries(settings)
    # No plan check here: the controller sweeps before anything else, and a bad plan is
    # reported and read again each cycle rather than keeping leftover faults in place.
    async with _backends(args) as backends, \
            PrometheusClient(settings.prometheus_url, everything.prometheus) as prometheus:
        def monitor_for(experiment: Experiment) -> Monitor:
            return Monitor(prometheus, namespace=experiment.namespace,
                           window_seconds=settings.query_window_seconds, queries=queries, clock=clock)

        stop = asyncio.Event()
        metrics = None
        if settings.controller_metrics_port is not None:
            app = web.Application()
            add_standard_routes(app)  # the process registry: chaos.metrics
            metrics = asyncio.create_task(serve(app, host=settings.controller_metrics_host,
                                                port=settings.controller_metrics_port, stop=stop,
                                                shutdown_grace_seconds=1.0))
        try:
            records = await run_controller(
                args.plan, config=_config(settings), reports_dir=settings.reports_dir,
                interval_seconds=settings.controller_interval_seconds, make_backend=backends.make,
                make_monitor=monitor_for, sweep=backends.sweep, stop=stop, once=args.once, clock=clock,
                experiment_records=(ExperimentRecords(backends.api, history_limit=settings.records_history_limit)
                                    if backends.api is not None else None))
        finally:
            stop.set()
            if metrics is not None:
                await metrics  # raises InvalidInput if the port could not be bound
    return 0 if all(r.status is RunStatus.HELD for r in records) else 1


async def _sweep(args: argparse.Namespace) -> int:
    async with _backends(args) as backends:
        swept = await backends.sweep(args.all)
    if args.json:
        print(json.dumps({"swept": swept, "all": bool(args.all)}))
    else:
        print(f"swept {swept} object(s)", file=sys.stderr)
    return 0


async def _sidecar(args: argparse.Namespace) -> int:
    from chaos.sidecar.proxy import run_sidecar

    if args.poll_seconds <= 0:
        raise InvalidInput("must be positive", source="--poll-seconds")
    if args.max_memory is not None:
        args.max_memory = int(parse_nonnegative(args.max_memory, what="--max-memory"))
    if args.min_bandwidth is not None:
        args.min_bandwidth = float(parse_nonnegative(args.min_bandwidth, what="--min-bandwidth"))
    limits = settings_from_flags(args, _SIDECAR_FLAGS).chaos.sidecar_limits()
    await run_sidecar(
        listen=args.listen, upstream=args.upstream, annotations_file=args.annotations_file,
        metrics_port=args.metrics_port, admin_port=args.admin_port, poll_seconds=args.poll_seconds,
        limits=limits, upstream_timeout=args.upstream_timeout)
    return 0


#: ``chaos sidecar`` flag -> setting: a flag the webhook passes wins over the environment.
_SIDECAR_FLAGS = {
    "max_fault_seconds": "chaos.sidecar_max_fault_seconds", "max_delay_ms": "chaos.sidecar_max_delay_ms",
    "max_cpu": "chaos.sidecar_max_cpu_cores", "max_memory": "chaos.sidecar_max_memory_bytes",
    "min_bandwidth": "chaos.sidecar_min_bandwidth_bps",
}
