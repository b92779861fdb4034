"""Export a trained model: one ONNX graph (P50 and P90 side by side) + its metadata.

The two fitted regressors are converted by skl2onnx separately and joined into one graph
with one input (``features``) and two outputs (``p50_ratio``, ``p90_ratio``), so serving
makes one ``session.run`` per forecast. The graph carries the service and model version in
its own metadata too, and ``metadata.json`` carries the graph's sha256.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import onnx
from onnx import compose, helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType

from models.adaptive import CoverageCheck
from models.metadata import (
    GRAPH_FILE,
    INPUT_NAME,
    OUTPUT_P50,
    OUTPUT_P90,
    SERVICE_PROP,
    VERSION_PROP,
    ModelMetadata,
    write_metadata,
)
from models.training import TrainedModel

#: ai.onnx.ml 3 stores tree thresholds as tensors; onnxruntime >= 1.16 runs it.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas")


def to_onnx_graph(model: TrainedModel) -> onnx.ModelProto:
    """The joined P50/P90 graph (without the Harbinger metadata properties)."""
    n_features = len(model.spec.names)
    parts = []
    for prefix, estimator, output in (("p50_", model.p50, OUTPUT_P50), ("p90_", model.p90, OUTPUT_P90)):
        part = convert_sklearn(estimator, initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
                               final_types=[(output, FloatTensorType([None, 1]))], target_opset=TARGET_OPSET)
        parts.append(compose.add_prefix(part, prefix, rename_inputs=False, rename_outputs=False))
    first, second = parts
    graph = helper.make_graph(
        nodes=[*first.graph.node, *second.graph.node],
        name=f"harbinger_{_safe(model.service)}",
        inputs=[first.graph.input[0]],
        outputs=[first.graph.output[0], second.graph.output[0]],
        initializer=[*first.graph.initializer, *second.graph.initializer],
    )
    opsets = {entry.domain: entry.version for part in parts for entry in part.opset_import}
    joined = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
                               producer_name="harbinger")
    joined.ir_version = first.ir_version
    onnx.checker.check_model(joined)
    return joined


def export_model(model: TrainedModel, model_dir: Path, *, backtest: dict[str, Any] | None = None,
                 choice: dict[str, Any] | None = None, check: CoverageCheck | None = None) -> ModelMetadata:
    """Write ``model.onnx`` and ``metadata.json`` into ``model_dir`` (created if needed); ``check``:
    the model's first forecast, for the next training to score (:mod:`models.adaptive`)."""
    return write_model_dir(model, to_onnx_graph(model), model_dir, backtest=backtest, choice=choice, check=check)


def write_model_dir(model: TrainedModel, graph: onnx.ModelProto, model_dir: Path, *,
                    backtest: dict[str, Any] | None = None, choice: dict[str, Any] | None = None,
                    check: CoverageCheck | None = None) -> ModelMetadata:
    """Stamp ``graph`` (from :func:`to_onnx_graph`) with the model's service and version, and write
    it with its metadata. Separate from the conversion so that one converted graph can be
    written for several services (the benchmark's 1,000 services). The pooled model is written
    for the services it serves by :func:`write_pooled_dirs`."""
    data, model_version = stamp(model, graph)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / GRAPH_FILE).write_bytes(data)
    metadata = model_metadata(model, data, model_version, backtest=backtest, choice=choice, check=check)
    write_metadata(model_dir, metadata)
    return metadata


def write_pooled_dirs(pooled: TrainedModel, members: Mapping[str, tuple[Path, float]], *,
                      choices: Mapping[str, dict[str, Any]] | None = None,
                      checks: Mapping[str, CoverageCheck] | None = None) -> dict[str, ModelMetadata]:
    """The pooled model as the model of each service in ``members`` (service -> (directory, level
    floor)): converted and stamped once, the same graph bytes in every directory (hard-linked
    where the file system allows), a metadata file of each service's own."""
    data, model_version = stamp(pooled, to_onnx_graph(pooled))
    written: dict[str, ModelMetadata] = {}
    first: Path | None = None
    for service, (model_dir, floor) in members.items():
        model_dir.mkdir(parents=True, exist_ok=True)
        target = model_dir / GRAPH_FILE
        target.unlink(missing_ok=True)
        try:
            if first is None:
                raise OSError("no graph written yet")
            os.link(first, target)
        except OSError:
            target.write_bytes(data)
            first = first or target
        member = replace(pooled, spec=replace(pooled.spec, level_floor=floor))
        metadata = model_metadata(member, data, model_version, serves=service,
                                  choice=(choices or {}).get(service), check=(checks or {}).get(service))
        write_metadata(model_dir, metadata)
        written[service] = metadata
    return written


def stamp(model: TrainedModel, graph: onnx.ModelProto) -> tuple[bytes, str]:
    """The graph's bytes with the model's name and version stamped in, and that version."""
    # The version names the content: same data, config and seed -> same version.
    content_hash = hashlib.sha256(graph.SerializeToString(deterministic=True)).hexdigest()
    model_version = f"{model.training_end:%Y%m%dT%H%MZ}-{content_hash[:12]}"
    stamped = onnx.ModelProto()
    stamped.CopyFrom(graph)
    helper.set_model_props(stamped, {SERVICE_PROP: model.service, VERSION_PROP: model_version})
    return stamped.SerializeToString(deterministic=True), model_version


def model_metadata(model: TrainedModel, data: bytes, model_version: str, *, backtest: dict[str, Any] | None = None,
                   serves: str | None = None, choice: dict[str, Any] | None = None,
                   check: CoverageCheck | None = None) -> ModelMetadata:
    """The metadata of ``model``'s stamped graph ``data``; with ``serves``, as that service's model
    (the pooled model's: the graph keeps its stamp, ``graph_service`` names it)."""
    return ModelMetadata(
        service=serves or model.service,
        graph_service=model.service if serves else None,
        choice=choice,
        model_version=model_version,
        created_at=datetime.now(UTC),
        training_start=model.training_start,
        training_end=model.training_end,
        step_seconds=model.spec.step_seconds,
        period=model.spec.seasonality,
        horizon_steps=model.spec.horizon_steps,
        min_history_steps=model.spec.min_history_steps,
        feature_spec=model.spec.to_json(),
        p90_margin=model.p90_margin,
        p90_level=model.p90_level,
        p90_check=check.to_json() if check else None,
        estimator=model.config.estimator,
        training_rows=model.n_rows,
        seed=model.config.seed,
        backtest=backtest,
        library_versions=library_versions(),
        graph_sha256=hashlib.sha256(data).hexdigest(),
    )


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)
