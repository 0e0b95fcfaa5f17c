# Two entry points, both from a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install only when the project's dependencies change, so llama-cpp-python
# (compiled from source, about 4 minutes on 2 cores) is not rebuilt needlessly.
STAMP  := $(VENV)/.installed

.PHONY: run test bench proto deb clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e '.[cpu,dev]'
	touch $(STAMP)

# A local fleet: central on loopback and one agent enrolled to it (see central/local_fleet.py).
run: $(STAMP)
	$(BIN)/python -m central.local_fleet $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/serve.py $(ARGS)

# Regenerate edgefleet/v1/ from proto/ (a test fails when they drift apart).
proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

# Debian packages edgefleet-agent and edgefleet-central in dist/deb (packaging/deb/README.md);
# e.g. make deb DEB_ARGS="--version 0.1.1 agent". Needs dpkg-deb and python3-venv, not .venv.
deb:
	packaging/deb/build.sh $(DEB_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
