"""Harbinger's development harness: the local control plane and Prometheus the tests run
on, the ``make demo`` story, the demo's mesh and load generator, and the shared traffic
traces with their events files.

None of it is the product: it is a separate distribution (``dev/pyproject.toml``) that
``make setup`` installs beside Harbinger, never part of Harbinger's wheel or image. It
may read paths inside the repository (``REPO_ROOT``); the shipped packages never do.
"""

from pathlib import Path

#: The Harbinger checkout this harness lives in (``dev/harbinger_dev/`` is two levels down).
REPO_ROOT = Path(__file__).resolve().parents[2]
