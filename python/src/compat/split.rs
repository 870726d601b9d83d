//! Split records for `smdfs.compat.splitdataloader`: `split_write` feeds a Python iterable
//! of bytes to `smdfs::tools::split::SplitWriter`; `SplitLoaderHandle` (subclassed in
//! Python by `SplitDataLoader`) serves `len` and `loader[i]` from the memory-mapped bins, and
//! `BinIter` hands out whole bins of records as bytes objects that a copier thread fills from
//! the maps one bin ahead of the consumer.

use std::path::PathBuf;

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use smdfs::tools::split::{SplitLoader, SplitWriter};

use crate::errors::to_py;

/// Writes the records of `records` (an iterable of bytes-like objects) into `splits` bins
/// under `dir`; returns how many.
#[pyfunction]
fn split_write(py: Python<'_>, dir: PathBuf, records: &Bound<'_, PyAny>, splits: usize) -> PyResult<u64> {
    let mut w = py.detach(|| SplitWriter::create(&dir, splits)).map_err(to_py)?;
    for (i, item) in records.try_iter()?.enumerate() {
        let item = item?;
        let pushed = if let Ok(b) = item.cast::<PyBytes>() {
            w.push(b.as_bytes())
        } else {
            let v: Vec<u8> = item.extract().map_err(|_| {
                PyTypeError::new_err(format!(
                    "record {i} is a {}, not bytes",
                    item.get_type().name().map(|n| n.to_string()).unwrap_or_default()
                ))
            })?;
            w.push(&v)
        };
        pushed.map_err(to_py)?;
    }
    py.detach(|| w.finish()).map_err(to_py)
}

/// A split directory opened for reading (record `i` is `loader[i]`).
#[pyclass(subclass, frozen, module = "smdfs._smdfs")]
pub(crate) struct SplitLoaderHandle {
    loader: SplitLoader,
}

#[pymethods]
impl SplitLoaderHandle {
    /// Opens the split directory `data_dir` (maps its index and bins).
    #[new]
    #[pyo3(signature = (data_dir, *_args, **_kwargs))]
    fn new(
        py: Python<'_>,
        data_dir: PathBuf,
        _args: &Bound<'_, pyo3::types::PyTuple>,
        _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> PyResult<SplitLoaderHandle> {
        let loader = py.detach(|| SplitLoader::open(&data_dir)).map_err(to_py)?;
        Ok(SplitLoaderHandle { loader })
    }

    /// Number of records.
    fn __len__(&self) -> usize {
        self.loader.len() as usize
    }

    /// The bytes of record `i` (write order); IndexError past the end.
    fn __getitem__<'py>(&self, py: Python<'py>, i: i64) -> PyResult<Bound<'py, PyBytes>> {
        let n = self.loader.len() as i64;
        let j = if i < 0 { i + n } else { i };
        if j < 0 {
            return Err(pyo3::exceptions::PyIndexError::new_err(format!("record {i} of {n}")));
        }
        let r = self.loader.get(j as u64).map_err(to_py)?;
        Ok(PyBytes::new(py, r))
    }

    /// Number of bins.
    #[getter]
    fn splits(&self) -> usize {
        self.loader.splits()
    }

    /// Bin by bin (shuffled bins and records within each when `seed` is given); a copier
    /// thread fills the next bin's bytes while the consumer walks the current one.
    #[pyo3(signature = (seed=None))]
    fn _binwise(&self, seed: Option<u64>) -> PyResult<BinIter> {
        let bins = self.loader.bin_order(seed).into_iter();
        Ok(BinIter { loader: self.loader.clone(), bins, seed, pending: None, copier: Copier::start()? })
    }
}

/// One copy the copier makes: `len` bytes from a record in a bin's map (`src`) into a fresh
/// bytes object's buffer (`dst`). Addresses as integers: they cross to the copier thread.
struct Copy {
    dst: usize,
    src: usize,
    len: usize,
}

/// A bin being filled: its list of bytes objects, shown to Python only after `done`.
struct Filling {
    list: Py<PyList>,
    done: Mutex<Receiver<()>>,
}

/// The copier thread: fills bins' bytes objects from the maps, in the order they are sent.
struct Copier {
    jobs: Option<SyncSender<(Vec<Copy>, SyncSender<()>)>>,
    /// The copier (absent in a forked child: every call there is `Error::Forked`).
    thread: smdfs::fork::Threads,
}

impl Copier {
    fn start() -> PyResult<Copier> {
        let (jobs, rx) = sync_channel::<(Vec<Copy>, SyncSender<()>)>(2);
        let thread = std::thread::Builder::new()
            .name("smdfs-split-copy".into())
            .spawn(move || {
                for (copies, done) in rx {
                    for c in copies {
                        // SAFETY: `src` lies in a bin map that the sending BinIter's loader keeps
                        // mapped, `dst` in a fresh bytes object of exactly `len` bytes that only
                        // the BinIter references until `done` arrives (it waits for it before
                        // handing the list out or dropping it).
                        unsafe { std::ptr::copy_nonoverlapping(c.src as *const u8, c.dst as *mut u8, c.len) };
                    }
                    let _ = done.send(());
                }
            })
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("starting the copier thread: {e}")))?;
        let mut threads = smdfs::fork::Threads::new("split-records bin iterator");
        threads.push(thread);
        Ok(Copier { jobs: Some(jobs), thread: threads })
    }
}

impl Drop for Copier {
    fn drop(&mut self) {
        self.jobs.take();
        self.thread.join_all();
    }
}

/// Whole bins of records in iteration order; see `SplitLoaderHandle._binwise`. The
/// consumer's thread allocates each bin's bytes objects (that needs the interpreter) and the
/// copier fills them, one bin ahead, so the copy (most of the work) leaves the consumer's core.
#[pyclass(module = "smdfs._smdfs")]
pub(crate) struct BinIter {
    loader: SplitLoader,
    bins: std::vec::IntoIter<usize>,
    seed: Option<u64>,
    pending: Option<Filling>,
    copier: Copier,
}

impl BinIter {
    /// Allocates the next bin's bytes objects and sends their copies to the copier.
    fn start_next(&mut self, py: Python<'_>) -> PyResult<Option<Filling>> {
        let Some(b) = self.bins.next() else { return Ok(None) };
        let records = self.loader.records_of_bin(b, self.seed);
        let mut copies = Vec::with_capacity(records.len());
        let mut objects = Vec::with_capacity(records.len());
        for i in records {
            let r = self.loader.get(i).map_err(to_py)?;
            let len = isize::try_from(r.len()).map_err(|_| PyValueError::new_err(format!("record {i} is too long")))?;
            // SAFETY: a NULL source asks CPython for an uninitialized bytes object of `len`
            // bytes (a fresh object unless `len` is 0), which the copier fills before Python sees it.
            let obj = unsafe { pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), len) };
            // SAFETY: a new reference or NULL with an exception set.
            let obj = unsafe { Bound::from_owned_ptr_or_err(py, obj)? };
            if !r.is_empty() {
                // SAFETY: `obj` is a bytes object; its buffer has `len` bytes.
                let dst = unsafe { pyo3::ffi::PyBytes_AsString(obj.as_ptr()) };
                if dst.is_null() {
                    return Err(PyErr::fetch(py));
                }
                copies.push(Copy { dst: dst as usize, src: r.as_ptr() as usize, len: r.len() });
            }
            objects.push(obj);
        }
        let list = PyList::new(py, objects)?.unbind();
        let (done_tx, done) = sync_channel(1);
        let jobs = self.copier.jobs.as_ref().ok_or_else(|| PyRuntimeError::new_err("the copier is stopped"))?;
        if jobs.send((copies, done_tx)).is_err() {
            return Err(PyRuntimeError::new_err("the copier thread ended"));
        }
        Ok(Some(Filling { list, done: Mutex::new(done) }))
    }
}

#[pymethods]
impl BinIter {
    /// The next bin's records as a list of bytes, or None after the last bin.
    fn next_bin<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        self.copier.thread.check().map_err(to_py)?;
        if self.pending.is_none() {
            self.pending = self.start_next(py)?;
        }
        let Some(cur) = self.pending.take() else { return Ok(None) };
        let next = self.start_next(py);
        let Filling { list, done } = cur;
        let filled = py.detach(move || smdfs::sync::lock(&done).recv());
        self.pending = next?;
        filled.map_err(|_| PyRuntimeError::new_err("the copier thread ended"))?;
        Ok(Some(list.into_bound(py)))
    }
}

impl Drop for BinIter {
    fn drop(&mut self) {
        // The copier may still be writing into the pending bin's bytes objects (not in a
        // forked child: the copier is not there).
        if self.copier.thread.origin().forked() {
            return;
        }
        if let Some(p) = self.pending.take() {
            let _ = smdfs::sync::lock(&p.done).recv();
        }
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(split_write, m)?)?;
    m.add_class::<SplitLoaderHandle>()?;
    m.add_class::<BinIter>()?;
    Ok(())
}
