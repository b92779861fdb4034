"""What a pod asks for and what a node offers, in bits per second.

A pod's demand is its CNI bandwidth-plugin annotations
(``kubernetes.io/ingress-bandwidth``, ``kubernetes.io/egress-bandwidth``); a node's
capacity is ``harbinger.io/bandwidth``, read from its labels first, then its
annotations. Ingress and egress are two separate budgets, each the full capacity:
NICs are full duplex, and the bandwidth plugin shapes each direction on its own, so a
node declaring ``10G`` carries 10G in and 10G out.

Amounts are whole bits/s (rounded up) so that the hot path compares integers. A pod's
demand is clamped to what the kubelet accepts (:data:`MAX_POD_BITS`, 1P); a node's capacity
to :data:`MAX_NODE_BITS`: whatever a tenant writes, every sum stays an int64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harbinger import contract
from harbinger.quantity import parse_nonnegative


@dataclass(frozen=True, slots=True)
class Demand:
    ingress: int = 0
    egress: int = 0

    def __bool__(self) -> bool:
        return self.ingress > 0 or self.egress > 0


NO_DEMAND = Demand()

#: The kubelet's bandwidth plugin accepts at most 1P bits/s per direction.
MAX_POD_BITS = 10**15
#: No NIC comes near this; it keeps a node's budget and its pods' sums inside an int64.
MAX_NODE_BITS = 2**53


def _bits(value: str, what: str, most: int) -> int:
    return min(math.ceil(parse_nonnegative(value, what=what)), most)


def pod_demand(annotations: dict[str, str] | None) -> Demand:
    """The pod's declared bandwidth; raises InvalidInput naming the bad annotation."""
    if not annotations:
        return NO_DEMAND
    ingress = annotations.get(contract.INGRESS_BANDWIDTH)
    egress = annotations.get(contract.EGRESS_BANDWIDTH)
    if ingress is None and egress is None:
        return NO_DEMAND
    return Demand(
        ingress=_bits(ingress, f"annotation {contract.INGRESS_BANDWIDTH}", MAX_POD_BITS) if ingress is not None else 0,
        egress=_bits(egress, f"annotation {contract.EGRESS_BANDWIDTH}", MAX_POD_BITS) if egress is not None else 0,
    )


def is_checked(annotations: dict[str, str] | None) -> bool:
    """Pods the extender has an opinion on: warm-up pods and pods declaring bandwidth.
    Every other pod takes the fast path."""
    if not annotations:
        return False
    return (
        annotations.get(contract.WARMUP) == "true"
        or contract.INGRESS_BANDWIDTH in annotations
        or contract.EGRESS_BANDWIDTH in annotations
    )


def node_capacity(metadata: dict[str, Any]) -> int | None:
    """The node's declared bandwidth, or None when it declares none; raises InvalidInput
    when the declaration is not a quantity."""
    value = (metadata.get("labels") or {}).get(contract.NODE_BANDWIDTH)
    source = "label"
    if value is None:
        value = (metadata.get("annotations") or {}).get(contract.NODE_BANDWIDTH)
        source = "annotation"
    if value is None:
        return None
    return _bits(value, f"node {metadata.get('name')} {source} {contract.NODE_BANDWIDTH}", MAX_NODE_BITS)


_UNITS = ((10**18, "E"), (10**15, "P"), (10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "k"))


def describe(bits: int) -> str:
    """``25000000`` -> ``25M``, ``1500000000`` -> ``1.5G``: for messages people read
    (three significant digits, rounded down so that 'free' never overstates)."""
    if bits < 0:
        return "-" + describe(-bits)
    for unit, suffix in _UNITS:
        if bits >= unit:
            whole = bits // unit
            digits = 0 if whole >= 100 else 1 if whole >= 10 else 2
            # Integer arithmetic: floats would print 2.9G as 2.89G.
            scaled = bits * 10**digits // unit
            text = str(scaled) if not digits else f"{scaled // 10**digits}.{scaled % 10**digits:0{digits}d}"
            if "." in text:
                text = text.rstrip("0").rstrip(".")
            return text + suffix
    return str(bits)
