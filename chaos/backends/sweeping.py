"""What both sweeps (pods, VirtualServices) share: they touch only objects in namespaces
that opted into Harbinger, and an object they cannot restore safely is skipped and
reported (a log line, ``harbinger_chaos_sweep_skipped_total``, a Warning Event on the
object) while every other object is still swept.

Anyone who can label an object ``harbinger.io/chaos-owned`` can put it in a sweep's
list, so nothing read from such an object is trusted: a stash that does not parse is a
reason to skip that object, never to stop the sweep.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from chaos.metrics import SWEEP_SKIPPED, SWEPT
from harbinger import contract
from harbinger.clock import SYSTEM_CLOCK, Clock
from harbinger.events import record_event

log = logging.getLogger(__name__)

COMPONENT: Final = "harbinger-chaos"
#: Event reason on an object a sweep could not restore.
SKIPPED_REASON: Final = "ChaosSweepSkipped"


class Sweep:
    """One sweep's view of the cluster: which namespaces it may touch (read once per
    namespace per sweep), and where it reports what it skipped."""

    def __init__(self, api: client.ApiClient, clock: Clock = SYSTEM_CLOCK) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.clock = clock
        self._opted_in: dict[str, bool] = {}
        self.swept = 0
        self.skipped: list[str] = []

    async def may_touch(self, namespace: str) -> bool:
        """Only namespaces labelled ``harbinger.io/enabled=true`` and not protected."""
        if namespace not in self._opted_in:
            try:
                found = await self.core.read_namespace(namespace)
                labels = dict(found.metadata.labels or {})
            except ApiException as exc:
                if exc.status != 404:
                    raise
                labels = {}
            self._opted_in[namespace] = contract.is_opted_in(namespace, labels)
        return self._opted_in[namespace]

    def restored(self, kind: str, namespace: str, name: str) -> None:
        SWEPT.labels(kind=kind).inc()
        self.swept += 1
        log.info("swept chaos fault from %s %s/%s", kind, namespace, name)

    async def skip(self, obj: dict[str, Any], kind: str, api_version: str, reason: str, message: str) -> None:
        """Leave ``obj`` as it is and say why, where its owners look (``kubectl describe``)."""
        meta = obj.get("metadata") or {}
        where = f"{kind} {meta.get('namespace')}/{meta.get('name')}"
        SWEEP_SKIPPED.labels(kind=kind, reason=reason).inc()
        self.skipped.append(f"{where}: {message}")
        log.error("sweep skipped %s: %s", where, message)
        involved = {"apiVersion": api_version, "kind": kind, "metadata": meta}
        try:
            await record_event(self.api, involved, SKIPPED_REASON,
                               f"Harbinger chaos did not restore this object: {message}", self.clock.now(),
                               component=COMPONENT, instance=COMPONENT, action="Sweep", warning=True)
        except ApiException as exc:  # an Event is a courtesy: the log and the metric already say it
            log.warning("could not record an Event on %s: HTTP %s", where, exc.status)
