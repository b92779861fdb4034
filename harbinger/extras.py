"""Optional parts of Harbinger and what they need: training (``harbinger[train]``) and
pictures (``harbinger[plots]``) are extras, so that a serving replica installs neither. A
command that needs one says so by name instead of failing on an import deep inside."""

from __future__ import annotations

import importlib.util

from harbinger.errors import HarbingerError

#: extra -> the modules it provides.
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("sklearn", "skl2onnx", "onnx"),
    "plots": ("matplotlib",),
}


class MissingExtra(HarbingerError):
    def __init__(self, extra: str, what: str, missing: list[str]) -> None:
        self.extra = extra
        super().__init__(f"{what} needs Harbinger's '{extra}' extra ({', '.join(missing)} not installed): "
                         f"pip install 'harbinger[{extra}]'")


def missing(extra: str) -> list[str]:
    return [m for m in EXTRAS[extra] if not _installed(m)]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a half-installed package
        return False


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` unless the extra's modules are installed."""
    absent = missing(extra)
    if absent:
        raise MissingExtra(extra, what, absent)
