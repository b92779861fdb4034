"""Reading count CSVs: every kind of bad input names the file, the line and the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harbinger.errors import InvalidInput
from models.errors import BadSeries, HistoryTooShort
from models.series import load_csv, read_counts_csv, regularize, require_history
from models.window import window_before

HEADER = "timestamp,value\n"


def write(tmp_path: Path, body: str, name: str = "trace.csv") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def minutes(start: str, values: list[float | str]) -> str:
    first = pd.Timestamp(start)
    return "".join(f"{(first + pd.Timedelta(minutes=i)).isoformat().replace('+00:00', 'Z')},{v}\n"
                   for i, v in enumerate(values))


@pytest.mark.parametrize(("body", "line", "words"), [
    (HEADER + "2024-01-01T00:00:00Z,1\nyesterday,2\n", 3, "unparseable timestamp 'yesterday'"),
    (HEADER + "2024-01-01T00:00:00Z,1\n2024-01-01T00:01:00Z,-3\n", 3, "negative value '-3'"),
    (HEADER + "2024-01-01T00:00:00Z,1\n2024-01-01T00:01:00Z,lots\n", 3, "'lots' is not a finite number"),
    (HEADER + "2024-01-01T00:00:00Z,1\n2024-01-01T00:01:00Z,\n", 3, "'' is not a finite number"),
    (HEADER + "2024-01-01T00:00:00Z,1\n2024-01-01T00:01:00Z,nan\n", 3, "'nan' is not a finite number"),
    (HEADER + "2024-01-01T00:01:00Z,1\n2024-01-01T00:00:00Z,2\n", 3, "earlier than the row before"),
    (HEADER + "2024-01-01T00:00:00Z,1\n2024-01-01T00:00:00Z,2\n", 3, "duplicate timestamp"),
    (HEADER + "2024-01-01T00:00:00Z,1\n2024-01-01T00:01:00Z,2,3\n", 3, "expected 2 fields"),
    (HEADER + "2024-01-01T00:00:00Z,1\n\n2024-01-01T00:02:00Z,2\n", 3, "an empty line"),
    ("time,count\n2024-01-01T00:00:00Z,1\n", 1, "expected the header 'timestamp,value'"),
    ("", 1, "the file is empty"),
])
def test_bad_csv_names_file_line_and_problem(tmp_path: Path, body: str, line: int, words: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(BadSeries) as caught:
        read_counts_csv(path)
    assert isinstance(caught.value, InvalidInput)
    assert caught.value.source == str(path)
    assert caught.value.line == line
    assert words in str(caught.value)
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(BadSeries, match="no such file"):
        read_counts_csv(tmp_path / "absent.csv")


def test_single_row_is_too_short(tmp_path: Path) -> None:
    with pytest.raises(HistoryTooShort, match="at least 2"):
        read_counts_csv(write(tmp_path, HEADER + "2024-01-01T00:00:00Z,1\n"))


def test_too_short_history_says_the_minimum() -> None:
    series = pd.Series(np.ones(10), index=pd.date_range("2024-01-01", periods=10, freq="15min", tz="UTC"))
    with pytest.raises(HistoryTooShort) as caught:
        require_history(series, 288, 900, source="checkout")
    message = str(caught.value)
    assert "checkout" in message and "at least 288 steps of 15 min (3 d)" in message and "10 known steps" in message


def test_counts_become_tps_per_step(tmp_path: Path) -> None:
    # 30 one-minute rows of 60 requests: 1 TPS in each of two 15-minute steps.
    series = load_csv(write(tmp_path, HEADER + minutes("2024-01-01T00:00:00Z", [60] * 30)))
    assert list(series.index) == list(pd.date_range("2024-01-01", periods=2, freq="15min", tz="UTC"))
    np.testing.assert_allclose(series.to_numpy(), [1.0, 1.0])


def test_absent_rows_are_missing_by_default_and_zero_when_asked(tmp_path: Path) -> None:
    values: list[float | str] = [60] * 45
    body = HEADER + "".join(line for i, line in enumerate(minutes("2024-01-01T00:00:00Z", values).splitlines(True))
                            if i != 20)  # minute 20 absent: in the second step
    path = write(tmp_path, body)
    missing = load_csv(path)
    assert np.isnan(missing.iloc[1]) and missing.iloc[0] == 1.0 and missing.iloc[2] == 1.0
    zero = load_csv(path, absent="zero")
    np.testing.assert_allclose(zero.to_numpy(), [1.0, 14 * 60 / 900, 1.0])


def test_long_absent_runs_stay_missing_even_as_zero(tmp_path: Path) -> None:
    # Two hours absent (an outage) between two hours of data: never read as silence.
    first = minutes("2024-01-01T00:00:00Z", [60] * 120)
    second = minutes("2024-01-01T04:00:00Z", [60] * 120)
    series = load_csv(write(tmp_path, HEADER + first + second), absent="zero")
    outage = series["2024-01-01T02:00Z":"2024-01-01T03:45Z"]
    assert outage.isna().all() and len(outage) == 8
    assert series.notna().sum() == 16


def test_step_must_be_a_multiple_of_the_interval(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + minutes("2024-01-01T00:00:00Z", [1] * 30))
    with pytest.raises(BadSeries, match="whole multiple"):
        load_csv(path, step_seconds=90)


def test_offset_grid_is_bucketed_by_epoch_steps(tmp_path: Path) -> None:
    # Like the ELB trace: 5-minute points at :04, :09, :14 ... belong to the 15-minute step they fall in.
    start = pd.Timestamp("2024-01-01T00:04:00Z")
    rows = "".join(f"{(start + pd.Timedelta(minutes=5 * i)).isoformat().replace('+00:00', 'Z')},300\n"
                   for i in range(9))
    series = load_csv(write(tmp_path, HEADER + rows))
    assert series.index[0] == pd.Timestamp("2024-01-01T00:00:00Z")
    np.testing.assert_allclose(series.to_numpy(), [1.0, 1.0, 1.0])


def test_shipped_traces_read_as_their_readme_says(traces_dir: Path) -> None:
    from harbinger_dev.traces import load_trace

    nasa = load_trace("nasa")
    # The 1995-07-28 .. 08-01 log gap and the hurricane shutdown stay unknown, not zero.
    assert nasa["1995-07-29":"1995-07-31"].isna().all()
    assert nasa["1995-08-02"].isna().all()
    assert nasa.notna().sum() > 5000
    taxi = load_trace("nyc_taxi")
    assert taxi.index.freq is not None and taxi.index.freq.nanos == 1800 * 10**9
    # The two half-hours merged into the DST fold are absent in the file: unknown here.
    assert taxi["2014-11-02T06:00Z":"2014-11-02T06:30Z"].isna().all()


def test_window_before_fast_path_and_irregular_history() -> None:
    index = pd.date_range("2024-01-01", periods=8, freq="15min", tz="UTC")
    history = pd.Series(np.arange(8.0), index=index)
    end = int(index[-1].value) + 900 * 10**9
    values, known = window_before(history, end, 4, 900)
    np.testing.assert_array_equal(values, [4.0, 5.0, 6.0, 7.0])
    assert known == 4
    padded, known = window_before(history, end, 10, 900)
    assert np.isnan(padded[:2]).all() and padded[-1] == 7.0 and known == 8
    # Five-minute samples are averaged onto the 15-minute grid.
    fine = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                     index=pd.date_range("2024-01-01", periods=6, freq="5min", tz="UTC"))
    np.testing.assert_allclose(regularize(fine, 900).to_numpy(), [2.0, 5.0])


@pytest.mark.parametrize(("history", "words"), [
    (pd.Series([1.0, 2.0], index=pd.date_range("2024-01-01", periods=2, freq="15min")), "no time zone"),
    (pd.Series([1.0, -2.0], index=pd.date_range("2024-01-01", periods=2, freq="15min", tz="UTC")), "negative"),
    (pd.Series([1.0, 2.0], index=[0, 1]), "DatetimeIndex"),
])
def test_bad_in_memory_history_is_refused(history: pd.Series, words: str) -> None:
    # Values are checked where they are read: the window before the end.
    end = int(pd.Timestamp("2024-01-01T01:00Z").value)
    with pytest.raises(BadSeries, match=words):
        window_before(history, end, 4, 900)
