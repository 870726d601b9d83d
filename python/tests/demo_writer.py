"""The DESIGN.md demo run written the smalldata way (used by the tests, serial or under mpirun).

usage: demo_writer.py OUT.h5 N SERVERS [--mpi4py] [--batch]
Writes OUT.smd/ and exports OUT.h5. --mpi4py imports mpi4py (and so starts MPI) first;
--batch writes through event_batch instead of one event() per event.
"""

import sys

if "--mpi4py" in sys.argv:
    from mpi4py import MPI  # noqa: F401  (MPI started by mpi4py before smdfs)

import numpy as np

from smdfs import SmallData

out, n, servers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
smd = SmallData(filename=out, servers=servers, batch_size=64)
rows, cols = np.arange(4)[:, None], np.arange(8)[None, :]
mine = list(smd.round_robin(range(n)))
if "--batch" in sys.argv:
    i = np.array(mine, dtype=np.int64)
    if len(i):
        img = ((i[:, None, None] + 8 * rows + cols) % 65536).astype(np.uint16)
        smd.event_batch(
            1000 + 3 * i,
            energy=i * 0.5,
            det={"image": img},
            count=-i,
            maybe=np.ma.masked_array(i.astype(np.float32), mask=i % 2 != 0),
            unaligned_hits=np.ma.masked_array(i.astype(np.uint32), mask=i % 5 != 0),
            tag=[b"evt%d" % k for k in i],
        )
else:
    for i in mine:
        ts = 1000 + 3 * i
        smd.event(ts, energy=i * 0.5, det={"image": ((i + 8 * rows + cols) % 65536).astype(np.uint16)}, count=-i)
        if i % 2 == 0:
            smd.event(ts, maybe=np.float32(i))
        if i % 5 == 0:
            smd.event(ts, unaligned_hits=np.uint32(i))
        smd.event(ts, tag=b"evt%d" % i)
if smd.summary:
    smd.save_summary(n_events=smd.sum(len(mine)), max_energy=smd.max(max(mine) * 0.5 if mine else 0.0))
smd.done()
