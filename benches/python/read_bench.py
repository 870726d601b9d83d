"""Read benchmark: every dataset of the demo run read with ``smdfs.open`` beside h5py reading
the same values from a plain HDF5 file, printed side by side as ratios in one run.

Compared, for the same N-event demo run (DESIGN.md "Demo run"):

* ``smdfs``   — ``smdfs.open(run)[name][...]`` straight on the run directory (no mount): a
  read-only view of the shard's memory map where the rows lie contiguous in one shard, a
  parallel Rust gather otherwise;
* ``+copy``   — the same, forced into a fresh array (``np.array(...)``), so every byte is read;
* ``h5 plain``— h5py on a plain file written directly by h5py (contiguous datasets, the
  fastest layout h5py reads);
* ``h5 export``— h5py on ``smdfs export`` of the run (chunked, ~1 MiB chunks, no compression).

Two runs: one shard (1 server, 1 client: rows contiguous, zero-copy) and three shards with
events dealt round-robin to 4 clients (every row gathered). Timings are the best of
``--repeat`` after one warm-up read (page cache warm: this measures the read path, not the
disk). Ratios are h5py's time over smdfs's: above 1 means smdfs is faster. The goal of the
Python package issue is ≥ 1 against h5py on a plain file.

Usage: ``.venv/bin/python benches/python/read_bench.py [--events N] [--repeat R] [--dir D]``
(``SMDFS_BIN`` overrides ``target/release/smdfs``).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

import smdfs

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXED = ["timestamp", "energy", "det/image", "count", "maybe", "_present/maybe", "tag_len", "tag_offsets",
         "unaligned_hits_timestamp", "unaligned_hits"]


def best(f, repeat: int) -> float:
    """Best wall time of ``repeat`` calls after one warm-up call."""
    f()
    t = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        t = min(t, time.perf_counter() - t0)
    return t


def write_plain(path: pathlib.Path, n: int) -> None:
    """The demo's datasets written directly with h5py, contiguous (run.h5's names)."""
    i = np.arange(n, dtype=np.int64)
    h = i[i % 5 == 0]
    r, c = np.arange(4)[None, :, None], np.arange(8)[None, None, :]
    tags = np.char.add(b"evt", i.astype("S20"))
    lens = np.char.str_len(tags).astype(np.uint64)
    with h5py.File(path, "w") as f:
        f["timestamp"] = (1000 + 3 * i).astype(np.uint64)
        f["energy"] = i * 0.5
        f["det/image"] = ((i[:, None, None] + 8 * r + c) % 65536).astype(np.uint16)
        f["count"] = -i
        f["maybe"] = np.where(i % 2 == 0, i.astype(np.float32), np.float32(np.nan)).astype(np.float32)
        f["_present/maybe"] = i % 2 == 0
        f["tag"] = np.frombuffer(b"".join(tags.tolist()), dtype=np.uint8)
        f["tag_len"] = lens
        f["tag_offsets"] = np.concatenate([[0], np.cumsum(lens)]).astype(np.uint64)
        f["unaligned_hits_timestamp"] = (1000 + 3 * h).astype(np.uint64)
        f["unaligned_hits"] = h.astype(np.uint32)


def h5_tags(f) -> list:
    """The ragged ``tag`` as a list of bytes, the way an h5py user splits values by offsets."""
    v = f["tag"][:].tobytes()
    o = f["tag_offsets"][:].tolist()
    return [v[o[k]:o[k + 1]] for k in range(len(o) - 1)]


def cases(n: int, rng: np.random.Generator) -> list:
    """(label, smdfs read, h5py read) per measured read."""
    rows = np.sort(rng.choice(n, size=min(10_000, n), replace=False))
    a, b = n // 2 - n // 20, n // 2 + n // 20
    out = []
    for name in FIXED:
        out.append((f"{name}[:]", lambda r, k=name: r[k][:], lambda f, k=name: f[k][:]))
    for name in ["energy", "det/image"]:
        out.append((f"{name}[10% slice]", lambda r, k=name: r[k][a:b], lambda f, k=name: f[k][a:b]))
        out.append((f"{name}[10k rows]", lambda r, k=name: r[k][rows], lambda f, k=name: f[k][rows]))
    out.append(("tag[:] values", lambda r: r["tag"].values, lambda f: f["tag"][:]))
    out.append(("tag[:] as list", lambda r: r["tag"][:], h5_tags))
    return out


def batches_case(n: int, bs: int = 1024) -> tuple:
    """Event-order batches of energy + det/image + timestamp, as a training loop reads them."""
    names = ["timestamp", "energy", "det/image"]

    def s(r):
        for _ in r.iter_batches(names, bs, shuffle=False, prefetch=4):
            pass

    def h(f):
        ds = [f[k] for k in names]
        for a in range(0, n, bs):
            for d in ds:
                d[a:a + bs]

    return ("batches of 1024 (3 fields)", s, h)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    n = args.events
    binary = os.environ.get("SMDFS_BIN") or str(REPO / "target" / "release" / "smdfs")
    if not os.access(binary, os.X_OK):
        print(f"read_bench: no smdfs binary at {binary}: cargo build --release -p smdfs-cli", file=sys.stderr)
        return 2
    scratch = pathlib.Path(args.dir or tempfile.mkdtemp(prefix="smdfs-read-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    plain = scratch / "plain.h5"
    t0 = time.perf_counter()
    write_plain(plain, n)
    print(f"read_bench: {n} demo events; plain h5py file written in {time.perf_counter() - t0:.1f} s "
          f"({plain.stat().st_size / 1e6:.0f} MB); best of {args.repeat} after a warm-up, page cache warm")
    rng = np.random.default_rng(0)
    ok = True
    for servers, clients in [(1, 1), (3, 4)]:
        run_dir = scratch / f"run-s{servers}-c{clients}"
        export = scratch / f"export-s{servers}-c{clients}.h5"
        subprocess.run([binary, "demo", str(run_dir), "--events", str(n), "--servers", str(servers),
                        "--clients", str(clients), "--force"], check=True, capture_output=True)
        subprocess.run([binary, "export", str(run_dir), str(export)], check=True, capture_output=True)
        run = smdfs.open(run_dir)
        print(f"\nrun: {servers} shard(s), {clients} client(s) round-robin "
              f"({'rows contiguous: zero-copy views' if servers == 1 else 'rows interleaved: parallel gather'})")
        head = (f"{'read':<30} {'smdfs ms':>9} {'+copy ms':>9} {'h5 plain':>9} {'h5 export':>9}"
                f" {'plain/smdfs':>11} {'plain/+copy':>11} {'export/smdfs':>12}")
        print(head)
        print("-" * len(head))
        with h5py.File(plain, "r") as fp, h5py.File(export, "r") as fe:
            for label, s, h in cases(n, rng) + [batches_case(n)]:
                # Same values first: a benchmark of wrong answers is worthless.
                got, want = s(run), h(fp)
                if isinstance(want, np.ndarray) and not np.array_equal(np.asarray(got), want, equal_nan=True):
                    print(f"read_bench: {label}: smdfs and h5py disagree", file=sys.stderr)
                    ok = False
                ts = best(lambda: s(run), args.repeat)
                copy = best(lambda: np.array(s(run), copy=True) if isinstance(want, np.ndarray) else s(run),
                            args.repeat)
                tp = best(lambda: h(fp), args.repeat)
                te = best(lambda: h(fe), args.repeat)
                print(f"{label:<30} {ts * 1e3:>9.2f} {copy * 1e3:>9.2f} {tp * 1e3:>9.2f} {te * 1e3:>9.2f}"
                      f" {tp / ts:>10.1f}x {tp / copy:>10.1f}x {te / ts:>11.1f}x")
        run.close()
    if not args.dir:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
