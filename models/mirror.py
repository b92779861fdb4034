"""The model store (:mod:`models.store`) mirrored into a local models directory, in the layout
every reader already follows (:mod:`models.layout`): ``harbinger models-mirror`` runs as a
sidecar of the webhook and the planner, on an ``emptyDir`` their containers share, so no
ReadWriteMany volume is needed and the readers need not know where models come from.

A model's files are rewritten only when its SHA-256 changes (kept next to them in
``.sha256``), the metadata last, each file replaced atomically; a reader sees the newest file
time change and reloads. A model whose ConfigMap is gone is removed, but only a directory the
mirror wrote (one with ``.sha256``): models put there by hand are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from pathlib import Path

from kubernetes_asyncio.client.exceptions import ApiException

from harbinger import contract
from harbinger.documents import write_atomic
from models.layout import SAFE_NAME, namespaced
from models.metadata import GRAPH_FILE, METADATA_FILE
from models.store import ModelStore, stored_model

log = logging.getLogger(__name__)

SHA_FILE = ".sha256"


async def mirror_once(store: ModelStore, models_dir: Path) -> tuple[int, int]:
    """(models written, models removed) this pass."""
    items = await store.list()
    wanted: set[Path] = set()
    written = 0
    for item in items:
        annotations = (item.get("metadata") or {}).get("annotations") or {}
        namespace, _, service = str(annotations.get(contract.MODEL_FOR, "")).partition("/")
        if not (SAFE_NAME.match(namespace) and SAFE_NAME.match(service)):
            continue
        directory = namespaced(models_dir, namespace, service)
        wanted.add(directory)
        sha_file = directory / SHA_FILE
        # A model already mirrored is not decoded and hashed again every pass: its files were
        # checked against this very hash when they were written.
        if sha_file.is_file() and sha_file.read_text().strip() == annotations.get(contract.MODEL_SHA256):
            continue
        model = stored_model(item)
        if model is None:
            log.warning("ConfigMap %s/%s is not a whole model (cut short, or edited by hand): skipped",
                        store.namespace, (item.get("metadata") or {}).get("name"))
            continue
        directory.mkdir(parents=True, exist_ok=True)
        # The graph first, its metadata last: a reader between the two sees a graph its
        # metadata does not vouch for, refuses it and keeps the model it had.
        for name in (GRAPH_FILE, METADATA_FILE):
            write_atomic(directory / name, model.files[name])
        write_atomic(sha_file, model.sha256)
        written += 1
        log.info("model %s for %s written to %s", model.version, contract.service_key(model.namespace,
                                                                                   model.service), directory)
    removed = 0
    for sha_file in models_dir.glob(f"*/*/{SHA_FILE}"):
        directory = sha_file.parent
        if directory not in wanted:
            shutil.rmtree(directory, ignore_errors=True)
            removed += 1
            log.info("model in %s removed: its ConfigMap is gone", directory)
    return written, removed


async def mirror_forever(store: ModelStore, models_dir: Path, *, interval_seconds: float,
                         stop: asyncio.Event) -> None:
    """Mirror every ``interval_seconds`` until ``stop``; an apiserver away for a while costs
    nothing but freshness (the models already mirrored keep serving)."""
    while not stop.is_set():
        try:
            await mirror_once(store, models_dir)
        except (ApiException, OSError, TimeoutError) as exc:
            log.warning("model mirror: %s (retried in %g s)", exc, interval_seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_seconds)
