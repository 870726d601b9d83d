"""Checks a mounted (possibly crashed) demo run through h5py and numpy: every event present
carries exactly the demo formula's values for its id. Prints the number of events checked.

Usage: python check_demo_subset.py MOUNTPOINT
"""
import sys

import h5py
import numpy as np

mnt = sys.argv[1]
f = h5py.File(f"{mnt}/run.h5", "r")
ts = f["timestamp"][:]
n = len(ts)
assert np.all((ts - 1000) % 3 == 0), "ids are demo ids"
assert np.all(np.diff(ts.astype(np.int64)) > 0), "ids ascend"
i = (ts - 1000) // 3
if n:
    assert np.array_equal(f["energy"][:], i * 0.5)
    assert np.array_equal(f["count"][:], -i.astype(np.int64))
    r = np.arange(4)[None, :, None]
    c = np.arange(8)[None, None, :]
    want = ((i[:, None, None] + 8 * r + c) % 65536).astype(np.uint16)
    assert np.array_equal(f["det/image"][:], want)
    even = i % 2 == 0
    # A run killed before any even event committed has no `maybe` field at all.
    if "maybe" in f:
        maybe = f["maybe"][:]
        assert np.array_equal(maybe[even], i[even].astype(np.float32))
        assert np.all(np.isnan(maybe[~even]))
        if "_present" in f:
            assert np.array_equal(f["_present/maybe"][:], even)
    else:
        assert not np.any(even)
    tag = f["tag"][:].tobytes()
    offs = f["tag_offsets"][:]
    for k in range(n):
        assert tag[offs[k]:offs[k + 1]] == f"evt{i[k]}".encode(), k
    arr = np.load(f"{mnt}/arrays/energy.npy", mmap_mode="r")
    assert np.array_equal(arr, i * 0.5)
if "unaligned_hits" in f:
    hits = f["unaligned_hits"][:]
    hid = (f["unaligned_hits_timestamp"][:] - 1000) // 3
    assert np.all(hid % 5 == 0) and np.array_equal(hits, hid.astype(np.uint32))
print(n)
