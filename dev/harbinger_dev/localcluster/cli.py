"""``harbinger cluster up|down|run|status``: the local control plane from the shell.

``up`` starts ``cluster run`` as a detached process and returns once the apiserver is
ready and ``STATE_DIR/kubeconfig`` is written; ``down`` stops it. ``run`` keeps the
cluster in the foreground until SIGTERM or Ctrl-C.

With real nodes, the cluster is ready for ``kubectl apply -k manifests/`` as shipped: every
image the manifests name is built from this checkout (imagebuild.py) and loaded into each
node, and a Prometheus runs as ``prometheus.monitoring.svc:9090`` (empty: it scrapes nothing
until told to; the tests give theirs history).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from harbinger_dev.localcluster.addons import ready_for_manifests
from harbinger_dev.localcluster.cluster import LocalCluster
from harbinger_dev.localcluster.errors import ClusterError
from harbinger_dev.localcluster.imagebuild import installable_images
from harbinger_dev.localcluster.prometheus import LocalPrometheus

PID_FILE = "cluster.pid"
STATE_FILE = "cluster.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "run", "status"],
                        help="up: start in the background; down: stop; run: foreground; status: show")
    parser.add_argument("--state-dir", type=Path, default=Path(".harbinger"),
                        help="where the kubeconfig, logs and pid file live (default: .harbinger)")
    parser.add_argument("--apiserver-port", type=int, default=6443,
                        help="kube-apiserver's port on 127.0.0.1 (default: 6443; 0 picks a free one)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for readiness (a first build of the images takes a few minutes)")
    parser.add_argument("--no-images", dest="images", action="store_false",
                        help="real nodes without Harbinger's images (a first build takes a minute or two)")
    parser.add_argument("--real-nodes", type=int, default=0, metavar="N",
                        help="also start N real nodes (kubelet, containerd, runc; 0-9; needs root), next to KWOK's")


def run(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.resolve()
    action: str = args.action
    if action == "run":
        return _run_foreground(state_dir, args.apiserver_port or None, args.real_nodes, images=args.images)
    if action == "up":
        return _up(state_dir, args.apiserver_port, args.timeout, args.real_nodes, images=args.images)
    if action == "down":
        return _down(state_dir, args.timeout)
    return _status(state_dir)


def _pid(state_dir: Path) -> int | None:
    try:
        pid = int((state_dir / PID_FILE).read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _run_foreground(state_dir: Path, port: int | None, real_nodes: int = 0, *, images: bool = True) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    workdir = state_dir / "cluster"
    shutil.rmtree(workdir, ignore_errors=True)
    cluster = LocalCluster(workdir, apiserver_port=port, real_nodes=real_nodes)
    prometheus = LocalPrometheus(workdir=workdir / "prometheus", scrape_interval="15s")
    try:
        cluster.start()
        if cluster.real_nodes:
            _ready_for_manifests(cluster, prometheus, workdir, images=images)
        shutil.copy(cluster.kubeconfig, state_dir / "kubeconfig")
        cluster.write_state(state_dir / STATE_FILE)
        print(f"cluster ready: kubectl --kubeconfig {state_dir / 'kubeconfig'} get nodes", flush=True)
        while not stop.wait(2.0):
            cluster.check_alive()
    finally:
        prometheus.stop()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        for name in ("kubeconfig", STATE_FILE, PID_FILE):
            (state_dir / name).unlink(missing_ok=True)
    return 0


def _ready_for_manifests(cluster: LocalCluster, prometheus: LocalPrometheus, workdir: Path, *, images: bool) -> None:
    """What ``kubectl apply -k manifests/`` expects of a cluster: its images, a Prometheus."""
    built = []
    if images:
        assert cluster.binaries is not None
        print("building Harbinger's images and loading them into the real nodes...", flush=True)
        built = installable_images(workdir / "images", Path(cluster.binaries["kube-scheduler"]))
    prometheus.start()
    ready_for_manifests(cluster, prometheus, built)


def _up(state_dir: Path, port: int, timeout: float, real_nodes: int = 0, *, images: bool = True) -> int:
    if _pid(state_dir):
        print(f"the local cluster is already running (kubeconfig: {state_dir / 'kubeconfig'})")
        return 0
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "kubeconfig").unlink(missing_ok=True)
    log = (state_dir / "cluster.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "harbinger.cli", "cluster", "run", "--state-dir", str(state_dir),
         "--apiserver-port", str(port), "--real-nodes", str(real_nodes), *([] if images else ["--no-images"])],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    (state_dir / PID_FILE).write_text(str(process.pid))
    deadline = time.monotonic() + timeout
    while not (state_dir / "kubeconfig").exists():
        if process.poll() is not None:
            tail = (state_dir / "cluster.log").read_text(errors="replace").splitlines()[-15:]
            raise ClusterError("the local cluster failed to start:\n" + "\n".join(tail))
        if time.monotonic() > deadline:
            process.terminate()
            log_path = state_dir / "cluster.log"
            raise ClusterError(f"the local cluster was not ready within {timeout:.0f}s; see {log_path}")
        time.sleep(0.2)
    print(f"local cluster up. Try: kubectl --kubeconfig {state_dir / 'kubeconfig'} get nodes")
    return 0


def _down(state_dir: Path, timeout: float) -> int:
    pid = _pid(state_dir)
    if pid is None:
        print("the local cluster is not running")
        (state_dir / PID_FILE).unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid(state_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid(state_dir):
        os.kill(pid, signal.SIGKILL)
    (state_dir / PID_FILE).unlink(missing_ok=True)
    print("local cluster stopped")
    return 0


def _status(state_dir: Path) -> int:
    if not _pid(state_dir):
        print("the local cluster is not running")
        return 1
    print(json.dumps(json.loads((state_dir / STATE_FILE).read_text()), indent=2))
    return 0
