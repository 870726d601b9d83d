//! The writer side of the extension: `_Writer` (the base class of `smdfs.SmallData`, which
//! adds the familiar names and docstrings in Python) and `_Client` (a handle per Python
//! thread). Both put events through [`client::State`], so `smd.event(...)` is one call into
//! Rust: values are converted once, same-id calls merge, batches are handed to the servers
//! with the GIL released.
//!
//! Locking: a handle is used by one thread at a time; a second thread that calls it while it
//! works gets an error instead of waiting (waiting with the GIL held while the first thread
//! waits for the GIL would deadlock). The run itself is shared as an `Arc`, taken out of its
//! lock before any call that releases the GIL.

mod client;
mod convert;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use numpy::{PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use smdfs::{MpiRole, SmallData};

use crate::errors::{to_py, Error, SchemaError};
use client::{Column, Common, State};
use convert::{Arena, Item, Kind2};

fn busy() -> PyErr {
    Error::new_err("this writer handle is in use by another thread: give each thread its own handle (smd.client())")
}

/// Locks a handle's state without waiting (see the module doc).
fn try_lock<T>(m: &Mutex<T>) -> PyResult<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Ok(g),
        Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        Err(TryLockError::WouldBlock) => Err(busy()),
    }
}

fn closed() -> PyErr {
    Error::new_err("the run is not open (done() was called, or it was never started)")
}

/// The run being written; `smdfs.SmallData` derives from it.
#[pyclass(subclass, frozen, module = "smdfs._smdfs", name = "_Writer")]
pub(crate) struct Writer {
    run: Mutex<Option<Arc<SmallData>>>,
    common: Mutex<Option<Arc<Common>>>,
    /// The handle `smd.event()` writes through.
    main: Mutex<Option<State>>,
}

impl Writer {
    fn run(&self) -> PyResult<Arc<SmallData>> {
        smdfs::sync::lock(&self.run).clone().ok_or_else(closed)
    }
}

#[pymethods]
impl Writer {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        Writer { run: Mutex::new(None), common: Mutex::new(None), main: Mutex::new(None) }
    }

    /// Starts the run (collective under MPI). Called by `SmallData.__init__`.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (dir, servers, batch_size, batch_bytes, in_flight, unaligned, fill, units, attrs, sync_commits, overwrite, ragged, callbacks, private=false))]
    fn _start(
        &self,
        py: Python<'_>,
        dir: PathBuf,
        servers: usize,
        batch_size: usize,
        batch_bytes: usize,
        in_flight: usize,
        unaligned: Vec<String>,
        fill: HashMap<String, Py<PyAny>>,
        units: HashMap<String, String>,
        attrs: HashMap<String, HashMap<String, String>>,
        sync_commits: bool,
        overwrite: bool,
        ragged: Vec<String>,
        callbacks: Vec<Py<PyAny>>,
        private: bool,
    ) -> PyResult<()> {
        if batch_size == 0 || batch_bytes == 0 {
            return Err(PyValueError::new_err("batch_size and batch_bytes must be at least 1"));
        }
        // The crate's own thresholds are out of reach: handles flush themselves (client.rs).
        let mut b = SmallData::builder(&dir)
            .servers(servers)
            .batch_events(usize::MAX)
            .batch_bytes(usize::MAX)
            .max_batches_in_flight(in_flight)
            .sync_commits(sync_commits)
            .overwrite(overwrite)
            .private(private);
        for u in &unaligned {
            b = b.unaligned(u);
        }
        for (p, u) in &units {
            b = b.units(p, u);
        }
        for (p, named) in &attrs {
            for (name, value) in named {
                b = b.attr(p, name, value);
            }
        }
        let run = py.detach(|| b.build()).map_err(to_py)?;
        let common = Arc::new(Common {
            callbacks,
            ragged: ragged.into_iter().collect::<HashSet<_>>(),
            fills: fill,
            sigs: Mutex::new(HashMap::new()),
            batch_events: batch_size,
            batch_bytes,
        });
        let run = Arc::new(run);
        let main = run.is_client().then(|| State::new(run.client(), Arc::clone(&common)));
        *smdfs::sync::lock(&self.main) = main;
        *smdfs::sync::lock(&self.common) = Some(common);
        *smdfs::sync::lock(&self.run) = Some(run);
        Ok(())
    }

    /// Records fields of the event with id `ts` (an int, or an object with `.timestamp`).
    ///
    /// `event(ts, *dicts, align_group=None, **fields)`: fields come as keyword arguments or
    /// dicts (nested dicts become group paths, `{"det": {"image": a}}` → `det/image`).
    /// Calls with the same `ts` in a row merge into one event; a field given twice for one
    /// event raises `SchemaError`. Values: Python or numpy scalars, numpy arrays (bool,
    /// int8..int64, uint8..uint64, float32, float64; per-event shape fixed at first sight),
    /// `str`/`bytes` (varying length), and 1-D arrays of varying length for fields declared
    /// `ragged=[...]` or named `var_*`. `align_group="name"` puts this call's fields in a
    /// named alignment group with its own `timestamp`.
    #[pyo3(signature = (ts, *dicts, align_group=None, **fields))]
    fn event(
        &self,
        py: Python<'_>,
        ts: &Bound<'_, PyAny>,
        dicts: &Bound<'_, PyTuple>,
        align_group: Option<&str>,
        fields: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let id = convert::event_id(ts)?;
        let mut g = try_lock(&self.main)?;
        let st = g.as_mut().ok_or_else(|| not_client(self))?;
        let dicts: Vec<Bound<'_, PyAny>> = dicts.iter().collect();
        st.event(py, id, &dicts, fields, align_group)
    }

    /// `event_batch` internals: `ts` a C-contiguous uint64 array, `cols` (path, column).
    fn _event_batch(&self, py: Python<'_>, ts: &Bound<'_, PyAny>, cols: &Bound<'_, PyList>) -> PyResult<()> {
        let mut g = try_lock(&self.main)?;
        let st = g.as_mut().ok_or_else(|| not_client(self))?;
        event_batch(py, st, ts, cols)
    }

    /// Hands this process's pending event and batch to the servers.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let mut g = try_lock(&self.main)?;
        match g.as_mut() {
            Some(st) => st.flush(py),
            None => Ok(()),
        }
    }

    /// A new handle for one more Python thread (`smd.client()`).
    fn _client(&self) -> PyResult<Client> {
        let run = self.run()?;
        let common = smdfs::sync::lock(&self.common).clone().ok_or_else(closed)?;
        if !run.is_client() {
            return Err(not_client(self));
        }
        Ok(Client { state: Mutex::new(Some(State::new(run.client(), common))) })
    }

    /// (rank, size, servers, clients, is_client, client index) of this process.
    fn _place(&self) -> PyResult<(usize, usize, usize, usize, bool, usize)> {
        let run = self.run()?;
        Ok(match run.mpi() {
            None => (0, 1, run.servers(), 1, true, 0),
            Some(m) => {
                let (is_client, k) = match m.role {
                    MpiRole::Client(k) => (true, k),
                    MpiRole::Server(k) => (false, k),
                };
                (m.rank, m.size, m.servers, m.clients, is_client, k)
            }
        })
    }

    /// Every client process's bytes, in client order (collective over client processes).
    fn _allgather_clients<'py>(&self, py: Python<'py>, mine: Vec<u8>) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let run = self.run()?;
        let all = py.detach(|| run.allgather_clients(&mine)).map_err(to_py)?;
        Ok(all.iter().map(|b| PyBytes::new(py, b)).collect())
    }

    /// Saves summary values (`[(path, value)]`); stored by rank 0.
    fn _save_summary(&self, py: Python<'_>, values: Vec<(String, Bound<'_, PyAny>)>) -> PyResult<()> {
        let run = self.run()?;
        let mut arena = Arena::default();
        for (p, v) in &values {
            arena.add(p, v, &HashSet::new())?;
        }
        let items: Vec<Item> = arena.used().to_vec();
        let bytes = std::mem::take(&mut arena.bytes);
        py.detach(|| {
            let fields: Vec<smdfs::Field<'_>> =
                items.iter().map(|it| (it.path.as_str(), client_value(it, &bytes))).collect();
            run.save_summary(&fields)
        })
        .map_err(to_py)
    }

    /// Finishes the main handle and completes the run (collective under MPI). Returns
    /// (events, duplicates).
    fn _done(&self, py: Python<'_>) -> PyResult<(u64, u64)> {
        if let Some(mut st) = try_lock(&self.main)?.take() {
            st.close(py)?;
        }
        let run = smdfs::sync::lock(&self.run).take().ok_or_else(closed)?;
        *smdfs::sync::lock(&self.common) = None;
        let run = Arc::try_unwrap(run)
            .map_err(|_| Error::new_err("done() called while another thread uses the run (a reduction in progress)"))?;
        let rep = py.detach(|| run.done()).map_err(to_py)?;
        Ok((rep.events, rep.duplicates()))
    }

    /// Leaves the run without `done()` (MPI mode: the job fails when this process exits).
    fn _abandon(&self) {
        smdfs::sync::lock(&self.main).take();
        smdfs::sync::lock(&self.run).take();
    }
}

fn not_client(w: &Writer) -> PyErr {
    let why = match w.run() {
        Ok(r) => match r.mpi() {
            Some(m) => format!(
                "MPI rank {} is a server rank of this run: it writes no events (loop over smd.round_robin(...) \
                 or smd.block(...), which give server ranks nothing, and check smd.summary)",
                m.rank
            ),
            None => "this run has no writer handle".into(),
        },
        Err(e) => return e,
    };
    Error::new_err(why)
}

fn client_value<'a>(it: &Item, bytes: &'a [u8]) -> smdfs::Value<'a> {
    let data = &bytes[it.start..it.end];
    let dtype = it.dtype.unwrap_or(smdfs::Dtype::U8);
    match it.kind {
        Kind2::Scalar => {
            let mut bits = [0u8; 8];
            bits[..data.len()].copy_from_slice(data);
            smdfs::Value::Scalar { dtype, bits }
        }
        Kind2::Array => smdfs::Value::Array { dtype, shape: it.shape.clone(), data: data.into() },
        Kind2::Ragged => smdfs::Value::Ragged { dtype, data: data.into() },
        Kind2::Bytes => smdfs::Value::Bytes(data.into()),
        Kind2::Str => smdfs::Value::Str(String::from_utf8_lossy(data)),
    }
}

/// `event_batch`: columns of numpy arrays (first axis = events) or sequences of per-event
/// values (ragged fields, bytes, text).
fn event_batch(py: Python<'_>, st: &mut State, ts: &Bound<'_, PyAny>, cols: &Bound<'_, PyList>) -> PyResult<()> {
    let ts = ts.cast::<numpy::PyArray1<u64>>().map_err(|_| PyValueError::new_err("ts must be a uint64 array"))?;
    let ts = ts.readonly();
    let ts = ts.as_slice().map_err(|_| PyValueError::new_err("ts must be contiguous"))?;
    let n = ts.len();
    let ragged = st.common.ragged.clone();
    let mut keep = Vec::new();
    let mut columns = Vec::new();
    for c in cols.iter() {
        let (path, col, mask): (String, Bound<'_, PyAny>, Option<Bound<'_, PyAny>>) = c.extract()?;
        let mask = match mask {
            Some(m) => {
                let m =
                    m.cast_into::<numpy::PyArray1<bool>>().map_err(|_| PyValueError::new_err("mask must be bool"))?;
                if m.len() != n {
                    return Err(SchemaError::new_err(format!(
                        "event_batch: column {path:?}: mask has {} rows, ts has {n}",
                        m.len()
                    )));
                }
                let v: Vec<u8> = m.readonly().as_slice()?.iter().map(|&b| u8::from(b)).collect();
                Some(v)
            }
            None => None,
        };
        let as_array = col.cast::<PyUntypedArray>().ok().filter(|a| {
            a.ndim() >= 1 && !convert::is_ragged(&path, &ragged) && a.dtype().is_native_byteorder() != Some(false)
        });
        if let Some(a) = as_array {
            if a.shape()[0] != n {
                return Err(SchemaError::new_err(format!(
                    "event_batch: column {path:?} has {} rows, ts has {n}",
                    a.shape()[0]
                )));
            }
            let a = if a.is_c_contiguous() {
                a.clone()
            } else {
                py.import("numpy")?.call_method1("ascontiguousarray", (a,))?.cast_into::<PyUntypedArray>()?
            };
            // Convert row 0 (or a dummy view) to learn the item's kind/dtype/shape.
            let mut arena = Arena::default();
            let row0 = a.get_item(0).or_else(|_| a.call_method1("reshape", (a.shape()[1..].to_vec(),)))?;
            if n == 0 {
                continue;
            }
            arena.add(&path, &row0, &ragged)?;
            if arena.n != 1 {
                return Err(SchemaError::new_err(format!("event_batch: column {path:?} is not one field")));
            }
            let item = arena.items[0].clone();
            let row_bytes = item.end - item.start;
            let total = row_bytes * n;
            // SAFETY: a C-contiguous array of n rows of row_bytes bytes, kept alive in `keep`
            // for the whole call; numpy arrays do not move their buffers.
            let data: &[u8] = if total == 0 {
                &[]
            } else {
                unsafe { std::slice::from_raw_parts((*a.as_array_ptr()).fields.data.cast::<u8>(), total) }
            };
            columns.push(Column::Fixed { item, data, row_bytes, mask });
            keep.push(a);
        } else {
            let seq = col.try_iter()?;
            let mut arena = Arena::default();
            for v in seq {
                arena.add(&path, &v?, &ragged)?;
            }
            if arena.n != n {
                return Err(SchemaError::new_err(format!(
                    "event_batch: column {path:?} has {} values, ts has {n}",
                    arena.n
                )));
            }
            if n == 0 {
                continue;
            }
            let items = arena.items[..n].to_vec();
            let first = convert::Sig::of(&items[0]);
            if let Some((i, it)) = items.iter().enumerate().find(|(_, it)| convert::Sig::of(it) != first) {
                return Err(SchemaError::new_err(format!(
                    "event_batch row {i}: field {path:?}: expected {}, got {}",
                    first.describe(),
                    convert::Sig::of(it).describe()
                )));
            }
            columns.push(Column::Rows { items, bytes: arena.bytes, mask });
        }
    }
    let r = st.batch(py, ts, &columns);
    drop(keep);
    r
}

/// A writer handle for one more Python thread (`smd.client()`).
///
/// Has `event`, `event_batch`-free `flush`, and `close` (also a context manager). Give each
/// thread its own; `SmallData.done()` closes any still open.
#[pyclass(frozen, weakref, module = "smdfs._smdfs", name = "Client")]
pub(crate) struct Client {
    state: Mutex<Option<State>>,
}

#[pymethods]
impl Client {
    /// Records fields of the event `ts` (see `SmallData.event`).
    #[pyo3(signature = (ts, *dicts, align_group=None, **fields))]
    fn event(
        &self,
        py: Python<'_>,
        ts: &Bound<'_, PyAny>,
        dicts: &Bound<'_, PyTuple>,
        align_group: Option<&str>,
        fields: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let id = convert::event_id(ts)?;
        let mut g = try_lock(&self.state)?;
        let st = g.as_mut().ok_or_else(|| Error::new_err("this client handle is closed"))?;
        let dicts: Vec<Bound<'_, PyAny>> = dicts.iter().collect();
        st.event(py, id, &dicts, fields, align_group)
    }

    /// Hands the pending event and batch to the servers.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        match try_lock(&self.state)?.as_mut() {
            Some(st) => st.flush(py),
            None => Ok(()),
        }
    }

    /// Flushes and closes the handle (needed before `done()`; `done()` closes open ones).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let st = try_lock(&self.state)?.take();
        match st {
            Some(mut st) => st.close(py),
            None => Ok(()),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}

/// Writes the run in `dir` as one standalone HDF5 file at `path` (what `filename=` asks for);
/// returns the bytes of data written.
#[pyfunction]
fn _export(py: Python<'_>, dir: PathBuf, path: PathBuf) -> PyResult<u64> {
    py.detach(|| {
        let run = smdfs::Run::open(&dir)?;
        smdfs::h5::export::export(&run, &path, &smdfs::h5::export::ExportOptions::default(), &mut |_, _| {})
    })
    .map(|r| r.data_bytes)
    .map_err(to_py)
}

/// Aborts the whole MPI job after a Python error on this rank (so no rank waits forever).
#[cfg(feature = "mpi")]
#[pyfunction]
fn _abort_job(why: &str) {
    eprintln!("smdfs: {why}; aborting the MPI job");
    // Give the launcher a moment to forward this rank's output before the job is killed.
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: MPI_Abort on the world communicator, only called when MPI is initialized.
    unsafe {
        if mpi::environment::is_initialized() && !mpi::environment::is_finalized() {
            mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, 1);
        }
    }
    std::process::exit(1)
}

/// Without MPI compiled in, an error simply ends this process.
#[cfg(not(feature = "mpi"))]
#[pyfunction]
fn _abort_job(why: &str) {
    eprintln!("smdfs: {why}");
    std::process::exit(1)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Writer>()?;
    m.add_class::<Client>()?;
    m.add_function(wrap_pyfunction!(_abort_job, m)?)?;
    m.add_function(wrap_pyfunction!(_export, m)?)?;
    m.add("HAS_MPI", cfg!(feature = "mpi"))?;
    Ok(())
}
