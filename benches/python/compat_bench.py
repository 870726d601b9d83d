"""The older tools' Python drop-ins (``smdfs.compat``) beside the real PyPI packages, timed
from Python on both sides in one run and printed as ratios (peer time / smdfs time: above 1
means smdfs is faster; the issue's goal is ≥ 5 on each line).

* splitdataloader — ``write_split_data`` of N records (pickled dicts, 0.1–2 KiB), random
  ``loader[i]``, ``iterate_binwise(shuffle=True)``, and the same through ``MpQItr``.
* bigarray — a ``PointerArrayWriter`` written from ``multiprocessing.Pool(2)`` workers, one
  task per name (the worker computes the name's rows and writes them at its position; flush,
  close), reading names in random order, a whole-array stream (``np.sum`` over blocks).
* multitables — ``Streamer.get_generator`` over a contiguous f32 [rows, 64] dataset (every
  row), and random-access ``Reader.request(ds[a:a+64], stage).get()``.
* bound — ``peer / floor``, where floor is the benchmark's own consumer loop over data already
  in memory (a reader that costs nothing): the highest ratio any reader could reach on that line.
* simrecorder — not installable from PyPI, so its peers are h5py and zarr doing its job the
  way SimRecorder's HDF5DataStore/ZarrDataStore do (one resize + write per recorded array,
  h5py with lzf), then re-open and random reads of recorded arrays.

Each line is the best of 3 runs on each side (files rewritten before each write run); the
page cache is warm, so this measures the code paths, not the disk.
Usage: ``.venv/bin/python benches/python/compat_bench.py [--scale S] [--dir D]`` after
``pip install -r benches/peers/requirements.txt zarr`` into the venv.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pickle
import random
import shutil
import tempfile
import time
import warnings

import numpy as np

ROWS: list = []


REPEAT = 3


def timed(fn, setup=None):
    """Best of REPEAT runs of fn (setup() before each, untimed) and fn's last result."""
    best, r = float("inf"), None
    for _ in range(REPEAT):
        if setup is not None:
            setup()
        t = time.perf_counter()
        r = fn()
        best = min(best, time.perf_counter() - t)
    return best, r


def line(tool, what, t_smdfs, t_peer, peer, t_floor=None):
    """One result line. ``t_floor`` is the time of the same consumer loop over data already in
    memory (a reader that costs nothing): ``peer / floor`` bounds the ratio any reader can reach."""
    bound = f"{t_peer / t_floor:7.1f}x" if t_floor else f"{'-':>8}"
    print(f"{tool:<16} {what:<34} {t_smdfs:9.4f} {t_peer:9.4f}  {t_peer / t_smdfs:7.1f}x {bound}  ({peer})",
          flush=True)
    ROWS.append((tool, what, t_peer / t_smdfs, t_peer / t_floor if t_floor else None))


# -- splitdataloader --------------------------------------------------------------------------

def bench_split(base, n):
    import splitdataloader as peer
    from smdfs.compat import splitdataloader as ours

    rng = np.random.default_rng(1)
    recs = [pickle.dumps({"i": i, "x": rng.bytes(int(rng.integers(100, 2048)))}) for i in range(n)]
    look = rng.integers(0, n, 20000).tolist()
    res = {}
    for name, mod in (("smdfs", ours), ("peer", peer)):
        d = os.path.join(base, f"split-{name}")
        res[name, "w"] = timed(lambda: mod.write_split_data(d, iter(recs), splits=128),
                               lambda: shutil.rmtree(d, ignore_errors=True))[0]
        loader = mod.SplitDataLoader(d)
        assert len(loader) == n
        res[name, "r"], got = timed(lambda: [loader[i] for i in look])
        assert got[7] == recs[look[7]]
        res[name, "s"], cnt = timed(lambda: sum(1 for _ in loader.iterate_binwise(shuffle=True)))
        assert cnt == n
        res[name, "q"], cnt = timed(lambda: sum(1 for _ in mod.MpQItr(loader.iterate_binwise, shuffle=True)))
        assert cnt == n
    shuffled = list(recs)
    random.shuffle(shuffled)
    # floor of iterate_binwise: the consumer's loop over bytes objects that already exist
    floor_s = timed(lambda: sum(1 for _ in iter(shuffled)))[0]
    line("splitdataloader", f"write_split_data {n} records", res["smdfs", "w"], res["peer", "w"], "splitdataloader")
    line("splitdataloader", "loader[i] x20000 random", res["smdfs", "r"], res["peer", "r"], "splitdataloader")
    line("splitdataloader", "iterate_binwise(shuffle=True)", res["smdfs", "s"], res["peer", "s"], "splitdataloader",
         floor_s)
    line("splitdataloader", "MpQItr(iterate_binwise)", res["smdfs", "q"], res["peer", "q"], "splitdataloader")


# -- bigarray ---------------------------------------------------------------------------------

WRITER = None


def _ba_write(job):
    """A Pool worker's task: compute one name's rows, write them at the name's position."""
    start, name, rows, seed = job
    a = np.random.default_rng(seed).random((rows, 64), dtype=np.float32)
    WRITER.write({name: a}, start_position=start)


def bench_bigarray(base, names):
    import bigarray as peer
    from smdfs.compat import bigarray as ours

    rng = np.random.default_rng(2)
    jobs, n = [], 0
    for i in range(names):
        rows = int(rng.integers(8, 24))
        jobs.append((n, f"name_{i}", rows, i))
        n += rows
    order = [j[1] for j in jobs]
    random.Random(5).shuffle(order)
    res = {}
    for name, mod in (("smdfs", ours), ("peer", peer)):
        path = os.path.join(base, f"ba-{name}.npy")

        def write():
            global WRITER
            WRITER = mod.PointerArrayWriter(path, shape=(n, 64), dtype="float32", remove_exist=True)
            with multiprocessing.Pool(2) as pool:
                pool.map(_ba_write, jobs, chunksize=64)
            WRITER.flush()
            WRITER.close()

        res[name, "w"] = timed(write)[0]
        x = mod.PointerArray(path)
        res[name, "r"], tot = timed(lambda: sum(float(x[k][0, 0]) for k in order))
        res[name, "s"], s = timed(lambda: sum(float(np.sum(x[i:i + 65536])) for i in range(0, n, 65536)))
        res[name, "tot"] = (tot, s)
    # floors: the same loops over an in-memory array and a plain dict of (start, end)
    mem = np.array(x)
    where = dict(x.indices)
    floor_r = timed(lambda: sum(float(mem[slice(*where[k])][0, 0]) for k in order))[0]
    floor_s = timed(lambda: sum(float(np.sum(mem[i:i + 65536])) for i in range(0, n, 65536)))[0]
    assert np.isclose(res["smdfs", "tot"][0], res["peer", "tot"][0])
    assert np.isclose(res["smdfs", "tot"][1], res["peer", "tot"][1], rtol=1e-4)
    line("bigarray", f"Pool(2) write {names} names", res["smdfs", "w"], res["peer", "w"], "bigarray")
    line("bigarray", "x[name] random order", res["smdfs", "r"], res["peer", "r"], "bigarray", floor_r)
    line("bigarray", "stream np.sum by blocks", res["smdfs", "s"], res["peer", "s"], "bigarray", floor_s)


# -- multitables -------------------------------------------------------------------------------

def bench_multitables(base, rows):
    import h5py
    import multitables as peer
    from smdfs.compat import multitables as ours

    path = os.path.join(base, "mt.h5")
    data = (np.arange(rows * 64, dtype=np.float64) % 1000003).astype("<f4").reshape(rows, 64)
    with h5py.File(path, "w") as f:
        f["data"] = data
    starts = np.random.default_rng(4).integers(0, rows - 64, 2000).tolist()
    res = {}
    for name, mod in (("smdfs", ours), ("peer", peer)):
        def stream():
            acc = 0.0
            for row in mod.Streamer(filename=path).get_generator(path="/data", block_size=4096):
                acc += row[0]
            return acc

        res[name, "s"], acc = timed(stream)
        assert np.isclose(acc, data[:, 0].sum(dtype=np.float64), rtol=1e-5), (name, acc)

        def requests():
            r = mod.Reader(filename=path)
            ds = r.get_dataset(path="/data")
            stages = [ds.create_stage(64) for _ in range(8)]
            tot = 0.0
            for k in range(0, len(starts), 8):
                futs = [r.request(ds[a:a + 64], stages[j]) for j, a in enumerate(starts[k:k + 8])]
                for fu in futs:
                    tot += float(fu.get()[0, 0])
            r.close()
            return tot

        res[name, "r"], tot = timed(requests)
        assert np.isclose(tot, sum(float(data[a, 0]) for a in starts))
    def floor_stream():
        acc = 0.0
        for row in data:
            acc += row[0]
        return acc

    floor_s = timed(floor_stream)[0]
    line("multitables", f"get_generator {rows} rows x 64 f32", res["smdfs", "s"], res["peer", "s"], "multitables",
         floor_s)
    line("multitables", "request(ds[a:a+64]) x2000 random", res["smdfs", "r"], res["peer", "r"], "multitables")


# -- simrecorder ------------------------------------------------------------------------------

def h5py_record(path, values):
    """SimRecorder's HDF5DataStore.append, one array at a time."""
    import h5py

    f = h5py.File(path, "w")
    for v in values:
        d = f.get("train/what")
        if d is not None:
            d.resize(d.shape[0] + 1, axis=0)
            d[-1:, ...] = v
        else:
            f.create_dataset("train/what", data=v[None, ...], compression="lzf", maxshape=(None, *v.shape))
    f.close()


def zarr_record(path, values):
    """SimRecorder's ZarrDataStore.append (directory store), one array at a time."""
    import zarr

    g = zarr.open_group(path, mode="w")
    d = None
    for v in values:
        if d is None:
            d = g.create_array("train/what", shape=(1, *v.shape), chunks=(1, *v.shape), dtype=v.dtype)
            d[0] = v
        else:
            d.resize((d.shape[0] + 1, *v.shape))
            d[-1] = v


def bench_recorder(base, n):
    import h5py
    import zarr
    from smdfs.compat.simrecorder import HDF5DataStore, Recorder, ZarrDataStore

    vals = list(np.random.default_rng(5).random((n, 32, 32)).astype(np.float32))
    look = np.random.default_rng(6).integers(0, n, 2000).tolist()

    def ours(cls, path):
        def clean():
            stem = os.path.splitext(path)[0]
            for p in (path, stem + ".smd"):
                if os.path.isdir(p):
                    shutil.rmtree(p)
                elif os.path.exists(p):
                    os.remove(p)

        def write():
            rec = Recorder(cls(path))
            for v in vals:
                rec.record("train/what", v)
            rec.close()

        def read():
            rec = Recorder(cls(path))
            a = rec.get_all("train/what")
            t = sum(float(a[i][0, 0]) for i in look)
            rec.close()
            return t
        return timed(write, clean)[0], timed(read)

    t_h5w, (t_h5r, tot_h5) = ours(HDF5DataStore, os.path.join(base, "rec.h5"))
    t_zw, (t_zr, tot_z) = ours(ZarrDataStore, os.path.join(base, "rec.zarr"))
    ph = os.path.join(base, "peer.h5")
    pz = os.path.join(base, "peer.zarr")
    t_ph = timed(lambda: h5py_record(ph, vals))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_pz = timed(lambda: zarr_record(pz, vals), lambda: shutil.rmtree(pz, ignore_errors=True))[0]

    def h5read():
        with h5py.File(ph, "r") as f:
            d = f["train/what"]
            return sum(float(d[i][0, 0]) for i in look)

    def zread():
        d = zarr.open_group(pz, mode="r")["train/what"]
        return sum(float(d[i][0, 0]) for i in look)

    t_phr, tot_p = timed(h5read)
    t_pzr, tot_pz = timed(zread)
    assert np.isclose(tot_h5, tot_p) and np.isclose(tot_z, tot_pz)
    line("simrecorder", f"HDF5DataStore record {n} x 32x32 f32", t_h5w, t_ph, "h5py resize+write, lzf")
    line("simrecorder", "HDF5DataStore get_all()[i] x2000", t_h5r, t_phr, "h5py dataset[i]")
    line("simrecorder", f"ZarrDataStore record {n} x 32x32 f32", t_zw, t_pz, "zarr resize+write")
    line("simrecorder", "ZarrDataStore get_all()[i] x2000", t_zr, t_pzr, "zarr array[i]")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every size (default 1)")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    a = ap.parse_args()
    base = a.dir or tempfile.mkdtemp(prefix="smdfs-compat-bench-")
    os.makedirs(base, exist_ok=True)
    s = a.scale
    print(f"{'tool':<16} {'operation':<34} {'smdfs s':>9} {'peer s':>9}  {'ratio':>8} {'bound':>8}  (peer)")
    try:
        bench_split(base, int(100_000 * s))
        bench_bigarray(base, int(10_000 * s) // 200 * 200)
        bench_multitables(base, int(500_000 * s))
        bench_recorder(base, int(5_000 * s))
    finally:
        if a.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    worst = min(ROWS, key=lambda r: r[2])
    print(f"lowest ratio: {worst[2]:.1f}x ({worst[0]}: {worst[1]}); goal >= 5x on every line")
    for tool, what, ratio, bound in ROWS:
        if bound is not None and bound < 5:
            print(f"  {tool}: {what}: no reader can reach 5x here: the peer takes {bound:.1f}x the time of the "
                  f"consumer's own loop over data already in memory (smdfs reaches {ratio / bound:.0%} of that bound)")


if __name__ == "__main__":
    main()
