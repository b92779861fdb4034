"""Reports: from a run record to what the run found (``analyse``), kept as JSON and shown as
one self-contained HTML page (plots inlined as base64 PNG, no external files).

Resilience score of a service: the share of the ramp's steps it held (1.0 = it held
every step). The run's score weights each service's by its predicted peak traffic, so a
weakness in the busiest service costs the most.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from chaos.bands import band_summary
from chaos.experiment import FaultKind
from chaos.record import RunRecord, RunStatus
from harbinger.extras import missing

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
RUN_JSON = "run.json"


def _services(record: RunRecord) -> list[str]:
    exp = record.experiment
    return list(dict.fromkeys([*exp.watched(), exp.target]))


def analyse(record: RunRecord) -> dict[str, Any]:
    exp = record.experiment
    planned = len(exp.steps)
    held = sum(1 for s in record.steps if s.outcome == "held")
    judged = record.status in (RunStatus.HELD, RunStatus.BREACHED)
    breach = record.breach
    services = []
    for name in _services(record):
        broke = breach is not None and breach.service == name
        steps_held = breach.step_index if broke and breach else held
        entry: dict[str, Any] = {
            "service": name,
            "role": "target" if name == exp.target else "caller",
            "predicted_rps": exp.predicted_rps.get(name),
            "watched": name in exp.watched(),
            "steps_held": steps_held,
            "score": round(steps_held / planned, 4) if judged and name in exp.watched() else None,
            "broke": None,
            "forecast": None if name not in record.forecasts else band_summary(
                record.forecasts[name], [s for s in record.samples if s.service == name]),
        }
        if broke and breach:
            step = exp.steps[breach.step_index]
            entry["broke"] = {
                "step": breach.step_index + 1, "of": planned, "intensity": step.describe(),
                "metric": breach.metric, "value": breach.value, "limit": breach.limit,
            }
        services.append(entry)
    scored = [s for s in services if s["score"] is not None]
    weights = {s["service"]: s["predicted_rps"] or 0.0 for s in scored}
    total = sum(weights.values())
    for s in scored:
        s["weight"] = round(weights[s["service"]] / total, 4) if total else round(1 / len(scored), 4)
    resilience = round(sum(s["score"] * s["weight"] for s in scored), 4) if scored else None
    return {
        "run_id": record.run_id,
        "experiment": exp.name,
        "kind": exp.kind.value,
        "target": exp.target,
        "status": record.status.value,
        "steps_planned": planned,
        "steps_reached": len(record.steps),
        "steps": [{"step": s.index + 1, "intensity": s.description, "outcome": s.outcome,
                   "started": s.started.isoformat(), "ended": s.ended.isoformat() if s.ended else None}
                  for s in record.steps],
        "breach": None if breach is None else {
            "service": breach.service, "step": breach.step_index + 1,
            "intensity": exp.steps[breach.step_index].describe(), "metric": breach.metric,
            "value": breach.value, "limit": breach.limit, "detected_at": breach.detected_at.isoformat(),
            "predicted_rps": exp.predicted_rps.get(breach.service),
        },
        "rollback": None if record.rollback is None else record.rollback.model_dump(mode="json"),
        "targets": record.targets,
        "services": services,
        "resilience_score": resilience,
        "weaknesses": weaknesses(record),
        "notes": record.notes,
    }


def weaknesses(record: RunRecord) -> list[dict[str, str]]:
    """What broke, and what to change, by the kind of fault and the figure that left the steady state."""
    breach = record.breach
    if breach is None:
        return []
    exp = record.experiment
    victim, target = breach.service, exp.target
    intensity = exp.steps[breach.step_index].describe()
    rps = exp.predicted_rps.get(victim)
    at_load = f" at a predicted peak of {rps:g} req/s" if rps else ""
    if exp.kind in (FaultKind.CPU, FaultKind.MEMORY, FaultKind.BANDWIDTH):
        pods = f"{exp.pods} pod(s)" if exp.pods else "every pod"
        change = (f"{target} has too few replicas, or too small resource requests, to serve its predicted "
                  f"peak with {pods} degraded: raise the headroom or min_replicas in its capacity profile"
                  + (", and check the requests the webhook sizes" if exp.kind is not FaultKind.BANDWIDTH
                     else ", or spread pods to nodes with more bandwidth headroom"))
    elif exp.kind is FaultKind.DEPENDENCY_FAILURE:
        change = (f"{victim} fails with {target}: put a circuit breaker on calls to {target} and serve a "
                  "degraded answer (cached or partial) while it is down")
    elif breach.metric == "error_rate":
        change = (f"{victim} passes {target}'s errors on to its own callers: retry idempotent calls to "
                  f"{target} with backoff and a retry budget, or fall back")
    elif breach.metric == "p99_seconds":
        change = (f"{victim} waits for slow answers from {target}: set a timeout on calls to {target} well "
                  f"below {victim}'s own p99 objective ({exp.slo.max_p99_seconds:g}s) and fail fast or fall back")
    else:
        change = (f"{victim}'s throughput collapses when {target} degrades: bound concurrent calls to "
                  f"{target} (bulkhead) and add a circuit breaker so slow calls cannot starve it")
    return [{
        "service": victim,
        "finding": f"{victim} left its steady state ({breach.metric} {breach.value:.4g} beyond "
                   f"{breach.limit:.4g}) at step {breach.step_index + 1} of {len(exp.steps)}: {intensity}"
                   f" in {target}{at_load}",
        "change": change,
    }]


def _plot(record: RunRecord) -> str:
    """Error rate, p99 and throughput over time for every watched service, as a base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True)
    try:
        origin = record.started
        metrics = (("error_rate", "error rate"), ("p99_seconds", "p99 latency (s)"),
                   ("throughput_rps", "throughput (req/s)"))
        for service in record.experiment.watched():
            points = [s for s in record.samples if s.service == service]
            xs = [(p.time - origin).total_seconds() for p in points]
            for axis, (field, _) in zip(axes, metrics, strict=True):
                ys = [getattr(p, field) for p in points]
                axis.plot(xs, [y if y is not None else float("nan") for y in ys], marker=".", label=service)
        for axis, (_, label) in zip(axes, metrics, strict=True):
            axis.set_ylabel(label)
            axis.grid(alpha=0.3)
            for step in record.steps:
                start = (step.started - origin).total_seconds()
                axis.axvline(start, color="grey", linestyle=":", linewidth=0.8)
            if record.breach:
                axis.axvline((record.breach.detected_at - origin).total_seconds(), color="red", linewidth=1.2)
            if record.rollback:
                axis.axvline((record.rollback.finished - origin).total_seconds(), color="green", linewidth=1.2)
        for step in record.steps:
            axes[0].annotate(f"step {step.index + 1}", ((step.started - origin).total_seconds(), 1),
                             xycoords=("data", "axes fraction"), fontsize=7, va="top", rotation=90)
        axes[0].legend(loc="upper left", fontsize=8)
        _draw_bands(axes[-1], record)
        axes[-1].set_xlabel("seconds since the run started (dotted: steps, red: breach, green: faults removed)")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90)
    finally:
        plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _draw_bands(axis: Any, record: RunRecord) -> None:
    """Each watched service's forecast as a P50 line and a shaded P50-P90 band, step by step,
    behind its measured throughput."""
    origin = record.started
    colours = {line.get_label(): line.get_color() for line in axis.get_lines()}
    for service in record.experiment.watched():
        band = record.forecasts.get(service)
        if band is None:
            continue
        edges = [(band.start - origin).total_seconds() + band.step_seconds * i for i in range(len(band.p50) + 1)]
        colour = colours.get(service)
        axis.stairs(band.p90, edges, baseline=band.p50, fill=True, alpha=0.15, color=colour,
                    label=f"{service} forecast P50-P90")
        axis.stairs(band.p50, edges, linestyle="--", linewidth=0.8, color=colour)
    if record.forecasts:
        span = [(s.time - origin).total_seconds() for s in record.samples]
        if span:  # the band reaches a step either side: keep the run itself in view
            axis.set_xlim(min(span) - 5, max(span) + 5)
        axis.legend(loc="upper left", fontsize=7)


def _forecast_table(analysis: dict[str, Any]) -> str:
    rows = [[s["service"], f["model_version"] or "-", f"{f['p50_mean']:g}", f"{f['p90_max']:g}",
             "-" if f["actual_mean"] is None else f"{f['actual_mean']:g}",
             "-" if f["share_within_band"] is None else f"{f['share_within_band']:.0%}",
             "-" if f["share_below_p90"] is None else f"{f['share_below_p90']:.0%}"]
            for s in analysis["services"] if (f := s.get("forecast"))]
    if not rows:
        return "<p>No forecast was available for this run.</p>"
    return _table(rows, ["service", "model", "forecast P50 mean (req/s)", "forecast P90 max (req/s)",
                         "measured mean (req/s)", "samples within P50-P90", "samples at or below P90"])


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(record: RunRecord, analysis: dict[str, Any]) -> str:
    exp = record.experiment
    esc = html.escape
    breach = analysis["breach"]
    rollback = analysis["rollback"]
    headline = (f"{breach['service']} broke at step {breach['step']} of {analysis['steps_planned']} "
                f"({breach['intensity']} in {exp.target})" if breach else
                f"status: {analysis['status']}; {analysis['steps_reached']} of {analysis['steps_planned']} steps")
    steps = _table([[str(s["step"]), s["intensity"], s["outcome"], s["started"]] for s in analysis["steps"]],
                   ["step", "intensity", "outcome", "started"])
    services = _table([[s["service"], s["role"], f"{s['predicted_rps']:g}" if s["predicted_rps"] else "-",
                        f"{s['score']:.2f}" if s["score"] is not None else "-",
                        f"{s.get('weight', 0):.2f}" if s["score"] is not None else "-",
                        f"step {s['broke']['step']}: {s['broke']['intensity']}" if s["broke"] else "held"]
                       for s in analysis["services"]],
                      ["service", "role", "predicted peak (req/s)", "resilience", "weight", "broke at"])
    weak = "".join(f"<li><b>{esc(w['finding'])}</b><br>What to change: {esc(w['change'])}</li>"
                   for w in analysis["weaknesses"]) or "<li>none found at these intensities</li>"
    rollback_text = "nothing injected"
    if rollback:
        since = "the breach was detected" if breach else "rollback started"
        rollback_text = (f"{rollback['objects_restored']} object(s) restored {rollback['seconds']:.3f} s after "
                         f"{since} ({rollback['reason']})"
                         + (f"; error: {rollback['error']}" if rollback.get("error") else ""))
    score = analysis["resilience_score"]
    plot = _plot(record) if record.samples and not missing("plots") else ""
    notes = "".join(f"<li>{esc(n)}</li>" for n in analysis["notes"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Harbinger chaos: {esc(record.run_id)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}
.headline{{font-size:1.2em;padding:.5em;background:{'#fde2e2' if breach else '#e2f5e2'}}}</style></head>
<body><h1>Chaos run {esc(record.run_id)}</h1>
<p class="headline">{esc(headline)}</p>
<p>Experiment <b>{esc(exp.name)}</b>: {esc(exp.kind.value)} in <b>{esc(exp.target)}</b>
(namespace {esc(exp.namespace)}, {esc(exp.backend.value)} backend), watching {esc(', '.join(exp.watched()))};
dwell {record.dwell_seconds:g} s per step. Faults on: {esc('; '.join(record.targets) or '-')}.</p>
<p>Resilience score (weighted by predicted traffic): <b>{'-' if score is None else f'{score:.2f}'}</b>.
Rollback: {esc(rollback_text)}.</p>
<h2>Steps</h2>{steps}
<h2>Services</h2>{services}
<h2>Weaknesses</h2><ul>{weak}</ul>
{f'<h2>Notes</h2><ul>{notes}</ul>' if notes else ''}
<h2>Forecast against actual</h2>{_forecast_table(analysis)}
<h2>Metrics over time</h2>
{f'<img alt="metrics over time" src="data:image/png;base64,{plot}">' if plot else
 '<p>no samples</p>' if not record.samples else
 "<p>No plot: it needs Harbinger's 'plots' extra (pip install 'harbinger[plots]').</p>"}
<h2>Experiment</h2><pre>{esc(json.dumps(exp.model_dump(mode="json", exclude_none=True), indent=2))}</pre>
</body></html>
"""


def write_report(record: RunRecord, directory: Path) -> dict[str, Any]:
    """``run.json``, ``report.json`` and ``report.html`` in ``directory``; returns the analysis."""
    directory.mkdir(parents=True, exist_ok=True)
    record.save(directory / RUN_JSON)
    analysis = analyse(record)
    (directory / REPORT_JSON).write_text(json.dumps(analysis, indent=2))
    (directory / REPORT_HTML).write_text(render_html(record, analysis))
    return analysis
