# The README's commands and CI call these targets.
PYTHON ?= python

.PHONY: build lint test test-rust test-python bench demo fuzz

build:
	$(PYTHON) -m pip install -e .

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(PYTHON) -m ruff check python tests benches
	$(PYTHON) -m ruff format --check python tests benches
	$(PYTHON) -m mypy
	$(PYTHON) -m mypy.stubtest negmine._core --allowlist .stubtest-allowlist

test-rust:
	cargo test --workspace --exclude negmine-py

test-python:
	$(PYTHON) -m pytest -q

test: lint test-rust test-python

bench:
	$(PYTHON) benches/compare.py --write-readme

demo:
	negmine demo

# Not part of `test`: needs cargo-fuzz and a nightly toolchain.
fuzz:
	cd fuzz && cargo +nightly fuzz run npy_header corpus/npy_header seeds/npy_header -- \
		-dict=npy.dict -max_total_time=120
