"""smdfs: write one parallel for-loop's results into one dataset, read it back as numpy.

Writer (the smalldata API; run with ``python`` or ``mpirun -n P python``)::

    from smdfs import SmallData
    smd = SmallData("out", servers=2, batch_size=1000)       # or filename="my.h5"
    for i in smd.round_robin(range(n)):
        smd.event(i, energy=i * 0.5, det={"image": img})
    if smd.summary:
        smd.save_summary(n_events=smd.sum(1))
    smd.done()

Reader::

    run = smdfs.open("out")
    run["energy"][:]
"""

from ._smdfs import CorruptRunError, Error, MpiError, RunExistsError, SchemaError
from .reader import open
from .writer import Client, SmallData

__all__ = ["Error", "SchemaError", "RunExistsError", "CorruptRunError", "MpiError", "SmallData", "Client", "open"]
