"""The real kube-apiserver calling the webhook over TLS on 127.0.0.1.

The webhook runs in-process (certificates from ``certs/``, namespace and Deployment
caches fed by real watches), registered with a MutatingWebhookConfiguration of its own
whose namespaceSelector also requires this module's label, so that other modules'
pods never meet it; the configuration is deleted at the end of the module.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography import x509
from kubernetes_asyncio import client

from certs.cluster import inject_ca_bundle
from certs.serving_set import issue_serving_set
from harbinger import contract, sidecar
from harbinger.httpserver import serve
from harbinger.kube import new_api_client
from harbinger.quantity import parse_quantity
from harbinger_dev.localcluster import LocalCluster
from harbinger_dev.localcluster.cluster import free_port
from models.forecast import Forecast
from webhooks.cluster import WatchedCluster
from webhooks.forecasts import StaticForecasts
from webhooks.mutate import Mutator
from webhooks.server import build_app

MakeNamespace = Callable[..., Awaitable[str]]
SERVICE = "shop-web"
IMAGE = "harbinger:test"


class RunningWebhook:
    """One in-process webhook server plus its MutatingWebhookConfiguration."""

    def __init__(self, cluster: LocalCluster, cert_dir: Path, forecasts: StaticForecasts) -> None:
        self.cluster = cluster
        self.cert_dir = cert_dir
        self.forecasts = forecasts
        self.port = free_port()
        self.test_label = f"harbinger-webhook-test-{uuid.uuid4().hex[:6]}"
        self.config_name = f"harbinger-test-{uuid.uuid4().hex[:8]}"
        self.watched = WatchedCluster(cluster.kubeconfig)
        self.stop_event = asyncio.Event()
        self.server: asyncio.Task[None] | None = None
        self.api: client.ApiClient | None = None

    async def start(self) -> None:
        mutator = Mutator(self.watched.view, self.forecasts, sidecar_image=IMAGE)
        app = build_app(mutator, ready=self.watched.synced, lifecycles=(self.watched, self.forecasts))
        self.server = asyncio.create_task(serve(
            app, host="127.0.0.1", port=self.port, cert_dir=self.cert_dir, cert_reload_seconds=0.2,
            shutdown_grace_seconds=2, stop=self.stop_event))
        self.api = await new_api_client(self.cluster.kubeconfig)
        await self.watched_synced()
        await client.AdmissionregistrationV1Api(self.api).create_mutating_webhook_configuration(
            self.configuration((self.cert_dir / "ca.crt").read_bytes()))

    async def watched_synced(self) -> None:
        for _ in range(200):
            if self.watched.synced():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the webhook's namespace and Deployment caches never synced")

    def configuration(self, ca_pem: bytes) -> dict[str, Any]:
        # The production shape (manifests/base/webhook), pointed at 127.0.0.1 by URL.
        return {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": self.config_name},
            "webhooks": [{
                "name": "pods.harbinger.io",
                "clientConfig": {"url": f"https://127.0.0.1:{self.port}/mutate",
                                 "caBundle": base64.b64encode(ca_pem).decode()},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                           "resources": ["pods"], "scope": "Namespaced"}],
                "namespaceSelector": {"matchLabels": {contract.ENABLED_LABEL: "true", self.test_label: "yes"},
                                      "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                                            "values": ["kube-system", "harbinger-system"]}]},
                "failurePolicy": "Ignore", "sideEffects": "None", "timeoutSeconds": 2,
                "reinvocationPolicy": "IfNeeded", "admissionReviewVersions": ["v1"], "matchPolicy": "Equivalent",
            }],
        }

    async def stop_server(self) -> None:
        self.stop_event.set()
        if self.server:
            await asyncio.wait_for(self.server, 10)

    async def close(self) -> None:
        try:
            if self.api:
                await client.AdmissionregistrationV1Api(self.api).delete_mutating_webhook_configuration(
                    self.config_name)
        finally:
            await self.stop_server()
            if self.api:
                await self.api.close()


def forecast_now() -> Forecast:
    p90 = np.array([120.0, 300.0, 200.0])
    return Forecast(service=SERVICE, model_version="v-test", start=datetime.now(UTC) - timedelta(minutes=1),
                    step_seconds=900, p50=p90 * 0.8, p90=p90)


@pytest.fixture(scope="module")
async def webhook(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningWebhook]:
    cert_dir = tmp_path_factory.mktemp("webhook-certs")
    issue_serving_set(["127.0.0.1", "localhost"]).write(cert_dir)
    running = RunningWebhook(cluster, cert_dir, StaticForecasts([forecast_now()]))
    await running.start()
    try:
        yield running
    finally:
        await running.close()


def bare_pod(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {contract.APP_NAME_LABEL: SERVICE}, "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "registry.local/shop:1",
                                     "ports": [{"containerPort": 8081}]}]}}


async def stamped_dry_run(kube: client.ApiClient, namespace: str, pod: dict[str, Any], tries: int = 300) -> None:
    """Until the apiserver's webhook configuration (and certificate trust) has caught up:
    dry-run creates go through admission without persisting anything."""
    core = client.CoreV1Api(kube)
    for _ in range(tries):
        answer = await core.create_namespaced_pod(namespace, pod, dry_run="All")
        if contract.PREDICTED_TPS in (answer.metadata.annotations or {}):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the apiserver never sent the dry-run pod through the webhook")


async def opted_in(make_namespace: MakeNamespace, webhook: RunningWebhook, **labels: str) -> str:
    return await make_namespace(opted_in=True, labels={webhook.test_label: "yes", **labels})


async def test_a_pod_in_an_opted_in_namespace_comes_back_stamped(
    webhook: RunningWebhook, kube: client.ApiClient, make_namespace: MakeNamespace
) -> None:
    namespace = await opted_in(make_namespace, webhook)
    pod = bare_pod("web-1", {contract.RESOURCES: contract.RESOURCES_FORECAST})
    await stamped_dry_run(kube, namespace, pod)
    created = await client.CoreV1Api(kube).create_namespaced_pod(namespace, pod)
    annotations = created.metadata.annotations
    assert annotations[contract.PREDICTED_TPS] == "300.00"  # the peak still ahead, one replica
    assert annotations[contract.MODEL_VERSION] == "v-test"
    assert parse_quantity(annotations[contract.EGRESS_BANDWIDTH]) == 300 * 20_000 * 8  # default profile
    requests = created.spec.containers[0].resources.requests
    assert parse_quantity(requests["cpu"]) == parse_quantity("1550m")  # 0.05 + 0.005 x 300
    assert parse_quantity(requests["memory"]) >= 64 * 2**20 + 300 * 1_000_000
    assert [c.name for c in created.spec.containers] == ["app"]


async def test_a_tenants_bad_annotations_are_warnings_through_the_apiserver_never_errors(
    webhook: RunningWebhook, cluster: LocalCluster, kube: client.ApiClient, make_namespace: MakeNamespace
) -> None:
    # The two findings that answered 500: a superscript two that str.isdigit() takes for a
    # digit, and a profile nested past the JSON parser's recursion limit.
    namespace = await opted_in(make_namespace, webhook, **{contract.CHAOS: contract.CHAOS_ENABLED})
    await stamped_dry_run(kube, namespace, bare_pod("probe"))
    pod = bare_pod("odd", {contract.CHAOS_UPSTREAM_PORT: "\u00b2", contract.CAPACITY_PROFILE: "[" * 1500 + "]" * 1500})
    created = await asyncio.to_thread(cluster.kubectl, "create", "-n", namespace, "-f", "-", "-o", "json",
                                      input=json.dumps(pod))
    assert f"annotation {contract.CHAOS_UPSTREAM_PORT}='\u00b2' is not a port number" in created.stderr
    assert "nested too deeply" in created.stderr
    body = json.loads(created.stdout)
    # Admitted and still stamped where it could be: the sidecar proxies the declared port.
    assert body["metadata"]["annotations"][contract.CHAOS_UPSTREAM_PORT] == "8081"
    assert [c["name"] for c in body["spec"]["containers"]] == ["app", contract.CHAOS_SIDECAR_NAME]


async def test_deployment_pods_get_plan_warmup_and_chaos_stamps(
    webhook: RunningWebhook, kube: client.ApiClient, make_namespace: MakeNamespace
) -> None:
    namespace = await opted_in(make_namespace, webhook)
    await stamped_dry_run(kube, namespace, bare_pod("probe"))
    now = datetime.now(UTC)
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "annotations": {
            contract.RESOURCES: contract.RESOURCES_FORECAST,
            contract.PLAN: json.dumps({"replicas": 3}),
            contract.CHAOS: contract.CHAOS_ENABLED,
            contract.CAPACITY_PROFILE: json.dumps({"cpu_per_rps": 0.002, "bytes_per_request": 1000}),
            contract.WARMUP_FROM: (now - timedelta(minutes=5)).isoformat(),
            contract.WARMUP_UNTIL: (now + timedelta(minutes=30)).isoformat(),
        }},
        "spec": {"replicas": 0, "selector": {"matchLabels": {contract.APP_NAME_LABEL: SERVICE}},
                 "template": {"metadata": {"labels": {contract.APP_NAME_LABEL: SERVICE}},
                              "spec": {"containers": [{"name": "app", "image": "registry.local/shop:1",
                                                       "ports": [{"containerPort": 8081}]}]}}},
    }
    apps = client.AppsV1Api(kube)
    await apps.create_namespaced_deployment(namespace, deployment)
    for _ in range(100):  # the webhook reads Deployments from its watch cache, never from the API
        if webhook.watched.view.deployment(namespace, "web"):
            break
        await asyncio.sleep(0.05)
    await apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 2}})

    core = client.CoreV1Api(kube)
    pods: list[Any] = []
    for _ in range(200):  # the real ReplicaSet controller makes them
        pods = (await core.list_namespaced_pod(namespace)).items
        if len(pods) == 2:
            break
        await asyncio.sleep(0.1)
    assert len(pods) == 2
    for pod in pods:
        annotations = pod.metadata.annotations
        assert annotations[contract.PREDICTED_TPS] == "100.00"  # 300 / the planned 3 replicas
        assert annotations[contract.WARMUP] == "true"
        assert annotations[contract.CHAOS_SIDECAR_IMAGE] == IMAGE
        assert annotations[contract.CHAOS_UPSTREAM_PORT] == "8081"
        assert parse_quantity(annotations[contract.INGRESS_BANDWIDTH]) == 100 * 1000 * 8
        assert [c.name for c in pod.spec.containers] == ["app", contract.CHAOS_SIDECAR_NAME]
        assert parse_quantity(pod.spec.containers[0].resources.requests["cpu"]) == parse_quantity("250m")
        assert sidecar.PODINFO_VOLUME in [v.name for v in pod.spec.volumes]


async def test_a_pod_elsewhere_is_untouched(
    webhook: RunningWebhook, kube: client.ApiClient, make_namespace: MakeNamespace
) -> None:
    probe_namespace = await opted_in(make_namespace, webhook)
    await stamped_dry_run(kube, probe_namespace, bare_pod("probe"))  # the webhook is live
    namespace = await make_namespace(opted_in=False, labels={webhook.test_label: "yes"})
    created = await client.CoreV1Api(kube).create_namespaced_pod(namespace, bare_pod("web-1"))
    assert not created.metadata.annotations
    assert created.spec.containers[0].resources.requests is None


def served_certificate(port: int, ca_file: Path) -> x509.Certificate:
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der
    return x509.load_der_x509_certificate(der)


async def test_after_a_certificate_rotation_pods_are_still_stamped(
    webhook: RunningWebhook, kube: client.ApiClient, make_namespace: MakeNamespace, tmp_path: Path
) -> None:
    namespace = await opted_in(make_namespace, webhook)
    await stamped_dry_run(kube, namespace, bare_pod("probe"))
    rotated = issue_serving_set(["127.0.0.1", "localhost"])
    # The order 'harbinger certs' uses: trust the new CA next to the old one, then swap the files.
    bundle = await inject_ca_bundle(kube, webhook.config_name, rotated.ca_pem)
    assert len(x509.load_pem_x509_certificates(bundle)) == 2
    rotated.write(webhook.cert_dir)
    (tmp_path / "new-ca.crt").write_bytes(rotated.ca_pem)
    new_serial = x509.load_pem_x509_certificate(rotated.cert_pem).serial_number
    served_serial = None
    for _ in range(100):
        await asyncio.sleep(0.1)
        with contextlib.suppress(ssl.SSLError):  # still the old certificate, signed by the old CA
            served = await asyncio.to_thread(served_certificate, webhook.port, tmp_path / "new-ca.crt")
            served_serial = served.serial_number
        if served_serial == new_serial:
            break
    assert served_serial == new_serial, "the server never picked up the rotated certificate"
    await stamped_dry_run(kube, namespace, bare_pod("probe-2"))
    created = await client.CoreV1Api(kube).create_namespaced_pod(namespace, bare_pod("web-rotated"))
    assert created.metadata.annotations[contract.PREDICTED_TPS] == "300.00"


async def test_with_the_webhook_stopped_pods_are_still_admitted(
    cluster: LocalCluster, kube: client.ApiClient, make_namespace: MakeNamespace, tmp_path: Path
) -> None:
    issue_serving_set(["127.0.0.1"]).write(tmp_path)
    second = RunningWebhook(cluster, tmp_path, StaticForecasts([forecast_now()]))
    await second.start()
    try:
        namespace = await opted_in(make_namespace, second)
        await stamped_dry_run(kube, namespace, bare_pod("probe"))  # it was stamping...
        await second.stop_server()  # ...and now nothing listens at its URL
        created = await client.CoreV1Api(kube).create_namespaced_pod(namespace, bare_pod("web-1"))
        assert created.metadata.name == "web-1"  # failurePolicy: Ignore
        assert not created.metadata.annotations
    finally:
        await second.close()
