"""Harbinger's components as the demo runs them: real ``harbinger <command>`` processes,
each logging to its own file, each stopped (SIGTERM, then SIGKILL) when the demo ends."""

from __future__ import annotations

import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from harbinger_dev.localcluster.cluster import http_ok
from harbinger_dev.localcluster.errors import ClusterError
from harbinger_dev.localcluster.process import ManagedProcess


class Components:
    """Every process the demo started, so that one ``stop()`` ends them all."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.env = env
        self.processes: dict[str, ManagedProcess] = {}

    def start(self, name: str, args: Sequence[str], *, ready_url: str | None = None,
              tls: ssl.SSLContext | None = None, timeout: float = 60.0) -> ManagedProcess:
        process = ManagedProcess(name, [sys.executable, "-m", "harbinger.cli", "--log-level=INFO", *args],
                                 self.logs / f"{name}.log", env=self.env)
        self.processes[name] = process
        process.start()
        if ready_url:
            deadline = time.monotonic() + timeout
            while not http_ok(ready_url, tls):
                process.check_alive()
                if time.monotonic() > deadline:
                    raise ClusterError(f"{name} was not ready at {ready_url} within {timeout:.0f}s; "
                                       f"last lines of {process.log_path}:\n{process.log_tail()}")
                time.sleep(0.2)
        return process

    def run(self, name: str, args: Sequence[str], *, timeout: float = 600.0) -> None:
        """A one-shot command (``certs``, ``train``): run it to completion, or raise naming it."""
        process = self.start(name, args)
        try:
            process.wait_exit(timeout)
        finally:
            self.processes.pop(name, None)

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process:
            process.stop()

    def stop_all(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop(name)

    def check_alive(self) -> None:
        for process in self.processes.values():
            process.check_alive()
