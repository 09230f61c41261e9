# siq: two commands on a fresh machine: `make firmware` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SIQ := $(VENV)/bin/siq
STAMP := $(VENV)/.installed
APT_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm dataset-fashion-mnist
OUT ?= out

.PHONY: setup toolchain firmware test bench reproduce clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory toolchain
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU wheel on this disk; the project itself only asks for torch>=2.2
	$(PY) -m pip install -q torch==2.13.0
	# cluster: Ray, so that the tests of the ray backend run (a plain install leaves it out)
	$(PY) -m pip install -q -e '.[dev,cluster]'
	touch $(STAMP)

# Debian packages: the Cortex-M cross compiler, QEMU and Fashion-MNIST (as root, only what is missing).
toolchain:
	@missing=""; \
	command -v arm-none-eabi-gcc >/dev/null || missing="$$missing gcc-arm-none-eabi libnewlib-arm-none-eabi"; \
	command -v qemu-system-arm >/dev/null || missing="$$missing qemu-system-arm"; \
	test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || missing="$$missing dataset-fashion-mnist"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "missing Debian packages:$$missing (run as root: apt-get install --no-install-recommends$$missing)"; exit 1; \
	  fi; \
	fi

firmware: setup
	$(SIQ) pipeline --out $(OUT) --force

# The suite's files run side by side on every core (a file's tests stay on one worker: module fixtures train once).
test: setup
	$(PY) -m pytest -q -n auto --dist loadfile host_tests

bench: setup
	$(PY) -m siq.codegen.bench --fashion --out $(OUT)/bench.json

# Every study in docs/studies (one question each, see docs/README.md): cells found in .siq_cache are only read,
# missing ones are computed (hours on 2 cores); rewrites docs/results and the reports, then the README's tables.
# The bench table is read from docs/results/bench.json: copy a new out/bench.json there to update it.
reproduce: setup
	$(SIQ) study run --cache-dir .siq_cache --jobs 2
	$(PY) -m siq.training.experiments.readme

clean:
	rm -rf $(OUT) build dist *.egg-info .pytest_cache .siq_cache
