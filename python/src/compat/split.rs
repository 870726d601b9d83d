//! Split records for `smdfs.compat.splitdataloader`: `split_write` feeds a Python iterable
//! of bytes to `smdfs::tools::split::SplitWriter`; `SplitLoaderHandle` (subclassed in
//! Python by `SplitDataLoader`) serves `len` and `loader[i]` from the memory-mapped bins, and
//! `BinIter` hands out whole bins of records while a background thread faults in the next
//! bins' pages.

use std::path::PathBuf;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use smdfs::tools::split::{PrefetchMap, SplitLoader, SplitWriter};

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

    /// Bin by bin (shuffled bins and records within each when `seed` is given), the next
    /// bins read ahead on a background thread.
    #[pyo3(signature = (seed=None))]
    fn _binwise(&self, py: Python<'_>, seed: Option<u64>) -> PyResult<BinIter> {
        let bins = self.loader.bin_order(seed);
        let order = py
            .detach(|| {
                self.loader.prefetch_map(seed, 1, 2, |i, r: &[u8]| {
                    // Fault the record's pages in here, off the consumer's thread.
                    let mut acc = 0u8;
                    for p in (0..r.len()).step_by(4096) {
                        acc ^= r[p];
                    }
                    std::hint::black_box(acc);
                    i
                })
            })
            .map_err(to_py)?;
        let sizes = bins.iter().map(|&b| self.loader.bin_records(b)).collect();
        Ok(BinIter { loader: self.loader.clone(), order, sizes, at: 0 })
    }
}

/// Whole bins of records in iteration order; see `SplitLoaderHandle._binwise`.
#[pyclass(module = "smdfs._smdfs")]
pub(crate) struct BinIter {
    loader: SplitLoader,
    order: PrefetchMap<u64>,
    sizes: Vec<u64>,
    at: usize,
}

#[pymethods]
impl BinIter {
    /// The next bin's records as a list of bytes, or None after the last bin.
    fn next_bin<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        let Some(&n) = self.sizes.get(self.at) else { return Ok(None) };
        self.at += 1;
        let order = &mut self.order;
        let idx = py.detach(|| order.by_ref().take(n as usize).collect::<smdfs::Result<Vec<u64>>>()).map_err(to_py)?;
        let l = PyList::empty(py);
        for i in idx {
            l.append(PyBytes::new(py, self.loader.get(i).map_err(to_py)?))?;
        }
        Ok(Some(l))
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(split_write, m)?)?;
    m.add_class::<SplitLoaderHandle>()?;
    m.add_class::<BinIter>()?;
    Ok(())
}
