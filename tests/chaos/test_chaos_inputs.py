"""Bad input meets a clear error naming what was wrong: faults, experiments, annotation
files, failure history, forecasts, CLI flags. And the pure pieces: the annotation file
format round-trips, breaches are judged against baseline and SLO, reports name what broke."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from chaos.experiment import SLO, BackendKind, Experiment, FaultKind, load_experiments
from chaos.faults import ActiveFault, Fault, fault_from_annotations
from chaos.forecasts import load_forecasts
from chaos.incidents import load_incidents, parse_incidents
from chaos.monitor import Baseline, Queries, Sample, breaches, steady_state_violations
from chaos.record import BreachRecord, RollbackRecord, RunRecord, RunStatus, StepRecord
from chaos.report import analyse, render_html
from chaos.sidecar.podinfo import format_annotations, go_quote, parse_annotations, read_annotations, write_annotations
from harbinger import contract
from harbinger.cli import main
from harbinger.errors import InvalidInput

NOW = datetime(2025, 3, 1, tzinfo=UTC)


@given(st.dictionaries(st.from_regex(r"[a-z0-9./-]{1,30}", fullmatch=True), st.text(max_size=60), max_size=6))
def test_annotation_file_round_trips(annotations: dict[str, str]) -> None:
    assert parse_annotations(format_annotations(annotations), source="t") == annotations


def test_annotation_file_reads_what_the_kubelet_writes() -> None:
    text = ('harbinger.io/chaos-fault="{\\"abort_status\\":503}"\n'
            'note="tab\\there \\u00e9 \\x41"')
    assert parse_annotations(text, source="f") == {"harbinger.io/chaos-fault": '{"abort_status":503}',
                                                  "note": "tab\there é A"}
    assert go_quote('a"b\\c\n') == '"a\\"b\\\\c\\n"'
    with pytest.raises(InvalidInput, match=r"f:2: value is not a double-quoted string"):
        parse_annotations('a="1"\nb=2', source="f")


def test_fault_annotations_need_a_valid_fault_and_an_expiry() -> None:
    with pytest.raises(InvalidInput, match="must carry its expiry"):
        fault_from_annotations({contract.CHAOS_FAULT: '{"delay_ms": 10}'}, source="pod")
    with pytest.raises(InvalidInput, match="not JSON"):
        fault_from_annotations({contract.CHAOS_FAULT: "{", contract.CHAOS_EXPIRES: "2030-01-01T00:00:00Z"},
                               source="pod")
    with pytest.raises(InvalidInput, match="not an RFC 3339 time"):
        fault_from_annotations({contract.CHAOS_FAULT: '{"delay_ms": 10}', contract.CHAOS_EXPIRES: "soon"},
                               source="pod")
    with pytest.raises(InvalidInput, match="at least one of"):
        fault_from_annotations({contract.CHAOS_FAULT: "{}", contract.CHAOS_EXPIRES: "2030-01-01T00:00:00Z"},
                               source="pod")
    with pytest.raises(ValidationError, match="not a Kubernetes quantity"):
        Fault(bandwidth_bps="fast")


def test_experiments_refuse_inconsistent_definitions() -> None:
    base = {"name": "e", "target": "payments"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"kind": "error", "steps": [{"delay_ms": 10}]}, "needs a abort fault"),
        ({"kind": "dependency-failure", "steps": [{"abort_status": 503, "abort_percent": 50}]}, "100%"),
        ({"kind": "cpu", "backend": "istio", "steps": [{"cpu_cores": 1}]}, "only delays and aborts"),
        ({"kind": "latency", "caller": "checkout", "steps": [{"delay_ms": 10}]}, "needs the istio backend"),
        ({"kind": "latency", "name": "Bad_Name", "steps": [{"delay_ms": 10}]}, "not a lowercase DNS name"),
        ({"kind": "latency", "steps": []}, "at least 1"),
    ]
    for extra, message in cases:
        with pytest.raises(ValidationError, match=message):
            Experiment.model_validate({**base, **extra})
    ok = Experiment(name="e", kind=FaultKind.LATENCY, target="p", caller="c", backend=BackendKind.ISTIO,
                    steps=[Fault(delay_ms=5)])
    assert ok.watched() == ["p"]


def test_experiment_files_name_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: e\nkind: error\ntarget: p\nsteps: [{abort_status: 200}]\n")
    with pytest.raises(InvalidInput, match=r"bad.yaml: steps.0.abort_status"):
        load_experiments(path)
    path.write_text("- 1\n")
    with pytest.raises(InvalidInput, match="expected an experiment"):
        load_experiments(path)


def test_failure_history_errors_name_the_line(tmp_path: Path) -> None:
    text = "time,service,kind\n2025-01-01T00:00:00Z,db,oom\n2025-01-02T00:00:00Z,db,gremlins\n"
    with pytest.raises(InvalidInput, match=r"h.csv:3: unknown incident kind 'gremlins'"):
        parse_incidents(text, source="h.csv", json_format=False)
    with pytest.raises(InvalidInput, match=r"h.csv:1: CSV header must include"):
        parse_incidents("when,what\n", source="h.csv", json_format=False)
    path = tmp_path / "h.json"
    path.write_text(json.dumps([{"time": "2025-01-01T00:00:00Z", "service": "db", "kind": "5xx"}, {"service": "db"}]))
    with pytest.raises(InvalidInput, match=r"item 1: missing time, kind"):
        load_incidents(path)
    # Times are RFC 3339 with a zone, as everywhere in Harbinger: a bare date is refused, named.
    path.write_text(json.dumps([{"time": "2025-01-01", "service": "db", "kind": "timeout"}]))
    with pytest.raises(InvalidInput, match=r"item 0: '2025-01-01' is not an RFC 3339 time with a zone"):
        load_incidents(path)
    path.write_text(json.dumps([{"time": "2025-01-01T09:30:00+02:00", "service": "db", "kind": "timeout"}]))
    assert load_incidents(path)[0].kind is FaultKind.LATENCY


def test_forecast_files_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"service": "a", "start": "2025-01-01T00:00:00Z", "step_seconds": 60,
                                "p50": [1, 2], "p90": [2, -3]}))
    with pytest.raises(InvalidInput, match="p90 must be finite and non-negative"):
        load_forecasts(path)
    path.write_text(json.dumps([{"service": "a", "start": "2025-01-01T00:00:00Z", "step_seconds": 60,
                                 "p50": [1, 2], "p90": [2, 3], "model_version": "m1"}]))
    assert load_forecasts(path)["a"].peak_p90() == 3


def test_breaches_judge_against_slo_and_baseline() -> None:
    slo = SLO(max_error_rate=0.05, max_p99_seconds=0.5, min_throughput_ratio=0.5)
    base = Baseline(error_rate=0.0, p99_seconds=0.05, throughput_rps=40.0)
    calm = Sample("a", NOW, 0.01, 0.1, 39.0)
    assert breaches(calm, base, slo) == []
    bad = Sample("a", NOW, 0.2, 0.9, 10.0)
    assert [b.metric for b in breaches(bad, base, slo)] == ["error_rate", "p99_seconds", "throughput_rps"]
    no_data = Sample("a", NOW, None, None, None)
    assert [b.metric for b in breaches(no_data, base, slo)] == ["throughput_rps"]  # traffic vanished
    assert steady_state_violations({"a": Baseline(0.2, 0.1, 0.0)}, slo) == [
        "a: error rate 0.2 already above 0.05", "a: no traffic in the baseline, so nothing to judge"]
    query = Queries().render("error_rate", "pay", "ns", 4.2)
    assert 'job="pay",code=~"5.."' in query and "[5s]" in query
    assert 'destination_service_namespace="ns"' in Queries.istio().render("throughput", "pay", "ns", 30)


def test_report_names_the_service_and_step_and_weights_by_traffic() -> None:
    experiment = Experiment(
        name="latency-db", kind=FaultKind.LATENCY, target="db", watch=["api", "web"],
        steps=[Fault(delay_ms=ms) for ms in (100, 500, 1000)], slo=SLO(max_p99_seconds=0.8),
        predicted_rps={"api": 100.0, "web": 300.0, "db": 50.0})
    t = NOW
    record = RunRecord(
        run_id="r1", experiment=experiment, status=RunStatus.BREACHED, started=t, finished=t + timedelta(seconds=9),
        dwell_seconds=3,
        steps=[StepRecord(index=0, fault=experiment.steps[0], description="a", started=t, outcome="held"),
               StepRecord(index=1, fault=experiment.steps[1], description="b", started=t, outcome="breached")],
        breach=BreachRecord(service="api", metric="p99_seconds", value=1.2, limit=0.8, step_index=1, detected_at=t),
        rollback=RollbackRecord(reason="breach", started=t, finished=t, seconds=0.2, objects_restored=1))
    analysis = analyse(record)
    services = {s["service"]: s for s in analysis["services"]}
    assert services["api"]["broke"]["step"] == 2 and services["api"]["score"] == pytest.approx(1 / 3, abs=1e-3)
    assert services["web"]["broke"] is None and services["web"]["score"] == pytest.approx(1 / 3, abs=1e-3)
    assert services["web"]["weight"] == 0.75 and services["db"]["score"] is None
    assert "timeout" in analysis["weaknesses"][0]["change"]
    assert "api broke at step 2 of 3" in render_html(record, analysis)


def test_cli_bad_input_exits_2_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chaos", "generate"]) == 2
    assert "give --graph" in capsys.readouterr().err
    assert main(["chaos", "run", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["chaos", "sidecar", "--listen=nohost", "--upstream=127.0.0.1:1", "--annotations-file=x"]) == 2
    assert "--listen: expected HOST:PORT" in capsys.readouterr().err


def test_cli_generate_writes_a_ranked_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = tmp_path / "graph.yaml"
    graph.write_text("services: [frontend, checkout, payments]\n"
                     "edges: [{from: frontend, to: checkout}, {from: checkout, to: payments}]\n")
    history = tmp_path / "history.csv"
    history.write_text("time,service,kind\n2025-02-20T10:00:00Z,payments,5xx\n")
    out = tmp_path / "plan.yaml"
    assert main(["chaos", "generate", f"--graph={graph}", f"--incidents={history}", f"--out={out}",
                 "--now=2025-03-01T00:00:00Z", "--kinds", "error", "latency"]) == 0
    experiments = load_experiments(out)
    assert experiments[0].target == "payments" and experiments[0].kind is FaultKind.ERROR
    assert "error-payments" in capsys.readouterr().err


def test_sweep_prints_its_result_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``chaos sweep --all --json``: the fault left in an annotations file is removed and counted."""
    path = tmp_path / "annotations"
    left = ActiveFault(Fault(abort_status=503), datetime(2030, 1, 1, tzinfo=UTC), "left-behind")
    write_annotations(path, {"app": "payments", **left.annotations()})
    assert main(["chaos", "sweep", "--all", "--json", f"--annotations-file=payments={path}"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"swept": 1, "all": True}
    assert read_annotations(path) == {"app": "payments"}
