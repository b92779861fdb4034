#!/usr/bin/env bash
# `make kind-up` / `make kind-down`: Harbinger in a kind cluster, for machines with Docker.
# (The development machines of this project have no Docker engine; they use the local
# control plane of `make cluster-up` and `make demo` instead.)
set -euo pipefail
cd "$(dirname "$0")/.."
image=harbinger:dev
sidecar=harbinger-sidecar:dev
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "kind: '$tool' is not installed; kind-up needs Docker, kind and kubectl" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "kind: no Docker engine is running; kind-up needs one" >&2; exit 1; }

case "${1:-}" in
  up)
    docker build --target components -t "$image" .
    docker build --target sidecar -t "$sidecar" .
    kind get clusters | grep -qx harbinger || kind create cluster --config hack/kind/config.yaml
    kind load docker-image "$image" "$sidecar" --name harbinger
    kubectl --context kind-harbinger apply -k manifests/overlays/kind
    echo "Harbinger is installed. Opt a namespace in: kubectl label namespace NAME harbinger.io/enabled=true"
    ;;
  down)
    kind delete cluster --name harbinger
    ;;
  *)
    echo "usage: hack/kind.sh up|down" >&2; exit 2 ;;
esac
