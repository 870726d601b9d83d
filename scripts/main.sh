#!/usr/bin/env bash
# The main job: install what smdfs needs, build it, write the demo run (1,000,000 events,
# 2 server threads, 4 client threads) and show what `smdfs info` says of it.
# Usage: scripts/main.sh [OUT_DIR]   (default: ./out)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-out}
cargo build --release -p smdfs-cli
SMDFS=target/release/smdfs
"$SMDFS" demo "$OUT" --events 1000000 --servers 2 --clients 4 --force
"$SMDFS" info "$OUT"
