#!/usr/bin/env bash
# Creates .venv and installs Harbinger with its dev, benchmark, training and plotting extras, and the
# development harness (dev/, the harbinger-dev distribution).
set -euo pipefail
venv=${VENV:-.venv}
python=${PYTHON:-python3}

command -v "$python" >/dev/null 2>&1 || { echo "setup: $python not found; Harbinger needs Python 3.11 or newer" >&2; exit 1; }
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: $("$python" --version 2>&1) is too old; Harbinger needs Python 3.11 or newer (set PYTHON=...)" >&2; exit 1; }

[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e '.[dev,bench,train,plots]'
# The development harness (local control plane, demo, traces) is its own distribution,
# so that Harbinger's wheel and image carry none of it.
"$venv/bin/python" -m pip install --quiet --no-deps -e ./dev
touch "$venv/.installed"
echo "setup: Python environment ready in $venv"
