//! Python values to the crate's values: each value is converted once, straight into an
//! arena of bytes (a client's pending event), never element by element through Python.
//!
//! Python `float`/`int`/`bool` become f64/i64/bool scalars; numpy scalars and 0-d arrays keep
//! their dtype; numpy arrays of bool, int8..int64, uint8..uint64, float32 and float64 are
//! copied from their buffer (C-contiguous ones as they are, others made contiguous first,
//! byte-swapped ones converted to native order); `str` and `bytes` are ragged; a 1-D array
//! of a field declared ragged (`ragged=[...]` or a last path segment starting with `var_`)
//! is a ragged array; nested dicts become group paths. Anything else is a `SchemaError`
//! naming the field and what was given.

use std::collections::HashSet;

use numpy::npyffi::{self, NpyTypes, PY_ARRAY_API};
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyString};
use smdfs::{Dtype, Kind};

use crate::errors::SchemaError;

/// One converted value in an arena: its bytes are `arena[start..end]`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Item {
    /// Field path (`/`-separated).
    pub(crate) path: String,
    pub(crate) kind: Kind2,
    pub(crate) dtype: Option<Dtype>,
    /// Per-event shape (fixed arrays; empty for scalars and ragged kinds).
    pub(crate) shape: Vec<usize>,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// [`Kind`] with a `Scalar` case (a fixed value of shape `[]`), so values rebuild without
/// looking at the shape, and a `Default`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Kind2 {
    #[default]
    Scalar,
    Array,
    Ragged,
    Bytes,
    Str,
}

impl Kind2 {
    /// The crate's kind.
    pub(crate) fn kind(self) -> Kind {
        match self {
            Kind2::Scalar | Kind2::Array => Kind::Fixed,
            Kind2::Ragged => Kind::Ragged,
            Kind2::Bytes => Kind::Bytes,
            Kind2::Str => Kind::Str,
        }
    }
}

/// A field's signature as first seen: what later values must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sig {
    pub(crate) kind: Kind,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
}

impl Sig {
    pub(crate) fn of(it: &Item) -> Sig {
        Sig { kind: it.kind.kind(), dtype: it.dtype.unwrap_or(Dtype::U8), shape: it.shape.clone() }
    }

    /// `f64 scalar`, `u16 array [4, 8]`, as the crate's messages say it.
    pub(crate) fn describe(&self) -> String {
        smdfs::model::value::describe(self.kind, self.dtype, &self.shape)
    }
}

/// The supported dtype of a numpy descriptor (`kind` character and item size).
fn dtype_of(kind: u8, size: usize) -> Option<Dtype> {
    Some(match (kind, size) {
        (b'b', 1) => Dtype::Bool,
        (b'i', 1) => Dtype::I8,
        (b'i', 2) => Dtype::I16,
        (b'i', 4) => Dtype::I32,
        (b'i', 8) => Dtype::I64,
        (b'u', 1) => Dtype::U8,
        (b'u', 2) => Dtype::U16,
        (b'u', 4) => Dtype::U32,
        (b'u', 8) => Dtype::U64,
        (b'f', 4) => Dtype::F32,
        (b'f', 8) => Dtype::F64,
        _ => return None,
    })
}

fn unsupported(path: &str, what: &str) -> PyErr {
    SchemaError::new_err(format!(
        "field {path:?}: expected a number, bool, numpy scalar or array of bool, int8..int64, uint8..uint64, \
         float32 or float64, str, bytes or a dict of them; got {what}"
    ))
}

/// True if a field at `path` holds ragged 1-D arrays (declared, or named `var_*`).
pub(crate) fn is_ragged(path: &str, declared: &HashSet<String>) -> bool {
    declared.contains(path) || path.rsplit('/').next().is_some_and(|s| s.starts_with("var_"))
}

/// Where converted values go: an arena and a list of items (reused between events).
#[derive(Default)]
pub(crate) struct Arena {
    pub(crate) bytes: Vec<u8>,
    pub(crate) items: Vec<Item>,
    /// Items in use (`items[n..]` are spare, kept for their allocations).
    pub(crate) n: usize,
}

impl Arena {
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.n = 0;
    }

    pub(crate) fn used(&self) -> &[Item] {
        &self.items[..self.n]
    }

    /// Rolls back to an earlier (items, bytes) mark.
    pub(crate) fn truncate(&mut self, n: usize, bytes: usize) {
        self.n = n;
        self.bytes.truncate(bytes);
    }

    fn push(&mut self, path: &str, kind: Kind2, dtype: Option<Dtype>, shape: &[usize], data: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        if self.n == self.items.len() {
            self.items.push(Item::default());
        }
        let it = &mut self.items[self.n];
        it.path.clear();
        it.path.push_str(path);
        it.kind = kind;
        it.dtype = dtype;
        it.shape.clear();
        it.shape.extend_from_slice(shape);
        it.start = start;
        it.end = self.bytes.len();
        self.n += 1;
    }

    /// Converts `v` (the value of field `path`) into the arena; a dict adds each of its
    /// entries under `path/`.
    pub(crate) fn add(&mut self, path: &str, v: &Bound<'_, PyAny>, ragged: &HashSet<String>) -> PyResult<()> {
        // Exact builtins first: the common case, and bool before int (bool is an int).
        if v.is_exact_instance_of::<PyFloat>() {
            let x: f64 = v.extract()?;
            self.push(path, Kind2::Scalar, Some(Dtype::F64), &[], &x.to_le_bytes());
            return Ok(());
        }
        if v.is_exact_instance_of::<PyBool>() {
            let b: bool = v.extract()?;
            self.push(path, Kind2::Scalar, Some(Dtype::Bool), &[], &[u8::from(b)]);
            return Ok(());
        }
        if v.is_exact_instance_of::<PyInt>() {
            return self.add_int(path, v);
        }
        if let Ok(s) = v.cast::<PyString>() {
            let s = s.to_cow()?;
            self.push(path, Kind2::Str, Some(Dtype::U8), &[], s.as_bytes());
            return Ok(());
        }
        if let Ok(b) = v.cast::<PyBytes>() {
            self.push(path, Kind2::Bytes, Some(Dtype::U8), &[], b.as_bytes());
            return Ok(());
        }
        if let Ok(b) = v.cast::<PyByteArray>() {
            let data = b.to_vec();
            self.push(path, Kind2::Bytes, Some(Dtype::U8), &[], &data);
            return Ok(());
        }
        if let Ok(d) = v.cast::<PyDict>() {
            for (k, x) in d.iter() {
                let k = k.cast::<PyString>().map_err(|_| {
                    SchemaError::new_err(format!("field {path:?}: nested dict keys must be str, got {}", type_name(&k)))
                })?;
                let k = k.to_cow()?;
                let sub = if path.is_empty() { k.into_owned() } else { format!("{path}/{k}") };
                self.add(&sub, &x, ragged)?;
            }
            return Ok(());
        }
        if let Ok(a) = v.cast::<PyUntypedArray>() {
            return self.add_array(path, a, ragged);
        }
        if is_numpy_scalar(v) {
            return self.add_numpy_scalar(path, v);
        }
        if v.is_instance_of::<PyBool>() {
            let b: bool = v.extract()?;
            self.push(path, Kind2::Scalar, Some(Dtype::Bool), &[], &[u8::from(b)]);
            return Ok(());
        }
        if v.is_instance_of::<PyInt>() {
            return self.add_int(path, v);
        }
        if v.is_instance_of::<PyFloat>() {
            let x: f64 = v.extract()?;
            self.push(path, Kind2::Scalar, Some(Dtype::F64), &[], &x.to_le_bytes());
            return Ok(());
        }
        if v.is_none() {
            return Err(SchemaError::new_err(format!(
                "field {path:?}: got None (leave a missing field out of the event; it reads as its fill value)"
            )));
        }
        // Lists and tuples: through numpy once (a whole list, not per element here).
        if v.cast::<pyo3::types::PyList>().is_ok() || v.cast::<pyo3::types::PyTuple>().is_ok() {
            let np = v.py().import("numpy")?;
            let a = np
                .call_method1("asarray", (v,))
                .map_err(|e| SchemaError::new_err(format!("field {path:?}: a list that numpy cannot convert: {e}")))?;
            let a = a.cast_into::<PyUntypedArray>().map_err(|_| unsupported(path, "a list"))?;
            return self.add_array(path, &a, ragged);
        }
        Err(unsupported(path, &type_name(v)))
    }

    fn add_int(&mut self, path: &str, v: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(x) = v.extract::<i64>() {
            self.push(path, Kind2::Scalar, Some(Dtype::I64), &[], &x.to_le_bytes());
        } else if let Ok(x) = v.extract::<u64>() {
            self.push(path, Kind2::Scalar, Some(Dtype::U64), &[], &x.to_le_bytes());
        } else {
            return Err(SchemaError::new_err(format!("field {path:?}: integer {v} does not fit in 64 bits")));
        }
        Ok(())
    }

    fn add_numpy_scalar(&mut self, path: &str, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = v.py();
        // SAFETY: `v` is a numpy scalar (checked by the caller); DescrFromScalar returns a
        // new reference we own and release; ScalarAsCtype writes itemsize (<= 8 for every
        // dtype accepted) bytes into `bits`.
        unsafe {
            let descr = PY_ARRAY_API.PyArray_DescrFromScalar(py, v.as_ptr());
            if descr.is_null() {
                return Err(PyErr::fetch(py));
            }
            let descr: Bound<'_, numpy::PyArrayDescr> = Bound::from_owned_ptr(py, descr.cast()).cast_into_unchecked();
            let Some(dtype) = dtype_of(descr.kind(), descr.itemsize()) else {
                return Err(unsupported(path, &format!("a numpy {} scalar", descr.typeobj().name()?)));
            };
            let mut bits = [0u8; 16];
            PY_ARRAY_API.PyArray_ScalarAsCtype(py, v.as_ptr(), bits.as_mut_ptr().cast());
            self.push(path, Kind2::Scalar, Some(dtype), &[], &bits[..dtype.size()]);
        }
        Ok(())
    }

    fn add_array(&mut self, path: &str, a: &Bound<'_, PyUntypedArray>, ragged: &HashSet<String>) -> PyResult<()> {
        let descr = a.dtype();
        let Some(dtype) = dtype_of(descr.kind(), descr.itemsize()) else {
            return Err(unsupported(path, &format!("a numpy array of {}", descr.str()?)));
        };
        if descr.is_native_byteorder() == Some(false) || !a.is_c_contiguous() {
            // Rare: swapped bytes or a strided view. numpy makes one native, contiguous copy.
            let np = a.py().import("numpy")?;
            let native = descr.call_method1("newbyteorder", ("=",))?;
            let c = np.call_method1("ascontiguousarray", (a, native))?;
            let c = c.cast_into::<PyUntypedArray>().map_err(|_| unsupported(path, "an array"))?;
            return self.add_array(path, &c, ragged);
        }
        let shape = a.shape().to_vec();
        let nbytes = shape.iter().product::<usize>() * dtype.size();
        // SAFETY: a C-contiguous array of `nbytes` bytes; read while we hold the GIL.
        let data: &[u8] = if nbytes == 0 {
            &[]
        } else {
            unsafe { std::slice::from_raw_parts((*a.as_array_ptr()).fields.data.cast::<u8>(), nbytes) }
        };
        if is_ragged(path, ragged) {
            if shape.len() != 1 {
                return Err(SchemaError::new_err(format!(
                    "field {path:?}: expected a 1-D array (the field is ragged), got {}-D shape {shape:?}",
                    shape.len()
                )));
            }
            self.push(path, Kind2::Ragged, Some(dtype), &[], data);
        } else if shape.is_empty() {
            self.push(path, Kind2::Scalar, Some(dtype), &[], data);
        } else {
            self.push(path, Kind2::Array, Some(dtype), &shape, data);
        }
        Ok(())
    }
}

/// True for numpy scalars (`np.float32(1)`, `np.bool_(True)`, …).
fn is_numpy_scalar(v: &Bound<'_, PyAny>) -> bool {
    let py = v.py();
    // SAFETY: numpy's type object for np.generic; PyObject_TypeCheck only reads it.
    unsafe {
        let t = npyffi::get_type_object(py, NpyTypes::PyGenericArrType_Type);
        pyo3::ffi::PyObject_TypeCheck(v.as_ptr(), t) != 0
    }
}

/// `type(v).__name__`, for messages.
pub(crate) fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "an object".into())
}

/// An event id from an int (or numpy integer) or any object with a `.timestamp`.
pub(crate) fn event_id(ts: &Bound<'_, PyAny>) -> PyResult<u64> {
    if let Ok(i) = ts.extract::<u64>() {
        return Ok(i);
    }
    if let Ok(t) = ts.getattr("timestamp") {
        let t = if t.is_callable() { t.call0()? } else { t };
        if let Ok(i) = t.extract::<u64>() {
            return Ok(i);
        }
    }
    Err(PyTypeError::new_err(format!(
        "event id: expected a non-negative int below 2**64 or an object with an int .timestamp, got {} ({})",
        ts.repr().map(|r| r.to_string()).unwrap_or_default(),
        type_name(ts)
    )))
}
