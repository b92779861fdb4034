"""The local cluster's failures name the component or port at fault, and leave nothing behind."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from harbinger_dev.localcluster import LocalCluster
from harbinger_dev.localcluster.binaries import Binaries, find_binaries
from harbinger_dev.localcluster.cluster import ensure_port_free
from harbinger_dev.localcluster.errors import ClusterError

REPO = Path(__file__).resolve().parents[2]


def test_a_port_in_use_is_named() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ClusterError, match=rf"port {port} for kube-apiserver .* already in use"):
            LocalCluster(apiserver_port=port).start()


def test_a_port_left_in_time_wait_is_free_again() -> None:
    """``make cluster-down`` then at once ``make cluster-up``: the old apiserver's connections
    wait in TIME-WAIT on its port, which must not count as in use."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client_side:
            served, _ = listener.accept()
            served.close()  # the server closes first: its end of the connection waits in TIME-WAIT
            client_side.recv(1)
    states = subprocess.run(["ss", "-tan", f"sport = :{port}"], capture_output=True, text=True).stdout
    assert "TIME-WAIT" in states, states
    ensure_port_free(port, "kube-apiserver")


def test_a_component_that_dies_is_named_with_its_log(tmp_path: Path) -> None:
    real = find_binaries()
    # A bin dir whose kube-apiserver is a script that fails the way a bad flag would.
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("etcd", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl", "kwok-stages.yaml"):
        (fake / name).symlink_to(real.dir / name)
    apiserver = fake / "kube-apiserver"
    apiserver.write_text("#!/bin/sh\necho 'E0101 unknown flag: --harbinger-test' >&2\nexit 3\n")
    apiserver.chmod(0o755)
    workdir = tmp_path / "cluster"
    cluster = LocalCluster(None, binaries=Binaries(fake), start_timeout=30)
    with pytest.raises(ClusterError, match=r"kube-apiserver exited with code 3(.|\n)*unknown flag"):
        cluster.start()
    workdir = cluster.workdir
    # etcd, started before the apiserver, was stopped again, and the work dir is gone.
    assert not workdir.exists()
    assert not any(str(workdir) in line for line in _process_table())


def test_a_stopped_cluster_leaves_no_process_and_no_workdir() -> None:
    cluster = LocalCluster()
    cluster.start()
    pids = [p.pid for p in cluster.processes.values()]
    workdir = cluster.workdir
    cluster.stop()
    assert not workdir.exists()
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _process_table() -> list[str]:
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout.splitlines()


def test_build_script_without_go_says_so(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HARBINGER_BIN_DIR": str(tmp_path / "bin")}
    # /usr/bin and /bin hold no go on this machine's images; make sure of it for the test.
    assert subprocess.run(["bash", "-c", "command -v go"], env=env, capture_output=True).returncode != 0
    result = subprocess.run([str(REPO / "hack" / "build-controlplane.sh")], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "Go was not found" in result.stderr


def test_build_script_without_module_proxy_says_so(tmp_path: Path) -> None:
    go_dir = subprocess.run(["bash", "-c", "dirname $(command -v go)"], capture_output=True, text=True,
                            check=True).stdout.strip()
    env = {
        "PATH": f"{go_dir}:/usr/bin:/bin", "HOME": str(tmp_path),
        "HARBINGER_BIN_DIR": str(tmp_path / "bin"),
        # An empty module cache and a proxy address where nothing listens.
        "GOMODCACHE": str(tmp_path / "modcache"), "GOPATH": str(tmp_path / "gopath"),
        "GOCACHE": str(tmp_path / "gocache"), "GOPROXY": "http://127.0.0.1:9", "GOFLAGS": "",
        "GONOSUMDB": "*", "GOTOOLCHAIN": "local",
    }
    result = subprocess.run([str(REPO / "hack" / "build-controlplane.sh")], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert "cannot download Go modules" in result.stderr and "GOPROXY=http://127.0.0.1:9" in result.stderr
