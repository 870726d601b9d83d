#!/usr/bin/env bash
# Installs everything smdfs needs on a fresh Debian 12 machine (idempotent):
# system libraries via apt, and a Python venv (.venv) with the reader-side tools
# used by the tests and benchmarks (numpy, h5py).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(pkg-config libhdf5-dev hdf5-tools fuse3 libfuse3-dev mpich libmpich-dev libclang-dev)
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
