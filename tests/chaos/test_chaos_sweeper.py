"""The independent sweeper (manifests/base/chaos/sweeper-cronjob.yaml): with the controller down and
no plan anywhere, it takes expired Istio faults off, leaves running ones, gets past objects it
cannot restore, and does so with nothing but its own ServiceAccount's rights, as the real
apiserver's RBAC enforces them."""

from __future__ import annotations

import asyncio
import copy
import json
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from chaos.backends.istio import GROUP, PLURAL, VERSION, IstioBackend
from chaos.experiment import BackendKind, Experiment, FaultKind
from chaos.faults import Fault
from harbinger import contract
from harbinger_dev.localcluster import LocalCluster
from tests.chaos.test_chaos_istio import ORIGINAL_SPEC, _create, _get, custom_api

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "manifests" / "base" / "chaos" / "sweeper-cronjob.yaml"
CHAOS_ON = {contract.CHAOS: contract.CHAOS_ENABLED}


def _documents() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}


def test_the_sweeper_runs_the_expired_only_sweep_every_minute() -> None:
    cronjob = _documents()["CronJob"]
    assert cronjob["spec"]["schedule"] == "* * * * *" and cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["harbinger"] and container["args"][:2] == ["chaos", "sweep"]
    assert "--all" not in container["args"]  # a running rehearsal's faults are not the sweeper's
    assert pod["serviceAccountName"] == _documents()["ServiceAccount"]["metadata"]["name"]
    verbs = {rule["resources"][0]: set(rule["verbs"]) for rule in _documents()["ClusterRole"]["rules"]}
    assert "create" not in verbs["virtualservices"] and "create" not in verbs["pods"]


@pytest.fixture
async def sweeper_kubeconfig(cluster: LocalCluster, kube: client.ApiClient, make_namespace: Any,
                             tmp_path: Path) -> AsyncIterator[Path]:
    """The manifest's ServiceAccount and RBAC applied (in a throwaway namespace, with unique
    cluster-scoped names), and a kubeconfig that authenticates as that ServiceAccount."""
    namespace = await make_namespace()
    suffix = uuid.uuid4().hex[:6]
    docs = _documents()
    account = copy.deepcopy(docs["ServiceAccount"])
    account["metadata"]["namespace"] = namespace
    role = copy.deepcopy(docs["ClusterRole"])
    role["metadata"]["name"] += f"-{suffix}"
    binding = copy.deepcopy(docs["ClusterRoleBinding"])
    binding["metadata"]["name"] += f"-{suffix}"
    binding["roleRef"]["name"] = role["metadata"]["name"]
    binding["subjects"][0]["namespace"] = namespace
    core: Any = client.CoreV1Api(kube)
    rbac: Any = client.RbacAuthorizationV1Api(kube)
    await core.create_namespaced_service_account(namespace, account)
    await rbac.create_cluster_role(role)
    await rbac.create_cluster_role_binding(binding)
    # The CronJob itself is accepted by the apiserver as written (server-side dry run).
    cronjob = copy.deepcopy(docs["CronJob"])
    cronjob["metadata"]["namespace"] = namespace
    await client.BatchV1Api(kube).create_namespaced_cron_job(namespace, cronjob, dry_run="All")
    try:
        token = await core.create_namespaced_service_account_token(
            account["metadata"]["name"], namespace, {"spec": {"expirationSeconds": 3600}})
        config = yaml.safe_load(cluster.kubeconfig.read_text())
        config["users"] = [{"name": "sweeper", "user": {"token": token.status.token}}]
        config["contexts"][0]["context"]["user"] = "sweeper"
        path = tmp_path / "sweeper.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        yield path
    finally:
        await rbac.delete_cluster_role_binding(binding["metadata"]["name"])
        await rbac.delete_cluster_role(role["metadata"]["name"])


def _experiment(namespace: str) -> Experiment:
    return Experiment(name="error-payments", kind=FaultKind.ERROR, target="payments", namespace=namespace,
                      backend=BackendKind.ISTIO, steps=[Fault(abort_status=503)])


async def test_the_sweeper_removes_expired_istio_faults_with_the_controller_down(
    custom: client.CustomObjectsApi, make_namespace: Any, sweeper_kubeconfig: Path,
) -> None:
    api = custom_api(custom)
    expired_ns = await make_namespace(opted_in=True, labels=CHAOS_ON)
    running_ns = await make_namespace(opted_in=True, labels=CHAOS_ON)
    for namespace in (expired_ns, running_ns):
        await _create(custom, namespace, "payments", copy.deepcopy(ORIGINAL_SPEC))
    # A controller that died mid-rehearsal: its fault expired a minute ago and nothing took it off.
    await IstioBackend(_experiment(expired_ns), api).apply(Fault(abort_status=503),
                                                           datetime.now(UTC) - timedelta(minutes=1))
    await IstioBackend(_experiment(running_ns), api).apply(Fault(abort_status=503),
                                                           datetime.now(UTC) + timedelta(minutes=5))
    # Someone's garbage next to it must not stop the sweep.
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "VirtualService",
            "metadata": {"name": "garbage", "namespace": expired_ns,
                         "labels": {contract.CHAOS_OWNED_LABEL: "patched"},
                         "annotations": {"harbinger.io/chaos-original": "[]",
                                         contract.CHAOS_EXPIRES: "2000-01-01T00:00:00Z"}},
            "spec": copy.deepcopy(ORIGINAL_SPEC)}
    await custom.create_namespaced_custom_object(GROUP, VERSION, expired_ns, PLURAL, body)

    args = _documents()["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "harbinger.cli", *args, f"--kubeconfig={sweeper_kubeconfig}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["swept"] >= 1 and result["all"] is False  # other tests' leftovers may be swept too
    assert (await _get(custom, expired_ns, "payments"))["spec"] == ORIGINAL_SPEC
    assert "fault" in (await _get(custom, running_ns, "payments"))["spec"]["http"][0]  # not expired: kept
    assert (await _get(custom, expired_ns, "garbage"))["metadata"]["annotations"] == body["metadata"]["annotations"]
    # The Warning Event on the garbage was written with the sweeper's own rights.
    events = await client.CoreV1Api(custom_api(custom)).list_namespaced_event(
        expired_ns, field_selector="involvedObject.name=garbage")
    assert [e.reason for e in events.items] == ["ChaosSweepSkipped"]
