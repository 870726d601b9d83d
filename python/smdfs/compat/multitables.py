"""multitables' API over smdfs's parallel HDF5 reader, for any HDF5 file (and a mounted
``run.h5``).

Streaming::

    from smdfs.compat.multitables import Streamer
    stream = Streamer(filename="data.h5")
    for row in stream.get_generator(path="/data", ordered=False):
        ...                                       # rows of blocks read concurrently

Random access::

    from smdfs.compat.multitables import Reader
    reader = Reader(filename="data.h5")
    ds = reader.get_dataset(path="/table")
    stage = ds.create_stage(10)
    req = reader.request(ds["energy"][30:35], stage)   # or ds[30:35]
    req.get()                                     # a copy
    with req.get_unsafe() as data: ...           # the stage's memory (reused by later requests)
    with req.get_proxy() as data: ...            # a proxy that refuses access after the block
    reader.close()

Blocks of contiguous datasets are read with plain ``pread`` on Rust threads (no libhdf5
lock, no child processes, no shared-memory copies); chunked or compressed datasets go
through libhdf5. Dataset types are read by h5py (``pip install h5py``).

Differences from multitables: requests are built by indexing (``ds[a:b]``, ``ds[i]``,
``ds[[i, j]]``, ``ds['col'][a:b]``, ``ds.read(start, stop, step)``); PyTables queries
(``where``, ``read_sorted``) are not provided; variable-length datasets raise ValueError.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import numpy as np

from .. import _smdfs

__all__ = ["Streamer", "Reader", "Dataset", "Stage", "Request", "ReleasedResourceError"]

_BLOCK_BYTES = 1 << 20


def _h5_meta(filename: str, path: str) -> tuple:
    import h5py

    with h5py.File(filename, "r") as f:
        if path not in f:
            raise KeyError(f"{filename}: no dataset {path!r}")
        d = f[path]
        if not isinstance(d, h5py.Dataset):
            raise ValueError(f"{filename}: {path!r} is a group, not a dataset")
        if d.dtype.kind == "O" or h5py.check_vlen_dtype(d.dtype) is not None:
            raise ValueError(f"{filename}: {path!r} has a variable-length type (no fixed-size rows)")
        return d.dtype, tuple(d.shape), (d.chunks[0] if d.chunks else None)


def _block_rows(row_bytes: int, block_size: Optional[int], chunk_rows: Optional[int]) -> int:
    if block_size:
        return int(block_size)
    rows = max(1, _BLOCK_BYTES // max(1, row_bytes))
    if chunk_rows:
        rows = max(chunk_rows, rows // chunk_rows * chunk_rows)
    return rows


class Streamer:
    """Streams a dataset of ``filename`` in blocks read concurrently."""

    def __init__(self, filename: "str | os.PathLike", **kw_args: Any) -> None:
        self._filename = os.fspath(filename)
        self._file: Any = None

    def _open(self, n_procs: Optional[int]) -> Any:
        if self._file is None:
            self._file = _smdfs.H5FileHandle(self._filename, n_procs or 4)
        return self._file

    def _blocks(self, path: str, n_procs: Optional[int], read_ahead: Optional[int], block_size: Optional[int],
                ordered: bool, field: Optional[str], cyclic: bool, remainder: bool) -> Iterator[np.ndarray]:
        dtype, shape, chunk = _h5_meta(self._filename, path)
        if not shape or shape[0] == 0:
            raise RuntimeError(f"{self._filename}: cannot stream the empty dataset {path!r}")
        f = self._open(n_procs)
        _, _, row_bytes, _ = f.dataset(path)
        rows = _block_rows(row_bytes, block_size, chunk)
        threads = n_procs or 2
        depth = read_ahead or 2 * threads + 1
        while True:
            s = f.stream(path, rows, threads, ordered, depth)
            try:
                while True:
                    b = s.next_block()
                    if b is None:
                        break
                    _, n, data = b
                    if n < rows and not remainder and not cyclic:
                        continue
                    block = data.view(dtype).reshape((n,) + shape[1:])
                    yield block[field] if field is not None else block
            finally:
                s.close()
            if not cyclic:
                return

    def get_generator(self, path: str, n_procs: Optional[int] = None, read_ahead: Optional[int] = None,
                      cyclic: bool = False, block_size: Optional[int] = None, ordered: bool = False,
                      field: Optional[str] = None, remainder: bool = True) -> Iterator[Any]:
        """Yields the rows of dataset ``path``: blocks of ``block_size`` rows (default about
        1 MiB, a multiple of the chunk rows) read by ``n_procs`` threads, ``read_ahead``
        blocks ahead, in completion order unless ``ordered``. ``field`` picks one column of
        a compound dataset; ``cyclic`` starts over at the end, forever."""
        for block in self._blocks(path, n_procs, read_ahead, block_size, ordered, field, cyclic, remainder):
            yield from block

    def get_queue(self, path: str, n_procs: Optional[int] = None, read_ahead: Optional[int] = None,
                  cyclic: bool = False, block_size: Optional[int] = None, ordered: bool = False,
                  field: Optional[str] = None, remainder: bool = False) -> "Streamer.Queue":
        """Blocks of dataset ``path`` through a queue: ``q.get()`` is a guard whose ``with``
        gives the next block (``QueueClosed`` at the end), ``q.iter()`` iterates guards. The
        last partial block comes only with ``remainder=True``."""
        return Streamer.Queue(self._blocks(path, n_procs, read_ahead, block_size, ordered, field, cyclic, remainder))

    def get_remainder(self, path: str, block_size: int) -> np.ndarray:
        """The rows after the last whole block of ``block_size`` rows."""
        dtype, shape, _ = _h5_meta(self._filename, path)
        start = shape[0] // block_size * block_size
        with Reader(self._filename) as r:
            return r.request(r.get_dataset(path)[start:shape[0]], None).get()

    class Queue:
        """Blocks of a stream; see :meth:`Streamer.get_queue`."""

        def __init__(self, blocks: Iterator[np.ndarray]) -> None:
            self._blocks = blocks

        def get(self) -> Any:
            """A guard for the next block, or ``QueueClosed`` after the last."""
            for b in self._blocks:
                return _guard(b)
            return QueueClosed

        def iter(self) -> Iterator[Any]:
            """Guards for every remaining block."""
            for b in self._blocks:
                yield _guard(b)

        def close(self) -> None:
            """Stops the readers."""
            close = getattr(self._blocks, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        """Closes the file (streams already started keep it until they end)."""
        self._file = None

    def __del__(self) -> None:
        self._file = None


class _QueueClosed:
    def __repr__(self) -> str:
        return "QueueClosed"


QueueClosed = _QueueClosed()


@contextmanager
def _guard(block: np.ndarray) -> Iterator[np.ndarray]:
    yield block


class ReleasedResourceError(Exception):
    """Raised on access to a ``get_proxy()`` proxy after its ``with`` block ended."""


class _Proxy:
    """Forwards to an array until released."""

    __slots__ = ("_obj",)

    def __init__(self, obj: Any) -> None:
        object.__setattr__(self, "_obj", obj)

    def _get(self) -> Any:
        obj = object.__getattribute__(self, "_obj")
        if obj is None:
            raise ReleasedResourceError("This resource has been released and is no longer accessible.")
        return obj

    def release(self) -> None:
        object.__setattr__(self, "_obj", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __getitem__(self, key: Any) -> Any:
        return self._get()[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._get()[key] = value

    def __len__(self) -> int:
        return len(self._get())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._get())

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = np.asarray(self._get())
        return a if dtype is None else a.astype(dtype)

    def __repr__(self) -> str:
        return repr(self._get())

    def __eq__(self, other: Any) -> Any:
        return self._get() == other

    def __add__(self, other: Any) -> Any:
        return self._get() + other

    def __mul__(self, other: Any) -> Any:
        return self._get() * other


class _Op:
    """A request: rows ``start:stop`` of dataset ``path``, then ``post`` applied (a step,
    an index inside the rows, a column)."""

    def __init__(self, ds: "Dataset", start: int, stop: int, post: Any = None, field: Optional[str] = None,
                 scalar: bool = False) -> None:
        self.ds, self.start, self.stop, self.post, self.field, self.scalar = ds, start, stop, post, field, scalar

    def __getitem__(self, key: Any) -> "_Op":
        """Indexes a column op (``ds['col'][30:35]``)."""
        if self.post is not None or self.start != 0 or self.stop != self.ds.shape[0]:
            raise IndexError("only a column of the whole dataset can be indexed further")
        op = self.ds[key]
        op.field = self.field
        return op

    def apply(self, raw: np.ndarray) -> np.ndarray:
        a = raw.view(self.ds.dtype).reshape((self.stop - self.start,) + tuple(self.ds.shape[1:]))
        if self.field is not None:
            a = a[self.field]
        if self.post is not None:
            a = a[self.post]
        if self.scalar:
            a = a[0]
        return a


def _norm(i: int, n: int) -> int:
    j = i + n if i < 0 else i
    if not 0 <= j < n:
        raise IndexError(f"index {i} is out of range for {n} rows")
    return j


class Dataset:
    """A dataset of a :class:`Reader`'s file: ``shape``, ``dtype``; indexing builds requests."""

    def __init__(self, reader: "Reader", path: str, dtype: np.dtype, shape: tuple) -> None:
        self._reader, self._path, self.dtype, self.shape = reader, path, dtype, shape

    @property
    def path(self) -> str:
        """The dataset's path in the file."""
        return self._path

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> _Op:
        n = self.shape[0]
        if isinstance(key, str):
            if self.dtype.names is None or key not in self.dtype.names:
                raise KeyError(f"{self._path} has no column {key!r} (columns: {self.dtype.names})")
            return _Op(self, 0, n, field=key)
        if key is Ellipsis:
            raise IndexError("a single ellipsis is not a request: use ds[:]")
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            i = _norm(int(key), n)
            return _Op(self, i, i + 1, (0,) + rest if rest else None, scalar=not rest)
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step < 0:
                lo = stop + 1
                return _Op(self, lo, start + 1, (slice(None, None, step),) + rest) if start >= lo else _Op(self, 0, 0)
            stop = max(start, stop)
            post = (slice(None, None, step),) + rest if step != 1 or rest else None
            return _Op(self, start, stop, post)
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = np.array([_norm(int(i), n) for i in idx.reshape(-1)], dtype=np.int64).reshape(idx.shape)
        if idx.size == 0:
            return _Op(self, 0, 0, (idx,) + rest)
        lo, hi = int(idx.min()), int(idx.max()) + 1
        return _Op(self, lo, hi, (idx - lo,) + rest)

    def col(self, name: str) -> _Op:
        """The whole column ``name`` of a compound dataset."""
        return self[name]

    def read(self, start: Optional[int] = None, stop: Optional[int] = None, step: Optional[int] = None,
             field: Optional[str] = None) -> _Op:
        """Rows ``start:stop:step`` (of column ``field``)."""
        op = self[slice(start, stop, step)]
        op.field = field
        return op

    def read_coordinates(self, coords: Any, field: Optional[str] = None) -> _Op:
        """The rows at ``coords`` (of column ``field``)."""
        op = self[np.asarray(coords)]
        op.field = field
        return op

    def _nbytes(self, rows: int) -> int:
        return rows * int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def create_stage(self, shape: Any) -> "Stage":
        """A buffer for requests of up to ``shape[0]`` rows (the rest of the shape is the
        dataset's)."""
        rows = shape if isinstance(shape, (int, np.integer)) else (list(shape) or [1])[0]
        rows = self.shape[0] if rows is None or rows == -1 else int(rows)
        return Stage(self._nbytes(rows))

    def create_stage_natoms(self, size_natoms: int) -> "Stage":
        """A buffer of ``size_natoms`` elements."""
        return Stage(int(size_natoms) * self.dtype.itemsize)

    def __repr__(self) -> str:
        return f"Dataset({self._path!r}, shape={self.shape}, dtype={self.dtype})"


class Stage:
    """A buffer requests are read into (see :meth:`Dataset.create_stage`)."""

    def __init__(self, size_nbytes: int) -> None:
        self.size_nbytes = int(size_nbytes)
        self.buffer = np.empty(self.size_nbytes, dtype=np.uint8)


class Request:
    """A queued read: :meth:`get` (a copy), :meth:`get_unsafe` and :meth:`get_proxy`
    (context managers over the stage's memory)."""

    def __init__(self, pending: Any, op: _Op, stage: Stage) -> None:
        self._pending, self._op, self._stage = pending, op, stage
        self._result: Optional[np.ndarray] = None

    def _wait(self) -> np.ndarray:
        if self._result is None:
            n = self._pending.wait_into(self._stage.buffer)
            self._result = self._op.apply(self._stage.buffer[:n])
        return self._result

    def ready(self) -> bool:
        """True once the rows have been read into the stage."""
        return self._result is not None

    @contextmanager
    def get_unsafe(self) -> Iterator[np.ndarray]:
        """Waits, then gives the result as a view of the stage's memory (changed by the
        stage's next request)."""
        yield self._wait()

    @contextmanager
    def get_proxy(self) -> Iterator[Any]:
        """Waits, then gives a proxy of the result that refuses access after the block."""
        proxy = _Proxy(self._wait())
        try:
            yield proxy
        finally:
            proxy.release()

    def get_direct(self, action: Any) -> None:
        """Calls ``action(result)`` with the result in the stage's memory."""
        with self.get_unsafe() as data:
            action(data)

    def get(self) -> np.ndarray:
        """Waits, then returns a copy of the result."""
        r = self._wait()
        return r.copy() if isinstance(r, np.ndarray) else r


class Reader:
    """Random access to the datasets of ``filename`` through queued requests served by
    ``n_procs`` threads."""

    def __init__(self, filename: "str | os.PathLike", n_procs: int = 4, notify: Any = None, **kw_args: Any) -> None:
        self._filename = os.fspath(filename)
        self._file = _smdfs.H5FileHandle(self._filename, n_procs)
        self._closed = False

    def _handle(self) -> Any:
        if self._file is None:
            raise RuntimeError("Attempt to request data from a closed reader.")
        return self._file

    def get_dataset(self, path: str) -> Dataset:
        """A dataset proxy: index it to build requests."""
        dtype, shape, _ = _h5_meta(self._filename, path)
        self._handle().dataset(path)
        return Dataset(self, path, dtype, shape)

    def request(self, key: _Op, stage: Optional[Stage]) -> Request:
        """Queues the read ``key`` (built by indexing a dataset) into ``stage`` (a new stage
        of the request's size when None)."""
        if self._closed:
            raise RuntimeError("Attempt to request data from a closed reader.")
        if not isinstance(key, _Op):
            raise TypeError(f"a request is built by indexing a dataset (ds[30:35]), not {type(key).__name__}")
        need = key.ds._nbytes(key.stop - key.start)
        if stage is None:
            stage = Stage(need)
        elif need > stage.size_nbytes:
            raise ValueError(f"the request needs {need} bytes, the stage holds {stage.size_nbytes}")
        pending = self._handle().request(key.ds.path, key.start, key.stop)
        return Request(pending, key, stage)

    def close(self, wait: bool = False) -> None:
        """No more requests; queued ones are still served."""
        if not self._closed:
            self._closed = True
            self._file.close()
            self._file = None  # the file closes once queued requests are served

    def stop(self) -> None:
        """Closes the reader."""
        self.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
