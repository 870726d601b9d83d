"""Holds ROOT/run.h5 open with h5py while an smdfs run grows under it.

Usage: hold_open.py ROOT

Opens run.h5, reads every dataset, and prints `{"events": n}`. Then, for each line read from
stdin (the caller writes one once more commits are visible through the mount), reads every
dataset again through the same h5py file — each must be exactly what it read first — opens
run.h5 a second time, and prints `{"events": m}` for that fresh open, whose ids must be demo
ids in ascending order. Exits non-zero on the first difference.
"""

import json
import os
import sys

import h5py
import numpy as np

path = os.path.join(sys.argv[1], "run.h5")


def read_all(f):
    out = {}
    f.visititems(lambda p, o: out.__setitem__(p, o[...]) if isinstance(o, h5py.Dataset) else None)
    return out


def events(f):
    ids = f["timestamp"][...].astype(np.int64) if "timestamp" in f else np.zeros(0, np.int64)
    assert np.all((ids - 1000) % 3 == 0) and np.all(np.diff(ids) > 0), ids
    return len(ids)


held = h5py.File(path, "r")
first = read_all(held)
print(json.dumps({"events": events(held)}), flush=True)
for _ in sys.stdin:
    again = read_all(held)
    assert again.keys() == first.keys(), (sorted(again), sorted(first))
    for p, a in first.items():
        b = again[p]
        same = a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        assert same, f"{p} changed under an open file: {a!r} then {b!r}"
    with h5py.File(path, "r") as fresh:
        print(json.dumps({"events": events(fresh)}), flush=True)
held.close()
