"""bigarray's named-slices API over smdfs's slices engine.

::

    from smdfs.compat.bigarray import PointerArrayWriter, PointerArray
    w = PointerArrayWriter("x.npy", shape=(n, 8), dtype="float64", remove_exist=True)
    with multiprocessing.Pool(2) as pool:               # the writer is picklable
        pool.map(write_job, [(w, {"a": a, "b": b}, start) for ...])
    w.flush(); w.close()
    x = PointerArray("x.npy")                           # a numpy array (memory-mapped)
    x["a"], x.indices["a"], np.sum(x), x[10:20]

Writers in any number of threads and processes write disjoint rows with no coordination;
appends (no ``start_position``) and growth (``shape=(0, 8)``) take a short file lock. The
file is a plain ``.npy`` (``np.load(path, mmap_mode="r")`` reads it) with the names in
``<path>.names``.

Differences from bigarray: the file format (``.npy`` + names sidecar instead of bigarray's
own header and pickled trailer); an array whose row shape does not match raises ValueError
instead of being skipped; ``PointerArray`` is read-only, and slicing it gives plain
``numpy.ndarray`` views; names and rows are on disk as soon as ``write`` returns
(``flush`` adds an fdatasync).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Optional, Tuple

import numpy as np

from .. import _smdfs

__all__ = ["PointerArrayWriter", "PointerArray"]


class _ReadOnlyDict(dict):
    """A dict that refuses changes (``PointerArray.indices``)."""

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Cannot modify the indices of PointerArray, use PointerArrayWriter to change them.")

    __setitem__ = __delitem__ = pop = popitem = clear = update = setdefault = _readonly  # type: ignore[assignment]


class PointerArrayWriter:
    """Writes named row ranges of one array file.

    ``PointerArrayWriter(path, shape=(n, ...), dtype='int32', remove_exist=True)`` creates the
    file (``shape[0]`` rows, 0 to start empty and grow); with ``remove_exist=False`` an
    existing file is opened to write more (its shape and dtype come from the file).
    """

    def __init__(
        self,
        path: "str | os.PathLike",
        shape: Optional[Iterable[int]] = None,
        dtype: Any = None,
        remove_exist: bool = False,
    ) -> None:
        self._path = os.path.abspath(os.fspath(path))
        exists = os.path.exists(self._path) and os.path.getsize(self._path) > 0
        if remove_exist or not exists:
            if shape is None or dtype is None:
                raise ValueError(f"{self._path}: creating the array needs both shape and dtype")
            if isinstance(shape, (int, np.integer)):
                shape = (int(shape),)
            shape = tuple(0 if s is None or s < 0 else int(s) for s in shape)
            dt = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).byteorder == ">" else np.dtype(dtype)
            self._h = _smdfs.SlicesWriterHandle(self._path, True, dt.str, list(shape[1:]), shape[0])
        else:
            self._h = _smdfs.SlicesWriterHandle(self._path, False)
        descr, _ = self._h.header()
        self._dtype = np.dtype(descr)
        self._closed = False

    @classmethod
    def _reopen(cls, path: str) -> "PointerArrayWriter":
        return cls(path, remove_exist=False)

    def __reduce__(self) -> tuple:
        # A worker process opens the same file for writing (rows and names go to disk).
        return (PointerArrayWriter._reopen, (self._path,))

    @property
    def path(self) -> str:
        """The array file."""
        return self._path

    @property
    def shape(self) -> tuple:
        """The array's shape as this writer last saw it (it grows with appends)."""
        return tuple(self._h.header()[1])

    @property
    def dtype(self) -> np.dtype:
        """Element type."""
        return self._dtype

    @property
    def is_closed(self) -> bool:
        """True after ``close()``."""
        return self._closed

    @property
    def indices(self) -> Dict[str, Tuple[int, int]]:
        """name -> (start, end) of every name written so far (by any writer)."""
        return _ReadOnlyDict(_smdfs.SlicesReaderHandle(self._path).indices())

    def write(self, arrays: Dict[str, np.ndarray], start_position: Optional[int] = None) -> "PointerArrayWriter":
        """Writes each array of ``{name: array}`` one after another from row
        ``start_position`` (negative: from the end), or after the last named row when it is
        None, growing the file if the rows end past it; names them. Returns the writer."""
        if self._closed:
            raise RuntimeError(f"{self._path}: the PointerArrayWriter is closed")
        if not isinstance(arrays, dict):
            raise ValueError("write() takes a dict mapping names to numpy arrays")
        _, shape = self._h.header()
        row_shape = tuple(shape[1:])
        names, datas = [], []
        for name, a in arrays.items():
            if not isinstance(name, str):
                raise ValueError(f"names must be str, got {name!r}")
            a = np.ascontiguousarray(a, dtype=self._dtype)
            if a.shape[1:] != row_shape:
                raise ValueError(f"{self._path}: array {name!r} has shape {a.shape}, rows must be {row_shape}")
            names.append(name)
            datas.append(a.reshape(-1).view(np.uint8))
        if names:
            self._h.write(names, datas, None if start_position is None else int(start_position))
        return self

    def flush(self) -> "PointerArrayWriter":
        """Flushes rows and names to the disk (fdatasync)."""
        if not self._closed:
            self._h.sync()
        return self

    def close(self) -> None:
        """Closes the writer (flushing first)."""
        if not self._closed:
            self._h.sync()
            self._h.close()
            self._closed = True

    def __enter__(self) -> "PointerArrayWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PointerArrayWriter({self._path!r}, shape={self.shape}, dtype={self._dtype})"


class PointerArray(np.ndarray):
    """A named-slices file as a read-only numpy array over its memory map:
    ``x['name']`` is that name's rows, ``x.indices`` maps names to ``(start, end)``, and
    every numpy operation works (``np.sum(x)``, ``x[s:e]``). Usable after fork; pickles by
    path."""

    _indices: Dict[str, Tuple[int, int]]
    _path: str
    _full: bool
    _plain: Any

    def __new__(cls, path: "str | os.PathLike", mode: str = "r") -> "PointerArray":
        path = os.path.abspath(os.fspath(path))
        if mode not in ("r", "c", "r+"):
            raise ValueError(f"mode {mode!r}: PointerArray is read-only (use PointerArrayWriter to write)")
        h = _smdfs.SlicesReaderHandle(path)
        descr, shape = h.header()
        arr = h.data().view(np.dtype(descr)).reshape(shape).view(cls)
        arr._indices = _ReadOnlyDict(h.indices())
        arr._path = path
        arr._full = True
        arr._plain = arr.view(np.ndarray)  # indexing goes through it: no Python per view
        return arr

    def __array_finalize__(self, obj: Any) -> None:
        self._indices = getattr(obj, "_indices", _ReadOnlyDict())
        self._path = getattr(obj, "_path", "")
        self._full = False
        self._plain = None

    @property
    def indices(self) -> Dict[str, Tuple[int, int]]:
        """name -> (start, end)."""
        return self._indices

    @property
    def path(self) -> str:
        """The array file."""
        return self._path

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            start, end = self._indices[key]
            key = slice(start, end)
        if self._plain is not None:
            return self._plain[key]
        r = super().__getitem__(key)
        return r.view(np.ndarray) if isinstance(r, PointerArray) else r

    def __reduce__(self) -> tuple:
        if self._full:
            return (PointerArray, (self._path,))
        return np.asarray(self).view(np.ndarray).__reduce__()

    def __array_wrap__(self, out: Any, context: Any = None, return_scalar: bool = False) -> Any:
        # Results of numpy operations are plain arrays (or scalars), not PointerArrays.
        out = out.view(np.ndarray)
        return out[()] if out.ndim == 0 else out
