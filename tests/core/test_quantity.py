from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harbinger.errors import InvalidInput
from harbinger.quantity import (
    format_cpu,
    format_decimal_si,
    format_memory,
    parse_nonnegative,
    parse_quantity,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10M", Decimal(10_000_000)), ("500m", Decimal("0.5")), ("2Gi", Decimal(2 * 2**30)), ("1e3", Decimal(1000)),
     ("1.5k", Decimal(1500)), ("100", Decimal(100)), ("0.1", Decimal("0.1")), ("1E-3", Decimal("0.001"))],
)
def test_parses_kubernetes_quantities(text: str, expected: Decimal) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "M", "10 M", "10MB", "ten", "1.2.3", "--1", "10Mi5"])
def test_refuses_what_is_not_a_quantity_and_names_the_field(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"annotation kubernetes\.io/egress-bandwidth"):
        parse_quantity(text, what="annotation kubernetes.io/egress-bandwidth")


def test_refuses_negative_bandwidth() -> None:
    with pytest.raises(InvalidInput, match="negative"):
        parse_nonnegative("-1M", what="bandwidth")


def test_formats_round_up_so_a_pod_never_gets_less_than_it_needs() -> None:
    assert format_decimal_si(12_300_000) == "13M"
    assert format_decimal_si(999) == "999"
    assert format_decimal_si(10_000) == "10k"
    assert format_cpu(0.2501) == "251m"
    assert format_memory(100e6) == "96Mi"


@given(st.integers(min_value=0, max_value=10**15))
def test_formatted_bandwidth_parses_back_to_at_least_the_amount(bits: int) -> None:
    parsed = parse_quantity(format_decimal_si(bits))
    assert parsed >= bits
    # ... and never more than 10 % over (the largest suffix keeps at least two digits).
    assert parsed <= max(Decimal(bits) * Decimal("1.1"), Decimal(bits) + 1)
