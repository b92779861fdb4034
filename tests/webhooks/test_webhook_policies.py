"""The webhook's HarbingerPolicy cache on the real apiserver: the CRD installed, a policy
applied with kubectl reaches the cache through the watch (no API call per admission), and
a change to it does too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harbinger_dev.localcluster import LocalCluster
from webhooks.cluster import WatchedCluster

REPO = Path(__file__).resolve().parents[2]


async def test_policies_reach_the_webhooks_cache_by_watch(
    cluster: LocalCluster, make_namespace: Any, eventually: Any,
) -> None:
    cluster.kubectl("apply", "-k", str(REPO / "manifests" / "base" / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/harbingerpolicies.harbinger.io",
                    "crd/clusterharbingerpolicies.harbinger.io")
    namespace = await make_namespace(opted_in=True)
    watched = WatchedCluster(cluster.kubeconfig)
    await watched.start()
    try:
        await watched.wait_synced(30)
        assert watched.fresh()
        policy = {"apiVersion": "harbinger.io/v1alpha1", "kind": "HarbingerPolicy",
                  "metadata": {"name": "defaults", "namespace": namespace},
                  "spec": {"capacity": {"rpsPerReplica": 12}}}
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(policy))

        async def fields(rate: float) -> bool:
            return watched.view.policies.fields_for(namespace, "web") == {"rps_per_replica": rate}

        await eventually(lambda: fields(12), timeout=30, what="the policy in the webhook's cache")
        policy["spec"] = {"capacity": {"rpsPerReplica": 30}, "service": "web"}
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(policy))
        await eventually(lambda: fields(30), timeout=30, what="the changed policy in the webhook's cache")
        # The platform's defaults reach it too, under the namespace's.
        platform = {"apiVersion": "harbinger.io/v1alpha1", "kind": "ClusterHarbingerPolicy",
                    "metadata": {"name": f"platform-{namespace}"}, "spec": {"capacity": {"headroom": 0.5}}}
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(platform))
        try:
            async def layered() -> bool:
                return watched.view.policies.fields_for(namespace, "web") == {"rps_per_replica": 30,
                                                                              "headroom": 0.5}

            await eventually(layered, timeout=30, what="the cluster's policy under the namespace's")
        finally:
            cluster.kubectl("delete", "clusterharbingerpolicies", f"platform-{namespace}")
    finally:
        await watched.stop()
