"""A real Kubernetes node next to the KWOK ones: containerd, runc and a kubelet that run real
pods, in namespaces of their own so that nothing on the host changes
(``../shared/REAL-NODE.md`` records the traps this follows).

- **Network.** The node's whole network is a network namespace this node makes: its address
  on a veth pair whose other end (on the host) is only a way to the apiserver, and a bridge
  the pods attach to. Forwarding is turned on in that namespace alone; there is no route out,
  no NAT. The apiserver is reached through a forwarder on the host end of the veth.
- **Kernel settings.** The kubelet writes ``vm.overcommit_memory``, ``kernel.panic`` and
  ``kernel.panic_on_oops``, which are global; containerd and the kubelet run in a private
  mount namespace where files are bound over those entries, and where ``/run``, ``/var/lib``
  and ``/var/log`` are their own (shim sockets, CNI state, pod logs).
- **The host reaches the pods** (the apiserver calls webhooks at their pods' addresses,
  Prometheus scrapes them) through a route to the node's pod range via its veth, which goes
  when the veth goes; pods reach services of the host (the apiserver, Prometheus) only through
  forwarders to ports the harness names (:meth:`RealNode.expose`).
- **DNS**: CoreDNS (:mod:`harbinger_dev.localcluster.addons`) answers for ``cluster.local``
  and nothing else; the kubelet points pods at it.
- **Cgroups** go under a root of this node's own (``/harbinger-node-<id>``), removed on stop.
- **Capabilities.** This VM has no CAP_SYS_RESOURCE: containerd's ``restrict_oom_score_adj``.
- **Images** are made here (:mod:`harbinger_dev.localcluster.images`) and imported into
  containerd's ``k8s.io`` namespace; the sandbox image is a locally built pause.

Stopping kills every process of the node (its network namespace names them all), removes
its cgroups and its network namespace (the veth goes with it); the processes also die with
the test run (parent-death signal), and a later start sweeps what a crashed run left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from certs.authority import CertificateAuthority
from harbinger_dev.localcluster.errors import ClusterError
from harbinger_dev.localcluster.images import Image, ImageFile, write_oci_archive
from harbinger_dev.localcluster.process import ManagedProcess

if TYPE_CHECKING:
    from harbinger_dev.localcluster.cluster import LocalCluster

#: Label on a real node's Node object (KWOK leaves such nodes alone).
REAL_NODE_LABEL = "harbinger.io/real-node"
PAUSE_IMAGE = "harbinger.local/pause:1"
HELLO_IMAGE = "harbinger.local/hello:1"
NETNS_PREFIX = "hbn-"
#: Where iproute2 keeps named network namespaces.
NETNS_DIR = Path("/run/netns")
CGROUP_PREFIX = "harbinger-node-"
#: Global kernel settings the kubelet writes, and the values it wants; bound over in the node's
#: private mount namespace, so the host's stay as they are.
KUBELET_SYSCTLS = {"vm/overcommit_memory": "1", "kernel/panic": "10", "kernel/panic_on_oops": "1"}
CNI_BIN_DIR = Path("/usr/lib/cni")
#: In every real node's namespace, the address pods reach the apiserver at (the `kubernetes`
#: Service's endpoint): a forwarder there leads to the host end of the node's veth.
APISERVER_IN_NODE = "10.250.255.254"
#: The cluster's Service range (the apiserver's --service-cluster-ip-range; cluster.py uses it).
SERVICE_CIDR = "10.0.0.0/24"
#: The cluster DNS Service's address (CoreDNS; addons.py) and the domain it answers for.
CLUSTER_DNS = "10.0.0.10"
CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class NodeBinaries:
    kubelet: Path
    kube_proxy: Path
    containerd: Path
    shim: Path
    ctr: Path
    pause: Path
    hello: Path
    coredns: Path
    crictl: Path

    @classmethod
    def find(cls, bin_dir: Path) -> NodeBinaries:
        found = cls(kubelet=bin_dir / "kubelet", kube_proxy=bin_dir / "kube-proxy", containerd=bin_dir / "containerd",
                    shim=bin_dir / "containerd-shim-runc-v2", ctr=bin_dir / "ctr", pause=bin_dir / "pause",
                    hello=bin_dir / "hello", coredns=bin_dir / "coredns", crictl=bin_dir / "crictl")
        missing = [str(p) for p in vars(found).values() if not Path(p).exists()]
        for tool in ("runc", "ip", "unshare", "nsenter", "iptables", "conntrack"):
            if shutil.which(tool) is None:
                missing.append(f"{tool} (Debian package; hack/install-debs.sh)")
        if not (CNI_BIN_DIR / "bridge").exists():
            missing.append(f"{CNI_BIN_DIR}/bridge (Debian containernetworking-plugins)")
        if missing:
            raise ClusterError("a real node needs: " + ", ".join(missing) + " (run make setup)")
        return found


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise ClusterError(f"{' '.join(argv)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def cgroup_controllers() -> list[Path]:
    """Every mounted hierarchy: the v1 controllers, and the unified (v2) one of a hybrid host,
    where runc also makes each container's cgroup."""
    root = Path("/sys/fs/cgroup")
    return [p for p in sorted(root.iterdir()) if p.is_dir() and not p.is_symlink() and (p / "cgroup.procs").exists()]


def kill_cgroup_tree(name: str) -> int:
    """SIGKILL every process in ``/<name>`` of any hierarchy: the pods' processes, which live in
    network namespaces of their own (so the node's does not name them)."""
    killed = 0
    for controller in cgroup_controllers():
        for procs in (controller / name).rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                        killed += 1
    return killed


def remove_cgroup_tree(name: str, *, timeout: float = 10.0) -> list[Path]:
    """Remove ``/<name>`` and everything below it in every cgroup v1 hierarchy (bottom up);
    a cgroup whose last process has just died may refuse for a moment, so retry. What could
    not be removed is returned."""
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for controller in cgroup_controllers():
            top = controller / name
            if not top.is_dir():
                continue
            for directory in sorted((d for d in top.rglob("*") if d.is_dir()), key=lambda d: len(d.parts),
                                    reverse=True):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()
            if top.exists():
                left.append(top)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def release_netns_dir() -> None:
    """Undo what ``ip netns add`` does to a host once it is no longer needed.

    The first time a host gets a named network namespace, iproute2 bind-mounts ``/run/netns``
    onto itself (so that namespaces mounted under it propagate). ``ip netns delete`` never
    unmounts it, so a host that had no such mount would keep one for good. When the
    directory is empty again (ours were the last namespaces in it), unmount it and remove it.
    A namespace someone else keeps there leaves it alone."""
    with contextlib.suppress(OSError):
        if any(NETNS_DIR.iterdir()):
            return
    mounted = any(line.split()[4] == str(NETNS_DIR) for line in Path("/proc/self/mountinfo").read_text().splitlines())
    if mounted and run("umount", str(NETNS_DIR), check=False).returncode != 0:
        return  # busy: a namespace was added meanwhile
    with contextlib.suppress(OSError):
        NETNS_DIR.rmdir()


def netns_pids(netns: str) -> list[int]:
    result = run("ip", "netns", "pids", netns, check=False)
    return [int(p) for p in result.stdout.split()]


def _owner_dead(node_id: str) -> bool:
    """A node id starts with its owner's pid: is that process gone?"""
    try:
        os.kill(int(node_id.split("-")[0]), 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError):
        return False
    return False


def sweep_stale_nodes() -> list[str]:
    """Remove what real nodes of a test run that has died left: their processes (the node's
    and its pods'), network namespaces and cgroups. Returns the node ids swept."""
    stale = set()
    for line in run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(NETNS_PREFIX) and _owner_dead(name[len(NETNS_PREFIX):]):
            stale.add(name[len(NETNS_PREFIX):])
    for controller in cgroup_controllers():
        for directory in controller.glob(CGROUP_PREFIX + "*"):
            if _owner_dead(directory.name[len(CGROUP_PREFIX):]):
                stale.add(directory.name[len(CGROUP_PREFIX):])
    for node_id in sorted(stale):
        netns = NETNS_PREFIX + node_id
        for pid in netns_pids(netns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        kill_cgroup_tree(CGROUP_PREFIX + node_id)
        run("ip", "netns", "delete", netns, check=False)
        remove_cgroup_tree(CGROUP_PREFIX + node_id)
    if stale:
        release_netns_dir()
    return sorted(stale)


def free_slot() -> int:
    """A /30 in 10.250.0.0/16 (and a /24 of pods in 10.245.0.0/16) no other real node on this
    machine uses (two local clusters, say a developer's and a test run's, may each have one)."""
    used = set()
    for line in run("ip", "-o", "-4", "addr", "show", check=False).stdout.splitlines():
        for word in line.split():
            if word.startswith("10.250."):
                used.add(int(word.split(".")[2]))
    for slot in range(250):
        if slot not in used:
            return slot
    raise ClusterError("no free address range for a real node in 10.250.0.0/16")


class RealNode:
    """One real node of ``cluster`` (``index`` names it; its addresses are a free slot X:
    10.250.X.0/30 for the veth, 10.245.X.0/24 for its pods)."""

    def __init__(self, cluster: LocalCluster, binaries: NodeBinaries, index: int = 0) -> None:
        self.cluster = cluster
        self.binaries = binaries
        self.index = index
        self.id = f"{os.getpid()}-{index}-{uuid.uuid4().hex[:4]}"
        self.name = f"real-{index}-{self.id.rsplit('-', 1)[1]}"
        self.netns = NETNS_PREFIX + self.id
        self.host_veth, self.node_veth = f"hbh{index}{self.id[-4:]}", f"hbn{index}{self.id[-4:]}"
        self._address(index)
        self.cgroup_root = CGROUP_PREFIX + self.id
        self.workdir = cluster.workdir / f"node-{index}"
        self.processes: dict[str, ManagedProcess] = {}
        self.apiserver_forward_port = 6443
        self._started = False

    def _address(self, slot: int) -> None:
        self.slot = slot
        self.host_ip, self.node_ip = f"10.250.{slot}.1", f"10.250.{slot}.2"
        self.pod_cidr, self.bridge_ip = f"10.245.{slot}.0/24", f"10.245.{slot}.1"

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        sweep_stale_nodes()
        self._address(free_slot())
        self._started = True
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._network()
            self._forward_apiserver()
            self._credentials()
            self._cgroups()
            self._start_containerd()
            self._import(Image(PAUSE_IMAGE, {"/pause": ImageFile(self.binaries.pause.read_bytes())}, ["/pause"]))
            self._import(Image(HELLO_IMAGE, {"/hello": ImageFile(self.binaries.hello.read_bytes())}, ["/hello"]))
            self._start_kubelet()
            self._wait_ready(timeout)
            self._start_kube_proxy()
            self._apiserver_for_pods()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if not self._started:
            return
        for binding in (f"harbinger-node-{self.name}", f"harbinger-node-proxier-{self.name}"):
            with contextlib.suppress(ClusterError, OSError, subprocess.SubprocessError):
                self.cluster.kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found", check=False)
        for process in reversed(list(self.processes.values())):
            process.stop()
        self.processes.clear()
        # The shims containerd started left its process group (the node's namespace names
        # them), and the pods' processes are in namespaces of their own (their cgroups name them).
        for _ in range(50):
            pids = netns_pids(self.netns)
            killed = kill_cgroup_tree(self.cgroup_root)
            if not pids and not killed:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        run("ip", "netns", "delete", self.netns, check=False)
        release_netns_dir()
        left = remove_cgroup_tree(self.cgroup_root)
        if left:
            raise ClusterError(f"cgroups of node {self.name} could not be removed: {', '.join(map(str, left))}")
        self._started = False

    # --- pieces ---------------------------------------------------------------------------
    def in_netns(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def _network(self) -> None:
        run("ip", "netns", "add", self.netns)
        run("ip", "link", "add", self.host_veth, "type", "veth", "peer", "name", self.node_veth)
        run("ip", "link", "set", self.node_veth, "netns", self.netns)
        run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_veth)
        run("ip", "link", "set", self.host_veth, "up")
        # The apiserver calls webhooks at their pods' addresses: the host routes the pod range to
        # this node. The route belongs to the veth, so it goes with it, also after a crash.
        run("ip", "route", "add", self.pod_cidr, "via", self.node_ip, "dev", self.host_veth)
        for argv in (["ip", "link", "set", "lo", "up"],
                     ["ip", "addr", "add", f"{self.node_ip}/30", "dev", self.node_veth],
                     ["ip", "link", "set", self.node_veth, "up"],
                     ["ip", "link", "add", "hbr0", "type", "bridge"],
                     ["ip", "addr", "add", f"{self.bridge_ip}/24", "dev", "hbr0"],
                     ["ip", "link", "set", "hbr0", "up"],
                     # Service addresses must route somewhere for kube-proxy's DNAT to apply to
                     # the node's own connections: the bridge, where the pods are.
                     ["ip", "route", "add", SERVICE_CIDR, "dev", "hbr0"],
                     # This namespace's own setting: pods -> ClusterIP -> pods crosses the bridge.
                     ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]):
            run(*self.in_netns(*argv))

    def _forward_apiserver(self) -> None:
        """The apiserver listens on 127.0.0.1 only: a forwarder on the veth's host end."""
        self._forward_on_host("apiserver-forward", self.apiserver_forward_port, self.cluster.ports["kube-apiserver"])

    def _forward_on_host(self, name: str, port: int, local_port: int) -> None:
        """``host_ip:port`` (the veth's host end) leads to ``127.0.0.1:local_port``."""
        forward = ManagedProcess(name, [
            "python3", "-m", "harbinger_dev.localcluster.forward", f"{self.host_ip}:{port}",
            f"127.0.0.1:{local_port}"], self.workdir / "logs" / f"{name}.log", env=_FORWARD_ENV)
        self.processes[name] = forward
        forward.start()

    def _credentials(self) -> None:
        ca = CertificateAuthority.load(self.cluster.ca_cert, self.cluster.pki / "ca.key")
        ca.issue(f"system:node:{self.name}", organizations=["system:nodes"], server=False, client=True).write(
            self.workdir / "kubelet.crt", self.workdir / "kubelet.key")
        kubeconfig = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": f"https://{self.host_ip}:{self.apiserver_forward_port}",
                "certificate-authority": str(self.cluster.ca_cert), "tls-server-name": "kubernetes"}}],
            "users": [{"name": "kubelet", "user": {"client-certificate": str(self.workdir / "kubelet.crt"),
                                                   "client-key": str(self.workdir / "kubelet.key")}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "kubelet"}}],
            "current-context": "local",
        }
        (self.workdir / "kubelet.kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        # The Node authorizer is not on in the local control plane: the kubelet's identity gets
        # the node role through RBAC instead.
        binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": f"harbinger-node-{self.name}"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                 "name": f"system:node:{self.name}"}]}
        self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(binding))
        # kube-proxy runs with the same identity: it also watches Services and EndpointSlices.
        proxier = {**binding, "metadata": {"name": f"harbinger-node-proxier-{self.name}"},
                   "roleRef": {**binding["roleRef"], "name": "system:node-proxier"}}  # type: ignore[dict-item]
        self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(proxier))

    def _cgroups(self) -> None:
        for controller in cgroup_controllers():
            (controller / self.cgroup_root).mkdir(exist_ok=True)

    def _containerd_config(self) -> Path:
        cni_conf = self.workdir / "cni"
        cni_conf.mkdir(exist_ok=True)
        (cni_conf / "10-harbinger.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "harbinger",
            "plugins": [
                # No gateway (the bridge's address is set above) and no masquerade: nothing leaves.
                {"type": "bridge", "bridge": "hbr0", "isGateway": False, "ipMasq": False, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": self.pod_cidr, "gateway": self.bridge_ip}]],
                          "routes": [{"dst": SERVICE_CIDR, "gw": self.bridge_ip},
                                     {"dst": f"{self.host_ip}/32", "gw": self.bridge_ip}],
                          "dataDir": str(self.workdir / "cni-state")}},
                {"type": "loopback"},
            ]}))
        root, state = self.workdir / "containerd", self.workdir / "containerd-state"
        config = f"""version = 3
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt",
                    "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{self.socket}"

[ttrpc]
  address = "{self.socket}.ttrpc"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[plugins."io.containerd.cri.v1.runtime"]
  # This VM has no CAP_SYS_RESOURCE: the pause container's oom_score_adj of -998 would fail.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{CNI_BIN_DIR}"]
    conf_dir = "{cni_conf}"
"""
        path = self.workdir / "containerd.toml"
        path.write_text(config)
        return path

    @property
    def socket(self) -> Path:
        """Inside the node's mount namespace (its own /run): a socket path in the work
        directory could pass the 108 characters a Unix socket's path may have."""
        return Path("/run/containerd/containerd.sock")

    def _start_containerd(self) -> None:
        config = self._containerd_config()
        sysctls = self.workdir / "sysctl"
        binds = []
        for entry, value in KUBELET_SYSCTLS.items():
            path = sysctls / entry.replace("/", "_")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value + "\n")
            binds.append(f"mount --bind {path} /proc/sys/{entry}")
        # Its own /run, /var/lib and /var/log: shim sockets, CNI state and pod logs stay in
        # this mount namespace (and vanish with it).
        script = " && ".join([
            *binds, "mount -t tmpfs tmpfs /run", "mount -t tmpfs tmpfs /var/lib", "mount -t tmpfs tmpfs /var/log",
            f"exec {self.binaries.containerd} --config {config}",
        ])
        search = f"{self.binaries.shim.parent}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        # nsenter, not `ip netns exec`: that one mounts a fresh /sys, which hides the cgroup
        # hierarchies from the kubelet.
        process = ManagedProcess("containerd", [
            "nsenter", f"--net=/run/netns/{self.netns}", "--",
            "unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            self.workdir / "logs" / "containerd.log", env={"PATH": search})  # its shim is beside it
        self.processes["containerd"] = process
        process.start()
        deadline = time.monotonic() + 30
        while run(*self.in_node("test", "-S", str(self.socket)), check=False).returncode != 0:
            process.check_alive()
            if time.monotonic() > deadline:
                raise ClusterError(f"containerd did not start; last lines of {process.log_path}:\n"
                                   f"{process.log_tail()}")
            time.sleep(0.1)

    def _containerd_pid(self) -> int:
        """containerd itself: ``nsenter``, ``unshare`` and ``sh`` each exec the next."""
        pid = self.processes["containerd"].pid
        assert pid is not None
        return pid

    def in_node(self, *argv: str) -> list[str]:
        """Run in the node's network and mount namespaces (where containerd and the kubelet are)."""
        return ["nsenter", f"--target={self._containerd_pid()}", "--mount", "--net", "--", *argv]

    def _import(self, image: Image) -> None:
        archive = write_oci_archive(image, self.workdir / f"{image.name.rsplit('/', 1)[1].replace(':', '_')}.tar")
        try:
            run(*self.in_node(str(self.binaries.ctr), f"--address={self.socket}", "-n", "k8s.io", "images",
                              "import", "--all-platforms", str(archive)))
        finally:
            archive.unlink(missing_ok=True)

    def _kubelet_config(self) -> Path:
        resolv = self.workdir / "resolv.conf"
        # What pods with dnsPolicy Default (CoreDNS itself) get: no resolver reaches beyond this
        # machine. Every other pod asks the cluster DNS.
        resolv.write_text("nameserver 127.0.0.1\n")
        config: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": self.node_ip, "port": 10250, "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            # Reached only from this machine (the node's address is inside its own namespace's
            # veth): the apiserver's `kubectl logs` and `exec` need no client certificate.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(self.cluster.ca_cert)}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{self.cgroup_root}", "failCgroupV1": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "failSwapOn": False, "resolvConf": str(resolv), "podCIDR": self.pod_cidr,
            "clusterDNS": [CLUSTER_DNS], "clusterDomain": CLUSTER_DOMAIN,
            "protectKernelDefaults": False, "makeIPTablesUtilChains": False,
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "maxPods": 30, "serializeImagePulls": False, "registerNode": True,
            "nodeStatusReportFrequency": "10s", "nodeStatusUpdateFrequency": "5s",
            # A pod's downward-API files (the chaos sidecar's faults come as annotations) are
            # rewritten when the kubelet syncs the pod: every minute by default, 10 s here.
            "syncFrequency": "10s",
            "localStorageCapacityIsolation": False,
        }
        path = self.workdir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _start_kubelet(self) -> None:
        config = self._kubelet_config()
        process = ManagedProcess("kubelet", self.in_node(
            # Its root directory is the default /var/lib/kubelet, on the node's own tmpfs: it holds
            # sockets, whose paths must stay short.
            str(self.binaries.kubelet), f"--config={config}", f"--kubeconfig={self.workdir / 'kubelet.kubeconfig'}",
            f"--hostname-override={self.name}",
            f"--node-ip={self.node_ip}", f"--node-labels={REAL_NODE_LABEL}=true", "--v=1"),
            self.workdir / "logs" / "kubelet.log")
        self.processes["kubelet"] = process
        process.start()

    def _apiserver_for_pods(self) -> None:
        """Pods reach the apiserver as in any cluster, through the `kubernetes` Service: its
        endpoint is an address every real node has in its own namespace, where a forwarder
        leads to the host's (the local apiserver keeps listening on 127.0.0.1 only)."""
        run(*self.in_netns("ip", "addr", "add", f"{APISERVER_IN_NODE}/32", "dev", "lo"))
        self._forward_in_node("apiserver-in-node", 6443, self.apiserver_forward_port)
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(
            _endpoint_slice("default", "kubernetes", "kubernetes-real-nodes", "https", 6443)))

    def _forward_in_node(self, name: str, port: int, host_port: int) -> None:
        """``APISERVER_IN_NODE:port`` in the node's namespace leads to ``host_ip:host_port``."""
        forward = ManagedProcess(name, self.in_netns(
            "python3", "-m", "harbinger_dev.localcluster.forward", f"{APISERVER_IN_NODE}:{port}",
            f"{self.host_ip}:{host_port}"), self.workdir / "logs" / f"{name}.log", env=_FORWARD_ENV)
        self.processes[name] = forward
        forward.start()

    def expose(self, namespace: str, service: str, port: int, local_port: int) -> None:
        """A service of this machine (listening on ``127.0.0.1:local_port``, like the harness's
        Prometheus) as the Service ``service.namespace:port`` for the node's pods: a Service
        without a selector whose endpoint is the node-local address, where forwarders lead
        to the loopback port. Only the port named is reachable; nothing else of the host."""
        name = f"expose-{namespace}-{service}"
        self._forward_on_host(f"{name}-host", port, local_port)
        self._forward_in_node(name, port, port)
        self.cluster.kubectl("create", "namespace", namespace, check=False)
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": service, "namespace": namespace},
             "spec": {"ports": [{"name": "http", "port": port, "protocol": "TCP"}]}},
            _endpoint_slice(namespace, service, f"{service}-harbinger-dev", "http", port)]}))

    def load(self, images: Sequence[Image]) -> None:
        """Import ``images`` into the node's containerd (one archive at a time: a big one is
        written, imported and removed before the next)."""
        for image in images:
            self._import(image)

    def _start_kube_proxy(self) -> None:
        """Services (ClusterIPs) in the node, with iptables rules in the node's namespace only,
        and none of the global settings kube-proxy would otherwise write (conntrack limits and
        timeouts, route_localnet for localhost NodePorts)."""
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "mode": "iptables", "clientConnection": {"kubeconfig": str(self.workdir / "kubelet.kubeconfig")},
            "hostnameOverride": self.name, "bindAddress": self.node_ip,
            "healthzBindAddress": "127.0.0.1:10256", "metricsBindAddress": "127.0.0.1:10249",
            "clusterCIDR": "10.245.0.0/16", "nodePortAddresses": [f"{self.node_ip}/32"],
            "iptables": {"localhostNodePorts": False, "masqueradeAll": False, "syncPeriod": "10s"},
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s",
                          "udpTimeout": "0s", "udpStreamTimeout": "0s"},
        }
        path = self.workdir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        process = ManagedProcess("kube-proxy", self.in_node(str(self.binaries.kube_proxy), f"--config={path}", "--v=1"),
                                 self.workdir / "logs" / "kube-proxy.log")
        self.processes["kube-proxy"] = process
        process.start()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.processes.values():
                process.check_alive()
            result = self.cluster.kubectl("get", "node", self.name, "-o",
                                          "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
            if result.stdout.strip() == "True":
                return
            time.sleep(0.5)
        kubelet = self.processes["kubelet"]
        raise ClusterError(f"node {self.name} was not Ready within {timeout:.0f}s; last lines of "
                           f"{kubelet.log_path}:\n{kubelet.log_tail()}")


_FORWARD_ENV = {"PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                              os.environ.get("PYTHONPATH", "")])}


def _endpoint_slice(namespace: str, service: str, name: str, port_name: str, port: int) -> dict[str, Any]:
    """The endpoint every real node has in its own namespace, for ``service``."""
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": service,
                                "endpointslice.kubernetes.io/managed-by": "harbinger-dev"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [APISERVER_IN_NODE], "conditions": {"ready": True}}],
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    }
