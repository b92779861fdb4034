"""The local control plane and Prometheus that Harbinger's tests and demo run on."""

from harbinger_dev.localcluster.cluster import LocalCluster
from harbinger_dev.localcluster.prometheus import LocalPrometheus

__all__ = ["LocalCluster", "LocalPrometheus"]
