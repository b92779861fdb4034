"""Fault backends: one interface (apply a step's fault, remove everything) over the places a
fault can be put: a pod's annotations (read by the chaos sidecar), the annotation files of
local sidecars, and Istio VirtualServices."""

from chaos.backends.base import FaultBackend

__all__ = ["FaultBackend"]
