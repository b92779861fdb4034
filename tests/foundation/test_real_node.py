"""A real node in the local cluster: a kubelet with containerd and runc runs real pods from
images made here, reachable on the node's own network; the node stops without leaving
anything behind on the host (sysctls, routes, forwarding, iptables, mounts, network
namespaces, cgroups, processes), also when the test run that started it is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harbinger_dev.localcluster import LocalCluster
from harbinger_dev.localcluster.binaries import find_binaries
from harbinger_dev.localcluster.node import (
    CGROUP_PREFIX,
    HELLO_IMAGE,
    NETNS_DIR,
    NETNS_PREFIX,
    RealNode,
    cgroup_controllers,
    sweep_stale_nodes,
)

REPO = Path(__file__).resolve().parents[2]


def host_state() -> dict[str, Any]:
    """What a real node must not change on the host."""
    def out(*argv: str) -> str:
        return subprocess.run(list(argv), capture_output=True, text=True, check=True).stdout

    return {
        "sysctls": out("sysctl", "vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops", "net.ipv4.ip_forward",
                       "net.ipv4.conf.all.forwarding", "net.ipv4.conf.all.route_localnet"),
        "routes": out("ip", "route", "show", "table", "all"),
        "links": sorted(line.split(":")[1].strip() for line in out("ip", "-o", "link").splitlines()),
        "iptables": out("iptables-save").count("\n"),
        "mounts": sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()),
    }


def leftovers() -> dict[str, list[str]]:
    netns = [line.split()[0] for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
             .stdout.splitlines() if line.startswith(NETNS_PREFIX)]
    cgroups = [str(p) for c in cgroup_controllers() for p in c.glob(CGROUP_PREFIX + "*")]
    return {"netns": netns, "cgroups": cgroups}


def run_hello(cluster: LocalCluster, node_name: str, name: str) -> str:
    """A pod of the hello image on the node; its IP once it runs."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                           "labels": {"app": name}},
           "spec": {"nodeName": node_name, "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "hello", "image": HELLO_IMAGE, "imagePullPolicy": "Never",
                                    "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}}}]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = cluster.kubectl("get", "pod", name, "-o", "jsonpath={.status.phase} {.status.podIP}", check=False)
        if found.stdout.startswith("Running "):
            return found.stdout.split()[1]
        time.sleep(0.25)
    raise AssertionError(cluster.kubectl("describe", "pod", name, check=False).stdout[-2000:])


def test_a_real_node_runs_real_pods_and_leaves_the_host_as_it_was(cluster: LocalCluster) -> None:
    before = host_state()
    assert cluster.binaries is not None
    node = RealNode(cluster, cluster.binaries.node())
    try:
        started = time.monotonic()
        node.start()
        ready_seconds = time.monotonic() - started
        labels = json.loads(cluster.kubectl("get", "node", node.name, "-o", "jsonpath={.metadata.labels}").stdout)
        assert labels["harbinger.io/real-node"] == "true"
        ip = run_hello(cluster, node.name, "hello-real")
        assert ip.startswith(f"10.245.{node.slot}.")
        # A real process answers on the pod's address, inside the node's network.
        reply = subprocess.run(node.in_netns("python3", "-c", f"import urllib.request as u; print(u.urlopen("
                                             f"'http://{ip}:8080/', timeout=5).read().decode())"),
                               capture_output=True, text=True, timeout=30)
        assert reply.stdout.strip() == "hello from hello-real", reply.stderr
        # The host reaches it too (its one route into the node, to the pods' range): the
        # apiserver calls webhooks at their pods' addresses, Prometheus scrapes them.
        with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as direct:
            assert direct.read().decode().strip() == "hello from hello-real"
        # crictl sees it in the node's containerd, as on any node.
        listed = subprocess.run(node.in_node(str(node.binaries.crictl), f"--runtime-endpoint=unix://{node.socket}",
                                             "ps", "--name=hello", "-o", "json"), capture_output=True, text=True,
                                timeout=30)
        assert [c["metadata"]["name"] for c in json.loads(listed.stdout)["containers"]] == ["hello"], listed.stderr
        # A Service's ClusterIP leads there too (kube-proxy's rules, in the node's namespace only).
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello-real", "namespace": "default"},
                   "spec": {"selector": {"app": "hello-real"}, "ports": [{"port": 80, "targetPort": 8080}]}}
        cluster.kubectl("apply", "-f", "-", input=json.dumps(service))
        cluster_ip = cluster.kubectl("get", "service", "hello-real", "-o", "jsonpath={.spec.clusterIP}").stdout
        through = ""
        for _ in range(60):  # until kube-proxy has synced the Service
            through = subprocess.run(node.in_netns("python3", "-c", f"import urllib.request as u; print(u.urlopen("
                                                   f"'http://{cluster_ip}/', timeout=2).read().decode())"),
                                     capture_output=True, text=True, timeout=30).stdout.strip()
            if through:
                break
            time.sleep(0.5)
        assert through == "hello from hello-real"
        # And the pod reaches the apiserver as any in-cluster client does: the `kubernetes`
        # Service, its service account's CA and token.
        asked = subprocess.run(node.in_netns("python3", "-c", f"import urllib.request as u; print(u.urlopen("
                                             f"'http://{ip}:8080/apiserver', timeout=10).read().decode())"),
                               capture_output=True, text=True, timeout=30)
        assert asked.stdout.startswith("200 ") and '"gitVersion": "v1.37.2"' in asked.stdout, asked.stderr
        # The apiserver reaches the kubelet too (kubectl logs).
        assert cluster.kubectl("logs", "hello-real").returncode == 0
        # While it runs, the host is as it was (its address and veth are the node's own).
        during = host_state()
        assert during["sysctls"] == before["sysctls"]
        assert during["iptables"] == before["iptables"]
        # Its netns' handle only, and the directory iproute2 mounts for it on a host that had none.
        assert [m for m in during["mounts"] if node.netns not in m and m != str(NETNS_DIR)] == [
            m for m in before["mounts"] if m != str(NETNS_DIR)]
    finally:
        cluster.kubectl("delete", "pod,service", "hello-real", "--ignore-not-found", "--wait=false", check=False)
        node.stop()
        cluster.kubectl("delete", "node", node.name, "--ignore-not-found", check=False)
    assert host_state() == before
    assert not [c for c in leftovers()["cgroups"] if node.id in c] and not [n for n in leftovers()["netns"]
                                                                           if node.id in n]
    print(f"real node Ready in {ready_seconds:.1f} s")


KILLED_RUN = """
import sys, time
from pathlib import Path
from harbinger_dev.localcluster import LocalCluster
from harbinger_dev.localcluster.binaries import find_binaries
from harbinger_dev.localcluster.binaries import Binaries
from harbinger_dev.localcluster.node import RealNode
cluster = LocalCluster()
cluster.workdir, cluster.binaries = Path(sys.argv[1]), Binaries(Path(sys.argv[2]))
cluster.ports = {"kube-apiserver": int(sys.argv[3])}
node = RealNode(cluster, cluster.binaries.node(), index=1)
node.start()
print(node.id, node.name, flush=True)
time.sleep(600)
"""


def test_a_killed_run_leaves_nothing_once_swept(cluster: LocalCluster) -> None:
    """The run that started a node is SIGKILLed with a pod running: its kubelet and containerd
    die with it (parent-death signal); the next start (or this sweep) removes the rest."""
    assert cluster.binaries is not None
    before = host_state()
    run = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(cluster.workdir), str(cluster.binaries.dir),
                            str(cluster.ports["kube-apiserver"])], stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "dev")])})
    assert run.stdout is not None
    node_id, name = run.stdout.readline().split()
    try:
        run_hello(cluster, name, "hello-killed")
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        assert node_id in sweep_stale_nodes()
    finally:
        if run.poll() is None:
            run.kill()
        cluster.kubectl("delete", "pod", "hello-killed", "--ignore-not-found", "--wait=false", check=False)
        cluster.kubectl("delete", "node", name, "--ignore-not-found", check=False)
    assert not [c for c in leftovers()["cgroups"] if node_id in c] and not [n for n in leftovers()["netns"]
                                                                           if node_id in n]
    assert subprocess.run(["pgrep", "-f", "/hello$"], capture_output=True, text=True).stdout == ""
    assert host_state() == before


@pytest.fixture(autouse=True)
def _real_node_tools() -> None:
    for tool in ("runc", "iptables-save", "nsenter"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            pytest.fail(f"{tool} is missing: run make setup (hack/install-debs.sh installs it)")


def test_cluster_up_with_a_real_node_and_down_leave_nothing(tmp_path: Path) -> None:
    """`harbinger cluster --real-nodes 1 up` (what `make cluster-up` runs) and `down`."""
    before = host_state()
    state = tmp_path / "state"
    harbinger = [sys.executable, "-m", "harbinger.cli", "cluster"]
    up = subprocess.run([*harbinger, "up", "--real-nodes", "1", "--state-dir", str(state), "--apiserver-port", "0"],
                        capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        nodes = subprocess.run([find_binaries()["kubectl"], f"--kubeconfig={state / 'kubeconfig'}", "get", "nodes",
                                "-l", "harbinger.io/real-node",
                                "-o", "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}"],
                               capture_output=True, text=True, timeout=60)
        assert nodes.stdout.split() == ["True"], nodes.stderr
    finally:
        down = subprocess.run([*harbinger, "down", "--state-dir", str(state)], capture_output=True, text=True,
                              timeout=120)
    assert down.returncode == 0, down.stderr
    assert host_state() == before
    assert leftovers() == {"netns": [], "cgroups": []}
