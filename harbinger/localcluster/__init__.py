"""The local control plane and Prometheus that Harbinger's tests and demo run on."""

from harbinger.localcluster.cluster import LocalCluster
from harbinger.localcluster.prometheus import LocalPrometheus

__all__ = ["LocalCluster", "LocalPrometheus"]
