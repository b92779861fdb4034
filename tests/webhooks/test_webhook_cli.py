"""``harbinger webhook`` as a process: ready once its watches have synced, answers reviews,
exits 0 on SIGTERM; bad flags exit 2 with the flag named."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from certs.serving_set import issue_serving_set
from harbinger.cli import main
from harbinger_dev.localcluster import LocalCluster
from harbinger_dev.localcluster.cluster import free_port


def test_missing_certificates_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["webhook", "--cert-dir", str(tmp_path)]) == 2
    assert "--cert-dir" in capsys.readouterr().err
    issue_serving_set(["127.0.0.1"]).write(tmp_path)
    assert main(["webhook", "--cert-dir", str(tmp_path), "--port", "0"]) == 2
    assert "webhook.port" in capsys.readouterr().err


def get(url: str, context: ssl.SSLContext, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_process_serves_until_sigterm(cluster: LocalCluster, tmp_path: Path) -> None:
    issue_serving_set(["127.0.0.1"]).write(tmp_path / "tls")
    port = free_port()
    env = {**os.environ, "HARBINGER_WEBHOOK__HOST": "127.0.0.1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "harbinger.cli", "webhook", "--cert-dir", str(tmp_path / "tls"), "--port", str(port),
         "--kubeconfig", str(cluster.kubeconfig), "--models-dir", str(tmp_path / "models")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    context = ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.crt"))
    try:
        status = 0
        for _ in range(300):
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                status, _ = get(f"https://127.0.0.1:{port}/readyz", context)
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "default",
            "operation": "CREATE", "object": {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}}}}
        status, body = get(f"https://127.0.0.1:{port}/mutate", context, json.dumps(review).encode())
        assert status == 200 and json.loads(body)["response"] == {"uid": "u", "allowed": True}
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()
