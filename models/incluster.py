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

Services are trained one at a time in a worker thread, each with one thread of its own: a
CronJob's pod with a CPU limit, not a pool competing with the components.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from harbinger import contract
from harbinger.clock import format_time
from harbinger.errors import HarbingerError, InvalidInput
from harbinger.events import record_event
from harbinger.kube import read_json
from models.errors import HistoryTooShort
from models.store import ModelStore, read_files
from models.traffic import HistorySource

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
                        seed: int = 0) -> list[Outcome]:
    outcomes = []
    for (namespace, service), deployments in sorted((await services(api, namespaces)).items()):
        outcome = await _one(history, store, namespace, service, now=now, step_seconds=step_seconds,
                             lookback=lookback, seed=seed)
        outcomes.append(outcome)
        log.log(logging.WARNING if outcome.result in ("no-history", "failed") else logging.INFO, "%s/%s: %s (%s)",
                namespace, service, outcome.result, outcome.detail)
        await _tell(api, deployments, outcome, now, instance)
    return outcomes


async def _one(history: HistorySource, store: ModelStore, namespace: str, service: str, *, now: datetime,
               step_seconds: int, lookback: timedelta, seed: int) -> Outcome:
    from models.export import export_model
    from models.training import TrainingConfig, train

    try:
        series = await history.history(service, namespace=namespace, end=now, lookback=lookback,
                                       step_seconds=step_seconds)
    except HarbingerError as exc:  # Prometheus has no series for it (a new service), or is unreachable
        return Outcome(namespace, service, "no-history", f"no traffic history: {exc}")
    try:
        model = await asyncio.to_thread(train, series, service=service, config=TrainingConfig(seed=seed))
    except HistoryTooShort as exc:
        return Outcome(namespace, service, "no-history", exc.message)
    except (InvalidInput, ValueError, ArithmeticError) as exc:
        return Outcome(namespace, service, "failed", f"training failed: {exc}")
    with tempfile.TemporaryDirectory(prefix="harbinger-model-") as tmp:
        metadata = await asyncio.to_thread(export_model, model, Path(tmp))
        files = read_files(Path(tmp))
    try:
        written = await store.put(namespace, service, files, version=metadata.model_version,
                                  trained_at=format_time(metadata.created_at))
    except ApiException as exc:
        return Outcome(namespace, service, "failed", f"the model could not be stored: {exc.status} {exc.reason}",
                       metadata.model_version)
    if not written:
        return Outcome(namespace, service, "unchanged", "the stored model is this one", metadata.model_version)
    return Outcome(namespace, service, "trained",
                   f"{metadata.period} seasonality, step {metadata.step_seconds} s, {metadata.training_rows} rows, "
                   f"history {format_time(metadata.training_start)} to {format_time(metadata.training_end)}",
                   metadata.model_version)


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
