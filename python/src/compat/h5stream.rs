//! Parallel HDF5 reads for `smdfs.compat.multitables`: `H5FileHandle` opens any HDF5 file
//! through `smdfs::tools::h5stream::H5File`; `stream` returns an `H5Stream` whose blocks of
//! rows (the file's raw element bytes) are moved into numpy arrays as they complete;
//! `request` queues an asynchronous read of a row range on the file's request threads and
//! returns an `H5Pending`, which copies the rows into a caller's buffer (a stage) when waited.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use numpy::{IntoPyArray, PyArray1, PyReadwriteArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use smdfs::tools::h5stream::{BlockStream, H5File, Request, Requests, StreamOptions};

use crate::errors::to_py;

/// One HDF5 file opened for parallel reads.
#[pyclass(frozen, module = "smdfs._smdfs")]
pub(crate) struct H5FileHandle {
    file: Arc<H5File>,
    threads: usize,
    requests: Mutex<Option<Arc<Requests>>>,
}

impl H5FileHandle {
    fn requests(&self) -> PyResult<Arc<Requests>> {
        let mut g = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(Arc::new(self.file.requests(self.threads).map_err(to_py)?));
        }
        Ok(g.as_ref().map(Arc::clone).unwrap_or_else(|| unreachable!()))
    }
}

#[pymethods]
impl H5FileHandle {
    /// Opens `path` read-only; `threads` serve requests.
    #[new]
    #[pyo3(signature = (path, threads=4))]
    fn new(py: Python<'_>, path: PathBuf, threads: usize) -> PyResult<H5FileHandle> {
        let file = py.detach(|| H5File::open(&path)).map_err(to_py)?;
        Ok(H5FileHandle { file, threads: threads.max(1), requests: Mutex::new(None) })
    }

    /// `(shape, element size, row bytes, pread)` of dataset `name` (pread: contiguous
    /// storage read without libhdf5). KeyError if there is none.
    fn dataset(&self, py: Python<'_>, name: &str) -> PyResult<(Vec<u64>, usize, usize, bool)> {
        let d = py.detach(|| self.file.dataset(name)).map_err(to_py)?;
        let pread = matches!(d.access, smdfs::tools::h5stream::Access::Pread { .. });
        Ok((d.shape.clone(), d.elem_size, d.row_bytes(), pread))
    }

    /// Streams dataset `name` in blocks of `block_rows` rows on `threads` threads, at most
    /// `depth` blocks ahead; in row order when `ordered`.
    #[pyo3(signature = (name, block_rows, threads=2, ordered=false, depth=8))]
    fn stream(
        &self,
        py: Python<'_>,
        name: &str,
        block_rows: u64,
        threads: usize,
        ordered: bool,
        depth: usize,
    ) -> PyResult<H5Stream> {
        let opts = StreamOptions { block_rows, threads, ordered, depth };
        let s = py.detach(|| self.file.stream(name, &opts)).map_err(to_py)?;
        Ok(H5Stream { s: Mutex::new(Some(s)) })
    }

    /// Queues a read of rows `start..stop` of dataset `name`.
    fn request(&self, py: Python<'_>, name: &str, start: u64, stop: u64) -> PyResult<H5Pending> {
        let reqs = self.requests()?;
        let r = py.detach(|| reqs.request(name, start..stop)).map_err(to_py)?;
        Ok(H5Pending { req: Mutex::new(Some(r)), reqs })
    }

    /// Stops the request threads once the queued requests are served.
    fn close(&self, py: Python<'_>) {
        let r = self.requests.lock().unwrap_or_else(|e| e.into_inner()).take();
        py.detach(|| drop(r));
    }
}

/// A block as handed to Python: first row, rows, the rows' bytes.
type Block<'py> = (u64, u64, Bound<'py, PyArray1<u8>>);

/// Blocks of one dataset; see `H5FileHandle.stream`.
#[pyclass(frozen, module = "smdfs._smdfs")]
pub(crate) struct H5Stream {
    s: Mutex<Option<BlockStream>>,
}

#[pymethods]
impl H5Stream {
    /// The next block as `(first row, rows, bytes)`, or None after the last.
    fn next_block<'py>(&self, py: Python<'py>) -> PyResult<Option<Block<'py>>> {
        let next = py.detach(|| self.s.lock().unwrap_or_else(|e| e.into_inner()).as_mut().and_then(Iterator::next));
        match next {
            None => {
                self.close(py);
                Ok(None)
            }
            Some(Err(e)) => {
                self.close(py);
                Err(to_py(e))
            }
            Some(Ok(b)) => Ok(Some((b.start, b.rows, b.data.into_pyarray(py)))),
        }
    }

    /// Stops the reader threads.
    fn close(&self, py: Python<'_>) {
        let s = self.s.lock().unwrap_or_else(|e| e.into_inner()).take();
        py.detach(|| drop(s));
    }
}

/// One queued read; see `H5FileHandle.request`.
#[pyclass(frozen, module = "smdfs._smdfs")]
pub(crate) struct H5Pending {
    req: Mutex<Option<Request>>,
    reqs: Arc<Requests>,
}

#[pymethods]
impl H5Pending {
    /// Waits for the rows and copies them to the start of `out`; returns the bytes copied.
    /// A second call is an error.
    fn wait_into(&self, py: Python<'_>, mut out: PyReadwriteArray1<'_, u8>) -> PyResult<usize> {
        let out = out.as_slice_mut().map_err(|_| PyValueError::new_err("the stage must be contiguous"))?;
        py.detach(|| {
            let r = self.req.lock().unwrap_or_else(|e| e.into_inner()).take();
            let r = r.ok_or_else(|| smdfs::Error::Usage("this request was already read".into()))?;
            let buf = r.wait()?;
            let n = buf.len();
            let have = out.len();
            let dst = out
                .get_mut(..n)
                .ok_or_else(|| smdfs::Error::Usage(format!("the stage holds {have} bytes, the request needs {n}")))?;
            dst.copy_from_slice(&buf);
            self.reqs.recycle(buf);
            Ok(n)
        })
        .map_err(to_py)
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<H5FileHandle>()?;
    m.add_class::<H5Stream>()?;
    m.add_class::<H5Pending>()?;
    Ok(())
}
