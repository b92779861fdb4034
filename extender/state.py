"""The extender's picture of the cluster: per-node bandwidth aggregates and per-service
replica counts, kept current by watch events so that a scheduling call only reads.

Nodes live in numpy arrays under a stable slot number, so that filter and prioritize
over thousands of node names are a handful of vector operations, not a Python loop.
Every change arrives through :meth:`ClusterState.on_node_event` and
:meth:`ClusterState.on_pod_event` (a :class:`harbinger.kube.Reflector` calls them) or
through :meth:`ClusterState.assume`; each is O(1) in the size of the cluster.

Only pods that are Harbinger's concern count against a node's bandwidth: pods in opted-in
namespaces (label ``harbinger.io/enabled=true``) and pods of the scheduler the extender
serves. Any team elsewhere may annotate its pods as it likes (``1P`` on every pod) without
making a node look full to anyone else; a counted pod's demand is clamped to its node's
capacity, so one pod fills at most its own node. The opt-in is followed live: a namespace
that opts in or out has its pods counted or dropped at once.

A placement the extender recommended is *assumed*: counted on its node at once,
because the next pod of the same burst is scheduled long before the watch reports the
binding. The assumption ends when the watch shows the pod bound (on whichever node the
scheduler chose) or deleted, or after ``assumed_placement_seconds``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from extender import metrics
from extender.bandwidth import NO_DEMAND, Demand, node_capacity, pod_demand
from harbinger import contract
from harbinger.errors import InvalidInput

log = logging.getLogger(__name__)

#: ``capacity`` of a node that declares no ``harbinger.io/bandwidth`` (or a bad one).
UNDECLARED = -1
NO_ZONE = -1
_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True, slots=True)
class Placement:
    """One pod's share of one node: its bandwidth and the service it counts for."""

    slot: int
    demand: Demand
    service: str | None


def service_key(namespace: str, labels: dict[str, str] | None, annotations: dict[str, str] | None) -> str | None:
    """Services are spread per namespace: ``shop/cart`` and ``test/cart`` are different."""
    service = contract.service_of(labels, annotations)
    return f"{namespace}/{service}" if service else None


@dataclass(frozen=True, slots=True)
class _BoundPod:
    """What a bound pod's accounting depends on, kept to count it again when its namespace's
    opt-in changes."""

    node: str
    namespace: str
    scheduler: str
    metadata: dict[str, Any]


class ClusterState:
    def __init__(
        self,
        *,
        assumed_placement_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        initial_slots: int = 1024,
        scheduler_name: str = contract.SCHEDULER_NAME,
    ) -> None:
        self.assumed_placement_seconds = assumed_placement_seconds
        #: Pods of this scheduler count wherever they run (module docstring).
        self.scheduler_name = scheduler_name
        self.opted_in: set[str] = set()
        self._pods: dict[str, _BoundPod] = {}
        self._by_namespace: dict[str, set[str]] = {}
        self._clock = clock
        self.slots: dict[str, int] = {}
        # Slot 0 is a sentinel that is never a node: names the cache has not seen map to
        # it, so lookups need no branch ("unknown" reads as not known, no capacity).
        self.slot_names: list[str] = [""]
        self._free_slots: list[int] = []
        size = initial_slots
        self.known: npt.NDArray[np.bool_] = np.zeros(size, dtype=np.bool_)
        self.capacity: npt.NDArray[np.int64] = np.full(size, UNDECLARED, dtype=np.int64)
        self.used_ingress: npt.NDArray[np.int64] = np.zeros(size, dtype=np.int64)
        self.used_egress: npt.NDArray[np.int64] = np.zeros(size, dtype=np.int64)
        self.zone: npt.NDArray[np.int32] = np.full(size, NO_ZONE, dtype=np.int32)
        #: Placements (bound or assumed) holding each slot; a slot is reused only at zero.
        self._refs: npt.NDArray[np.int32] = np.zeros(size, dtype=np.int32)
        self.zone_ids: dict[str, int] = {}
        #: service -> slot -> replicas there (bound and assumed).
        self.service_slots: dict[str, dict[int, int]] = {}
        self._bound: dict[str, Placement] = {}
        #: pod uid -> (placement, deadline); insertion order is deadline order.
        self._assumed: dict[str, tuple[Placement, float]] = {}

    # --- sizes, for metrics and tests ------------------------------------------------
    @property
    def node_count(self) -> int:
        return int(self.known.sum())

    @property
    def tracked_pods(self) -> int:
        return len(self._bound)

    @property
    def assumed_count(self) -> int:
        return len(self._assumed)

    def assumed_node(self, uid: str) -> str | None:
        entry = self._assumed.get(uid)
        return self.slot_names[entry[0].slot] if entry else None

    def bound_node(self, uid: str) -> str | None:
        """The node the watch saw pod ``uid`` bound to, if its bandwidth is counted there."""
        placement = self._bound.get(uid)
        return self.slot_names[placement.slot] if placement else None

    # --- slots -------------------------------------------------------------------------
    def slot_of(self, name: str) -> int:
        """The slot of ``name``, allocated on first sight (pods may arrive before their node)."""
        slot = self.slots.get(name)
        if slot is not None:
            return slot
        if self._free_slots:
            slot = self._free_slots.pop()
            self.slot_names[slot] = name
        else:
            slot = len(self.slot_names)
            self.slot_names.append(name)
            if slot >= len(self.known):
                self._grow()
        self.slots[name] = slot
        return slot

    def _grow(self) -> None:
        extra = len(self.known)
        self.known = np.concatenate([self.known, np.zeros(extra, dtype=np.bool_)])
        self.capacity = np.concatenate([self.capacity, np.full(extra, UNDECLARED, dtype=np.int64)])
        self.used_ingress = np.concatenate([self.used_ingress, np.zeros(extra, dtype=np.int64)])
        self.used_egress = np.concatenate([self.used_egress, np.zeros(extra, dtype=np.int64)])
        self.zone = np.concatenate([self.zone, np.full(extra, NO_ZONE, dtype=np.int32)])
        self._refs = np.concatenate([self._refs, np.zeros(extra, dtype=np.int32)])

    def _release_if_unused(self, slot: int) -> None:
        """Give a slot back once its node is gone and no placement points at it, so that
        node churn (autoscaled nodes with fresh names) does not grow the arrays forever."""
        if self.known[slot] or self._refs[slot]:
            return
        name = self.slot_names[slot]
        del self.slots[name]
        self.slot_names[slot] = ""
        self.capacity[slot] = UNDECLARED
        self.zone[slot] = NO_ZONE
        self.used_ingress[slot] = 0
        self.used_egress[slot] = 0
        self._free_slots.append(slot)

    # --- nodes -------------------------------------------------------------------------
    def on_node_event(self, kind: str, node: dict[str, Any], _old: dict[str, Any] | None = None) -> None:
        metadata = node.get("metadata") or {}
        name = metadata.get("name")
        if not name:
            return
        if kind == "DELETED":
            slot = self.slots.get(name)
            if slot is not None:
                self.known[slot] = False
                self._release_if_unused(slot)
            return
        slot = self.slot_of(name)
        self.known[slot] = True
        try:
            capacity = node_capacity(metadata)
        except InvalidInput as exc:
            # One mislabelled node must not take the extender down: it is treated as
            # declaring nothing (so checked pods with a demand avoid it) and counted.
            log.warning("ignoring bad bandwidth on node: %s", exc)
            metrics.BAD_QUANTITIES.labels(kind="node").inc()
            capacity = None
        self.capacity[slot] = UNDECLARED if capacity is None else capacity
        zone = (metadata.get("labels") or {}).get(contract.ZONE_LABEL)
        self.zone[slot] = NO_ZONE if not zone else self.zone_ids.setdefault(zone, len(self.zone_ids))

    # --- namespaces ----------------------------------------------------------------------
    def on_namespace_event(self, kind: str, namespace: dict[str, Any], _old: dict[str, Any] | None = None) -> None:
        metadata = namespace.get("metadata") or {}
        name = metadata.get("name")
        if not isinstance(name, str) or not name:
            return
        opted = kind != "DELETED" and contract.is_opted_in(name, metadata.get("labels"))
        if opted == (name in self.opted_in):
            return
        if opted:
            self.opted_in.add(name)
        else:
            self.opted_in.discard(name)
        for uid in list(self._by_namespace.get(name, ())):
            self._account(uid)

    def counts(self, namespace: str, scheduler: str | None) -> bool:
        """Whether a pod's bandwidth counts against its node (module docstring)."""
        return namespace in self.opted_in or scheduler == self.scheduler_name

    # --- pods --------------------------------------------------------------------------
    def on_pod_event(self, kind: str, pod: dict[str, Any], _old: dict[str, Any] | None = None) -> None:
        metadata = pod.get("metadata") or {}
        uid = metadata.get("uid")
        if not uid:
            return
        spec = pod.get("spec") or {}
        node = spec.get("nodeName")
        if kind == "DELETED" or node:
            # The watch has spoken: whatever we guessed for this pod is superseded.
            self._drop_assumption(uid)
        old = self._pods.pop(uid, None)
        if old is not None:
            self._by_namespace[old.namespace].discard(uid)
            if not self._by_namespace[old.namespace]:
                del self._by_namespace[old.namespace]
        if kind == "DELETED" or not node or (pod.get("status") or {}).get("phase") in _TERMINAL_PHASES:
            self._account(uid)
            return
        namespace = str(metadata.get("namespace") or "")
        self._pods[uid] = _BoundPod(str(node), namespace, str(spec.get("schedulerName") or ""), metadata)
        self._by_namespace.setdefault(namespace, set()).add(uid)
        self._account(uid)

    def _account(self, uid: str) -> None:
        """Count the pod ``uid`` as it is known now (or not at all once it is gone)."""
        previous = self._bound.pop(uid, None)
        if previous is not None:
            self._remove(previous)
        pod = self._pods.get(uid)
        if pod is None or not self.counts(pod.namespace, pod.scheduler):
            return
        placement = self._placement_of(pod.node, pod.metadata)
        if placement is not None:
            self._add(placement)
            self._bound[uid] = placement

    def _placement_of(self, node: str, metadata: dict[str, Any]) -> Placement | None:
        annotations = metadata.get("annotations")
        try:
            demand = pod_demand(annotations)
        except InvalidInput as exc:
            # The CNI plugin would refuse such a pod too; it is counted as using nothing.
            log.warning("pod %s/%s: %s; counting it as using no bandwidth",
                        metadata.get("namespace"), metadata.get("name"), exc)
            metrics.BAD_QUANTITIES.labels(kind="pod").inc()
            demand = NO_DEMAND
        service = service_key(metadata.get("namespace") or "", metadata.get("labels"), annotations)
        if not demand and service is None:
            return None  # nothing about this pod matters to any decision
        slot = self.slot_of(node)
        capacity = int(self.capacity[slot])
        if capacity >= 0 and (demand.ingress > capacity or demand.egress > capacity):
            # One pod fills at most its own node, whatever it declares.
            demand = Demand(min(demand.ingress, capacity), min(demand.egress, capacity))
        return Placement(slot, demand, service)

    def _add(self, placement: Placement) -> None:
        slot = placement.slot
        self._refs[slot] += 1
        self.used_ingress[slot] += placement.demand.ingress
        self.used_egress[slot] += placement.demand.egress
        if placement.service is not None:
            counts = self.service_slots.setdefault(placement.service, {})
            counts[slot] = counts.get(slot, 0) + 1

    def _remove(self, placement: Placement) -> None:
        slot = placement.slot
        self._refs[slot] -= 1
        self.used_ingress[slot] -= placement.demand.ingress
        self.used_egress[slot] -= placement.demand.egress
        if placement.service is not None:
            counts = self.service_slots[placement.service]
            left = counts[slot] - 1
            if left:
                counts[slot] = left
            else:
                del counts[slot]
                if not counts:
                    del self.service_slots[placement.service]
        self._release_if_unused(slot)

    # --- assumptions ---------------------------------------------------------------------
    def assume(self, uid: str, node: str, demand: Demand, service: str | None) -> None:
        """Count a pod on ``node`` until the watch reports where it really went."""
        if not uid or uid in self._bound:
            return  # already bound: the watch has counted it
        self._drop_assumption(uid)
        placement = Placement(self.slot_of(node), demand, service)
        self._add(placement)
        self._assumed[uid] = (placement, self._clock() + self.assumed_placement_seconds)

    def forget(self, uid: str) -> None:
        """The scheduler is deciding this pod again: an earlier guess no longer holds."""
        self._drop_assumption(uid)

    def _drop_assumption(self, uid: str) -> None:
        entry = self._assumed.pop(uid, None)
        if entry is not None:
            self._remove(entry[0])

    def expire(self) -> int:
        """Drop assumptions past their deadline; cheap when none are (the usual case)."""
        if not self._assumed:
            return 0
        now = self._clock()
        expired = []
        for uid, (_, deadline) in self._assumed.items():
            if deadline > now:
                break
            expired.append(uid)
        for uid in expired:
            self._drop_assumption(uid)
        if expired:
            metrics.ASSUMPTIONS_EXPIRED.inc(len(expired))
        return len(expired)
