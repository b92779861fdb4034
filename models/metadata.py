"""The metadata file written next to every ONNX graph, and how a model directory is laid out.

A model directory holds ``model.onnx`` and ``metadata.json``. The metadata says what the
graph is (service, version, feature spec, calibration) and carries the graph's sha256, so
that a graph swapped, truncated or copied from another service is refused on load.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.errors import ModelMismatch

GRAPH_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1
INPUT_NAME = "features"
OUTPUT_P50 = "p50_ratio"
OUTPUT_P90 = "p90_ratio"
#: Stamped into the graph itself, so that a graph and a metadata file from two models
#: cannot be paired even by someone who also rewrote the sha256.
SERVICE_PROP = "harbinger.service"
VERSION_PROP = "harbinger.model_version"


class ModelMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = FORMAT_VERSION
    service: str = Field(min_length=1)
    model_version: str = Field(min_length=1)
    created_at: datetime
    training_start: datetime
    training_end: datetime
    step_seconds: int = Field(gt=0)
    #: Detected cycle: "daily", "weekly" or "none".
    period: str
    horizon_steps: int = Field(gt=0)
    min_history_steps: int = Field(gt=0)
    feature_spec: dict[str, Any]
    #: Calibrated P90 margin, in units of the recent volatility (see models.features.to_tps).
    p90_margin: float
    #: The share of held-out steps the margin puts at or under the P90: 0.9, moved by the
    #: previous model's misses (models.adaptive).
    p90_level: float = Field(default=0.9, gt=0, lt=1)
    #: The model's first forecast (``models.adaptive.CoverageCheck``), which the next training
    #: scores against the traffic that came to move the level.
    p90_check: dict[str, Any] | None = None
    estimator: str
    training_rows: int
    seed: int
    #: Rolling-origin backtest of this configuration on this series, when it was run.
    backtest: dict[str, Any] | None = None
    library_versions: dict[str, str] = Field(default_factory=dict)
    graph_file: str = GRAPH_FILE
    graph_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    #: Set when the service is served by the pooled model (``models.pooled``): the name the
    #: graph is stamped with. Every service it serves has the very same graph bytes, so a
    #: process loading them all holds one session.
    graph_service: str | None = None
    #: Why this model serves the service: ``own`` or ``pooled``, with the backtest that chose
    #: (``models.pooled.Choice``), or ``pooled`` alone for a service too new for its own.
    choice: dict[str, Any] | None = None


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_metadata(model_dir: Path, metadata: ModelMetadata) -> None:
    text = json.dumps(metadata.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    (model_dir / METADATA_FILE).write_text(text, encoding="utf-8")


def read_metadata(model_dir: Path) -> tuple[ModelMetadata, bytes]:
    """The metadata and the graph bytes of a model directory, after checking they belong together."""
    source = str(model_dir / METADATA_FILE)
    try:
        raw = json.loads((model_dir / METADATA_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelMismatch(f"no {METADATA_FILE}; is {model_dir} a model directory written by "
                            "'harbinger train'?", source=source) from None
    except (OSError, ValueError) as exc:
        raise ModelMismatch(f"unreadable metadata: {exc}", source=source) from None
    try:
        metadata = ModelMetadata.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ModelMismatch(f"field {field!r}: {first['msg']}", source=source) from None
    if metadata.format_version != FORMAT_VERSION:
        raise ModelMismatch(f"format version {metadata.format_version}; this Harbinger reads "
                            f"version {FORMAT_VERSION}", source=source)
    graph_path = model_dir / metadata.graph_file
    try:
        graph = graph_path.read_bytes()
    except OSError as exc:
        raise ModelMismatch(f"cannot read the graph: {exc}", source=str(graph_path)) from None
    actual = hashlib.sha256(graph).hexdigest()
    if actual != metadata.graph_sha256:
        raise ModelMismatch(f"the graph's sha256 is {actual[:12]}..., the metadata expects "
                            f"{metadata.graph_sha256[:12]}...; the graph and metadata do not belong together "
                            "(retrain or restore both)", source=str(graph_path))
    return metadata, graph
