"""The writer: the smalldata API over the Rust engine.

``SmallData`` is the class smalldata users know; switching is one import line::

    from smdfs import SmallData
    smd = SmallData("out", servers=2, batch_size=1000)      # or filename="my.h5"
    for i in smd.round_robin(range(n)):                    # this rank's share
        smd.event(i, energy=e[i], det={"image": img[i]})
    if smd.summary:                                        # every client rank
        smd.save_summary(n_events=smd.sum(count))          # collective over clients only
    smd.done()

Run it with ``python script.py`` (threads mode: this process writes every event, servers are
threads) or ``mpirun -n P python script.py`` (MPI mode: the last ``servers`` ranks write
shards, the others are clients). The hot path (``event``) is one call into Rust.

Processes forked from the writer without exec (a ``multiprocessing`` pool with the ``fork``
start method) cannot write through it — its server threads are not in them: every call
there raises ``smdfs.Error`` naming both processes (start a writer in each process, or use
MPI ranks). Nor do they hold the run's writer lock: once the writer finishes or is killed,
the run is no longer *writing* even while they live, and a new writer may replace it.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import weakref
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np

from . import _smdfs
from ._smdfs import Client, _Writer

__all__ = ["SmallData", "Client"]

# Writers not yet done, so an uncaught exception under MPI can fail the job at once.
_open_writers: "weakref.WeakSet[SmallData]" = weakref.WeakSet()
_hook_installed = False


def _under_mpi_launcher() -> bool:
    return any(v in os.environ for v in ("PMI_SIZE", "PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE"))


def _install_mpi_excepthook() -> None:
    """Under MPI, an uncaught exception on one rank aborts the job with its message.

    Without this the other ranks could wait forever in a collective call the failed rank
    never makes. (mpi4py users know the same advice as ``python -m mpi4py script.py``.)
    """
    global _hook_installed
    if _hook_installed:
        return
    _hook_installed = True
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        if any(w._mpi for w in list(_open_writers)):
            sys.stderr.flush()
            _smdfs._abort_job(f"uncaught {kind.__name__} on this rank: {value}")

    sys.excepthook = hook


def _flatten(prefix: str, d: Mapping[str, Any], out: list) -> None:
    for k, v in d.items():
        if not isinstance(k, str):
            raise TypeError(f"field names must be str, got {type(k).__name__}")
        path = f"{prefix}/{k}" if prefix else k
        if isinstance(v, Mapping):
            _flatten(path, v, out)
        else:
            out.append((path, v))


def _field_attrs(long_name, attrs):
    """``long_name=`` and ``attrs=`` as one ``{path: {name: text}}`` map."""
    out = {str(p): {str(k): str(v) for k, v in named.items()} for p, named in (attrs or {}).items()}
    for p, text in (long_name or {}).items():
        out.setdefault(str(p), {})["long_name"] = str(text)
    return out


class SmallData(_Writer):
    """A run being written: the smalldata API (``event``, ``sum``, ``save_summary``, ``done``).

    ``SmallData(dir=None, *, filename=None, servers=2, batch_size=1000, callbacks=(),
    unaligned=(), fill=None, units=None, long_name=None, attrs=None, sync_commits=False,
    overwrite=False, clients=None,
    ragged=(), batch_bytes=1 MiB, max_batches_in_flight=4, private=False)``

    - ``dir``: the run directory; or ``filename="my.h5"`` (what smalldata scripts pass): the
      run goes to ``my.smd/`` beside it and ``done()`` also writes ``my.h5``, a standalone
      HDF5 file that h5py reads with no mount.
    - ``servers``: shards written in parallel (threads; under ``mpirun``, the last
      ``servers`` ranks). ``batch_size``: events a client hands to a server at once.
    - ``callbacks``: callables called with each event as a dict of its fields plus
      ``timestamp``, on the process that wrote it.
    - ``unaligned``: fields with their own ``timestamp`` (rows only where present, no fill);
      names starting with ``unaligned_`` are unaligned too.
    - ``ragged``: fields whose 1-D arrays vary in length per event (names starting with
      ``var_`` are ragged too). ``fill``: ``{path: value}`` replaces a field's default fill
      (NaN for floats, -99999 for int32/int64, the type's extreme otherwise).
      ``units``: ``{path: "eV"}``. ``long_name``: ``{path: "photon energy"}`` (CF's descriptive
      name, which xarray shows); ``attrs``: ``{path: {name: text}}``, other text attributes
      (names smdfs sets itself, such as ``units`` or ``_FillValue``, are a ``SchemaError``).
      All three appear on the field's dataset in ``run.h5``, ``run.zarr`` and exports.
    - ``sync_commits``: fdatasync every commit (survives power loss, not only a crash).
    - ``overwrite``: replace a run already in ``dir`` (otherwise ``RunExistsError``).
    - ``private``: create the run directory owner-only (mode 0700): nobody else can list or
      read the run.
    - ``clients``: expected client count; checked against the ranks under MPI, ignored in
      serial mode.

    Under ``mpirun`` the constructor, reductions (on client ranks) and ``done()`` are
    collective. An uncaught exception on any rank aborts the job with its message.
    """

    def __init__(
        self,
        dir: Optional[str | os.PathLike] = None,
        *,
        filename: Optional[str | os.PathLike] = None,
        servers: int = 2,
        batch_size: int = 1000,
        callbacks: Sequence[Callable[[dict], Any]] = (),
        unaligned: Iterable[str] = (),
        fill: Optional[Mapping[str, Any]] = None,
        units: Optional[Mapping[str, str]] = None,
        long_name: Optional[Mapping[str, str]] = None,
        attrs: Optional[Mapping[str, Mapping[str, str]]] = None,
        sync_commits: bool = False,
        overwrite: bool = False,
        clients: Optional[int] = None,
        ragged: Iterable[str] = (),
        batch_bytes: int = 1 << 20,
        max_batches_in_flight: int = 4,
        private: bool = False,
    ) -> None:
        if (dir is None) == (filename is None):
            raise TypeError("SmallData() takes a run directory or filename=..., not both or neither")
        self.filename: Optional[str] = None
        if filename is not None:
            filename = os.fspath(filename)
            root, _ = os.path.splitext(filename)
            self.filename = filename
            dir = root + ".smd"
            if os.path.exists(filename) and not overwrite:
                # smalldata replaces its output file; keep that, but never lose a run.
                pass
        self.dir: str = os.fspath(dir)
        self._mpi = _under_mpi_launcher()
        if self._mpi:
            _install_mpi_excepthook()
        self._clients: "weakref.WeakSet[Client]" = weakref.WeakSet()
        self._start(
            self.dir,
            int(servers),
            int(batch_size),
            int(batch_bytes),
            int(max_batches_in_flight),
            list(unaligned),
            dict(fill or {}),
            {k: str(v) for k, v in (units or {}).items()},
            _field_attrs(long_name, attrs),
            bool(sync_commits),
            bool(overwrite or filename is not None),
            list(ragged),
            list(callbacks),
            private=bool(private),
        )
        rank, size, nservers, nclients, is_client, index = self._place()
        self._mpi = size > 1
        self.rank, self.size = rank, size
        self.n_clients, self.n_servers = nclients, nservers
        self._is_client, self._index = is_client, index
        _open_writers.add(self)
        if clients is not None and self._mpi and clients != nclients:
            self._fail(
                f"clients={clients}, but this job has {nclients} client ranks "
                f"({size} ranks minus {nservers} servers)"
            )

    def _fail(self, why: str) -> None:
        err = _smdfs.Error(why)
        if self._mpi:
            _smdfs._abort_job(why)
        raise err

    # -- where am I ---------------------------------------------------------------------------

    @property
    def summary(self) -> bool:
        """True on every client rank (and in serial mode), False on server ranks.

        Code under ``if smd.summary:`` runs on client ranks only; the reductions it calls
        (``sum``, ``min``, ``max``, ``prod``) are collective over exactly those ranks.
        """
        return self._is_client

    @property
    def is_client(self) -> bool:
        """True if this process writes events (always in serial mode)."""
        return self._is_client

    @property
    def mpi(self) -> bool:
        """True under ``mpirun`` with more than one rank (MPI mode)."""
        return self._mpi

    def round_robin(self, iterable: Iterable) -> Iterator:
        """This process's round-robin share of ``iterable``: all of it in serial mode; on
        client rank k of C the items k, k + C, k + 2C, ...; nothing on server ranks."""
        if not self._is_client:
            return iter(())
        if not self._mpi:
            return iter(iterable)
        k, c = self._index, self.n_clients
        if isinstance(iterable, range):
            return iter(iterable[k::c])
        return (x for i, x in enumerate(iterable) if i % c == k)

    def block(self, iterable: Iterable) -> Iterator:
        """This process's contiguous share: all of it in serial mode; on client rank k of C
        the k-th of C near-equal blocks; nothing on server ranks."""
        if not self._is_client:
            return iter(())
        if not self._mpi:
            return iter(iterable)
        items = iterable if isinstance(iterable, (range, Sequence)) else list(iterable)
        n, c, k = len(items), self.n_clients, self._index
        base, extra = divmod(n, c)
        start = k * base + min(k, extra)
        return iter(items[start : start + base + (1 if k < extra else 0)])

    # -- writing ------------------------------------------------------------------------------

    def event_batch(self, ts, *dicts: Mapping[str, Any], **columns: Any) -> None:
        """Writes many events at once: row i of every column is the event with id ``ts[i]``.

        ``ts``: integers (a numpy array or sequence). Columns: numpy arrays whose first axis
        is the events (``energy=e`` with ``e.shape == (n,)``, ``image=imgs`` with shape
        ``(n, 4, 8)``), or sequences of per-event values for bytes, text and ragged fields;
        nested dicts as in ``event``. A numpy masked array leaves its masked rows out (those
        events lack the field: fill for aligned fields, no row for unaligned ones). The columns go
        whole to the Rust batch API (``Client::events``) with the GIL released: validated once
        per call, copied once per column, no per-event work (a column of Python scalars falls
        back to a per-event loop in Rust).
        """
        ts = np.asarray(ts)
        if ts.ndim != 1:
            raise ValueError(f"event_batch: ts must be 1-D, got shape {ts.shape}")
        if ts.size and ts.dtype.kind not in "iu":
            raise TypeError(f"event_batch: ts must hold integers, got {ts.dtype}")
        if ts.dtype.kind == "i" and ts.size and ts.min() < 0:
            raise ValueError("event_batch: event ids must be non-negative")
        ts = np.ascontiguousarray(ts, dtype=np.uint64)
        cols: list = []
        for d in dicts:
            _flatten("", d, cols)
        _flatten("", columns, cols)
        prepared = []
        for path, col in cols:
            mask = None
            if isinstance(col, np.ma.MaskedArray):
                m = np.ma.getmaskarray(col)
                mask = np.ascontiguousarray(m.reshape(len(m), -1).all(axis=1) if m.ndim > 1 else m)
                col = col.data
            prepared.append((path, col, mask))
        self._event_batch(ts, prepared)

    def client(self) -> Client:
        """A new writer handle for one more Python thread: ``c = smd.client()`` then
        ``c.event(ts, ...)`` in that thread, ``c.close()`` when it is done (``done()`` closes
        handles still open). The GIL is released while a handle hands batches to servers."""
        c = self._client()
        self._clients.add(c)
        return c

    # -- reductions and summary ---------------------------------------------------------------

    def _reduce(self, value: Any, op: str) -> Any:
        a = np.asarray(value)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{op}(): expected numbers or a numeric array, got {a.dtype}")
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))
        head = json.dumps({"dtype": a.dtype.str, "shape": list(a.shape)}).encode()
        mine = len(head).to_bytes(4, "little") + head + a.tobytes()
        parts = []
        for i, b in enumerate(self._allgather_clients(mine)):
            n = int.from_bytes(b[:4], "little")
            h = json.loads(b[4 : 4 + n])
            if tuple(h["shape"]) != a.shape:
                raise _smdfs.Error(
                    f"{op}(): client {i} gave shape {tuple(h['shape'])}, this client {a.shape}; "
                    "every client must give the same shape"
                )
            parts.append(np.frombuffer(b[4 + n :], dtype=np.dtype(h["dtype"])).reshape(a.shape))
        stacked = np.stack([np.asarray(p, dtype=np.result_type(*parts)) for p in parts])
        out = {"sum": np.sum, "min": np.min, "max": np.max, "prod": np.prod}[op](stacked, axis=0)
        if np.ndim(value) == 0:
            out = out.item() if isinstance(value, (int, float, bool)) else out[()]
        return out

    def sum(self, value: Any) -> Any:
        """Sum of ``value`` over every client process (elementwise for arrays).

        Collective over client ranks only: call it on every client rank (e.g. under
        ``if smd.summary:``), never on server ranks. Serial mode returns ``value``."""
        return self._reduce(value, "sum")

    def min(self, value: Any) -> Any:
        """Minimum of ``value`` over every client process (elementwise); see ``sum``."""
        return self._reduce(value, "min")

    def max(self, value: Any) -> Any:
        """Maximum of ``value`` over every client process (elementwise); see ``sum``."""
        return self._reduce(value, "max")

    def prod(self, value: Any) -> Any:
        """Product of ``value`` over every client process (elementwise); see ``sum``."""
        return self._reduce(value, "prod")

    def save_summary(self, *dicts: Mapping[str, Any], **values: Any) -> None:
        """Saves values once per run (``/summary/<name>`` in the view and the exported
        file): numbers, numpy scalars and arrays, str. Nested dicts become paths. Under MPI,
        rank 0's values are stored (call it on every client rank, as smalldata scripts do)."""
        items: list = []
        for d in dicts:
            _flatten("", d, items)
        _flatten("", values, items)
        self._save_summary(items)

    # -- finishing ----------------------------------------------------------------------------

    def done(self) -> None:
        """Writes the last events, closes the shards, builds the run's index and marks it
        complete (collective under MPI; returns on every rank). With ``filename=``, rank 0
        then writes the standalone HDF5 file."""
        for c in list(self._clients):
            c.close()
        events, dups = self._done()
        _open_writers.discard(self)
        self.events = events
        self.duplicates = dups
        if self.filename is not None and self.rank == 0:
            _smdfs._export(self.dir, self.filename)

    def __enter__(self) -> "SmallData":
        return self

    def __exit__(self, kind, value, tb) -> bool:
        if kind is None:
            self.done()
        else:
            self._leave()
        return False

    def _leave(self) -> None:
        _open_writers.discard(self)
        self._abandon()

    def __repr__(self) -> str:
        mode = f"MPI rank {self.rank} of {self.size}" if self._mpi else "serial"
        return f"<smdfs.SmallData {self.dir!r} ({mode}, {self.n_servers} servers)>"


@atexit.register
def _forget_writers() -> None:
    # A script that never called done(): under MPI the engine fails the job at exit (rather
    # than let the other ranks wait); in serial mode the run stays readable as crashed.
    for w in list(_open_writers):
        try:
            w._leave()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
