"""Fuzz: fault annotation sets a pod's author could write, through the sidecar's parsing and
fault state. None may crash it or kill its loop, and every fault it accepts is within the
platform's limits. A seeded corpus (deterministic): 10,000 sets by default."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

from chaos.faults import fault_from_annotations
from chaos.sidecar.faultstate import FaultState
from chaos.sidecar.metrics import SidecarMetrics
from chaos.sidecar.podinfo import write_annotations
from chaos.sidecar.stress import Stress
from harbinger import contract
from harbinger.errors import InvalidInput
from harbinger.sidecar import SidecarLimits

SEED = 20261205
CASES = 10_000
LIMITS = SidecarLimits(max_fault_seconds=120.0, max_delay_ms=2_000.0, max_cpu_cores=1.5,
                       max_memory_bytes=4 * 2**20, min_bandwidth_bps=100_000.0)
FIELDS = ("delay_ms", "delay_percent", "abort_status", "abort_percent", "bandwidth_bps", "cpu_cores", "memory_bytes")
#: Digits of other scripts (Arabic-Indic, fullwidth, N'Ko, Gurmukhi, Lao, mathematical bold,
#: superscript, Roman numeral), written as escapes so the source shows what they are.
UNICODE_DIGITS = ("\u0663", "\uff11\uff12", "\u07c5", "\u0a6f", "\u0ed2", "\U0001d7d7", "\u00b2", "\u216b")


def _number(rng: random.Random) -> Any:
    return rng.choice([
        lambda: rng.randint(-10, 1000),
        lambda: rng.uniform(-1e3, 1e6),
        lambda: 10 ** rng.randint(0, 400),
        lambda: rng.choice([1e308, -1e308, 5e-324, -0.0, 0, 1, 100, 599, 600, 399, 8, 8.000001, 120000]),
        lambda: rng.random() * 10,
    ])()


def _string(rng: random.Random) -> str:
    return rng.choice([
        lambda: rng.choice(UNICODE_DIGITS) * rng.randint(1, 4) + rng.choice(["", "Mi", "M", "k", "Gi"]),
        lambda: f"{rng.randint(0, 10**6)}{rng.choice(['', 'Mi', 'Gi', 'Ei', 'm', 'k', 'M', 'G', 'x', 'e9', 'e99999'])}",
        lambda: rng.choice(["1e999999999", "NaN", "Infinity", "-1", ".5", "+3", "", " ", "64Mi ", "0x10"]),
        lambda: "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 12))),
    ])()


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 4)
    if kind < 2:
        return _number(rng)
    if kind == 2:
        return _string(rng)
    if kind == 3:
        return rng.choice([None, True, False])
    if kind in (4, 5):
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(FIELDS): _value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _fault_text(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.05:
        return "[" * rng.randint(1000, 200_000) + "]" * rng.randint(0, 10)  # nesting past the stack
    if roll < 0.08:
        return '{"memory_bytes": ' + "9" * rng.randint(4000, 6000) + "}"  # past the digit limit
    if roll < 0.12:
        return rng.choice(["{", "[]", "null", "1", '"x"', "{}", '{"delay_ms": NaN}', '{"bandwidth_bps": Infinity}',
                           '{"cpu_cores": -Infinity}'])
    if roll < 0.15:
        return "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 40))).encode(
            "utf-8", "surrogatepass").decode("utf-8", "replace")
    fault: dict[str, Any] = {}
    for field in rng.sample(FIELDS, rng.randint(1, len(FIELDS))):
        fault[field] = _value(rng) if rng.random() < 0.6 else _plausible(rng, field)
    if rng.random() < 0.05:
        fault[_string(rng)] = _value(rng)
    return json.dumps(fault, ensure_ascii=rng.random() < 0.5)


def _plausible(rng: random.Random, field: str) -> Any:
    """Values the schema accepts, often past the platform's limits: these must be held to them."""
    return {
        "delay_ms": lambda: rng.uniform(1, 120_000), "delay_percent": lambda: rng.uniform(0.1, 100),
        "abort_status": lambda: rng.randint(400, 599), "abort_percent": lambda: rng.uniform(0.1, 100),
        "bandwidth_bps": lambda: rng.choice([rng.uniform(1, 1e9), f"{rng.randint(1, 999)}{rng.choice('kMG')}"]),
        "cpu_cores": lambda: rng.uniform(0.01, 8), "memory_bytes": lambda: rng.choice(
            [rng.randint(1, 2**40), f"{rng.randint(1, 2048)}{rng.choice(['Ki', 'Mi', 'Gi'])}"]),
    }[field]()


def _expires(rng: random.Random) -> str:
    return rng.choice([
        lambda: "9999-12-31T23:59:59Z", lambda: "9999-12-31T23:59:59-23:59", lambda: "0001-01-01T00:00:00+23:59",
        lambda: f"{rng.randint(1, 9999):04d}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}T"
                f"{rng.randint(0, 25):02d}:{rng.randint(0, 61):02d}:{rng.randint(0, 61):02d}"
                f"{rng.choice(['Z', 'z', '+05:30', '-99:99', '', '.123456789Z'])}",
        lambda: f"{rng.choice(UNICODE_DIGITS)}-01-01T00:00:00Z", lambda: _string(rng),
        lambda: "2030-01-01T00:00:00Z", lambda: "2000-01-01T00:00:00Z",
    ])()


def annotation_sets(seed: int, count: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    sets = []
    for _ in range(count):
        annotations: dict[str, str] = {}
        if rng.random() < 0.97:
            annotations[contract.CHAOS_FAULT] = _fault_text(rng)
        if rng.random() < 0.9:
            annotations[contract.CHAOS_EXPIRES] = _expires(rng)
        if rng.random() < 0.5:
            annotations[contract.CHAOS_EXPERIMENT] = _string(rng) * rng.randint(1, 50)
        sets.append(annotations)
    return sets


def _within_limits(state: FaultState) -> None:
    active = state.current()
    if active is None:
        return
    fault = active.fault
    assert fault.delay_ms is None or 0 <= fault.delay_ms <= LIMITS.max_delay_ms, fault
    assert fault.cpu_cores is None or 0 <= fault.cpu_cores <= LIMITS.max_cpu_cores, fault
    assert fault.memory_bytes is None or 0 <= fault.memory_bytes <= LIMITS.max_memory_bytes, fault
    assert fault.bandwidth_bps is None or LIMITS.min_bandwidth_bps <= fault.bandwidth_bps < float("inf"), fault
    assert fault.abort_status is None or 400 <= fault.abort_status <= 599, fault
    assert 0 < fault.delay_percent <= 100 and 0 < fault.abort_percent <= 100, fault
    assert active.expires <= state.clock.now() + timedelta(seconds=LIMITS.max_fault_seconds), active


async def test_fuzzed_annotations_never_crash_the_sidecar_and_accepted_faults_stay_within_limits(
    tmp_path: Path,
) -> None:
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    # Stress holds nothing here (its own caps at 0): burning CPU 10,000 times is not what is fuzzed.
    state = FaultState(tmp_path / "annotations", Stress(max_cpu_cores=0.0, max_memory_bytes=0), SidecarMetrics(),
                       limits=LIMITS)
    watcher = asyncio.create_task(state.run(0.001))  # the sidecar's own loop, reading the same file meanwhile
    accepted = refused = 0
    try:
        for annotations in annotation_sets(SEED, CASES):
            # The parser itself is total: a fault, no fault, or InvalidInput naming what is wrong.
            try:
                fault_from_annotations(annotations, source="fuzz")
            except InvalidInput as exc:
                assert str(exc)
            write_annotations(state.annotations_file, annotations)
            state.reload()
            await state.sync()
            _within_limits(state)
            state.describe()
            if state.current() is not None:
                accepted += 1
            elif state.error:
                refused += 1
            await asyncio.sleep(0)
        assert not watcher.done(), watcher
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        loop.set_exception_handler(None)
    assert unhandled == []
    # The corpus reaches both sides of the parser (not only garbage, not only valid faults).
    assert accepted > CASES // 50 and refused > CASES // 2, (accepted, refused)
