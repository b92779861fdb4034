"""``manifests/base/webhook`` builds, the real apiserver accepts every object (and the
restricted Pod Security level admits its pods), and its RBAC is enough for the webhook's
watches and the certificate Job, and no more."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client

from harbinger import contract
from harbinger.cli import main
from harbinger_dev.localcluster import LocalCluster
from webhooks.cluster import WatchedCluster

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests" / "base" / "webhook"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}


def built(cluster: LocalCluster) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(cluster.kubectl("kustomize", str(MANIFESTS)).stdout) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


async def test_the_policy_the_issue_asks_for(cluster: LocalCluster) -> None:
    docs = built(cluster)
    assert not any(d["kind"] == "Namespace" for d in docs)  # the base owns harbinger-system
    (hook,) = one(docs, "MutatingWebhookConfiguration", "harbinger-webhook")["webhooks"]
    assert (hook["failurePolicy"], hook["sideEffects"], hook["timeoutSeconds"], hook["reinvocationPolicy"]) == (
        "Ignore", "None", 2, "IfNeeded")
    assert hook["namespaceSelector"]["matchLabels"] == {contract.ENABLED_LABEL: "true"}
    (excluded,) = hook["namespaceSelector"]["matchExpressions"]
    assert excluded["operator"] == "NotIn" and {"kube-system", "harbinger-system"} <= set(excluded["values"])
    assert hook["objectSelector"]["matchExpressions"] == [
        {"key": "app.kubernetes.io/part-of", "operator": "NotIn", "values": ["harbinger"]}]
    assert hook["clientConfig"]["service"] == {"name": "harbinger-webhook", "namespace": "harbinger-system",
                                               "path": "/mutate", "port": 443}

    deployment = one(docs, "Deployment", "harbinger-webhook")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/part-of"] == "harbinger"  # never its own webhook
    container, mirror = pod["spec"]["containers"]
    assert mirror["args"] == ["model-mirror", "--dir=/var/lib/harbinger/models"]  # models from the API, no RWX volume
    assert {"name": "models", "emptyDir": {"sizeLimit": "256Mi"}} in pod["spec"]["volumes"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert one(docs, "PodDisruptionBudget", "harbinger-webhook")["spec"]["minAvailable"] == 1
    service = one(docs, "Service", "harbinger-webhook")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


async def test_the_apiserver_accepts_every_object(cluster: LocalCluster, make_namespace: Any) -> None:
    # As shipped, into harbinger-system (made here when no other test has made it yet).
    made = cluster.kubectl("get", "namespace", "harbinger-system", check=False).returncode != 0
    if made:
        cluster.kubectl("create", "namespace", "harbinger-system")
    try:
        result = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-k", str(MANIFESTS))
        assert "mutatingwebhookconfiguration.admissionregistration.k8s.io/harbinger-webhook created" in result.stdout
    finally:
        if made:
            cluster.kubectl("delete", "namespace", "harbinger-system", "--wait=false")
    # And the pods of its Deployment, Job and CronJob pass the restricted Pod Security level.
    namespace = await make_namespace(labels=RESTRICTED)
    workloads = [d for d in built(cluster) if d["kind"] in ("Deployment", "Job", "CronJob")]
    text = yaml.safe_dump_all(workloads).replace("harbinger-system", namespace)
    result = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=text)
    assert "violate PodSecurity" not in result.stderr, result.stderr
    assert result.stdout.count("created (server dry run)") == 3


def kubeconfig_for(cluster: LocalCluster, token: str, path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "local", "cluster": {"server": cluster.server,
                                                   "certificate-authority": str(cluster.ca_cert)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}],
    }))
    return path


async def token_for(kube: client.ApiClient, namespace: str, account: str) -> str:
    token = await client.CoreV1Api(kube).create_namespaced_service_account_token(
        account, namespace, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)))
    return str(token.status.token)


async def test_rbac_is_enough_and_no_more(
    cluster: LocalCluster, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    # The shipped ServiceAccounts, roles and bindings (and the webhook configuration the
    # certificate Job patches), every name suffixed for this test alone.
    suffix = uuid.uuid4().hex[:6]
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
             "MutatingWebhookConfiguration"}
    docs = [d for d in built(cluster) if d["kind"] in kinds]
    text = yaml.safe_dump_all(docs).replace("harbinger-system", namespace).replace(
        "harbinger-webhook-certs", f"certs-{suffix}").replace("name: harbinger-webhook\n",
                                                              f"name: harbinger-webhook-{suffix}\n")
    text = text.replace("- harbinger-webhook\n", f"- harbinger-webhook-{suffix}\n")  # resourceNames
    cluster.kubectl("apply", "-f", "-", input=text)
    try:
        server = f"system:serviceaccount:{namespace}:harbinger-webhook-{suffix}"
        certs = f"system:serviceaccount:{namespace}:certs-{suffix}"

        def can(who: str, *args: str) -> bool:
            return cluster.kubectl("auth", "can-i", *args, f"--as={who}", check=False).stdout.strip() == "yes"

        for verb, resource in (("list", "namespaces"), ("watch", "namespaces"), ("list", "deployments.apps"),
                               ("watch", "deployments.apps")):
            assert can(server, verb, resource)
        for verb, resource in (("get", "secrets"), ("list", "pods"), ("patch", "deployments.apps"),
                               ("patch", "mutatingwebhookconfigurations")):
            assert not can(server, verb, resource)
        assert can(certs, "patch", f"mutatingwebhookconfigurations/harbinger-webhook-{suffix}")
        assert not can(certs, "patch", "mutatingwebhookconfigurations/other")
        assert can(certs, "update", "secrets/harbinger-webhook-tls", "-n", namespace)
        assert not can(certs, "get", "secrets/other", "-n", namespace)
        assert not can(certs, "list", "secrets", "-n", namespace)

        # The webhook's real watches sync with nothing but its identity...
        as_server = kubeconfig_for(cluster, await token_for(kube, namespace, f"harbinger-webhook-{suffix}"),
                                   tmp_path / "server")
        watched = WatchedCluster(as_server)
        await watched.start()
        try:
            await watched.wait_synced(30)
            assert watched.view.namespace_labels(namespace) is not None
        finally:
            await watched.stop()
        # ...and the certificate Job's command runs with nothing but its own.
        as_certs = kubeconfig_for(cluster, await token_for(kube, namespace, f"certs-{suffix}"), tmp_path / "certs")
        command = ["certs", "--out", str(tmp_path / "out"), "--hosts", "harbinger-webhook.svc",
                   "--kubeconfig", str(as_certs), "--secret", f"{namespace}/harbinger-webhook-tls",
                   "--inject-webhook", f"harbinger-webhook-{suffix}"]
        assert await asyncio.to_thread(main, command) == 0  # the CLI runs its own event loop
        assert await asyncio.to_thread(main, command) == 0  # and the update path
    finally:
        cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=text)
