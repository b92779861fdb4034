"""``harbinger simulate`` end to end with the real forecaster (trained, exported to ONNX,
served by onnxruntime) on a short slice of a shipped trace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harbinger.cli import main
from harbinger.errors import InvalidInput
from harbinger.profile import CapacityProfile
from models.training import TrainingConfig
from scaler.plan import in_step_peak
from scaler.simulate import Prepared, SimulationSetup, default_profile, prepare, read_profile, replay_prepared
from scaler.trace import burst_dispersion

#: Training rows capped so that the test trains in seconds; the bench trains in full.
QUICK = TrainingConfig(max_rows=3000)


@pytest.fixture(scope="module")
def elb_slice(traces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first five days of the ELB trace (5-minute counts)."""
    lines = (traces_dir / "elb_request_count_8c0756.csv").read_text().splitlines()
    path = tmp_path_factory.mktemp("traces") / "elb_slice.csv"
    path.write_text("\n".join(lines[: 1 + 5 * 288]) + "\n")
    return path


@pytest.fixture(scope="module")
def prepared(elb_slice: Path) -> Prepared:
    return prepare(elb_slice, setup=SimulationSetup(train_fraction=0.7, training=QUICK))


def test_simulate_replays_the_untrained_part_with_the_real_forecaster(prepared: Prepared) -> None:
    assert prepared.profile is not None
    result = replay_prepared(prepared, prepared.profile)
    days = len(result.demand) * 15 / 86_400
    assert 1.3 < days < 1.6  # the last 30 % of 5 days
    assert result.oracle.under_minutes == 0
    assert 5 <= result.oracle.replicas.max() <= 60  # the default profile sizes a replica to the trace
    summary = result.summary()
    assert summary["trace"] == "elb_slice"
    for strategy in ("hpa", "harbinger", "oracle"):
        assert set(summary[strategy]) == {"under_minutes", "replica_hours", "changes"}  # type: ignore[arg-type]


def test_the_default_profile_is_learned_from_the_training_part(prepared: Prepared) -> None:
    profile = prepared.profile
    assert profile is not None
    assert (profile.plan_quantile, profile.headroom, profile.target_utilization) == ("p50", 0.0, 0.8)
    # 5-minute counts inside a 15-minute forecast step: the peak interval is well above the mean,
    # by the learned dispersion x sqrt(mean), not by one ratio.
    assert prepared.forecaster.step_seconds == 900
    assert profile.burst_factor == 1.0
    training = prepared.trace.demand[prepared.training_start_tick : prepared.first_tick]
    assert profile.burst_dispersion == burst_dispersion(training, 15, 900) > 0
    # Learned from the training part only: the replayed part does not change it.
    assert default_profile(training, step_seconds=900) == profile
    assert default_profile(training).burst_dispersion == 0.0  # no forecast step given: nothing learned
    # Its margin is a larger share of a quiet step's mean than of a busy one's.
    quiet, busy = np.nanpercentile(training, [10, 90])
    assert in_step_peak(quiet, profile) / quiet > in_step_peak(busy, profile) / busy
    # Planner-only fields change Harbinger, never the HPA it is compared with.
    plain = profile.model_copy(update={"burst_dispersion": 0.0})
    with_burst, without = replay_prepared(prepared, profile), replay_prepared(prepared, plain)
    assert with_burst.hpa.figures() == without.hpa.figures()
    assert np.array_equal(with_burst.hpa.replicas, without.hpa.replicas)
    assert with_burst.harbinger.replica_hours > without.harbinger.replica_hours
    assert with_burst.harbinger.under_minutes <= without.harbinger.under_minutes


def test_cli_prints_exactly_the_documented_json_and_a_plot(elb_slice: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text("rps_per_replica: 0.05\nwarmup_seconds: 90\nmax_replicas: 500\n")
    png = tmp_path / "replay.png"
    assert main(["simulate", "--trace", str(elb_slice), "--profile", str(profile), "--json",
                 "--plot", str(png), "--replay-days", "0.5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == ["trace", "hpa", "harbinger", "oracle"]
    assert printed["oracle"]["under_minutes"] == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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


def test_read_profile_takes_the_traces_service_from_a_planner_profiles_file(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text("defaults: {warmup_seconds: 30}\nservices:\n  elb: {rps_per_replica: 2}\n")
    assert read_profile(path, "elb") == CapacityProfile(rps_per_replica=2, warmup_seconds=30)
    assert read_profile(path, "other") == CapacityProfile(warmup_seconds=30)
