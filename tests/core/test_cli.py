from __future__ import annotations

import subprocess
import sys

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
