"""Reads an smdfs mount of a demo run while the run is being written, and checks what it sees.

Usage: live_reader.py ROOT N [TIMEOUT_S]

Loops until ROOT/run.h5 says `complete` with N events, or TIMEOUT_S (default 60) pass. Each
pass opens run.h5 with h5py and reads /timestamp and every demo field, then opens
arrays/timestamp.npy, arrays/energy.npy and arrays/det/image.npy with np.load(mmap_mode='r').
Within one open file every value must be the demo formula's for its event id (docs/ARCHITECTURE.md "The demo
run"): ids are demo ids, strictly ascending, and every aligned field, mask, ragged row and the
unaligned group agree with them. The number of events each file shows never decreases from one
pass to the next. Prints `{"events": n}` (flushed) each time run.h5 shows a new event count, so
a caller can wait until the reader has seen what it wrote; at the end one JSON line: passes,
the distinct event counts run.h5 showed, and the seconds until the first complete view. Exits
non-zero on the first violation.
"""

import json
import os
import sys
import time

import h5py
import numpy as np

root, n_final = sys.argv[1], int(sys.argv[2])
timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0


def demo_i(ids, what):
    """The demo event numbers of event ids `ids`, which must be demo ids, strictly ascending."""
    ids = np.asarray(ids, dtype=np.int64)
    assert np.all(ids >= 1000) and np.all((ids - 1000) % 3 == 0), f"{what}: not demo ids: {ids[:20]}"
    assert np.all(np.diff(ids) > 0), f"{what}: ids not strictly ascending"
    return (ids - 1000) // 3


def image(i):
    r = np.arange(4)[None, :, None]
    c = np.arange(8)[None, None, :]
    return ((i[:, None, None] + 8 * r + c) % 65536).astype("<u2")


def eq(name, got, want):
    got, want = np.asarray(got), np.asarray(want)
    ok = got.shape == want.shape and np.array_equal(got, want, equal_nan=got.dtype.kind == "f")
    assert ok, f"{name}: got {got!r}, want {want!r}"


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def check_h5(path):
    """Checks one open of run.h5; returns (events, unaligned rows, state)."""
    with h5py.File(path, "r") as f:
        state = text(f.attrs["state"])
        assert state in ("writing", "complete"), state
        if "timestamp" not in f:
            assert int(f.attrs["events"]) == 0, dict(f.attrs)
            return 0, 0, state
        i = demo_i(f["timestamp"][...], "/timestamp")
        n = len(i)
        assert int(f.attrs["events"]) == n, (dict(f.attrs), n)
        if "energy" in f:
            eq("energy", f["energy"][...], i * 0.5)
            eq("count", f["count"][...], -i)
            eq("det/image", f["det/image"][...], image(i))
            offs = f["tag_offsets"][...]
            tag = f["tag"][...].tobytes()
            assert len(offs) == n + 1 and offs[0] == 0, offs
            for k in range(n):
                got = tag[offs[k] : offs[k + 1]]
                assert got == b"evt%d" % i[k], f"tag row {k}: {got!r} for event {i[k]}"
            eq("tag_len", f["tag_len"][...], np.diff(offs))
        else:
            assert n == 0, f"{n} events but no energy"
        if "maybe" in f:
            maybe = f["maybe"][...]
            even = i % 2 == 0
            if "_present/maybe" in f:
                eq("_present/maybe", f["_present/maybe"][...], even)
            else:
                assert np.all(even), "rows without maybe but no presence mask"
            eq("maybe (present)", maybe[even], i[even].astype("<f4"))
            assert np.all(np.isnan(maybe[~even])), "maybe fill is not NaN"
        hits = 0
        if "unaligned_hits" in f:
            hi = demo_i(f["unaligned_hits_timestamp"][...], "/unaligned_hits_timestamp")
            assert np.all(hi % 5 == 0), hi
            eq("unaligned_hits", f["unaligned_hits"][...], hi.astype("<u4"))
            hits = len(hi)
        if state == "complete":
            assert f["summary/n_events"][()] == n, f["summary/n_events"][()]
        return n, hits, state


def check_npy(rel):
    """Checks one open of arrays/REL on its own; returns its rows (None while it does not exist)."""
    path = os.path.join(root, "arrays", rel)
    if not os.path.exists(path):
        return None
    a = np.load(path, mmap_mode="r")
    assert isinstance(a, np.memmap), f"{rel} not memory-mapped"
    if rel == "timestamp.npy":
        demo_i(a, rel)
    elif rel == "energy.npy":
        i = np.asarray(a) * 2
        assert np.all(i == np.round(i)) and np.all(np.diff(i) > 0), f"{rel}: {a[:20]}"
    elif rel == "det/image.npy":
        i = np.asarray(a[:, 0, 0]).astype(np.int64)
        assert np.all(np.diff(i) > 0), f"{rel}: rows not ascending"
        eq(rel, a, image(i))
    return a.shape[0]


last = {"run.h5": 0, "hits": 0}
counts = set()
passes = 0
start = time.monotonic()
complete_after = None
while True:
    elapsed = time.monotonic() - start
    n, hits, state = check_h5(os.path.join(root, "run.h5"))
    assert n >= last["run.h5"], f"run.h5 went from {last['run.h5']} to {n} events"
    assert hits >= last["hits"], f"unaligned_hits went from {last['hits']} to {hits} rows"
    if n not in counts:
        print(json.dumps({"events": n}), flush=True)
    last["run.h5"], last["hits"] = n, hits
    counts.add(n)
    for rel in ("timestamp.npy", "energy.npy", "det/image.npy"):
        rows = check_npy(rel)
        if rows is not None:
            assert rows >= last.get(rel, 0), f"{rel} went from {last[rel]} to {rows} rows"
            last[rel] = rows
    passes += 1
    if state == "complete":
        assert n == n_final, f"complete with {n} events, want {n_final}"
        complete_after = elapsed
        break
    assert elapsed < timeout, f"no complete view after {timeout} s (last: {n} events, {state})"
    time.sleep(0.02)

print(json.dumps({"passes": passes, "counts": sorted(counts), "complete_after": complete_after}))
