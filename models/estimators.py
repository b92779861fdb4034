"""The scikit-learn estimators the forecaster can be trained with, by name.

Every choice is a pair of quantile regressors (P50 and P90) that skl2onnx can export.
``hgb`` is the default because it measured best (docs/forecasting.md, "Estimator
choice"); the others stay selectable (``--estimator``) so the comparison can be re-run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import QuantileRegressor
from sklearn.pipeline import Pipeline, make_pipeline

EstimatorName = Literal["hgb", "gbr", "linear"]
ESTIMATORS: tuple[EstimatorName, ...] = ("hgb", "gbr", "linear")


@dataclass(frozen=True)
class BoostingParams:
    """Boosting size. Serving time grows with the number of trees (about 0.14 µs per tree for a
    24-step forecast in onnxruntime), so the default is the smallest ensemble that measured as
    accurate as larger ones: 40 rounds at 0.3 against 200 at 0.08 changed MASE by -0.003 to
    +0.018 on the four traces and cut inference from 57 to 14 µs (docs/forecasting.md)."""

    max_iter: int = 40
    learning_rate: float = 0.3
    max_leaf_nodes: int = 31
    max_depth: int = 6
    min_samples_leaf: int = 80
    l2_regularization: float = 1.0


def make_quantile_estimator(name: EstimatorName, quantile: float, *, seed: int,
                            params: BoostingParams | None = None) -> Any:
    """A fresh, unfitted regressor for ``quantile`` (0.5 gives the median)."""
    p = params or BoostingParams()
    if name == "hgb":
        # Handles NaN itself: an outage in the history becomes a learned branch, not an imputed guess.
        return HistGradientBoostingRegressor(
            loss="quantile", quantile=quantile, max_iter=p.max_iter, learning_rate=p.learning_rate,
            max_leaf_nodes=p.max_leaf_nodes, max_depth=p.max_depth, min_samples_leaf=p.min_samples_leaf,
            l2_regularization=p.l2_regularization, early_stopping=False, random_state=seed)
    if name == "gbr":
        booster = GradientBoostingRegressor(
            loss="quantile", alpha=quantile, n_estimators=p.max_iter, learning_rate=p.learning_rate,
            max_depth=min(p.max_depth, 5), min_samples_leaf=p.min_samples_leaf, subsample=0.8,
            random_state=seed)
        return _imputed(booster)
    if name == "linear":
        return _imputed(QuantileRegressor(quantile=quantile, alpha=0.0, solver="highs"))
    raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")


def _imputed(estimator: Any) -> Pipeline:
    # The median of each feature stands in for an unknown lag (estimators without NaN support).
    return make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), estimator)
