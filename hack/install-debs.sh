#!/usr/bin/env bash
# Installs the Debian packages Harbinger's tests and demo use: Prometheus (monitoring
# for the chaos controller, the forecaster's Prometheus input, the tests), wrk (the webhook
# benchmark's load generator), and for the local cluster's real nodes runc, the CNI plugins,
# iptables and conntrack, and debootstrap for the images they run (built without Docker).
# Skips what is already installed.
set -euo pipefail
packages=(prometheus wrk runc containernetworking-plugins iptables conntrack debootstrap)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && { echo "setup: Debian packages present (${packages[*]})"; exit 0; }

command -v apt-get >/dev/null 2>&1 || {
  echo "setup: apt-get not found; install these packages with your package manager: ${missing[*]}" >&2; exit 1; }
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "setup: installing ${missing[*]} needs root (or sudo)" >&2; exit 1; }
  sudo="sudo"
fi
echo "setup: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# --no-install-recommends: the prometheus package recommends node-exporter and others we never start.
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's postinst may start a system Prometheus on :9090 where an init system runs;
# Harbinger starts its own on free loopback ports, so that one is not needed.
echo "setup: installed ${missing[*]}"
