"""Forecaster benchmark: latency (onnxruntime vs scikit-learn vs Prophet), a batch of 1,000
services, and accuracy on every shipped trace against seasonal-naive and Prophet.

Run by ``make bench`` (never by pytest). Every latency figure is compared with a
baseline measured in the same run on the same machine; results go to
``bench/results/forecast.json`` and ``bench/results/forecast.md`` with the machine and
library versions, and one PNG per trace (``bench/results/forecast-<trace>.png``).

    .venv/bin/python bench/forecast_bench.py             # everything (about 20 min on 2 cores)
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

from harbinger_dev.traces import TRACES, load_trace, trace_events  # noqa: E402
from models.baselines import ProphetBaseline  # noqa: E402
from models.estimators import ESTIMATORS  # noqa: E402
from models.evaluation import NAIVE_BEST, BacktestConfig, backtest  # noqa: E402
from models.export import export_model, library_versions, to_onnx_graph, write_model_dir  # noqa: E402
from models.plots import plot_backtest  # noqa: E402
from models.progress import ProgressBar  # noqa: E402
from models.serving import ForecastCore, Forecaster, ForecasterBatch  # noqa: E402
from models.training import TrainedModel, TrainingConfig, train  # noqa: E402

HORIZON = 24
LATENCY_TRACE = "nasa"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, 100 services, 3 folds")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--folds", type=int, default=14)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--without-events", action="store_true",
                        help="also backtest every trace without its events file (for comparison)")
    parser.add_argument("--estimators", action="store_true",
                        help="also compare the estimators (hgb, gbr, linear) at a reduced size")
    args = parser.parse_args(argv)
    if args.quick:
        args.services, args.folds = min(args.services, 100), min(args.folds, 3)
    args.out.mkdir(parents=True, exist_ok=True)

    report: dict[str, Any] = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                              "machine": machine(), "versions": {**library_versions(), **extra_versions()}}
    models = {t.name: train(load_trace(t.name), service=t.name, events=trace_events(t.name)) for t in TRACES}
    report["latency"] = latency(models[LATENCY_TRACE], quick=args.quick)
    report["batch"] = batch(models, args.services, quick=args.quick)
    if not args.skip_accuracy:
        report["accuracy"] = accuracy(args.folds, args.out, with_events=True)
        if args.without_events:
            report["accuracy_without_events"] = accuracy(args.folds, None, with_events=False)
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


def batch(models: dict[str, TrainedModel], services: int, *, quick: bool) -> dict[str, Any]:
    """``services`` services, each with its own graph and session (the four trace models,
    written once per service), forecast together and one by one."""
    traces = {name: load_trace(name) for name in models}
    names = list(models)
    with tempfile.TemporaryDirectory() as tmp:
        graphs = {name: to_onnx_graph(model) for name, model in models.items()}
        dirs = []
        for i in range(services):
            trace = names[i % len(names)]
            service = f"svc-{i:04d}"
            write_model_dir(dataclasses.replace(models[trace], service=service), graphs[trace], Path(tmp) / service)
            dirs.append(Path(tmp) / service)
        rss_before = rss_mib()
        began = time.perf_counter()
        loaded = ForecasterBatch.load_dirs(dirs)
        load_seconds = time.perf_counter() - began
        rss_after = rss_mib()
    histories: dict[str, pd.Series] = {}
    for i, (service, forecaster) in enumerate(loaded.forecasters.items()):
        series = traces[names[i % len(names)]]
        # Every service at its own origin, all with at least two days of history.
        spare = len(series) - 2 * forecaster.spec.steps_per_day
        end = len(series) - ((i // len(names)) * 7) % spare
        histories[service] = series.iloc[max(0, end - forecaster.spec.window_steps) : end]
    rounds = 2 if quick else 5
    batch_time = timed(lambda: loaded.forecast(histories, horizon_steps=HORIZON), rounds, 1)
    one_by_one = [forecaster.forecast(histories[service], horizon_steps=HORIZON)
                  for service, forecaster in loaded.forecasters.items()]  # warm
    singles = np.empty(len(histories))
    for i, (service, forecaster) in enumerate(loaded.forecasters.items()):
        began_ns = time.perf_counter_ns()
        forecaster.forecast(histories[service], horizon_steps=HORIZON)
        singles[i] = (time.perf_counter_ns() - began_ns) / 1000
    per_service = batch_time["p50_us"] / services
    return {
        "services": services, "distinct_graphs": services, "models_per_trace": services // len(names),
        "horizon_steps": HORIZON, "load_seconds": round(load_seconds, 2),
        "resident_mib_for_sessions": round(rss_after - rss_before, 1),
        "batch_forecast": batch_time, "batch_per_service_us": round(per_service, 2),
        "one_by_one_per_service": {"p50_us": round(float(np.percentile(singles, 50)), 2),
                                   "p99_us": round(float(np.percentile(singles, 99)), 2)},
        "forecasts": len(one_by_one),
    }


def accuracy(folds: int, plot_dir: Path | None, *, with_events: bool) -> list[dict[str, Any]]:
    rows = []
    for trace in TRACES:
        series = load_trace(trace.name)
        result = backtest(series, events=trace_events(trace.name) if with_events else [], service=trace.name,
                          config=BacktestConfig(folds=folds),
                          progress=ProgressBar(f"{trace.name}{'' if with_events else ' (no events)'}"))
        if plot_dir is not None:
            plot_backtest(result, plot_dir / f"forecast-{trace.name}.png")
        rows.append(result.to_json())
    return rows


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


def markdown(report: dict[str, Any]) -> str:
    m, v = report["machine"], report["versions"]
    lat, bat = report["latency"], report["batch"]
    lines = [
        "# Forecaster benchmark", "",
        f"Generated {report['generated_at']} on {m['cpu']} ({m['cores']} cores), {m['platform']}, "
        f"Python {m['python']}, load average at start {m['load_average_at_start']}.",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in sorted(v.items())) + ".", "",
        f"## Latency: one service, {lat['horizon_steps']}-step horizon ({lat['trace']} model, "
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
              f"**{lat['onnxruntime_predict']['p99_us']:.0f} µs** (target < 200 µs).", "",
              f"## Batch: {bat['services']} services, each with its own graph and session", "",
              f"Loading {bat['services']} model directories: {bat['load_seconds']} s, "
              f"{bat['resident_mib_for_sessions']} MiB resident. One batch forecast of all services: "
              f"p50 {bat['batch_forecast']['p50_us'] / 1000:,.1f} ms, **{bat['batch_per_service_us']:.0f} µs per "
              f"service**; one by one: p50 {bat['one_by_one_per_service']['p50_us']:.0f} µs, "
              f"p99 {bat['one_by_one_per_service']['p99_us']:.0f} µs per service.", ""]
    for title, key in (("Accuracy", "accuracy"), ("Accuracy without the events files", "accuracy_without_events")):
        if key in report:
            lines += [f"## {title}: rolling-origin backtest, 24 h horizon", "", accuracy_table(report[key]), ""]
    if "estimators" in report:
        lines += ["## Estimator choice (20k training rows, default boosting size, up to 7 folds)", "",
                  "| estimator | trace | MASE | seasonal-naive MASE | P90 coverage | seconds |",
                  "| --- | --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {e['estimator']} | {e['trace']} | {e['mase']:.3f} | {e['seasonal_naive_mase']:.3f} | "
                  f"{e['coverage_p90']:.3f} | {e['seconds']} |" for e in report["estimators"]]
        lines.append("")
    return "\n".join(lines)


def accuracy_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| trace | folds | Harbinger MASE | seasonal-naive MASE (variant) | Prophet MASE | Harbinger sMAPE % | "
             "Harbinger under P90 | Harbinger P90 coverage | Prophet P90 coverage |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        h, n = row["models"]["harbinger"], row["models"][NAIVE_BEST]
        p = row["models"].get("prophet", {})
        lines.append(f"| {row['trace']} | {row['folds']} | {h['mase']:.3f} | {n['mase']:.3f} ({n['variant']}) | "
                     f"{p.get('mase', float('nan')):.3f} | {h['smape']:.1f} | {h['under_p90']:.3f} | "
                     f"{h['coverage_p90']:.3f} | {p.get('coverage_p90', float('nan')):.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
