"""JSONPatch building: escaped paths, created parents, minimal operations."""

from __future__ import annotations

from typing import Any

import jsonpatch
import pytest

from webhooks.patch import append_container, append_volume, escape, set_annotations, set_requests


def pod(**metadata: Any) -> dict[str, Any]:
    return {"metadata": metadata, "spec": {"containers": [{"name": "app"}]}}


@pytest.mark.parametrize("token, escaped", [
    ("kubernetes.io/egress-bandwidth", "kubernetes.io~1egress-bandwidth"),
    ("a~b", "a~0b"),
    ("~1", "~01"),  # '~' first, or '~1' would come back as '/'
    ("plain", "plain"),
])
def test_escape_follows_rfc_6901(token: str, escaped: str) -> None:
    assert escape(token) == escaped
    document = {token: 1}
    assert jsonpatch.JsonPointer("/" + escaped).resolve(document) == 1


def test_annotations_created_when_missing_or_null() -> None:
    for target in (pod(), pod(annotations=None)):
        ops = set_annotations(target, {"kubernetes.io/egress-bandwidth": "10M"})
        assert ops == [{"op": "add", "path": "/metadata/annotations",
                        "value": {"kubernetes.io/egress-bandwidth": "10M"}}]
        patched = jsonpatch.apply_patch(target, ops)
        assert patched["metadata"]["annotations"] == {"kubernetes.io/egress-bandwidth": "10M"}
    no_metadata = {"spec": {"containers": []}}
    assert jsonpatch.apply_patch(no_metadata, set_annotations(no_metadata, {"k": "v"}))["metadata"] == {
        "annotations": {"k": "v"}}


def test_only_changed_annotations_are_patched() -> None:
    target = pod(annotations={"same": "1", "old": "1", "other": "x"})
    ops = set_annotations(target, {"same": "1", "old": "2", "new/key": "3"})
    assert ops == [{"op": "add", "path": "/metadata/annotations/old", "value": "2"},
                   {"op": "add", "path": "/metadata/annotations/new~1key", "value": "3"}]
    assert jsonpatch.apply_patch(target, ops)["metadata"]["annotations"] == {
        "same": "1", "old": "2", "other": "x", "new/key": "3"}
    assert set_annotations(target, {}) == []


def test_requests_compare_by_quantity_value() -> None:
    target = pod()
    ops = set_requests(target, 0, {"cpu": "500m", "memory": "64Mi"})
    assert ops == [{"op": "add", "path": "/spec/containers/0/resources",
                    "value": {"requests": {"cpu": "500m", "memory": "64Mi"}}}]
    target["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1"}}
    assert set_requests(target, 0, {"cpu": "500m"})[0]["path"] == "/spec/containers/0/resources/requests"
    target["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "0.5", "memory": "1Gi"}}
    assert set_requests(target, 0, {"cpu": "500m", "memory": "64Mi"}) == [
        {"op": "add", "path": "/spec/containers/0/resources/requests/memory", "value": "64Mi"}]


def test_container_and_volume_appended_once() -> None:
    target = pod()
    sidecar = {"name": "side", "image": "x"}
    volume = {"name": "info", "emptyDir": {}}
    ops = append_container(target, sidecar) + append_volume(target, volume)
    patched = jsonpatch.apply_patch(target, ops)
    assert patched["spec"]["containers"][-1] == sidecar
    assert patched["spec"]["volumes"] == [volume]
    assert append_container(patched, sidecar) == [] and append_volume(patched, volume) == []
    target["spec"]["initContainers"] = [{"name": "side"}]
    assert append_container(target, sidecar) == []  # the name is taken by an init container
