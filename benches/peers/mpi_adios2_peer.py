"""ADIOS2 peer of benches/mpi_bench.rs: a workload of `mpi_workloads.py` written with the
PyPI `adios2` wheel (serial, no MPI inside ADIOS) under mpi4py, the way its users write
per-rank output: every rank opens its own BP5 output `rank<k>.bp` and writes each numpy
batch (the same batches as the h5py peer: rank k takes events i = k, k + P, ...) as one
step of local-array variables (`Put` deferred, `EndStep` flushes). There is no join: ADIOS2
readers open the rank outputs one by one, and nothing orders the rows by event id.

Run under mpirun (the benchmark does):  mpirun -n P python mpi_adios2_peer.py OUT_DIR EVENTS [WORKLOAD]
Rank 0 prints one JSON line: {"events": N, "seconds": S, "bytes": B}, seconds from a barrier
after start-up to every rank's output closed (a second barrier).
"""

import os
import sys

import numpy as np
from mpi4py import MPI
import adios2.bindings as ab

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mpi_workloads import columns, report, start  # noqa: E402


def tree_bytes(d):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)


def main():
    run = start(MPI)
    out, n, workload, batch, comm, rank, size, mine = run[:8]
    adios = ab.ADIOS()
    io = adios.DeclareIO(f"rank{rank}")
    io.SetEngine("BP5")
    engine = io.Open(os.path.join(out, f"rank{rank:05d}.bp"), ab.Mode.Write)
    variables = {}
    for s in range(0, len(mine), batch):
        cols = columns(workload, mine[s:s + batch])
        engine.BeginStep()
        for name, v in cols.items():
            if v.dtype.kind == "S" or v.dtype == np.bool_:
                v = v.view(np.uint8).reshape(len(v), -1)  # fixed strings and masks as bytes
            v = np.ascontiguousarray(v)
            cols[name] = v  # deferred Put: the array must live until EndStep
            count = list(v.shape)
            var = variables.get(name)
            if var is None:
                var = variables[name] = io.DefineVariable(name, v, [], [], count, False)
            else:
                var.SetSelection([[], count])
            engine.Put(var, v, ab.Mode.Deferred)
        engine.EndStep()
    engine.Close()
    comm.Barrier()

    if rank == 0:
        report(run, MPI, tree_bytes(out))


if __name__ == "__main__":
    main()
