"""``smdfs.compat.multitables`` as multitables' users call it, on HDF5 files written by h5py
(contiguous, chunked + gzip, compound tables) and on a mounted run's ``run.h5``: streaming
unordered and ordered, random-access requests into stages with get / get_unsafe / get_proxy."""

from __future__ import annotations

import gc
import subprocess
import time

import h5py
import numpy as np
import pytest

from smdfs.compat.multitables import ReleasedResourceError, Reader, Streamer

DATA = np.arange(20000 * 16, dtype="<f4").reshape(20000, 16)
TABLE = np.zeros(5000, dtype=[("energy", "<f8"), ("id", "<i4"), ("vec", "<u2", (3,))])
TABLE["energy"] = np.arange(5000) * 0.5
TABLE["id"] = -np.arange(5000)
TABLE["vec"] = np.arange(15000).reshape(5000, 3)


@pytest.fixture(scope="module")
def h5file(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("mt") / "a.h5")
    with h5py.File(p, "w") as f:
        f["data"] = DATA
        f.create_dataset("chunked", data=DATA, chunks=(100, 16), compression="gzip")
        f["table"] = TABLE
        f.create_dataset("empty", shape=(0, 4), dtype="f4")
        f.create_dataset("vlen", data=[b"a", b"bc"], dtype=h5py.string_dtype())
    return p


@pytest.mark.parametrize("path", ["/data", "chunked"])
def test_streamer_yields_every_row(h5file, path):
    s = Streamer(filename=h5file)
    rows = np.array(list(s.get_generator(path=path, block_size=333)))
    assert rows.shape == DATA.shape
    assert np.array_equal(rows[np.argsort(rows[:, 0])], DATA)  # unordered: every row once
    ordered = np.array(list(s.get_generator(path=path, ordered=True)))
    assert np.array_equal(ordered, DATA)
    fields = list(Streamer(filename=h5file).get_generator(path="table", ordered=True, field="energy"))
    assert np.array_equal(fields, TABLE["energy"])
    q = s.get_queue(path=path, block_size=3000, ordered=True)  # without the remainder
    blocks = []
    for guard in q.iter():
        with guard as b:
            blocks.append(b.copy())
    assert np.array_equal(np.concatenate(blocks), DATA[:18000])


def test_reader_requests(h5file):
    reader = Reader(filename=h5file)
    ds = reader.get_dataset(path="/table")
    stage = ds.create_stage(10)
    future = reader.request(ds[30:35], stage)
    assert np.array_equal(future.get(), TABLE[30:35])
    f2 = reader.request(ds["energy"][30:35], stage)
    with f2.get_unsafe() as data:
        assert np.array_equal(data, TABLE["energy"][30:35])
    f3 = reader.request(ds["vec"][[4, 9, 2]], stage)
    with f3.get_proxy() as data:
        assert np.array_equal(np.asarray(data), TABLE["vec"][[4, 9, 2]]) and data.shape == (3, 3)
    with pytest.raises(ReleasedResourceError):
        data.shape
    d = reader.get_dataset("chunked")
    futures = [reader.request(d[i * 100:(i + 1) * 100], d.create_stage(100)) for i in range(20)]
    for i, f in enumerate(futures):
        assert np.array_equal(f.get(), DATA[i * 100:(i + 1) * 100])
    assert np.array_equal(reader.request(d[10:-10:7, 3], d.create_stage(20000)).get(), DATA[10:-10:7, 3])
    assert np.array_equal(reader.request(d[-1], d.create_stage(1)).get(), DATA[-1])
    with pytest.raises(ValueError, match="stage holds"):
        reader.request(ds[0:11], stage)
    with pytest.raises(KeyError, match="no column"):
        ds["nope"]
    reader.close()
    with pytest.raises(RuntimeError, match="closed reader"):
        reader.request(ds[0:1], stage)


def test_bad_datasets_raise_clear_errors(h5file):
    with pytest.raises(KeyError, match="missing"):
        Reader(filename=h5file).get_dataset("missing")
    with pytest.raises(ValueError, match="variable-length"):
        list(Streamer(filename=h5file).get_generator(path="vlen"))
    with pytest.raises(RuntimeError, match="empty"):
        list(Streamer(filename=h5file).get_generator(path="empty"))


def test_works_on_a_mounted_run(tmp_path):
    from test_reader_demo import smdfs_bin, write_demo

    run = write_demo(tmp_path / "run", 3000, 2, 3)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run([smdfs_bin(), "mount", str(run), str(mnt)], check=True, capture_output=True)
    try:
        h5 = str(mnt / "run.h5")
        s = Streamer(filename=h5)
        energy = np.array(list(s.get_generator(path="energy", ordered=True)))
        assert np.array_equal(energy, np.arange(3000) * 0.5)
        image = np.array(list(s.get_generator(path="det/image", block_size=100)))
        assert image.shape == (3000, 4, 8) and image.dtype == np.uint16
        s.close()
        with Reader(filename=h5) as r:
            ds = r.get_dataset("det/image")
            got = r.request(ds[100:105], ds.create_stage(5)).get()
        i = np.arange(100, 105)[:, None, None]
        assert np.array_equal(got, (i + 8 * np.arange(4)[None, :, None] + np.arange(8)[None, None, :]) % 65536)
    finally:
        gc.collect()  # nothing of this test may keep run.h5 open
        for _ in range(50):
            if subprocess.run([smdfs_bin(), "umount", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"{mnt} stays mounted: something keeps run.h5 open")
