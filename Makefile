# Quick start: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench validate campaign clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/rmm demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-bench
	@for b in dark robust flat e2e quality counting scale; do $(BIN)/python benchmarks/bench_$$b.py || exit 1; done

# downstream check with a real spot finder (not part of `make test`): needs Debian's dials
# (apt-get install dials, ~4 minutes); masks reach DIALS the README's way (rmm export --to nexus,
# python -m rmm_dask.dials_mask, dials.import mask=); see benchmarks/validate_dials.py
validate: $(VENV)/.installed
	$(BIN)/python benchmarks/validate_dials.py
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_downstream.py

# the fault campaign of issue 13 (not part of `make test`): ~100 cases of bad input, hostile output
# paths, full and read-only filesystems, signals, the nightly service; root for the tmpfs cases
campaign: $(VENV)/.installed-test
	$(BIN)/python benchmarks/fault_campaign.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
