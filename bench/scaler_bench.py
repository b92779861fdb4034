"""Scaling benchmark: replay every shipped trace through the HPA, Harbinger and the oracle.

For each trace in ``../shared/data/traces``: train the real forecaster on the first 70 %
(``models.training.train``, exported to ONNX, served by onnxruntime), replay the last
30 % tick by tick (``scaler.simulate``) with the default profile (sized to the training
part: see docs/scaling.md), and report minutes under capacity, replica-hours and scaling
changes for each strategy, with Harbinger's figures as ratios to the HPA's measured in
the same run, and the oracle's beside them. Writes ``bench/results/scaler.json`` and
``scaler.md``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from models.traces import TRACES, traces_dir  # noqa: E402
from scaler.simulate import SimulationSetup, simulate  # noqa: E402

#: The acceptance bar of the planner's issue.
UNDER_REDUCTION_BAR = 0.90
REPLICA_HOURS_BAR = 1.15


def machine() -> dict[str, Any]:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "absent"

    return {
        "platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": {p: version(p) for p in ("numpy", "pandas", "scikit-learn", "onnxruntime", "pydantic")},
    }


def ratios(summary: dict[str, Any]) -> dict[str, float | None]:
    hpa, harbinger = summary["hpa"], summary["harbinger"]
    under = None if hpa["under_minutes"] == 0 else 1 - harbinger["under_minutes"] / hpa["under_minutes"]
    return {
        "under_minutes_reduction": None if under is None else round(under, 4),
        "replica_hours_ratio": round(harbinger["replica_hours"] / hpa["replica_hours"], 4),
        "oracle_replica_hours_ratio": round(summary["oracle"]["replica_hours"] / hpa["replica_hours"], 4),
    }


def run_trace(name: str) -> dict[str, Any]:
    path = traces_dir() / f"{name}.csv"
    started = time.monotonic()
    result = simulate(path, setup=SimulationSetup())
    summary = result.summary()
    profile = result.profile
    entry: dict[str, Any] = {
        **summary,
        "ratios": ratios(summary),
        "profile": profile.model_dump(),
        "replayed_days": round(len(result.demand) * 15 / 86_400, 2),
        "seconds": round(time.monotonic() - started, 1),
    }
    entry["meets_bar"] = bool(
        entry["ratios"]["under_minutes_reduction"] is not None
        and entry["ratios"]["under_minutes_reduction"] >= UNDER_REDUCTION_BAR
        and entry["ratios"]["replica_hours_ratio"] <= REPLICA_HOURS_BAR)
    return entry


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# Scaling: trace replay (HPA vs Harbinger vs oracle)",
        "",
        f"Machine: {m['platform']}, {m['cpus']} CPUs, Python {m['python']}, load average at start "
        f"{m['load_average_at_start']}. Packages: "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".",
        "",
        "Forecaster trained on the first 70 % of each trace; the last 30 % replayed every 15 s. "
        "Default profile: see docs/scaling.md. Bar: >= 90 % fewer minutes under capacity than the HPA "
        "at <= 1.15x its replica-hours.",
        "",
        "| trace | days | rps/replica | HPA under min | Harbinger under min | oracle under min | under reduction "
        "| HPA replica-h | Harbinger replica-h | oracle replica-h | Harbinger / HPA replica-h "
        "| changes HPA / Harbinger / oracle | bar met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in result["traces"]:
        r = t["ratios"]
        reduction = "n/a" if r["under_minutes_reduction"] is None else f"{100 * r['under_minutes_reduction']:.1f} %"
        lines.append(
            f"| {t['trace']} | {t['replayed_days']} | {t['profile']['rps_per_replica']:.4g} "
            f"| {t['hpa']['under_minutes']:.1f} | {t['harbinger']['under_minutes']:.1f} "
            f"| {t['oracle']['under_minutes']:.1f} | {reduction} "
            f"| {t['hpa']['replica_hours']:.1f} | {t['harbinger']['replica_hours']:.1f} "
            f"| {t['oracle']['replica_hours']:.1f} | {r['replica_hours_ratio']:.3f} "
            f"| {t['hpa']['changes']} / {t['harbinger']['changes']} / {t['oracle']['changes']} "
            f"| {'yes' if t['meets_bar'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    result: dict[str, Any] = {"machine": machine(), "traces": []}
    for trace in TRACES:
        print(f"scaler bench: {trace.name} ...", flush=True)
        entry = run_trace(trace.name)
        print(f"scaler bench: {trace.name}: {json.dumps({k: entry[k] for k in ('hpa', 'harbinger', 'oracle')})} "
              f"({entry['seconds']} s)", flush=True)
        result["traces"].append(entry)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "scaler.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "scaler.md").write_text(markdown(result))
    print(f"scaler bench: wrote {out / 'scaler.json'} and scaler.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
