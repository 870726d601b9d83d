//! Named slices for `smdfs.compat.bigarray`: `SlicesWriterHandle` writes rows and names
//! through `smdfs::tools::slices::SlicesWriter` and adds what bigarray's writer also does —
//! appending after what is there and growing the array — and `SlicesReaderHandle` maps a
//! file through `Slices` and lends its bytes to numpy.
//!
//! Growth and appends are the only steps that need agreement between processes: both run
//! under an exclusive `flock` on the `.npy`, taken on a descriptor opened for that step alone
//! (forked Pool workers share the parent's descriptors, and a lock on a shared descriptor
//! would not exclude them). Under the lock a writer reads the header's row count, claims
//! rows after the last named row (the append mark, read from the names sidecar), grows the
//! file if the rows end past it (length first, then the header, so a reader never sees a
//! header promising bytes the file lacks), writes the rows, then names them. Writes at given
//! positions inside the array take no lock. Created files reserve room in the header so the
//! row count can grow in place: the data never moves.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use numpy::ndarray::ArrayView1;
use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use smdfs::tools::slices::{NpyHeader, Slices, SlicesWriter, NAMES_SUFFIX};
use smdfs::{Dtype, Error};

use super::dtype_of;
use crate::errors::to_py;

/// Spare header bytes for a longer row count (NumPy reserves the same for in-place growth).
const GROWTH_DIGITS: usize = 21;

fn names_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(NAMES_SUFFIX);
    PathBuf::from(p)
}

/// A `.npy` 1.0 header of exactly `total` bytes (0: the smallest multiple of 64 that holds
/// the dict plus `GROWTH_DIGITS` spare bytes). `None` if it does not fit.
fn header_bytes(dtype: Dtype, shape: &[usize], total: usize) -> Option<Vec<u8>> {
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
    };
    let dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {dims}, }}", dtype.numpy_descr());
    let total = if total == 0 { (10 + dict.len() + GROWTH_DIGITS + 1).div_ceil(64) * 64 } else { total };
    if 10 + dict.len() + 1 > total || total - 10 > u16::MAX as usize {
        return None;
    }
    let mut h = Vec::with_capacity(total);
    h.extend_from_slice(b"\x93NUMPY\x01\x00");
    h.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.resize(total - 1, b' ');
    h.push(b'\n');
    Some(h)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

/// Creates `path` (and an empty names sidecar) for `rows` rows of `row_shape`, replacing
/// what is there.
fn create(path: &Path, dtype: Dtype, row_shape: &[usize], rows: usize) -> smdfs::Result<()> {
    let mut shape = vec![rows];
    shape.extend_from_slice(row_shape);
    let row_bytes = row_shape.iter().product::<usize>() * dtype.size();
    if row_bytes == 0 {
        return Err(Error::Usage(format!("{}: rows of shape {row_shape:?} hold no elements", path.display())));
    }
    let head = header_bytes(dtype, &shape, 0)
        .ok_or_else(|| Error::Usage(format!("{}: shape {shape:?} needs too long a header", path.display())))?;
    let np = names_path(path);
    for p in [path, np.as_path()] {
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(p, e)),
            _ => {}
        }
    }
    OpenOptions::new().append(true).create_new(true).open(&np).map_err(io(&np))?;
    let f = OpenOptions::new().write(true).create_new(true).open(path).map_err(io(path))?;
    f.write_all_at(&head, 0).map_err(io(path))?;
    f.set_len(head.len() as u64 + (rows * row_bytes) as u64).map_err(io(path))
}

/// Grows `path` to at least `rows` rows (under the caller's lock). Returns the row count.
fn grow(path: &Path, rows: u64) -> smdfs::Result<u64> {
    let h = NpyHeader::read(path)?;
    if h.rows() >= rows {
        return Ok(h.rows());
    }
    let mut shape = h.shape.clone();
    shape[0] = rows as usize;
    let head = header_bytes(h.dtype, &shape, h.data_offset as usize).ok_or_else(|| {
        Error::Usage(format!(
            "{}: its header has no room for {rows} rows; write it with a larger shape",
            path.display()
        ))
    })?;
    let f = OpenOptions::new().write(true).open(path).map_err(io(path))?;
    f.set_len(h.data_offset + rows * h.row_bytes() as u64).map_err(io(path))?;
    f.write_all_at(&head, 0).map_err(io(path))?;
    Ok(rows)
}

struct State {
    w: SlicesWriter,
    /// Bytes of the sidecar already scanned for the append mark.
    names_read: u64,
    /// End of the last named row seen (where an append starts).
    mark: u64,
}

impl State {
    /// Reads sidecar lines added since the last scan and moves the mark past their rows.
    fn scan_names(&mut self, path: &Path) -> smdfs::Result<()> {
        let np = names_path(path);
        let mut f = File::open(&np).map_err(io(&np))?;
        f.seek(SeekFrom::Start(self.names_read)).map_err(io(&np))?;
        let mut text = Vec::new();
        f.read_to_end(&mut text).map_err(io(&np))?;
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        for line in text[..complete].split(|&b| b == b'\n') {
            // Lines are {"name":..,"start":..,"end":..}; "end" is the last key.
            let s = String::from_utf8_lossy(line);
            if let Some(at) = s.rfind("\"end\":") {
                let digits: String =
                    s[at + 6..].chars().skip_while(|c| *c == ' ').take_while(char::is_ascii_digit).collect();
                if let Ok(end) = digits.parse::<u64>() {
                    self.mark = self.mark.max(end);
                }
            }
        }
        self.names_read += complete as u64;
        Ok(())
    }
}

/// Writes named rows of one `.npy` (see the module doc). Picklable in Python by path.
#[pyclass(frozen, module = "smdfs._smdfs")]
pub(crate) struct SlicesWriterHandle {
    path: PathBuf,
    state: Mutex<Option<State>>,
}

#[pymethods]
impl SlicesWriterHandle {
    /// Opens `path` for writing; with `create`, first creates it for `rows` rows of
    /// `row_shape` of dtype `descr` (replacing what is there).
    #[new]
    #[pyo3(signature = (path, create, descr="<i4", row_shape=vec![], rows=0))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        create: bool,
        descr: &str,
        row_shape: Vec<usize>,
        rows: usize,
    ) -> PyResult<SlicesWriterHandle> {
        let dtype = dtype_of(descr)?;
        let w = py
            .detach(|| {
                if create {
                    self::create(&path, dtype, &row_shape, rows)?;
                }
                SlicesWriter::open(&path)
            })
            .map_err(to_py)?;
        let mut st = State { w, names_read: 0, mark: 0 };
        py.detach(|| st.scan_names(&path)).map_err(to_py)?;
        Ok(SlicesWriterHandle { path, state: Mutex::new(Some(st)) })
    }

    /// `(descr, shape)` of the array as this writer last saw it.
    fn header(&self) -> PyResult<(String, Vec<usize>)> {
        let g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = g.as_ref().ok_or_else(|| PyValueError::new_err("the writer is closed"))?;
        let h = st.w.header();
        Ok((h.dtype.numpy_descr().to_string(), h.shape.clone()))
    }

    /// Writes `datas[k]` (C-order bytes of whole rows) named `names[k]`, one after the other
    /// from row `start`, or after the last named row when `start` is None (a negative start
    /// counts from the end). Returns each name's `(start, end)`.
    #[pyo3(signature = (names, datas, start=None))]
    fn write(
        &self,
        py: Python<'_>,
        names: Vec<String>,
        datas: Vec<PyReadonlyArray1<'_, u8>>,
        start: Option<i64>,
    ) -> PyResult<Vec<(u64, u64)>> {
        if names.len() != datas.len() {
            return Err(PyValueError::new_err("one array per name"));
        }
        let bufs = datas
            .iter()
            .map(|d| d.as_slice().map_err(|_| PyValueError::new_err("arrays must be C-contiguous")))
            .collect::<PyResult<Vec<&[u8]>>>()?;
        let path = &self.path;
        py.detach(|| {
            let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let st = g.as_mut().ok_or_else(|| Error::Usage(format!("{}: the writer is closed", path.display())))?;
            let rb = st.w.header().row_bytes();
            let mut total = 0u64;
            for (n, b) in names.iter().zip(&bufs) {
                if b.len() % rb != 0 {
                    return Err(Error::BadValue {
                        field: n.clone(),
                        why: format!("{} bytes are not whole rows of {rb} bytes", b.len()),
                    });
                }
                total += (b.len() / rb) as u64;
            }
            let rows = st.w.rows();
            let fixed = start.map(|s| if s < 0 { rows.saturating_sub(s.unsigned_abs()) } else { s as u64 });
            let lock = match fixed {
                Some(s) if s + total <= rows => None,
                _ => {
                    let f = File::open(path).map_err(io(path))?;
                    f.lock().map_err(io(path))?;
                    Some(f)
                }
            };
            let mut at = match fixed {
                Some(s) => s,
                None => {
                    st.scan_names(path)?;
                    st.mark
                }
            };
            if lock.is_some() && at + total > rows {
                grow(path, at + total)?;
                st.w = SlicesWriter::open(path)?;
            }
            let mut out = Vec::with_capacity(names.len());
            for (n, b) in names.iter().zip(&bufs) {
                let r = st.w.write_bytes(at, b)?;
                st.w.name(n, r.clone())?;
                st.mark = st.mark.max(r.end);
                at = r.end;
                out.push((r.start, r.end));
            }
            if lock.is_some() {
                // The lines just appended are ours: skip them at the next scan.
                st.scan_names(path)?;
            }
            drop(lock);
            Ok(out)
        })
        .map_err(to_py)
    }

    /// Flushes rows and names to the disk (fdatasync).
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            let g = self.state.lock().unwrap_or_else(|e| e.into_inner());
            g.as_ref().map_or(Ok(()), |st| st.w.sync())
        })
        .map_err(to_py)
    }

    /// Closes the writer (its rows and names are already in the files).
    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// The engine's reader, one variant per element type it maps (bool has no byte-cast view).
enum AnySlices {
    I8(Slices<i8>),
    I16(Slices<i16>),
    I32(Slices<i32>),
    I64(Slices<i64>),
    U8(Slices<u8>),
    U16(Slices<u16>),
    U32(Slices<u32>),
    U64(Slices<u64>),
    F32(Slices<f32>),
    F64(Slices<f64>),
}

macro_rules! each {
    ($s:expr, $x:ident => $e:expr) => {
        match $s {
            AnySlices::I8($x) => $e,
            AnySlices::I16($x) => $e,
            AnySlices::I32($x) => $e,
            AnySlices::I64($x) => $e,
            AnySlices::U8($x) => $e,
            AnySlices::U16($x) => $e,
            AnySlices::U32($x) => $e,
            AnySlices::U64($x) => $e,
            AnySlices::F32($x) => $e,
            AnySlices::F64($x) => $e,
        }
    };
}

fn open_any(path: &Path) -> smdfs::Result<AnySlices> {
    Ok(match NpyHeader::read(path)?.dtype {
        Dtype::I8 => AnySlices::I8(Slices::open(path)?),
        Dtype::I16 => AnySlices::I16(Slices::open(path)?),
        Dtype::I32 => AnySlices::I32(Slices::open(path)?),
        Dtype::I64 => AnySlices::I64(Slices::open(path)?),
        Dtype::U8 => AnySlices::U8(Slices::open(path)?),
        Dtype::U16 => AnySlices::U16(Slices::open(path)?),
        Dtype::U32 => AnySlices::U32(Slices::open(path)?),
        Dtype::U64 => AnySlices::U64(Slices::open(path)?),
        Dtype::F32 => AnySlices::F32(Slices::open(path)?),
        Dtype::F64 => AnySlices::F64(Slices::open(path)?),
        d => return Err(Error::Usage(format!("{}: {d} arrays cannot be named slices", path.display()))),
    })
}

/// A named-slices file mapped read-only.
#[pyclass(frozen, module = "smdfs._smdfs")]
pub(crate) struct SlicesReaderHandle {
    s: AnySlices,
}

#[pymethods]
impl SlicesReaderHandle {
    /// Maps `path` and reads its names.
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<SlicesReaderHandle> {
        Ok(SlicesReaderHandle { s: py.detach(|| open_any(&path)).map_err(to_py)? })
    }

    /// `(descr, shape)`.
    fn header(&self) -> (String, Vec<usize>) {
        let h = each!(&self.s, s => s.header());
        (h.dtype.numpy_descr().to_string(), h.shape.clone())
    }

    /// name → (start, end), in the order names were first written.
    fn indices<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        each!(&self.s, s => {
            for n in s.names() {
                if let Some(r) = s.range(n) {
                    d.set_item(n, (r.start, r.end))?;
                }
            }
        });
        Ok(d)
    }

    /// The whole array's bytes, zero-copy and read-only (this handle is the array's base).
    fn data<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArray1<u8>>> {
        let bytes: &[u8] = each!(&slf.get().s, s => bytemuck_bytes(s.as_slice()));
        let view = ArrayView1::from(bytes);
        // SAFETY: the bytes lie in the read-only map the `Slices` behind `slf` owns and never
        // unmaps while it lives; the array keeps `slf` as its base, so the map outlives it.
        let arr = unsafe { PyArray1::borrow_from_array(&view, slf.clone().into_any()) };
        let kw = PyDict::new(slf.py());
        kw.set_item("write", false)?;
        arr.call_method("setflags", (), Some(&kw))?;
        Ok(arr)
    }
}

/// The bytes of a slice of plain numbers.
fn bytemuck_bytes<T: Copy>(s: &[T]) -> &[u8] {
    // SAFETY: T is one of the integer or float types above: no padding, every byte initialized.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SlicesWriterHandle>()?;
    m.add_class::<SlicesReaderHandle>()?;
    Ok(())
}
