"""The Harbinger chaos sidecar: a fault-injecting reverse proxy and a bounded stress process,
driven by its pod's ``harbinger.io/chaos-*`` annotations (see ``harbinger/sidecar.py``)."""
