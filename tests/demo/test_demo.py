"""The replay demo (`make demo-replay`) in its fast mode, end to end: the planner's changes, stamped pods,
placements by bandwidth, a chaos rollback and a report, and nothing left running."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, traces_dir: Path) -> dict[str, object]:
    out = tmp_path_factory.mktemp("demo")
    result = subprocess.run([sys.executable, "-m", "harbinger_dev.demo", "--replay", "--fast", "--out", str(out)],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary: dict[str, object] = json.loads((out / "summary.json").read_text())
    summary["stdout"] = result.stdout
    summary["out"] = str(out)
    return summary


def test_the_planner_raised_floors_ahead_of_the_peak_callees_first(demo: dict[str, object]) -> None:
    changes = demo["floor_changes"]
    assert isinstance(changes, list) and any(c["to"] > c["from"] for c in changes), demo["stdout"]
    # Within one planner run (one plan time), upstream dependencies are raised before their
    # callers: payments before checkout before frontend.
    runs: dict[str, list[str]] = {}
    for change in changes:
        if change["to"] > change["from"]:
            runs.setdefault(change["trace_time"], []).append(change["service"])
    chain = ["payments", "checkout", "frontend"]
    for raised in runs.values():
        assert raised == sorted(raised, key=chain.index), runs
    assert any(len(raised) > 1 for raised in runs.values()), runs  # the ordering was exercised


def test_new_pods_were_stamped_and_warmup_pods_placed_by_bandwidth(demo: dict[str, object]) -> None:
    pods = demo["pods"]
    assert isinstance(pods, dict)
    stamped = [p for p in pods.values() if p["predicted_tps"]]
    assert stamped, demo["stdout"]
    assert all(p["egress_bandwidth"] and p["model_version"] for p in stamped)
    warmup = [p for p in pods.values() if p["warmup"]]
    assert warmup, demo["stdout"]
    # The extender never let a node's declared egress exceed its bandwidth, thin node included.
    for pod in stamped:
        assert pod["node_egress_bits"] <= pod["node_capacity_bits"], pod


def test_the_chaos_rehearsal_breached_rolled_back_and_reported(demo: dict[str, object]) -> None:
    chaos = demo["chaos"]
    assert isinstance(chaos, dict)
    assert chaos["breached"] and chaos["breach_service"] in {"frontend", "checkout"}
    assert chaos["rollback_seconds"] is not None and chaos["rollback_seconds"] < 5.0
    assert chaos["faults_left"] == 0
    report = Path(str(chaos["report"]))
    assert report.exists() and "data:image/png;base64," in report.read_text()


def test_nothing_is_left_running(demo: dict[str, object]) -> None:
    table = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(demo["out"]) not in table


def test_the_planner_recorded_each_plan_on_the_api(demo: dict[str, object]) -> None:
    stdout = str(demo["stdout"])
    listing = stdout[stdout.index("kubectl get capacityplans"):].splitlines()[1:5]
    assert listing[0].split()[:5] == ["NAME", "SERVICE", "MODEL", "NEXT", "PEAK"], stdout[-2000:]
    assert {line.split()[0] for line in listing[1:]} == {"frontend", "checkout", "payments"}, listing
