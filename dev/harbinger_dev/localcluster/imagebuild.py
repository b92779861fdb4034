"""Harbinger's images built without Docker: a Debian rootfs from ``debootstrap``, Python
packages installed into it with pip, and Harbinger's own wheel, each an uncompressed layer
of an OCI image archive (:mod:`harbinger_dev.localcluster.images`) that ``ctr images import``
loads into a real node. The same images the ``Dockerfile``'s two targets describe:

- ``ghcr.io/harbinger-io/harbinger:<version>``: every component, with the ``train`` and
  ``plots`` extras (the in-cluster training job, the chaos report's plots);
- ``ghcr.io/harbinger-io/harbinger-sidecar:<version>``: the chaos sidecar, with only what
  ``harbinger chaos sidecar`` imports (``hack/sidecar-requirements.txt``).

The slow layers are cached outside the work tree (``~/.cache/harbinger/images``) under a key
of what went into them: the Debian layer by suite and packages (about 40 s to make), each
dependency layer by its requirements (a minute or two of downloads); Harbinger's own layer
is rebuilt every time (a few seconds), so an image always carries the code it was built from.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harbinger import __version__
from harbinger_dev import REPO_ROOT
from harbinger_dev.localcluster.errors import ClusterError
from harbinger_dev.localcluster.images import Image, ImageFile, write_oci_archive

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
#: Debian's python3 is 3.11 on bookworm: the wheels installed below are chosen for it.
DEBIAN_PACKAGES = ("python3", "python-is-python3", "ca-certificates")
PYTHON_TAG = "3.11"
SITE_PACKAGES = f"usr/local/lib/python{PYTHON_TAG}/dist-packages"
#: bookworm's glibc is 2.36: every manylinux tag up to it (pip takes the tags it is given literally).
WHEEL_PLATFORMS = (*(f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)),
                   "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64")
#: Bump when the recipe changes, so cached layers made by the old one are not reused.
RECIPE = 1

COMPONENTS_IMAGE = f"ghcr.io/harbinger-io/harbinger:{__version__}"
SIDECAR_IMAGE = f"ghcr.io/harbinger-io/harbinger-sidecar:{__version__}"
#: The extender's Deployment runs the upstream scheduler of the control plane's version.
SCHEDULER_IMAGE = "registry.k8s.io/kube-scheduler:v1.37.2"
#: Unprivileged, as the manifests' securityContext (runAsNonRoot) requires.
NONROOT = "65532:65532"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: What the rootfs does not need at run time: documentation, translations, apt's caches.
SLIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
        "var/cache/apt", "var/lib/apt/lists", "var/cache/debconf", "var/log")
#: The ``harbinger`` command: pip's own launcher would name the interpreter pip ran with.
LAUNCHER = b"#!/usr/bin/python3\nimport sys\n\nfrom harbinger.cli import main\n\nsys.exit(main())\n"


def cache_dir() -> Path:
    root = os.environ.get("HARBINGER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "harbinger")
    return Path(root) / "images"


@dataclass(frozen=True)
class Layer:
    """An uncompressed layer tar, and how much it unpacks to."""

    path: Path
    unpacked_bytes: int


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([RECIPE, *parts], default=str).encode()).hexdigest()[:16]


def _run(*argv: str, what: str) -> None:
    result = subprocess.run(list(argv), capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise ClusterError(f"{what} failed ({argv[0]} exited {result.returncode}):\n{tail}")


def _du(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _pack(stage: Path, out: Path) -> Layer:
    """``stage`` as a layer tar at ``out`` (written beside it first: a cache entry is whole
    or absent). Numeric owners, so the image needs no user database of the build machine."""
    size = _du(stage)
    partial = out.with_suffix(".partial")
    _run("tar", "--numeric-owner", "--xattrs", "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
         "-C", str(stage), "-cf", str(partial), ".", what=f"packing {out.name}")
    partial.rename(out)
    out.with_suffix(".json").write_text(json.dumps({"unpacked_bytes": size}))
    return Layer(out, size)


def _cached(name: str) -> Layer | None:
    path = cache_dir() / f"{name}.tar"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return Layer(path, int(json.loads(meta.read_text())["unpacked_bytes"]))
    return None


@contextmanager
def _stage(prefix: str) -> Iterator[Path]:
    cache_dir().mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=cache_dir()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def debian_layer(*, mirror: str = DEBIAN_MIRROR) -> Layer:
    """A minimal Debian with python3 (``debootstrap --variant=minbase``), slimmed."""
    name = f"debian-{DEBIAN_SUITE}-{_key(DEBIAN_SUITE, DEBIAN_PACKAGES, SLIM)}"
    if (layer := _cached(name)) is not None:
        return layer
    if shutil.which("debootstrap") is None:
        raise ClusterError("debootstrap is not installed; 'make setup' installs it (Debian's debootstrap package)")
    if os.geteuid() != 0:
        raise ClusterError("building the images' Debian layer needs root (debootstrap makes device files and chroots)")
    with _stage("debian-") as stage:
        rootfs = stage / "rootfs"
        # Its own mount namespace: the /proc and /sys debootstrap mounts into the rootfs
        # vanish with it, even if the build is killed half-way.
        _run("unshare", "--mount", "--propagation", "private", "debootstrap", "--variant=minbase",
             f"--include={','.join(DEBIAN_PACKAGES)}", DEBIAN_SUITE, str(rootfs), mirror,
             what=f"debootstrap of Debian {DEBIAN_SUITE} from {mirror}")
        for relative in SLIM:
            target = rootfs / relative
            if target.is_dir():
                for child in target.iterdir():
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        return _pack(rootfs, cache_dir() / f"{name}.tar")


def _pip_install(target: Path, *requirements: str, binary_only: bool = True) -> None:
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--no-input", "--target", str(target)]
    if binary_only:
        # The image's interpreter, not the one running pip: Debian's CPython 3.11 on glibc 2.36.
        argv += ["--only-binary=:all:", *(f"--platform={tag}" for tag in WHEEL_PLATFORMS),
                 "--python-version", PYTHON_TAG,
                 "--implementation", "cp", "--abi", f"cp{PYTHON_TAG.replace('.', '')}", "--abi", "abi3",
                 "--abi", "none"]
    _run(*argv, *requirements, what=f"pip install into {target.name}")
    # --target puts console scripts (shebangs of this machine's interpreter) beside the packages.
    shutil.rmtree(target / "bin", ignore_errors=True)


def dependencies_layer(name: str, requirements: Sequence[str]) -> Layer:
    """``requirements`` installed for the image's Python, as files under its site-packages."""
    wanted = sorted(requirements)
    key = f"deps-{name}-{_key(wanted, PYTHON_TAG, WHEEL_PLATFORMS)}"
    if (layer := _cached(key)) is not None:
        return layer
    with _stage(f"deps-{name}-") as stage:
        _pip_install(stage / SITE_PACKAGES, *wanted)
        return _pack(stage, cache_dir() / f"{key}.tar")


def harbinger_layer(wheel: Path, out: Path) -> Layer:
    """Harbinger's wheel (no dependencies: the layer below has them) and its command."""
    with _stage("harbinger-") as stage:
        _pip_install(stage / SITE_PACKAGES, "--no-deps", str(wheel), binary_only=False)
        launcher = stage / "usr/local/bin/harbinger"
        launcher.parent.mkdir(parents=True)
        launcher.write_bytes(LAUNCHER)
        launcher.chmod(0o755)
        return _pack(stage, out)


def build_wheel(out_dir: Path) -> Path:
    """Harbinger's wheel from this checkout, built offline with the venv's setuptools."""
    with _stage("wheel-") as stage:
        # A copy, so the build's own build/ and *.egg-info never land in the work tree.
        source = stage / "src"
        shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(
            ".git", ".venv", ".harbinger", "build", "*.egg-info", "__pycache__", ".*_cache", "bench", "tests", "dev"))
        _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
             "--wheel-dir", str(out_dir), str(source), what="building Harbinger's wheel")
    wheels = sorted(out_dir.glob(f"harbinger-{__version__}-*.whl"))
    if not wheels:
        raise ClusterError(f"no Harbinger wheel was built in {out_dir}")
    return wheels[-1]


def project_requirements(*extras: str) -> list[str]:
    """pyproject.toml's dependencies, and those of ``extras``."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    found = list(project["dependencies"])
    for extra in extras:
        found += project["optional-dependencies"][extra]
    return found


def sidecar_requirements() -> list[str]:
    lines = (REPO_ROOT / "hack" / "sidecar-requirements.txt").read_text().splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def harbinger_images(work: Path, *, mirror: str = DEBIAN_MIRROR) -> list[Image]:
    """The components image and the chaos sidecar's, from this checkout."""
    work.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(work)
    debian = debian_layer(mirror=mirror)
    app = harbinger_layer(wheel, work / "harbinger-layer.tar")
    layers = {"components": project_requirements("train", "plots"), "sidecar": sidecar_requirements()}
    return [Image(name, {}, ["harbinger"], env=[PATH_ENV], user=NONROOT,
                  layers=[debian.path, dependencies_layer(kind, layers[kind]).path, app.path])
            for name, kind in ((COMPONENTS_IMAGE, "components"), (SIDECAR_IMAGE, "sidecar"))]


def binary_image(name: str, program: Path, command: str) -> Image:
    """One static program as an image (kube-scheduler, CoreDNS): ``/usr/local/bin/<command>``."""
    return Image(name, {f"/usr/local/bin/{command}": ImageFile(program.resolve().read_bytes())},
                 [command], env=[PATH_ENV], user=NONROOT)


def installable_images(work: Path, scheduler: Path) -> list[Image]:
    """Every image ``manifests/`` names, from this checkout (``scheduler``: the kube-scheduler
    program, the control plane's own build of the version the manifests name)."""
    return [*harbinger_images(work), binary_image(SCHEDULER_IMAGE, scheduler, "kube-scheduler")]


def unpacked_size(image: Image) -> int:
    """Bytes the image unpacks to (its layers' files)."""
    total = sum(len(f.data) for f in image.files.values())
    for layer in image.layers:
        meta = layer.with_suffix(".json")
        total += int(json.loads(meta.read_text())["unpacked_bytes"]) if meta.exists() else layer.stat().st_size
    return total


# --- `harbinger images` -----------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("images"),
                        help="directory for the OCI image archives (default: ./images)")
    parser.add_argument("--mirror", default=DEBIAN_MIRROR,
                        help=f"Debian mirror for debootstrap (default {DEBIAN_MIRROR})")
    parser.add_argument("--json", action="store_true", help="print what was written as one JSON object")


def run(args: argparse.Namespace) -> int:
    """Write Harbinger's two images as OCI archives: ``ctr -n k8s.io images import`` loads one
    into a node's containerd; ``skopeo copy oci-archive:FILE docker://REGISTRY/...`` pushes it."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, dict[str, str | int]] = {}
    for image in harbinger_images(out / ".work", mirror=args.mirror):
        archive = out / (image.name.rsplit("/", 1)[1].replace(":", "_") + ".tar")
        write_oci_archive(image, archive)
        written[image.name] = {"archive": str(archive), "unpacked_bytes": unpacked_size(image),
                               "archive_bytes": archive.stat().st_size}
    shutil.rmtree(out / ".work", ignore_errors=True)
    if args.json:
        print(json.dumps({"images": written}))
    else:
        for name, facts in written.items():
            print(f"{name}: {facts['archive']} ({int(facts['unpacked_bytes']) / 2**20:.0f} MiB unpacked)")
    return 0
