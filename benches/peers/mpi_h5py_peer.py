"""Python peer of benches/mpi_bench.rs: a workload of `mpi_workloads.py` written the common
way with mpi4py + h5py. Every rank is a writer: rank k takes events i = k, k + P, ...
(round-robin, like the demo's clients), builds each batch with numpy and appends it to its
own HDF5 file (chunked, resizable datasets: one resize + one write per dataset per batch).
After a barrier, rank 0 joins the rank files into one file of virtual datasets: the aligned
datasets in event-id order (rank k's rows land at k, k + P, ... through strided
hyperslabs), the unaligned ones concatenated rank after rank. The join file is written with
libver ('v110', 'v110') so Debian's HDF5 1.10 tools read it (with 'earliest' as the low
bound HDF5 stores every strided block of the mapping: megabytes, and h5dump 1.10 then takes
minutes to open it).

Run under mpirun (the benchmark does):  mpirun -n P python mpi_h5py_peer.py OUT_DIR EVENTS [WORKLOAD]
Rank 0 prints one JSON line: {"events": N, "seconds": S, "bytes": B}, seconds from a barrier
after start-up to the join file closed.
"""

import os
import sys

from mpi4py import MPI
import h5py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mpi_workloads import ALIGNED, UNALIGNED, columns, report, start  # noqa: E402


def main():
    run = start(MPI)
    out, n, workload, batch, comm, rank, size, mine = run[:8]
    path = os.path.join(out, f"rank{rank:05d}.h5")
    with h5py.File(path, "w") as f:
        d = {
            name: f.create_dataset(name, shape=(0,) + shape, maxshape=(None,) + shape, dtype=dtype,
                                   chunks=(batch,) + shape, fillvalue=fill)
            for name, dtype, shape, fill in ALIGNED[workload] + UNALIGNED[workload]
        }
        for s in range(0, len(mine), batch):
            for name, v in columns(workload, mine[s:s + batch]).items():
                dset = d[name]
                at = dset.shape[0]
                dset.resize(at + len(v), axis=0)
                dset[at:] = v
    comm.Barrier()

    if rank == 0:
        per_rank = [len(range(k, n, size)) for k in range(size)]
        with h5py.File(os.path.join(out, "run.h5"), "w", libver=("v110", "v110")) as f, \
                h5py.File(path, "r") as first:
            for name, _, _, _ in ALIGNED[workload]:
                src = first[name]
                layout = h5py.VirtualLayout(shape=(n,) + src.shape[1:], dtype=src.dtype)
                for k in range(size):
                    vs = h5py.VirtualSource(f"rank{k:05d}.h5", name, shape=(per_rank[k],) + src.shape[1:])
                    layout[k::size] = vs
                f.create_virtual_dataset(name, layout, fillvalue=src.fillvalue)
            if UNALIGNED[workload]:
                counts = []
                for k in range(size):
                    with h5py.File(os.path.join(out, f"rank{k:05d}.h5"), "r") as r:
                        counts.append(r[UNALIGNED[workload][0][0]].shape[0])
                for name, dtype, _, _ in UNALIGNED[workload]:
                    layout = h5py.VirtualLayout(shape=(sum(counts),), dtype=dtype)
                    at = 0
                    for k in range(size):
                        layout[at:at + counts[k]] = h5py.VirtualSource(f"rank{k:05d}.h5", name, shape=(counts[k],))
                        at += counts[k]
                    f.create_virtual_dataset(name, layout)
        report(run, MPI, sum(os.path.getsize(os.path.join(out, e)) for e in os.listdir(out)))


if __name__ == "__main__":
    main()
