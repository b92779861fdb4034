"""The image archives the real nodes import, and the recipe of Harbinger's two images (the
images themselves are built and run in tests/install/test_install.py)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from harbinger import __version__
from harbinger_dev.localcluster.imagebuild import (
    COMPONENTS_IMAGE,
    SIDECAR_IMAGE,
    project_requirements,
    sidecar_requirements,
)
from harbinger_dev.localcluster.images import Image, ImageFile, write_oci_archive


def layer_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def read_archive(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, bytes]]:
    with tarfile.open(path) as tar:
        blobs = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    index = json.loads(blobs["index.json"])

    def blob(digest: str) -> bytes:
        data = blobs[f"blobs/sha256/{digest.removeprefix('sha256:')}"]
        assert hashlib.sha256(data).hexdigest() == digest.removeprefix("sha256:")
        return data

    manifest = json.loads(blob(index["manifests"][0]["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    return index, manifest, config, {layer["digest"]: blob(layer["digest"]) for layer in manifest["layers"]}


def test_prepared_layers_stay_uncompressed_below_the_files_layer(tmp_path: Path) -> None:
    base, app = layer_tar({"etc/os-release": b"debian\n"}), layer_tar({"usr/local/bin/harbinger": b"#!/x\n"})
    (tmp_path / "base.tar").write_bytes(base)
    (tmp_path / "app.tar").write_bytes(app)
    image = Image("harbinger.local/test:1", {"/extra": ImageFile(b"x", 0o644)}, ["harbinger"],
                  env=["PATH=/usr/bin"], user="65532:65532", layers=[tmp_path / "base.tar", tmp_path / "app.tar"])
    index, manifest, config, layers = read_archive(write_oci_archive(image, tmp_path / "image.tar"))

    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "harbinger.local/test:1"
    media = [layer["mediaType"] for layer in manifest["layers"]]
    assert media == ["application/vnd.oci.image.layer.v1.tar"] * 2 + ["application/vnd.oci.image.layer.v1.tar+gzip"]
    blobs = list(layers.values())
    assert blobs[0] == base and blobs[1] == app
    # The config names each layer by the digest of its uncompressed content, bottom first.
    expected = [hashlib.sha256(data).hexdigest() for data in (base, app, gzip.decompress(blobs[2]))]
    assert [d.removeprefix("sha256:") for d in config["rootfs"]["diff_ids"]] == expected
    assert config["config"] == {"Entrypoint": ["harbinger"], "Env": ["PATH=/usr/bin"], "User": "65532:65532"}


def test_an_image_needs_a_tag_that_is_not_latest(tmp_path: Path) -> None:
    for name in ("harbinger.local/test", "harbinger.local/test:latest"):
        with pytest.raises(ValueError, match="needs a tag other than latest"):
            write_oci_archive(Image(name, {"/x": ImageFile(b"x")}, ["/x"]), tmp_path / "image.tar")


def test_the_two_images_carry_the_version_and_the_sidecar_no_training_or_plotting() -> None:
    assert COMPONENTS_IMAGE.endswith(f"/harbinger:{__version__}")
    assert SIDECAR_IMAGE.endswith(f"/harbinger-sidecar:{__version__}")

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower() for r in requirements}

    components = names(project_requirements("train", "plots"))
    assert {"scikit-learn", "skl2onnx", "onnxruntime", "matplotlib", "aiohttp"} <= components
    sidecar = names(sidecar_requirements())
    assert "aiohttp" in sidecar
    assert not sidecar & {"numpy", "scipy", "scikit-learn", "skl2onnx", "onnx", "onnxruntime", "matplotlib", "pandas"}
