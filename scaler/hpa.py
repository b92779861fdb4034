"""The Kubernetes HPA algorithm, as documented and as kube-controller-manager runs it,
for one Deployment whose metric is requests per second per ready pod.

Per sync (15 s by default), from ``pkg/controller/podautoscaler``:

* usage ratio = demand / (ready pods x target per pod); within the 0.1 tolerance, keep
  the current replicas; else ``ceil(ratio x ready pods)``. When scaling up with pods that
  are not ready yet, those count as serving nothing and the ratio is recomputed over all
  pods; if that lands within tolerance (or reverses direction), nothing changes.
* below ``minReplicas`` the HPA jumps straight to it (no rate limit), above
  ``maxReplicas`` straight down to it.
* behaviour defaults: scale-up has no stabilization and is limited to
  ``max(100 %, 4 pods)`` per 15 s; scale-down takes the largest recommendation of the last
  300 s (and may then drop by up to 100 % per 15 s).

The replay drives it tick by tick; the planner's floor reaches it as ``min_replicas``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

TOLERANCE = 0.1
SYNC_SECONDS = 15.0
SCALE_DOWN_STABILIZATION_SECONDS = 300.0
SCALE_UP_PERCENT = 100
SCALE_UP_PODS = 4


@dataclass
class HorizontalPodAutoscaler:
    target_per_pod: float
    min_replicas: int
    max_replicas: int
    tolerance: float = TOLERANCE
    scale_down_window_seconds: float = SCALE_DOWN_STABILIZATION_SECONDS
    _recommendations: deque[tuple[float, int]] = field(default_factory=deque)

    def desired(self, now: float, demand: float, current: int, ready: int) -> int:
        """The replicas the HPA sets at time ``now`` (seconds), given ``current`` pods of
        which ``ready`` serve ``demand`` requests/s. ``demand`` NaN = no metrics: no change."""
        if current > self.max_replicas:
            return self.max_replicas
        if current < self.min_replicas:
            return self.min_replicas
        if math.isnan(demand):
            return current
        raw = self._from_metric(demand, current, ready)
        self._recommendations.append((now, raw))
        while self._recommendations and self._recommendations[0][0] < now - self.scale_down_window_seconds:
            self._recommendations.popleft()
        stabilized = current
        if raw > current:
            stabilized = raw  # no scale-up stabilization by default
        elif raw < current:
            stabilized = min(current, max(r for _, r in self._recommendations))
        up_limit = max(current * (100 + SCALE_UP_PERCENT) // 100, current + SCALE_UP_PODS)
        return max(self.min_replicas, min(self.max_replicas, up_limit, stabilized))

    def _from_metric(self, demand: float, current: int, ready: int) -> int:
        if ready == 0:
            # No pod reports a metric: the HPA cannot compute a ratio and keeps the count,
            # unless there are no pods at all, where any demand needs at least one.
            return current if current else (1 if demand > 0 else 0)
        ratio = demand / (ready * self.target_per_pod)
        unready = current - ready
        if unready == 0 or ratio <= 1.0:
            if abs(1.0 - ratio) <= self.tolerance:
                return current
            return math.ceil(ratio * ready - 1e-9)
        # Scaling up while some pods are still warming: count them as serving nothing.
        new_ratio = demand / (current * self.target_per_pod)
        if abs(1.0 - new_ratio) <= self.tolerance or new_ratio < 1.0:
            return current
        return max(current, math.ceil(new_ratio * current - 1e-9))
