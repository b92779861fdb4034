"""The apiserver holds the chaos controller to rehearsals (``manifests/base/chaos/
admission-policy.yaml``): with its own token it may set fault annotations on pods and fault
blocks on VirtualServices in opted-in namespaces, and nothing that would change what a pod
runs or where traffic goes; and nobody else may set a pod's fault annotations."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from chaos.backends.istio import GROUP, PLURAL, VERSION
from harbinger import contract
from harbinger_dev.localcluster import LocalCluster

if TYPE_CHECKING:  # the fixture's type; pytest loads the conftest itself
    from tests.conftest import AsAccount

REPO = Path(__file__).resolve().parents[2]
POLICY = "harbinger-chaos-changes-faults-only"
KEYS_POLICY = "harbinger-chaos-fault-keys"
SPEC: dict[str, Any] = {"hosts": ["payments"], "http": [
    {"name": "primary", "route": [{"destination": {"host": "payments", "subset": "v1"}}]}]}


def shipped(cluster: LocalCluster, system: str, suffix: str) -> str:
    """The chaos controller's account, RBAC and admission policy, named for this test alone."""
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
             "ValidatingAdmissionPolicyBinding"}
    built = yaml.safe_load_all(cluster.kubectl("kustomize", str(REPO / "manifests" / "base" / "chaos")).stdout)
    docs = [d for d in built if d and d["kind"] in kinds and d["metadata"]["name"] != "harbinger-chaos-sweeper"]
    assert {d["kind"] for d in docs} == kinds and len(docs) == 7
    text = yaml.safe_dump_all(docs).replace("harbinger-system", system).replace(POLICY, f"{POLICY}-{suffix}").replace(
        KEYS_POLICY, f"{KEYS_POLICY}-{suffix}")
    text = text.replace("name: harbinger-chaos\n", f"name: harbinger-chaos-{suffix}\n").replace(
        f":{system}:harbinger-chaos'", f":{system}:harbinger-chaos-{suffix}'")
    assert f"system:serviceaccount:{system}:harbinger-chaos-{suffix}'" in text
    return text


async def refused(call: Awaitable[Any], message: str) -> None:
    with pytest.raises(ApiException) as caught:
        await call
    assert message in str(caught.value.body), caught.value.body


def pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "payments"}},
            "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}],
                     "nodeSelector": {"harbinger-test": "nowhere"}}}


def virtual_service(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "VirtualService",
            "metadata": {"name": name, "labels": labels or {}}, "spec": SPEC}


async def test_the_chaos_controller_may_set_faults_and_nothing_else(
    cluster: LocalCluster, kube: client.ApiClient, make_namespace: Any, as_account: AsAccount,
) -> None:
    cluster.kubectl("apply", "-k", str(REPO / "manifests" / "crds"))
    cluster.kubectl("apply", "-k", str(REPO / "manifests" / "base" / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/virtualservices.networking.istio.io",
                    "crd/chaosexperiments.harbinger.io")
    system = await make_namespace()
    rehearsed = await make_namespace(opted_in=True, labels={contract.CHAOS: contract.CHAOS_ENABLED})
    elsewhere = await make_namespace()
    suffix = uuid.uuid4().hex[:6]
    text = shipped(cluster, system, suffix)
    cluster.kubectl("apply", "-f", "-", input=text)
    core_admin, custom_admin = client.CoreV1Api(kube), client.CustomObjectsApi(kube)
    for namespace in (rehearsed, elsewhere):
        await core_admin.create_namespaced_pod(namespace, pod("payments-0"))
    await custom_admin.create_namespaced_custom_object(GROUP, VERSION, rehearsed, PLURAL, virtual_service("payments"))
    try:
        async with as_account(system, f"harbinger-chaos-{suffix}") as as_chaos:
            core: Any = client.CoreV1Api(as_chaos)
            custom: Any = client.CustomObjectsApi(as_chaos)
            fault = {"metadata": {"annotations": {contract.CHAOS_FAULT: json.dumps({"kind": "delay", "delay_ms": 50})},
                                  "labels": {contract.CHAOS_OWNED_LABEL: "true"}}}
            # The apiserver loads a new policy within a moment: wait until it refuses a team label.
            for attempt in range(100):
                try:
                    await core.patch_namespaced_pod("payments-0", rehearsed,
                                                    {"metadata": {"labels": {"app": f"moved-{attempt}"}}})
                except ApiException as exc:
                    assert "only harbinger.io/ labels and annotations" in str(exc.body), exc.body
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the chaos controller's admission policy never took effect")
            await core.patch_namespaced_pod("payments-0", rehearsed, fault)
            await refused(core.patch_namespaced_pod("payments-0", rehearsed, {"spec": {"containers": [
                {"name": "app", "image": "evil.invalid/x:1"}]}}), "never changes a pod's spec")
            await refused(core.patch_namespaced_pod("payments-0", elsewhere, fault), "only in namespaces labelled")

            # VirtualServices: the fault block may change, where traffic goes may not.
            with_fault = [{"op": "add", "path": "/spec/http/0/fault",
                           "value": {"delay": {"fixedDelay": "1s", "percentage": {"value": 5}}}},
                          {"op": "add", "path": "/metadata/labels", "value": {contract.CHAOS_OWNED_LABEL: "true"}}]
            await custom.patch_namespaced_custom_object(GROUP, VERSION, rehearsed, PLURAL, "payments", with_fault)
            await refused(custom.patch_namespaced_custom_object(GROUP, VERSION, rehearsed, PLURAL, "payments", [
                {"op": "replace", "path": "/spec/http/0/route/0/destination/host", "value": "evil"}]),
                "never where its traffic goes")
            unowned = custom.create_namespaced_custom_object(GROUP, VERSION, rehearsed, PLURAL,
                                                             virtual_service("other"))
            await refused(unowned, "carries harbinger.io/chaos-owned")
            owned = virtual_service("ours", {contract.CHAOS_OWNED_LABEL: "true"})
            await custom.create_namespaced_custom_object(GROUP, VERSION, rehearsed, PLURAL, owned)
            await custom.delete_namespaced_custom_object(GROUP, VERSION, rehearsed, PLURAL, "ours")
            await custom_admin.create_namespaced_custom_object(GROUP, VERSION, rehearsed, PLURAL,
                                                               virtual_service("teams"))
            await refused(custom.delete_namespaced_custom_object(GROUP, VERSION, rehearsed, PLURAL, "teams"),
                          "deletes only VirtualServices it created")

            # ConfigMaps: a report, labelled and owned by a ChaosExperiment, and nothing else.
            owner = {"apiVersion": "harbinger.io/v1alpha1", "kind": "ChaosExperiment", "name": "e",
                     "uid": str(uuid.uuid4())}
            report = {"metadata": {"name": "e-report", "labels": {contract.CHAOS_REPORT_LABEL: "true"},
                                   "ownerReferences": [owner]}, "data": {"report.json": "{}"}}
            await core.create_namespaced_config_map(rehearsed, report)
            await refused(core.create_namespaced_config_map(rehearsed, {"metadata": {"name": "settings"},
                                                                        "data": {"x": "y"}}),
                          "creates only report ConfigMaps")
            unowned_report = {"metadata": {"name": "f-report", "labels": {contract.CHAOS_REPORT_LABEL: "true"}}}
            await refused(core.create_namespaced_config_map(rehearsed, unowned_report),
                          "creates only report ConfigMaps")
            await refused(core.create_namespaced_config_map(elsewhere, report), "only in namespaces labelled")

            # ChaosExperiments: its own records of planned runs may go; a team's declared one may not.
            steps = [{"abortStatus": 503}]
            for name, spec in (("record", {"runId": "r-1", "experiment": "e", "target": "payments", "kind": "error"}),
                               ("declared", {"target": "payments", "kind": "error", "steps": steps,
                                             "schedule": {"type": "Window", "start": "2099-01-01T00:00:00Z",
                                                          "end": "2099-01-02T00:00:00Z"}})):
                await custom_admin.create_namespaced_custom_object(
                    "harbinger.io", "v1alpha1", rehearsed, "chaosexperiments",
                    {"apiVersion": "harbinger.io/v1alpha1", "kind": "ChaosExperiment",
                     "metadata": {"name": name}, "spec": spec})
            await custom.delete_namespaced_custom_object("harbinger.io", "v1alpha1", rehearsed, "chaosexperiments",
                                                         "record")
            await refused(custom.delete_namespaced_custom_object("harbinger.io", "v1alpha1", rehearsed,
                                                                 "chaosexperiments", "declared"),
                          "never a ChaosExperiment a team declared")
            await custom_admin.delete_namespaced_custom_object("harbinger.io", "v1alpha1", rehearsed,
                                                               "chaosexperiments", "declared")

        # Nobody else may hand a pod a fault: not at creation (a template carrying one) ... The
        # fault-keys policy is a second policy, loaded on its own: wait until it refuses.
        for attempt in range(100):
            faulty = pod(f"payments-1-{attempt}")
            faulty["metadata"]["annotations"] = {contract.CHAOS_FAULT: json.dumps({"kind": "delay", "delay_ms": 9})}
            try:
                await core_admin.create_namespaced_pod(rehearsed, faulty)
            except ApiException as exc:
                assert "only the chaos controller sets" in str(exc.body), exc.body
                break
            await core_admin.delete_namespaced_pod(f"payments-1-{attempt}", rehearsed)
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the fault-keys admission policy never took effect")
        # ... nor by editing one (the fault the chaos controller set stays its own).
        await refused(core_admin.patch_namespaced_pod("payments-0", rehearsed, {"metadata": {"annotations": {
            contract.CHAOS_FAULT: json.dumps({"kind": "cpu", "cpu_cores": 8})}}}), "only the chaos controller sets")
        await refused(core_admin.patch_namespaced_pod("payments-0", rehearsed, {"metadata": {"annotations": {
            contract.CHAOS_FAULT: None}}}), "only the chaos controller sets")
        await core_admin.patch_namespaced_pod("payments-0", rehearsed, {"metadata": {"annotations": {
            "team.example/note": "other annotations are the team's"}}})
    finally:
        cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=text)
