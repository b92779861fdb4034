"""Container images made here, since none can be pulled: an OCI image archive (the OCI image
layout, as a tar) from prepared layer tars and a few files, which ``ctr images import`` loads
into a real node's containerd under the name its ``io.containerd.image.name`` annotation gives.
Prepared layers stay uncompressed (they are loaded here, never pushed: gzip would only cost
time on both ends); the few files go into one gzipped layer on top."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ImageFile:
    data: bytes
    mode: int = 0o755


@dataclass(frozen=True)
class Image:
    #: The full reference, with a tag (never ``latest``): ``harbinger.local/pause:1``.
    name: str
    files: Mapping[str, ImageFile]
    entrypoint: list[str]
    env: list[str] = field(default_factory=list)
    user: str = ""
    #: Uncompressed layer tars below ``files``, bottom first (imagebuild.py makes them).
    layers: Sequence[Path] = ()


def _tar(files: Mapping[str, ImageFile]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories = sorted({str(Path(p).parent) for p in files} - {".", "/"})
        for directory in directories:
            info = tarfile.TarInfo(directory.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, item in sorted(files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(item.data), item.mode
            tar.addfile(info, io.BytesIO(item.data))
    return buffer.getvalue()


def _file_blob(tar: tarfile.TarFile, path: Path) -> dict[str, object]:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    tar.add(str(path), arcname=f"blobs/sha256/{digest.hexdigest()}")
    return {"digest": "sha256:" + digest.hexdigest(), "size": path.stat().st_size}


def _blob(tar: tarfile.TarFile, data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest.split(':')[1]}")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return {"digest": digest, "size": len(data)}


def write_oci_archive(image: Image, path: Path) -> Path:
    """The image as an OCI image layout tar at ``path``."""
    if ":" not in image.name.rsplit("/", 1)[-1] or image.name.endswith(":latest"):
        raise ValueError(f"image {image.name!r} needs a tag other than latest")
    small = _tar(image.files) if image.files else None
    config: dict[str, object] = {
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": image.entrypoint, "Env": image.env, **({"User": image.user} if image.user else {})},
    }
    with tarfile.open(path, "w") as tar:
        layers, diff_ids = [], []
        for prepared in image.layers:
            blob = _file_blob(tar, prepared)
            layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", **blob})
            diff_ids.append(blob["digest"])
        if small is not None:
            layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                           **_blob(tar, gzip.compress(small, mtime=0))})
            diff_ids.append("sha256:" + hashlib.sha256(small).hexdigest())
        config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
        config_blob = _blob(tar, json.dumps(config).encode())
        manifest = {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_blob},
            "layers": layers,
        }
        manifest_blob = _blob(tar, json.dumps(manifest).encode())
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest_blob,
            "annotations": {"io.containerd.image.name": image.name,
                            "org.opencontainers.image.ref.name": image.name.rsplit(":", 1)[1]}}]}
        for name, data in (("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
                           ("index.json", json.dumps(index).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
