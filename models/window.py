"""Cutting a service's history window before a forecast origin: the first step of serving.

Apart from :mod:`models.series` so that what only reads and regularises traffic (the planner's
replay, ``harbinger simulate``) does not load numba, which the cut is compiled with.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.kernels import BAD_VALUE, OFF_GRID, cut_window, read_only
from models.series import checked, float_values, regularize, utc_stamps

_NS = 1_000_000_000


def window_before(history: pd.Series, end_ns: int, n_steps: int, step_seconds: int,
                  *, source: str = "history", stamps: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """The ``n_steps`` TPS values of the steps just before ``end_ns`` (``NaN`` where unknown), and how
    many of them are known.

    This is the serving hot path: one compiled loop (:func:`models.kernels.cut_window`), two
    binary searches and a copy. The index's order is checked by pandas once and cached on the
    index; the values are checked only in the span that is used. A span with a stamp off the
    model's grid is averaged onto it first.
    """
    stamps = utc_stamps(history, source) if stamps is None else stamps  # given: already checked
    first_ns = end_ns - n_steps * step_seconds * _NS
    out = np.empty(n_steps)
    known = cut_window(stamps, read_only(float_values(history, source)), first_ns, step_seconds * _NS, out)
    if known == BAD_VALUE:
        lo, hi = np.searchsorted(stamps, [first_ns, end_ns])
        checked(float_values(history, source)[lo:hi], source)  # raises, naming what is wrong
    if known == OFF_GRID:
        lo, hi = np.searchsorted(stamps, [first_ns, end_ns])
        regular = regularize(history.iloc[lo:hi], step_seconds, source=source)
        return window_before(regular, end_ns, n_steps, step_seconds, source=source)
    return out, known
