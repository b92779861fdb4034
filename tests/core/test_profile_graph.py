from __future__ import annotations

from pathlib import Path

import pytest

from harbinger.errors import InvalidInput
from harbinger.graph import ServiceGraph
from harbinger.profile import CapacityProfile, load_profiles, profile_from_annotation


def test_replicas_cover_the_load_with_headroom_within_bounds() -> None:
    profile = CapacityProfile(rps_per_replica=100, headroom=0.2, min_replicas=2, max_replicas=10)
    assert profile.replicas_for(0) == 2
    assert profile.replicas_for(500) == 6  # 500 * 1.2 / 100
    assert profile.replicas_for(10_000) == 10


def test_profiles_inherit_defaults_and_refuse_min_above_max(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text("defaults: {warmup_seconds: 90}\nservices:\n  web: {rps_per_replica: 20}\n  api: {}\n")
    profiles = load_profiles(path)
    assert profiles["web"].rps_per_replica == 20 and profiles["web"].warmup_seconds == 90
    path.write_text("services:\n  web: {min_replicas: 5, max_replicas: 2}\n")
    with pytest.raises(InvalidInput, match=r"services\.web.*min_replicas \(5\) is above max_replicas \(2\)"):
        load_profiles(path)
    path.write_text("services:\n  web: {rps_per_replica: -1}\n")
    with pytest.raises(InvalidInput, match="rps_per_replica"):
        load_profiles(path)
    path.write_text("services:\n  web: {replicas_per_rps: 1}\n")
    with pytest.raises(InvalidInput, match="replicas_per_rps"):
        load_profiles(path)


def test_profile_annotation_must_be_json() -> None:
    assert profile_from_annotation('{"rps_per_replica": 5}', source="d").rps_per_replica == 5
    with pytest.raises(InvalidInput, match="not JSON"):
        profile_from_annotation("{rps: 5", source="deployment shop/web")


def test_graph_orders_callees_first_and_counts_dependents(tmp_path: Path) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text(
        "services: [frontend, checkout, payments, search]\n"
        "edges:\n  - {from: frontend, to: checkout}\n  - {from: checkout, to: payments}\n"
        "  - {from: frontend, to: search}\n"
    )
    graph = ServiceGraph.load(path)
    order = graph.upstream_first()
    assert order.index("payments") < order.index("checkout") < order.index("frontend")
    assert graph.dependents("payments") == {"checkout", "frontend"}
    assert graph.callers("search") == {"frontend"}


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("services: [a, b]\nedges: [{from: a, to: b}, {from: b, to: a}]\n", "cycle"),
        ("services: [a]\nedges: [{from: a, to: z}]\n", "unknown service 'z'"),
        ("services: [a]\nedges: [{from: a}]\n", r"edges\[0\]"),
        ("services: a\n", "'services' list"),
        ("services: [a]\nedges: [{from: a, to: a}]\n", "calls itself"),
    ],
)
def test_bad_graphs_are_refused_with_the_reason(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text(yaml_text)
    with pytest.raises(InvalidInput, match=message):
        ServiceGraph.load(path)


def test_target_utilization_sets_saturation_and_old_profiles_plan_as_before() -> None:
    profile = CapacityProfile(rps_per_replica=40)
    # rps_per_replica is the load at the target; a replica saturates above it.
    assert profile.target_utilization == 0.8
    assert profile.saturation_rps_per_replica == pytest.approx(50)
    assert CapacityProfile(rps_per_replica=40, target_utilization=1).saturation_rps_per_replica == 40
    # The new planning fields default to the rule every existing profile was planned with.
    assert (profile.plan_quantile, profile.burst_factor) == ("p90", 1.0)
    assert profile.replicas_for(400) == 12  # 400 * 1.2 / 40, unchanged
    for bad in ('{"target_utilization": 0}', '{"target_utilization": 1.2}', '{"burst_factor": 0.5}',
                '{"plan_quantile": "p75"}'):
        field = bad.split('"')[1]
        with pytest.raises(InvalidInput, match=field):
            profile_from_annotation(bad, source="deployment shop/web")
