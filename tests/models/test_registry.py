"""The one model registry of the webhook and the planner: a model is known by its content
(a retrained model is new whatever its files' times; the same content is not loaded twice),
loading happens off the event loop, and no more than ``max_loaded`` stay loaded."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from models.export import export_model, write_pooled_dirs
from models.metadata import GRAPH_FILE, METADATA_FILE
from models.pooled import train_pooled
from models.registry import ModelRegistry
from models.training import train
from tests.models.conftest import FAST
from tests.models.test_pooled import daily


def write_model(models_dir: Path, key: str, version: str, *, mtime: float | None = None) -> Path:
    directory = models_dir / key
    directory.mkdir(parents=True, exist_ok=True)
    (directory / GRAPH_FILE).write_bytes(b"graph")
    (directory / METADATA_FILE).write_text(f'{{"model_version": "{version}"}}')
    if mtime is not None:  # a copy that keeps the old times (cp -p, a restored backup)
        for path in (directory, *directory.iterdir()):
            os.utime(path, (mtime, mtime))
    return directory


class Loads:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.threads: set[int] = set()

    def __call__(self, directory: Path) -> str:
        self.calls.append(directory.name)
        self.threads.add(threading.get_ident())
        return (directory / METADATA_FILE).read_text()


async def test_a_model_is_known_by_its_content(tmp_path: Path) -> None:
    loads = Loads()
    registry = ModelRegistry(tmp_path, load=loads)
    write_model(tmp_path, "shop/checkout", "v1", mtime=1_000_000)
    await registry.rescan()
    assert await registry.get("shop", "checkout") == '{"model_version": "v1"}'
    assert await registry.get("shop", "checkout") == '{"model_version": "v1"}'
    assert loads.calls == ["checkout"]  # loaded once
    assert threading.get_ident() not in loads.threads  # never on the event loop's thread
    # Retrained, and copied in with the very same file times: still seen as new.
    write_model(tmp_path, "shop/checkout", "v2", mtime=1_000_000)
    await registry.rescan()
    assert await registry.get("shop", "checkout") == '{"model_version": "v2"}'
    # Rewritten with the same content (a mirror's second pass): not loaded again.
    write_model(tmp_path, "shop/checkout", "v2")
    await registry.rescan()
    await registry.get("shop", "checkout")
    assert loads.calls == ["checkout", "checkout"]
    assert await registry.get("shop", "search") is None and not registry.has("other", "checkout")


async def test_no_more_than_max_loaded_stay_loaded(tmp_path: Path) -> None:
    loads = Loads()
    registry = ModelRegistry(tmp_path, load=loads, max_loaded=2)
    for name in ("a", "b", "c"):
        write_model(tmp_path, f"shop/{name}", "v1")
    await registry.rescan()
    for name in ("a", "b", "a", "c"):
        await registry.get("shop", name)
    assert registry.loaded() == 2
    await registry.get("shop", "a")  # a was used more recently than b: still loaded
    assert loads.calls == ["a", "b", "c"]
    await registry.get("shop", "b")  # b was evicted: loaded again
    assert loads.calls == ["a", "b", "c", "b"]


async def test_the_flat_layout_is_still_read(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, load=Loads())
    write_model(tmp_path, "checkout", "old")
    await asyncio.to_thread(registry.scan)
    assert registry.key_of("shop", "checkout") == "checkout"
    assert await registry.get("shop", "checkout") == '{"model_version": "old"}'


async def test_services_on_the_pooled_model_share_one_session(tmp_path: Path) -> None:
    """Real forecasters: three services on the pooled graph and one with its own hold two sessions."""
    pooled = train_pooled({"x": daily(9, 5.0, seed=1), "y": daily(9, 50.0, seed=2)}, config=FAST)
    write_pooled_dirs(pooled, {f"shop/s{i}": (tmp_path / "shop" / f"s{i}", 0.1 * (i + 1)) for i in range(3)})
    export_model(train(daily(9, 5.0, seed=3), service="own", config=FAST), tmp_path / "shop" / "own")
    registry = ModelRegistry(tmp_path)
    await registry.rescan()
    loaded = [await registry.get("shop", name) for name in ("s0", "s1", "s2", "own")]
    assert loaded[0].session is loaded[1].session is loaded[2].session
    assert loaded[3].session is not loaded[0].session and registry.sessions() == 2
    assert [f.spec.level_floor for f in loaded[:3]] == pytest.approx([0.1, 0.2, 0.3])
