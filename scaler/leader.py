"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does,
so that of the planner's replicas exactly one changes the cluster.

A replica holds the Lease while it keeps renewing it, every third of the duration. Another
replica may take the Lease only once it has seen the same Lease record (holder and
renewTime) unchanged for a whole ``leaseDurationSeconds`` of its *own* clock, as client-go
does: the holder's timestamps are never compared with another machine's clock, so clock
skew between replicas cannot make two leaders (only a difference in clock *rate* over one
duration could, far below the safety margin). Every write carries the ``resourceVersion``
that was read, so when two replicas race for an expired Lease the apiserver accepts one
write and answers 409 to the other. A replica counts itself leader only until its last
successful renewal plus the duration minus a safety margin (:data:`SAFETY_SHARE`), so it
stops acting before anyone else may start. A renewal that fails for any reason (an API
error, a refused or timed-out connection) is logged and counted, and the replica keeps
leading only until that deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from harbinger.clock import Clock, format_time, parse_timestamp
from harbinger.kube import read_json
from scaler.metrics import ERRORS, IS_LEADER

log = logging.getLogger(__name__)

#: Stop acting this share of the lease duration before the Lease could expire.
SAFETY_SHARE = 0.2


def micro_time(when: datetime) -> str:
    """A Lease's MicroTime."""
    return format_time(when, precision="microseconds")


class LeaderElector:
    def __init__(self, api: client.ApiClient, *, name: str, namespace: str, identity: str,
                 duration_seconds: float, clock: Clock) -> None:
        # Typed as Any: bodies go out and come back as the apiserver's JSON dicts (see harbinger.kube).
        self.coordination: Any = client.CoordinationV1Api(api)
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.duration = timedelta(seconds=duration_seconds)
        self.clock = clock
        self._leading_until: datetime | None = None
        #: The other holder's Lease record as last read, and when (on this replica's clock) it
        #: was first seen: it has expired once it stays the same for a whole duration.
        self._observed: tuple[str, str] | None = None
        self._observed_at: datetime | None = None

    def is_leader(self) -> bool:
        return self._leading_until is not None and self.clock.now() < self._leading_until

    async def try_acquire_or_renew(self) -> bool:
        """One attempt: create, renew or take over the Lease. True when this replica leads."""
        now = self.clock.now()
        try:
            lease = await self._read()
            if lease is None:
                await self.coordination.create_namespaced_lease(self.namespace, self._body(now, now, None, 0))
                return self._won(now, "created")
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            transitions = int(spec.get("leaseTransitions") or 0)
            if holder and holder != self.identity and not self._expired(spec, now):
                return self._lost()
            self._observed = self._observed_at = None
            acquired = now if holder != self.identity else parse_timestamp(spec.get("acquireTime")) or now
            if holder != self.identity:
                transitions += 1
            body = self._body(acquired, now, lease["metadata"]["resourceVersion"], transitions)
            await self.coordination.replace_namespaced_lease(self.name, self.namespace, body)
            return self._won(now, "renewed" if holder == self.identity else f"taken over from {holder or 'nobody'}")
        except ApiException as exc:
            if exc.status == 409:  # another replica wrote first
                return self._lost()
            ERRORS.labels("lease").inc()
            log.warning("lease %s/%s: API error %s", self.namespace, self.name, exc.status)
            return self.is_leader()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # The apiserver could not be reached: keep leading only until the last renewal's
            # deadline, and try again at the next tick.
            ERRORS.labels("lease").inc()
            log.warning("lease %s/%s: %s: %s", self.namespace, self.name, type(exc).__name__, exc)
            return self.is_leader()

    async def release(self) -> None:
        """Give the Lease up on shutdown so another replica takes over at once."""
        if not self.is_leader():
            return
        self._leading_until = None
        IS_LEADER.set(0)
        with contextlib.suppress(ApiException):
            lease = await self._read()
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                spec = lease["spec"]
                spec["holderIdentity"] = ""
                spec["renewTime"] = micro_time(self.clock.now() - self.duration)
                await self.coordination.replace_namespaced_lease(self.name, self.namespace, lease)

    async def run(self, stop: asyncio.Event) -> None:
        """Keep trying / renewing every third of the duration until ``stop``."""
        while not stop.is_set():
            await self.try_acquire_or_renew()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.duration.total_seconds() / 3)
        await self.release()

    # ---------------------------------------------------------------------------------
    async def _read(self) -> dict[str, Any] | None:
        try:
            return await read_json(self.coordination.read_namespaced_lease(self.name, self.namespace,
                                                                           _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _expired(self, spec: dict[str, Any], now: datetime) -> bool:
        """True once the holder's record has not changed for its whole duration, as seen on
        this replica's clock (module docstring)."""
        renewed = spec.get("renewTime")
        if not renewed:
            return True
        try:
            duration = timedelta(seconds=float(spec.get("leaseDurationSeconds") or 0))
        except (TypeError, ValueError):
            duration = self.duration
        record = (str(spec.get("holderIdentity") or ""), str(renewed))
        if record != self._observed or self._observed_at is None:
            self._observed, self._observed_at = record, now
        return self._observed_at + duration <= now

    def _body(self, acquired: datetime, renewed: datetime, resource_version: str | None,
              transitions: int) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.duration.total_seconds())),
                "acquireTime": micro_time(acquired),
                "renewTime": micro_time(renewed),
                "leaseTransitions": transitions,
            },
        }

    def _won(self, now: datetime, how: str) -> bool:
        if not self.is_leader():
            log.info("leading the planner (lease %s/%s %s) as %s", self.namespace, self.name, how, self.identity)
        self._leading_until = now + self.duration * (1 - SAFETY_SHARE)
        IS_LEADER.set(1)
        return True

    def _lost(self) -> bool:
        if self._leading_until is not None:
            log.info("no longer leading the planner (lease %s/%s)", self.namespace, self.name)
        self._leading_until = None
        IS_LEADER.set(0)
        return False
