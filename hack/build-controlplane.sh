#!/usr/bin/env bash
# Builds the local Kubernetes cluster that Harbinger's tests and demo run on:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet and kube-proxy
# (one multi-call binary from hack/controlplane), etcd (hack/etcd), KWOK, and for the real
# nodes containerd with its runc shim and ctr, and the pause and hello images' programs
# (hack/nodeimages), crictl, and CoreDNS for the real nodes' cluster DNS, into a cache outside the work tree keyed by version. Builds only what
# is missing, so a warm run takes a second.
#
#   hack/build-controlplane.sh            # build into $HARBINGER_BIN_DIR
#   hack/build-controlplane.sh --print    # print the bin dir and exit
set -euo pipefail

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
KWOK_VERSION=v0.8.0
CONTAINERD_VERSION=v2.4.2
COREDNS_VERSION=v1.15.0
CRICTL_VERSION=v1.37.0
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${HARBINGER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/harbinger}
bin_dir=${HARBINGER_BIN_DIR:-$cache_root/bin/$K8S_VERSION-etcd$ETCD_VERSION-kwok$KWOK_VERSION-containerd$CONTAINERD_VERSION}

if [[ "${1:-}" == "--print" ]]; then echo "$bin_dir"; exit 0; fi

die() { echo "build-controlplane: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "Go was not found on PATH. Install Go 1.26 or newer (https://go.dev/dl/) and run 'make setup' again."
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[[ "$go_minor" =~ ^[0-9]+$ && "$go_minor" -ge 26 ]] || die "Go $(go env GOVERSION) is too old: k8s.io/kubernetes $K8S_VERSION needs Go 1.26 or newer."

mkdir -p "$bin_dir"
export CGO_ENABLED=0 GOFLAGS=-mod=mod

# Downloading first gives one clear error when the module proxy is out of reach,
# instead of a compile error deep inside a 2,000-package build.
fetch() { # module-dir
  local log; log=$(mktemp)
  if ! (cd "$1" && go mod download -x >"$log" 2>&1); then
    tail -n 5 "$log" >&2; rm -f "$log"
    die "cannot download Go modules for $1 from the Go module proxy (GOPROXY=$(go env GOPROXY)). Check that the proxy is reachable from this machine."
  fi
  rm -f "$log"
}

build_step() { # name, then the command
  local name=$1; shift
  local start=$SECONDS
  echo "build-controlplane: building $name (first time only; about 6 min on 2 cores for Kubernetes)..."
  "$@" || die "building $name failed (see the Go output above)"
  echo "build-controlplane: built $name in $((SECONDS - start)) s"
}

if [[ ! -x "$bin_dir/controlplane" ]]; then
  fetch "$here/controlplane"
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=$(echo "$K8S_VERSION" | sed -E 's/^v([0-9]+)\..*/\1/')"
  ldflags+=" -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  build_step "kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy ($K8S_VERSION)" \
    bash -c "cd '$here/controlplane' && go build -trimpath -ldflags '$ldflags' -o '$bin_dir/controlplane.tmp' . && mv '$bin_dir/controlplane.tmp' '$bin_dir/controlplane'"
fi
for name in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
  ln -sf controlplane "$bin_dir/$name"
done

if [[ ! -x "$bin_dir/etcd" ]]; then
  fetch "$here/etcd"
  build_step "etcd ($ETCD_VERSION)" \
    bash -c "cd '$here/etcd' && go build -trimpath -ldflags '-s -w' -o '$bin_dir/etcd.tmp' . && mv '$bin_dir/etcd.tmp' '$bin_dir/etcd'"
fi

if [[ ! -x "$bin_dir/kwok" ]]; then
  # KWOK's go.mod has no replace directives, so `go install mod@version` is the
  # pinned, checksum-verified way to build it without a wrapper module.
  build_step "kwok ($KWOK_VERSION)" \
    bash -c "GOBIN='$bin_dir/.kwok' go install -trimpath -ldflags '-s -w' sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION && mv '$bin_dir/.kwok/kwok' '$bin_dir/kwok' && rmdir '$bin_dir/.kwok'"
fi

if [[ ! -s "$bin_dir/kwok-stages.yaml" ]]; then
  # KWOK runs no stage unless told; take the stages shipped with this very KWOK
  # version (node initialize + lease heartbeat, pod ready/complete/delete), so
  # nodes stay Ready and bound pods turn Running without a kubelet.
  stages=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage
  [[ -d "$stages" ]] || (cd "$here/etcd" && go mod download sigs.k8s.io/kwok@$KWOK_VERSION)
  {
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
             pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      echo "---"; cat "$stages/$f"
    done
  } > "$bin_dir/kwok-stages.yaml.tmp" || die "cannot read KWOK's stages from $stages"
  mv "$bin_dir/kwok-stages.yaml.tmp" "$bin_dir/kwok-stages.yaml"
fi

if [[ ! -x "$bin_dir/containerd" ]]; then
  # Kubernetes 1.36+ needs containerd 2.x (Debian's is 1.6). No cgo, no btrfs/devmapper/zfs
  # snapshotters: overlayfs is what the real nodes use.
  build_step "containerd ($CONTAINERD_VERSION)" \
    bash -c "GOBIN='$bin_dir/.containerd' go install -trimpath -ldflags '-s -w' -tags 'no_btrfs no_devmapper no_zfs' github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION && mv '$bin_dir/.containerd/'* '$bin_dir/' && rmdir '$bin_dir/.containerd'"
fi

if [[ ! -x "$bin_dir/coredns" || "$(cat "$bin_dir/coredns.version" 2>/dev/null)" != "$COREDNS_VERSION" ]]; then
  # Service names resolve in the real nodes' pods (prometheus.monitoring.svc and the like).
  # CoreDNS's go.mod has no replace directives: `go install mod@version` pins and verifies it.
  build_step "coredns ($COREDNS_VERSION)" \
    bash -c "GOBIN='$bin_dir/.coredns' go install -trimpath -ldflags '-s -w' github.com/coredns/coredns@$COREDNS_VERSION && mv '$bin_dir/.coredns/coredns' '$bin_dir/coredns' && rmdir '$bin_dir/.coredns'"
  echo "$COREDNS_VERSION" > "$bin_dir/coredns.version"
fi

if [[ ! -x "$bin_dir/crictl" || "$(cat "$bin_dir/crictl.version" 2>/dev/null)" != "$CRICTL_VERSION" ]]; then
  # For looking into a real node's containerd the way one does on any node
  # (crictl --runtime-endpoint unix:///run/containerd/containerd.sock, inside the node's namespaces).
  build_step "crictl ($CRICTL_VERSION)" \
    bash -c "GOBIN='$bin_dir/.crictl' go install -trimpath -ldflags '-s -w' sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION && mv '$bin_dir/.crictl/crictl' '$bin_dir/crictl' && rmdir '$bin_dir/.crictl'"
  echo "$CRICTL_VERSION" > "$bin_dir/crictl.version"
fi

for program in pause hello; do
  # Small programs of this repository: rebuilt when their source changes.
  source_sum=$(cat "$here/nodeimages/$program/"*.go | sha256sum | cut -d' ' -f1)
  if [[ ! -x "$bin_dir/$program" || "$(cat "$bin_dir/$program.sha256" 2>/dev/null)" != "$source_sum" ]]; then
    build_step "$program (the real nodes' $program image)" \
      bash -c "cd '$here/nodeimages' && go build -trimpath -ldflags '-s -w' -o '$bin_dir/$program.tmp' ./$program && mv '$bin_dir/$program.tmp' '$bin_dir/$program'"
    echo "$source_sum" > "$bin_dir/$program.sha256"
  fi
done

echo "build-controlplane: binaries ready in $bin_dir"
