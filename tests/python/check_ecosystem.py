"""Reads a mounted demo run (ROOT = the mount point) the ways the ecosystem does and checks
every value against h5py's reading of ROOT/run.h5 (itself checked against the demo formula of
docs/ARCHITECTURE.md): h5py dimension scales and fill values; xarray with h5netcdf and with
netCDF4 (shared `timestamp` coordinate, `.sel` by timestamp, open_datatree over the groups);
kerchunk references -> xarray; zarr-python, xr.open_zarr, open_datatree and dask on
ROOT/run.zarr; and, given EXPORTED, a Zarr tree written by `smdfs export --format zarr`.

usage: check_ecosystem.py ROOT N [EXPORTED]   (prints "ok: ..." or fails with the reason)
"""

import gc
import os
import sys
import tempfile

import numpy as np
import h5py
import xarray as xr
import zarr
import dask.array as da

root, n = sys.argv[1], int(sys.argv[2])
exported = sys.argv[3] if len(sys.argv) > 3 else None
h5 = os.path.join(root, "run.h5")
zroot = os.path.join(root, "run.zarr")
i = np.arange(n)
ids = (1000 + 3 * i).astype("u8")
NETCDF_DIM = b"This is a netCDF dimension but not a netCDF variable."


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def check(what, got, want, dtype=True):
    got, want = np.asarray(got), np.asarray(want)
    assert same(got, want), f"{what}: got {got!r}, want {want!r}"
    if dtype:
        assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, want {want.dtype}"


# --- h5py: the reference values, dimension scales, fill values, attributes -----------------
f = h5py.File(h5, "r")
ref, dims = {}, {}


def collect(name, o):
    if not isinstance(o, h5py.Dataset):
        return
    if o.attrs.get("NAME", b"").startswith(NETCDF_DIM):
        return  # a dimension without a variable
    ref[name] = o[()]
    if h5py.h5ds.is_scale(o.id):  # a coordinate variable: its own dimension
        dims[name] = (name.rsplit("/", 1)[-1],)
        return
    dims[name] = tuple(o.dims[k][0].name.rsplit("/", 1)[-1] for k in range(o.ndim) if len(o.dims[k]) == 1)
    assert len(dims[name]) == o.ndim, f"{name}: axes without a dimension scale"


f.visititems(collect)
image = ((i[:, None, None] + 8 * np.arange(4)[None, :, None] + np.arange(8)[None, None, :]) % 65536).astype("u2")
check("timestamp", ref["timestamp"], ids)
check("energy", ref["energy"], i * 0.5)
check("count", ref["count"], -i)
check("det/image", ref["det/image"], image)
check("maybe", ref["maybe"], np.where(i % 2 == 0, i, np.nan).astype("f4"))
check("_present/maybe", ref["_present/maybe"], i % 2 == 0)
check("unaligned_hits", ref["unaligned_hits"], i[i % 5 == 0].astype("u4"))
check("unaligned_hits_timestamp", ref["unaligned_hits_timestamp"], ids[i % 5 == 0])
tags = [f"evt{k}".encode() for k in range(n)]
check("tag_len", ref["tag_len"], np.array([len(t) for t in tags], "u8"))
check("tag", ref["tag"], np.frombuffer(b"".join(tags), "u1"))

want_dims = {
    "timestamp": ("timestamp",),
    "energy": ("timestamp",),
    "count": ("timestamp",),
    "maybe": ("timestamp",),
    "_present/maybe": ("timestamp",),
    "tag_len": ("timestamp",),
    "det/image": ("timestamp", "image_dim1", "image_dim2"),
    "tag": ("tag_dim0",),
    "tag_offsets": ("tag_offsets_dim0",),
    "unaligned_hits": ("unaligned_hits_timestamp",),
    "unaligned_hits_timestamp": ("unaligned_hits_timestamp",),
}
for p, d in want_dims.items():
    assert dims[p] == d, f"h5py {p}.dims: {dims[p]}, want {d}"
assert f["det/image"].dims[0][0] == f["timestamp"], "det/image axis 0 is not /timestamp"

# One truth for fills: the property is the manifest's, `_FillValue` only where rows can miss.
fills = {"count": -99999, "det/image": 65535, "unaligned_hits": 0xFFFFFFFF, "tag": 0xFF}
for p, v in fills.items():
    assert f[p].fillvalue == v, f"{p}: HDF5 fill {f[p].fillvalue}, manifest {v}"
    assert "_FillValue" not in f[p].attrs, f"{p} has no missing rows but declares _FillValue"
assert np.isnan(f["energy"].fillvalue) and np.isnan(f["maybe"].fillvalue)
for p in ["timestamp", "tag_len", "tag_offsets", "_present/maybe", "energy"]:
    assert "_FillValue" not in f[p].attrs, f"{p} declares _FillValue"
assert np.isnan(f["maybe"].attrs["_FillValue"]) and f["maybe"].attrs["_FillValue"].dtype == np.float32
assert f["maybe"].attrs["ancillary_variables"] == "/_present/maybe", dict(f["maybe"].attrs)
m = f["_present/maybe"].attrs
assert list(m["flag_values"]) == [False, True] and m["flag_meanings"] == "missing present", dict(m)
for p in ["tag_len", "tag_offsets", "_present/maybe", "summary/n_events", "timestamp"]:
    assert "long_name" in f[p].attrs, f"{p} has no long_name"
assert f["tag_len"].attrs["sample_dimension"] == "tag_dim0"


def compare_tree(label, get, exact_bool=True):
    """Every reference dataset read through `get(path)` equals h5py's reading."""
    for p, want in ref.items():
        got = get(p)
        if want.dtype == bool and not exact_bool:
            check(f"{label} {p}", np.asarray(got).astype(bool), want)
        else:
            check(f"{label} {p}", got, want)


def node_var(tree, p):
    group, _, name = p.rpartition("/")
    return (tree[group] if group else tree)[name]


# --- xarray through h5netcdf and netCDF4 ----------------------------------------------------
for engine in ["h5netcdf", "netcdf4"]:
    ds = xr.open_dataset(h5, engine=engine)
    assert "timestamp" in ds.indexes, f"{engine}: timestamp is not an index: {ds}"
    for v in ["energy", "count", "maybe", "tag_len"]:
        assert ds[v].dims == ("timestamp",), f"{engine} {v}: dims {ds[v].dims}"
    assert not [d for d in ds.dims if str(d).startswith("phony_dim")], f"{engine}: {ds.dims}"
    for k in sorted({0, n // 2, n - 1, 99_999 % n}):
        row = ds.sel(timestamp=ids[k])
        check(f"{engine} sel energy", row["energy"].values, np.float64(k * 0.5))
        check(f"{engine} sel count", row["count"].values, np.int64(-k))
    check(f"{engine} count", ds["count"].values, -i)  # no -99999 masked into NaN
    dt = xr.open_datatree(h5, engine=engine)
    assert dt["det/image"].dims == ("timestamp", "image_dim1", "image_dim2"), dt["det/image"].dims
    assert dt["_present/maybe"].dims == ("timestamp",)
    k = n // 3
    check(f"{engine} det sel", dt["det"].to_dataset().sel(timestamp=ids[k])["image"].values, image[k])
    # netCDF-C shows the HDF5 enum {FALSE, TRUE} as its int8 base type.
    compare_tree(engine, lambda p: node_var(dt, p).values, exact_bool=engine == "h5netcdf")
    # Closed here, not by the garbage collector: a collection that runs on zarr's I/O thread
    # while kerchunk holds h5py's lock (in visititems, below) would close the h5py file there
    # and wait for that lock forever.
    ds.close()
    dt.close()
del ds, dt, row
gc.collect()

# --- kerchunk references -> xarray ---------------------------------------------------------
import fsspec
from kerchunk.hdf import SingleHdf5ToZarr

refs = SingleHdf5ToZarr(h5).translate()
kw = {"consolidated": False, "storage_options": {"fo": refs}}
ds = xr.open_dataset("reference://", engine="zarr", backend_kwargs=kw)
for p in [p for p in ref if "/" not in p]:
    check(f"kerchunk {p}", ds[p].values, ref[p])
# zarr-python lists no members of a subgroup of a reference filesystem at the root path, so
# the groups are read from the references resolved by fsspec into a plain directory (every
# chunk's bytes fetched through its reference into the mounted run.h5).
fs = fsspec.filesystem("reference", fo=refs)
with tempfile.TemporaryDirectory() as tmp:
    for key in refs["refs"]:
        dest = os.path.join(tmp, key)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "wb") as out:
            out.write(fs.cat(key))
    dt = xr.open_datatree(tmp, engine="zarr", consolidated=False, zarr_format=2)
    compare_tree("kerchunk", lambda p: node_var(dt, p).values)


# --- the Zarr v3 view (and an exported tree) -------------------------------------------------
def check_zarr(label, path, codec):
    g = zarr.open_consolidated(path, mode="r")
    assert g.metadata.consolidated_metadata is not None, f"{label}: no consolidated metadata"
    for p, want in ref.items():
        a = g[p]
        assert a.metadata.zarr_format == 3, p
        assert tuple(a.metadata.dimension_names or ()) == dims[p], f"{label} {p}: {a.metadata.dimension_names}"
        names = [c.to_dict()["name"] for c in a.metadata.codecs]
        assert names == ["bytes"] + codec, f"{label} {p}: codecs {names}"
        if a.ndim:
            rows = a.chunks[0]
            row_bytes = a.dtype.itemsize * int(np.prod(a.shape[1:]))
            assert rows == min(max(a.shape[0], 1), max(1, (8 << 20) // row_bytes)), f"{label} {p}: chunks {a.chunks}"
            assert a.chunks[1:] == a.shape[1:]
        check(f"{label} zarr {p}", a[...], want)
    check(f"{label} det/image rows", g["det/image"][n // 2 : n // 2 + 3, 1:3], ref["det/image"][n // 2 : n // 2 + 3, 1:3])
    ds = xr.open_zarr(path)
    assert "timestamp" in ds.indexes
    check(f"{label} open_zarr count", ds["count"].values, ref["count"])
    check(f"{label} open_zarr sel", ds.sel(timestamp=ids[n - 1])["energy"].values, np.float64((n - 1) * 0.5))
    dt = xr.open_datatree(path, engine="zarr")
    compare_tree(f"{label} datatree", lambda p: node_var(dt, p).values)
    img = da.from_zarr(os.path.join(path, "det/image"))
    assert img.numblocks[0] == -(-n // g["det/image"].chunks[0])
    check(f"{label} dask sum", img.sum(axis=0).compute(), ref["det/image"].sum(axis=0, dtype="u8"))
    check(f"{label} dask energy", dt["energy"].chunk({"timestamp": 7_000}).data.sum().compute(), ref["energy"].sum())
    return len(ref)


arrays = check_zarr("run.zarr", zroot, [])
if exported:
    check_zarr("exported", exported, ["gzip"])
print(f"ok: {len(ref)} datasets equal through h5py, h5netcdf, netCDF4, kerchunk, zarr, dask ({arrays} arrays)")
