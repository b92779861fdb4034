"""``harbinger train``, ``harbinger forecast`` and ``harbinger evaluate``.

Each command is a pair: ``add_*_arguments(parser)`` and ``run_*(args) -> int``; the
``harbinger`` console script routes to them. Bad input (a file, a flag, a model
directory) ends with one line on stderr naming the problem and exit code 2, never a
traceback; ``--json`` output is the only thing on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from harbinger.errors import InvalidInput
from harbinger.extras import require
from models.errors import BadRequest
from models.events import Event, load_events
from models.series import DEFAULT_MAX_ZERO_GAP_SECONDS, AbsentRows, load_csv

if TYPE_CHECKING:  # scikit-learn is imported only by the commands that train
    from models.training import TrainingConfig

#: Written by ``train`` next to the graph: the end of the training series, so that
#: ``forecast --model DIR`` can answer without any other input.
HISTORY_FILE = "history.csv"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)\s*$")
_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``90s``, ``15m``, ``24h``, ``7d`` -> seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 15m, 24h or 7d")
    return round(float(match.group(1)) * _SECONDS[match.group(2)])


def _baselines(text: str) -> tuple[str, ...]:
    from models.evaluation import BASELINES

    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in BASELINES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}")
    return names


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trace", type=Path, required=True, metavar="CSV",
                   help="CSV of request counts: timestamp,value")
    p.add_argument("--events", type=Path, help="YAML file of scheduled events (campaigns, holidays, ...)")
    p.add_argument("--service", help="service name (default: the CSV file's name)")
    p.add_argument("--step", type=parse_duration, help="model step (default: the data's interval, at least 15m)")
    p.add_argument("--horizon", type=parse_duration, default=None, help="forecast horizon (default: 24h)")
    p.add_argument("--absent-rows", choices=("missing", "zero"), default="missing",
                   help="what a timestamp absent from the CSV means: unknown (default), or zero requests "
                        "for per-minute counts made from access logs (runs longer than --max-zero-gap stay unknown)")
    p.add_argument("--max-zero-gap", type=parse_duration, default=DEFAULT_MAX_ZERO_GAP_SECONDS,
                   help="with --absent-rows zero, the longest run of absent rows read as zeros (default: 1h)")
    p.add_argument("--estimator", choices=("hgb", "gbr", "linear"), default="hgb",
                   help="scikit-learn estimator (default: hgb, HistGradientBoosting quantile regression)")
    p.add_argument("--seed", type=int, default=0, help="random seed: same data + seed = same model")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    _add_data_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="model directory to write (model.onnx, metadata.json)")
    p.add_argument("--backtest-folds", type=int, default=0,
                   help="also backtest with this many folds and record the metrics in the metadata (default: 0)")


def add_forecast_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="model directory written by 'harbinger train'")
    p.add_argument("--horizon", type=parse_duration, default=None, help="how far ahead (default: the model's)")
    p.add_argument("--history", type=Path,
                   help=f"CSV of recent request counts (default: the model directory's {HISTORY_FILE})")
    p.add_argument("--prometheus-url", help="read the history from Prometheus instead (with --query)")
    p.add_argument("--query", help="PromQL giving the service's requests per second")
    p.add_argument("--now", type=_timestamp, help="forecast from this UTC time (default: after the history)")
    p.add_argument("--events", type=Path, help="YAML file of scheduled events")
    p.add_argument("--json", action="store_true", help="print the forecast as one JSON object")
    p.add_argument("--plot", type=Path, metavar="PNG",
                   help="also draw the forecast's P50-P90 band after the recent traffic into this PNG")


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    _add_data_arguments(p)
    p.add_argument("--baselines", type=_baselines, default=("seasonal-naive", "prophet"),
                   help="comma-separated: seasonal-naive, prophet (default: both)")
    p.add_argument("--folds", type=int, default=14, help="forecast origins, one day apart (default: 14)")
    p.add_argument("--pool", action="append", default=[], metavar="CSV[:zero]",
                   help="another service's counts CSV to train the pooled model on (repeatable; ':zero' reads its "
                        "absent rows as zeros). With a pool, Harbinger is its own model or the pooled one, "
                        "whichever did better on the days before the scored ones")
    p.add_argument("--validation-folds", type=int, default=7,
                   help="with --pool: days before the scored ones that choose own or pooled (default: 7)")
    p.add_argument("--p90-adaptation-rate", type=_rate, default=None, metavar="RATE",
                   help="how far each fold moves the P90's level per unit of the previous fold's miss, as "
                        "retraining in the cluster does (default: 0.75; 0 keeps the P90 at the 0.9 level)")
    p.add_argument("--json", action="store_true", help="print one JSON object with every model's scores")
    p.add_argument("--plot-dir", type=Path, help="write <service>.png: actual vs forecasts, P50-P90 band")


def add_train_cluster_arguments(p: argparse.ArgumentParser) -> None:
    from harbinger.flags import add_json_flag, add_kube_flags

    add_kube_flags(p)
    p.add_argument("--namespace", action="append", dest="namespaces", metavar="NAMESPACE",
                   help="train only this opted-in namespace's services (repeatable; default: every one)")
    p.add_argument("--prometheus-url", help="the Prometheus the history is read from (default: settings)")
    p.add_argument("--history-trace", action="append", metavar="SERVICE=PATH[*SCALE]",
                   help="read a service's history from a recorded trace instead (rehearsals)")
    p.add_argument("--now", type=_timestamp, help="train on the history up to this UTC time (default: now)")
    add_json_flag(p)


def add_model_mirror_arguments(p: argparse.ArgumentParser) -> None:
    from harbinger.flags import add_kube_flags

    add_kube_flags(p)
    p.add_argument("--dir", type=Path, required=True, help="the models directory the components read")
    p.add_argument("--once", action="store_true", help="mirror once and exit (default: keep mirroring)")


_CLUSTER_FLAGS = {"kubeconfig": "kube.kubeconfig", "context": "kube.context",
                  "prometheus_url": "history.prometheus_url", "history_trace": "history.traces"}


def run_train_cluster(args: argparse.Namespace) -> int:
    require("train", "harbinger train-cluster")
    from harbinger.kube import api_client
    from harbinger.settings import settings_from_flags
    from models.incluster import train_cluster
    from models.store import ModelStore
    from models.traffic import history_source

    settings = settings_from_flags(args, _CLUSTER_FLAGS)
    now = args.now or datetime.now(UTC)

    async def main() -> list[dict[str, str | None]]:
        async with api_client(settings.kube.kubeconfig, settings.kube.context) as api:
            store = ModelStore(api, settings.training.store_namespace)
            outcomes = await train_cluster(
                api, history_source(settings.history, settings.prometheus), store, now=now,
                namespaces=frozenset(args.namespaces) if args.namespaces else None,
                step_seconds=settings.training.step_seconds,
                lookback=timedelta(seconds=settings.training.lookback_seconds), seed=settings.training.seed,
                pooled=settings.training.pooled, validation_days=settings.training.validation_days)
        return [o.as_dict() for o in outcomes]

    outcomes = asyncio.run(main())
    if args.json:
        print(json.dumps({"services": outcomes}))
    else:
        for o in outcomes:
            print(f"{o['service']}: {o['result']}" + (f" {o['version']}" if o["version"] else "") + f" ({o['detail']})")
    # A service without enough history is not a failure of the job; one that failed is.
    return 1 if any(o["result"] == "failed" for o in outcomes) else 0


def run_model_mirror(args: argparse.Namespace) -> int:
    from harbinger.kube import api_client
    from harbinger.lifecycle import stop_on_signals
    from harbinger.settings import settings_from_flags
    from models.mirror import mirror_forever, mirror_once
    from models.store import ModelStore

    settings = settings_from_flags(args, {"kubeconfig": "kube.kubeconfig", "context": "kube.context"})

    async def main() -> None:
        async with api_client(settings.kube.kubeconfig, settings.kube.context) as api:
            store = ModelStore(api, settings.training.store_namespace)
            if args.once:
                written, removed = await mirror_once(store, args.dir)
                print(f"{written} model(s) written, {removed} removed in {args.dir}", file=sys.stderr)
                return
            stop = asyncio.Event()
            with stop_on_signals(stop):
                await mirror_forever(store, args.dir, interval_seconds=settings.training.mirror_interval_seconds,
                                     stop=stop)

    args.dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(main())
    return 0


def run_train(args: argparse.Namespace) -> int:
    return _train(args)


def run_forecast(args: argparse.Namespace) -> int:
    return _forecast(args)


def run_evaluate(args: argparse.Namespace) -> int:
    return _evaluate(args)


def _train(args: argparse.Namespace) -> int:
    require("train", "harbinger train")
    from models.evaluation import BacktestConfig, backtest
    from models.export import export_model
    from models.training import train

    series, events, service = _load_inputs(args)
    config = _training_config(args, series)
    model = train(series, service=service, events=events, config=config)
    scores = None
    if args.backtest_folds > 0:
        result = backtest(series, events=events, service=service, training=config,
                          config=BacktestConfig(folds=args.backtest_folds, baselines=("seasonal-naive",)))
        scores = result.to_json()
    metadata = export_model(model, args.out, backtest=scores)
    _write_history(series.iloc[-model.spec.window_steps :], args.out / HISTORY_FILE)
    print(f"trained {service}: {metadata.period} seasonality, step {metadata.step_seconds} s, "
          f"horizon {metadata.horizon_steps} steps, version {metadata.model_version} -> {args.out}",
          file=sys.stderr)
    return 0


def _forecast(args: argparse.Namespace) -> int:
    from models.serving import Forecaster

    forecaster = Forecaster.load(args.model)
    events = load_events(args.events) if args.events else None
    history = _forecast_history(args, forecaster.step_seconds, forecaster.spec.window_steps, forecaster.service)
    horizon = None
    if args.horizon is not None:
        horizon = _steps(args.horizon, forecaster.step_seconds, "--horizon")
    forecast = forecaster.forecast(history, now=args.now, horizon_steps=horizon, events=events)
    if args.plot:
        require("plots", "--plot")
        from models.plots import plot_forecast

        print(f"plot: {plot_forecast(history, forecast, args.plot)}", file=sys.stderr)
    if args.json:
        print(json.dumps(forecast.to_json()))
        return 0
    print(f"{forecast.service}  model {forecast.model_version}  step {forecast.step_seconds} s  (TPS)")
    print(f"{'step start (UTC)':<22}{'P50':>12}{'P90':>12}")
    for moment, p50, p90 in zip(forecast.timestamps(), forecast.p50, forecast.p90, strict=True):
        print(f"{moment:%Y-%m-%d %H:%M}Z     {p50:12.3f}{p90:12.3f}")
    print(f"peak P90 {forecast.peak_p90():.3f} TPS at {forecast.peak_time():%Y-%m-%d %H:%M}Z")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    require("train", "harbinger evaluate")  # each backtest fold trains a model
    from models.evaluation import BacktestConfig, backtest
    from models.progress import ProgressBar

    if args.folds < 1:
        raise BadRequest("--folds must be at least 1")
    series, events, service = _load_inputs(args)
    config = _training_config(args, series)
    pool = _load_pool(args.pool, series, service)
    result = backtest(series, events=events, service=service, training=config,
                      config=BacktestConfig(folds=args.folds, baselines=args.baselines,
                                            validation_folds=args.validation_folds),
                      progress=ProgressBar(f"evaluate {service}"), pool=pool or None)
    if args.plot_dir:
        require("plots", "--plot-dir")
        from models.plots import plot_backtest

        path = plot_backtest(result, args.plot_dir / f"{service}.png")
        print(f"plot: {path}", file=sys.stderr)
    report = result.to_json()
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{service}: {report['folds']} folds from {report['test_start']}, step {report['step_seconds']} s, "
          f"horizon {report['horizon_steps']} steps, served by its {report['served_by']} model")
    print(f"{'model':<24}{'MASE':>8}{'sMAPE %':>9}{'under P90':>11}{'cover P90':>11}")
    for name, scores in report["models"].items():
        print(f"{name:<24}{scores['mase']:>8.3f}{scores['smape']:>9.1f}{scores['under_p90']:>11.3f}"
              f"{scores['coverage_p90']:>11.3f}")
    return 0


def _load_inputs(args: argparse.Namespace) -> tuple[pd.Series, list[Event], str]:
    service = args.service or args.trace.stem
    series = load_csv(args.trace, step_seconds=args.step, absent=args.absent_rows,
                      max_zero_gap_seconds=args.max_zero_gap, name=service)
    events = load_events(args.events) if args.events else []
    return series, events, service


def _load_pool(specs: list[str], series: pd.Series, service: str) -> dict[str, pd.Series]:
    """``--pool`` files at the evaluated series' step; a file that cannot be put on its grid is
    left out, with a note."""
    from models.pooled import load_pool

    step = int((series.index[1] - series.index[0]).total_seconds())
    sources: list[tuple[Path, AbsentRows]] = [
        (Path(spec.removesuffix(":zero")), "zero" if spec.endswith(":zero") else "missing") for spec in specs]
    try:
        pool, notes = load_pool(sources, step, exclude=service)
    except InvalidInput as exc:
        raise BadRequest(f"--pool: {exc}") from None
    for note in notes:
        print(f"pool: {note}", file=sys.stderr)
    if specs and not pool:
        print("pool: no usable series; Harbinger is the service's own model", file=sys.stderr)
    return pool


def _training_config(args: argparse.Namespace, series: pd.Series) -> TrainingConfig:
    from models.training import TrainingConfig

    step = int((series.index[1] - series.index[0]).total_seconds()) if len(series) > 1 else 0
    horizon = _steps(args.horizon, step, "--horizon") if args.horizon is not None and step else None
    config = TrainingConfig(estimator=args.estimator, horizon_steps=horizon, seed=args.seed)
    rate = getattr(args, "p90_adaptation_rate", None)
    return config if rate is None else replace(config, p90_adaptation_rate=rate)


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= rate <= 10.0:
        raise argparse.ArgumentTypeError(f"{rate:g} is outside 0 to 10")
    return rate


def _forecast_history(args: argparse.Namespace, step: int, window: int, service: str) -> pd.Series:
    if args.prometheus_url or args.query:
        if not (args.prometheus_url and args.query):
            raise BadRequest("--prometheus-url and --query go together")
        from harbinger.prometheus import PrometheusClient
        from harbinger.settings import load_settings
        from models.prometheus import query_range

        end = args.now or datetime.now(UTC)
        start = end - timedelta(seconds=step * window)
        async def fetch() -> pd.Series:
            async with PrometheusClient(args.prometheus_url, load_settings().prometheus) as prometheus:
                return await query_range(prometheus, args.query, start, end, step, name=service)

        return asyncio.run(fetch())
    path = args.history or args.model / HISTORY_FILE
    return load_csv(path, step_seconds=step, name=service)


def _write_history(series: pd.Series, path: Path) -> None:
    """The series as a count CSV at its own step (unknown steps left out), readable by ``load_csv``."""
    step = (series.index[1] - series.index[0]).total_seconds()
    known = series.dropna()
    counts = np.round(known.to_numpy() * step, 6)
    lines = ["timestamp,value"]
    lines += [f"{t:%Y-%m-%dT%H:%M:%S}Z,{c:g}" for t, c in zip(known.index, counts, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _steps(seconds: int, step: int, flag: str) -> int:
    if seconds % step:
        raise BadRequest(f"{flag} must be a whole number of {step} s steps")
    return seconds // step


def _timestamp(text: str) -> datetime:
    try:
        moment = pd.Timestamp(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 time") from None
    return (moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")).to_pydatetime()
