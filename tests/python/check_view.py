"""Checks an smdfs view (a mount, or a plain copy of one) of the demo run against the formula.

Usage: check_view.py ROOT N [H5NAME] [--h5-only]

Reads ROOT/H5NAME with h5py (every dataset whole and sliced, dtypes, shapes, attributes,
fill values) and every ROOT/arrays/**/*.npy with np.load(mmap_mode='r'), and compares each
value with the demo formula of docs/ARCHITECTURE.md ("The demo run"). With --h5-only (a file written by
`smdfs export`, which has no arrays/) only H5NAME is read. Exits non-zero on the first
mismatch.
"""

import os
import sys

import h5py
import numpy as np

args = [a for a in sys.argv[1:] if a != "--h5-only"]
h5_only = len(args) < len(sys.argv) - 1
root, n = args[0], int(args[1])
h5name = args[2] if len(args) > 2 else "run.h5"

i = np.arange(n, dtype=np.int64)
hit = i[i % 5 == 0]
tags = [b"evt%d" % k for k in range(n)]
tag_len = np.array([len(t) for t in tags], dtype=np.uint64)
want = {
    "timestamp": (1000 + 3 * i).astype("<u8"),
    "energy": (i * 0.5).astype("<f8"),
    "det/image": ((i[:, None, None] + 8 * np.arange(4)[None, :, None] + np.arange(8)[None, None, :]) % 65536).astype("<u2"),
    "count": (-i).astype("<i8"),
    "maybe": np.where(i % 2 == 0, i, np.nan).astype("<f4"),
    "_present/maybe": (i % 2 == 0),
    "unaligned_hits": hit.astype("<u4"),
    "unaligned_hits_timestamp": (1000 + 3 * hit).astype("<u8"),
    "tag": np.frombuffer(b"".join(tags), dtype=np.uint8),
    "tag_len": tag_len,
    "tag_offsets": np.concatenate([[0], np.cumsum(tag_len)]).astype("<u8"),
}


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def check(name, got, exp):
    assert same(got, exp), f"{name}: got {np.asarray(got)!r}, want {np.asarray(exp)!r}"


with h5py.File(os.path.join(root, h5name), "r") as f:
    datasets = []
    # Every dataset except netCDF-4 dimensions without a variable (empty dimension scales such
    # as det/image_dim1, which name an axis and hold no data).
    dim_only = b"This is a netCDF dimension but not a netCDF variable."
    f.visititems(
        lambda p, o: datasets.append(p)
        if isinstance(o, h5py.Dataset) and not o.attrs.get("NAME", b"").startswith(dim_only)
        else None
    )
    expected = set(want) | {"summary/n_events", "summary/max_energy"}
    assert expected <= set(datasets), f"missing datasets: {expected - set(datasets)}"
    for p, exp in want.items():
        d = f[p]
        assert d.dtype == exp.dtype, f"{p}: dtype {d.dtype}, want {exp.dtype}"
        assert d.shape == exp.shape, f"{p}: shape {d.shape}, want {exp.shape}"
        check(p, d[...], exp)
        rows = exp.shape[0]
        if rows == 0:
            continue
        # Sliced reads go through libhdf5's partial I/O: ranges, steps, ends, fancy indices.
        for a, b in [(0, 1), (rows // 3, rows // 2 + 1), (rows - 1, rows), (max(rows - 7, 0), rows)]:
            check(f"{p}[{a}:{b}]", d[a:b], exp[a:b])
        check(f"{p}[::7]", d[::7], exp[::7])
        check(f"{p}[-1]", d[-1], exp[-1])
        idx = sorted({0, rows // 2, rows - 1})
        check(f"{p}[{idx}]", d[idx], exp[idx])
    img = f["det/image"]
    check("det/image[a:b, 1:3, 2:7]", img[n // 4 : n // 2, 1:3, 2:7], want["det/image"][n // 4 : n // 2, 1:3, 2:7])
    # Ragged rows through the offsets, as a reader would.
    offs = f["tag_offsets"][...]
    for k in sorted({0, n // 2, n - 1}) if n else []:
        got = bytes(f["tag"][offs[k] : offs[k + 1]])
        assert got == tags[k], f"tag row {k}: {got!r}"
    # Summary, root and field attributes, fill values.
    assert f["summary/n_events"][()] == n, f["summary/n_events"][()]
    if n:
        assert f["summary/max_energy"][()] == (n - 1) * 0.5, f["summary/max_energy"][()]
    assert int(f.attrs["events"]) == n, dict(f.attrs)
    assert f.attrs["state"] in ("complete", b"complete"), f.attrs["state"]
    e = f["energy"].attrs
    assert int(e["count"]) == n and int(e["missing"]) == 0, dict(e)
    if n:
        assert e["min"] == 0.0 and e["max"] == (n - 1) * 0.5, dict(e)
        assert abs(e["mean"] - (n - 1) * 0.25) < 1e-9 * max(n, 1), dict(e)
    assert int(f["maybe"].attrs["missing"]) == n // 2, dict(f["maybe"].attrs)
    assert np.isnan(f["energy"].fillvalue) and np.isnan(f["maybe"].fillvalue)
    assert f["count"].fillvalue == -99999, f["count"].fillvalue
    assert f["det/image"].fillvalue == 65535, f["det/image"].fillvalue

    # Every .npy is the dataset at the same path, memory-mapped.
    arrays = os.path.join(root, "arrays")
    if h5_only:
        assert not os.path.exists(arrays), f"{arrays} exists, but --h5-only says there are no arrays"
        print(f"ok: {len(datasets)} datasets, {n} events")
        sys.exit(0)
    npys = []
    for dirpath, _, files in os.walk(arrays):
        npys += [os.path.relpath(os.path.join(dirpath, x), arrays) for x in files if x.endswith(".npy")]
    want_npys = {p + ".npy" for p in datasets if not p.startswith("summary/")}
    assert set(npys) == want_npys, f"npy files {sorted(npys)}, want {sorted(want_npys)}"
    for rel in npys:
        a = np.load(os.path.join(arrays, rel), mmap_mode="r")
        p = rel[: -len(".npy")]
        assert isinstance(a, np.memmap), f"{rel} not memory-mapped"
        assert a.dtype == f[p].dtype and a.shape == f[p].shape, f"{rel}: {a.dtype} {a.shape} vs {f[p].dtype} {f[p].shape}"
        check(rel, a, f[p][...])
        if p in want:
            check(rel, a, want[p])

print(f"ok: {len(datasets)} datasets, {len(npys)} npy files, {n} events")
