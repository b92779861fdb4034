"""``harbinger train / forecast / evaluate``, called as the console script calls them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harbinger.cli import main
from harbinger_dev.traces import traces_dir
from models import cli


def train(argv: list[str]) -> int:
    return main(["train", *argv])


def forecast(argv: list[str]) -> int:
    return main(["forecast", *argv])


def evaluate(argv: list[str]) -> int:
    return main(["evaluate", *argv])


@pytest.fixture(scope="module")
def elb_csv(tmp_path_factory: pytest.TempPathFactory, traces_dir: Path) -> Path:
    """The last ten days of the ELB trace, rows copied as they are in the shared file."""
    lines = (traces_dir / "elb_request_count_8c0756.csv").read_text().splitlines()
    path = tmp_path_factory.mktemp("data") / "checkout.csv"
    path.write_text("\n".join([lines[0], *lines[-10 * 288 :]]) + "\n")
    return path


@pytest.fixture(scope="module")
def model_dir(elb_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "checkout"
    assert train(["--trace", str(elb_csv), "--out", str(out)]) == 0
    return out


def test_train_writes_a_model_directory(model_dir: Path) -> None:
    assert {p.name for p in model_dir.iterdir()} == {"model.onnx", "metadata.json", cli.HISTORY_FILE}
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["service"] == "checkout" and metadata["step_seconds"] == 900
    assert metadata["horizon_steps"] == 96 and metadata["period"] in ("daily", "weekly", "none")
    assert len(metadata["graph_sha256"]) == 64 and metadata["training_start"] < metadata["training_end"]


def test_forecast_json(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert forecast(["--model", str(model_dir), "--horizon", "6h", "--json"]) == 0
    out = capsys.readouterr().out
    document = json.loads(out)
    assert out.count("\n") == 1 and document["service"] == "checkout"
    assert len(document["p50"]) == 24 and document["step_seconds"] == 900


def test_forecast_plot_draws_the_band_after_the_traffic(model_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "forecast.png"
    assert forecast(["--model", str(model_dir), "--horizon", "6h", "--json", "--plot", str(png)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["service"] == "checkout"  # --json still prints one object
    assert f"plot: {png}" in captured.err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_forecast_table(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert forecast(["--model", str(model_dir), "--horizon", "1h"]) == 0
    out = capsys.readouterr().out
    assert "P50" in out and "peak P90" in out and len(out.splitlines()) == 7


def test_evaluate_json_and_plot(elb_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = evaluate(["--trace", str(elb_csv), "--baselines", "seasonal-naive", "--folds", "2", "--json",
                     "--plot-dir", str(tmp_path)])
    assert code == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # exactly one JSON object on stdout
    assert report["trace"] == "checkout"
    assert {"harbinger", "seasonal-naive"} <= set(report["models"])
    assert set(report["models"]["harbinger"]) >= {"mase", "smape", "under_p90", "coverage_p90"}
    assert "fold 2/2" in captured.err  # the progress bar is on stderr
    assert (tmp_path / "checkout.png").exists()


def bad(capsys: pytest.CaptureFixture[str], code: int, *words: str) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for word in words:
        assert word in err


def test_bad_csv_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T00:05:00Z,-4\n")
    bad(capsys, train(["--trace", str(path), "--out", str(tmp_path / "m")]), "bad.csv:3", "negative value")


def test_missing_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad(capsys, evaluate(["--trace", str(tmp_path / "none.csv")]), "none.csv", "no such file")


def test_too_short_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "short.csv"
    path.write_text("timestamp,value\n" + "".join(f"2024-01-01T{h:02d}:00:00Z,5\n" for h in range(24)))
    bad(capsys, train(["--trace", str(path), "--out", str(tmp_path / "m")]), "at least", "3 d")


def test_bad_events_file(elb_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "events.yaml"
    events.write_text("- {name: sale, start: 2024-01-02T00:00:00Z, end: 2024-01-01T00:00:00Z, multiplier: 2}\n")
    bad(capsys, train(["--trace", str(elb_csv), "--events", str(events), "--out", str(tmp_path / "m")]),
        "events.yaml:1", "event 1 ('sale')", "end must be after start")


def test_mismatched_model(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.onnx").write_bytes(b"not a graph")
    bad(capsys, forecast(["--model", str(broken)]), "sha256")


def test_horizon_longer_than_the_model(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad(capsys, forecast(["--model", str(model_dir), "--horizon", "2d"]), "1 to 96 steps")


def test_bad_flag_values_are_argparse_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        forecast(["--model", "x", "--horizon", "soon"])
    assert caught.value.code == 2 and "not a duration" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate(["--trace", "x.csv", "--baselines", "arima"])
    assert "unknown baseline 'arima'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate(["--trace", "x.csv", "--p90-adaptation-rate", "-1"])
    assert "-1 is outside 0 to 10" in capsys.readouterr().err


def test_traces_dir_points_at_the_shared_traces() -> None:
    assert (traces_dir() / "nasa.csv").exists()
