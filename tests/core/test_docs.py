"""The documentation that can be checked mechanically stays true."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_cli_reference_matches_the_command_line() -> None:
    result = subprocess.run([sys.executable, str(REPO / "hack" / "cli_docs.py"), "--check"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_the_policy_crd_matches_the_capacity_profile_model() -> None:
    result = subprocess.run([sys.executable, str(REPO / "hack" / "crds.py"), "--check"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_the_settings_reference_matches_the_settings_model() -> None:
    result = subprocess.run([sys.executable, str(REPO / "hack" / "settings_docs.py"), "--check"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_readme_gives_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci
