//! The `smdfs._smdfs` extension module: thin pyo3 adapters over the `smdfs` crate. Each
//! submodule converts Python values to the crate's types and back, and releases the GIL
//! around every call that touches disk or waits. The familiar Python names and docstrings
//! live in `python/smdfs/*.py`; nothing here holds logic the Rust crates need.

use pyo3::prelude::*;

mod compat;
mod errors;
mod reader;
mod writer;

/// The extension module.
#[pymodule]
fn _smdfs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    writer::register(m)?;
    reader::register(m)?;
    compat::register(m)?;
    Ok(())
}
