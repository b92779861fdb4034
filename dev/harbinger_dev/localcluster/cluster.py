"""A real Kubernetes control plane on 127.0.0.1, envtest-style, for tests and the demo.

etcd, kube-apiserver, kube-controller-manager (so Deployments make ReplicaSets and
Pods, and the real HPA controller runs), kube-scheduler (from a
KubeSchedulerConfiguration that may name Harbinger's extender) and KWOK (which keeps
Node objects heartbeating and turns bound pods Running). No kubelet, no containers.

Every component authenticates with a client certificate from a CA made for this
cluster alone; everything lives in one work directory that :meth:`LocalCluster.stop`
removes. Children die with the Python process (PR_SET_PDEATHSIG), so a crashed test
run leaves no etcd behind; a stale work directory of a dead run is swept on start.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from certs.authority import CertificateAuthority, new_signing_key_pem
from harbinger_dev.localcluster.binaries import Binaries, find_binaries
from harbinger_dev.localcluster.errors import ClusterError
from harbinger_dev.localcluster.node import SERVICE_CIDR, RealNode
from harbinger_dev.localcluster.process import ManagedProcess, StartsAndStops

WORKDIR_PREFIX = "harbinger-cluster-"
OWNER_FILE = "owner.pid"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_port_free(port: int, what: str) -> None:
    """Whether a listener could bind the port. SO_REUSEADDR, as the apiserver's own listener
    sets it: connections of a cluster just stopped, left in TIME-WAIT, do not make it busy."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ClusterError(f"port {port} for {what} on 127.0.0.1 is already in use") from exc


def sweep_stale_workdirs(parent: Path) -> None:
    """Remove work directories left by runs whose owner process no longer exists."""
    for candidate in parent.glob(WORKDIR_PREFIX + "*"):
        try:
            owner = int((candidate / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(candidate, ignore_errors=True)
        except PermissionError:
            pass


class LocalCluster(StartsAndStops):
    """Start with ``with LocalCluster() as cluster:`` or :meth:`start` / :meth:`stop`.

    ``apiserver_port`` pins the apiserver's port (``make cluster-up`` uses 6443); other
    ports are picked free. ``extenders`` is the ``extenders:`` list of the scheduler's
    KubeSchedulerConfiguration; :meth:`restart_scheduler` changes it later.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        apiserver_port: int | None = None,
        extenders: list[dict[str, Any]] | None = None,
        hpa_sync_seconds: float = 15.0,
        binaries: Binaries | None = None,
        start_timeout: float = 120.0,
        real_nodes: int = 0,
    ) -> None:
        self._owns_workdir = workdir is None
        self._workdir_arg = workdir
        self._apiserver_port_arg = apiserver_port
        self.extenders = extenders or []
        self.hpa_sync_seconds = hpa_sync_seconds
        self.binaries = binaries
        self.start_timeout = start_timeout
        if not 0 <= real_nodes <= 9:
            raise ClusterError(f"real_nodes must be 0 to 9, not {real_nodes}")
        self.real_node_count = real_nodes
        #: The real nodes (kubelet + containerd; harbinger_dev.localcluster.node), next to KWOK's.
        self.real_nodes: list[RealNode] = []
        self.workdir = Path()
        self.processes: dict[str, ManagedProcess] = {}
        self.ports: dict[str, int] = {}
        self._started = False

    # --- paths -------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['kube-apiserver']}"

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def ca_cert(self) -> Path:
        return self.pki / "ca.crt"

    def log_path(self, component: str) -> Path:
        return self.workdir / "logs" / f"{component}.log"

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        if self._started:
            return
        self.binaries = self.binaries or find_binaries()
        if self._workdir_arg is None:
            parent = Path(tempfile.gettempdir())
            sweep_stale_workdirs(parent)
            self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=parent))
        else:
            self.workdir = self._workdir_arg
            self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / OWNER_FILE).write_text(str(os.getpid()))
        self._started = True
        try:
            self._allocate_ports()
            self._write_pki()
            self._write_kubeconfig()
            self._start_etcd()
            self._start_apiserver()
            self._start_controller_manager()
            self._start_scheduler()
            self._start_kwok()
            for index in range(self.real_node_count):
                assert self.binaries is not None
                node = RealNode(self, self.binaries.node(), index=index)
                self.real_nodes.append(node)
                node.start(timeout=self.start_timeout)
            if self.real_nodes:
                from harbinger_dev.localcluster.addons import start_cluster_dns

                start_cluster_dns(self, timeout=self.start_timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every component (newest first) and remove the work directory."""
        for node in reversed(self.real_nodes):
            node.stop()
        self.real_nodes.clear()
        for process in reversed(list(self.processes.values())):
            process.stop()
        self.processes.clear()
        if self._started and self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._started = False

    def check_alive(self) -> None:
        """Raise a ClusterError naming the first component that has died."""
        for process in self.processes.values():
            process.check_alive()

    # --- the components -------------------------------------------------------------
    def _allocate_ports(self) -> None:
        if self._apiserver_port_arg:
            ensure_port_free(self._apiserver_port_arg, "kube-apiserver")
            self.ports["kube-apiserver"] = self._apiserver_port_arg
        else:
            self.ports["kube-apiserver"] = free_port()
        for name in ("etcd", "etcd-peer", "kube-controller-manager", "kube-scheduler", "kwok"):
            self.ports[name] = free_port()

    def _write_pki(self) -> None:
        ca = CertificateAuthority.create("harbinger-local-cluster-ca")
        ca.keypair.write(self.ca_cert, self.pki / "ca.key")
        ca.issue(
            "kube-apiserver",
            hosts=["127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   "kubernetes.default.svc.cluster.local", "10.0.0.1"],
        ).write(self.pki / "apiserver.crt", self.pki / "apiserver.key")
        # One admin identity (group system:masters) for the local components and the tests:
        # the cluster lives for one test session on loopback, and RBAC is still enforced
        # for every service account, which is what Harbinger's manifests are tested with.
        ca.issue("harbinger-admin", organizations=["system:masters"], server=False, client=True).write(
            self.pki / "admin.crt", self.pki / "admin.key"
        )
        private, public = new_signing_key_pem()
        (self.pki / "sa.key").write_bytes(private)
        (self.pki / "sa.pub").write_bytes(public)

    def _write_kubeconfig(self) -> None:
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "harbinger-local",
                          "cluster": {"server": self.server, "certificate-authority": str(self.ca_cert)}}],
            "users": [{"name": "harbinger-admin",
                       "user": {"client-certificate": str(self.pki / "admin.crt"),
                                "client-key": str(self.pki / "admin.key")}}],
            "contexts": [{"name": "harbinger-local",
                          "context": {"cluster": "harbinger-local", "user": "harbinger-admin"}}],
            "current-context": "harbinger-local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig))

    def _launch(self, name: str, argv: list[str]) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.log_path(name))
        self.processes[name] = process
        process.start()
        return process

    def _wait(self, process: ManagedProcess, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            process.check_alive()
            if ready():
                return
            time.sleep(0.1)
        raise ClusterError(
            f"{process.name} did not become ready ({what}) within {self.start_timeout:.0f}s; "
            f"last lines of {process.log_path}:\n{process.log_tail()}"
        )

    def _start_etcd(self) -> None:
        assert self.binaries
        client_url = f"http://127.0.0.1:{self.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        process = self._launch("etcd", [
            self.binaries["etcd"], "--name=harbinger", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=harbinger={peer_url}",
            # A throwaway cluster: durability buys nothing and fsync dominates on slow disks.
            "--unsafe-no-fsync", "--log-level=warn",
        ])
        self._wait(process, lambda: http_ok(f"{client_url}/health"), "GET /health")

    def _start_apiserver(self) -> None:
        assert self.binaries
        pki = self.pki
        process = self._launch("kube-apiserver", [
            self.binaries["kube-apiserver"],
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports['kube-apiserver']}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={self.ca_cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            # Real nodes (node.py) are named, not resolvable: logs and exec go to their address.
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            # The 'kubernetes' Service would point at a loopback address, which Endpoints refuse.
            "--endpoint-reconciler-type=none",
            # Webhooks and aggregated APIs called through a Service go to its endpoints (pod
            # addresses, which the host routes to real nodes): ClusterIPs exist only inside nodes.
            "--enable-aggregator-routing=true",
            "--profiling=false",
        ])
        self._wait(process, self._apiserver_ready, "GET /readyz")

    def _apiserver_ready(self) -> bool:
        return http_ok(f"{self.server}/readyz", self._client_tls())

    def _client_tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        context.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        return context

    def _start_controller_manager(self) -> None:
        assert self.binaries
        port = self.ports["kube-controller-manager"]
        process = self._launch("kube-controller-manager", [
            self.binaries["kube-controller-manager"],
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'kube-controller-manager'}",
            "--leader-elect=false",
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            f"--root-ca-file={self.ca_cert}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--horizontal-pod-autoscaler-sync-period={self.hpa_sync_seconds:g}s",
            "--profiling=false",
        ])
        self._wait(process, lambda: http_ok(f"https://127.0.0.1:{port}/healthz", _insecure_tls()), "GET /healthz")

    def scheduler_config(self) -> dict[str, Any]:
        """The KubeSchedulerConfiguration the local scheduler runs with."""
        config: dict[str, Any] = {
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "clientConnection": {"kubeconfig": str(self.kubeconfig), "qps": 1000, "burst": 2000},
            "leaderElection": {"leaderElect": False},
        }
        if self.extenders:
            config["extenders"] = self.extenders
        return config

    def _start_scheduler(self) -> None:
        assert self.binaries
        config_path = self.workdir / "kube-scheduler.yaml"
        config_path.write_text(yaml.safe_dump(self.scheduler_config()))
        port = self.ports["kube-scheduler"]
        process = self._launch("kube-scheduler", [
            self.binaries["kube-scheduler"], f"--config={config_path}",
            f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'kube-scheduler'}",
        ])
        self._wait(process, lambda: http_ok(f"https://127.0.0.1:{port}/healthz", _insecure_tls()), "GET /healthz")

    def restart_scheduler(self, extenders: list[dict[str, Any]] | None = None) -> None:
        """Restart kube-scheduler with a new ``extenders`` list (``[]`` for none)."""
        if "kube-scheduler" in self.processes:
            self.processes.pop("kube-scheduler").stop()
        self.extenders = extenders or []
        self._start_scheduler()

    def _start_kwok(self) -> None:
        assert self.binaries
        port = self.ports["kwok"]
        process = self._launch("kwok", [
            self.binaries["kwok"], f"--kubeconfig={self.kubeconfig}",
            f"--config={self.binaries.kwok_stages}",
            # Every node but the real ones (harbinger_dev.localcluster.node), which run a kubelet.
            "--manage-nodes-with-label-selector=!harbinger.io/real-node",
            f"--server-address=127.0.0.1:{port}",
            "--node-lease-duration-seconds=40",
            "--cidr=10.244.0.0/16",
        ])
        self._wait(process, lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), "GET /healthz")

    # --- conveniences ------------------------------------------------------------------
    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the kubectl built with the control plane against this cluster."""
        assert self.binaries
        result = subprocess.run(
            [self.binaries["kubectl"], f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True, text=True, input=input, timeout=120,
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def describe(self) -> dict[str, Any]:
        return {"server": self.server, "kubeconfig": str(self.kubeconfig), "workdir": str(self.workdir),
                "ports": self.ports, "pids": {n: p.pid for n, p in self.processes.items()}}

    def write_state(self, path: Path) -> None:
        path.write_text(json.dumps(self.describe(), indent=2))


def _insecure_tls() -> ssl.SSLContext:
    # The controller-manager and scheduler serve /healthz with a self-signed certificate
    # they make at start; only liveness is checked here, nothing secret is exchanged.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    with contextlib.suppress(OSError, urllib.error.URLError), urllib.request.urlopen(
        url, timeout=2, context=context
    ) as response:
        return bool(response.status == 200)
    return False
