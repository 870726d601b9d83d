//! Adapters for `smdfs.compat`, the older tools' Python drop-ins: each submodule wraps one
//! engine of `smdfs::tools` (recorder, split records, named slices, HDF5 streaming) in a few
//! pyo3 classes that move bytes between numpy and the engine. The tools' names, argument
//! handling and semantics live in `python/smdfs/compat/*.py`; nothing here knows them.
//!
//! Contracts: the GIL is released around every engine call that touches disk or waits
//! (commits, reads, pwrites, waits on background threads); arrays handed to numpy are
//! either moved (a `Vec` the engine filled) or borrowed from a memory map whose owner object
//! is the array's base; every engine error becomes a typed Python exception
//! (`errors::to_py`), never a panic.

use pyo3::prelude::*;

mod h5stream;
mod recorder;
mod slices;
mod split;

/// The dtype whose numpy `descr` is `descr` (`"<f8"`, `"|u1"`), or a ValueError.
fn dtype_of(descr: &str) -> PyResult<smdfs::Dtype> {
    smdfs::Dtype::ALL.into_iter().find(|d| d.numpy_descr() == descr).ok_or_else(|| {
        pyo3::exceptions::PyValueError::new_err(format!(
            "dtype {descr:?} is not supported (bool, int8..64, uint8..64, float32/64, little-endian)"
        ))
    })
}

/// Adds the compat classes and functions to the extension module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    recorder::register(m)?;
    split::register(m)?;
    slices::register(m)?;
    h5stream::register(m)?;
    Ok(())
}
