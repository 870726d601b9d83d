"""``smdfs.compat.bigarray`` as bigarray's users call it: a PointerArrayWriter written from
multiprocessing.Pool(2) workers (a global writer after fork, and the writer passed pickled),
growing arrays, re-opening to append, and PointerArray read by name in the parent and in Pool
workers."""

from __future__ import annotations

import pickle
from multiprocessing import Pool

import numpy as np
import pytest

from smdfs.compat.bigarray import PointerArray, PointerArrayWriter

WRITER = None


def _write_global(job):
    start, arrays = job
    WRITER.write(arrays, start_position=start)


def _write_passed(job):
    writer, arrays = job
    start = min(int(np.min(a)) for a in arrays.values())
    writer.write(arrays, start_position=start)


def _append(job):
    writer, arrays = job
    writer.write(arrays)


def _read(job):
    names, path = job
    x = PointerArray(path)
    return {n: x[n].copy() for n in names}


def test_pool_writes_at_positions_and_reads_back_by_name(tmp_path):
    global WRITER
    path = str(tmp_path / "x.npy")
    rng = np.random.default_rng(8)
    jobs, n = [], 0
    for j in range(6):
        job, start = {}, n
        for i in range(40):
            a = rng.random((int(rng.integers(8, 12)), 8))
            n += a.shape[0]
            job[f"name_{j}_{i}"] = a
        jobs.append((start, job))
    WRITER = PointerArrayWriter(path, shape=(n, 8), dtype="float64", remove_exist=True)
    with Pool(2) as pool:
        pool.map(_write_global, jobs)
    WRITER.flush()
    WRITER.close()
    everything = {k: v for _, job in jobs for k, v in job.items()}
    x = PointerArray(path)
    assert x.shape == (n, 8) and isinstance(x, np.ndarray)
    for name, a in everything.items():
        assert np.array_equal(x[name], a)
    assert np.isclose(np.sum(x), sum(a.sum() for a in everything.values()))
    assert set(x.indices) == set(everything)
    with Pool(2) as pool:
        for part in pool.map(_read, [(list(c), path) for c in np.array_split(list(everything), 4)]):
            assert all(np.array_equal(everything[k], v) for k, v in part.items())
    # A plain .npy: numpy reads it as it is.
    assert np.array_equal(np.load(path, mmap_mode="r"), np.asarray(x))


def test_pickled_writer_in_pool_workers(tmp_path):
    path = str(tmp_path / "p.npy")
    f = PointerArrayWriter(path, shape=(25 * 10,), dtype="float64", remove_exist=True)
    jobs = [(f"name{i}", np.arange(i * 10, i * 10 + 10)) for i in range(25)]
    everything = dict(jobs)
    with Pool(2) as pool:
        pool.map(_write_passed, [(f, dict(part)) for part in (jobs[k:k + 7] for k in range(0, 25, 7))])
    f.flush()
    f.close()
    x = PointerArray(path)
    for name in x.indices:
        assert np.array_equal(x[name], everything[name])
    assert np.sum(x) == sum(np.sum(v) for v in everything.values())


def test_growing_array_appends_and_reopen(tmp_path):
    path = str(tmp_path / "g.npy")
    rng = np.random.default_rng(1)
    data = {f"name{i}": rng.random((12, 8)) for i in range(300)}
    data1 = {f"name{i}": rng.random((12, 8)) for i in range(300, 600)}
    with PointerArrayWriter(path, shape=(0, 8), dtype="float64", remove_exist=True) as f:
        f.write(data)
    with PointerArrayWriter(path, remove_exist=False) as f:
        f.write(data1)
    x = PointerArray(path)
    assert x.shape == (600 * 12, 8)
    for name, (start, end) in x.indices.items():
        assert np.array_equal(x[start:end], (data | data1)[name])

    w = PointerArrayWriter(path, shape=(0,), dtype="int32", remove_exist=True)
    w.write({"first": np.arange(5)})
    w2 = pickle.loads(pickle.dumps(w))
    w2.write({"second": np.arange(5, 9)})
    with Pool(2) as pool:  # appends from two processes at once take the file lock
        pool.map(_append, [(w, {f"a{i}": np.full(i + 1, i)}) for i in range(30)])
    w.close()
    x = PointerArray(path)
    assert x.dtype == np.int32 and x.shape == (5 + 4 + sum(range(1, 31)),)
    assert np.array_equal(x["first"], np.arange(5)) and np.array_equal(x["second"], np.arange(5, 9))
    for i in range(30):
        assert np.array_equal(x[f"a{i}"], np.full(i + 1, i))
    starts = sorted(x.indices.values())
    assert all(a[1] == b[0] for a, b in zip(starts, starts[1:]))  # no gaps, no overlaps
    assert pickle.loads(pickle.dumps(x)).indices == x.indices


def test_bad_input_is_refused_with_a_clear_message(tmp_path):
    path = str(tmp_path / "b.npy")
    w = PointerArrayWriter(path, shape=(10, 4), dtype="int32", remove_exist=True)
    with pytest.raises(ValueError, match=r"'bad' has shape \(3, 5\)"):
        w.write({"bad": np.zeros((3, 5))})
    with pytest.raises(ValueError, match="shape and dtype"):
        PointerArrayWriter(str(tmp_path / "new.npy"))
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.write({"x": np.zeros((1, 4))})
    with pytest.raises(RuntimeError, match="Cannot modify"):
        PointerArray(path).indices["x"] = (0, 1)
