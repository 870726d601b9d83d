"""A smalldata-style analysis loop written with smdfs (the README's Python example).

    python smalldata_example.py OUT.h5 [N]                  # serial
    mpirun -n 4 python smalldata_example.py OUT.h5 [N]      # 2 server ranks + 2 client ranks

Writes the run to OUT.smd/ and the standalone HDF5 file OUT.h5, then prints what was written.
"""

import sys

import numpy as np

import smdfs
from smdfs import SmallData

out = sys.argv[1] if len(sys.argv) > 1 else "my.h5"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000

smd = SmallData(filename=out, servers=2, batch_size=1000)
rows, cols = np.arange(4)[:, None], np.arange(8)[None, :]
processed = 0
for i in smd.round_robin(range(n)):  # this rank's share (all of it in serial mode)
    ts = 1000 + 3 * i
    image = ((i + 8 * rows + cols) % 65536).astype(np.uint16)
    smd.event(ts, energy=i * 0.5, det={"image": image}, count=-i)  # nested dicts: det/image
    if i % 2 == 0:
        smd.event(ts, maybe=np.float32(i))  # same ts: merged into the same event
    if i % 5 == 0:
        smd.event(ts, unaligned_hits=np.uint32(i))  # unaligned_*: its own timestamp column
    smd.event(ts, tag=f"evt{i}")  # text: ragged
    processed += 1
if smd.summary:  # True on every client rank (and in serial mode)
    smd.save_summary(n_events=smd.sum(processed), max_energy=smd.max((n - 1) * 0.5))
smd.done()  # collective: every rank returns; rank 0 has written OUT.h5

if smd.rank == 0:
    print(f"wrote {smd.events} events to {smd.dir} and {out} "
          f"({'MPI, %d ranks' % smd.size if smd.mpi else 'serial'}, {smd.n_servers} servers)")
    import h5py

    with h5py.File(out, "r") as f:
        f.visititems(lambda name, d: print(f"  {name}: {d.dtype} {d.shape}") if isinstance(d, h5py.Dataset) else None)
        print("  energy[:5] =", f["energy"][:5], " summary/n_events =", f["summary/n_events"][()])
    # Read it back with the reader (no mount, no export needed).
    run = smdfs.open(smd.dir)
    print(f"smdfs.open({smd.dir!r}): {len(run)} events, state {run.state}, summary {run.summary}")
    print("  energy[:5] =", run["energy"][:5], " det/image[1][0] =", run["det/image"][1][0])
    print("  maybe[:4] =", run["maybe"][:4], " tag[:3] =", list(run["tag"][:3]))
