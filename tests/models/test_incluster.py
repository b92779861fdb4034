"""Models trained inside the cluster, on the real apiserver: ``harbinger train-cluster`` trains
every service of an opted-in namespace from its history and keeps the model in a ConfigMap in
Harbinger's namespace (nothing rewritten when retraining gives the same model); a service
without history gets a Warning Event instead; ``harbinger model-mirror`` writes the models where
the webhook and the planner read them, and removes a model whose ConfigMap is gone."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from harbinger import contract
from harbinger_dev.localcluster import LocalCluster
from models.adaptive import CoverageCheck, realized_coverage
from models.incluster import train_cluster
from models.layout import find
from models.metadata import METADATA_FILE
from models.mirror import mirror_once
from models.serving import Forecaster
from models.store import ModelStore, config_map_name, stored_model
from models.traffic import TraceHistory
from tests.scaler.conftest import deployment_body

NOW = "1995-08-15T00:00:00Z"


def harbinger(cluster: LocalCluster, store: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HARBINGER_")},
           "HARBINGER_TRAINING__STORE_NAMESPACE": store}
    return subprocess.run([sys.executable, "-m", "harbinger.cli", *args, f"--kubeconfig={cluster.kubeconfig}"],
                          capture_output=True, text=True, timeout=300, env=env)


async def test_models_are_trained_in_the_cluster_stored_and_mirrored(
    cluster: LocalCluster, kube: client.ApiClient, make_namespace: Any, traces_dir: Path, tmp_path: Path,
) -> None:
    namespace = await make_namespace(opted_in=True)
    store = await make_namespace(prefix="store")
    elsewhere = await make_namespace()  # not opted in: never trained
    apps: Any = client.AppsV1Api(kube)
    core: Any = client.CoreV1Api(kube)
    for ns, name in ((namespace, "frontend"), (namespace, "fresh"), (namespace, "newbie"), (elsewhere, "frontend")):
        await apps.create_namespaced_deployment(ns, deployment_body(name, replicas=0))
    # "fresh" started twelve hours ago: too little for a model of its own, enough for the pooled one.
    nasa = (traces_dir / "nasa.csv").read_text().splitlines()
    fresh = tmp_path / "fresh.csv"
    fresh.write_text("\n".join([nasa[0], *(row for row in nasa[1:] if "1995-08-14T12:00" <= row[:16] < "1995-08-15")]))
    train = ["train-cluster", f"--namespace={namespace}", f"--namespace={elsewhere}",
             f"--history-trace=frontend={traces_dir / 'nasa.csv'}", f"--history-trace=fresh={fresh}*3",
             f"--now={NOW}", "--json"]

    first = await asyncio.to_thread(harbinger, cluster, store, *train)
    assert first.returncode == 0, first.stderr
    results = {s["service"]: s for s in json.loads(first.stdout.splitlines()[-1])["services"]}
    assert set(results) == {f"{namespace}/frontend", f"{namespace}/fresh", f"{namespace}/newbie"}
    trained, missing = results[f"{namespace}/frontend"], results[f"{namespace}/newbie"]
    # The version names the last whole step before now, and the graph's content.
    assert trained["result"] == "trained" and trained["version"].startswith("19950814T2355Z-")
    # Its own model and the pooled one were compared on its last three days.
    assert "served by" in trained["detail"] and "over its last 3 days" in trained["detail"], trained
    assert missing["result"] == "no-history" and "no trace is configured for service 'newbie'" in missing["detail"]
    pooled = results[f"{namespace}/fresh"]
    assert pooled["result"] == "trained" and "served by the pooled model (short history)" in pooled["detail"], pooled

    kept = await core.read_namespaced_config_map(config_map_name(namespace, "frontend"), store)
    model = stored_model(kept.to_dict() | {"binaryData": kept.binary_data,
                                           "metadata": {"annotations": kept.metadata.annotations}})
    assert model is not None and model.version == trained["version"]
    assert kept.metadata.annotations[contract.MODEL_FOR] == f"{namespace}/frontend"
    assert kept.metadata.labels[contract.MODEL_LABEL] == "true"

    listed = await core.list_namespaced_event(namespace)
    said = {(e.involved_object.name, e.reason, e.type) for e in listed.items}
    assert ("frontend", "ModelTrained", "Normal") in said and ("newbie", "NotEnoughHistory", "Warning") in said

    # Retraining on the same history gives the same models: nothing is rewritten.
    again = await asyncio.to_thread(harbinger, cluster, store, *train)
    assert {s["result"] for s in json.loads(again.stdout.splitlines()[-1])["services"]
            if s["service"] != f"{namespace}/newbie"} == {"unchanged"}, again.stdout
    assert (await core.read_namespaced_config_map(config_map_name(namespace, "frontend"), store)
            ).metadata.resource_version == kept.metadata.resource_version

    # The mirror writes it where the components read models; a forecaster loads it.
    models_dir = tmp_path / "models"
    mirrored = await asyncio.to_thread(harbinger, cluster, store, "model-mirror", f"--dir={models_dir}", "--once")
    assert mirrored.returncode == 0 and "2 model(s) written" in mirrored.stderr, mirrored.stderr
    directory = find(models_dir, namespace, "frontend")
    assert directory is not None
    assert Forecaster.load(directory).model_version == trained["version"]
    # The pooled model serves "fresh" under its own name, from the pooled graph, with its own level.
    fresh_dir = find(models_dir, namespace, "fresh")
    assert fresh_dir is not None
    served = Forecaster.load(fresh_dir)
    assert served.service == "fresh"
    assert served.metadata.graph_service == "pooled-300s" and served.metadata.choice == {
        "served_by": "pooled", "reason": "short history"}
    history = await TraceHistory.parse([f"fresh={fresh}*3"]).history(
        "fresh", end=datetime(1995, 8, 15, tzinfo=UTC), lookback=timedelta(days=1), step_seconds=300)
    forecast = served.forecast(history)
    assert forecast.p50.size == served.spec.horizon_steps and 0 < forecast.p50.mean() < 10 * history.mean()
    # A day later the first model's forecast has all come in: the next training scores it and moves
    # the P90's level by its miss (models.adaptive), and keeps its own first forecast instead.
    kept_metadata = json.loads(model.files[METADATA_FILE])
    check = CoverageCheck.from_json(kept_metadata["p90_check"])
    assert kept_metadata["p90_level"] == check.level == 0.9
    assert check.start == datetime(1995, 8, 15, tzinfo=UTC) and len(check.p90) == 288
    day_later = [arg if not arg.startswith("--now=") else "--now=1995-08-16T00:00:00Z" for arg in train]
    later = await asyncio.to_thread(harbinger, cluster, store, *day_later)
    assert later.returncode == 0, later.stderr
    retrained = {s["service"]: s for s in json.loads(later.stdout.splitlines()[-1])["services"]}
    arrived = await TraceHistory.parse([f"frontend={traces_dir / 'nasa.csv'}"]).history(
        "frontend", end=datetime(1995, 8, 16, tzinfo=UTC), lookback=timedelta(days=2), step_seconds=300)
    coverage = realized_coverage(check, arrived)
    assert coverage is not None
    level = min(max(0.9 + 0.75 * (0.9 - coverage), 0.5), 0.99)
    assert f"P90 level {level:.2f}" in retrained[f"{namespace}/frontend"]["detail"], retrained
    now_kept = await core.read_namespaced_config_map(config_map_name(namespace, "frontend"), store)
    now_metadata = json.loads(base64.b64decode(now_kept.binary_data[METADATA_FILE]))
    assert now_metadata["p90_level"] == pytest.approx(level)
    assert CoverageCheck.from_json(now_metadata["p90_check"]).start == datetime(1995, 8, 16, tzinfo=UTC)

    # A model the mirror did not write is not its to remove; one whose ConfigMap went is.
    (models_dir / "by-hand" / "svc").mkdir(parents=True)
    await core.delete_namespaced_config_map(config_map_name(namespace, "frontend"), store)
    await asyncio.to_thread(harbinger, cluster, store, "model-mirror", f"--dir={models_dir}", "--once")
    assert find(models_dir, namespace, "frontend") is None and (models_dir / "by-hand" / "svc").is_dir()


async def test_the_shipped_rbac_is_enough_for_the_trainer_and_the_mirror(
    cluster: LocalCluster, kube: client.ApiClient, make_namespace: Any, as_account: Any, traces_dir: Path,
    tmp_path: Path,
) -> None:
    """manifests/base/training's RBAC, installed into a namespace of this test's standing in for
    harbinger-system: the trainer trains and stores as its own account, the webhook's account
    mirrors, and neither may do more (the mirror cannot write a model)."""
    system = await make_namespace(prefix="system")
    namespace = await make_namespace(opted_in=True)
    suffix = uuid.uuid4().hex[:6]
    built = cluster.kubectl("kustomize", str(Path(__file__).resolve().parents[2] / "manifests" / "base" /
                                             "training")).stdout
    docs = [d for d in yaml.safe_load_all(built) if d and d["kind"] != "CronJob"]
    text = yaml.safe_dump_all(docs).replace("harbinger-system", system)
    for name in ("harbinger-trainer", "harbinger-models-writer", "harbinger-models-reader"):
        text = text.replace(f"name: {name}\n", f"name: {name}-{suffix}\n")
    cluster.kubectl("create", "serviceaccount", "harbinger-webhook", "-n", system)
    cluster.kubectl("apply", "-f", "-", input=text)
    apps: Any = client.AppsV1Api(kube)
    await apps.create_namespaced_deployment(namespace, deployment_body("frontend", replicas=0))
    history = TraceHistory.parse([f"frontend={traces_dir / 'nasa.csv'}"])
    now = datetime(1995, 8, 15, tzinfo=UTC)
    try:
        async with as_account(system, f"harbinger-trainer-{suffix}") as trainer:
            outcomes = await train_cluster(trainer, history, ModelStore(trainer, system), now=now,
                                           namespaces=frozenset({namespace}))
        assert [(o.service, o.result) for o in outcomes] == [("frontend", "trained")], outcomes
        async with as_account(system, "harbinger-webhook") as webhook:
            assert await mirror_once(ModelStore(webhook, system), tmp_path / "models") == (1, 0)
            try:
                await ModelStore(webhook, system).put(namespace, "evil", {"model.onnx": b"x", "metadata.json": b"{}"},
                                                      version="v", trained_at="now")
            except ApiException as exc:
                assert exc.status == 403
            else:
                raise AssertionError("the webhook's account could write a model")
    finally:
        cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=text, check=False)
