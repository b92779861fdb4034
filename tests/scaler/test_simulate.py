"""``harbinger simulate`` end to end on a slice of a shipped trace: the documented JSON, the
policy learned on the training part only, the plot, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harbinger.cli import main
from harbinger.errors import InvalidInput
from harbinger.profile import CapacityProfile
from scaler.replay import HPA_TARGETS
from scaler.simulate import SimulationSetup, read_profile, simulate

KEYS = ["violations", "replica_hours", "unserved_share", "changes"]


@pytest.fixture(scope="module")
def elb_slice(traces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first five days of the ELB trace (5-minute counts)."""
    lines = (traces_dir / "elb_request_count_8c0756.csv").read_text().splitlines()
    path = tmp_path_factory.mktemp("traces") / "elb_slice.csv"
    path.write_text("\n".join(lines[: 1 + 5 * 288]) + "\n")
    return path


def test_cli_prints_exactly_the_documented_json_as_its_last_line_and_a_plot(
        elb_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "curve.png"
    assert main(["simulate", "--trace", str(elb_slice), "--json", "--plot", str(png)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(printed) == ["trace", "step_seconds", "intervals", "hpa", "harbinger", "oracle"]
    assert (printed["trace"], printed["step_seconds"]) == ("elb_slice", 300)
    # The last 30 % of five days of 5-minute intervals, less the absent one.
    assert printed["intervals"] in (432, 431)
    assert [row["target"] for row in printed["hpa"]] == list(HPA_TARGETS)
    for row in printed["hpa"]:
        assert list(row) == ["target", *KEYS]
    assert list(printed["harbinger"]) == [*KEYS, "fallback_target"]
    assert printed["harbinger"]["fallback_target"] in HPA_TARGETS
    assert list(printed["oracle"]) == KEYS
    assert printed["oracle"]["violations"] == 0 and printed["oracle"]["unserved_share"] == 0
    # A lower target never buys fewer replica-hours.
    hours = [row["replica_hours"] for row in printed["hpa"]]
    assert hours == sorted(hours, reverse=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nothing_is_chosen_by_looking_at_the_scored_part(elb_slice: Path, tmp_path: Path) -> None:
    original = simulate(elb_slice)
    # The same training part, a different scored part: the same policy, the same service.
    lines = elb_slice.read_text().splitlines()
    split = 1 + int((len(lines) - 1) * 0.7) + 2
    changed = tmp_path / "elb_slice.csv"
    changed.write_text("\n".join(lines[:split] + [f"{line.split(',')[0]},{float(line.split(',')[1]) * 3}"
                                                  for line in lines[split:]]) + "\n")
    other = simulate(changed)
    assert other.policy == original.policy and other.service == original.service
    assert other.hpa[0.8] != original.hpa[0.8]


def test_a_profile_sets_the_pods_capacity_for_every_strategy(elb_slice: Path, tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text("rps_per_replica: 0.04\ntarget_utilization: 0.8\nwarmup_seconds: 90\nmax_replicas: 500\n")
    result = simulate(elb_slice, profile=read_profile(profile, "elb_slice"),
                      setup=SimulationSetup(replay_days=0.5))
    assert result.service.saturation == pytest.approx(0.05) and result.service.warmup_seconds == 90
    assert 143 <= result.intervals <= 144  # half a day of 5-minute intervals (one may be absent)
    assert result.oracle.violations == 0


def test_bad_input_is_refused_with_what_was_wrong(elb_slice: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rps_per_replica: -1\n")
    with pytest.raises(InvalidInput, match="rps_per_replica"):
        read_profile(bad, "elb")
    assert main(["simulate", "--trace", str(elb_slice), "--profile", str(bad)]) == 2
    assert "rps_per_replica" in capsys.readouterr().err
    broken = tmp_path / "broken.csv"
    broken.write_text("timestamp,value\n2024-01-01T00:00:00Z,5\n2024-01-01T00:05:00Z,oops\n")
    assert main(["simulate", "--trace", str(broken)]) == 2
    assert "broken.csv:3" in capsys.readouterr().err
    assert main(["simulate", "--trace", str(elb_slice), "--window", "50"]) == 2
    assert "--window" in capsys.readouterr().err
    assert main(["simulate", "--trace", str(elb_slice), "--train-fraction", "1.5"]) == 2
    assert "training fraction" in capsys.readouterr().err


def test_read_profile_takes_the_traces_service_from_a_planner_profiles_file(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text("defaults: {warmup_seconds: 30}\nservices:\n  elb: {rps_per_replica: 2}\n")
    assert read_profile(path, "elb") == CapacityProfile(rps_per_replica=2, warmup_seconds=30)
    assert read_profile(path, "other") == CapacityProfile(warmup_seconds=30)
