//! The Python exception hierarchy and the one mapping from the crate's `smdfs::Error` to it.
//! Every crate error becomes a typed Python exception whose message is the crate's (it names
//! the file, field or shard and what was expected); none is a panic.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(smdfs, Error, PyException, "Base class of every smdfs error.");
create_exception!(
    smdfs,
    SchemaError,
    Error,
    "A value disagrees with its field's dtype, shape or kind fixed at first sight (the message names the field, the expected and the given)."
);
create_exception!(
    smdfs,
    RunExistsError,
    Error,
    "The directory already holds a run (pass overwrite=True to replace it)."
);
create_exception!(smdfs, CorruptRunError, Error, "A run's files are damaged or not an smdfs run.");
create_exception!(smdfs, MpiError, Error, "MPI failed, or another rank of the job failed (the message names it).");

/// Maps a crate error to its Python exception.
pub(crate) fn to_py(e: smdfs::Error) -> PyErr {
    use smdfs::Error as E;
    let msg = e.to_string();
    match e {
        E::SchemaMismatch { .. } | E::BadValue { .. } | E::BadPath { .. } => SchemaError::new_err(msg),
        E::Corrupt { .. } | E::NotARun { .. } | E::Version { .. } => CorruptRunError::new_err(msg),
        E::Mpi { .. } => MpiError::new_err(msg),
        E::RunExists { .. } => RunExistsError::new_err(format!("{msg} (pass overwrite=True to replace it)")),
        E::NotFound { .. } => pyo3::exceptions::PyKeyError::new_err(msg),
        E::OutOfRange { .. } => pyo3::exceptions::PyIndexError::new_err(msg),
        E::Io { source, .. } => pyo3::exceptions::PyOSError::new_err((source.raw_os_error().unwrap_or(0), msg)),
        _ => Error::new_err(msg),
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("SchemaError", py.get_type::<SchemaError>())?;
    m.add("RunExistsError", py.get_type::<RunExistsError>())?;
    m.add("CorruptRunError", py.get_type::<CorruptRunError>())?;
    m.add("MpiError", py.get_type::<MpiError>())?;
    Ok(())
}
