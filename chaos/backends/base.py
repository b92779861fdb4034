"""What every fault backend does, and the marks it leaves on what it changes.

``apply`` puts one step's fault in place (replacing the previous step's) with an expiry;
``remove_all`` puts everything back exactly as it was and may be called at any time,
any number of times. A backend never raises from ``remove_all`` for an object that is
already gone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import Final

from chaos.experiment import Experiment
from chaos.faults import Fault
from harbinger import contract

#: The state an object had before the chaos controller changed it (JSON), for an exact restore.
ORIGINAL_ANNOTATION: Final = contract.CHAOS_ORIGINAL
#: Values of :data:`contract.CHAOS_OWNED_LABEL`: the object was made by chaos, or changed by it.
OWNED_CREATED: Final = "created"
OWNED_PATCHED: Final = "patched"


class FaultBackend(ABC):
    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment

    @abstractmethod
    async def apply(self, fault: Fault, expires: datetime) -> None:
        """Put ``fault`` in place of whatever this experiment injected before."""

    @abstractmethod
    async def remove_all(self) -> int:
        """Restore everything this experiment changed; returns how many objects were restored."""

    @abstractmethod
    def describe_targets(self) -> list[str]:
        """What this backend changes, for the report (``pod ns/name``, ``VirtualService ns/name``)."""
