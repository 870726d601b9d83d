"""The reader: ``smdfs.open(dir)`` gives a run as lazy, h5py-like numpy datasets.

A run opens in milliseconds whatever its size (complete, crashed or still being written: a
crashed run reads its committed prefix, a writing run a snapshot of what is committed now).
Nothing is read until a dataset is indexed:

* ``run["det/image"][10:20]`` where the rows lie contiguous in one shard is a read-only numpy
  view of the shard's memory map (no copy at all);
* any other selection is gathered in Rust, in parallel, with the GIL released;
* ragged fields (``bytes``, ``str`` or 1-D arrays of varying length) read as lists of values,
  or as flat values plus offsets (``ds.flat(...)``);
* ``run.iter_batches(...)`` reads batches ahead on a background thread (training loops);
  start it in the process that iterates it: in a process forked from the one that started it
  (a ``fork``-started ``DataLoader`` worker) it raises ``smdfs.Error`` instead of waiting for a
  thread that is not there.

Dataset names follow the mounted ``run.h5`` (see ``Run.keys()``): ``timestamp``, one name per
field (``det/image``), ``<G>/timestamp`` and ``<G>/<field>`` for a named alignment group,
``<P>`` and ``<P>_timestamp`` for an unaligned field, ``x``, ``x_len`` and ``x_offsets`` for a
ragged field, ``_present/<path>`` masks, ``summary/<name>``.
"""

from __future__ import annotations

import builtins
import operator
import os
import secrets
from collections.abc import Iterator, Mapping
from typing import Any, Optional, Union

import numpy as np

from . import _smdfs

__all__ = ["open", "Run", "Dataset", "RaggedDataset", "ArrayDataset", "Group", "AlignmentGroup"]


def open(path: Union[str, os.PathLike]) -> "Run":  # noqa: A001 - the package's public name
    """Opens the run in directory ``path`` for reading.

    Works on complete runs, on crashed runs (their committed prefix) and on runs still being
    written (a snapshot of what is committed now; open again to see more).

    Raises:
        smdfs.CorruptRunError: the directory is not an smdfs run, or its files are damaged.
        OSError: the directory cannot be read.
    """
    return Run(path)


def _rows_key(key: Any, n: int) -> tuple[str, Any, tuple]:
    """Splits an h5py/numpy key into (kind, rows, rest): kind ``"int"`` (one row), ``"range"``
    ((start, stop)), ``"rows"`` (an int64 index array, any shape) or ``"all-then"`` (read all,
    then index with the original key); ``rest`` applies to the per-event axes."""
    if not isinstance(key, tuple):
        key = (key,)
    if len(key) == 0:
        return "range", (0, n), ()
    first, rest = key[0], key[1:]
    if first is Ellipsis or first is None:
        return "all-then", key, ()
    if isinstance(first, (bool, np.bool_)):
        raise TypeError("a boolean is not a row index (use a boolean array as a mask)")
    if isinstance(first, slice):
        start, stop, step = first.indices(n)
        if step == 1:
            return "range", (start, max(start, stop)), rest
        return "rows", np.arange(start, stop, step, dtype=np.int64), rest
    try:
        i = operator.index(first)
    except TypeError:
        pass
    else:
        if not -n <= i < n:
            raise IndexError(f"row {i} is out of range for {n} rows")
        return "int", i + n if i < 0 else i, rest
    arr = np.asarray(first)
    if arr.dtype == np.bool_:
        if arr.shape != (n,):
            raise IndexError(f"boolean mask of shape {arr.shape} does not match {n} rows")
        return "rows", np.flatnonzero(arr).astype(np.int64), rest
    if arr.size == 0:
        return "rows", np.zeros(arr.shape, dtype=np.int64), rest
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"rows must be ints, slices, integer arrays or a boolean mask, not {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = (arr < -n) | (arr >= n)
    if bad.any():
        raise IndexError(f"row {int(arr[bad].flat[0])} is out of range for {n} rows")
    return "rows", np.where(arr < 0, arr + n, arr), rest


class Dataset:
    """A lazy, h5py-like dataset of fixed-shape rows (one row per event of its group).

    ``ds.shape``, ``ds.dtype``, ``len(ds)``; ``ds[i]``, ``ds[a:b]``, ``ds[a:b:s]``,
    ``ds[[3, 1, 4]]``, ``ds[mask]``, ``ds[:, 0]``, ``np.asarray(ds)``. Rows that lie contiguous
    in one shard come back as a read-only view of the shard's memory map (zero-copy); other
    selections are gathered in parallel in Rust into a new array. Rows where an event lacked
    an aligned field hold its fill value; ``ds.present`` says which rows are real.
    """

    def __init__(self, run: "Run", name: str, target: str, role: str, dtype: np.dtype, event_shape: tuple,
                 group: str, field: Optional[dict] = None):
        self._run = run
        self._target = target
        self._role = role
        self._event_shape = tuple(event_shape)
        self._field = field
        #: The dataset's name in the run (as in the mounted ``run.h5``).
        self.name = name
        #: Element type.
        self.dtype = np.dtype(dtype)
        #: Name of the alignment group whose rows these are (``""`` is the run).
        self.group = group

    def __repr__(self) -> str:
        return f"<smdfs dataset {self.name!r}: shape {self.shape}, dtype {self.dtype}>"

    @property
    def shape(self) -> tuple:
        """Rows, then the per-event shape."""
        return (len(self),) + self._event_shape

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return 1 + len(self._event_shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Bytes of the whole dataset."""
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self._run._rows(self._target, self._role)

    @property
    def fill_value(self) -> Any:
        """The value of rows where an event lacked the field (None for event ids and masks)."""
        if self._field is None or self._role != "data":
            return None
        return np.frombuffer(self._field["fill"], dtype=self.dtype)[0]

    @property
    def units(self) -> Optional[str]:
        """Physical units given by the writer, if any."""
        return None if self._field is None else self._field["units"]

    @property
    def present(self) -> "Dataset":
        """A bool dataset: True where the event had the field (all True for an unaligned field
        and for event ids)."""
        if self._field is None or self._role != "data":
            raise AttributeError(f"{self.name!r} is not a field: it has no presence mask")
        return self._run._present(self._field)

    @property
    def timestamp(self) -> "Dataset":
        """The event ids of this dataset's rows."""
        return self._run._timestamp_ds(self.group)

    def _row_bytes(self) -> int:
        return int(np.prod(self._event_shape, dtype=np.int64)) * self.dtype.itemsize

    def _range(self, start: int, stop: int) -> np.ndarray:
        n = stop - start
        shape = (n,) + self._event_shape
        h = self._run._handle()
        if n > 0 and self._row_bytes() > 0:
            view = h.zero_copy(self._target, self._role, start, n)
            if view is not None:
                return view.view(self.dtype).reshape(shape)
        out = np.empty(shape, dtype=self.dtype)
        if out.nbytes:
            h.read(self._target, self._role, start, out.reshape(-1).view(np.uint8))
        return out

    def _take(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty(rows.shape + self._event_shape, dtype=self.dtype)
        if out.nbytes:
            flat = np.ascontiguousarray(rows.reshape(-1), dtype=np.uint64)
            self._run._handle().take(self._target, self._role, flat, out.reshape(-1).view(np.uint8))
        return out

    def __getitem__(self, key: Any) -> Any:
        kind, rows, rest = _rows_key(key, len(self))
        if kind == "all-then":
            return self._range(0, len(self))[rows]
        if kind == "int":
            out = self._range(rows, rows + 1)[0]
            return out[rest] if rest else out
        if kind == "range":
            out, lead = self._range(*rows), 1
        else:
            out, lead = self._take(rows), rows.ndim
        return out[(slice(None),) * lead + rest] if rest else out

    def read(self, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """Rows ``start:stop`` (zero-copy where they lie contiguous in one shard)."""
        return self[start:stop]

    def __array__(self, dtype: Any = None, copy: Optional[bool] = None) -> np.ndarray:
        a = self._range(0, len(self))
        if dtype is not None and np.dtype(dtype) != a.dtype:
            return a.astype(dtype)
        return a.copy() if copy else a

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]

    def shards(self) -> list:
        """Each shard's rows of this dataset in arrival order, zero-copy (read-only views of
        the shards' memory maps); their concatenation is every row, not in event-id order.
        A shard that never saw the field gives an empty array."""
        out = []
        for b in self._run._handle().shard_arrays(self._target, self._role):
            out.append(b.view(self.dtype).reshape((-1,) + self._event_shape))
        return out


class ArrayDataset:
    """An h5py-like wrapper of values already in memory (ragged offsets, summary values)."""

    def __init__(self, name: str, value: np.ndarray):
        #: The dataset's name in the run.
        self.name = name
        self._value = value

    def __repr__(self) -> str:
        return f"<smdfs dataset {self.name!r}: shape {self.shape}, dtype {self.dtype}>"

    @property
    def shape(self) -> tuple:
        """Shape."""
        return self._value.shape

    @property
    def dtype(self) -> np.dtype:
        """Element type."""
        return self._value.dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return self._value.ndim

    def __len__(self) -> int:
        if self._value.ndim == 0:
            raise TypeError("len() of a scalar dataset")
        return len(self._value)

    def __getitem__(self, key: Any) -> Any:
        return self._value[key]

    def __array__(self, dtype: Any = None, copy: Optional[bool] = None) -> np.ndarray:
        a = self._value if dtype is None else self._value.astype(dtype)
        return a.copy() if copy else a


class RaggedDataset:
    """A lazy ragged field: one value of varying length per event of its group.

    ``ds[i]`` is one row — ``bytes`` for byte fields, ``str`` for text fields, a 1-D numpy
    array for ragged arrays (empty where the event lacked the field); ``ds[a:b]``, ``ds[idx]``
    and ``ds[mask]`` give lists. ``ds.flat(key)`` gives the same rows as flat values plus
    offsets (``rows + 1``), which is what vectorized code wants; ``ds.offsets`` and
    ``ds.lengths`` are the run's, and ``ds.values`` all flat values.
    """

    def __init__(self, run: "Run", name: str, field: dict):
        self._run = run
        self._field = field
        #: The dataset's name in the run.
        self.name = name
        #: ``"bytes"``, ``"str"`` or ``"ragged"`` (1-D arrays).
        self.kind = field["kind"]
        #: Element type of the flat values (``uint8`` for bytes and text).
        self.dtype = np.dtype(field["dtype"])
        #: Name of the alignment group whose rows these are.
        self.group = field["group"]

    def __repr__(self) -> str:
        return f"<smdfs ragged dataset {self.name!r}: {len(self)} rows of {self.kind} ({self.dtype})>"

    def __len__(self) -> int:
        return self._run._rows(self._field["path"], "len")

    @property
    def shape(self) -> tuple:
        """``(rows,)``."""
        return (len(self),)

    @property
    def offsets(self) -> np.ndarray:
        """Element offsets, ``rows + 1`` of them: row ``i`` is ``values[offsets[i]:offsets[i+1]]``
        (read-only, zero-copy)."""
        return self._run._handle().offsets(self._field["path"])

    @property
    def lengths(self) -> Dataset:
        """Elements per row (0 where the event lacked the field)."""
        return self._run._dataset(self.name + "_len")

    @property
    def values(self) -> np.ndarray:
        """All rows' values, concatenated in event-id order."""
        out = np.empty(int(self.offsets[-1]), dtype=self.dtype)
        if out.nbytes:
            self._run._handle().ragged_read(self._field["path"], 0, len(self), out.view(np.uint8))
        return out

    @property
    def present(self) -> Dataset:
        """A bool dataset: True where the event had the field."""
        return self._run._present(self._field)

    @property
    def timestamp(self) -> Dataset:
        """The event ids of this dataset's rows."""
        return self._run._timestamp_ds(self.group)

    def flat(self, key: Any = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """The rows ``key`` selects (a slice, index array or mask) as ``(values, offsets)``:
        row ``k`` of the selection is ``values[offsets[k]:offsets[k+1]]``."""
        kind, rows, rest = _rows_key(key, len(self))
        if rest or kind == "all-then":
            raise IndexError("a ragged dataset has one axis")
        h = self._run._handle()
        path = self._field["path"]
        if kind == "int":
            kind, rows = "range", (rows, rows + 1)
        if kind == "range":
            start, stop = rows
            offs = self.offsets
            base = int(offs[start])
            out = np.empty(int(offs[stop]) - base, dtype=self.dtype)
            if out.nbytes:
                h.ragged_read(path, start, stop, out.view(np.uint8))
            offs = offs[start:stop + 1]
            # From row 0 the run's own offsets serve as they are (zero-copy, read-only).
            return out, offs if base == 0 else offs - np.uint64(base)
        vals, lens = h.ragged_take(path, np.ascontiguousarray(rows.reshape(-1), dtype=np.uint64))
        offsets = np.zeros(len(lens) + 1, dtype=np.uint64)
        np.cumsum(lens, out=offsets[1:])
        return vals.view(self.dtype), offsets

    def _split(self, values: np.ndarray, offsets: np.ndarray) -> list:
        o = offsets.tolist()
        if self.kind == "bytes":
            b = values.tobytes()
            return [b[o[k]:o[k + 1]] for k in range(len(o) - 1)]
        if self.kind == "str":
            b = values.tobytes()
            return [b[o[k]:o[k + 1]].decode("utf-8", errors="replace") for k in range(len(o) - 1)]
        return [values[o[k]:o[k + 1]] for k in range(len(o) - 1)]

    def __getitem__(self, key: Any) -> Any:
        kind, rows, _ = _rows_key(key, len(self))
        vals, offs = self.flat(key)
        out = self._split(vals, offs)
        if kind == "int":
            return out[0]
        if kind == "rows" and rows.ndim != 1:
            a = np.empty(len(out), dtype=object)
            a[:] = out
            return a.reshape(rows.shape)
        return out

    def __iter__(self) -> Iterator[Any]:
        n, step = len(self), 4096
        for a in range(0, n, step):
            yield from self[a:min(n, a + step)]

    def __array__(self, dtype: Any = None, copy: Optional[bool] = None) -> np.ndarray:
        """An object array of the rows (bytes, str or arrays)."""
        a = np.empty(len(self), dtype=object)
        a[:] = self[:]
        return a


class Group(Mapping):
    """The datasets under a path prefix (``run["det"]["image"]``), h5py style."""

    def __init__(self, run: "Run", prefix: str):
        self._run = run
        #: The group's path.
        self.name = prefix

    def __repr__(self) -> str:
        return f"<smdfs group {self.name!r} ({len(self)} members)>"

    def __getitem__(self, key: str) -> Any:
        return self._run[f"{self.name}/{key}"]

    def __iter__(self) -> Iterator[str]:
        seen = []
        p = self.name + "/"
        for n in self._run._names:
            if n.startswith(p):
                head = n[len(p):].split("/", 1)[0]
                if head not in seen:
                    seen.append(head)
        return iter(seen)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class AlignmentGroup:
    """One alignment group: its own event-id column and the fields that share its rows. The
    run's own group is named ``""``; an unaligned field is a group of its own (named by its
    path); a named group collects fields written with ``align_group=``."""

    def __init__(self, run: "Run", info: dict):
        self._run = run
        #: Group name (``""`` is the run).
        self.name = info["name"]
        #: False for an unaligned field's own group.
        self.aligned = info["aligned"]
        #: Rows whose event id repeats the previous row's (kept, not lost).
        self.duplicates = info["duplicates"]

    def __repr__(self) -> str:
        return f"<smdfs alignment group {self.name!r}: {len(self)} rows, fields {self.fields}>"

    def __len__(self) -> int:
        return self._run._rows(self.name, "ts")

    @property
    def timestamp(self) -> Dataset:
        """The group's event ids, ascending."""
        return self._run._timestamp_ds(self.name)

    @property
    def fields(self) -> list:
        """Dataset names of the group's fields."""
        return [self._run._base_name(f) for f in self._run._field_list if f["group"] == self.name]


class Run(Mapping):
    """An opened run (see :func:`smdfs.open`): a read-only snapshot, h5py-like.

    ``len(run)`` (events), ``run.state``, ``run.summary``, ``run.info()``,
    ``run.timestamp``, ``run["det/image"]`` (a lazy :class:`Dataset`), ``run.keys()``,
    ``"energy" in run``, ``run.row_of(ts)``, ``run.event(ts)``, ``run.iter_batches(...)``.
    Usable as a context manager; arrays already read stay valid after ``close()``.
    """

    def __init__(self, path: Union[str, os.PathLike]):
        self._h = _smdfs.RunHandle(os.fspath(path))
        self._field_list = self._h.fields()
        self._fields = {f["path"]: f for f in self._field_list}
        self._group_list = self._h.groups()
        self._groups = {g["name"]: g for g in self._group_list}
        self._names = self._layout()
        self._ts_cache: dict = {}

    # -- layout -------------------------------------------------------------------------------

    def _base_name(self, f: dict) -> str:
        g = self._groups[f["group"]]
        return f"{f['group']}/{f['path']}" if g["aligned"] and f["group"] else f["path"]

    @staticmethod
    def _ts_name(g: dict) -> str:
        if not g["name"]:
            return "timestamp"
        return f"{g['name']}/timestamp" if g["aligned"] else f"{g['name']}_timestamp"

    def _layout(self) -> dict:
        """Dataset name -> how to read it, in the order of the mounted run.h5."""
        names: dict = {}
        for g in self._group_list:
            names[self._ts_name(g)] = ("ts", g["name"])
        for f in self._field_list:
            base = self._base_name(f)
            if f["kind"] == "fixed":
                names[base] = ("data", f["path"])
            else:
                names[base] = ("ragged", f["path"])
                names[base + "_len"] = ("len", f["path"])
                names[base + "_offsets"] = ("offsets", f["path"])
            if self._groups[f["group"]]["aligned"] and f["missing"] > 0:
                names[f"_present/{base}"] = ("present", f["path"])
        for s in self._h.summary():
            names[f"summary/{s[0]}"] = ("summary", s[0])
        return names

    def _handle(self) -> Any:
        if self._h is None:
            raise ValueError("the run is closed")
        return self._h

    def _rows(self, target: str, role: str) -> int:
        return self._handle().column_rows(target, role)

    def _dataset(self, name: str) -> Any:
        how = self._names.get(name)
        if how is None:
            # A field's own path is accepted too (fields of a named group).
            f = self._fields.get(name)
            if f is None:
                raise KeyError(f"no dataset {name!r} in run {self.dir}")
            how, name = self._names[self._base_name(f)], self._base_name(f)
        role, target = how
        if role == "ts":
            return Dataset(self, name, target, "ts", np.uint64, (), target)
        if role == "summary":
            return ArrayDataset(name, np.asarray(self.summary[target]))
        f = self._fields[target]
        if role == "data":
            return Dataset(self, name, target, "data", f["dtype"], f["shape"], f["group"], f)
        if role == "present":
            return Dataset(self, name, target, "present", np.bool_, (), f["group"])
        if role == "len":
            return Dataset(self, name, target, "len", np.uint64, (), f["group"])
        if role == "offsets":
            return ArrayDataset(name, self._handle().offsets(target))
        return RaggedDataset(self, name, f)

    def _present(self, f: dict) -> Dataset:
        return Dataset(self, f"_present/{self._base_name(f)}", f["path"], "present", np.bool_, (), f["group"])

    def _timestamp_ds(self, group: str) -> Dataset:
        return self._dataset(self._ts_name(self._groups[group]))

    def _ids(self, group: str) -> np.ndarray:
        ids = self._ts_cache.get(group)
        if ids is None:
            ids = self._ts_cache[group] = self._timestamp_ds(group)[:]
        return ids

    # -- mapping ------------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        """A dataset by name (``Dataset``, ``RaggedDataset`` or ``ArrayDataset``), or a
        ``Group`` for a path prefix (``run["det"]``). KeyError names what is missing."""
        name = name.strip("/")
        if name in self._names or name in self._fields:
            return self._dataset(name)
        if any(n.startswith(name + "/") for n in self._names):
            return Group(self, name)
        raise KeyError(f"no dataset {name!r} in run {self.dir} (it has {', '.join(list(self._names)[:12])}"
                       f"{', ...' if len(self._names) > 12 else ''})")

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        name = name.strip("/")
        return name in self._names or name in self._fields or any(n.startswith(name + "/") for n in self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def keys(self) -> Any:
        """Every dataset name (full paths, in the mounted ``run.h5``'s order)."""
        return self._names.keys()

    def __len__(self) -> int:
        """Events of the run (rows of its aligned group)."""
        return len(self._handle())

    def __repr__(self) -> str:
        return f"<smdfs run {str(self.dir)!r}: {self.state}, {len(self)} events, {len(self._fields)} fields>"

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Lets go of the run (its maps stay alive while arrays borrowed from them do)."""
        self._h = None

    # -- run-level ----------------------------------------------------------------------------

    @property
    def dir(self) -> str:
        """The run directory."""
        return str(self._handle().dir)

    @property
    def state(self) -> str:
        """``"complete"``, ``"crashed"`` (its committed prefix) or ``"writing"`` (a snapshot)."""
        return self._handle().state

    @property
    def warnings(self) -> list:
        """Problems the reader worked around (shards that disagree on a field)."""
        return self._handle().warnings()

    @property
    def summary(self) -> dict:
        """Summary values by name: numpy scalars, numpy arrays, ``bytes`` or ``str``."""
        out = {}
        for name, kind, descr, shape, data in self._handle().summary():
            if kind == "str":
                out[name] = data.decode("utf-8", errors="replace")
            elif kind == "bytes":
                out[name] = data
            else:
                a = np.frombuffer(data, dtype=np.dtype(descr))
                if kind == "fixed":
                    a = a.reshape(shape)
                out[name] = a[()] if a.ndim == 0 else a.copy()
        return out

    def info(self) -> dict:
        """Everything ``smdfs info --json`` reports (state, events, shards, torn bytes, groups,
        datasets, summary, statistics, warnings), as a dict."""
        return self._handle().info()

    @property
    def stats(self) -> dict:
        """Per-field statistics of numeric scalar fields (complete runs):
        ``{path: {"count", "min", "max", "mean"}}``."""
        return {k: dict(zip(("count", "min", "max", "mean"), v)) for k, v in self._handle().stats().items()}

    @property
    def timestamp(self) -> np.ndarray:
        """The run's event ids, ascending (uint64; read-only where zero-copy)."""
        return self._ids("")

    @property
    def fields(self) -> list:
        """Field paths, in the order the writer first saw them."""
        return list(self._fields)

    @property
    def alignment_groups(self) -> dict:
        """Alignment groups by name: the run (``""``), named groups and unaligned fields."""
        return {g["name"]: AlignmentGroup(self, g) for g in self._group_list}

    def row_of(self, ts: Any, group: str = "") -> Any:
        """The row of event id ``ts`` in ``group`` (the run by default; an unaligned field's
        group is its path). ``ts`` may be an int, an object with ``.timestamp``, or an array
        of ids (then an int64 array). KeyError if an id is not in the group."""
        if group not in self._groups:
            raise KeyError(f"no alignment group {group!r} in run {self.dir}")
        ts = getattr(ts, "timestamp", ts)
        if np.ndim(ts) == 0:
            r = self._handle().row_of(group, int(ts))
            if r is None:
                raise KeyError(f"no event with id {int(ts)} in group {group!r} of run {self.dir}")
            return r
        ids = self._ids(group)
        want = np.asarray(ts, dtype=np.uint64)
        rows = np.searchsorted(ids, want)
        ok = rows < len(ids)
        ok[ok] = ids[rows[ok]] == want[ok]
        if not ok.all():
            raise KeyError(f"no event with id {int(want[~ok].flat[0])} in group {group!r} of run {self.dir}")
        return rows.astype(np.int64)

    def event(self, ts: Any) -> dict:
        """One event as a dict ``{"timestamp": id, path: value, ...}`` of every field it has,
        across all groups (aligned fields it lacked are left out). KeyError if no group has
        the id."""
        ts = int(getattr(ts, "timestamp", ts))
        out: dict = {"timestamp": ts}
        found = False
        for g in self._group_list:
            r = self._handle().row_of(g["name"], ts)
            if r is None:
                continue
            found = True
            for f in self._field_list:
                if f["group"] != g["name"]:
                    continue
                name = self._base_name(f)
                ds = self._dataset(name)
                if g["aligned"] and f["missing"] > 0 and not self._present(f)[r]:
                    continue
                out[name] = ds[r]
        if not found:
            raise KeyError(f"no event with id {ts} in run {self.dir}")
        return out

    def iter_batches(self, fields: Optional[list] = None, batch_size: int = 1024, shuffle: bool = True,
                     seed: Optional[int] = None, prefetch: int = 4, shardwise: bool = False,
                     ragged: str = "list") -> Iterator[dict]:
        """Yields the rows of one group in batches: dicts ``{name: array}`` (ragged fields:
        lists, or ``(values, offsets)`` with ``ragged="flat"``), read ahead on a background
        thread, at most ``prefetch`` batches waiting (bounded memory).

        ``fields``: dataset names of one alignment group (default: the run's ``timestamp``
        and every field of the run group). ``shuffle=True``: shards in random order, rows
        shuffled within each shard (every row exactly once, reads stay local);
        ``seed`` makes it repeatable. ``shuffle=False``: event-id order, or shard (arrival)
        order with ``shardwise=True``.
        """
        if ragged not in ("list", "flat"):
            raise ValueError("ragged must be 'list' or 'flat'")
        if fields is None:
            fields = ["timestamp"] + [self._base_name(f) for f in self._field_list if f["group"] == ""]
        if isinstance(fields, str):
            fields = [fields]
        items, shapes, group = [], [], None
        for name in fields:
            ds = self[name]
            if isinstance(ds, Dataset):
                items.append((ds._target, ds._role))
                shapes.append(("fixed", ds.dtype, ds._event_shape, None))
            elif isinstance(ds, RaggedDataset):
                items.append((ds._field["path"], "ragged"))
                shapes.append(("ragged", ds.dtype, (), ds))
            else:
                raise TypeError(f"{name!r} is not a per-event dataset")
            if group is None:
                group = ds.group
            elif ds.group != group:
                raise ValueError(f"{name!r} belongs to group {ds.group!r}, not {group!r}: "
                                 "one batch reads one group's rows")
        if group is None:
            raise ValueError("iter_batches needs at least one field")
        if shuffle:
            order = "shard"
            seed = secrets.randbits(64) if seed is None else int(seed) & (2**64 - 1)
        else:
            order = "shard" if shardwise else "event"
            seed = None
        it = self._handle().batches(group, items, int(batch_size), order, seed, int(prefetch))
        return self._batches(it, list(fields), shapes, ragged)

    @staticmethod
    def _batches(it: Any, names: list, shapes: list, ragged: str) -> Iterator[dict]:
        for parts in it:
            out = {}
            for name, (data, counts), (kind, dtype, eshape, ds) in builtins.zip(names, parts, shapes):
                if kind == "fixed":
                    out[name] = data.view(dtype).reshape((-1,) + eshape)
                else:
                    offsets = np.zeros(len(counts) + 1, dtype=np.uint64)
                    np.cumsum(counts, out=offsets[1:])
                    values = data.view(dtype)
                    out[name] = (values, offsets) if ragged == "flat" else ds._split(values, offsets)
            yield out
