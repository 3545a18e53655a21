# One entry point for developers and CI. `make test` works on a fresh clone:
# it creates .venv, builds the Rust extension, installs the Python
# dependencies (PyTorch included) and runs every test suite.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: test install develop rust-test py-test wheel-check bench lint demo clean

test: install rust-test py-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Editable install: maturin builds dycl._core in release mode.
install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"

# Rebuild only the extension after editing Rust (faster than `install`).
develop: $(BIN)/python
	$(BIN)/python -m pip install --quiet "maturin>=1.7,<2"
	$(BIN)/python -m pip install --quiet -e . --no-deps --no-build-isolation

rust-test:
	cargo test -p dycl-core --all-targets

py-test:
	$(BIN)/python -m pytest -q

# Build the abi3 wheel into dist/ and check that it installs and works without Rust, on another
# Python minor version (a fresh venv from pyenv; see .ci/wheel-check).
wheel-check: $(BIN)/python
	VENV_BIN=$(BIN) .ci/wheel-check

bench:
	cargo bench -p dycl-core
	$(BIN)/python benches/bench_metrics.py
	$(BIN)/python benches/bench_rerank.py

lint:
	cargo fmt --all -- --check
	$(BIN)/ruff check python tests benches
	$(BIN)/lint-imports

demo:
	$(BIN)/dycl-train --demo

clean:
	rm -rf target $(VENV) .pytest_cache dist
