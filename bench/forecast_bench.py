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

from harbinger_dev.traces import TRACES, load_trace, trace_events, traces_dir  # noqa: E402
from harbinger_dev.unseen import UNSEEN  # noqa: E402
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
    parser.add_argument("--services", type=int, default=1000, help="services with per-service sessions (baseline)")
    parser.add_argument("--fleet", type=int, default=10_000, help="services on the pooled model")
    parser.add_argument("--folds", type=int, default=14)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-speed", action="store_true", help="no latency, batch or fleet measurements")
    parser.add_argument("--prophet-from", type=Path, metavar="JSON",
                        help="take Prophet's scores from an earlier forecast.json of the same folds instead of "
                             "refitting it (it does not depend on Harbinger; about half of the accuracy run)")
    parser.add_argument("--estimators", action="store_true",
                        help="also compare the estimators (hgb, gbr, linear) at a reduced size")
    args = parser.parse_args(argv)
    if args.quick:
        args.services, args.fleet, args.folds = min(args.services, 100), min(args.fleet, 1000), min(args.folds, 3)
    args.out.mkdir(parents=True, exist_ok=True)

    report: dict[str, Any] = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                              "machine": machine(), "versions": {**library_versions(), **extra_versions()}}
    if not args.skip_speed:
        models = {t.name: train(load_trace(t.name), service=t.name, events=trace_events(t.name)) for t in TRACES}
        report["latency"] = latency(models[LATENCY_TRACE], quick=args.quick)
        report["batch"] = batch(models, args.services, quick=args.quick)
        report["fleet"] = fleet(args.fleet, args.services, quick=args.quick)
    if not args.skip_accuracy:
        earlier = json.loads(args.prophet_from.read_text()) if args.prophet_from else None
        with tempfile.TemporaryDirectory(prefix="harbinger-unseen-") as scratch:
            unseen, report["not_run"] = unseen_traces(Path(scratch))
            # Without the events files is the headline: events are an addition, reported apart.
            report["accuracy_without_events"] = accuracy(args.folds, args.out, with_events=False, unseen=unseen,
                                                         prophet=_prophet_rows(earlier, "accuracy_without_events"))
            report["accuracy"] = accuracy(args.folds, None, with_events=True, unseen=unseen,
                                          prophet=_prophet_rows(earlier, "accuracy"))
            if earlier:
                # The run that fitted Prophet, also when that file had its scores from an earlier one.
                report["prophet_from"] = earlier.get("prophet_from", earlier["generated_at"])
    if args.estimators:
        report["estimators"] = estimators(min(args.folds, 7))
    (args.out / "forecast.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "forecast.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def timed(call: Callable[[], object], repeat: int, warmup: int) -> dict[str, float]:
    """Wall time of ``call`` in microseconds: p50, p99, mean (GC paused while timing)."""
    return timed_together({"call": (call, repeat, warmup)}, rounds=1)["call"]


def timed_together(calls: dict[str, tuple[Callable[[], object], int, int]], rounds: int = 10) -> dict[str, Any]:
    """:func:`timed` for several calls (name -> (call, repeat, warmup)), their repeats taken in
    ``rounds`` interleaved rounds: on a shared machine a noisy minute then slows every path a
    little instead of one path a lot, so the ratios between them hold."""
    for call, _, warmup in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    gc.collect()
    gc.disable()
    try:
        for round_ in range(rounds):
            for name, (call, repeat, _) in calls.items():
                share = repeat // rounds + (1 if round_ < repeat % rounds else 0)
                for _ in range(share):
                    began = time.perf_counter_ns()
                    call()
                    samples[name].append(time.perf_counter_ns() - began)
    finally:
        gc.enable()
    results: dict[str, Any] = {}
    for name, values in samples.items():
        micros = np.asarray(values) / 1000.0
        results[name] = {"p50_us": round(float(np.percentile(micros, 50)), 2),
                         "p99_us": round(float(np.percentile(micros, 99)), 2),
                         "mean_us": round(float(micros.mean()), 2), "runs": len(values)}
    return results


def latency(model: TrainedModel, *, quick: bool) -> dict[str, Any]:
    """One service, a 24-step horizon: the same model in onnxruntime and scikit-learn, and Prophet."""
    series = load_trace(LATENCY_TRACE)
    events = trace_events(LATENCY_TRACE)
    from forecast_fleet import traces_at_step

    from models.export import write_pooled_dirs
    from models.pooled import level_floor, train_pooled

    pooled = train_pooled(traces_at_step())
    with tempfile.TemporaryDirectory() as tmp:
        export_model(model, Path(tmp) / "own")
        forecaster = Forecaster.load(Path(tmp) / "own")
        floor = level_floor(series.to_numpy(), pooled.config)
        write_pooled_dirs(pooled, {LATENCY_TRACE: (Path(tmp) / "pooled", floor)})
        member = Forecaster.load(Path(tmp) / "pooled")
    twin = ForecastCore(model.service, forecaster.model_version, model.spec, model.p90_margin)
    history = series.iloc[-pooled.spec.window_steps :]
    rows = forecaster.prepare(history, horizon_steps=HORIZON).features
    scale = 10 if quick else 1
    prophet = ProphetBaseline().fit(series, events, LATENCY_TRACE)
    future = pd.date_range(series.index[-1] + pd.Timedelta(seconds=model.spec.step_seconds), periods=HORIZON,
                           freq=pd.Timedelta(seconds=model.spec.step_seconds))
    # Interleaved rounds: every path sees the same share of whatever else the machine is doing.
    results = timed_together({
        "onnxruntime_predict": (lambda: forecaster.predict_ratios(rows), 5000 // scale, 200),
        "sklearn_predict": (lambda: model.predict_ratios(rows), 500 // scale, 20),
        "prophet_predict": (lambda: prophet.predict(future), 30 // min(scale, 3), 2),
        "onnxruntime_forecast_end_to_end": (
            lambda: forecaster.forecast(history, horizon_steps=HORIZON), 3000 // scale, 100),
        "sklearn_forecast_end_to_end": (
            lambda: twin.forecast_with(model.predict_ratios, history, horizon_steps=HORIZON), 300 // scale, 10),
        "pooled_onnxruntime_forecast_end_to_end": (
            lambda: member.forecast(history, horizon_steps=HORIZON), 3000 // scale, 100),
    })
    ort, skl, pro = (results[k]["p50_us"] for k in ("onnxruntime_predict", "sklearn_predict", "prophet_predict"))
    return {
        "trace": LATENCY_TRACE, "horizon_steps": HORIZON, "feature_rows": int(rows.shape[0]),
        "features": int(rows.shape[1]), "trees": int(model.p50.n_iter_ + model.p90.n_iter_), **results,
        "ratios_p50": {"prophet_over_onnxruntime": round(pro / ort, 1), "sklearn_over_onnxruntime": round(skl / ort, 1),
                       "sklearn_over_onnxruntime_end_to_end": round(
                           results["sklearn_forecast_end_to_end"]["p50_us"]
                           / results["onnxruntime_forecast_end_to_end"]["p50_us"], 1)},
        "pooled_trees": int(pooled.p50.n_iter_ + pooled.p90.n_iter_),
        "targets": {"prophet_over_onnxruntime_min": 1000, "sklearn_over_onnxruntime_min": 10,
                    "onnxruntime_p99_us_max": 200, "end_to_end_p50_us_max": 100},
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


def fleet(services: int, baseline_services: int, *, quick: bool) -> dict[str, Any]:
    """Today's per-service sessions against the pooled model, each fleet in a fresh process
    (``forecast_fleet.py``): ``baseline_services`` services both ways (the ratio), then
    ``services`` on the pooled model (the scale target)."""
    from forecast_fleet import fleet_histories, measure, traces_at_step

    from models.export import write_pooled_dirs
    from models.pooled import level_floor, train_pooled

    rounds = 2 if quick else 3
    traces = traces_at_step()
    own = {name: train(series, service=name) for name, series in traces.items()}
    pooled = train_pooled(traces)
    histories, sources = fleet_histories(services)
    with tempfile.TemporaryDirectory(prefix="harbinger-fleet-") as tmp:
        own_root, pooled_root = Path(tmp) / "own", Path(tmp) / "pooled"
        graphs = {name: to_onnx_graph(model) for name, model in own.items()}
        for i, service in enumerate(list(histories)[:baseline_services]):
            write_model_dir(dataclasses.replace(own[sources[i]], service=service), graphs[sources[i]],
                            own_root / service)
        write_pooled_dirs(pooled, {service: (pooled_root / service, level_floor(history.to_numpy(), pooled.config))
                                   for service, history in histories.items()})
        per_service = measure(own_root, baseline_services, rounds)
        pooled_same = measure(pooled_root, baseline_services, rounds)
        pooled_all = measure(pooled_root, services, rounds)
    return {
        "step_seconds": 900, "horizon_steps": HORIZON, "pooled_training_rows": pooled.n_rows,
        "per_service_sessions": per_service, "pooled_same_count": pooled_same, "pooled": pooled_all,
        "ratios": {
            "models_memory_per_service_over_pooled": round(per_service["models_mib"]
                                                           / max(pooled_same["models_mib"], 1.0), 1),
            "refresh_per_service_over_pooled": round(per_service["refresh_p50_seconds"]
                                                     / pooled_same["refresh_p50_seconds"], 2)},
        "targets": {"services": 10_000, "refresh_seconds_max": 10, "resident_mib_max": 2048},
    }


def _prophet_rows(earlier: dict[str, Any] | None, key: str) -> dict[str, dict[str, Any]] | None:
    """Prophet's scores per trace from an earlier report (with the folds they were scored on)."""
    if earlier is None:
        return None
    return {row["trace"]: row for row in earlier.get(key, []) if "prophet" in row["models"]}


def accuracy(folds: int, plot_dir: Path | None, *, with_events: bool, unseen: dict[str, Path],
             prophet: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every trace backtested with its pool: the other shared traces (each at this trace's step
    where its rows fit). With events, only the shared traces (the unseen ones have none).
    ``prophet`` (trace -> an earlier row) reuses Prophet's scores where the folds are the same."""
    from models.pooled import load_pool
    from models.series import load_csv

    shared = [(traces_dir() / f"{t.name}.csv", t.absent) for t in TRACES]
    cases: list[tuple[str, pd.Series, list[Any], str]] = [
        (t.name, load_trace(t.name), trace_events(t.name) if with_events else [], "shared") for t in TRACES]
    if not with_events:
        cases += [(name, load_csv(path, name=name), [], "unseen") for name, path in unseen.items()]
    rows = []
    for name, series, events, origin in cases:
        step = int((series.index[1] - series.index[0]).total_seconds())
        pool, notes = load_pool(shared, step, exclude=name)
        reused = (prophet or {}).get(name)
        baselines = ("seasonal-naive",) if reused else ("seasonal-naive", "prophet")
        result = backtest(series, events=events, service=name, config=BacktestConfig(folds=folds, baselines=baselines),
                          progress=ProgressBar(f"{name}{'' if with_events else ' (no events)'}"), pool=pool or None)
        if plot_dir is not None:
            plot_backtest(result, plot_dir / f"forecast-{name}.png")
        row = {**result.to_json(), "origin": origin, "pool": sorted(pool), "pool_notes": notes}
        if reused:
            if (reused["folds"], reused["test_start"], reused["step_seconds"]) != (
                    row["folds"], row["test_start"], row["step_seconds"]):
                raise SystemExit(f"--prophet-from: {name} was scored on other folds there; run without it")
            row["models"]["prophet"] = {**reused["models"]["prophet"], "reused": True}
        rows.append(row)
    return rows


def unseen_traces(out: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """The unseen traces' CSVs written into ``out``; the ones whose package is missing, and why."""
    made, missing = {}, {}
    for name, (package, make) in UNSEEN.items():
        try:
            made[name] = make(out)
        except ImportError:
            missing[name] = f"the package {package} is not installed (pip install {package})"
    return made, missing


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
    for name in ("numba", "prophet", "protobuf"):
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
    lines = [
        "# Forecaster benchmark", "",
        f"Generated {report['generated_at']} on {m['cpu']} ({m['cores']} cores), {m['platform']}, "
        f"Python {m['python']}, load average at start {m['load_average_at_start']}.",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in sorted(v.items())) + ".", ""]
    if "prophet_from" in report:
        lines += [f"Prophet's scores are those of the run of {report['prophet_from']} on the same folds "
                  "(Prophet does not depend on Harbinger).", ""]
    if "latency" in report:
        lines += speed_markdown(report)
    lines += accuracy_markdown(report)
    return "\n".join(lines)


def speed_markdown(report: dict[str, Any]) -> list[str]:
    lat, bat = report["latency"], report["batch"]
    lines = [
        f"## Latency: one service, {lat['horizon_steps']}-step horizon ({lat['trace']} model, "
        f"{lat['trees']} trees, {lat['features']} features)", "",
        "| path | p50 µs | p99 µs | runs |", "| --- | ---: | ---: | ---: |",
    ]
    for key in ("onnxruntime_predict", "sklearn_predict", "prophet_predict", "onnxruntime_forecast_end_to_end",
                "sklearn_forecast_end_to_end", "pooled_onnxruntime_forecast_end_to_end"):
        row = lat[key]
        lines.append(f"| {key.replace('_', ' ')} | {row['p50_us']:,.1f} | {row['p99_us']:,.1f} | {row['runs']} |")
    r = lat["ratios_p50"]
    lines += ["", f"Prophet / onnxruntime: **{r['prophet_over_onnxruntime']:,.0f}x** (target ≥ 1000x); "
              f"scikit-learn / onnxruntime: **{r['sklearn_over_onnxruntime']:,.1f}x** (target ≥ 10x), "
              f"end to end {r['sklearn_over_onnxruntime_end_to_end']:,.1f}x; onnxruntime p99 "
              f"**{lat['onnxruntime_predict']['p99_us']:.0f} µs** (target < 200 µs). One service end to end "
              f"(history to forecast): own model p50 **{lat['onnxruntime_forecast_end_to_end']['p50_us']:.0f} µs**, "
              f"pooled model p50 **{lat['pooled_onnxruntime_forecast_end_to_end']['p50_us']:.0f} µs** "
              f"({lat['pooled_trees']} trees; target ≤ 100 µs).", "",
              f"## Batch: {bat['services']} services, each with its own graph and session", "",
              f"Loading {bat['services']} model directories: {bat['load_seconds']} s, "
              f"{bat['resident_mib_for_sessions']} MiB resident. One batch forecast of all services: "
              f"p50 {bat['batch_forecast']['p50_us'] / 1000:,.1f} ms, **{bat['batch_per_service_us']:.0f} µs per "
              f"service**; one by one: p50 {bat['one_by_one_per_service']['p50_us']:.0f} µs, "
              f"p99 {bat['one_by_one_per_service']['p99_us']:.0f} µs per service.", ""]
    if "fleet" in report:
        f = report["fleet"]
        own, same, pooled = f["per_service_sessions"], f["pooled_same_count"], f["pooled"]
        lines += [f"## Fleet: per-service sessions against the pooled model ({f['step_seconds']} s step, "
                  f"{f['horizon_steps']}-step horizon, each fleet in a fresh process)", "",
                  "| fleet | services | sessions | models MiB | peak resident MiB | refresh p50 s | µs per service |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for label, row in (("per-service sessions", own), ("pooled", same), ("pooled", pooled)):
            lines.append(f"| {label} | {row['services']:,} | {row['sessions']:,} | {row['models_mib']:,.1f} | "
                         f"{row['rss_mib']['peak']:,.1f} | {row['refresh_p50_seconds']:.3f} | "
                         f"{row['per_service_us']:.0f} |")
        r = f["ratios"]
        lines += ["", f"At {own['services']:,} services the per-service sessions hold "
                  f"**{r['models_memory_per_service_over_pooled']:,.0f}x** the pooled model's memory and take "
                  f"**{r['refresh_per_service_over_pooled']:.2f}x** its refresh time. {pooled['services']:,} services "
                  f"on the pooled model: refresh **{pooled['refresh_p50_seconds']:.2f} s** (target ≤ 10 s), peak "
                  f"resident **{pooled['rss_mib']['peak']:,.0f} MiB** (target ≤ 2048 MiB).", ""]
    return lines


def accuracy_markdown(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for title, key in (("Accuracy without the events files (the headline)", "accuracy_without_events"),
                       ("Accuracy with the events files (shared traces)", "accuracy")):
        if key in report:
            lines += [f"## {title}: rolling-origin backtest, 24 h horizon", "", accuracy_table(report[key]), ""]
    if "accuracy" in report and "accuracy_without_events" in report:
        lines += ["## What the events files add (Harbinger MASE)", "", "| trace | without | with | gain |",
                  "| --- | ---: | ---: | ---: |"]
        without = {row["trace"]: row["models"]["harbinger"]["mase"] for row in report["accuracy_without_events"]}
        for row in report["accuracy"]:
            before, after = without.get(row["trace"], float("nan")), row["models"]["harbinger"]["mase"]
            lines.append(f"| {row['trace']} | {before:.3f} | {after:.3f} | {before - after:+.3f} |")
        lines.append("")
    if "estimators" in report:
        lines += ["## Estimator choice (20k training rows, default boosting size, up to 7 folds)", "",
                  "| estimator | trace | MASE | seasonal-naive MASE | P90 coverage | seconds |",
                  "| --- | --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {e['estimator']} | {e['trace']} | {e['mase']:.3f} | {e['seasonal_naive_mase']:.3f} | "
                  f"{e['coverage_p90']:.3f} | {e['seconds']} |" for e in report["estimators"]]
        lines.append("")
    return lines


def accuracy_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| trace | origin | step s | folds | served by | Harbinger MASE | own | pooled | seasonal-naive MASE "
             "(variant) | Prophet MASE | Harbinger sMAPE % | Harbinger P90 coverage | Prophet P90 coverage |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        models = row["models"]
        h, n = models["harbinger"], models[NAIVE_BEST]
        p = models.get("prophet", {})
        own = models.get("harbinger-own", h)["mase"]
        pooled = models.get("harbinger-pooled", {}).get("mase", float("nan"))
        lines.append(f"| {row['trace']} | {row.get('origin', 'shared')} | {row['step_seconds']} | {row['folds']} | "
                     f"{row.get('served_by', 'own')} | **{h['mase']:.3f}** | {own:.3f} | {pooled:.3f} | "
                     f"{n['mase']:.3f} ({n['variant']}) | {p.get('mase', float('nan')):.3f} | {h['smape']:.1f} | "
                     f"{h['coverage_p90']:.3f} | {p.get('coverage_p90', float('nan')):.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
