"""The replay's HPA follows the documented algorithm."""

from __future__ import annotations

from scaler.hpa import HorizontalPodAutoscaler


def hpa(**kwargs: int) -> HorizontalPodAutoscaler:
    return HorizontalPodAutoscaler(target_per_pod=10.0, min_replicas=kwargs.get("min", 1),
                                   max_replicas=kwargs.get("max", 100))


def test_within_tolerance_nothing_changes() -> None:
    assert hpa().desired(0, demand=109, current=10, ready=10) == 10  # ratio 1.09
    assert hpa().desired(0, demand=91, current=10, ready=10) == 10  # ratio 0.91
    assert hpa().desired(0, demand=112, current=10, ready=10) == 12


def test_scale_up_is_limited_to_double_or_four_pods_per_sync() -> None:
    assert hpa().desired(0, demand=1000, current=2, ready=2) == 6  # +4 beats x2
    assert hpa().desired(0, demand=1000, current=10, ready=10) == 20  # x2 beats +4


def test_scale_down_takes_the_largest_recommendation_of_the_last_300_s() -> None:
    scaler = hpa()
    assert scaler.desired(0, demand=200, current=20, ready=20) == 20
    assert scaler.desired(15, demand=50, current=20, ready=20) == 20
    assert scaler.desired(300, demand=50, current=20, ready=20) == 20
    assert scaler.desired(301, demand=50, current=20, ready=20) == 5


def test_warming_pods_count_as_serving_nothing_when_scaling_up() -> None:
    # 4 ready pods at 100 req/s would say 10, but 6 warming pods already make 10.
    assert hpa().desired(0, demand=100, current=10, ready=4) == 10
    assert hpa().desired(0, demand=150, current=10, ready=4) == 15


def test_min_and_max_are_reached_at_once_and_no_metric_means_no_change() -> None:
    assert hpa(min=8).desired(0, demand=1, current=2, ready=2) == 8
    assert hpa(max=5).desired(0, demand=1000, current=9, ready=9) == 5
    assert hpa().desired(0, demand=float("nan"), current=7, ready=7) == 7


def test_from_one_pod_to_a_hundred_the_scale_up_limit_compounds_per_sync() -> None:
    # 1000 req/s at 10 per pod wants 100: each sync allows max(2x, +4), all pods counted ready.
    scaler, current, seen = hpa(), 1, []
    for sync in range(7):
        current = scaler.desired(15 * sync, demand=1000, current=current, ready=current)
        seen.append(current)
    assert seen == [5, 10, 20, 40, 80, 100, 100]


def test_a_recommendation_within_tolerance_counts_in_the_stabilization_window() -> None:
    # At 0 s the HPA holds 10 (ratio 1.05, within tolerance: recommendation 10); at 100 s the
    # load halves (recommendation 5) but the window's largest is 10; at 301 s the 0 s one has
    # expired and the 100 s one (5) is the largest.
    scaler = hpa()
    assert scaler.desired(0, demand=105, current=10, ready=10) == 10
    assert scaler.desired(100, demand=50, current=10, ready=10) == 10
    assert scaler.desired(200, demand=70, current=10, ready=10) == 10
    assert scaler.desired(301, demand=40, current=10, ready=10) == 7  # max(5 at 100 s, 7 at 200 s, 4)
