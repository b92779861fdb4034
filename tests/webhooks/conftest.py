"""Builders shared by the webhook tests: AdmissionReviews, pods, Deployments, forecasts.

Test files reach them through the ``world`` fixture (a :class:`World`), not by importing
this conftest.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonpatch
import numpy as np
import pytest

from harbinger import contract
from models.forecast import Forecast
from webhooks.cluster import ClusterView, StaticStore
from webhooks.forecasts import StaticForecasts
from webhooks.mutate import Bounds, Mutator

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def make_forecast(service: str, p90: list[float], *, start: datetime = NOW, step_seconds: int = 900,
                  version: str = "v-test") -> Forecast:
    values = np.asarray(p90, dtype=float)
    return Forecast(service=service, model_version=version, start=start, step_seconds=step_seconds,
                    p50=values * 0.8, p90=values)


def make_pod(*, name: str = "web-abc12", namespace: str = "shop", labels: dict[str, str] | None = None,
             annotations: dict[str, str] | None = None, owner_rs: str | None = None,
             containers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace,
                                "labels": {contract.APP_NAME_LABEL: "web", **(labels or {})}}
    if annotations is not None:
        metadata["annotations"] = annotations
    if owner_rs:
        metadata["labels"]["pod-template-hash"] = owner_rs.rsplit("-", 1)[1]
        metadata["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner_rs,
                                        "uid": str(uuid.uuid4()), "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": containers or [{"name": "app", "image": "nginx",
                                                   "ports": [{"containerPort": 9000}]}]}}


def make_deployment(name: str = "web", namespace: str = "shop", *, annotations: dict[str, str] | None = None,
                    replicas: int = 2) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
            "spec": {"replicas": replicas}}


def make_namespace_object(name: str = "shop", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def review_body(obj: dict[str, Any] | None, *, operation: str = "CREATE", namespace: str = "shop",
                kind: str = "Pod", resource: str = "pods", group: str = "", uid: str | None = None,
                dry_run: bool = False) -> bytes:
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": resource},
        "namespace": namespace, "operation": operation, "userInfo": {"username": "tester"},
        "object": obj, "oldObject": None, "dryRun": dry_run,
    }
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}).encode()


def response_of(answer: bytes) -> dict[str, Any]:
    review = json.loads(answer)
    assert review["apiVersion"] == "admission.k8s.io/v1"
    assert review["kind"] == "AdmissionReview"
    response: dict[str, Any] = review["response"]
    assert response["allowed"] is True
    return response


def patch_of(answer: bytes) -> list[dict[str, Any]]:
    response = response_of(answer)
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"]))
    return ops


def apply(obj: dict[str, Any], answer: bytes) -> dict[str, Any]:
    result: dict[str, Any] = jsonpatch.apply_patch(obj, patch_of(answer))
    return result


def warmup_window(now: datetime, *, before: float, after: float) -> dict[str, str]:
    """warmup-from/until annotations around ``now``."""
    return {contract.WARMUP_FROM: (now - timedelta(seconds=before)).isoformat(),
            contract.WARMUP_UNTIL: (now + timedelta(seconds=after)).isoformat()}


class World:
    """A hand-filled cluster view and forecast cache around one :class:`Mutator`."""

    def __init__(self, *, bounds: Bounds | None = None, now: datetime = NOW) -> None:
        self.namespaces = StaticStore()
        self.deployments = StaticStore()
        self.forecasts = StaticForecasts()
        self.now = now
        self.mutator = Mutator(ClusterView(self.namespaces, self.deployments), self.forecasts,
                               bounds=bounds, sidecar_image="harbinger:test", clock=lambda: self.now)

    def namespace(self, name: str = "shop", *, opted_in: bool = True, chaos: bool = False) -> None:
        labels = {contract.ENABLED_LABEL: "true"} if opted_in else {}
        if chaos:
            labels[contract.CHAOS] = contract.CHAOS_ENABLED
        self.namespaces.put(make_namespace_object(name, labels))

    async def review(self, obj: dict[str, Any] | None, **kwargs: Any) -> bytes:
        return await self.mutator.review(review_body(obj, **kwargs))

    forecast = staticmethod(make_forecast)
    pod = staticmethod(make_pod)
    deployment = staticmethod(make_deployment)
    body = staticmethod(review_body)
    response_of = staticmethod(response_of)
    patch_of = staticmethod(patch_of)
    apply = staticmethod(apply)
    warmup_window = staticmethod(warmup_window)




@pytest.fixture
def world() -> World:
    return World()
