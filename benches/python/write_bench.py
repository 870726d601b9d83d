"""Python writer benchmark: events/s of a Python loop writing the DESIGN.md demo mix.

    .venv/bin/python benches/python/write_bench.py [--events N] [--ranks P] [--dir D]

Compares, serially and under `mpirun -n P` (default 4), in one run:
- smdfs: `SmallData(servers=2)`, one `smd.event()` call per field group as smalldata users
  write it (energy/det.image/count, maybe on even events, unaligned_hits every 5th, tag), then
  `done()`; under MPI the last 2 ranks are servers.
- the smalldata way (its design, rebuilt with its own tools): each client merges an event's
  dicts in Python, appends values to per-field lists, turns them into numpy arrays every
  `batch_size` events and sends them with mpi4py (pickled) to h5py server ranks, which append
  to their own files; rank 0 then joins the server files with an HDF5 virtual dataset (written
  so that HDF5 1.10 reads it). Serially the one process writes its batches with h5py itself.
- the expert way: every rank appends numpy batches (built in preallocated arrays) to its own
  h5py file; no join.
Every variant is timed from before its setup to after its files are complete (done() / the
join), on rank 0 after all ranks finished. Event values are precomputed (shared by all), so
the loop measures writing. Goals (issue 11): smdfs >= 20x the smalldata way, >= 1x the
expert way. Prints one table with the ratios.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODES = ["smdfs", "smalldata", "expert"]
HERE = Path(__file__).resolve()
REPO = HERE.parents[2]


def demo_values(n):
    i = np.arange(n)
    images = ((i[:, None, None] + 8 * np.arange(4)[:, None] + np.arange(8)) % 65536).astype(np.uint16)
    return i, images


def share(n, rank, clients):
    return range(rank, n, clients)


# ---------------------------------------------------------------- smdfs ----------------------


def run_smdfs(out, n, mpi):
    from smdfs import SmallData

    i_all, images = demo_values(n)
    t0 = time.perf_counter()
    smd = SmallData(out, servers=2, batch_size=1000, overwrite=True)
    for i in smd.round_robin(range(n)):
        ts = 1000 + 3 * i
        smd.event(ts, energy=i * 0.5, det={"image": images[i]}, count=-i)
        if i % 2 == 0:
            smd.event(ts, maybe=np.float32(i))
        if i % 5 == 0:
            smd.event(ts, unaligned_hits=np.uint32(i))
        smd.event(ts, tag=b"evt%d" % i)
    smd.done()
    return smd.rank, time.perf_counter() - t0


# ---------------------------------------------------------------- smalldata way --------------


FIELDS = {
    "energy": np.float64,
    "det/image": np.uint16,
    "count": np.int64,
    "maybe": np.float32,
    "tag": "S16",
}


def _flatten(prefix, d, out):
    for k, v in d.items():
        p = f"{prefix}/{k}" if prefix else k
        if isinstance(v, dict):
            _flatten(p, v, out)
        else:
            out[p] = v


class SmalldataWay:
    """smalldata's client path: dict merge per call, per-field lists, batches as numpy."""

    def __init__(self, write_batch, batch_size=1000):
        self.write_batch, self.batch_size = write_batch, batch_size
        self.prev_ts, self.event_dict, self.lists, self.n = -1, {}, {}, 0

    def event(self, ts, **kw):
        d = {}
        _flatten("", kw, d)
        if ts == self.prev_ts:
            self.event_dict.update(d)
            return
        self._close_event()
        self.prev_ts, self.event_dict = ts, d

    def _close_event(self):
        if self.prev_ts < 0:
            return
        self.event_dict["timestamp"] = self.prev_ts
        for k in set(self.lists) | set(self.event_dict):
            lst = self.lists.setdefault(k, [None] * self.n)
            lst.append(self.event_dict.get(k))
        self.n += 1
        if self.n >= self.batch_size:
            self.flush()

    def flush(self):
        if not self.n:
            return
        batch = {}
        for k, lst in self.lists.items():
            if k.startswith("unaligned_"):
                present = [(t, v) for t, v in zip(self.lists["timestamp"], lst) if v is not None]
                batch[k] = np.array([v for _, v in present], dtype=np.uint32)
                batch[k + "_timestamp"] = np.array([t for t, _ in present], dtype=np.uint64)
                continue
            dt = FIELDS.get(k, np.uint64)
            if k == "maybe":
                lst = [np.nan if v is None else v for v in lst]
            batch[k] = np.array(lst, dtype=dt)
        self.write_batch(batch)
        self.lists, self.n = {}, 0

    def done(self):
        self._close_event()
        self.flush()


class H5Appender:
    """Appends batches of columns to resizable datasets of one h5py file."""

    def __init__(self, path):
        import h5py

        self.f = h5py.File(path, "w", libver=("earliest", "v110"))

    def __call__(self, batch):
        for k, a in batch.items():
            if k not in self.f:
                self.f.create_dataset(k, shape=(0,) + a.shape[1:], maxshape=(None,) + a.shape[1:], dtype=a.dtype,
                                      chunks=(max(1, min(4096, 1 << 20 // max(1, a[:1].nbytes))),) + a.shape[1:])
            d = self.f[k]
            m = d.shape[0]
            d.resize(m + len(a), axis=0)
            d[m:] = a

    def close(self):
        self.f.close()


def loop_smalldata(w, rank, clients, n):
    i_all, images = demo_values(n)
    for i in share(n, rank, clients):
        i = int(i)
        ts = 1000 + 3 * i
        w.event(ts, energy=i * 0.5, det={"image": images[i]}, count=-i)
        if i % 2 == 0:
            w.event(ts, maybe=np.float32(i))
        if i % 5 == 0:
            w.event(ts, unaligned_hits=np.uint32(i))
        w.event(ts, tag=b"evt%d" % i)
    w.done()


def run_smalldata(out, n, mpi):
    import h5py

    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    if not mpi:
        h = H5Appender(f"{out}/part0.h5")
        loop_smalldata(SmalldataWay(h), 0, 1, n)
        h.close()
        return 0, time.perf_counter() - t0
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    servers = 2
    clients = size - servers
    if rank < clients:
        dest = clients + rank % servers
        loop_smalldata(SmalldataWay(lambda b: comm.send(b, dest=dest, tag=1)), rank, clients, n)
        comm.send(None, dest=dest, tag=1)
    else:
        h = H5Appender(f"{out}/part{rank - clients}.h5")
        feeders = len([c for c in range(clients) if clients + c % servers == rank])
        while feeders:
            b = comm.recv(source=MPI.ANY_SOURCE, tag=1)
            if b is None:
                feeders -= 1
            else:
                h(b)
        h.close()
    comm.Barrier()
    if rank == 0:  # join the server files with virtual datasets, as smalldata does
        try:
            join(out, servers)
        except BaseException as e:  # never leave the other ranks waiting
            print(f"join failed: {e!r}", file=sys.stderr, flush=True)
            comm.Abort(1)
    comm.Barrier()
    return rank, time.perf_counter() - t0


def join(out, servers):
    """One file of virtual datasets over the servers' files (what HDF5 1.10 reads); a field a
    server never saw reads as its fill value there (aligned fields: as many rows as events)."""
    import h5py

    parts = [h5py.File(f"{out}/part{s}.h5", "r") for s in range(servers)]
    names = set()
    for p in parts:
        p.visititems(lambda name, obj: names.add(name) if isinstance(obj, h5py.Dataset) else None)
    with h5py.File(f"{out}/joined.h5", "w", libver=("earliest", "v110")) as f:
        for name in sorted(names):
            d0 = next(p[name] for p in parts if name in p)
            aligned = not name.startswith("unaligned_")
            rows = [p[name].shape[0] if name in p else (len(p["timestamp"]) if aligned else 0) for p in parts]
            lay = h5py.VirtualLayout(shape=(sum(rows),) + d0.shape[1:], dtype=d0.dtype)
            at = 0
            for s, p in enumerate(parts):
                if name in p:
                    lay[at : at + rows[s]] = h5py.VirtualSource(f"part{s}.h5", name, shape=p[name].shape)
                at += rows[s]
            fill = np.nan if d0.dtype.kind == "f" else (0 if d0.dtype.kind in "biu" else None)
            f.create_virtual_dataset(name, lay, fillvalue=fill)
    for p in parts:
        p.close()


# ---------------------------------------------------------------- expert way -----------------


def run_expert(out, n, mpi):
    rank, size = 0, 1
    if mpi:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        rank, size = comm.Get_rank(), comm.Get_size()
    os.makedirs(out, exist_ok=True)
    i_all, images = demo_values(n)
    t0 = time.perf_counter()
    h = H5Appender(f"{out}/rank{rank}.h5")
    B = 1000
    mine = np.arange(rank, n, size)
    bufs = dict(
        timestamp=np.empty(B, np.uint64), energy=np.empty(B), count=np.empty(B, np.int64),
        maybe=np.empty(B, np.float32), tag=np.empty(B, "S16"), image=np.empty((B, 4, 8), np.uint16),
    )
    hits, hits_ts = [], []
    k = 0
    for i in mine:
        i = int(i)
        bufs["timestamp"][k] = 1000 + 3 * i
        bufs["energy"][k] = i * 0.5
        bufs["image"][k] = images[i]
        bufs["count"][k] = -i
        bufs["maybe"][k] = np.float32(i) if i % 2 == 0 else np.nan
        if i % 5 == 0:
            hits.append(i)
            hits_ts.append(1000 + 3 * i)
        bufs["tag"][k] = b"evt%d" % i
        k += 1
        if k == B:
            h({("det/image" if n_ == "image" else n_): a[:k] for n_, a in bufs.items()})
            k = 0
    if k:
        h({("det/image" if n_ == "image" else n_): a[:k] for n_, a in bufs.items()})
    h({"unaligned_hits": np.array(hits, np.uint32), "unaligned_hits_timestamp": np.array(hits_ts, np.uint64)})
    h.close()
    if mpi:
        comm.Barrier()
    return rank, time.perf_counter() - t0


# ---------------------------------------------------------------- driver ---------------------


def child(mode, out, n, mpi):
    rank, secs = {"smdfs": run_smdfs, "smalldata": run_smalldata, "expert": run_expert}[mode](out, n, mpi)
    if rank == 0:
        print(f"SECONDS {secs:.6f}", flush=True)


def measure(mode, n, ranks, base):
    out = base / f"{mode}-{ranks or 1}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, str(HERE), "--child", mode, "--out", str(out), "--events", str(n)]
    env = dict(os.environ)
    abi = REPO / ".venv" / "mpich-abi"
    env["LD_LIBRARY_PATH"] = f"{abi}:{env.get('LD_LIBRARY_PATH', '')}"
    if ranks:
        cmd = ["mpirun", "-n", str(ranks), *cmd, "--mpi"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{p.stdout}\n{p.stderr}")
    secs = float(next(l for l in p.stdout.splitlines() if l.startswith("SECONDS")).split()[1])
    shutil.rmtree(out, ignore_errors=True)
    return n / secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--dir", default="/tmp/smdfs-write-bench")
    ap.add_argument("--child")
    ap.add_argument("--out")
    ap.add_argument("--mpi", action="store_true")
    a = ap.parse_args()
    if a.child:
        return child(a.child, a.out, a.events, a.mpi)
    base = Path(a.dir)
    base.mkdir(parents=True, exist_ok=True)
    print(f"demo mix, {a.events} events, Python writer loop; events/s (higher is better)")
    print(f"{'setting':<22}{'smdfs':>12}{'smalldata way':>16}{'expert way':>14}{'vs smalldata':>14}{'vs expert':>11}")
    for ranks in (None, a.ranks):
        r = {m: measure(m, a.events, ranks, base) for m in MODES}
        name = "serial" if ranks is None else f"mpirun -n {ranks}"
        print(f"{name:<22}{r['smdfs']:>12,.0f}{r['smalldata']:>16,.0f}{r['expert']:>14,.0f}"
              f"{r['smdfs'] / r['smalldata']:>13.1f}x{r['smdfs'] / r['expert']:>10.2f}x", flush=True)


if __name__ == "__main__":
    main()
