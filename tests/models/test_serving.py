"""ONNX export and onnxruntime serving: same numbers as scikit-learn, refuses mismatched models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.errors import BadRequest, HistoryTooShort, ModelMismatch
from models.export import export_model
from models.forecast import Forecast
from models.metadata import GRAPH_FILE, METADATA_FILE
from models.serving import ForecastCore, Forecaster, ForecasterBatch
from models.training import TrainedModel, TrainingConfig, train

LoadTrace = Callable[[str], pd.Series]
#: ``recent(trace, days)``: the last days of a shipped trace (conftest's ``recent`` fixture).
Recent = Callable[[str, float], pd.Series]

#: float32 inputs and thresholds in onnxruntime against float64 in scikit-learn.
RTOL = 1e-5


def test_onnx_matches_sklearn_on_real_inputs(nasa_model: TrainedModel, nasa_model_dir: Path,
                                             trace: LoadTrace) -> None:
    forecaster = Forecaster.load(nasa_model_dir)
    history = trace("nasa")
    # Many origins across the last weeks, with the outage-free and the quiet-night steps alike.
    origins = history.index[-21 * 96 :: 37]
    rows = np.concatenate([forecaster.prepare(history, now=o.to_pydatetime()).features for o in origins])
    onnx_p50, onnx_p90 = forecaster.predict_ratios(rows)
    sk_p50, sk_p90 = nasa_model.predict_ratios(rows)
    np.testing.assert_allclose(onnx_p50, sk_p50, rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(onnx_p90, sk_p90, rtol=RTOL, atol=1e-6)


def test_forecast_shape_times_and_units(nasa_model_dir: Path, recent: Recent) -> None:
    forecaster = Forecaster.load(nasa_model_dir)
    history = recent("nasa", 21)
    now = history.index[-1].to_pydatetime() + timedelta(minutes=22)
    forecast = forecaster.forecast(history, now=now, horizon_steps=24)
    assert isinstance(forecast, Forecast)
    assert forecast.start == datetime.fromtimestamp(history.index[-1].timestamp() + 900, UTC)  # the step now is in
    assert forecast.step_seconds == 900 == forecaster.step_seconds
    assert forecast.p50.shape == forecast.p90.shape == (24,)
    assert forecast.timestamps()[1] - forecast.timestamps()[0] == timedelta(minutes=15)
    assert forecast.peak_p90() == pytest.approx(float(forecast.p90.max()))
    assert forecaster.min_history_steps == 96
    document = forecast.to_json()
    assert document["service"] == "nasa" and len(document["p90"]) == 24
    assert document["start"].endswith("Z") and document["model_version"] == forecaster.model_version
    # TPS: nasa peaks around 6.75 requests per second.
    assert 0 < forecast.p50.max() < 15


def test_default_now_is_right_after_the_history(nasa_model_dir: Path, recent: Recent) -> None:
    forecaster = Forecaster.load(nasa_model_dir)
    history = recent("nasa", 21)
    forecast = forecaster.forecast(history)
    assert pd.Timestamp(forecast.start) == history.index[-1] + pd.Timedelta(minutes=15)
    assert forecast.horizon_steps == 96


def test_sklearn_and_onnx_forecasts_agree(nasa_model: TrainedModel, nasa_model_dir: Path, recent: Recent) -> None:
    forecaster = Forecaster.load(nasa_model_dir)
    history = recent("nasa", 21)
    twin = ForecastCore(nasa_model.service, forecaster.model_version, nasa_model.spec, nasa_model.p90_margin)
    expected = twin.forecast_with(nasa_model.predict_ratios, history)
    actual = forecaster.forecast(history)
    np.testing.assert_allclose(actual.p50, expected.p50, rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(actual.p90, expected.p90, rtol=RTOL, atol=1e-6)


def test_batch_equals_one_by_one(nasa_model_dir: Path, tmp_path: Path, recent: Recent, fast: TrainingConfig) -> None:
    # Three services sharing one graph (one session) and one with its own model.
    for name in ("a", "b", "c"):
        shutil.copytree(nasa_model_dir, tmp_path / name)
    elb = recent("elb_request_count_8c0756", 10)
    export_model(train(elb, service="elb", config=fast), tmp_path / "elb")
    batch = ForecasterBatch.load_dirs([tmp_path / "a", tmp_path / "elb"])
    assert set(batch.forecasters) == {"nasa", "elb"}
    nasa = recent("nasa", 21)
    results = batch.forecast({"nasa": nasa, "elb": elb}, horizon_steps=12)
    for service, history in (("nasa", nasa), ("elb", elb)):
        single = batch.forecasters[service].forecast(history, horizon_steps=12)
        np.testing.assert_allclose(results[service].p50, single.p50, rtol=1e-6)
        np.testing.assert_allclose(results[service].p90, single.p90, rtol=1e-6)
    with pytest.raises(BadRequest, match="no model for service"):
        batch.forecast({"unknown": nasa})
    shared = ForecasterBatch.load_dirs([tmp_path / "a"]).forecasters["nasa"]
    assert shared.session is not None


def test_identical_graphs_share_one_session(nasa_model_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(nasa_model_dir, tmp_path / "copy")
    sessions: dict[str, object] = {}
    first = Forecaster.load(nasa_model_dir, sessions=sessions)  # type: ignore[arg-type]
    second = Forecaster.load(tmp_path / "copy", sessions=sessions)  # type: ignore[arg-type]
    assert first.session is second.session and len(sessions) == 1


@pytest.fixture
def model_copy(nasa_model_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "model"
    shutil.copytree(nasa_model_dir, path)
    return path


def test_tampered_graph_is_refused(model_copy: Path) -> None:
    graph = model_copy / GRAPH_FILE
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(ModelMismatch, match="sha256"):
        Forecaster.load(model_copy)


def test_graph_from_another_model_is_refused(model_copy: Path, tmp_path: Path, recent: Recent,
                                             fast: TrainingConfig) -> None:
    other = tmp_path / "other"
    export_model(train(recent("elb_request_count_8c0756", 9), service="elb", config=fast), other)
    shutil.copy(other / GRAPH_FILE, model_copy / GRAPH_FILE)
    with pytest.raises(ModelMismatch, match="do not belong together"):
        Forecaster.load(model_copy)


def test_metadata_that_lies_about_the_features_is_refused(model_copy: Path) -> None:
    metadata = json.loads((model_copy / METADATA_FILE).read_text())
    metadata["feature_spec"]["seasonality"] = "daily"  # fewer features than the graph takes
    metadata["feature_spec"].pop("names")
    (model_copy / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(ModelMismatch, match="features"):
        Forecaster.load(model_copy)


@pytest.mark.parametrize(("change", "words"), [
    (lambda m: m.pop("graph_sha256"), "field 'graph_sha256'"),
    (lambda m: m.update(format_version=99), "format version 99"),
    (lambda m: m.update(step_seconds=-5), "field 'step_seconds'"),
])
def test_bad_metadata_is_refused(model_copy: Path, change: object, words: str) -> None:
    metadata = json.loads((model_copy / METADATA_FILE).read_text())
    change(metadata)  # type: ignore[operator]
    (model_copy / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(ModelMismatch, match=words):
        Forecaster.load(model_copy)


def test_missing_pieces_are_refused(model_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelMismatch, match=r"no metadata\.json"):
        Forecaster.load(tmp_path / "empty")
    (model_copy / METADATA_FILE).write_text("{not json")
    with pytest.raises(ModelMismatch, match="unreadable metadata"):
        Forecaster.load(model_copy)


def test_bad_requests_are_refused(nasa_model_dir: Path, recent: Recent) -> None:
    forecaster = Forecaster.load(nasa_model_dir)
    history = recent("nasa", 21)
    with pytest.raises(BadRequest, match="1 to 96 steps"):
        forecaster.forecast(history, horizon_steps=97)
    with pytest.raises(HistoryTooShort, match="at least 96 steps"):
        forecaster.forecast(history.iloc[-40:])
    with pytest.raises(BadRequest, match="timezone-aware"):
        forecaster.forecast(history, now=datetime(2024, 1, 1))


def test_serving_does_not_import_scikit_learn(nasa_model_dir: Path) -> None:
    script = f"""
import sys, numpy as np, pandas as pd
from pathlib import Path
from models.serving import Forecaster
f = Forecaster.load(Path({str(nasa_model_dir)!r}))
index = pd.date_range("2024-01-01", periods=2000, freq="15min", tz="UTC")
f.forecast(pd.Series(np.ones(2000), index=index))
assert not any(name.split(".")[0] in ("sklearn", "skl2onnx") for name in sys.modules), "scikit-learn imported"
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr


def test_graph_stamped_for_another_service_is_refused(model_copy: Path) -> None:
    from models.metadata import sha256_of

    metadata = json.loads((model_copy / METADATA_FILE).read_text())
    metadata["service"] = "checkout"  # the sha256 still matches: only the graph's own stamp tells
    (model_copy / METADATA_FILE).write_text(json.dumps(metadata))
    assert sha256_of(model_copy / GRAPH_FILE) == metadata["graph_sha256"]
    with pytest.raises(ModelMismatch, match=r"harbinger\.service='nasa'"):
        Forecaster.load(model_copy)


def test_export_is_reproducible(nasa_model: TrainedModel, tmp_path: Path) -> None:
    first = export_model(nasa_model, tmp_path / "one")
    second = export_model(nasa_model, tmp_path / "two")
    assert first.graph_sha256 == second.graph_sha256 and first.model_version == second.model_version


def test_batch_of_different_models_sharing_a_feature_layout(nasa_model_dir: Path, tmp_path: Path, recent: Recent,
                                                             fast: TrainingConfig) -> None:
    # Two services, two graphs, one layout (15-minute steps, weekly): one feature pass, two runs.
    nyc_like = recent("nasa", 28).iloc[:-96 * 5]
    export_model(train(nyc_like, service="search", config=fast), tmp_path / "search")
    batch = ForecasterBatch.load_dirs([nasa_model_dir, tmp_path / "search"])
    histories = {"nasa": recent("nasa", 21), "search": nyc_like}
    assert {f.spec.seasonality for f in batch.forecasters.values()} == {"weekly"}
    results = batch.forecast(histories, horizon_steps=24)
    for service, history in histories.items():
        single = batch.forecasters[service].forecast(history, horizon_steps=24)
        assert results[service].start == single.start and results[service].model_version == single.model_version
        np.testing.assert_allclose(results[service].p50, single.p50, rtol=1e-6)
        np.testing.assert_allclose(results[service].p90, single.p90, rtol=1e-6)


@pytest.mark.parametrize("estimator", ["gbr", "linear"])
def test_every_estimator_exports_and_matches(estimator: str, tmp_path: Path, recent: Recent) -> None:
    history = recent("elb_request_count_8c0756", 9)
    model = train(history, config=TrainingConfig(estimator=estimator, max_rows=3000))  # type: ignore[arg-type]
    export_model(model, tmp_path / estimator)
    forecaster = Forecaster.load(tmp_path / estimator)
    rows = forecaster.prepare(history).features
    for onnx_out, sk_out in zip(forecaster.predict_ratios(rows), model.predict_ratios(rows), strict=True):
        np.testing.assert_allclose(onnx_out, sk_out, rtol=RTOL, atol=1e-5)
