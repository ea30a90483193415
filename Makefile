# One Makefile for people and CI alike.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .tools
ANVIL := $(TOOLS)/node_modules/.bin/anvil
SOLCJS := $(TOOLS)/node_modules/.bin/solcjs
export IOSWARM_ANVIL_BIN := $(abspath $(ANVIL))
export IOSWARM_SOLCJS_BIN := $(abspath $(SOLCJS))

# Debian tools the deploy tests run: command:package. Installed only when the command is missing.
DEB_TOOLS := nginx:nginx promtool:prometheus systemd-analyze:systemd chromium:chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: venv tools debs test demo bench lint proto clean conformance

venv: $(VENV)/.installed
tools: $(TOOLS)/.installed

$(VENV)/.installed: pyproject.toml setup.py ioswarm/_speedups.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(TOOLS)/.installed: Makefile
	mkdir -p $(TOOLS)
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) @foundry-rs/anvil@1.7.1 solc@0.8.37
	$(ANVIL) --version >/dev/null
	touch $@

# Idempotent: apt-get runs only for missing commands, and `apt-get update` only when apt
# does not know a missing package yet (fresh machine with empty package lists).
debs:
	@missing=""; \
	for pair in $(DEB_TOOLS); do \
		cmd=$${pair%%:*}; pkg=$${pair#*:}; \
		PATH="$$PATH:/usr/sbin:/sbin" command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-cache show $$missing >/dev/null 2>&1 || $(SUDO) apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: venv tools debs lint
	$(PY) -m pytest -q tests

demo: venv tools
	$(VENV)/bin/ioswarm demo --duration 60 --agents 4 --report-json demo-report.json

bench: venv tools
	$(PY) bench/run.py

lint: venv
	$(VENV)/bin/ruff check ioswarm cmd tests bench scripts contracts
	$(VENV)/bin/ruff format --check ioswarm cmd tests bench scripts contracts
	$(VENV)/bin/mypy ioswarm cmd/ioswarm_cli bench contracts

# The whole Cancun + Prague state-test set (IOSWARM_CONFORMANCE_FIXTURES or FIXTURES=... to move it).
conformance: venv
	$(VENV)/bin/ioswarm conformance $(if $(FIXTURES),--fixtures $(FIXTURES))

proto: venv
	$(PY) scripts/gen_proto.py

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache
