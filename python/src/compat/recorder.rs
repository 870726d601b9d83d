//! `RecorderHandle`: one `smdfs::tools::recorder::Recorder` (an in-memory store, an smdfs run
//! being recorded, or a recorded run opened read-only) behind a lock, fed with numpy bytes,
//! text or (pickled) bytes, and read back as `(kind, descr, shape, data)` tuples that
//! `smdfs/compat/simrecorder.py` turns into numpy values. Also `export_h5`, which writes a
//! closed recorder's run as one standalone HDF5 file (the `HDF5DataStore`'s file).

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use numpy::ndarray::ArrayView1;
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use smdfs::tools::recorder::{Recorder, Values};
use smdfs::{Dtype, Error, Run, Value};

use super::dtype_of;
use crate::errors::to_py;

/// A recorder: in memory, recording into a run directory, or reading a recorded run.
#[pyclass(frozen, module = "smdfs._smdfs")]
pub(crate) struct RecorderHandle {
    inner: Mutex<Option<Recorder>>,
    read_only: bool,
    /// A read-only recorder is never dropped before the handle (arrays borrow its maps):
    /// `close()` only sets this.
    closed: AtomicBool,
}

impl RecorderHandle {
    fn with<T>(&self, f: impl FnOnce(&mut Recorder) -> smdfs::Result<T>) -> PyResult<T> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let r = g
            .as_mut()
            .filter(|_| !self.closed.load(Ordering::Relaxed))
            .ok_or_else(|| PyValueError::new_err("the recorder is closed"))?;
        f(r).map_err(to_py)
    }
}

/// One value as `(kind, descr, shape, data)`: data is bytes (text for `"str"`).
fn value_tuple<'py>(py: Python<'py>, v: &Value<'_>) -> PyResult<Bound<'py, PyTuple>> {
    let descr = v.dtype().numpy_descr();
    match v {
        Value::Scalar { dtype, bits } => {
            ("fixed", descr, PyTuple::empty(py), PyBytes::new(py, &bits[..dtype.size()])).into_pyobject(py)
        }
        Value::Array { shape, data, .. } => {
            ("fixed", descr, PyTuple::new(py, shape)?, PyBytes::new(py, data)).into_pyobject(py)
        }
        Value::Ragged { data, .. } => ("ragged", descr, PyTuple::empty(py), PyBytes::new(py, data)).into_pyobject(py),
        Value::Bytes(b) => ("bytes", descr, PyTuple::empty(py), PyBytes::new(py, b)).into_pyobject(py),
        Value::Str(t) => ("str", descr, PyTuple::empty(py), t.as_ref()).into_pyobject(py),
        _ => Err(PyValueError::new_err("a recorded value of a kind this version cannot read")),
    }
}

#[pymethods]
impl RecorderHandle {
    /// A new recorder: recording into a new run in `dir`, or only in memory when `dir` is None.
    #[new]
    #[pyo3(signature = (dir=None))]
    fn new(py: Python<'_>, dir: Option<PathBuf>) -> PyResult<RecorderHandle> {
        let r = match dir {
            Some(d) => py.detach(|| Recorder::create(&d)).map_err(to_py)?,
            None => Recorder::in_memory(),
        };
        Ok(RecorderHandle { inner: Mutex::new(Some(r)), read_only: false, closed: AtomicBool::new(false) })
    }

    /// Opens a recorded run read-only (complete, or what a dead recorder committed).
    #[staticmethod]
    fn open(py: Python<'_>, dir: PathBuf) -> PyResult<RecorderHandle> {
        let r = py.detach(|| Recorder::open(&dir)).map_err(to_py)?;
        Ok(RecorderHandle { inner: Mutex::new(Some(r)), read_only: true, closed: AtomicBool::new(false) })
    }

    /// True for a recorder opened on a recorded run.
    #[getter]
    fn read_only(&self) -> bool {
        self.read_only
    }

    /// Appends a numpy value (`data`: its C-order bytes) under `key`; an empty shape is a
    /// scalar. Returns the value's id within the key.
    fn record_array(
        &self,
        py: Python<'_>,
        key: &str,
        descr: &str,
        shape: Vec<usize>,
        data: PyReadonlyArray1<'_, u8>,
    ) -> PyResult<u64> {
        let dtype = dtype_of(descr)?;
        let bytes = data.as_slice().map_err(|_| PyValueError::new_err("value bytes must be contiguous"))?;
        let value = if shape.is_empty() {
            if bytes.len() != dtype.size() {
                return Err(PyValueError::new_err(format!("{key}: a {dtype} scalar needs {} bytes", dtype.size())));
            }
            let mut bits = [0u8; 8];
            bits[..bytes.len()].copy_from_slice(bytes);
            Value::Scalar { dtype, bits }
        } else {
            Value::Array { dtype, shape, data: Cow::Borrowed(bytes) }
        };
        py.detach(|| self.with(|r| r.record(key, value)))
    }

    /// Appends bytes (a pickled object) under `key`.
    fn record_bytes(&self, py: Python<'_>, key: &str, data: &[u8]) -> PyResult<u64> {
        py.detach(|| self.with(|r| r.record(key, Value::Bytes(Cow::Borrowed(data)))))
    }

    /// Appends text under `key`.
    fn record_str(&self, py: Python<'_>, key: &str, text: &str) -> PyResult<u64> {
        py.detach(|| self.with(|r| r.record(key, Value::Str(Cow::Borrowed(text)))))
    }

    /// The values under `key`: `("array", descr, shape, uint8 array)` when they stack into
    /// one array, else `("list", [(kind, descr, shape, data), ...])`. KeyError if none.
    fn get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyTuple>> {
        let rec = py.detach(|| self.with(|r| r.get(key)))?;
        match rec.values {
            Values::Array(Value::Array { dtype, shape, data }) => {
                let bytes = data.into_owned().into_pyarray(py);
                ("array", dtype.numpy_descr(), PyTuple::new(py, shape)?, bytes).into_pyobject(py)
            }
            Values::Array(v) => ("list", PyList::new(py, [value_tuple(py, &v)?])?).into_pyobject(py),
            Values::List(l) => {
                let items = l.iter().map(|v| value_tuple(py, v)).collect::<PyResult<Vec<_>>>()?;
                ("list", PyList::new(py, items)?).into_pyobject(py)
            }
        }
    }

    /// The values under `key` of an opened run as a zero-copy, read-only view of the shard
    /// (flattened bytes, C order), when they all share dtype `descr` and one shape and lie in
    /// one shard; None otherwise.
    fn view<'py>(slf: &Bound<'py, Self>, key: &str, descr: &str) -> PyResult<Option<Bound<'py, PyArray1<u8>>>> {
        let me = slf.get();
        if !me.read_only {
            return Ok(None);
        }
        let dtype = dtype_of(descr)?;
        let bytes: Option<(*const u8, usize)> = me.with(|r| {
            fn raw<T: Copy>(s: Option<&[T]>) -> Option<(*const u8, usize)> {
                s.map(|s| (s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)))
            }
            Ok(match dtype {
                Dtype::I8 => raw(r.get_slice::<i8>(key)?),
                Dtype::I16 => raw(r.get_slice::<i16>(key)?),
                Dtype::I32 => raw(r.get_slice::<i32>(key)?),
                Dtype::I64 => raw(r.get_slice::<i64>(key)?),
                Dtype::U8 => raw(r.get_slice::<u8>(key)?),
                Dtype::U16 => raw(r.get_slice::<u16>(key)?),
                Dtype::U32 => raw(r.get_slice::<u32>(key)?),
                Dtype::U64 => raw(r.get_slice::<u64>(key)?),
                Dtype::F32 => raw(r.get_slice::<f32>(key)?),
                Dtype::F64 => raw(r.get_slice::<f64>(key)?),
                _ => None,
            })
        })?;
        let Some((ptr, len)) = bytes else { return Ok(None) };
        // SAFETY: the bytes are a committed column of the run the read-only recorder inside
        // `slf` maps; that recorder is never dropped while the handle lives (`close()` only
        // flags it), the run never changes its maps, and the array keeps `slf` as its base.
        let data = unsafe { std::slice::from_raw_parts(ptr, len) };
        let view = ArrayView1::from(data);
        let arr = unsafe { PyArray1::borrow_from_array(&view, slf.clone().into_any()) };
        let kw = PyDict::new(slf.py());
        kw.set_item("write", false)?;
        arr.call_method("setflags", (), Some(&kw))?;
        Ok(Some(arr))
    }

    /// Keys recorded (or found in the opened run), sorted.
    fn keys(&self) -> PyResult<Vec<String>> {
        self.with(|r| Ok(r.keys()))
    }

    /// Finishes the recorder (a run is completed: shards closed, index written). Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if self.read_only {
            self.closed.store(true, Ordering::Relaxed);
            return Ok(());
        }
        let r = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take();
        match r {
            Some(r) => py.detach(|| r.close()).map_err(to_py),
            None => Ok(()),
        }
    }
}

/// Writes the run in `dir` as one standalone HDF5 file at `path` (replacing it).
#[pyfunction]
fn export_h5(py: Python<'_>, dir: PathBuf, path: PathBuf) -> PyResult<()> {
    py.detach(|| -> smdfs::Result<()> {
        let run = Run::open(&dir)?;
        smdfs::h5::export::export(&run, &path, &Default::default(), &mut |_, _| {})?;
        Ok(())
    })
    .map_err(to_py)
}

/// Checks `path` names a run (`Run::open` succeeds): used to tell an existing store from an
/// empty directory.
#[pyfunction]
fn is_run(py: Python<'_>, dir: PathBuf) -> bool {
    !matches!(py.detach(|| Run::open(&dir)), Err(Error::NotARun { .. }) | Err(Error::Io { .. }))
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RecorderHandle>()?;
    m.add_function(wrap_pyfunction!(export_h5, m)?)?;
    m.add_function(wrap_pyfunction!(is_run, m)?)?;
    Ok(())
}
