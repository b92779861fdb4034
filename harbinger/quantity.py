"""Kubernetes quantities (``10M``, ``500m``, ``2Gi``, ``1e3``), parsed in one place.

Every component (webhook, extender, planner) reads and writes bandwidth, CPU and
memory through these functions so that ``10M`` means the same thing everywhere.
Exact arithmetic with :class:`~decimal.Decimal`: ``0.1`` CPU must not become
``0.09999999``.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

from harbinger.errors import InvalidInput

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}
#: Nothing Kubernetes counts (bytes, bits/s, cores) comes near this; a quantity beyond it is
#: a typo or an attack, and refusing it keeps every later int() and float() finite.
LIMIT = Decimal("1e30")
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$")


def parse_quantity(value: str | int | float, *, what: str = "quantity") -> Decimal:
    """Parse a Kubernetes quantity into a Decimal in base units.

    ``what`` names the field in the error, e.g. ``annotation kubernetes.io/egress-bandwidth``.
    """
    if isinstance(value, bool):
        raise InvalidInput(f"{what}: expected a quantity, got a boolean")
    if isinstance(value, int | float):
        return _bounded(Decimal(str(value)), value, what)
    text = str(value).strip()
    match = _QUANTITY.match(text) if len(text) <= 64 else None
    if not match:
        raise InvalidInput(f"{what}: {_shown(value)} is not a Kubernetes quantity (examples: 10M, 500m, 2Gi)")
    number, exponent, suffix = match.groups()
    try:
        base = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid numbers
        raise InvalidInput(f"{what}: {value!r} is not a number") from exc
    if exponent:
        power = int(exponent[1:])
        if abs(power) > 40:  # 10 ** 400000000 would not fit in memory, let alone a node
            raise InvalidInput(f"{what}: {value!r} is out of range (at most {LIMIT:.0e})")
        return _bounded(base * Decimal(10) ** power, value, what)
    if suffix in _BINARY:
        return _bounded(base * _BINARY[suffix], value, what)
    return _bounded(base * _DECIMAL[suffix or ""], value, what)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bounded(amount: Decimal, value: object, what: str) -> Decimal:
    if not amount.is_finite() or abs(amount) >= LIMIT:
        raise InvalidInput(f"{what}: {_shown(value)} is out of range (at most {LIMIT:.0e})")
    return amount


def parse_nonnegative(value: str | int | float, *, what: str = "quantity") -> Decimal:
    """Like :func:`parse_quantity`, refusing negative values (bandwidth, requests)."""
    parsed = parse_quantity(value, what=what)
    if parsed < 0:
        raise InvalidInput(f"{what}: {value!r} is negative")
    return parsed


def format_decimal_si(value: float | Decimal) -> str:
    """Format a non-negative amount with the largest decimal suffix that keeps it an integer
    after rounding up (bandwidth ``12.3e6`` -> ``13M``), the form the CNI bandwidth plugin reads."""
    amount = Decimal(str(value)).to_integral_value(rounding=ROUND_CEILING)
    if amount < 0:
        raise ValueError("cannot format a negative quantity")
    for suffix in ("E", "P", "T", "G", "M", "k"):
        unit = _DECIMAL[suffix]
        if amount >= unit * 10:
            return f"{(amount / unit).to_integral_value(rounding=ROUND_CEILING)}{suffix}"
    return str(amount)


def format_cpu(cores: float | Decimal) -> str:
    """CPU in millicores, rounded up (``0.2501`` -> ``251m``)."""
    millis = (Decimal(str(cores)) * 1000).to_integral_value(rounding=ROUND_CEILING)
    return f"{millis}m"


def format_memory(num_bytes: float | Decimal) -> str:
    """Memory in Mi, rounded up (``100e6`` -> ``96Mi``)."""
    mebi = (Decimal(str(num_bytes)) / 2**20).to_integral_value(rounding=ROUND_CEILING)
    return f"{mebi}Mi"
