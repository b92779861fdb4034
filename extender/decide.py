"""The two decisions, over the cached cluster picture: which nodes have the headroom
(filter), and which of them suit the pod best (prioritize).

Both read :class:`~extender.state.ClusterState` and never change it; the caller
records the assumed placement. Node names are turned into slots once, then the work is
numpy vector arithmetic, so 5,000 nodes cost about as much as a few Python loops of 50.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np
import numpy.typing as npt

from extender.bandwidth import Demand, describe
from extender.state import ClusterState
from harbinger import contract

#: Prioritize blends three signals, each in 0..1, into the 0..10 extender score: the
#: bandwidth left after placement (relative to the roomiest candidate), how few replicas
#: of the service the node holds, and how few its zone holds (both relative to the other
#: candidate nodes).
BANDWIDTH_WEIGHT = 0.5
NODE_SPREAD_WEIGHT = 0.3
ZONE_SPREAD_WEIGHT = 0.2


@dataclass
class FilterDecision:
    passed: list[str]
    #: Nodes the scheduler may retry (the extender's cache has not seen them yet).
    failed: dict[str, str] = field(default_factory=dict)
    #: Nodes preemption cannot fix: kube-scheduler's preemption knows nothing of bandwidth,
    #: so evicting pods for it would only disrupt them.
    unresolvable: dict[str, str] = field(default_factory=dict)
    #: How many nodes were turned down, by reason (for metrics).
    reasons: dict[str, int] = field(default_factory=dict)


def slots_for(state: ClusterState, names: Sequence[str]) -> npt.NDArray[np.intp]:
    """Each name's slot; 0 (the never-known sentinel) for names the cache has not seen."""
    return np.fromiter(map(state.slots.get, names, repeat(0)), dtype=np.intp, count=len(names))


def filter_nodes(
    state: ClusterState, names: list[str], demand: Demand, *, admit_undeclared: bool
) -> FilterDecision:
    slots = slots_for(state, names)
    known = state.known[slots]
    ok: npt.NDArray[np.bool_] = known
    if demand:
        capacity = state.capacity[slots]
        declared = capacity >= 0
        if demand.ingress:
            ok = ok & ~(declared & (capacity - state.used_ingress[slots] < demand.ingress))
        if demand.egress:
            ok = ok & ~(declared & (capacity - state.used_egress[slots] < demand.egress))
        if not admit_undeclared:
            ok = ok & declared
    if ok.all():
        return FilterDecision(passed=names)
    decision = FilterDecision(passed=[names[i] for i in np.flatnonzero(ok)])
    for i in np.flatnonzero(~ok):
        name = names[i]
        slot = int(slots[i])
        if not state.known[slot]:
            decision.failed[name] = f"node {name} is not in the Harbinger extender's cache yet"
            reason = "unknown_node"
        elif state.capacity[slot] < 0:
            decision.unresolvable[name] = (
                f"node declares no {contract.NODE_BANDWIDTH} capacity for a pod that needs bandwidth"
            )
            reason = "undeclared_capacity"
        else:
            decision.unresolvable[name] = _shortage(state, slot, demand)
            reason = "no_headroom"
        decision.reasons[reason] = decision.reasons.get(reason, 0) + 1
    return decision


def _shortage(state: ClusterState, slot: int, demand: Demand) -> str:
    """'needs 40M egress bandwidth, 25M free of 1G' (both directions when both fall short)."""
    capacity = int(state.capacity[slot])
    parts = []
    for direction, needed, used in (("ingress", demand.ingress, state.used_ingress[slot]),
                                    ("egress", demand.egress, state.used_egress[slot])):
        free = capacity - int(used)
        if needed and needed > free:
            parts.append(f"needs {describe(needed)} {direction} bandwidth, {describe(max(free, 0))} free "
                         f"of {describe(capacity)}")
    return "; ".join(parts)


def _spread(counts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1 where the fewest replicas are, 0 where the most are, linear in between."""
    low, high = counts.min(), counts.max()
    if high == low:
        return np.ones_like(counts)
    result: npt.NDArray[np.float64] = (high - counts) / (high - low)
    return result


def score_nodes(
    state: ClusterState, names: list[str], demand: Demand, service: str | None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Each node's blended score in 0..1, and which nodes the cache knows (others score 0)."""
    slots = slots_for(state, names)
    known = state.known[slots]
    if not known.any():
        return np.zeros(len(names), dtype=np.float64), known
    capacity = state.capacity[slots].astype(np.float64)
    declared = capacity > 0
    free_after = np.minimum(capacity - state.used_ingress[slots] - demand.ingress,
                            capacity - state.used_egress[slots] - demand.egress)
    # Absolute headroom, relative to the roomiest candidate: a 10G node with 9G free
    # carries a burst better than a 1G node with 900M free, though both are 90 % free.
    free_after = np.where(declared & known, np.maximum(free_after, 0.0), 0.0)
    most = free_after.max()
    bandwidth = free_after / most if most > 0 else free_after

    if service is not None and (replicas := state.service_slots.get(service)):
        where = np.fromiter(replicas.keys(), dtype=np.intp, count=len(replicas))
        how_many = np.fromiter(replicas.values(), dtype=np.float64, count=len(replicas))
        per_slot = np.zeros(len(state.known), dtype=np.float64)
        per_slot[where] = how_many
        on_node = per_slot[slots]
        zones_of_replicas = state.zone[where]
        in_zones = zones_of_replicas >= 0
        per_zone = np.bincount(zones_of_replicas[in_zones], weights=how_many[in_zones],
                               minlength=len(state.zone_ids) + 1)
        zone = state.zone[slots]
        # A node without a zone label is a zone of its own.
        in_zone = np.where(zone >= 0, per_zone[np.maximum(zone, 0)], on_node)
        node_spread = _spread(on_node[known])
        zone_spread = _spread(in_zone[known])
        spread = np.zeros(len(names), dtype=np.float64)
        spread[known] = NODE_SPREAD_WEIGHT * node_spread + ZONE_SPREAD_WEIGHT * zone_spread
    else:
        spread = np.full(len(names), NODE_SPREAD_WEIGHT + ZONE_SPREAD_WEIGHT)
    blended: npt.NDArray[np.float64] = np.where(known, BANDWIDTH_WEIGHT * bandwidth + spread, 0.0)
    return blended, known
