#!/usr/bin/env bash
# Installs the Python peers that benches/older_tools_bench.rs and benches/mpi_bench.rs compare with (PyPI
# `splitdataloader`, `bigarray`, `multitables`, h5py; mpi4py, adios2) into the project venv `.venv`, creating the venv if it is
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
# The MPI benchmark's peers (benches/mpi_bench.rs): mpi4py + h5py and ADIOS2. mpi4py's PyPI
# wheel finds Debian's MPICH as libmpi.so.12 through a link in .venv/mpich-abi.
mkdir -p .venv/mpich-abi
for d in /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib; do
  if [ -e "$d/libmpich.so.12" ]; then ln -sf "$d/libmpich.so.12" .venv/mpich-abi/libmpi.so.12; break; fi
done
if LD_LIBRARY_PATH=.venv/mpich-abi .venv/bin/python -c 'import mpi4py.MPI, h5py, adios2, numpy' 2>/dev/null; then
  echo "peers: mpi4py, h5py, adios2 and numpy already installed"
else
  echo "peers: installing benches/peers/mpi_requirements.txt into .venv"
  .venv/bin/pip install -q -r benches/peers/mpi_requirements.txt
fi
