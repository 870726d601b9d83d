#!/usr/bin/env bash
# The whole test suite: install what the tests need (system libraries, a Python venv with
# h5py and numpy, the smdfs Python package), then formatting, lints, and every test in
# release mode (one build, reused by the integration tests and the benchmarks' compile
# check), then the Python package's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export SMDFS_PYTHON="$PWD/.venv/bin/python"
export SMDFS_REQUIRE_TOOLS=1  # a test lacking FUSE, root, h5dump, the .venv Python, mpirun or strace fails, never skips
cargo fmt --all -- --check
# One feature set for everything (all features: MPI mode and its mpirun tests included), so
# clippy and the tests share one release build.
cargo clippy --workspace --all-targets --release --all-features -- -D warnings
cargo test --workspace --release --all-features
# The Python package (python/tests, pytest): the extension setup.sh built into .venv, real
# mpirun ranks, h5py reading the exported files. `set -e` makes a failing test fail the suite.
.venv/bin/python -m pytest python/tests -q
