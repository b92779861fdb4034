"""``harbinger plan`` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harbinger.cli import main
from harbinger_dev.localcluster import LocalCluster


def test_bad_files_are_refused_before_the_cluster_is_touched(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    graph = tmp_path / "graph.yaml"
    graph.write_text("services: [a, b]\nedges:\n  - {from: a, to: b}\n  - {from: b, to: a}\n")
    missing = tmp_path / "no-such-kubeconfig"
    assert main(["plan", "--once", "--graph", str(graph), "--kubeconfig", str(missing)]) == 2
    assert "cycle" in capsys.readouterr().err
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("services:\n  checkout: {min_replicas: 5, max_replicas: 2}\n")
    assert main(["plan", "--once", "--profiles", str(profiles), "--kubeconfig", str(missing)]) == 2
    assert "services.checkout" in capsys.readouterr().err


def test_once_forecast_only_prints_the_run(cluster: LocalCluster, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    # No trained models: nothing to plan, nothing written, the run still reports.
    assert main(["plan", "--once", "--forecast-only", "--kubeconfig", str(cluster.kubeconfig),
                 "--models-dir", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"outcome": "forecast_only", "plans": {}, "changes": [], "released": [], "skipped": {}}
