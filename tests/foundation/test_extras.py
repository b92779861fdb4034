"""Serving does not need training or plotting libraries, and the chaos sidecar needs only
the few packages its image installs: each is run here with everything else made unimportable,
as it would be in its image."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from chaos.record import RunRecord

REPO = Path(__file__).resolve().parents[2]
#: Distribution name -> the top-level modules it installs (where they differ).
MODULES = {"scikit-learn": ["sklearn"], "kubernetes-asyncio": ["kubernetes_asyncio"], "pyyaml": ["yaml"],
           "prometheus-client": ["prometheus_client"], "pydantic-settings": ["pydantic_settings"],
           "protobuf": ["google"], "matplotlib": ["matplotlib", "mpl_toolkits"], "skl2onnx": ["skl2onnx"],
           "onnxruntime": ["onnxruntime"], "pandas": ["pandas"], "numpy": ["numpy"], "scipy": ["scipy"]}

#: Runs harbinger's command line with the named top-level modules made unimportable.
BLOCKED_RUN = """
import importlib.abc, sys
blocked = set(sys.argv[1].split(","))
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (not in this image)", name=name)
        return None
sys.meta_path.insert(0, Absent())
sys.argv = ["harbinger", *sys.argv[2:]]
from harbinger.cli import main
raise SystemExit(main())
"""


def requirement_names(lines: list[str]) -> list[str]:
    return [re.split(r"[<>=\[;\s]", line.strip(), maxsplit=1)[0].lower() for line in lines
            if line.strip() and not line.strip().startswith("#")]


def project() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def modules_of(names: list[str]) -> set[str]:
    return {m for name in names for m in MODULES.get(name, [name.replace("-", "_")])}


def run_without(blocked: set[str], *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKED_RUN, ",".join(sorted(blocked)), *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def test_training_and_plotting_are_extras_not_dependencies() -> None:
    base = requirement_names(project()["dependencies"])
    extras = project()["optional-dependencies"]
    assert {"scikit-learn", "skl2onnx", "onnx", "protobuf"} <= set(requirement_names(extras["train"]))
    assert requirement_names(extras["plots"]) == ["matplotlib"]
    assert not {"scikit-learn", "skl2onnx", "onnx", "protobuf", "matplotlib", "scipy"} & set(base)


def test_the_chaos_sidecar_runs_with_only_its_images_packages() -> None:
    sidecar = requirement_names((REPO / "hack" / "sidecar-requirements.txt").read_text().splitlines())
    base = requirement_names(project()["dependencies"])
    assert set(sidecar) <= set(base)
    heavy = {"numpy", "pandas", "onnxruntime", "onnx", "sklearn", "skl2onnx", "matplotlib", "scipy", "google"}
    blocked = modules_of([n for n in base if n not in sidecar]) | heavy
    assert "numpy" in blocked and "cryptography" in blocked
    result = run_without(blocked, "chaos", "sidecar", "--help")
    assert result.returncode == 0, result.stderr
    # Everything the sidecar runs imports, not only its command line.
    code = ("import importlib, pkgutil, chaos.sidecar as s; "
            "[importlib.import_module(m.name) for m in pkgutil.walk_packages(s.__path__, 'chaos.sidecar.')]")
    imported = subprocess.run([sys.executable, "-c", BLOCKED_RUN.replace("from harbinger.cli import main\n"
                                                                          "raise SystemExit(main())", code),
                               ",".join(sorted(blocked))], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert imported.returncode == 0, imported.stderr


def test_serving_needs_neither_extra() -> None:
    blocked = modules_of(requirement_names(project()["optional-dependencies"]["train"])
                         + requirement_names(project()["optional-dependencies"]["plots"]))
    for command in (["webhook", "--help"], ["extender", "--help"], ["plan", "--help"], ["chaos", "controller",
                                                                                         "--help"]):
        result = run_without(blocked, *command)
        assert result.returncode == 0, (command, result.stderr)
    code = "import models.serving, scaler.controller, webhooks.server, extender.server, chaos.controller"
    imported = subprocess.run([sys.executable, "-c", BLOCKED_RUN.replace("from harbinger.cli import main\n"
                                                                          "raise SystemExit(main())", code),
                               ",".join(sorted(blocked))], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert imported.returncode == 0, imported.stderr


def test_a_command_that_needs_an_extra_says_which(tmp_path: Path) -> None:
    trace = tmp_path / "svc.csv"
    trace.write_text("timestamp,requests\n2030-01-01T00:00:00Z,1\n")
    result = run_without({"sklearn"}, "train", "--trace", str(trace), "--out", str(tmp_path / "m"))
    assert result.returncode == 1
    assert "harbinger train needs Harbinger's 'train' extra (sklearn not installed): pip install " \
           "'harbinger[train]'" in result.stderr, result.stderr


def test_a_chaos_report_without_the_plots_extra_says_so(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "tests" / "chaos"))
    from test_chaos_report_forecast import run_with_samples

    (tmp_path / "run.json").write_text(run_with_samples().model_dump_json())
    RunRecord.load(tmp_path / "run.json")
    result = run_without({"matplotlib"}, "chaos", "report", str(tmp_path / "run.json"), "--out", str(tmp_path / "r"))
    assert result.returncode in (0, 1), result.stderr  # the exit code is the run's verdict
    html = (tmp_path / "r" / "report.html").read_text()
    assert "No plot: it needs Harbinger's 'plots' extra" in html and "data:image/png" not in html
    assert json.loads((tmp_path / "r" / "report.json").read_text())["status"] == "held"
