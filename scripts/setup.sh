#!/usr/bin/env bash
# Installs everything smdfs needs on a fresh Debian 12 machine (idempotent):
# system libraries via apt, and a Python venv (.venv) with the reader-side tools
# used by the tests and benchmarks (numpy, h5py), and the smdfs Python package built from python/.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(pkg-config libhdf5-dev hdf5-tools fuse3 libfuse3-dev mpich libmpich-dev libclang-dev python3-venv strace)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import numpy, h5py' 2>/dev/null; then
  echo "setup: creating .venv with numpy and h5py"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r scripts/requirements.txt
fi

# The MPI benchmark's Python peer (benches/mpi_bench.rs): mpi4py's PyPI wheel runs against
# Debian's MPICH once libmpich.so.12 is reachable as libmpi.so.12 (a link in
# .venv/mpich-abi, put on LD_LIBRARY_PATH by the benchmark). Never Debian's python3-mpi4py:
# it pulls Open MPI and switches the system's mpirun away from MPICH.
mkdir -p .venv/mpich-abi
for d in /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib; do
  if [ -e "$d/libmpich.so.12" ]; then ln -sf "$d/libmpich.so.12" .venv/mpich-abi/libmpi.so.12; break; fi
done
if ! LD_LIBRARY_PATH=.venv/mpich-abi .venv/bin/python -c 'import mpi4py.MPI' 2>/dev/null; then
  echo "setup: installing mpi4py into .venv (MPI benchmark peer)"
  .venv/bin/pip install -q -r benches/peers/mpi_requirements.txt
fi

# The Python package (python/, issue 11): built by maturin in release mode with MPI mode
# compiled in (feature `mpi`, see python/pyproject.toml) and installed into .venv. maturin
# builds in the workspace's target/ with the release profile, so the Rust code it shares with
# the rest of the suite is compiled once. Rebuilt only when its sources (or the core crate's)
# changed since the last install.
if ! .venv/bin/python -c 'import maturin, pytest' 2>/dev/null; then
  echo "setup: installing maturin and pytest into .venv"
  .venv/bin/pip install -q "maturin>=1.16,<2" "pytest>=8"
fi
# The readers the tests use: the Python package's (xarray, dask) and the view's ecosystem
# (h5netcdf, netCDF4, zarr, kerchunk). Installed again only when a list changed.
for reqs in python/requirements-test.txt scripts/requirements-view.txt; do
  stamp=".venv/.smdfs-reqs-$(basename "$(dirname "$reqs")")-$(basename "$reqs" .txt)"
  if [ -f "$reqs" ] && { [ ! -f "$stamp" ] || [ "$reqs" -nt "$stamp" ]; }; then
    echo "setup: installing $reqs into .venv"
    .venv/bin/pip install -q -r "$reqs" && touch "$stamp"
  fi
done
STAMP=.venv/.smdfs-python-built
if [ ! -f "$STAMP" ] || ! .venv/bin/python -c 'import smdfs' 2>/dev/null \
  || [ -n "$(find python/src python/smdfs python/Cargo.toml python/pyproject.toml core/src core/Cargo.toml Cargo.toml Cargo.lock -newer "$STAMP" -type f -print -quit)" ]; then
  echo "setup: building the smdfs Python package into .venv (maturin, release, MPI mode)"
  PATH="$PWD/.venv/bin:$PATH" .venv/bin/pip install -q --no-build-isolation --force-reinstall --no-deps ./python
  touch "$STAMP"
fi
