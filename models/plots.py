"""PNGs people read: a backtest (the actual traffic against each model's P50, Harbinger's
P50-P90 band), and one forecast after the traffic it was made from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.evaluation import HARBINGER, PROPHET, BacktestResult
from models.forecast import Forecast

_COLOURS = {HARBINGER: "tab:blue", PROPHET: "tab:orange", "seasonal-naive-daily": "tab:green",
            "seasonal-naive-weekly": "tab:olive"}


def plot_backtest(result: BacktestResult, path: Path) -> Path:
    """Draw every fold of ``result`` on one time axis and save it to ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(14, 5), dpi=110)
    step = pd.Timedelta(seconds=result.step_seconds)
    # The worse seasonal-naive variant only repeats old spikes; the better one is the baseline.
    shown = [m for m in result.scores if not m.startswith("seasonal-naive") or m == result.naive_choice]
    top = 0.0
    for number, fold in enumerate(result.folds):
        times = pd.date_range(fold.start, periods=fold.actual.size, freq=step)
        first = number == 0
        axes.plot(times, fold.actual, color="black", linewidth=1.0, label="actual" if first else None)
        if HARBINGER in fold.p50:
            axes.fill_between(times, fold.p50[HARBINGER], fold.p90[HARBINGER], color="tab:blue", alpha=0.2,
                              linewidth=0, label="harbinger P50-P90" if first else None)
        top = max(top, float(np.nanmax(fold.actual)), float(np.nanmax(fold.p90.get(HARBINGER, fold.actual))))
        for model, p50 in fold.p50.items():
            if model not in shown:
                continue
            axes.plot(times, p50, color=_COLOURS.get(model, "grey"), linewidth=1.3 if model == HARBINGER else 0.8,
                      alpha=1.0 if model == HARBINGER else 0.7, label=f"{model} P50" if first else None)
        axes.axvline(times[0].to_pydatetime(), color="grey", linewidth=0.5, alpha=0.4)  # type: ignore[arg-type]
    title = ", ".join(f"{name} MASE {score.mase:.3f}" for name, score in result.scores.items()
                      if np.isfinite(score.mase))
    axes.set_title(f"{result.trace}: rolling-origin backtest, {len(result.folds)} folds\n{title}", fontsize=10)
    axes.set_ylabel("requests per second")
    axes.set_ylim(0, 1.15 * top)  # a baseline's wild miss should not flatten everything else
    axes.legend(loc="upper left", fontsize=8, ncol=3)
    return _finish(figure, axes, path)


def plot_forecast(history: pd.Series, forecast: Forecast, path: Path, *, shown_steps: int | None = None) -> Path:
    """The forecast's P50 and P50-P90 band after the recent actual traffic (the last
    ``shown_steps`` of ``history``: by default as long as the forecast), saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recent = history.iloc[-(shown_steps or 2 * forecast.horizon_steps):]
    times = pd.DatetimeIndex(forecast.timestamps())
    figure, axes = plt.subplots(figsize=(12, 4.5), dpi=110)
    axes.plot(recent.index, recent.to_numpy(dtype=float), color="black", linewidth=1.0, label="actual")
    axes.fill_between(times, forecast.p50, forecast.p90, color="tab:blue", alpha=0.2, linewidth=0,
                      label="forecast P50-P90")
    axes.plot(times, forecast.p50, color="tab:blue", linewidth=1.3, label="forecast P50")
    peak = forecast.peak_time()
    axes.axvline(peak, color="tab:red", linewidth=0.8, alpha=0.6,  # type: ignore[arg-type]
                 label=f"peak P90 {forecast.peak_p90():.1f} req/s")
    axes.set_title(f"{forecast.service}: model {forecast.model_version}, {forecast.step_seconds // 60} min steps",
                   fontsize=10)
    axes.set_ylabel("requests per second")
    axes.set_ylim(0, None)
    axes.legend(loc="upper left", fontsize=8)
    return _finish(figure, axes, path)


def _finish(figure: Any, axes: Any, path: Path) -> Path:
    """Grid, dated x axis, tight layout; saved to ``path`` and closed (matplotlib keeps every
    open figure alive otherwise)."""
    import matplotlib.pyplot as plt

    axes.grid(alpha=0.3)
    figure.autofmt_xdate()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
