"""Python peer of benches/mpi_bench.rs: the demo run (docs/ARCHITECTURE.md "The demo run") written the
common way with mpi4py + h5py. Every rank is a writer: rank k takes events i = k, k + P, ...
(round-robin, like the demo's clients), builds each batch of 4096 events with numpy and
appends it to its own HDF5 file (chunked, resizable datasets: one resize + one write per
dataset per batch). After a barrier, rank 0 joins the rank files into one file of virtual
datasets: the aligned datasets in event-id order (rank k's rows land at k, k + P, ... through
strided hyperslabs), the unaligned `unaligned_hits` concatenated rank after rank. The join file
is written with libver ('v110', 'v110') so Debian's HDF5 1.10 tools read it (with 'earliest' as
the low bound HDF5 stores every strided block of the mapping: megabytes, and h5dump 1.10 then
takes minutes to open it).

Differences from smdfs's run, kept where the common way differs: `tag` is fixed-length 16-byte
strings (variable-length data cannot back a virtual dataset), and the unaligned group is in
rank order, not event-id order.

Run under mpirun (the benchmark does):  mpirun -n P python mpi_h5py_peer.py OUT_DIR EVENTS
Rank 0 prints one JSON line: {"events": N, "seconds": S, "bytes": B}, seconds from a barrier
after start-up to the join file closed.
"""

import json
import os
import sys

import numpy as np
from mpi4py import MPI
import h5py

BATCH = 4096


def main():
    out, n = sys.argv[1], int(sys.argv[2])
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if rank == 0:
        os.makedirs(out, exist_ok=True)
    comm.Barrier()
    t0 = MPI.Wtime()

    mine = np.arange(rank, n, size, dtype=np.int64)
    path = os.path.join(out, f"rank{rank:05d}.h5")
    with h5py.File(path, "w") as f:
        def ds(name, dtype, shape=(), fill=None):
            return f.create_dataset(name, shape=(0,) + shape, maxshape=(None,) + shape, dtype=dtype,
                                    chunks=(BATCH,) + shape, fillvalue=fill)
        d = {
            "timestamp": ds("timestamp", "<u8"),
            "energy": ds("energy", "<f8"),
            "det/image": ds("det/image", "<u2", (4, 8)),
            "count": ds("count", "<i8"),
            "maybe": ds("maybe", "<f4", fill=np.float32("nan")),
            "_present/maybe": ds("_present/maybe", "|b1"),
            "tag": ds("tag", "S16"),
            "unaligned_hits": ds("unaligned_hits", "<u4"),
            "unaligned_hits_timestamp": ds("unaligned_hits_timestamp", "<u8"),
        }
        rc = np.arange(32, dtype=np.int64).reshape(4, 8)  # 8r + c
        for s in range(0, len(mine), BATCH):
            i = mine[s:s + BATCH]
            even = i % 2 == 0
            hits = i % 5 == 0
            cols = {
                "timestamp": (1000 + 3 * i).astype("<u8"),
                "energy": i * 0.5,
                "det/image": ((i[:, None, None] + rc) % 65536).astype("<u2"),
                "count": -i,
                "maybe": np.where(even, i, np.nan).astype("<f4"),
                "_present/maybe": even,
                "tag": np.char.add(b"evt", i.astype("S")),
                "unaligned_hits": i[hits].astype("<u4"),
                "unaligned_hits_timestamp": (1000 + 3 * i[hits]).astype("<u8"),
            }
            for name, v in cols.items():
                dset = d[name]
                at = dset.shape[0]
                dset.resize(at + len(v), axis=0)
                dset[at:] = v
    comm.Barrier()

    if rank == 0:
        per_rank = [len(range(k, n, size)) for k in range(size)]
        with h5py.File(os.path.join(out, "run.h5"), "w", libver=("v110", "v110")) as f, \
                h5py.File(path, "r") as first:
            for name in ["timestamp", "energy", "det/image", "count", "maybe", "_present/maybe", "tag"]:
                src = first[name]
                layout = h5py.VirtualLayout(shape=(n,) + src.shape[1:], dtype=src.dtype)
                for k in range(size):
                    vs = h5py.VirtualSource(f"rank{k:05d}.h5", name, shape=(per_rank[k],) + src.shape[1:])
                    layout[k::size] = vs
                f.create_virtual_dataset(name, layout, fillvalue=src.fillvalue)
            counts = []
            for k in range(size):
                with h5py.File(os.path.join(out, f"rank{k:05d}.h5"), "r") as r:
                    counts.append(r["unaligned_hits"].shape[0])
            for name, dtype in [("unaligned_hits", "<u4"), ("unaligned_hits_timestamp", "<u8")]:
                layout = h5py.VirtualLayout(shape=(sum(counts),), dtype=dtype)
                at = 0
                for k in range(size):
                    layout[at:at + counts[k]] = h5py.VirtualSource(f"rank{k:05d}.h5", name, shape=(counts[k],))
                    at += counts[k]
                f.create_virtual_dataset(name, layout)
        seconds = MPI.Wtime() - t0
        total = sum(os.path.getsize(os.path.join(out, e)) for e in os.listdir(out))
        print(json.dumps({"events": n, "seconds": seconds, "bytes": total}), flush=True)


if __name__ == "__main__":
    main()
