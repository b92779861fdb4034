"""Models trained inside the cluster (``harbinger train --cluster``, run by a CronJob): every
service of every opted-in namespace gets a model from its own traffic history, without anyone
running ``harbinger train`` by hand.

For each service (``namespace/service``, from its Deployments by the one rule of
:func:`harbinger.contract.service_of`): read its history (Prometheus in production, the same
source the webhook and planner forecast from), train, export to ONNX and keep it in the model
store (:mod:`models.store`), which the webhook and the planner mirror (:mod:`models.mirror`).
What it did is an Event on the service's Deployments: ``ModelTrained`` (with the version), or
``NotEnoughHistory`` (a Warning that says how much there is and how much the model needs).
One service's failure is its own: the others are still trained.

With ``pooled`` (the default), one more model is trained across every service's history
(:mod:`models.pooled`). A service whose history is too short for a model of its own (a new
one: a day is needed, the pooled model needs six hours) is served by it instead of by
nothing; every other service by whichever of the two forecast its last ``validation_days``
days better, both trained on the history before them. The pooled model is stored for each
service it serves with the same graph bytes, so the mirror's readers load it once.

Services are trained one at a time in a worker thread, each with one thread of its own: a
CronJob's pod with a CPU limit, not a pool competing with the components.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from harbinger import contract
from harbinger.clock import format_time
from harbinger.errors import HarbingerError, InvalidInput
from harbinger.events import record_event
from harbinger.kube import read_json
from models.adaptive import CoverageCheck, carried, next_level
from models.errors import HistoryTooShort
from models.features import FeatureSpec
from models.forecast import Forecast
from models.metadata import METADATA_FILE
from models.pooled import OWN, POOLED_CHOICE, choose, for_service, train_pooled
from models.serving import ForecastCore
from models.store import ModelStore, read_files
from models.traffic import HistorySource
from models.training import TrainedModel, TrainingConfig, train

log = logging.getLogger(__name__)

COMPONENT = "harbinger-training"


@dataclass(frozen=True)
class Outcome:
    namespace: str
    service: str
    #: ``trained`` (stored, new), ``unchanged`` (the stored model is this one), ``no-history``
    #: or ``failed``.
    result: str
    detail: str
    version: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"service": contract.service_key(self.namespace, self.service), "result": self.result,
                "detail": self.detail, "version": self.version}


async def services(api: client.ApiClient, namespaces: frozenset[str] | None) -> dict[tuple[str, str], list[Any]]:
    """(namespace, service) -> its Deployments, in opted-in namespaces (and only ``namespaces``)."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    listed = await read_json(core.list_namespace(_preload_content=False))
    opted = {n["metadata"]["name"] for n in listed.get("items") or []
             if contract.is_opted_in(n["metadata"]["name"], n["metadata"].get("labels"))
             and (namespaces is None or n["metadata"]["name"] in namespaces)}
    found: dict[tuple[str, str], list[Any]] = {}
    deployments = await read_json(apps.list_deployment_for_all_namespaces(_preload_content=False))
    for item in deployments.get("items") or []:
        meta = item["metadata"]
        if meta["namespace"] not in opted:
            continue
        service = contract.service_of(meta.get("labels"), meta.get("annotations"))
        if service:
            found.setdefault((meta["namespace"], service), []).append(item)
    return found


async def train_cluster(api: client.ApiClient, history: HistorySource, store: ModelStore, *, now: datetime,
                        namespaces: frozenset[str] | None = None, step_seconds: int = 300,
                        lookback: timedelta = timedelta(days=28), instance: str = "harbinger-train",
                        seed: int = 0, pooled: bool = True, validation_days: int = 3) -> list[Outcome]:
    found = await services(api, namespaces)
    histories: dict[tuple[str, str], pd.Series] = {}
    early: dict[tuple[str, str], Outcome] = {}
    for namespace, service in sorted(found):
        try:
            histories[(namespace, service)] = await history.history(
                service, namespace=namespace, end=now, lookback=lookback, step_seconds=step_seconds)
        except HarbingerError as exc:  # Prometheus has no series for it (a new service), or is unreachable
            early[(namespace, service)] = Outcome(namespace, service, "no-history", f"no traffic history: {exc}")
    config = TrainingConfig(seed=seed)
    pool = await asyncio.to_thread(Pool.train, histories, config, validation_days) if pooled and histories else None
    outcomes = []
    for key, deployments in sorted(found.items()):
        namespace, service = key
        outcome = early.get(key) or await _one(store, namespace, service, histories[key], pool, config)
        outcomes.append(outcome)
        log.log(logging.WARNING if outcome.result in ("no-history", "failed") else logging.INFO, "%s/%s: %s (%s)",
                namespace, service, outcome.result, outcome.detail)
        await _tell(api, deployments, outcome, now, instance)
    return outcomes


@dataclass
class Pool:
    """The pooled model on every history, and on every history before its validation days."""

    final: TrainedModel
    validation: TrainedModel | None
    validation_days: int

    @classmethod
    def train(cls, histories: Mapping[tuple[str, str], pd.Series], config: TrainingConfig,
              validation_days: int) -> Pool | None:
        named = {contract.service_key(*key): series for key, series in histories.items()}
        # Whatever goes wrong here costs the pooled model, never a service its own model.
        try:
            final = train_pooled(named, config=config)
        except (InvalidInput, ValueError, ArithmeticError) as exc:
            log.warning("no pooled model: %s", exc)
            return None
        held = validation_steps(final.spec, validation_days)
        cut = {name: series.iloc[:-held] for name, series in named.items()}
        try:
            validation = train_pooled(cut, config=config)
        except (InvalidInput, ValueError, ArithmeticError) as exc:
            log.warning("no pooled model to compare with: %s", exc)
            validation = None
        return cls(final, validation, validation_days)


def validation_steps(spec: FeatureSpec, days: int) -> int:
    """Steps at the end of a history held out to compare own and pooled: ``days`` origins a day
    apart, the last a full horizon before the end."""
    return (days - 1) * spec.steps_per_day + spec.horizon_steps


def _serve_with(series: pd.Series, own: TrainedModel | None, pool: Pool | None, service: str,
                config: TrainingConfig, p90_level: float) -> tuple[TrainedModel | None, dict[str, Any] | None]:
    """The model that serves the service (own or the pooled one for it, its P90 at the
    service's level) and why; ``None`` when neither can."""
    if pool is None:
        return own, None
    if own is None:
        short = int(series.notna().sum()) >= pool.final.spec.min_history_steps
        return (for_service(pool.final, series, config, p90_level=p90_level),
                {"served_by": POOLED_CHOICE, "reason": "short history"}) if short else (None, None)
    before = series.iloc[: -validation_steps(own.spec, pool.validation_days)]
    try:
        own_before = train(before, service=service, config=config)
    except HistoryTooShort:
        return own, {"served_by": OWN, "reason": "too little history to compare with the pooled model"}
    if pool.validation is None:
        return own, {"served_by": OWN, "reason": "no pooled model to compare with"}
    pooled_before = for_service(pool.validation, before, config)

    def forecast_with(model: TrainedModel) -> Callable[[pd.Series], Forecast]:
        core = ForecastCore(service, "validation", model.spec, model.p90_margin)
        return lambda history: core.forecast_with(model.predict_ratios, history)

    choice = choose(series, forecast_with(own_before), forecast_with(pooled_before), days=pool.validation_days,
                    horizon_steps=own.spec.horizon_steps)
    if choice.served_by == POOLED_CHOICE:
        return for_service(pool.final, series, config, p90_level=p90_level), choice.as_dict()
    return own, choice.as_dict()


async def _one(store: ModelStore, namespace: str, service: str, series: pd.Series, pool: Pool | None,
               config: TrainingConfig) -> Outcome:
    from models.export import export_model, write_pooled_dirs

    too_short = None
    check = await previous_check(store, namespace, service)
    level = next_level(check, series, rate=config.p90_adaptation_rate, bounds=config.p90_level_bounds)
    try:
        own: TrainedModel | None = await asyncio.to_thread(train, series, service=service, config=config,
                                                           p90_level=level)
    except HistoryTooShort as exc:
        own, too_short = None, exc.message
    except (InvalidInput, ValueError, ArithmeticError) as exc:
        return Outcome(namespace, service, "failed", f"training failed: {exc}")
    try:
        model, choice = await asyncio.to_thread(_serve_with, series, own, pool, service, config, level)
    except (InvalidInput, ValueError, ArithmeticError) as exc:  # its own model still serves
        model, choice = own, {"served_by": OWN, "reason": f"comparing with the pooled model failed: {exc}"}
    if model is None:
        return Outcome(namespace, service, "no-history", too_short or "no model can be trained")
    first = await asyncio.to_thread(_first_forecast, model, series, service)
    next_check = carried(check, series, model.p90_level, first)
    with tempfile.TemporaryDirectory(prefix="harbinger-model-") as tmp:
        if model.service == service:
            metadata = await asyncio.to_thread(export_model, model, Path(tmp), choice=choice, check=next_check)
        else:
            written = await asyncio.to_thread(write_pooled_dirs, model, {service: (Path(tmp), model.spec.level_floor)},
                                              choices={service: choice} if choice else None,
                                              checks={service: next_check} if next_check else None)
            metadata = written[service]
        files = read_files(Path(tmp))
    try:
        stored = await store.put(namespace, service, files, version=metadata.model_version,
                                 trained_at=format_time(metadata.created_at))
    except ApiException as exc:
        return Outcome(namespace, service, "failed", f"the model could not be stored: {exc.status} {exc.reason}",
                       metadata.model_version)
    if not stored:
        return Outcome(namespace, service, "unchanged", "the stored model is this one", metadata.model_version)
    served = "" if choice is None else (
        f"; served by the {'pooled model' if choice['served_by'] == POOLED_CHOICE else 'its own model'} "
        f"({_why(choice)})")
    return Outcome(namespace, service, "trained",
                   f"{metadata.period} seasonality, step {metadata.step_seconds} s, {metadata.training_rows} rows, "
                   f"history {format_time(metadata.training_start)} to {format_time(metadata.training_end)}, "
                   f"P90 level {metadata.p90_level:.2f}{served}", metadata.model_version)


async def previous_check(store: ModelStore, namespace: str, service: str) -> CoverageCheck | None:
    """The first forecast of the service's stored model, for this training to score
    (:mod:`models.adaptive`). None, and the level starts again at 0.9, when there is no stored
    model, it has no check (an older Harbinger's), or the check cannot be read."""
    try:
        stored = await store.get(namespace, service)
    except ApiException as exc:
        log.warning("%s/%s: the stored model could not be read (%s %s); its P90 level starts again at 0.9",
                    namespace, service, exc.status, exc.reason)
        return None
    if stored is None:
        return None
    try:
        raw = json.loads(stored.files[METADATA_FILE]).get("p90_check")
        return CoverageCheck.from_json(raw) if raw is not None else None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("%s/%s: the stored model's p90_check is malformed (%s); its P90 level starts again at 0.9",
                    namespace, service, exc)
        return None


def _first_forecast(model: TrainedModel, series: pd.Series, service: str) -> Forecast | None:
    """The forecast the model serves first (from the end of its history); None when it cannot."""
    core = ForecastCore(service, "check", model.spec, model.p90_margin)
    try:
        return core.forecast_with(model.predict_ratios, series)
    except (InvalidInput, ValueError, ArithmeticError) as exc:
        log.warning("%s: no first forecast to check the P90 with: %s", service, exc)
        return None


def _why(choice: Mapping[str, Any]) -> str:
    if "reason" in choice:
        return str(choice["reason"])
    return (f"mean absolute error over its last {choice['days']} days: own {choice['own_mae']}, "
            f"pooled {choice['pooled_mae']} req/s")


async def _tell(api: client.ApiClient, deployments: Iterable[Any], outcome: Outcome, now: datetime,
                instance: str) -> None:
    """An Event on each of the service's Deployments (none for an unchanged model)."""
    if outcome.result == "unchanged":
        return
    reason = {"trained": "ModelTrained", "no-history": "NotEnoughHistory", "failed": "TrainingFailed"}[outcome.result]
    message = (f"model {outcome.version} for {outcome.service}: {outcome.detail}" if outcome.result == "trained"
               else f"no model for {outcome.service}: {outcome.detail}")
    for deployment in deployments:
        try:
            await record_event(api, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": deployment["metadata"]},
                               reason, message, now, component=COMPONENT, instance=instance, action="Train",
                               warning=outcome.result != "trained")
        except ApiException as exc:  # an Event is a courtesy
            log.warning("Event %s on %s/%s: %s %s", reason, outcome.namespace, deployment["metadata"]["name"],
                        exc.status, exc.reason)
