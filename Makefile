# Two entry points, both from a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install only when the project's dependencies change, so llama-cpp-python
# (compiled from source, about 4 minutes on 2 cores) is not rebuilt needlessly.
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast check bench llama-server proto deb clean system-packages supernode-venv print-cmake-args

# llama.cpp's CPU code is compiled for the machine it is built on, except its AMX kernels:
# on CPUs with AMX (Xeon Sapphire Rapids and later) they fault with a general protection
# fault in ldtilecfg as soon as two models are loaded (a rollout's switch), seen here. On
# x86-64 the build targets AVX2 without AVX-512 or AMX instead; CMAKE_ARGS overrides this
# (e.g. a CUDA build: packaging/jetson/README.md).
LLAMA_PIN   := $(shell grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml | head -1)
CMAKE_ARGS  ?= $(if $(filter x86_64,$(shell uname -m)),-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
LLAMA_STAMP := $(VENV)/.llama-$(shell printf '%s %s' '$(LLAMA_PIN)' '$(CMAKE_ARGS)' | cksum | cut -d' ' -f1)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Compiled once per version and CMAKE_ARGS; --no-cache-dir, as pip's wheel cache ignores CMAKE_ARGS.
$(LLAMA_STAMP): | $(BIN)/python
	CMAKE_ARGS="$(CMAKE_ARGS)" $(BIN)/python -m pip install --no-cache-dir --force-reinstall --no-deps '$(LLAMA_PIN)'
	rm -f $(VENV)/.llama-*
	touch $@

$(STAMP): pyproject.toml $(LLAMA_STAMP)
	$(BIN)/python -m pip install -e '.[cpu,dev]'
	@$(MAKE) --no-print-directory supernode-venv
	touch $(STAMP)

# On a Python older than 3.11 (JetPack 6's 3.10) the agent runs its Flower SuperNode under a Python 3.11+ of
# its own, in .venv/supernode, where the agent finds it (docs/federated-learning.md). Built when such an
# interpreter is present (SUPERNODE_PYTHON overrides which); on 3.11+ nothing is needed.
SUPERNODE_PYTHON ?= $(shell for p in python3.13 python3.12 python3.11; do $$p -c '' 2>/dev/null && command -v $$p && break; done)
supernode-venv:
	@if $(BIN)/python -c 'import sys; sys.exit(sys.version_info >= (3, 11))'; then \
		if [ -n "$(SUPERNODE_PYTHON)" ]; then $(BIN)/edge-agent supernode-venv --python "$(SUPERNODE_PYTHON)"; \
		else echo "make: $(BIN)/python is older than 3.11 and no python3.11+ was found: this box does not take part in federated learning (edge-agent doctor says how)"; fi; \
	fi

# The llama.cpp build flags above, for scripts that build it elsewhere (the tests' Python 3.10 agent).
print-cmake-args:
	@echo '$(CMAKE_ARGS)'

# Debian packages the tests run for real, as package:command: HAProxy in front of central's replicas,
# Prometheus (and promtool) scraping the fleet, Chromium and ChromeDriver for the dashboard's browser tests.
# Installed when missing and make runs as root on Debian; otherwise said, and those tests skip (and fail
# under CI=true).
SYSTEM_PACKAGES := haproxy:haproxy prometheus:promtool chromium:chromium chromium-driver:chromedriver
system-packages:
	@missing="$$(for pc in $(SYSTEM_PACKAGES); do command -v $${pc#*:} >/dev/null || echo $${pc%%:*}; done)"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		else echo "make: not installed: $$missing (apt-get install $$missing); their tests skip"; fi; \
	fi

# A local fleet: central on loopback and one agent enrolled to it (see local_fleet/launcher.py).
run: $(STAMP)
	$(BIN)/python -m local_fleet $(ARGS)

test: $(STAMP) system-packages
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The inner loop: the unit tests only, under a minute on two cores.
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# Lint, format and types, configured in pyproject.toml; CI runs this before the tests.
check: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m mypy

bench: $(STAMP)
	$(BIN)/python bench/serve.py $(ARGS)

# llama.cpp's own server, the serving benchmark's peer, built with the agent's CMAKE_ARGS so both
# run the same CPU kernels (docs/benchmarks.md).
llama-server:
	CMAKE_ARGS="$(CMAKE_ARGS)" bench/build_llama_server.sh build/llama-server

# Regenerate edgefleet/v1/ from proto/ (a test fails when they drift apart).
proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

# Debian packages edgefleet-agent and edgefleet-central in dist/deb (packaging/deb/README.md);
# e.g. make deb DEB_ARGS="--version 0.1.1 agent". Needs dpkg-deb and python3-venv, not .venv.
deb:
	packaging/deb/build.sh $(DEB_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
