"""SimRecorder's API over smdfs's recorder engine.

``Recorder(*datastores)`` records into every store given and reads from the first::

    from smdfs.compat.simrecorder import Recorder, InMemoryDataStore, HDF5DataStore
    rec = Recorder(InMemoryDataStore(), HDF5DataStore("out.h5"))
    for step in range(n):
        rec.record("train/loss", loss)          # appends to the list under the key
    rec.set("config", {"lr": 0.1})              # one value, replacing any earlier one
    rec.close()                                 # out.h5 now exists (h5py reads it)

    rec = Recorder(HDF5DataStore("out.h5"))     # an existing path opens read-only
    losses = rec.get_all("train/loss")          # memory-mapped: np.mean(losses), losses[10:20]

Stores: ``InMemoryDataStore()``; ``SmdfsDataStore(dir)`` and ``ZarrDataStore(path)`` (an
smdfs run in that directory); ``HDF5DataStore(path)`` (an smdfs run in ``<stem>.smd/`` beside
``path``, exported to the HDF5 file ``path`` by ``close()``). Values: numpy arrays and
scalars of bool/int/uint/float dtypes (stored as such), ``str``, and any other picklable
object (stored pickled). ``/`` in a key makes hierarchy.

Differences from SimRecorder: a persistent store opened on an existing path is read-only
(``record``/``set`` raise); ``get_all`` of an array key returns one stacked array (memory-mapped after
re-opening) instead of an HDF5/zarr dataset; ``RedisDataStore`` is not provided.
"""

from __future__ import annotations

import os
import pickle
from typing import Any, Optional

import numpy as np

from .. import _smdfs

__all__ = ["Recorder", "DataStore", "InMemoryDataStore", "SmdfsDataStore", "HDF5DataStore", "ZarrDataStore"]

_SET = "__set__"
_NATIVE = frozenset("?bBhHiIlLqQefd")  # numpy kinds stored natively (not float16: see _prepare)


def _field_of(key: str) -> str:
    """The run field that holds a key (``a/b`` -> ``a/unaligned_b``), as the engine names it."""
    head, _, last = key.rpartition("/")
    return f"{head}/unaligned_{last}" if head else f"unaligned_{last}"


def _prepare(value: Any) -> tuple:
    """A value as ``("array", descr, shape, bytes)``, ``("str", text)`` or ``("bytes", pickle)``."""
    if isinstance(value, (bool, int, float)) and not isinstance(value, np.generic):
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            return ("bytes", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        value = np.asarray(value)
    elif isinstance(value, np.generic):
        value = np.asarray(value)
    if isinstance(value, np.ndarray) and value.dtype.char in _NATIVE and value.dtype.char != "e":
        if value.dtype.byteorder == ">":
            value = value.astype(value.dtype.newbyteorder("<"))
        a = value if value.flags.c_contiguous else value.copy()  # (ascontiguousarray makes 0-d 1-d)
        return ("array", a.dtype.str, a.shape, a.reshape(-1).view(np.uint8))
    if isinstance(value, str):
        return ("str", value)
    return ("bytes", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def _decode(item: tuple) -> Any:
    kind, descr, shape, data = item
    if kind == "str":
        return data
    if kind == "bytes":
        return pickle.loads(data)
    a = np.frombuffer(data, dtype=descr).copy()
    return a.reshape(shape) if kind == "fixed" else a


def _record(handle: Any, key: str, prepared: tuple) -> None:
    if prepared[0] == "array":
        handle.record_array(key, prepared[1], list(prepared[2]), prepared[3])
    elif prepared[0] == "str":
        handle.record_str(key, prepared[1])
    else:
        handle.record_bytes(key, prepared[1])


class DataStore:
    """Base of the stores: ``set``/``get``/``append``/``get_all``/``close`` by key."""

    _missing: Any = None

    def __init__(self, handle: Any, directory: Optional[str] = None):
        self._h = handle
        self._dir = directory
        self._run: Any = None

    def connect(self) -> "DataStore":
        """Called by ``Recorder``; returns the store."""
        return self

    @property
    def read_only(self) -> bool:
        """True for a store opened on an existing path."""
        return self._h.read_only

    def _write(self, key: str, prepared: tuple) -> None:
        if self._h.read_only:
            raise PermissionError(f"{self!r} was opened on an existing store and is read-only")
        _record(self._h, key, prepared)

    def append(self, key: str, value: Any) -> None:
        """Appends ``value`` to the list under ``key``."""
        self._write(key, _prepare(value))

    def set(self, key: str, value: Any) -> None:
        """Stores ``value`` under ``key``, replacing an earlier one."""
        self._write(f"{_SET}/{key}", _prepare(value))

    def _series(self, key: str) -> Any:
        kind, *rest = self._h.get(key)
        if kind == "array":
            descr, shape, data = rest
            return data.view(descr).reshape(shape)
        return [_decode(t) for t in rest[0]]

    def _lazy(self, key: str) -> Any:
        """The key's values as a lazy dataset of the opened run, if they form one array."""
        if self._dir is None or not self._h.read_only:
            return None
        if self._run is None:
            from ..reader import open as open_run

            self._run = open_run(self._dir)
        field = _field_of(key)
        if field not in self._run._fields or self._run._fields[field]["kind"] != "fixed":
            return None
        mixed = field + "#mixed"
        if mixed in self._run._fields and self._run._fields[mixed]["rows"] > 0:
            return None
        f = self._run._fields[field]
        flat = self._h.view(key, np.dtype(f["dtype"]).str)
        if flat is not None:  # a read-only view of the memory map: pages load when touched
            return flat.view(f["dtype"]).reshape((-1,) + tuple(f["shape"]))
        return self._run[field]

    def get_all(self, key: str) -> Any:
        """Every value recorded under ``key``, in order: one (lazy) array when they share a
        dtype and shape, else a list."""
        if key not in self._keys():
            return self._missing
        lazy = self._lazy(key)
        return lazy if lazy is not None else self._series(key)

    def get(self, key: str) -> Any:
        """The value ``set`` under ``key`` (the last one), else what ``get_all(key)`` gives."""
        sk = f"{_SET}/{key}"
        if sk in self._keys():
            s = self._series(sk)
            return s[-1]
        return self.get_all(key)

    def keys(self) -> list:
        """Recorded keys (not those only ``set``), sorted."""
        return [k for k in self._keys() if not k.startswith(_SET + "/")]

    def _keys(self) -> list:
        return self._h.keys()

    def close(self) -> None:
        """Flushes and finishes the store."""
        self._h.close()
        self._run = None


class InMemoryDataStore(DataStore):
    """Keeps every value in memory (``get_all`` returns a list, as SimRecorder's does)."""

    _missing: Any = []

    def __init__(self) -> None:
        super().__init__(_smdfs.RecorderHandle(None))
        self._closed = False

    def get_all(self, key: str) -> Any:
        v = super().get_all(key)
        return list(v) if isinstance(v, np.ndarray) else v

    def close(self) -> None:
        """Nothing to flush: the values stay readable (as SimRecorder's in-memory store)."""
        self._closed = True

    def __repr__(self) -> str:
        return "InMemoryDataStore()"


class SmdfsDataStore(DataStore):
    """Records into an smdfs run in ``directory`` (readable with ``smdfs.open``, mountable as
    HDF5); a directory already holding a run opens read-only."""

    def __init__(self, directory: "str | os.PathLike"):
        directory = os.fspath(directory)
        if os.path.isdir(directory) and _smdfs.is_run(directory):
            handle = _smdfs.RecorderHandle.open(directory)
        else:
            handle = _smdfs.RecorderHandle(directory)
        super().__init__(handle, directory)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._dir!r})"


class ZarrDataStore(SmdfsDataStore):
    """SimRecorder's zarr store: an smdfs run at ``data_dir_pth`` (extra arguments, such as
    zarr's chunk size or compressor, are accepted and ignored)."""

    def __init__(self, data_dir_pth: "str | os.PathLike", *args: Any, **kwargs: Any):
        super().__init__(data_dir_pth)


class HDF5DataStore(DataStore):
    """SimRecorder's HDF5 store: records into an smdfs run in ``<stem>.smd/`` beside
    ``data_file_pth``; ``close()`` writes the run as the standalone HDF5 file
    ``data_file_pth`` (key ``a/b`` is its dataset ``a/unaligned_b``, with ids in
    ``a/unaligned_b_timestamp``). An existing file (or run) opens read-only."""

    def __init__(self, data_file_pth: "str | os.PathLike"):
        self.path = os.fspath(data_file_pth)
        stem, _ = os.path.splitext(self.path)
        run_dir = stem + ".smd"
        if os.path.isdir(run_dir) and _smdfs.is_run(run_dir):
            handle = _smdfs.RecorderHandle.open(run_dir)
        elif os.path.exists(self.path):
            raise FileNotFoundError(
                f"{self.path} exists but its run {run_dir} does not: it was not written by this store")
        else:
            handle = _smdfs.RecorderHandle(run_dir)
        super().__init__(handle, run_dir)

    def close(self) -> None:
        """Finishes the run and (when recording) exports it to the HDF5 file."""
        writing = not self._h.read_only
        super().close()
        if writing and self._dir is not None:
            _smdfs.export_h5(self._dir, self.path)

    def __repr__(self) -> str:
        return f"HDF5DataStore({self.path!r})"


class Recorder:
    """Records values under keys into every store given; reads from the first (or the store
    passed as ``datastore=``)."""

    def __init__(self, *datastores: DataStore):
        if not datastores:
            raise ValueError("Recorder needs at least one datastore")
        self.datastores = tuple(d.connect() for d in datastores)

    def record(self, key: str, val: Any, datastore: Optional[DataStore] = None) -> None:
        """Appends ``val`` to the list under ``key`` in every store (or in ``datastore``)."""
        prepared = _prepare(val)
        for d in (datastore,) if datastore is not None else self.datastores:
            d._write(key, prepared)

    def set(self, key: str, val: Any, datastore: Optional[DataStore] = None) -> None:
        """Stores one value under ``key``, replacing an earlier one."""
        prepared = _prepare(val)
        for d in (datastore,) if datastore is not None else self.datastores:
            d._write(f"{_SET}/{key}", prepared)

    def get(self, key: str, datastore: Optional[DataStore] = None) -> Any:
        """The value ``set`` under ``key``."""
        return (datastore or self.datastores[0]).get(key)

    def get_all(self, key: str, datastore: Optional[DataStore] = None) -> Any:
        """Every value recorded under ``key``, in order."""
        return (datastore or self.datastores[0]).get_all(key)

    def keys(self, datastore: Optional[DataStore] = None) -> list:
        """Recorded keys, sorted."""
        return (datastore or self.datastores[0]).keys()

    def close(self) -> None:
        """Flushes every store (persistent ones become readable by a new ``Recorder``)."""
        for d in self.datastores:
            d.close()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
