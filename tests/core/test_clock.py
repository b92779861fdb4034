from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from harbinger.clock import ManualClock, ReplayClock, SystemClock, clock_from_spec
from harbinger.errors import InvalidInput


def test_no_spec_is_the_wall_clock() -> None:
    assert isinstance(clock_from_spec(None), SystemClock)
    assert isinstance(clock_from_spec(""), SystemClock)


def test_two_processes_with_one_spec_agree_on_replay_time() -> None:
    start = datetime(2014, 4, 20, 6, tzinfo=UTC)
    first = ReplayClock(start, speed=120, origin=time.time() - 10)  # started 10 wall seconds ago
    second = clock_from_spec(first.spec())
    assert isinstance(second, ReplayClock)
    gap = abs((first.now() - second.now()).total_seconds())
    assert gap < 120  # both read the wall clock at slightly different instants, x120
    assert first.now() - start >= timedelta(seconds=1200)  # 10 wall seconds at 120x


@pytest.mark.parametrize("spec", ["2014-04-20T06:00:00", "2014-04-20T06:00:00Z,fast,1", "x,1,1", "a,b",
                                  "2014-04-20T06:00:00Z,-1,0"])
def test_bad_replay_clock_is_named(spec: str) -> None:
    with pytest.raises(InvalidInput, match="HARBINGER_REPLAY_CLOCK"):
        clock_from_spec(spec)


async def test_manual_clock_wakes_sleepers_when_moved() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    sleeper = asyncio.create_task(clock.sleep(60))
    await asyncio.sleep(0)  # let it start sleeping at t=0
    await clock.advance(30)
    await asyncio.sleep(0)
    assert not sleeper.done()
    await clock.advance(30)
    await asyncio.wait_for(sleeper, 1)
