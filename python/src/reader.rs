//! The reader side of the extension: `RunHandle`, one opened run (`smdfs::Run` behind an
//! `Arc`), with byte-level reads that `python/smdfs/reader.py` shapes into numpy arrays, and
//! `BatchIter`, the prefetching batch iterator.
//!
//! Contracts: every read that touches the run's memory maps runs with the GIL released;
//! zero-copy arrays borrow a shard's committed, never-modified bytes and keep the handle
//! (hence the maps) alive as their numpy base, and are read-only; every error is a typed
//! Python exception (`errors::to_py`), never a panic.

use std::path::PathBuf;
use std::sync::Arc;

use numpy::ndarray::ArrayView1;
use numpy::{PyArray1, PyReadonlyArray1, PyReadwriteArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use smdfs::{Error, Kind, Run};

use crate::errors::to_py;

mod batches;
mod columns;

use batches::{Batches, Item, Order};
use columns::{group_index, Column, Role};

/// One opened run (a read-only snapshot). Created by `smdfs.open`.
#[pyclass(frozen, module = "smdfs._smdfs")]
pub(crate) struct RunHandle {
    run: Arc<Run>,
}

/// A read-only numpy array over `data`, which must live inside `owner`'s `Run` (its shard
/// maps, index or offsets).
fn borrow<'py, T: numpy::Element>(owner: &Bound<'py, RunHandle>, data: &[T]) -> PyResult<Bound<'py, PyArray1<T>>> {
    let view = ArrayView1::from(data);
    // SAFETY: `data` is a committed prefix of a shard column, or the run's offsets, which
    // the `Run` behind `owner` maps read-only (or owns) and never modifies, moves or unmaps
    // while it lives; the array holds `owner` as its base, so the `Run` outlives the array.
    let arr = unsafe { PyArray1::borrow_from_array(&view, owner.clone().into_any()) };
    // Read-only: the maps are PROT_READ, a write would fault.
    let kw = PyDict::new(owner.py());
    kw.set_item("write", false)?;
    arr.call_method("setflags", (), Some(&kw))?;
    Ok(arr)
}

/// The contiguous bytes of a C-contiguous writable array, or a ValueError.
fn out_slice<'a>(out: &'a mut PyReadwriteArray1<'_, u8>) -> PyResult<&'a mut [u8]> {
    out.as_slice_mut().map_err(|_| PyValueError::new_err("the output array must be C-contiguous"))
}

fn kind_name(k: Kind) -> String {
    format!("{k:?}").to_lowercase()
}

/// Ragged rows as returned to Python: concatenated values (bytes) and element counts.
type RaggedRows<'py> = (Bound<'py, PyArray1<u8>>, Bound<'py, PyArray1<u64>>);

#[pymethods]
impl RunHandle {
    /// Opens the run in `path` (complete, crashed or still writing).
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<RunHandle> {
        let run = py.detach(|| Run::open(&path)).map_err(to_py)?;
        Ok(RunHandle { run: Arc::new(run) })
    }

    /// Events in the run's aligned group.
    fn __len__(&self) -> usize {
        self.run.len() as usize
    }

    /// `"writing"`, `"complete"` or `"crashed"`.
    #[getter]
    fn state(&self) -> String {
        self.run.state().to_string()
    }

    /// The run directory.
    #[getter]
    fn dir(&self) -> PathBuf {
        self.run.dir().to_path_buf()
    }

    /// Problems the reader worked around.
    fn warnings(&self) -> Vec<String> {
        self.run.warnings().to_vec()
    }

    /// Groups in schema order: dicts of name, aligned, rows, duplicates, duplicate_ids.
    fn groups<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let l = PyList::empty(py);
        for g in self.run.groups() {
            let d = PyDict::new(py);
            d.set_item("name", &g.spec.name)?;
            d.set_item("aligned", g.spec.aligned)?;
            d.set_item("rows", g.index.len())?;
            d.set_item("duplicates", g.duplicates)?;
            d.set_item("duplicate_ids", g.duplicate_ids.clone())?;
            l.append(d)?;
        }
        Ok(l)
    }

    /// Fields in schema order: dicts of path, kind, dtype (numpy descr), shape (per event),
    /// group, aligned, rows, missing, fill (one element's bytes), units.
    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let l = PyList::empty(py);
        for f in self.run.fields() {
            let g = &self.run.groups()[f.group];
            let d = PyDict::new(py);
            d.set_item("path", &f.spec.path)?;
            d.set_item("kind", kind_name(f.spec.kind))?;
            d.set_item("dtype", f.spec.dtype.numpy_descr())?;
            d.set_item("shape", PyTuple::new(py, &f.spec.shape)?)?;
            d.set_item("group", &f.spec.group)?;
            d.set_item("aligned", g.spec.aligned)?;
            d.set_item("rows", g.index.len())?;
            d.set_item("missing", f.missing)?;
            d.set_item("fill", PyBytes::new(py, &f.spec.fill))?;
            d.set_item("units", f.spec.units.clone())?;
            l.append(d)?;
        }
        Ok(l)
    }

    /// Summary values: tuples (name, kind, dtype descr, shape, bytes).
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let l = PyList::empty(py);
        for s in self.run.summary() {
            let t = (
                &s.path,
                kind_name(s.kind),
                s.dtype.numpy_descr(),
                PyTuple::new(py, &s.shape)?,
                PyBytes::new(py, &s.data()),
            );
            l.append(t)?;
        }
        Ok(l)
    }

    /// Per-field statistics of numeric scalar fields: {path: (count, min, max, mean)}.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, s) in self.run.stats() {
            d.set_item(k, (s.count, s.min, s.max, s.mean()))?;
        }
        Ok(d)
    }

    /// Everything `smdfs info --json` reports, as a dict.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let i = py.detach(|| smdfs::RunInfo::of(&self.run));
        let d = PyDict::new(py);
        d.set_item("dir", &i.dir)?;
        d.set_item("state", i.state.to_string())?;
        d.set_item("events", i.events)?;
        d.set_item("shards", i.shards)?;
        d.set_item("torn_bytes", i.torn_bytes)?;
        let groups = PyList::empty(py);
        for g in &i.groups {
            let x = PyDict::new(py);
            x.set_item("name", &g.name)?;
            x.set_item("aligned", g.aligned)?;
            x.set_item("rows", g.rows)?;
            x.set_item("duplicates", g.duplicates)?;
            x.set_item("duplicate_ids", g.duplicate_ids.clone())?;
            groups.append(x)?;
        }
        d.set_item("groups", groups)?;
        let datasets = PyList::empty(py);
        for s in &i.datasets {
            let x = PyDict::new(py);
            x.set_item("path", &s.path)?;
            x.set_item("dtype", s.dtype.name())?;
            x.set_item("kind", kind_name(s.kind))?;
            x.set_item("event_shape", s.event_shape.clone())?;
            x.set_item("shape", s.shape.clone())?;
            x.set_item("rows", s.rows)?;
            x.set_item("group", &s.group)?;
            x.set_item("aligned", s.aligned)?;
            x.set_item("missing", s.missing)?;
            x.set_item("shards", s.shards)?;
            if let Some(e) = s.elements {
                x.set_item("elements", e)?;
            }
            datasets.append(x)?;
        }
        d.set_item("datasets", datasets)?;
        let summary = PyList::empty(py);
        for s in &i.summary {
            let x = PyDict::new(py);
            x.set_item("name", &s.name)?;
            x.set_item("dtype", s.dtype.name())?;
            x.set_item("shape", s.shape.clone())?;
            if let Some(v) = s.value {
                x.set_item("value", v)?;
            }
            if let Some(t) = &s.text {
                x.set_item("text", t)?;
            }
            summary.append(x)?;
        }
        d.set_item("summary", summary)?;
        let stats = PyDict::new(py);
        for (k, s) in &i.stats {
            let x = PyDict::new(py);
            x.set_item("count", s.count)?;
            x.set_item("min", s.min)?;
            x.set_item("max", s.max)?;
            x.set_item("sum", s.sum)?;
            stats.set_item(k, x)?;
        }
        d.set_item("stats", stats)?;
        d.set_item("warnings", i.warnings.clone())?;
        Ok(d)
    }

    /// Rows of a column: `target` is a group name for role "ts", a field path otherwise.
    fn column_rows(&self, target: &str, role: &str) -> PyResult<u64> {
        let c = Column::resolve(&self.run, target, Role::parse(role).map_err(to_py)?).map_err(to_py)?;
        Ok(c.rows(&self.run))
    }

    /// Rows `start..start + n` of a column as a read-only `u8` array borrowing the shard's
    /// memory map, or None when they are not one contiguous stretch of one shard.
    fn zero_copy<'py>(
        slf: &Bound<'py, Self>,
        target: &str,
        role: &str,
        start: u64,
        n: u64,
    ) -> PyResult<Option<Bound<'py, PyArray1<u8>>>> {
        let run = &slf.get().run;
        let c = Column::resolve(run, target, Role::parse(role).map_err(to_py)?).map_err(to_py)?;
        c.contiguous(run, start, n).map(|b| borrow(slf, b)).transpose()
    }

    /// Reads rows `start..` of a column into `out` (a C-contiguous `u8` view of whole rows),
    /// gathered in parallel with the GIL released.
    fn read(
        &self,
        py: Python<'_>,
        target: &str,
        role: &str,
        start: u64,
        mut out: PyReadwriteArray1<'_, u8>,
    ) -> PyResult<()> {
        let c = Column::resolve(&self.run, target, Role::parse(role).map_err(to_py)?).map_err(to_py)?;
        let buf = out_slice(&mut out)?;
        if c.row_bytes > 0 && !buf.len().is_multiple_of(c.row_bytes) {
            return Err(PyValueError::new_err(format!("{} bytes are not whole rows of {}", buf.len(), c.row_bytes)));
        }
        let n = buf.len().checked_div(c.row_bytes).unwrap_or(0) as u64;
        if start.checked_add(n).is_none_or(|e| e > c.rows(&self.run)) {
            return Err(to_py(Error::OutOfRange {
                what: "row",
                index: start.saturating_add(n),
                len: c.rows(&self.run),
            }));
        }
        let run = &self.run;
        py.detach(|| c.read(run, start, buf)).map_err(to_py)
    }

    /// Reads the rows listed in `rows` (u64, any order) of a column into `out`, in parallel
    /// with the GIL released.
    fn take(
        &self,
        py: Python<'_>,
        target: &str,
        role: &str,
        rows: PyReadonlyArray1<'_, u64>,
        mut out: PyReadwriteArray1<'_, u8>,
    ) -> PyResult<()> {
        let c = Column::resolve(&self.run, target, Role::parse(role).map_err(to_py)?).map_err(to_py)?;
        let rows = rows.as_slice().map_err(|_| PyValueError::new_err("rows must be C-contiguous"))?;
        let buf = out_slice(&mut out)?;
        let run = &self.run;
        py.detach(|| c.take(run, rows, buf)).map_err(to_py)
    }

    /// Each shard's committed rows of a column, zero-copy, in shard (arrival) order.
    fn shard_arrays<'py>(slf: &Bound<'py, Self>, target: &str, role: &str) -> PyResult<Vec<Bound<'py, PyArray1<u8>>>> {
        let run = &slf.get().run;
        let c = Column::resolve(run, target, Role::parse(role).map_err(to_py)?).map_err(to_py)?;
        c.shard_spans(run).into_iter().map(|b| borrow(slf, b)).collect()
    }

    /// A ragged field's global element offsets (u64, rows + 1), zero-copy.
    fn offsets<'py>(slf: &Bound<'py, Self>, field: &str) -> PyResult<Bound<'py, PyArray1<u64>>> {
        let run = &slf.get().run;
        let f = run.field(field).map_err(to_py)?;
        let offs = f.offsets().ok_or_else(|| to_py(Error::Usage(format!("field {field:?} is not ragged"))))?;
        borrow(slf, offs)
    }

    /// The element bytes of ragged rows `start..end`, concatenated into `out` (sized from
    /// the offsets), with the GIL released.
    fn ragged_read(
        &self,
        py: Python<'_>,
        field: &str,
        start: u64,
        end: u64,
        mut out: PyReadwriteArray1<'_, u8>,
    ) -> PyResult<()> {
        let buf = out_slice(&mut out)?;
        let run = &self.run;
        py.detach(|| columns::ragged_read(run, field, start, end, buf)).map_err(to_py)
    }

    /// The ragged rows listed in `rows`: (values as `u8`, element count per row as `u64`).
    fn ragged_take<'py>(
        &self,
        py: Python<'py>,
        field: &str,
        rows: PyReadonlyArray1<'py, u64>,
    ) -> PyResult<RaggedRows<'py>> {
        let rows = rows.as_slice().map_err(|_| PyValueError::new_err("rows must be C-contiguous"))?;
        let run = &self.run;
        let (v, l) = py.detach(|| columns::ragged_take(run, field, rows)).map_err(to_py)?;
        Ok((PyArray1::from_vec(py, v), PyArray1::from_vec(py, l)))
    }

    /// The first row of `group` whose event id is `id`, or None.
    fn row_of(&self, py: Python<'_>, group: &str, id: u64) -> PyResult<Option<u64>> {
        py.detach(|| self.run.row_of(group, id)).map_err(to_py)
    }

    /// Starts a prefetching batch iterator over columns of one group. `items` are
    /// `(target, role)` pairs (role "ragged" for a ragged field's rows); `order` is
    /// "event" or "shard"; `seed` shuffles shard-wise.
    #[pyo3(signature = (group, items, batch_rows, order, seed, depth))]
    fn batches(
        &self,
        group: &str,
        items: Vec<(String, String)>,
        batch_rows: u64,
        order: &str,
        seed: Option<u64>,
        depth: usize,
    ) -> PyResult<BatchIter> {
        let gi = group_index(&self.run, group).map_err(to_py)?;
        let mut its = Vec::with_capacity(items.len());
        for (target, role) in &items {
            let it = if role == "ragged" {
                self.run.field(target).map_err(to_py)?;
                Item::Ragged(target.clone())
            } else {
                Item::Fixed(Column::resolve(&self.run, target, Role::parse(role).map_err(to_py)?).map_err(to_py)?)
            };
            let g = match &it {
                Item::Fixed(c) => c.group,
                Item::Ragged(p) => self.run.field(p).map_err(to_py)?.data().group,
            };
            if g != gi {
                return Err(PyValueError::new_err(format!(
                    "{target:?} belongs to group {:?}, not {group:?}: one batch reads one group's rows",
                    self.run.groups()[g].spec.name
                )));
            }
            its.push(it);
        }
        let order = match (order, seed) {
            ("event", None) => Order::EventId,
            ("event", Some(_)) => return Err(PyValueError::new_err("a shuffle seed needs shard order")),
            ("shard", s) => Order::Shardwise(s),
            (o, _) => return Err(PyValueError::new_err(format!("unknown order {o:?} (event, shard)"))),
        };
        let b = Batches::start(self.run.clone(), gi, its, batch_rows, order, depth).map_err(to_py)?;
        Ok(BatchIter { inner: b })
    }
}

/// A prefetching iterator of batches; each item is a list, per requested column, of
/// `(u8 values, u64 element counts per row)` (counts empty for fixed columns).
#[pyclass(module = "smdfs._smdfs")]
pub(crate) struct BatchIter {
    inner: Batches,
}

#[pymethods]
impl BatchIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        // A batch read ahead is taken without releasing the GIL; only a wait releases it.
        let next = match self.inner.ready() {
            Ok(b) => b,
            Err(()) => py.detach(|| self.inner.next_batch()),
        };
        let Some(b) = next else { return Ok(None) };
        let b = b.map_err(to_py)?;
        let l = PyList::empty(py);
        for (data, counts) in b.parts {
            l.append((PyArray1::from_vec(py, data), PyArray1::from_vec(py, counts)))?;
        }
        Ok(Some(l))
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RunHandle>()?;
    m.add_class::<BatchIter>()?;
    Ok(())
}
