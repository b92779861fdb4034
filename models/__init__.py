"""Harbinger's traffic forecaster: P50/P90 requests per second for the next 24 hours.

Import the submodule you need (``models.serving`` for onnxruntime serving,
``models.training`` to fit); this package imports nothing itself, so that serving never
pulls in scikit-learn. See ``models/README.md`` and ``docs/forecasting.md``.
"""
