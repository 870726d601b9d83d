#!/usr/bin/env bash
# Installs the Python peers that benches/older_tools_bench.rs compares with (PyPI
# `splitdataloader`, `bigarray`, `multitables` and h5py) into the project venv `.venv`, creating the venv if it is
# missing. Run from anywhere: `bash benches/peers/setup.sh`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
if [ ! -x .venv/bin/python ]; then
  echo "peers: creating .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
if .venv/bin/python -c 'import splitdataloader, bigarray, multitables, h5py, numpy' 2>/dev/null; then
  echo "peers: splitdataloader, bigarray, multitables, h5py and numpy already installed"
else
  echo "peers: installing benches/peers/requirements.txt into .venv"
  .venv/bin/pip install -q -r benches/peers/requirements.txt
fi
