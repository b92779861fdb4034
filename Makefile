# Harbinger: `make demo` runs the story on a real install on the local cluster, `make test` runs every test.
# Both set themselves up on a fresh machine (Python 3.11+, Go 1.26+, Debian's apt).

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup python debs controlplane test test-unit lint bench demo demo-replay cluster-up cluster-down images kind-up kind-down clean help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: python debs controlplane ## venv + project + dev tools, Debian packages, control-plane binaries

python: $(STAMP)
$(STAMP): pyproject.toml dev/pyproject.toml hack/setup-python.sh
	@hack/setup-python.sh

debs:
	@hack/install-debs.sh

controlplane:
	@hack/build-controlplane.sh

test: setup ## every test: unit and integration (real control plane, real Prometheus)
	$(PY) -m pytest

test-unit: python ## only the tests that need no control plane and no Prometheus
	$(PY) -m pytest -m "not integration"

lint: python ## ruff and mypy (strict)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: setup ## benchmarks; results in bench/results/
	$(PY) -m pip install --quiet -e '.[bench-unseen]'
	$(PY) bench/run.py

demo: setup ## the Harbinger story on a real install: images, a real node, kubectl apply -k manifests/ (root; ~7 min)
	$(PY) -m harbinger_dev.demo

demo-replay: setup ## a recorded day at 180x: KWOK nodes, Harbinger as host processes (~5 min)
	$(PY) -m harbinger_dev.demo --replay

REAL_NODES ?= 1
cluster-up: setup ## the local control plane, REAL_NODES (1) real nodes with Harbinger's images, a Prometheus (.harbinger/kubeconfig)
	$(VENV)/bin/harbinger cluster up --state-dir .harbinger --real-nodes $(REAL_NODES)

cluster-down: ## stop it
	@if [ -x $(VENV)/bin/harbinger ]; then $(VENV)/bin/harbinger cluster down --state-dir .harbinger; fi

images: python debs ## Harbinger's two images as OCI archives in images/, built without Docker (root, debootstrap)
	$(VENV)/bin/harbinger images --out images

kind-up: ## a kind cluster with Harbinger installed (needs Docker; not on this machine)
	hack/kind.sh up

kind-down:
	hack/kind.sh down

clean: cluster-down
	rm -rf .harbinger images .pytest_cache .mypy_cache .ruff_cache
