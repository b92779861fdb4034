"""Sweeps and restores against adversarial objects on the real apiserver: a malformed stash
on one object is skipped and reported while every other object is still swept; only
opted-in namespaces are touched; a restore takes off only what chaos injected, so a
team's own edits made mid-experiment survive it."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes_asyncio import client
from prometheus_client import REGISTRY

from chaos.backends.base import ORIGINAL_ANNOTATION, OWNED_CREATED, OWNED_PATCHED
from chaos.backends.istio import GROUP, PLURAL, VERSION, IstioBackend, sweep_virtual_services
from chaos.backends.pods import sweep_pods
from chaos.backends.sweeping import SKIPPED_REASON
from chaos.experiment import BackendKind, Experiment, FaultKind
from chaos.faults import ActiveFault, Fault
from harbinger import contract
from tests.chaos.test_chaos_istio import ORIGINAL_SPEC, _create, _get, custom_api

CHAOS_ON = {contract.CHAOS: contract.CHAOS_ENABLED}
PAST = datetime.now(UTC) - timedelta(hours=1)
MALFORMED = ("[]", "{")


def _left_fault(stash: str | None) -> dict[str, str]:
    """The annotations a dead controller (or someone imitating one) left on an object."""
    annotations = ActiveFault(Fault(abort_status=503), PAST, "left").annotations()
    if stash is not None:
        annotations[ORIGINAL_ANNOTATION] = stash
    return annotations


async def _pod(core: client.CoreV1Api, namespace: str, name: str, annotations: dict[str, str]) -> None:
    body: dict[str, Any] = {
        "metadata": {"name": name, "labels": {contract.APP_NAME_LABEL: "payments",
                                              contract.CHAOS_OWNED_LABEL: OWNED_PATCHED},
                     "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
    }
    await core.create_namespaced_pod(namespace, body)  # type: ignore[arg-type]  # plain dicts work too


async def _pod_annotations(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, str]:
    return dict((await core.read_namespaced_pod(name, namespace)).metadata.annotations or {})


async def _vs(custom: client.CustomObjectsApi, namespace: str, name: str, annotations: dict[str, str],
              spec: dict[str, Any] | None = None, owned: str = OWNED_PATCHED) -> None:
    faulted = copy.deepcopy(spec or ORIGINAL_SPEC)
    for route in faulted["http"]:
        route["fault"] = {"abort": {"httpStatus": 503, "percentage": {"value": 100.0}}}
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": namespace, "labels": {contract.CHAOS_OWNED_LABEL: owned},
                         "annotations": annotations}, "spec": faulted}
    await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


async def _events(core: client.CoreV1Api, namespace: str, name: str) -> list[str]:
    listed = await core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return [e.reason for e in listed.items]


def _skipped(kind: str) -> float:
    return REGISTRY.get_sample_value("harbinger_chaos_sweep_skipped_total",
                                     {"kind": kind, "reason": "bad-stash"}) or 0.0


async def test_a_malformed_stash_is_skipped_and_reported_and_everything_else_is_swept(
    kube: client.ApiClient, make_namespace: Any, virtual_service_crd: None,
) -> None:
    core, custom = client.CoreV1Api(kube), client.CustomObjectsApi(kube)
    namespace = await make_namespace(opted_in=True, labels=CHAOS_ON)
    outside = await make_namespace(labels=CHAOS_ON)  # chaos-labelled objects, but never opted into Harbinger
    for i, stash in enumerate(MALFORMED):
        await _pod(core, namespace, f"bad-{i}", _left_fault(stash))
        await _vs(custom, namespace, f"bad-{i}", _left_fault(stash))
    good_stash = json.dumps({key: None for key in (contract.CHAOS_FAULT, contract.CHAOS_EXPIRES,
                                                   contract.CHAOS_EXPERIMENT)})
    await _pod(core, namespace, "good", _left_fault(good_stash))
    await _vs(custom, namespace, "good", _left_fault(None), owned=OWNED_CREATED)
    await _pod(core, outside, "theirs", _left_fault(good_stash))
    await _vs(custom, outside, "theirs", _left_fault(None), owned=OWNED_CREATED)
    skipped_before = {kind: _skipped(kind) for kind in ("Pod", "VirtualService")}

    # The controller's start-up sweep (everything) and the periodic one (expired) both get through.
    for everything in (True, False):
        await sweep_pods(kube, everything=everything)
        await sweep_virtual_services(kube, everything=everything)

    assert await _pod_annotations(core, namespace, "good") == {}  # restored
    assert (await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                       field_selector="metadata.name=good"))["items"] == []
    for i, stash in enumerate(MALFORMED):
        assert await _pod_annotations(core, namespace, f"bad-{i}") == _left_fault(stash)  # left as found
        vs = await _get(custom, namespace, f"bad-{i}")
        assert vs["metadata"]["annotations"] == _left_fault(stash)
        assert SKIPPED_REASON in await _events(core, namespace, f"bad-{i}")
    assert _skipped("Pod") - skipped_before["Pod"] >= 2 * len(MALFORMED)  # each sweep reports each one
    assert _skipped("VirtualService") - skipped_before["VirtualService"] >= 2 * len(MALFORMED)
    # Outside the opted-in namespaces nothing is touched, whatever its labels say.
    assert await _pod_annotations(core, outside, "theirs") == _left_fault(good_stash)
    assert (await _get(custom, outside, "theirs"))["spec"]["http"][0]["fault"]


def _experiment(namespace: str, caller: str | None = None) -> Experiment:
    return Experiment(name="error-payments", kind=FaultKind.ERROR, target="payments", namespace=namespace,
                      backend=BackendKind.ISTIO, steps=[Fault(abort_status=503, abort_percent=p) for p in (5, 50)],
                      caller=caller)


def _team_edit(spec: dict[str, Any]) -> dict[str, Any]:
    """What a team changes while the experiment runs: a timeout, retries, a new route."""
    edited = copy.deepcopy(spec)
    routes = {r["name"]: r for r in edited["http"]}
    routes["canary"]["timeout"] = "7s"
    routes["primary"]["retries"] = {"attempts": 5, "perTryTimeout": "2s"}
    edited["http"].append({"name": "team-new", "match": [{"uri": {"prefix": "/v3"}}],
                           "route": [{"destination": {"host": "payments", "subset": "v3"}}]})
    return edited


async def _edit(custom: client.CustomObjectsApi, namespace: str, name: str, spec: dict[str, Any]) -> None:
    await custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, [
        {"op": "replace", "path": "/spec", "value": spec}])


def _without_faults(spec: dict[str, Any]) -> dict[str, Any]:
    plain = copy.deepcopy(spec)
    for route in plain["http"]:
        route.pop("fault", None)
    return plain


async def test_a_restore_keeps_a_teams_mid_experiment_edits_and_its_own_faults(
    custom: client.CustomObjectsApi, make_namespace: Any,
) -> None:
    namespace = await make_namespace(opted_in=True, labels=CHAOS_ON)
    original = copy.deepcopy(ORIGINAL_SPEC)
    team_fault = {"delay": {"fixedDelay": "0.1s", "percentage": {"value": 1.0}}}
    original["http"][1]["fault"] = team_fault  # the team already injects a small delay on primary
    await _create(custom, namespace, "payments", copy.deepcopy(original))
    experiment = _experiment(namespace)
    backend = IstioBackend(experiment, custom_api(custom))
    expires = datetime.now(UTC) + timedelta(seconds=60)

    await backend.apply(experiment.steps[0], expires)
    vs = await _get(custom, namespace, "payments")
    edited = _team_edit(vs["spec"])
    await _edit(custom, namespace, "payments", edited)
    await backend.apply(experiment.steps[1], expires)  # the next step changes the faults only
    vs = await _get(custom, namespace, "payments")
    assert vs["spec"]["http"][0]["timeout"] == "7s" and vs["spec"]["http"][2]["name"] == "team-new"
    assert [r.get("fault", {}).get("abort", {}).get("percentage") for r in vs["spec"]["http"]] == [
        {"value": 50.0}, {"value": 50.0}, None]

    assert await backend.remove_all() == 1
    after = await _get(custom, namespace, "payments")
    expected = _without_faults(edited)
    expected["http"][1]["fault"] = team_fault  # the team's own fault is back
    assert after["spec"] == expected
    assert "annotations" not in after["metadata"] and "labels" not in after["metadata"]


async def test_a_fault_a_team_rewrites_mid_experiment_is_theirs_and_kept(
    custom: client.CustomObjectsApi, make_namespace: Any,
) -> None:
    namespace = await make_namespace(opted_in=True, labels=CHAOS_ON)
    await _create(custom, namespace, "payments", copy.deepcopy(ORIGINAL_SPEC))
    experiment = _experiment(namespace)
    backend = IstioBackend(experiment, custom_api(custom))
    await backend.apply(experiment.steps[0], datetime.now(UTC) + timedelta(seconds=60))
    theirs = {"abort": {"httpStatus": 418, "percentage": {"value": 2.0}}}
    await custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "payments", [
        {"op": "replace", "path": "/spec/http/0/fault", "value": theirs}])
    await backend.remove_all()
    after = await _get(custom, namespace, "payments")
    assert after["spec"]["http"][0]["fault"] == theirs
    assert after["spec"]["http"][1] == ORIGINAL_SPEC["http"][1]


async def test_a_caller_scoped_restore_removes_only_its_copies(
    custom: client.CustomObjectsApi, make_namespace: Any,
) -> None:
    namespace = await make_namespace(opted_in=True, labels=CHAOS_ON)
    await _create(custom, namespace, "payments", copy.deepcopy(ORIGINAL_SPEC))
    experiment = _experiment(namespace, caller="checkout")
    backend = IstioBackend(experiment, custom_api(custom))
    expires = datetime.now(UTC) + timedelta(seconds=60)
    await backend.apply(experiment.steps[0], expires)
    vs = await _get(custom, namespace, "payments")
    edited = _team_edit(vs["spec"])
    await _edit(custom, namespace, "payments", edited)
    await backend.apply(experiment.steps[1], expires)
    routes = (await _get(custom, namespace, "payments"))["spec"]["http"]
    assert [r["name"] for r in routes] == ["canary-harbinger-chaos", "canary", "primary-harbinger-chaos", "primary",
                                          "team-new"]
    assert routes[0]["fault"]["abort"]["percentage"] == {"value": 50.0}
    await backend.remove_all()
    after = (await _get(custom, namespace, "payments"))["spec"]
    assert after == {**ORIGINAL_SPEC, "http": [r for r in edited["http"] if not r["name"].endswith("-harbinger-chaos")]}
    assert after["http"][0]["timeout"] == "7s" and after["http"][1]["retries"]["attempts"] == 5


async def test_a_stash_written_by_an_older_harbinger_is_still_restored(
    kube: client.ApiClient, custom: client.CustomObjectsApi, make_namespace: Any,
) -> None:
    """Before the field-only restore, the stash held the whole spec; a leftover of that kind is
    read as the routes it faulted, and restored field by field like any other."""
    namespace = await make_namespace(opted_in=True, labels=CHAOS_ON)
    legacy = json.dumps({"spec": ORIGINAL_SPEC, "annotations": False, "labels": False})
    await _vs(custom, namespace, "payments", {
        ORIGINAL_ANNOTATION: legacy, contract.CHAOS_EXPIRES: "2000-01-01T00:00:00Z", contract.CHAOS_EXPERIMENT: "left"})
    await sweep_virtual_services(kube, everything=True)
    after = await _get(custom, namespace, "payments")
    assert after["spec"] == ORIGINAL_SPEC
    assert "annotations" not in after["metadata"] and "labels" not in after["metadata"]
