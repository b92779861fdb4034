"""Logs as text or one JSON object per line (``log_format``), and ``harbinger_build_info`` on
every component's /metrics."""

from __future__ import annotations

import json
import logging
import platform

import pytest
from prometheus_client import REGISTRY

from harbinger import __version__
from harbinger.httpserver import BUILD_INFO
from harbinger.logs import JsonFormatter, configure


def test_json_logs_carry_level_logger_message_and_the_exception(capsys: pytest.CaptureFixture[str]) -> None:
    configure("INFO", "json")
    try:
        logger = logging.getLogger("harbinger.test")
        logger.info("floor %d for %s", 4, "shop/checkout")
        try:
            raise KeyError("x")
        except KeyError:
            logger.exception("it broke")
        logger.debug("not shown at INFO")
    finally:
        configure("WARNING", "text")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["level"], e["logger"], e["message"]) for e in lines] == [
        ("INFO", "harbinger.test", "floor 4 for shop/checkout"), ("ERROR", "harbinger.test", "it broke")]
    assert "KeyError" in lines[1]["exception"] and lines[0]["time"].endswith("Z")
    assert "exception" not in lines[0]


def test_a_message_that_is_not_text_is_still_one_json_line() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "odd %s", ("\n\"quoted\"\x00",), None)
    line = JsonFormatter().format(record)
    assert "\n" not in line and json.loads(line)["message"] == "odd \n\"quoted\"\x00"


def test_build_info_names_the_version() -> None:
    assert BUILD_INFO is not None  # registered on import, as every component's server imports it
    assert REGISTRY.get_sample_value("harbinger_build_info", {"version": __version__,
                                                             "python": platform.python_version()}) == 1
