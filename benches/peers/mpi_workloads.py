"""The two workloads of benches/mpi_bench.rs as numpy batches, shared by its Python peers.

- ``demo``: the demo run (docs/ARCHITECTURE.md "The demo run"), 4096-event batches. Its
  ragged ``tag`` is fixed-length 16-byte strings here (the common way: variable-length data
  cannot back an HDF5 virtual dataset) and the unaligned ``unaligned_hits`` group keeps its
  own rows.
- ``arrays``: what users who already hold arrays write, 1000-event batches of ``energy`` f64
  = ``i * 0.5`` and ``wave`` f32[64] with element j = ``i + j`` (264 B of values per event,
  plus the 8-byte event id ``1000 + 3 * i``).

Rank k of P takes events i = k, k + P, ... (round-robin, like smdfs's demo clients).
``start`` and ``report`` are the peers' shared command line and result line.
"""

import json
import os
import sys
from collections import namedtuple

import numpy as np

BATCH = {"demo": 4096, "arrays": 1000}

# (name, dtype, per-row shape, fill) of the aligned columns, then of the unaligned ones.
ALIGNED = {
    "demo": [
        ("timestamp", "<u8", (), None),
        ("energy", "<f8", (), None),
        ("det/image", "<u2", (4, 8), None),
        ("count", "<i8", (), None),
        ("maybe", "<f4", (), np.float32("nan")),
        ("_present/maybe", "|b1", (), None),
        ("tag", "S16", (), None),
    ],
    "arrays": [
        ("timestamp", "<u8", (), None),
        ("energy", "<f8", (), None),
        ("wave", "<f4", (64,), None),
    ],
}
UNALIGNED = {
    "demo": [("unaligned_hits", "<u4", (), None), ("unaligned_hits_timestamp", "<u8", (), None)],
    "arrays": [],
}

_RC = np.arange(32, dtype=np.int64).reshape(4, 8)  # 8r + c
_J = np.arange(64, dtype=np.float32)


def columns(workload, i):
    """The batch of events ``i`` (an int64 array) as {name: numpy array}, in ALIGNED then
    UNALIGNED order."""
    ts = (1000 + 3 * i).astype("<u8")
    if workload == "arrays":
        return {
            "timestamp": ts,
            "energy": i * 0.5,
            "wave": i.astype(np.float32)[:, None] + _J,
        }
    even = i % 2 == 0
    hits = i % 5 == 0
    return {
        "timestamp": ts,
        "energy": i * 0.5,
        "det/image": ((i[:, None, None] + _RC) % 65536).astype("<u2"),
        "count": -i,
        "maybe": np.where(even, i, np.nan).astype("<f4"),
        "_present/maybe": even,
        "tag": np.char.add(b"evt", i.astype("S")),
        "unaligned_hits": i[hits].astype("<u4"),
        "unaligned_hits_timestamp": ts[hits],
    }



Start = namedtuple("Start", "out n workload batch comm rank size mine t0")


def start(MPI):
    """Parses the peers' command line ``OUT_DIR EVENTS [WORKLOAD]`` (workload ``demo`` by
    default), makes OUT_DIR on rank 0 and waits for every rank; returns the run's
    parameters, this rank's event numbers ``mine`` (int64) and the start time ``t0``."""
    usage = f"usage: mpirun -n P python {os.path.basename(sys.argv[0])} OUT_DIR EVENTS [{'|'.join(BATCH)}]"
    if len(sys.argv) not in (3, 4):
        sys.exit(usage)
    out = sys.argv[1]
    try:
        n = int(sys.argv[2])
    except ValueError:
        sys.exit(f"EVENTS: expected an integer, got {sys.argv[2]!r}\n{usage}")
    workload = sys.argv[3] if len(sys.argv) > 3 else "demo"
    if workload not in BATCH:
        sys.exit(f"WORKLOAD: expected one of {sorted(BATCH)}, got {workload!r}\n{usage}")
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if rank == 0:
        os.makedirs(out, exist_ok=True)
    comm.Barrier()
    mine = np.arange(rank, n, size, dtype=np.int64)
    return Start(out, n, workload, BATCH[workload], comm, rank, size, mine, MPI.Wtime())


def report(s, MPI, nbytes):
    """Rank 0's result line: ``{"events": N, "seconds": S, "bytes": B}``, seconds since
    ``s.t0``."""
    seconds = MPI.Wtime() - s.t0
    print(json.dumps({"events": s.n, "seconds": seconds, "bytes": nbytes}), flush=True)
