"""Harbinger's wheel, as a platform team's image installs it: built from the repository,
installed into a venv of its own, it holds the product and nothing of the development
harness, and its command line starts.

The venv gets the wheel and nothing of this checkout; its third-party dependencies are
borrowed from the test run's own environment (a path to them, with Harbinger's editable
install and the harness left out), so the test needs no network and takes seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {"harbinger", "webhooks", "extender", "models", "scaler", "chaos", "certs"}
#: Names the development harness used, inside or outside the product's packages.
HARNESS_NAMES = ("harbinger_dev", "localcluster", "demo", "traces.py", "trace_events", "localdemo.py")


@dataclass(frozen=True)
class InstalledWheel:
    wheel: Path
    python: Path

    def run(self, *args: str, program: str = "python") -> subprocess.CompletedProcess[str]:
        """``program`` (the venv's python, or its ``harbinger`` console script) outside the checkout."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return subprocess.run([str(self.python.parent / program), *args], capture_output=True, text=True,
                              timeout=120, env=env, cwd=self.python.parents[2])


def _borrowed_dependencies(into: Path) -> Path:
    """A directory of links to this environment's third-party packages, without Harbinger's
    own editable install or the harness (their finders and metadata would leak the checkout)."""
    site = Path(sysconfig.get_paths()["purelib"])
    into.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("harbinger", "__editable__", "_harbinger")) or name.endswith(".pth"):
            continue
        (into / entry.name).symlink_to(entry)
    return into


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> InstalledWheel:
    work = tmp_path_factory.mktemp("wheel")
    dist = work / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(dist), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = dist.glob("harbinger-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                              "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    target_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                      capture_output=True, text=True, check=True).stdout.strip())
    (target_site / "borrowed_dependencies.pth").write_text(str(_borrowed_dependencies(work / "deps")) + "\n")
    return InstalledWheel(wheel, python)


def test_the_wheel_holds_the_product_and_no_harness(installed: InstalledWheel) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == SHIPPED
    harness = [name for name in names if any(part in HARNESS_NAMES for part in name.split("/"))]
    assert harness == []


def test_the_installed_command_line_starts(installed: InstalledWheel) -> None:
    top = installed.run("--help", program="harbinger")
    assert top.returncode == 0, top.stderr
    assert "webhook" in top.stdout and "plan" in top.stdout
    # The development command is not in the product, and nothing complains about it either.
    assert "local control plane" not in top.stdout and top.stderr == ""
    webhook = installed.run("webhook", "--help", program="harbinger")
    assert webhook.returncode == 0, webhook.stderr
    assert "--cert-dir" in webhook.stdout


def test_the_installed_copy_is_not_the_checkout(installed: InstalledWheel) -> None:
    where = installed.run("-c", "import harbinger, webhooks; print(harbinger.__file__); print(webhooks.__file__)")
    assert where.returncode == 0, where.stderr
    assert all(str(ROOT) not in line for line in where.stdout.splitlines())
    harness = installed.run("-c", "import harbinger_dev")
    assert harness.returncode != 0 and "No module named 'harbinger_dev'" in harness.stderr
