//! (scaffold) The writer side of the extension; filled in by the Python package issue.

use pyo3::prelude::*;

pub(crate) fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
