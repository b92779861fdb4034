"""Trained models kept by the Kubernetes API: one ConfigMap per service, in Harbinger's own
namespace, its ``binaryData`` the files ``harbinger train`` writes (``model.onnx`` and
``metadata.json``; about 100 KB, far under a ConfigMap's 1 MiB).

Why the API and not a volume: every webhook replica and the planner read the same models with
no ReadWriteMany storage (which most clusters cannot provide), the store is as durable as the
cluster, and only Harbinger's own service accounts can write to its namespace, so a team cannot
hand the components a graph to parse. Each ConfigMap says which service it serves, when it was
trained and the SHA-256 of its files; a model is rewritten (and reloaded by readers) only when
that hash changes.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from harbinger import contract
from harbinger.kube import read_json
from models.metadata import GRAPH_FILE, METADATA_FILE

#: The files a model is made of, as ``harbinger train --out`` writes them.
FILES = (GRAPH_FILE, METADATA_FILE)


@dataclass(frozen=True)
class StoredModel:
    namespace: str
    service: str
    files: dict[str, bytes]
    sha256: str
    version: str
    trained_at: str


def digest(files: Mapping[str, bytes]) -> str:
    sha = hashlib.sha256()
    for name in sorted(files):
        sha.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return sha.hexdigest()


def read_files(model_dir: Path) -> dict[str, bytes]:
    return {name: (model_dir / name).read_bytes() for name in FILES}


def config_map_name(namespace: str, service: str) -> str:
    """``model-<namespace>-<service>``, shortened with a hash when that is over 253 characters
    (the pair is in the annotations either way)."""
    name = f"model-{namespace}-{service}"
    if len(name) <= 253:
        return name
    return f"model-{hashlib.sha256(f'{namespace}/{service}'.encode()).hexdigest()[:16]}-{service[:200]}"


def stored_model(config_map: Mapping[str, Any]) -> StoredModel | None:
    """The model a ConfigMap holds, or None when it is not a whole model (a reader skips it)."""
    meta = config_map.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    try:
        namespace, service = contract.split_service_key(str(annotations.get(contract.MODEL_FOR, "")))
        binary = config_map.get("binaryData") or {}
        files = {name: base64.b64decode(binary[name], validate=True) for name in FILES}
    except (ValueError, KeyError, TypeError):
        return None
    sha = digest(files)
    if annotations.get(contract.MODEL_SHA256) != sha:
        return None  # cut short or edited by hand: not the model that was trained
    return StoredModel(namespace, service, files, sha, str(annotations.get(contract.MODEL_VERSION, "")),
                       str(annotations.get(contract.MODEL_TRAINED_AT, "")))


class ModelStore:
    """The store in ``namespace`` (Harbinger's own)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.core: Any = client.CoreV1Api(api)  # bodies are plain dicts
        self.namespace = namespace

    async def list(self) -> list[dict[str, Any]]:
        listed = await read_json(self.core.list_namespaced_config_map(
            self.namespace, label_selector=f"{contract.MODEL_LABEL}=true", _preload_content=False))
        items: list[dict[str, Any]] = listed.get("items") or []
        return items

    async def get(self, namespace: str, service: str) -> StoredModel | None:
        """The stored model of the service; None when there is none, or it is not a whole model."""
        try:
            config_map = await read_json(self.core.read_namespaced_config_map(
                config_map_name(namespace, service), self.namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return stored_model(config_map)

    async def put(self, namespace: str, service: str, files: Mapping[str, bytes], *, version: str,
                  trained_at: str) -> bool:
        """Store the model; False when the stored one is the same model (its version names the
        graph's content and the data's end, so retraining on the same data writes nothing)."""
        name = config_map_name(namespace, service)
        sha = digest(files)
        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": self.namespace,
                         "labels": {contract.MODEL_LABEL: "true", "app.kubernetes.io/managed-by": "harbinger"},
                         "annotations": {contract.MODEL_FOR: contract.service_key(namespace, service),
                                         contract.MODEL_VERSION: version, contract.MODEL_SHA256: sha,
                                         contract.MODEL_TRAINED_AT: trained_at}},
            "binaryData": {n: base64.b64encode(files[n]).decode() for n in FILES},
        }
        try:
            current = await read_json(self.core.read_namespaced_config_map(name, self.namespace,
                                                                           _preload_content=False))
        except ApiException as exc:
            if exc.status != 404:
                raise
            await self.core.create_namespaced_config_map(self.namespace, body)
            return True
        stored = (current.get("metadata") or {}).get("annotations") or {}
        if stored.get(contract.MODEL_VERSION) == version and stored.get(contract.MODEL_SHA256):
            return False
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await self.core.replace_namespaced_config_map(name, self.namespace, body)
        return True
