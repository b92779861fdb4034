"""A fleet of services forecast at once: per-service sessions against the pooled model.

Used by ``forecast_bench.py``. Each measurement runs in a child process of its own
(``python bench/forecast_fleet.py --child ...``), so that its resident memory is the fleet's
and nothing else's: the parent has trained models, Prophet and the traces in memory.

The services are synthetic but shaped like real ones: each is one of the shared traces,
cut at a random whole number of weeks before its end (so that its time of week matches the
fleet's common "now"), rescaled by a factor between 0.1x and 100x and given 5 % of
independent noise. All share one 15-minute grid ending at the same instant, as services
queried from one Prometheus do. nyc_taxi's half-hours are spread over two 15-minute steps.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STEP = 900
WINDOW_DAYS = 21  # the weekly layout's window: three weeks
HORIZON = 24
#: A Monday 00:00 UTC: the fleet's "now".
NOW = pd.Timestamp("2026-11-30T00:00:00Z")


def traces_at_step() -> dict[str, pd.Series]:
    """The shared traces on the 15-minute grid."""
    from harbinger_dev.traces import TRACES, profile, traces_dir
    from models.errors import BadSeries
    from models.series import load_csv

    found = {}
    for trace in TRACES:
        path = traces_dir() / f"{trace.name}.csv"
        try:
            found[trace.name] = load_csv(path, step_seconds=STEP, absent=profile(trace.name).absent)
        except BadSeries:  # a coarser trace: each of its steps spread over 15 minutes
            coarse = load_csv(path, absent=profile(trace.name).absent)
            found[trace.name] = coarse.resample(f"{STEP}s").ffill()
    return found


def fleet_histories(services: int, seed: int = 0) -> tuple[dict[str, pd.Series], list[str]]:
    """``services`` histories on one grid ending at :data:`NOW`, and the trace each came from."""
    traces = traces_at_step()
    names = list(traces)
    window = WINDOW_DAYS * 86_400 // STEP
    index = pd.date_range(end=NOW - pd.Timedelta(seconds=STEP), periods=window, freq=f"{STEP}s")
    rng = np.random.default_rng(seed)
    now_of_week = int((NOW.value // 10**9 - 4 * 86_400) % (7 * 86_400)) // STEP  # epoch + 4 days: a Monday
    ends: dict[str, np.ndarray] = {}
    for name, series in traces.items():
        stamps = series.index.asi8 // 10**9
        of_week = ((stamps - 4 * 86_400) % (7 * 86_400)) // STEP
        # Positions whose step is NOW's step of the week, with at least two days of history before.
        candidates = np.flatnonzero(of_week == now_of_week)
        ends[name] = candidates[candidates >= 2 * 86_400 // STEP]
    histories: dict[str, pd.Series] = {}
    sources = []
    for i in range(services):
        name = names[i % len(names)]
        values = traces[name].to_numpy(dtype=np.float64)
        end = int(rng.choice(ends[name]))
        cut = np.full(window, np.nan)
        start = max(0, end - window)
        cut[window - (end - start) :] = values[start:end]
        scale = 10 ** rng.uniform(-1, 2)
        noisy = cut * scale * rng.lognormal(0.0, 0.05, window)
        histories[f"svc-{i:05d}"] = pd.Series(noisy, index=index)
        sources.append(name)
    return histories, sources


def rss_mib() -> tuple[float, float]:
    """Resident and peak resident (VmHWM) MiB of this process."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found["VmRSS"], found["VmHWM"]


def child(model_root: Path, services: int, rounds: int) -> dict[str, Any]:
    """Load ``services`` model directories (``model_root/svc-NNNNN``), forecast the fleet
    ``rounds`` times; memory before and after, and the time of each refresh."""
    from models.serving import ForecasterBatch

    base_rss, _ = rss_mib()
    histories, _ = fleet_histories(services)
    histories_rss, _ = rss_mib()
    began = time.perf_counter()
    batch = ForecasterBatch.load_dirs(model_root / service for service in histories)
    load_seconds = time.perf_counter() - began
    loaded_rss, _ = rss_mib()
    sessions = len({id(f.session) for f in batch.forecasters.values()})
    times = []
    gc.collect()
    for _ in range(rounds):
        began = time.perf_counter()
        forecasts = batch.forecast(histories, horizon_steps=HORIZON)
        times.append(time.perf_counter() - began)
    final_rss, peak_rss = rss_mib()
    assert len(forecasts) == services
    return {"services": services, "sessions": sessions, "load_seconds": round(load_seconds, 2),
            "refresh_seconds": [round(t, 3) for t in times], "refresh_p50_seconds": round(float(np.median(times)), 3),
            "per_service_us": round(float(np.median(times)) / services * 1e6, 2),
            "rss_mib": {"interpreter": round(base_rss, 1), "with_histories": round(histories_rss, 1),
                        "with_models": round(loaded_rss, 1), "after_refresh": round(final_rss, 1),
                        "peak": round(peak_rss, 1)},
            "models_mib": round(loaded_rss - histories_rss, 1)}


def measure(model_root: Path, services: int, rounds: int) -> dict[str, Any]:
    """:func:`child` in a fresh interpreter."""
    done = subprocess.run([sys.executable, __file__, "--child", str(model_root), "--services", str(services),
                           "--rounds", str(rounds)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"fleet child failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", type=Path, required=True)
    parser.add_argument("--services", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "dev"))
    print(json.dumps(child(args.child, args.services, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
