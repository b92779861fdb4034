"""A child process that cannot outlive its parent, with its log kept for error messages."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from harbinger_dev.localcluster.errors import ClusterError

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # If the Python process is killed (SIGKILL, OOM, a crashed test runner), the kernel
    # sends SIGTERM to each child: no etcd or apiserver is ever left behind.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgrp()  # keep Ctrl-C in the terminal from reaching the children before we stop them


class ManagedProcess:
    """One component of the local control plane (or Prometheus), logging to a file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                self._proc = subprocess.Popen(
                    self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env={**os.environ, **(self.env or {})}, preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                raise ClusterError(f"{self.name} could not be started ({self.argv[0]}): {exc.strerror}") from exc

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def check_alive(self) -> None:
        """Raise a ClusterError naming the component and showing its log if it has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            raise ClusterError(
                f"{self.name} exited with code {self._proc.returncode}; last lines of {self.log_path}:\n"
                + self.log_tail()
            )

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text[-lines:])

    def wait_exit(self, timeout: float) -> None:
        """For one-shot commands: wait until it exits, and raise naming it (with its log)
        unless it exited 0."""
        if self._proc is None:
            raise ClusterError(f"{self.name} was never started")
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ClusterError(f"{self.name} did not finish within {timeout:.0f}s; last lines of {self.log_path}:\n"
                               + self.log_tail()) from None
        if code != 0:
            raise ClusterError(f"{self.name} failed with exit code {code}; last lines of {self.log_path}:\n"
                               + self.log_tail())

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; idempotent."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


class StartsAndStops:
    """``with thing:`` starts it and stops it on the way out, also after an error."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
