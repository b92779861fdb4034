"""Harbinger's shared core: the ``harbinger.io/`` contract, settings, the Kubernetes
client, the server helper, quantities, errors and the CLI. Components (``webhooks``,
``extender``, ``scaler``, ``chaos``, ``models``, ``certs``) import from here and never
from each other, except ``models``, the forecasting library they all call."""

__version__ = "0.1.0"
