"""What a platform team bounds, whatever a tenant's annotations ask: the floors the planner
may raise, per namespace.

A capacity profile is written by whoever may edit the Deployment; left unbounded, a
``min_replicas: 5000`` would have the planner raise that team's HPA to its ``maxReplicas``
and win the bottleneck-first share of the cluster's free capacity. The cap bounds only what
the planner raises: a team's own ``minReplicas`` is theirs, and is never lowered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FloorCaps:
    """The most replicas the planner holds a service at: ``per_namespace`` where named, else
    ``default`` (None: no cap)."""

    default: int | None = 100
    per_namespace: Mapping[str, int] = field(default_factory=dict)

    def cap(self, namespace: str) -> int | None:
        return self.per_namespace.get(namespace, self.default)

    def bound(self, namespace: str, floor: int) -> tuple[int, bool]:
        """``floor`` within the namespace's cap, and whether the cap cut it."""
        cap = self.cap(namespace)
        if cap is None or floor <= cap:
            return floor, False
        return cap, True
