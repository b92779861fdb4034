"""Harbinger installed the way a platform team installs it, and the story of ``make demo``
told on it (``harbinger_dev.demo.shop``).

The local cluster gets a real node (kubelet, kube-proxy, containerd, runc) with Harbinger's
images built and loaded, Prometheus with four weeks of traffic history, and then
``kubectl apply -k manifests/`` exactly as shipped. Then, through the cluster:

- every component comes up (the cert Job, the webhook, harbinger-scheduler, the planner, the
  chaos controller) and the shipped CronJob trains a model for every service of an opted-in
  namespace from Prometheus;
- the webhook, called by the apiserver through its Service, stamps the forecast onto new
  pods and injects the slim chaos sidecar; warm-up pods are placed by ``harbinger-scheduler``
  on the node with bandwidth for them, not on the roomier node the default scheduler prefers;
- the application is a real chain (frontend -> checkout -> payments, Services by name, every
  hop through its sidecar): declared rehearsals inject errors, then latency, into payments
  while a load generator sends real requests; each breaches the callers' SLO, rolls back, and
  the requests succeed quickly again;
- the planner writes a CapacityPlan for each Deployment and raises the HPAs' floors, and
  frontend's to what its scripted daily peak needs before the peak's jump begins (learned from
  Prometheus history: the same jump on the days before);
- ``harbinger uninstall`` gives every floor back and leaves no webhook configuration, and
  ``kubectl delete -k manifests/`` removes the rest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from harbinger import contract
from harbinger_dev.demo.shop import ERRORS, LATENCY, NAMESPACE, PEAK_NEED, PEAK_RAMP, SERVICES, Shop, installed_shop
from harbinger_dev.localcluster.imagebuild import COMPONENTS_IMAGE, SIDECAR_IMAGE

pytestmark = pytest.mark.integration

#: The scripted peak's top, after the history is written: the planner raises frontend's floor
#: about four minutes before it, while the rehearsals run (the steps before the planner's take
#: about seven minutes).
PEAK_IN = timedelta(minutes=9)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    logs = os.environ.get("INSTALL_TEST_LOGS")  # whole pod logs on a failure, else their tails
    with installed_shop(tmp_path_factory.mktemp("install"), PEAK_IN, Path(logs) if logs else None) as shop:
        yield shop


def test_every_component_comes_up(shop: Shop) -> None:
    webhook = shop.components_ready()
    assert all(hook["clientConfig"].get("caBundle") for hook in webhook["webhooks"])
    # The sidecar image carries none of the training and plotting libraries.
    assert shop.image_sizes[SIDECAR_IMAGE] < shop.image_sizes[COMPONENTS_IMAGE] / 3


def test_the_application_is_trained_inside_the_cluster(shop: Shop) -> None:
    models = shop.deploy_and_train()
    for service, stored in models.items():
        assert stored["metadata"]["annotations"][contract.MODEL_FOR] == f"{NAMESPACE}/{service}"
        assert stored.get("binaryData", {}).get("model.onnx")


def test_the_webhook_stamps_new_pods_through_its_service(shop: Shop) -> None:
    pod = shop.stamped_pod("frontend")
    annotations = pod["metadata"]["annotations"]
    assert float(annotations[contract.PREDICTED_TPS]) > 0
    # The version it names is the model the cluster trained.
    stored = shop.get("configmap", f"model-{NAMESPACE}-frontend", "-n", "harbinger-system")
    assert annotations[contract.MODEL_VERSION] == stored["metadata"]["annotations"][contract.MODEL_VERSION]
    sidecars = [c for c in pod["spec"]["containers"] if c["name"] == contract.CHAOS_SIDECAR_NAME]
    assert sidecars and sidecars[0]["image"] == SIDECAR_IMAGE


def test_warmup_pods_are_placed_by_harbinger_scheduler_where_the_bandwidth_is(shop: Shop) -> None:
    with shop.roomy_node() as roomy:
        # A pod of no service, for the default scheduler: it goes to the roomy node ...
        assert shop.default_placement() == roomy
        # ... frontend's warm-up pods go, by harbinger-scheduler's extender, where the bandwidth is.
        pod, events = shop.warmup_pod("frontend")
    assert pod["spec"]["schedulerName"] == "harbinger-scheduler"
    assert pod["spec"]["nodeName"] == shop.node
    assert pod["metadata"]["annotations"][contract.EGRESS_BANDWIDTH]
    assert any(e["reason"] == "Scheduled" and (e.get("reportingComponent") or e["source"].get("component"))
               == "harbinger-scheduler" for e in events), events


async def test_a_rehearsal_fails_real_requests_through_the_sidecars_and_rolls_back(shop: Shop) -> None:
    rehearsal = await shop.rehearse(ERRORS)
    status = rehearsal.status
    assert status["phase"] == "Breached", status
    assert status["breach"]["service"] in {"checkout", "frontend"} and status["rollback"]["reason"] == "breach"
    # The load generator saw the injected status at payments' sidecar, and the errors passed on
    # by checkout and frontend as 502s ... The breach is caught within seconds of the 60 % step,
    # so payments' own load is 5 requests a second: at 2, one CI run saw exactly 5 503s.
    assert rehearsal.at_target.by_status.get(503, 0) > 5, rehearsal.at_target
    assert rehearsal.during.by_status.get(200, 0) > 100, rehearsal.during
    assert rehearsal.during.by_status.get(502, 0) > 10, rehearsal.during
    # ... no fault is left on payments' pods, and, once rolled back, every request succeeds.
    assert not rehearsal.faults_left
    assert rehearsal.after.by_status and set(rehearsal.after.by_status) == {200}, rehearsal.after


async def test_a_rehearsal_delays_real_requests_through_the_sidecars_and_rolls_back(shop: Shop) -> None:
    rehearsal = await shop.rehearse(LATENCY)
    status = rehearsal.status
    assert status["phase"] == "Breached", status
    assert status["breach"]["service"] in {"checkout", "frontend"} and status["rollback"]["reason"] == "breach"
    # The injected 2.5 s reached the load generator through checkout and frontend ...
    slowest, at_target = rehearsal.during.slowest, rehearsal.at_target.slowest
    assert slowest is not None and slowest > 2.5, rehearsal.during.by_status
    assert at_target is not None and at_target > 2.5, rehearsal.at_target.by_status
    assert set(rehearsal.during.by_status) == {200}, rehearsal.during.by_status  # delayed, not failed
    # ... and is gone after the rollback.
    assert not rehearsal.faults_left
    assert set(rehearsal.after.by_status) == {200} and (rehearsal.after.slowest or 9.0) < 0.5, rehearsal.after


def test_the_planner_raises_floors_and_frontends_ahead_of_its_peak(shop: Shop) -> None:
    plans = shop.plans()
    assert all(plans[service]["status"]["plannedReplicas"] >= 2 for service in SERVICES), plans  # the policy's
    # Frontend's floor reaches what its peak needs before the jump begins, not after.
    raises = shop.floor_raises("frontend", to_at_least=PEAK_NEED)
    first = next(at for at, _, after in raises if after >= PEAK_NEED)
    assert first < shop.peak_at - PEAK_RAMP, (first, raises, shop.peak_at)


def test_uninstall_gives_everything_back(shop: Shop) -> None:
    result = shop.uninstall()
    assert result.returncode == 0, result.stdout + result.stderr
    for service in SERVICES:
        hpa = shop.get("hpa", service, "-n", NAMESPACE)
        assert hpa["spec"]["minReplicas"] == 1
        assert not any(key.startswith(contract.PREFIX) for key in hpa["metadata"].get("annotations", {}))
    assert shop.kubectl("get", "mutatingwebhookconfiguration", "harbinger-webhook", check=False).returncode != 0
    deleted = shop.delete_manifests()
    assert deleted.returncode == 0, deleted.stderr
    assert shop.kubectl("get", "namespace", "harbinger-system", check=False).returncode != 0
    assert shop.kubectl("get", "crd", "capacityplans.harbinger.io", check=False).returncode != 0
