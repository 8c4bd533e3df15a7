# The README's commands and CI call these targets.
PYTHON ?= python

.PHONY: build lint test test-quick test-rust test-python bench demo fuzz wheel

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

# The Python tests of the core, the API and the CLI, in under 3 minutes on 2 cores: the tests
# marked `slow` (torchrun, Ray, the README's code blocks, writers killed at every step, the
# training example) are left to `make test`, which CI runs.
test-quick:
	$(PYTHON) -m pytest -q -m "not slow"

bench:
	$(PYTHON) benches/compare.py --write-readme

demo:
	negmine demo

# Not part of `test`: needs cargo-fuzz and a nightly toolchain.
fuzz:
	cd fuzz && cargo +nightly fuzz run npy_header corpus/npy_header seeds/npy_header -- \
		-dict=npy.dict -max_total_time=120
	cd fuzz && cargo +nightly fuzz run hnsw_index corpus/hnsw_index seeds/hnsw_index -- \
		-max_total_time=120
	cd fuzz && cargo +nightly fuzz run bm25_index corpus/bm25_index seeds/bm25_index -- \
		-max_total_time=120

# A releasable wheel in dist/: abi3 (one wheel for CPython 3.9+) and manylinux2014 (glibc
# 2.17). This machine's glibc is newer than that, so zig links against 2.17's symbols; then
# auditwheel must confirm the tag and a fresh virtual environment (no system packages, no
# PYTHONPATH) installs the wheel from dist/ and runs the demo. docs/release.md has the rest.
WHEEL_VENV ?= /tmp/negmine-wheel-venv

wheel:
	$(PYTHON) -m pip install 'maturin>=1.5,<2' ziglang auditwheel
	rm -f dist/negmine-*.whl
	$(PYTHON) -m maturin build --release --zig --compatibility manylinux2014 --out dist
	ls dist/negmine-*-cp39-abi3-manylinux*.whl
	auditwheel show dist/negmine-*.whl
	rm -rf $(WHEEL_VENV)
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/pip install --quiet dist/negmine-*.whl
	cd $(WHEEL_VENV) && env -u PYTHONPATH bin/negmine demo --source generated \
		--corpus-size 2000 --queries 50 > demo.log && tail -3 demo.log
	du -h dist/negmine-*.whl
