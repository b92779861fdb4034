"""The one model registry of the webhook and the planner: which trained forecaster serves a
service, from the models directory (:mod:`models.layout`; filled by ``harbinger model-mirror``
in a cluster, by ``harbinger train --out`` by hand).

- **Change by content.** A model is known by the SHA-256 of its ``metadata.json``, which names
  its graph's own SHA-256 and its version: a retrained model is seen as new however its files
  were written (in place, copied with old times, mirrored), and a model rewritten with the
  same content is not loaded again.
- **Off the event loop.** Hashing and loading (onnxruntime builds a session) run in a worker
  thread: the webhook's admissions and the planner's loop never wait on a disk or a graph.
- **Bounded.** At most ``max_loaded`` forecasters stay loaded (least recently used go first):
  a cluster with more services than memory reloads the coldest instead of growing.
- **One session per graph.** Services served by the pooled model (``models.pooled``) have the
  very same graph: their forecasters share one onnxruntime session, kept while any of them is
  loaded. Ten thousand services on the pooled model cost one session, not ten thousand.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harbinger import contract
from models import layout
from models.metadata import METADATA_FILE

log = logging.getLogger(__name__)

Loader = Callable[[Path], Any]


def load_forecaster(model_dir: Path, sessions: dict[str, Any] | None = None) -> Any:
    from models.serving import Forecaster  # onnxruntime only once some service has a model

    return Forecaster.load(model_dir, sessions=sessions)


def fingerprint(model_dir: Path) -> str | None:
    """The model's content identity (SHA-256 of its metadata), None when it is not readable."""
    try:
        return hashlib.sha256((model_dir / METADATA_FILE).read_bytes()).hexdigest()
    except OSError:
        return None


class ModelRegistry:
    def __init__(self, models_dir: Path, *, max_loaded: int = 2000, load: Loader | None = None) -> None:
        self.models_dir = models_dir
        self.max_loaded = max_loaded
        #: Graph SHA-256 -> the session every loaded forecaster of that graph runs.
        self._sessions: dict[str, Any] = {}
        self._load = load or (lambda model_dir: load_forecaster(model_dir, self._sessions))
        #: Directory key (``namespace/service``, or a flat ``service``) -> fingerprint, at the last scan.
        self._available: dict[str, str] = {}
        self._loaded: OrderedDict[str, tuple[str, Any]] = OrderedDict()
        self.scanned = False

    # --- which models exist -------------------------------------------------------------------
    def scan(self) -> None:
        """Find every model and its fingerprint (blocking: call it from a worker thread)."""
        found = {}
        for key in layout.scan(self.models_dir):
            print_ = fingerprint(self.models_dir / key)
            if print_ is not None:
                found[key] = print_
        self._available = found
        self.scanned = True

    async def rescan(self) -> None:
        await asyncio.to_thread(self.scan)

    def key_of(self, namespace: str, service: str) -> str | None:
        """The scanned model serving the service: namespaced, else the deprecated flat layout."""
        namespaced = contract.service_key(namespace, service)
        if namespaced in self._available:
            return namespaced
        if service in self._available:
            layout.warn_flat(self.models_dir, namespace, service)
            return service
        return None

    def has(self, namespace: str, service: str) -> bool:
        return self.key_of(namespace, service) is not None

    # --- the forecaster -------------------------------------------------------------------------
    async def get(self, namespace: str, service: str) -> Any | None:
        """The service's forecaster, loaded (off the loop) when new or changed; None when the
        service has no model. A model that cannot be loaded raises (the caller says so)."""
        key = self.key_of(namespace, service)
        if key is None:
            return None
        current = self._available[key]
        cached = self._loaded.get(key)
        if cached is not None and cached[0] == current:
            self._loaded.move_to_end(key)
            return cached[1]
        model = await asyncio.to_thread(self._load, self.models_dir / key)
        self._loaded[key] = (current, model)
        self._loaded.move_to_end(key)
        while len(self._loaded) > self.max_loaded:
            evicted, _ = self._loaded.popitem(last=False)
            log.debug("model %s unloaded (more than %d loaded)", evicted, self.max_loaded)
        if self._sessions:  # after a load (rare): drop the sessions of graphs no loaded model runs
            in_use = {getattr(loaded, "graph_sha256", None) for _, loaded in self._loaded.values()}
            for sha in [sha for sha in self._sessions if sha not in in_use]:
                del self._sessions[sha]
        return model

    def sessions(self) -> int:
        """onnxruntime sessions held: one per distinct graph among the loaded models."""
        return len(self._sessions)

    def loaded(self) -> int:
        return len(self._loaded)
