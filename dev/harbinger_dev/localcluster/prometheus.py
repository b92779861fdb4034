"""A real Prometheus (Debian's ``prometheus`` package) on 127.0.0.1 for tests and the demo.

Targets are added at run time through a file_sd file, which Prometheus re-reads on
change, so a test can start a server on a free port and have it scraped without a
Prometheus restart.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from harbinger_dev.localcluster.cluster import ensure_port_free, free_port, http_ok
from harbinger_dev.localcluster.errors import ClusterError
from harbinger_dev.localcluster.process import ManagedProcess, StartsAndStops


def find_prometheus() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if not found:
        raise ClusterError("prometheus is not installed; 'make setup' installs Debian's prometheus package")
    return found


class LocalPrometheus(StartsAndStops):
    def __init__(self, *, port: int | None = None, scrape_interval: str = "1s", workdir: Path | None = None,
                 retention: str = "15d", openmetrics: str | None = None,
                 out_of_order_window: str | None = None) -> None:
        """``openmetrics``: history written into the TSDB before Prometheus starts (promtool's
        backfill), for weeks of past traffic that no scrape could produce in a test; keep
        ``retention`` longer than that history. A history that runs on past the start (standing
        in for scrapes to come) needs ``out_of_order_window`` to reach beyond its end: the head
        refuses, as out of bounds, every live sample older than the newest block's end, unless
        out-of-order samples within the window are allowed."""
        self.port = port
        self.out_of_order_window = out_of_order_window
        self.retention = retention
        self.openmetrics = openmetrics
        self.scrape_interval = scrape_interval
        self._owns_workdir = workdir is None
        self._workdir_arg = workdir
        self.workdir = Path()
        self.targets: dict[str, list[dict[str, Any]]] = {}
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        binary = find_prometheus()
        if self.port:
            ensure_port_free(self.port, "prometheus")
        else:
            self.port = free_port()
        self.workdir = self._workdir_arg or Path(tempfile.mkdtemp(prefix="harbinger-prometheus-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_targets()
        if self.openmetrics is not None:
            self._backfill(self.openmetrics)
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{
                "job_name": "harbinger",
                "scrape_timeout": self.scrape_interval,
                "file_sd_configs": [{"files": [str(self.workdir / "targets.json")], "refresh_interval": "1s"}],
            }],
        }
        if self.out_of_order_window:
            config["storage"] = {"tsdb": {"out_of_order_time_window": self.out_of_order_window}}
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process = ManagedProcess("prometheus", [
            binary, f"--config.file={self.workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.workdir / 'data'}", f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle", "--log.level=warn",
        ], self.workdir / "prometheus.log")
        self.process.start()
        deadline = time.monotonic() + timeout
        while not http_ok(f"{self.url}/-/ready"):
            self.process.check_alive()
            if time.monotonic() > deadline:
                self.stop()
                raise ClusterError(f"prometheus did not become ready in {timeout:.0f}s")
            time.sleep(0.1)

    def _backfill(self, openmetrics: str) -> None:
        source = self.workdir / "backfill.om"
        source.write_text(openmetrics if openmetrics.rstrip().endswith("# EOF") else openmetrics + "# EOF\n")
        promtool = shutil.which("promtool") or "/usr/bin/promtool"
        result = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(source),
                                 str(self.workdir / "data")], capture_output=True, text=True)
        source.unlink()
        if result.returncode != 0:
            raise ClusterError(f"promtool could not backfill the history: {result.stderr.strip()[-2000:]}")

    def stop(self) -> None:
        if self.process:
            self.process.stop()
            self.process = None
        if self._owns_workdir and self.workdir != Path():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def add_target(self, job: str, address: str, labels: dict[str, str] | None = None) -> None:
        """Scrape ``address`` (``host:port``, path /metrics) under ``job``; once, however often
        it is added."""
        group = {"targets": [address], "labels": {"job": job, **(labels or {})}}
        if group not in self.targets.setdefault(job, []):
            self.targets[job].append(group)
            self._write_targets()

    def remove_job(self, job: str) -> None:
        self.targets.pop(job, None)
        self._write_targets()

    def _write_targets(self) -> None:
        groups = [group for groups in self.targets.values() for group in groups]
        tmp = self.workdir / "targets.json.tmp"
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.workdir / "targets.json")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns Prometheus's ``data.result`` list."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise ClusterError(f"prometheus query {promql!r} failed: {body.get('error')}")
        return list(body["data"]["result"])

    def wait_for(self, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll until ``promql`` returns at least one series."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result:
                return result
            if time.monotonic() > deadline:
                raise ClusterError(f"prometheus returned no series for {promql!r} within {timeout:.0f}s")
            time.sleep(0.5)
