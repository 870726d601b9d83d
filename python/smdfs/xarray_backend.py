"""xarray backend: ``xr.open_dataset("out", engine="smdfs")`` opens a run lazily, no mount
needed (machines without FUSE included); ``chunks={}`` gives dask arrays.

Layout of the ``xarray.Dataset``:

* one dimension per alignment group, named like its event-id dataset and carrying it as the
  (uint64) coordinate: ``timestamp`` for the run, ``<G>/timestamp`` for a named group,
  ``<P>_timestamp`` for an unaligned field ``P``;
* one variable per fixed field (``energy``, ``det/image``), its per-event axes named
  ``<name>_dim1``, ``<name>_dim2`` (as run.h5 names them), ...; attributes ``units``, ``fill_value``, ``missing``
  and, where events lacked the field, ``ancillary_variables`` naming its mask;
* masks ``_present/<path>`` (bool), ragged fields as object variables (one ``bytes``, ``str``
  or array per event) plus ``<name>_len``;
* the summary as dataset attributes ``summary/<name>``, the run state as ``smdfs_state``.

Values are read only when indexed (explicit outer indexing: ints, slices and one index array
pass straight to the reader), so ``.sel(timestamp=t)`` reads one row.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Optional

import numpy as np
from xarray import Dataset as XDataset
from xarray import Variable
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

from . import reader

__all__ = ["SmdfsBackendEntrypoint", "SmdfsBackendArray"]

#: Target bytes per dask chunk along the event axis (``chunks={}``).
CHUNK_BYTES = 64 << 20


class SmdfsBackendArray(BackendArray):
    """A lazily read run dataset for xarray (explicit outer indexing, one vector at most)."""

    def __init__(self, ds: Any, shape: tuple, dtype: np.dtype):
        self._ds = ds
        #: Shape.
        self.shape = shape
        #: Element type (``object`` for ragged fields).
        self.dtype = dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER_1VECTOR, self._raw_indexing_method)

    def _raw_indexing_method(self, key: tuple) -> np.ndarray:
        if isinstance(self._ds, reader.RaggedDataset):
            first = key[0] if key else slice(None)
            out = self._ds[first]
            if isinstance(out, list):
                a = np.empty(len(out), dtype=object)
                a[:] = out
                return a
            a = np.empty((), dtype=object)
            a[()] = out
            return a
        out = np.asarray(self._ds[key])
        # Other engines hand out writable arrays; a zero-copy view of a map is read-only.
        return out if out.flags.writeable else out.copy()


def _dims(name: str, dim0: str, ndim: int) -> tuple:
    return (dim0,) + tuple(f"{name}_dim{k}" for k in range(1, ndim))


def _variable(name: str, ds: Any, dim0: str, attrs: dict) -> Variable:
    if isinstance(ds, reader.RaggedDataset):
        shape, dtype = (len(ds),), np.dtype(object)
        row_bytes = 64
    else:
        shape, dtype = ds.shape, ds.dtype
        row_bytes = max(1, ds._row_bytes())
    data = indexing.LazilyIndexedArray(SmdfsBackendArray(ds, shape, dtype))
    dims = _dims(name, dim0, len(shape))
    preferred = {d: n for d, n in zip(dims, shape)}
    preferred[dim0] = max(1, min(shape[0], CHUNK_BYTES // row_bytes)) if shape[0] else 1
    return Variable(dims, data, attrs, encoding={"preferred_chunks": preferred})


def open_run_dataset(run: "reader.Run", drop_variables: Optional[Iterable[str]] = None) -> XDataset:
    """Builds the lazy ``xarray.Dataset`` of an opened run (what the backend returns)."""
    drop = set(drop_variables or ())
    dim_of = {g: run._ts_name(run._groups[g]) for g in run._groups}
    coords, variables = {}, {}
    for g, dim in dim_of.items():
        ids = run._timestamp_ds(g)[:]
        coords[dim] = Variable((dim,), np.array(ids), {"long_name": "event id", "description": "event ids, ascending"})
    for f in run._field_list:
        name = run._base_name(f)
        dim0 = dim_of[f["group"]]
        has_mask = run._groups[f["group"]]["aligned"] and f["missing"] > 0
        attrs: dict = {"smdfs_kind": f["kind"], "missing": f["missing"]}
        if f["units"]:
            attrs["units"] = f["units"]
        if has_mask:
            attrs["ancillary_variables"] = f"/_present/{name}"
        ds = run[name]
        if f["kind"] == "fixed":
            attrs["fill_value"] = ds.fill_value
        if name not in drop:
            variables[name] = _variable(name, ds, dim0, attrs)
        if f["kind"] != "fixed" and f"{name}_len" not in drop:
            variables[f"{name}_len"] = _variable(f"{name}_len", run[f"{name}_len"], dim0, {})
        if has_mask and f"_present/{name}" not in drop:
            variables[f"_present/{name}"] = _variable(
                f"_present/{name}", run[f"_present/{name}"], dim0,
                {"flag_values": np.array([0, 1], dtype=np.uint8), "flag_meanings": "missing present"})
    attrs = {"smdfs_state": run.state, "smdfs_events": len(run)}
    for k, v in run.summary.items():
        attrs[f"summary/{k}"] = v
    for k in drop:
        coords.pop(k, None)
    out = XDataset(variables, coords=coords, attrs=attrs)
    out.set_close(run.close)
    return out


class SmdfsBackendEntrypoint(BackendEntrypoint):
    """``xr.open_dataset(run_dir, engine="smdfs")``: a run as a lazy ``xarray.Dataset``."""

    description = "Open an smdfs run directory (complete, crashed or still writing) lazily."
    url = "https://github.com/smdfs/smdfs"
    open_dataset_parameters = ("filename_or_obj", "drop_variables")

    def open_dataset(self, filename_or_obj: Any, *, drop_variables: Optional[Iterable[str]] = None) -> XDataset:
        """Opens the run directory ``filename_or_obj`` (a path or an opened ``smdfs.Run``)."""
        run = filename_or_obj if isinstance(filename_or_obj, reader.Run) else reader.open(filename_or_obj)
        return open_run_dataset(run, drop_variables)

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """True for a directory holding an smdfs manifest."""
        try:
            return os.path.isfile(os.path.join(os.fspath(filename_or_obj), "manifest.json"))
        except TypeError:
            return False
