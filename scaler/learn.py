"""Capacity-profile values the operator did not declare, learned from what the cluster and
the traffic history show; the documented :class:`CapacityProfile` default where the data
does not allow it.

A field is *declared* when the operator wrote it (pydantic's ``model_fields_set``: in the
Deployment's ``harbinger.io/capacity-profile`` annotation, or in the ``--profiles`` YAML's
service entry or its ``defaults``). A declared value always wins. Learned, when undeclared:

* ``warmup_seconds``: the P90, over the Deployment's Ready pods that never restarted, of
  the time from ``metadata.creationTimestamp`` to the ``Ready`` condition's
  ``lastTransitionTime`` (scheduling, image pull, start and readiness probe: everything a
  pod requested now takes before it serves). Relearned every run.
* ``burst_dispersion``, only when the profile plans on ``plan_quantile: p50``, the one rule
  it sizes (with ``p90`` the P90 and the headroom are the margin, and a learned dispersion
  would pay for the same risk twice and change plans of profiles that never asked for it):
  :func:`scaler.trace.burst_dispersion` of the service's request rate over the last week,
  read from the planner's history source at a fine step (60 s, else 300 s when the source
  cannot give 60 s) against the forecast's step. Relearned hourly.

Learning never stops a run: missing or bad data keeps the default and says why in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import annotated_types
import numpy as np
import pandas as pd
from kubernetes_asyncio import client

from harbinger.clock import parse_timestamp
from harbinger.errors import InvalidInput
from harbinger.kube import KubeObject, read_json
from harbinger.profile import CapacityProfile
from models.traffic import HistorySource
from scaler.inputs import Target
from scaler.metrics import LEARNED_VALUE
from scaler.plan import ForecastLike
from scaler.trace import complete_steps, dispersion

log = logging.getLogger(__name__)

#: The fields this module learns.
LEARNABLE = ("warmup_seconds", "burst_dispersion")
#: A robust high quantile: most new pods are ready in time, one slow node does not set it.
WARMUP_QUANTILE = 0.9
#: A Ready transition this long after creation is a later readiness flap, not the warm-up
#: (``lastTransitionTime`` is the *last* transition); such pods are not counted.
MAX_OBSERVED_WARMUP_SECONDS = 3600.0
#: History steps tried for the dispersion, finest first: the peak is the largest of these
#: inside a forecast step (a 5-minute trace cannot give 60 s).
FINE_STEPS_SECONDS = (60, 300)
#: Complete, non-empty forecast steps of history needed: a day of 15-minute steps.
MIN_DISPERSION_STEPS = 96
DISPERSION_LOOKBACK_SECONDS = 7 * 86400.0
DISPERSION_RELEARN_SECONDS = 3600.0


@dataclass(frozen=True)
class Estimate:
    """A learned value, or None with the reason the default stays."""

    value: float | None
    basis: str


def is_declared(profile: CapacityProfile, name: str) -> bool:
    return name in profile.model_fields_set


def bounded(name: str, value: float) -> float:
    """``value`` within the validation range of ``CapacityProfile.<name>``."""
    low, high = -math.inf, math.inf
    for rule in CapacityProfile.model_fields[name].metadata:
        if isinstance(rule, annotated_types.Ge) and isinstance(rule.ge, int | float):
            low = max(low, float(rule.ge))
        elif isinstance(rule, annotated_types.Gt) and isinstance(rule.gt, int | float):
            low = max(low, math.nextafter(float(rule.gt), math.inf))
        elif isinstance(rule, annotated_types.Le) and isinstance(rule.le, int | float):
            high = min(high, float(rule.le))
        elif isinstance(rule, annotated_types.Lt) and isinstance(rule.lt, int | float):
            high = min(high, math.nextafter(float(rule.lt), -math.inf))
    return min(max(value, low), high)


def with_learned(profile: CapacityProfile, learned: Mapping[str, float]) -> CapacityProfile:
    """``profile`` with the learned values of its undeclared fields (declared ones win)."""
    update = {name: bounded(name, value) for name, value in learned.items() if not is_declared(profile, name)}
    # Bounded to each field's range, so nothing is left to validate, and nothing can fail the run.
    return profile.model_copy(update=update) if update else profile


# --- warm-up from pods ------------------------------------------------------------------------
def pod_warmup_seconds(pod: KubeObject) -> float | None:
    """Creation to Ready of one pod; None when it is not Ready, restarted (its Ready time is
    the restart's), or its timestamps are missing, garbage, reversed or a later flap's."""
    created = parse_timestamp((pod.get("metadata") or {}).get("creationTimestamp"))
    status = pod.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if isinstance(c, dict) and c.get("type") == "Ready"),
                 None)
    if created is None or ready is None or ready.get("status") != "True":
        return None
    for container in status.get("containerStatuses") or []:
        restarts = container.get("restartCount", 0) if isinstance(container, dict) else None
        if not isinstance(restarts, int) or restarts > 0:
            return None
    became_ready = parse_timestamp(ready.get("lastTransitionTime"))
    if became_ready is None:
        return None
    seconds = (became_ready - created).total_seconds()
    return seconds if 0 <= seconds <= MAX_OBSERVED_WARMUP_SECONDS else None


def learn_warmup(pods: Iterable[KubeObject], *, quantile: float = WARMUP_QUANTILE) -> Estimate:
    observed = [s for s in (pod_warmup_seconds(p) for p in pods) if s is not None]
    if not observed:
        return Estimate(None, "no Ready pod with usable timestamps")
    value = float(np.quantile(np.asarray(observed), quantile))
    return Estimate(value, f"P{quantile * 100:.0f} creation-to-Ready of {len(observed)} pod(s)")


def label_selector(selector: Mapping[str, Any] | None) -> str:
    """A Deployment's ``spec.selector`` as a list-call label selector."""
    parts = [f"{key}={value}" for key, value in sorted(((selector or {}).get("matchLabels") or {}).items())]
    for expression in (selector or {}).get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if operator == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif operator == "Exists":
            parts.append(str(key))
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            raise InvalidInput(f"selector operator {operator!r} is unknown", source="spec.selector")
    if not parts:
        # An empty selector would list every pod of the namespace.
        raise InvalidInput("the Deployment has no selector", source="spec.selector")
    return ",".join(parts)


# --- burst dispersion from history ------------------------------------------------------------
def learn_burst_dispersion(history: pd.Series, step_seconds: int, *,
                           min_steps: int = MIN_DISPERSION_STEPS) -> Estimate:
    """:func:`scaler.trace.burst_dispersion` of ``history`` (requests/s on a regular fine
    grid, timestamps in UTC) against ``step_seconds`` forecast steps aligned on the epoch,
    as the forecaster's are; None when fewer than ``min_steps`` steps are complete."""
    if len(history) < 2:
        return Estimate(None, f"{len(history)} point(s) of history")
    # Whatever unit the index carries (pandas 3 keeps a datetime's microseconds), in ns.
    stamps = pd.DatetimeIndex(history.index).as_unit("ns").asi8
    ticks = np.diff(stamps)
    tick_ns = int(ticks[0])
    if tick_ns <= 0 or np.any(ticks != tick_ns) or tick_ns % 1_000_000_000:
        return Estimate(None, "the history is not on a regular whole-second grid")
    tick = tick_ns // 1_000_000_000
    if step_seconds % tick or step_seconds // tick < 2:
        return Estimate(None, f"{tick} s history cannot show the peak inside a {step_seconds} s step")
    values = history.to_numpy(dtype=np.float64, na_value=np.nan)
    # Garbage (negative, infinite) is unknown, not traffic.
    values = np.where(np.isfinite(values) & (values >= 0), values, np.nan)
    # Steps start where the forecaster's do, on epoch multiples of the step.
    first = int(np.argmax(stamps % (step_seconds * 1_000_000_000) == 0))
    if stamps[first] % (step_seconds * 1_000_000_000):
        return Estimate(None, "the history holds no whole forecast step")
    values = values[first:]
    means, peaks = complete_steps(values, tick, step_seconds, "burst_dispersion")
    if len(means) < min_steps:
        return Estimate(None, f"{len(means)} complete {step_seconds} s step(s) of history, {min_steps} needed")
    value = dispersion(means, peaks)
    return Estimate(value, f"P90 over {len(means)} {step_seconds} s steps of {tick} s history")


# --- the planner's learner ---------------------------------------------------------------------
class ProfileLearner:
    """Learns, for each planned service, the fields its profile leaves undeclared (see the
    module docstring), exports them as ``harbinger_planner_learned_profile_value`` and logs
    each change of what was learned or why not."""

    def __init__(self, api: client.ApiClient, *, history: HistorySource | None = None,
                 lookback_seconds: float = DISPERSION_LOOKBACK_SECONDS,
                 relearn_seconds: float = DISPERSION_RELEARN_SECONDS) -> None:
        self.api = api
        self.history = history
        self.lookback = timedelta(seconds=lookback_seconds)
        self.relearn = timedelta(seconds=relearn_seconds)
        self._dispersions: dict[tuple[str, int], tuple[datetime, Estimate]] = {}
        self._said: dict[tuple[str, str], str] = {}

    async def learn(self, target: Target, forecast: ForecastLike, now: datetime) -> dict[str, float]:
        """Learned values of ``target``'s undeclared fields; a field left out keeps its default."""
        profile = target.profile
        wanted: dict[str, Any] = {}
        if not is_declared(profile, "warmup_seconds"):
            wanted["warmup_seconds"] = self._warmup(target)
        if not is_declared(profile, "burst_dispersion") and profile.plan_quantile == "p50":
            wanted["burst_dispersion"] = self._dispersion(target, forecast.step_seconds, now)
        results = await asyncio.gather(*wanted.values(), return_exceptions=True)
        learned: dict[str, float] = {}
        for name, result in zip(wanted, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # cancellation and the like are not data problems
                estimate = Estimate(None, f"learning failed: {type(result).__name__}: {result}")
            else:
                estimate = result
            if estimate.value is not None and math.isfinite(estimate.value):
                learned[name] = bounded(name, estimate.value)
            self._report(target, name, estimate, learned.get(name))
        for name in LEARNABLE:
            if name not in wanted:
                self._forget(target, name)
        return learned

    async def _warmup(self, target: Target) -> Estimate:
        selector = label_selector((target.deployment.get("spec") or {}).get("selector"))
        listed = await read_json(client.CoreV1Api(self.api).list_namespaced_pod(
            target.namespace, label_selector=selector, _preload_content=False))
        return learn_warmup(p for p in listed.get("items") or [] if isinstance(p, dict))

    async def _dispersion(self, target: Target, step_seconds: int, now: datetime) -> Estimate:
        key = (target.key, step_seconds)
        cached = self._dispersions.get(key)
        if cached is not None and now - cached[0] < self.relearn:
            return cached[1]
        if self.history is None:
            return Estimate(None, "the planner has no history source")
        problems = []
        for fine in FINE_STEPS_SECONDS:
            if step_seconds % fine or step_seconds // fine < 2:
                continue
            try:
                history = await self.history.history(target.service, namespace=target.namespace, end=now,
                                                     lookback=self.lookback, step_seconds=fine)
            except InvalidInput as exc:
                # The source cannot give this step (a coarser trace) or has no data: try the next.
                problems.append(f"{fine} s: {exc}")
                continue
            estimate = learn_burst_dispersion(history, step_seconds)
            # Kept for an hour, whether or not it learned: a week of history changes slowly.
            self._dispersions[key] = (now, estimate)
            return estimate
        return Estimate(None, "no usable history (" + ("; ".join(problems) or "no fine step fits") + ")")

    def _report(self, target: Target, name: str, estimate: Estimate, value: float | None) -> None:
        where = f"{target.namespace}/{target.service}"
        if value is not None:
            LEARNED_VALUE.labels(target.namespace, target.service, name).set(value)
            said = f"{name} learned: {value:.4g} ({estimate.basis})"
        else:
            self._forget(target, name)
            default = CapacityProfile.model_fields[name].default
            said = f"{name} not learned, default {default} kept: {estimate.basis}"
        # One line per change, not one per run: the planner runs every minute.
        if self._said.get((where, name)) != said:
            self._said[(where, name)] = said
            log.info("%s: %s", where, said)

    def _forget(self, target: Target, name: str) -> None:
        with contextlib.suppress(KeyError):  # never exported: nothing to remove
            LEARNED_VALUE.remove(target.namespace, target.service, name)
