from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harbinger import cli


def test_help_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "harbinger.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for command in cli.COMMANDS:
        assert command.name in out


def test_every_command_has_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in cli.COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command.name, "--help"])
        assert exit_info.value.code == 0, command.name
        assert command.help.split()[0] in capsys.readouterr().out


def test_unknown_command_is_an_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["frobnicate"])
    assert exit_info.value.code == 2


def test_global_options_before_the_command_do_not_hide_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--log-level", "WARNING", "cluster", "--help"])
    assert exit_info.value.code == 0
    assert "--state-dir" in capsys.readouterr().out


def test_the_development_command_comes_from_the_harness_distribution() -> None:
    """``harbinger cluster`` is not one of Harbinger's own commands: the harbinger-dev
    distribution adds it through the ``harbinger.commands`` entry point."""
    assert "cluster" not in {c.name for c in cli.COMMANDS}
    plugin = next(c for c in cli.all_commands() if c.name == "cluster")
    assert plugin.module.startswith("harbinger_dev.")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "harbinger.cli", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_log_level_is_accepted_after_the_command_and_from_the_environment(tmp_path: Path) -> None:
    after = run_cli("certs", "--out", str(tmp_path / "a"), "--hosts", "a.example", "--log-level", "DEBUG")
    assert after.returncode == 0, after.stderr
    lower = run_cli("certs", "--out", str(tmp_path / "b"), "--hosts", "a.example", env={"HARBINGER_LOG_LEVEL": "debug"})
    assert lower.returncode == 0, lower.stderr


def test_a_bad_log_level_setting_is_refused_by_name(tmp_path: Path) -> None:
    bad = run_cli("certs", "--out", str(tmp_path / "c"), "--hosts", "a.example", env={"HARBINGER_LOG_LEVEL": "loud"})
    assert bad.returncode == 2
    assert "log_level" in bad.stderr and not (tmp_path / "c").exists()


def test_exit_codes_are_mapped_once_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from harbinger.errors import InvalidInput, PrometheusUnavailable

    def bad() -> int:
        raise InvalidInput("nope", source="--x")

    def down() -> int:
        raise PrometheusUnavailable("http://127.0.0.1:9", "connection refused")

    def unwritable() -> int:
        raise PermissionError(13, "Permission denied", "/root/out")

    assert cli.exit_code("t", bad) == 2
    assert cli.exit_code("t", down) == 1
    assert cli.exit_code("t", unwritable) == 1
    err = capsys.readouterr().err
    assert "harbinger t: error: --x: nope" in err
    assert "Prometheus at http://127.0.0.1:9 is unavailable" in err and "Permission denied: /root/out" in err
