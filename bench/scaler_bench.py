"""Scaling benchmark: replay every shipped trace through the HPA, Harbinger and the oracle.

For each trace in ``../shared/data/traces``: train the real forecaster on the first 70 %
(``models.training.train``, exported to ONNX, served by onnxruntime), replay the last
30 % tick by tick (``scaler.simulate``) with the default profile (learned from the training
part: see docs/scaling.md), and report minutes under capacity, replica-hours and scaling
changes for each strategy, with Harbinger's figures as ratios to the HPA's measured in
the same run, and the oracle's beside them. Then, with the same trained forecaster, the
same replay under a few alternative profiles, so that the table shows what the default
rule trades: the issue's original P90 rule, the previous default (one traffic-weighted
peak / mean ratio instead of the dispersion), and the capacity model's one assumed value
(``target_utilization``) at 0.7 and 0.9. Writes ``bench/results/scaler.json`` and
``scaler.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchinfo import machine  # noqa: E402

from harbinger.profile import CapacityProfile  # noqa: E402
from harbinger_dev.traces import TRACES, traces_dir  # noqa: E402
from scaler.replay import Replay  # noqa: E402
from scaler.simulate import SimulationSetup, prepare, replay_prepared  # noqa: E402
from scaler.trace import burst_factor  # noqa: E402

#: The acceptance bar of the planner's issue.
UNDER_REDUCTION_BAR = 0.90
REPLICA_HOURS_BAR = 1.15


#: The previous default rule's label (replayed beside the default; learned per trace).
PREVIOUS_DEFAULT = "previous default: P90 peak / mean ratio"
#: Alternative profiles replayed beside the default: name -> fields changed from it.
ALTERNATIVES: dict[str, dict[str, Any]] = {
    # What the planner did before the capacity model (the rule, profile defaults).
    "P90 x 1.2 at the target": {"plan_quantile": "p90", "headroom": 0.2, "burst_factor": 1.0,
                                "burst_dispersion": 0.0},
    "target utilization 0.7": {"target_utilization": 0.7},
    "target utilization 0.9": {"target_utilization": 0.9},
}


def ratios(summary: dict[str, Any]) -> dict[str, float | None]:
    hpa, harbinger = summary["hpa"], summary["harbinger"]
    under = None if hpa["under_minutes"] == 0 else 1 - harbinger["under_minutes"] / hpa["under_minutes"]
    return {
        "under_minutes_reduction": None if under is None else round(under, 4),
        "replica_hours_ratio": round(harbinger["replica_hours"] / hpa["replica_hours"], 4),
        "oracle_replica_hours_ratio": round(summary["oracle"]["replica_hours"] / hpa["replica_hours"], 4),
    }


def meets_bar(summary: dict[str, Any]) -> bool:
    """At least 90 % fewer minutes under capacity than the HPA (when the HPA has none,
    Harbinger must have none either: 0 <= 10 % of 0) at <= 1.15x its replica-hours."""
    hpa, harbinger = summary["hpa"], summary["harbinger"]
    fewer = harbinger["under_minutes"] <= (1 - UNDER_REDUCTION_BAR) * hpa["under_minutes"]
    return bool(fewer and harbinger["replica_hours"] <= REPLICA_HOURS_BAR * hpa["replica_hours"])


def entry_for(result: Replay) -> dict[str, Any]:
    summary = result.summary()
    return {**summary, "ratios": ratios(summary), "meets_bar": meets_bar(summary),
            "profile": result.profile.model_dump()}


def run_trace(name: str) -> dict[str, Any]:
    path = traces_dir() / f"{name}.csv"
    started = time.monotonic()
    prepared = prepare(path, setup=SimulationSetup())
    if prepared.profile is None:
        assert prepared.no_profile_reason is not None
        raise prepared.no_profile_reason
    result = replay_prepared(prepared, prepared.profile)
    entry = entry_for(result)
    entry["replayed_days"] = round(len(result.demand) * prepared.trace.tick_seconds / 86_400, 2)
    entry["seconds"] = round(time.monotonic() - started, 1)
    entry["alternatives"] = {}
    # The previous default rule, learned from the same training part: one traffic-weighted
    # P90 peak / mean ratio at every level, no dispersion term.
    training = prepared.trace.demand[prepared.training_start_tick : prepared.first_tick]
    previous = {"burst_factor": burst_factor(training, prepared.trace.tick_seconds, prepared.forecaster.step_seconds),
                "burst_dispersion": 0.0}
    for label, changes in {PREVIOUS_DEFAULT: previous, **ALTERNATIVES}.items():
        profile = CapacityProfile.model_validate({**prepared.profile.model_dump(), **changes})
        entry["alternatives"][label] = entry_for(replay_prepared(prepared, profile))
    return entry


def _reduction(entry: dict[str, Any]) -> str:
    value = entry["ratios"]["under_minutes_reduction"]
    return "n/a (HPA 0)" if value is None else f"{100 * value:.1f} %"


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
        "Under capacity = demand above ready pods x rps_per_replica / target_utilization (saturation), "
        "for every strategy; the HPA targets rps_per_replica. "
        "Default profile: see docs/scaling.md. Bar: >= 90 % fewer minutes under capacity than the HPA "
        "at <= 1.15x its replica-hours.",
        "",
        "| trace | days | rps/replica (target) | burst dispersion | HPA under min | Harbinger under min "
        "| oracle under min | under reduction | HPA replica-h | Harbinger replica-h | oracle replica-h "
        "| Harbinger / HPA replica-h | oracle / HPA replica-h | changes HPA / Harbinger / oracle | bar met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in result["traces"]:
        r = t["ratios"]
        lines.append(
            f"| {t['trace']} | {t['replayed_days']} | {t['profile']['rps_per_replica']:.4g} "
            f"| {t['profile']['burst_dispersion']:.4g} "
            f"| {t['hpa']['under_minutes']:.1f} | {t['harbinger']['under_minutes']:.1f} "
            f"| {t['oracle']['under_minutes']:.1f} | {_reduction(t)} "
            f"| {t['hpa']['replica_hours']:.1f} | {t['harbinger']['replica_hours']:.1f} "
            f"| {t['oracle']['replica_hours']:.1f} | {r['replica_hours_ratio']:.3f} "
            f"| {r['oracle_replica_hours_ratio']:.3f} "
            f"| {t['hpa']['changes']} / {t['harbinger']['changes']} / {t['oracle']['changes']} "
            f"| {'yes' if t['meets_bar'] else 'no'} |")
    lines += [
        "",
        "Alternative profiles (same forecaster, same replay; each changes the default profile as named):",
        "",
        "| trace | profile | HPA under min | Harbinger under min | under reduction | Harbinger / HPA replica-h "
        "| bar met |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in result["traces"]:
        for label, alt in t["alternatives"].items():
            lines.append(
                f"| {t['trace']} | {label} | {alt['hpa']['under_minutes']:.1f} "
                f"| {alt['harbinger']['under_minutes']:.1f} | {_reduction(alt)} "
                f"| {alt['ratios']['replica_hours_ratio']:.3f} | {'yes' if alt['meets_bar'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    # No options: every trace, every profile, so that the results files are always complete;
    # --help says what the run does and writes.
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    result: dict[str, Any] = {"machine": machine(("numpy", "pandas", "scikit-learn", "onnxruntime", "pydantic")),
                              "traces": []}
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
