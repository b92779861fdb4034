"""Where the control-plane binaries are, as ``hack/build-controlplane.sh`` put them."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harbinger_dev import REPO_ROOT
from harbinger_dev.localcluster.errors import ClusterError

if TYPE_CHECKING:
    from harbinger_dev.localcluster.node import NodeBinaries

BUILD_SCRIPT = REPO_ROOT / "hack" / "build-controlplane.sh"
NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl")


@dataclass(frozen=True)
class Binaries:
    dir: Path

    def __getitem__(self, name: str) -> str:
        return str(self.dir / name)

    @property
    def kwok_stages(self) -> Path:
        return self.dir / "kwok-stages.yaml"

    def node(self) -> NodeBinaries:
        """What a real node runs (kubelet, containerd, the pause and hello programs)."""
        from harbinger_dev.localcluster.node import NodeBinaries

        return NodeBinaries.find(self.dir)


def find_binaries() -> Binaries:
    """``$HARBINGER_BIN_DIR``, else the build script's versioned cache directory."""
    explicit = os.environ.get("HARBINGER_BIN_DIR")
    if explicit:
        directory = Path(explicit)
    elif BUILD_SCRIPT.exists():
        out = subprocess.run([str(BUILD_SCRIPT), "--print"], capture_output=True, text=True, check=True)
        directory = Path(out.stdout.strip())
    else:
        raise ClusterError("HARBINGER_BIN_DIR is not set and hack/build-controlplane.sh is not here")
    missing = [n for n in NAMES if not (directory / n).exists()]
    if not (directory / "kwok-stages.yaml").exists():
        missing.append("kwok-stages.yaml")
    if missing:
        raise ClusterError(
            f"control-plane binaries missing in {directory}: {', '.join(missing)}. Run 'make setup' "
            "(it builds them once with Go into that cache)."
        )
    return Binaries(directory)
