"""``manifests/base/extender`` builds, the apiserver accepts every object, and its RBAC is
enough for the extender's watches and no more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client

from extender.server import watching
from extender.state import ClusterState
from harbinger_dev.localcluster import LocalCluster

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests" / "base" / "extender"


def built(cluster: LocalCluster) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(cluster.kubectl("kustomize", str(MANIFESTS)).stdout) if doc]


async def test_the_kustomization_builds_and_the_apiserver_accepts_it(cluster: LocalCluster, namespace: str) -> None:
    docs = built(cluster)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "harbinger-scheduler") in kinds
    assert ("ConfigMap", "harbinger-scheduler-config") in kinds
    assert ("ClusterRole", "harbinger-extender") in kinds
    assert not any(d["kind"] == "Namespace" for d in docs)  # the base owns the namespace

    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    config = yaml.safe_load(config_map["data"]["kube-scheduler.yaml"])
    (extender,) = config["extenders"]
    assert extender["nodeCacheCapable"] is True
    assert extender["ignorable"] is True
    assert extender["httpTimeout"]
    assert (extender["filterVerb"], extender["prioritizeVerb"]) == ("filter", "prioritize")
    assert config["profiles"][0]["schedulerName"] == "harbinger-scheduler"

    # Strict server-side validation of every object, in a throwaway namespace.
    text = yaml.safe_dump_all(docs).replace("harbinger-system", namespace)
    result = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=text)
    assert "deployment.apps/harbinger-scheduler created (server dry run)" in result.stdout


async def test_the_extenders_rbac_is_enough_and_no_more(
    cluster: LocalCluster, kube: client.ApiClient, namespace: str
) -> None:
    # The shipped ServiceAccount and extender ClusterRole, renamed for this test alone.
    suffix = namespace
    wanted = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    docs = [d for d in built(cluster) if d["kind"] in wanted and (
        d["kind"] == "ServiceAccount" or d["metadata"]["name"] == "harbinger-extender")]
    assert len(docs) == 3
    text = yaml.safe_dump_all(docs).replace("harbinger-system", namespace).replace(
        "name: harbinger-extender", f"name: harbinger-extender-{suffix}")
    cluster.kubectl("apply", "-f", "-", input=text)
    try:
        who = f"system:serviceaccount:{namespace}:harbinger-scheduler"
        for verb, resource in (("list", "nodes"), ("watch", "nodes"), ("list", "pods"), ("watch", "pods")):
            assert cluster.kubectl("auth", "can-i", verb, resource, f"--as={who}", check=False).stdout.strip() == "yes"
        for verb, resource in (("get", "secrets"), ("patch", "nodes"), ("create", "pods/binding"),
                               ("delete", "pods")):
            assert cluster.kubectl("auth", "can-i", verb, resource, f"--as={who}",
                                   check=False).stdout.strip() == "no"

        # And the real watches sync with nothing but that identity.
        core = client.CoreV1Api(kube)
        token = await core.create_namespaced_service_account_token(
            "harbinger-scheduler", namespace, client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)))
        configuration = client.Configuration(host=cluster.server)
        configuration.ssl_ca_cert = str(cluster.ca_cert)
        configuration.api_key = {"BearerToken": token.status.token}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
        async with client.ApiClient(configuration) as as_extender, watching(ClusterState(), as_extender) as watch:
            await watch.wait_synced(timeout=30)
    finally:
        cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=text)
