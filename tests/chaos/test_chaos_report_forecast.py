"""The chaos report shows the forecast the rehearsal ran against: each watched service's
P50-P90 band next to its measured traffic, in the plot, the table and report.json."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from chaos.bands import band_at, forecast_bands, with_bands
from chaos.experiment import Experiment, FaultKind
from chaos.faults import Fault
from chaos.record import ForecastBand, RunRecord, RunStatus, SampleRecord, StepRecord
from chaos.report import _draw_bands, analyse, write_report
from harbinger.errors import InvalidInput
from models.forecast import Forecast

T0 = datetime(2031, 3, 2, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def forecast(service: str, p50: list[float], *, start: datetime = T0 - timedelta(minutes=10)) -> Forecast:
    values = np.asarray(p50, dtype=float)
    return Forecast(service, "m7", start, 300, values, values * 1.5)


def test_a_band_is_the_forecast_over_the_run_and_one_step_either_side() -> None:
    forecasts = {"frontend": forecast("frontend", [float(i) for i in range(12)]),
                 "late": forecast("late", [1.0] * 3, start=T0 + timedelta(hours=3)),
                 "broken": forecast("broken", [1.0, float("nan"), 1.0, 1.0, 1.0, 1.0])}
    bands = forecast_bands(forecasts, ["frontend", "late", "broken", "unknown"], T0, T0 + timedelta(minutes=7))
    assert set(bands) == {"frontend"}  # no overlap, non-finite values, no forecast: no band
    band = bands["frontend"]
    # The run covers steps 2 (12:00-12:05) and 3 (12:05-12:10); one either side: 1..4.
    assert (band.start, band.p50, band.p90) == (T0 - timedelta(minutes=5), [1.0, 2.0, 3.0, 4.0], [1.5, 3.0, 4.5, 6.0])
    assert band_at(band, T0 + timedelta(minutes=6)) == (3.0, 4.5)
    assert band_at(band, T0 + timedelta(hours=1)) is None



def test_a_band_stops_where_its_forecast_does() -> None:
    # Four 5-minute steps, 11:50 to 12:10.
    forecasts = {"frontend": forecast("frontend", [1.0, 2.0, 3.0, 4.0])}

    def p50(start: datetime, end: datetime) -> list[float] | None:
        band = forecast_bands(forecasts, ["frontend"], start, end).get("frontend")
        return None if band is None else band.p50

    # A run longer than the forecast gets all of it, and nothing invented beyond either end.
    assert p50(T0 - timedelta(hours=1), T0 + timedelta(hours=1)) == [1.0, 2.0, 3.0, 4.0]
    # Inside the first step: no step before it exists, the one after is kept.
    assert p50(T0 - timedelta(minutes=9), T0 - timedelta(minutes=8)) == [1.0, 2.0]
    # Inside the last step: the one before it is kept.
    assert p50(T0 + timedelta(minutes=7), T0 + timedelta(minutes=8)) == [3.0, 4.0]
    # Just after the forecast ends, or ending just as it starts (closed run against half-open
    # steps): the run overlaps nothing, so the neighbouring step is no band.
    assert p50(T0 + timedelta(minutes=10), T0 + timedelta(minutes=12)) is None
    assert p50(T0 - timedelta(minutes=12), T0 - timedelta(minutes=10, seconds=1)) is None
    assert p50(T0 - timedelta(minutes=12), T0 - timedelta(minutes=10)) == [1.0, 2.0]


def test_a_band_that_could_not_be_saved_and_read_back_is_refused(tmp_path: Path) -> None:
    for p50, p90 in (([float("nan")], [1.0]), ([1.0], [float("inf")]), ([], []), ([1.0, 2.0], [3.0])):
        with pytest.raises(ValueError):
            ForecastBand(start=T0, step_seconds=60, p50=p50, p90=p90)
    # A hand-edited run.json with a broken band is reported as such, not as a crash in the report.
    record = run_with_samples()
    record.save(tmp_path / "run.json")
    data = json.loads((tmp_path / "run.json").read_text())
    data["forecasts"] = {"frontend": {"start": T0.isoformat(), "step_seconds": 60, "p50": [1.0], "p90": [2.0, 3.0]}}
    (tmp_path / "run.json").write_text(json.dumps(data))
    with pytest.raises(InvalidInput, match="p50 has 1 steps but p90 has 2"):
        RunRecord.load(tmp_path / "run.json")

def run_with_samples() -> RunRecord:
    experiment = Experiment(name="error-payments", kind=FaultKind.ERROR, target="payments", watch=["frontend"],
                            steps=[Fault(abort_status=503, abort_percent=p) for p in (1.0, 5.0)])
    samples = [SampleRecord(time=T0 + timedelta(seconds=30 * i), phase="baseline" if i < 2 else "step",
                            step_index=None if i < 2 else 0, service="frontend", error_rate=0.0, p99_seconds=0.1,
                            throughput_rps=rps) for i, rps in enumerate([10.0, 12.0, 16.0, 30.0])]
    steps = [StepRecord(index=i, fault=f, description=f.describe(), started=T0 + timedelta(seconds=60 + 30 * i),
                        ended=T0 + timedelta(seconds=90 + 30 * i), outcome="held")
             for i, f in enumerate(experiment.steps)]
    return RunRecord(run_id="r1", experiment=experiment, status=RunStatus.HELD, started=T0,
                     finished=T0 + timedelta(seconds=120), dwell_seconds=30, steps=steps, samples=samples)


def test_the_report_compares_the_measured_traffic_with_the_band(tmp_path: Path) -> None:
    # frontend's forecast: P50 10, P90 15 through the run; 10, 12 are inside, 16 and 30 above.
    record = with_bands(run_with_samples(), {"frontend": forecast("frontend", [10.0] * 6)})
    assert set(record.forecasts) == {"frontend"}
    entry = next(s for s in analyse(record)["services"] if s["service"] == "frontend")
    assert entry["forecast"] == {"model_version": "m7", "p50_mean": 10.0, "p90_max": 15.0, "actual_mean": 17.0,
                                 "share_within_band": 0.5, "share_below_p90": 0.5}
    assert next(s for s in analyse(record)["services"] if s["service"] == "payments")["forecast"] is None
    write_report(record, tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "Forecast against actual" in html and "<td>frontend</td><td>m7</td><td>10</td><td>15</td><td>17</td>" \
        "<td>50%</td><td>50%</td>" in html
    assert "data:image/png;base64," in html
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["forecasts"]["frontend"]["p90"][0] == 15.0



def test_the_plot_draws_the_band_behind_the_measured_throughput() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import StepPatch

    record = with_bands(run_with_samples(), {"frontend": forecast("frontend", [10.0, 20.0, 30.0, 40.0, 50.0, 60.0])})
    figure, axis = plt.subplots()
    try:
        points = [s for s in record.samples if s.service == "frontend"]
        (line,) = axis.plot([(p.time - T0).total_seconds() for p in points],
                            [p.throughput_rps or 0.0 for p in points], label="frontend")
        _draw_bands(axis, record)
        band, p50 = [p for p in axis.patches if isinstance(p, StepPatch)]
        p90_values, edges, p50_baseline = band.get_data()
        # Steps 11:55-12:00, 12:00-12:05, 12:05-12:10 in seconds since the run started (12:00).
        assert edges.tolist() == [-300.0, 0.0, 300.0, 600.0]
        assert p90_values.tolist() == [30.0, 45.0, 60.0]
        assert np.asarray(p50_baseline).tolist() == [20.0, 30.0, 40.0]
        assert p50.get_data()[0].tolist() == [20.0, 30.0, 40.0]
        assert band.get_facecolor()[:3] == matplotlib.colors.to_rgb(line.get_color())
        assert band.get_zorder() < line.get_zorder()
        legend = axis.get_legend()
        assert legend is not None
        assert [t.get_text() for t in legend.get_texts()] == ["frontend", "frontend forecast P50-P90"]
        # The band reaches a step either side; the view stays on the run's samples (0 to 90 s).
        assert axis.get_xlim() == (-5.0, 95.0)
    finally:
        plt.close(figure)

def test_without_a_forecast_the_report_says_so_and_an_old_record_still_loads(tmp_path: Path) -> None:
    record = run_with_samples()
    write_report(record, tmp_path)
    assert "No forecast was available for this run." in (tmp_path / "report.html").read_text()
    old = json.loads((tmp_path / "run.json").read_text())
    del old["forecasts"]  # written before the field existed
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert RunRecord.load(tmp_path / "old.json").forecasts == {}
    assert ForecastBand(start=T0, step_seconds=60, p50=[1.0], p90=[2.0]).model_version == ""


def test_chaos_run_takes_a_forecasts_file() -> None:
    out = subprocess.run([sys.executable, "-m", "harbinger.cli", "chaos", "run", "--help"], capture_output=True,
                         text=True, check=True, cwd=REPO).stdout
    assert "--forecasts" in out


def test_the_chaos_command_line_stays_light_for_the_sidecar() -> None:
    """``harbinger chaos sidecar`` runs in every rehearsed pod: importing its command line must
    not pull in numpy (or anything heavier) for the report's forecast band."""
    code = ("import sys, chaos.cli; heavy = {m.split('.')[0] for m in sys.modules} & "
            "{'numpy', 'pandas', 'matplotlib', 'sklearn', 'onnxruntime', 'scipy'}; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_chaos_report_keeps_the_bands_a_run_recorded(tmp_path: Path) -> None:
    record = with_bands(run_with_samples(), {"frontend": forecast("frontend", [10.0] * 6)})
    write_report(record, tmp_path / "run")
    subprocess.run([sys.executable, "-m", "harbinger.cli", "chaos", "report", str(tmp_path / "run"), "--out",
                    str(tmp_path / "again")], capture_output=True, text=True, check=True, cwd=REPO)
    services = json.loads((tmp_path / "again" / "report.json").read_text())["services"]
    assert next(s for s in services if s["service"] == "frontend")["forecast"]["share_within_band"] == 0.5
    assert "<td>frontend</td><td>m7</td>" in (tmp_path / "again" / "report.html").read_text()
