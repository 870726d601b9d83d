"""The xarray backend (``xr.open_dataset(run, engine="smdfs")``) on demo runs written by the
real ``smdfs`` binary: lazy variables with ``timestamp`` coordinates equal the demo formula,
``.sel`` by event id reads the right row, and ``chunks={}`` gives dask arrays that compute the
same values."""

from __future__ import annotations

import numpy as np
import pytest

import smdfs
from test_reader_demo import assert_equal, demo_runs, expected, image  # noqa: F401 - demo_runs is a fixture

xr = pytest.importorskip("xarray", reason="xarray is in requirements-test.txt")


def test_open_dataset_gives_every_demo_dataset_lazily_with_timestamp_coordinates(demo_runs):
    for (n, s, c), d in demo_runs.items():
        if n > 10_000:
            continue
        want = expected(n)
        ds = xr.open_dataset(d, engine="smdfs")
        assert ds.attrs["smdfs_state"] == "complete" and ds.attrs["smdfs_events"] == n
        assert ds.attrs["summary/n_events"] == n and ds.attrs["summary/max_energy"] == (n - 1) * 0.5
        assert set(ds.data_vars) == {"energy", "det/image", "count", "tag", "tag_len", "maybe", "_present/maybe",
                                     "unaligned_hits"}
        assert ds["det/image"].dims == ("timestamp", "det/image_dim1", "det/image_dim2")
        assert ds["unaligned_hits"].dims == ("unaligned_hits_timestamp",)
        assert_equal("timestamp coord", ds["timestamp"].values, want["timestamp"])
        assert_equal("unaligned coord", ds["unaligned_hits_timestamp"].values, want["unaligned_hits_timestamp"])
        # Lazy until asked: the backend array, not numpy, sits behind the variable.
        assert not isinstance(ds["det/image"].variable._data, np.ndarray)
        for name in ["energy", "det/image", "count", "tag_len", "maybe", "_present/maybe", "unaligned_hits"]:
            assert_equal(f"xr {name}", ds[name].values, want[name])
        assert list(ds["tag"].values) == want["tag"]
        assert ds["maybe"].attrs["ancillary_variables"] == "/_present/maybe"
        assert np.isnan(ds["maybe"].attrs["fill_value"])
        ds.close()


def test_sel_isel_and_writable_results(demo_runs):
    ds = xr.open_dataset(demo_runs[(1000, 2, 3)], engine="smdfs")
    row = ds.sel(timestamp=1000 + 3 * 42)
    assert float(row["energy"]) == 21.0 and int(row["count"]) == -42 and row["tag"].item() == b"evt42"
    assert_equal("sel image", row["det/image"].values, image([42])[0])
    sub = ds.isel(timestamp=[9, 3, 5])
    assert_equal("isel energy", sub["energy"].values, np.array([9, 3, 5]) * 0.5)
    assert list(sub["tag"].values) == [b"evt9", b"evt3", b"evt5"]
    assert_equal("outer index", ds["det/image"].isel(timestamp=slice(10, 20), **{"det/image_dim2": [1, 3]}).values,
                 image(np.arange(10, 20))[:, :, [1, 3]])
    assert_equal("sel unaligned", ds["unaligned_hits"].sel(unaligned_hits_timestamp=1000 + 3 * 25).values,
                 np.uint32(25))
    v = ds["energy"].values
    v[0] = 5.0  # results are writable, as with other engines
    one = xr.open_dataset(demo_runs[(1000, 1, 1)], engine="smdfs")["det/image"].values
    assert one.flags.writeable
    ds.close()


def test_chunks_give_dask_arrays_that_compute_the_same_values(demo_runs):
    pytest.importorskip("dask", reason="dask is in requirements-test.txt")
    n = 150_000
    ds = xr.open_dataset(demo_runs[(n, 2, 4)], engine="smdfs", chunks={})
    im = ds["det/image"]
    assert im.chunks is not None
    assert_equal("dask image", im.data.compute(), image(np.arange(n)))
    assert float(ds["energy"].sum().compute()) == float((np.arange(n) * 0.5).sum())
    assert_equal("dask sel", ds["count"].sel(timestamp=[1000, 1003 + 3 * 99]).compute().values, np.array([0, -100]))
    ds.close()


def test_drop_variables_and_a_bad_path(demo_runs, tmp_path):
    ds = xr.open_dataset(demo_runs[(1000, 1, 1)], engine="smdfs", drop_variables=["det/image", "tag"])
    assert "det/image" not in ds and "tag" not in ds and "tag_len" in ds
    with pytest.raises(smdfs.Error):
        xr.open_dataset(tmp_path, engine="smdfs")
