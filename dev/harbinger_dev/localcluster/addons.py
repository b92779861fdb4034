"""What a cluster with real nodes runs besides them: the cluster DNS (CoreDNS, built from its
Go module by ``hack/build-controlplane.sh``), so that Service names such as
``prometheus.monitoring.svc`` resolve in pods, as they do in any cluster.

CoreDNS answers for ``cluster.local`` (and reverse lookups of the cluster's addresses) and
for nothing else: there is no ``forward``, since no resolver beyond this machine may be asked.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from harbinger_dev.localcluster.errors import ClusterError
from harbinger_dev.localcluster.imagebuild import binary_image
from harbinger_dev.localcluster.images import Image
from harbinger_dev.localcluster.node import CLUSTER_DNS, CLUSTER_DOMAIN

if TYPE_CHECKING:
    from collections.abc import Sequence

    from harbinger_dev.localcluster.cluster import LocalCluster
    from harbinger_dev.localcluster.node import NodeBinaries
    from harbinger_dev.localcluster.prometheus import LocalPrometheus

COREDNS_IMAGE = "harbinger.local/coredns:v1.15.0"
#: Unprivileged: it listens above 1024 and the Service maps 53 onto it.
COREDNS_PORT = 1053
COREFILE = f""".:{COREDNS_PORT} {{
    errors
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
"""


def coredns_image(binaries: NodeBinaries) -> Image:
    return binary_image(COREDNS_IMAGE, binaries.coredns, "coredns")


def coredns_objects() -> list[dict[str, Any]]:
    labels = {"k8s-app": "kube-dns"}
    meta = {"namespace": "kube-system", "labels": labels}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", **meta}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "harbinger-dev:coredns"},
         "rules": [{"apiGroups": [""], "resources": ["services", "pods", "namespaces"], "verbs": ["list", "watch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "harbinger-dev:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "harbinger-dev:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", **meta},
         "data": {"Corefile": COREFILE}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coredns", **meta},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
             "metadata": {"labels": labels},
             "spec": {
                 "serviceAccountName": "coredns", "dnsPolicy": "Default",
                 "priorityClassName": "system-cluster-critical",
                 "nodeSelector": {"harbinger.io/real-node": "true"},
                 "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
                 "containers": [{
                     "name": "coredns", "image": COREDNS_IMAGE, "imagePullPolicy": "Never",
                     "args": ["-conf", "/etc/coredns/Corefile"],
                     "ports": [{"name": "dns", "containerPort": COREDNS_PORT, "protocol": "UDP"},
                               {"name": "dns-tcp", "containerPort": COREDNS_PORT, "protocol": "TCP"}],
                     "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
                     "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                     "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                         "capabilities": {"drop": ["ALL"]}},
                     "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}]}],
                 "volumes": [{"name": "config", "configMap": {"name": "coredns"}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", **meta},
         "spec": {"clusterIP": CLUSTER_DNS, "selector": labels, "ports": [
             {"name": "dns", "port": 53, "targetPort": COREDNS_PORT, "protocol": "UDP"},
             {"name": "dns-tcp", "port": 53, "targetPort": COREDNS_PORT, "protocol": "TCP"}]}},
    ]


def start_cluster_dns(cluster: LocalCluster, timeout: float = 60.0) -> None:
    """CoreDNS on the real nodes (its image loaded into each), Ready before this returns."""
    for node in cluster.real_nodes:
        node.load([coredns_image(node.binaries)])
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": coredns_objects()}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = cluster.kubectl("get", "deployment", "coredns", "-n", "kube-system", "-o",
                                "jsonpath={.status.readyReplicas}", check=False).stdout.strip()
        if ready == "1":
            return
        time.sleep(0.5)
    pods = cluster.kubectl("get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns", "-o", "wide",
                           check=False).stdout
    raise ClusterError(f"the cluster DNS (CoreDNS) was not Ready within {timeout:.0f}s:\n{pods}")


def ready_for_manifests(cluster: LocalCluster, prometheus: LocalPrometheus, images: Sequence[Image]) -> None:
    """What ``kubectl apply -k manifests/`` expects of the cluster beyond its DNS: the images
    loaded into every real node, and ``prometheus`` (started) as ``prometheus.monitoring.svc:9090``."""
    for node in cluster.real_nodes:
        node.load(images)
        node.expose("monitoring", "prometheus", 9090, prometheus.port or 0)
