"""The watch cache every hot path reads, against the real apiserver."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from harbinger.kube import KubeObject, Reflector


async def test_reflector_lists_then_follows_changes(kube: client.ApiClient, namespace: str, eventually: Any) -> None:
    core = client.CoreV1Api(kube)
    await core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="before"), data={"k": "1"}))
    events: list[tuple[str, str]] = []

    def record(kind: str, obj: KubeObject, old: KubeObject | None) -> None:
        events.append((kind, obj["metadata"]["name"]))

    reflector = Reflector(core.list_namespaced_config_map, name="cm", on_event=record, namespace=namespace,
                          watch_timeout_seconds=2)
    reflector.start()
    try:
        await reflector.wait_synced(timeout=30)
        assert f"{namespace}/before" in reflector.store

        await core.create_namespaced_config_map(namespace, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="after"), data={"k": "2"}))
        await core.patch_namespaced_config_map("before", namespace, {"data": {"k": "3"}})
        await core.delete_namespaced_config_map("after", namespace)

        async def followed() -> bool:
            return ("DELETED", "after") in events and reflector.store[f"{namespace}/before"]["data"]["k"] == "3"

        # The watch times out every 2 s; the cache resumes from its resourceVersion each time.
        await eventually(followed, timeout=30, what="the reflector to see create, patch and delete")
        assert f"{namespace}/after" not in reflector.store
        assert ("ADDED", "after") in events and ("MODIFIED", "before") in events
    finally:
        await reflector.stop()
