"""``smdfs.compat.simrecorder`` as SimRecorder's users call it: record/get_all/set/get over
in-memory, smdfs, HDF5 and zarr-named stores; a closed recorder re-opened in another process
reads the keys back; the HDF5 store leaves a real HDF5 file (read with h5py); existing stores
open read-only."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from smdfs.compat.simrecorder import (HDF5DataStore, InMemoryDataStore, Recorder, SmdfsDataStore,
                                      ZarrDataStore)

ARRAYS = np.random.default_rng(3).random((10, 5, 2, 6))


def record_script(rec: Recorder) -> None:
    """What a SimRecorder user records: arrays, scalars, mixed objects, set values."""
    for i, a in enumerate(ARRAYS):
        rec.record("train/what", a)
        rec.record("train/loss", float(i) * 0.5)
        rec.record("step", i)
    rec.record("log", "started")
    rec.record("log", {"epoch": 1, "tags": ["a", "b"]})
    rec.record("log", np.arange(3, dtype=np.uint16))
    rec.set("config", {"lr": 0.1})
    rec.set("config", ARRAYS[1])


def check_read(rec: Recorder) -> None:
    what = rec.get_all("train/what")
    assert np.array_equal(np.array(what), ARRAYS)
    assert np.array_equal(np.asarray(what[3:5]), ARRAYS[3:5])
    assert np.isclose(np.mean(what), ARRAYS.mean())
    assert np.array_equal(np.array(rec.get_all("train/loss")), np.arange(10) * 0.5)
    steps = np.array(rec.get_all("step"))
    assert steps.dtype == np.int64 and np.array_equal(steps, np.arange(10))
    log = rec.get_all("log")
    assert log[0] == "started" and log[1] == {"epoch": 1, "tags": ["a", "b"]}
    assert np.array_equal(log[2], [0, 1, 2]) and log[2].dtype == np.uint16
    assert np.array_equal(np.array(rec.get("config")), ARRAYS[1])


def test_in_memory_store_returns_lists_and_set_replaces():
    store = InMemoryDataStore()
    rec = Recorder(store)
    record_script(rec)
    what = rec.get_all("train/what")
    assert isinstance(what, list) and len(what) == 10
    check_read(rec)
    rec.close()
    # SimRecorder's in-memory store stays readable after close.
    check_read(Recorder(store))
    assert rec.get_all("missing") == []
    assert rec.keys() == ["log", "step", "train/loss", "train/what"]


@pytest.mark.parametrize("kind", ["smdfs", "zarr", "hdf5"])
def test_persistent_store_reopens_in_another_process(tmp_path, kind):
    path = {"smdfs": tmp_path / "run", "zarr": tmp_path / "test.mdb", "hdf5": tmp_path / "data.h5"}[kind]
    cls = {"smdfs": SmdfsDataStore, "zarr": ZarrDataStore, "hdf5": HDF5DataStore}[kind]
    mem = InMemoryDataStore()
    rec = Recorder(mem, cls(path))
    record_script(rec)
    check_read(rec)  # from the first store while recording
    assert np.array_equal(np.array(rec.get_all("train/what", datastore=rec.datastores[1])), ARRAYS)
    rec.close()

    script = textwrap.dedent(f"""
        import numpy as np, sys
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
        from test_compat_simrecorder import check_read
        from smdfs.compat.simrecorder import Recorder, {cls.__name__}
        rec = Recorder({cls.__name__}({str(path)!r}))
        check_read(rec)
        what = rec.get_all("train/what")
        # A read-only view of the run's memory map: pages load when touched.
        assert isinstance(what, np.ndarray) and not what.flags.writeable and not what.flags.owndata
        log = rec.get_all("log")
        try:
            rec.record("train/what", np.zeros((5, 2, 6)))
        except PermissionError:
            print("read-only")
        rec.close()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "read-only"


def test_hdf5_store_writes_a_real_hdf5_file(tmp_path):
    path = tmp_path / "data.h5"
    rec = Recorder(HDF5DataStore(path))
    record_script(rec)
    assert not path.exists()  # written at close, from the run beside it
    rec.close()
    assert (tmp_path / "data.smd").is_dir()
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["train/unaligned_what"][:], ARRAYS)
        assert np.array_equal(f["train/unaligned_what_timestamp"][:], np.arange(10))
        assert np.array_equal(f["train/unaligned_loss"][:], np.arange(10) * 0.5)


def test_bad_keys_and_closed_stores_raise_clear_errors(tmp_path):
    rec = Recorder(SmdfsDataStore(tmp_path / "run"))
    with pytest.raises(Exception, match="#"):
        rec.record("a#b", 1.0)
    rec.record("ok", 1.0)
    rec.close()
    with pytest.raises(ValueError, match="closed"):
        rec.record("ok", 2.0)
    with pytest.raises(FileNotFoundError, match="was not written by this store"):
        (tmp_path / "foreign.h5").write_bytes(b"x")
        HDF5DataStore(tmp_path / "foreign.h5")
