#!/usr/bin/env bash
# The main job: install what smdfs needs, build it, write the demo run (1,000,000 events,
# 2 server threads, 4 client threads), show what `smdfs info` says of it, then mount it and
# show `h5ls -r` of the mounted run.h5 (unmounted at the end); then the Python example
# (python/examples/smalldata_example.py) serially and under `mpirun -n 4`, printing what it wrote.
# Usage: scripts/main.sh [OUT_DIR [MOUNTPOINT]]   (defaults: ./out, ./view)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-out}
MNT=${2:-view}
cargo build --release -p smdfs-cli
SMDFS=target/release/smdfs
"$SMDFS" demo "$OUT" --events 1000000 --servers 2 --clients 4 --force
"$SMDFS" info "$OUT"
mkdir -p "$MNT"
"$SMDFS" mount "$OUT" "$MNT"
trap '"$SMDFS" umount "$MNT"' EXIT
echo "--- h5ls -r $MNT/run.h5"
h5ls -r "$MNT/run.h5"
echo "--- ls -R $MNT/arrays"
ls -lR "$MNT/arrays"

# The Python writer (README "A Python writer"): the same loop serially and under mpirun.
echo "--- python: .venv/bin/python python/examples/smalldata_example.py $OUT-py.h5"
.venv/bin/python python/examples/smalldata_example.py "$OUT-py.h5" 100000
echo "--- python: mpirun -n 4 .venv/bin/python python/examples/smalldata_example.py $OUT-py-mpi.h5"
LD_LIBRARY_PATH="$PWD/.venv/mpich-abi${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  mpirun -n 4 .venv/bin/python python/examples/smalldata_example.py "$OUT-py-mpi.h5" 100000
