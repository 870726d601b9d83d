//! The crate's one error type, a variant per kind of failure: I/O (with its path), a field's
//! schema or value, corrupt or unreadable run data (with file and offset), a run that exists
//! or is locked, HDF5, MPI, a stopped background thread, and misuse of the API. Every variant
//! names the file, field or shard it concerns and what was expected, so a user can act on the
//! message alone. The OS cause of an I/O error is printed once, by the variant itself.

use std::path::PathBuf;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong writing or reading a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A field path breaks the naming rules.
    #[error("field path {path:?} is invalid: {why}")]
    BadPath {
        /// The offending path (escaped).
        path: String,
        /// Which rule it breaks.
        why: String,
    },
    /// An event's value disagrees with the field's dtype, shape or kind fixed at first sight.
    #[error("field {field:?}: expected {expected}, got {given}")]
    SchemaMismatch {
        /// The field path.
        field: String,
        /// What the field was first seen as.
        expected: String,
        /// What this event gave.
        given: String,
    },
    /// A value is malformed in itself (data length does not match the shape, bad fill).
    #[error("field {field:?}: {why}")]
    BadValue {
        /// The field path.
        field: String,
        /// What is wrong.
        why: String,
    },
    /// A shard's server stopped (I/O error, or it panicked); the shard's committed prefix is intact.
    #[error("shard {shard}: server failed: {why}")]
    ServerFailed {
        /// Shard index.
        shard: usize,
        /// The server's error.
        why: String,
    },
    /// A file is not in the expected format (bad magic, version, checksum of committed data, …).
    #[error("{path}: corrupt at byte {offset}: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the problem.
        offset: u64,
        /// What was expected.
        why: String,
    },
    /// The directory is not an smdfs run.
    #[error("{path} is not an smdfs run: {why}")]
    NotARun {
        /// The directory.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A format version this build cannot read.
    #[error("{path}: format version {found} is not supported (this build reads {supported})")]
    Version {
        /// The file.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Version supported.
        supported: u32,
    },
    /// A field, group or summary name that does not exist.
    #[error("no {what} named {name:?} in this run")]
    NotFound {
        /// "field", "group", "summary value" or "reduction".
        what: &'static str,
        /// The name asked for.
        name: String,
    },
    /// A row or event id out of range.
    #[error("{what} {index} is out of range (len {len})")]
    OutOfRange {
        /// "row" or "event id".
        what: &'static str,
        /// The index asked for.
        index: u64,
        /// The length.
        len: u64,
    },
    /// The directory already holds a run (a writer without `overwrite`).
    #[error("{} already holds a run; choose another directory or overwrite it", path.display())]
    RunExists {
        /// The run directory.
        path: PathBuf,
    },
    /// Another live writer holds the run's writer lock.
    #[error("{}: another writer holds this run ({holder})", path.display())]
    Locked {
        /// The run directory.
        path: PathBuf,
        /// What the lock file says of its holder.
        holder: String,
    },
    /// libhdf5 failed on a file (the skeleton, an export, a streamed file).
    #[error("HDF5 {}: {object}: {why}", path.display())]
    Hdf5 {
        /// The HDF5 file.
        path: PathBuf,
        /// The object (dataset path) or operation.
        object: String,
        /// libhdf5's message.
        why: String,
    },
    /// A record this crate writes could not be encoded (a manifest, a log record, an MPI
    /// status): a bug or an exhausted resource, never user data.
    #[error("cannot encode {what}: {why}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        why: String,
    },
    /// A background thread (prefetch, streaming, a demo client) could not start or stopped.
    #[error("{what}: {why}")]
    Thread {
        /// The thread's job.
        what: String,
        /// Why it could not start or stopped.
        why: String,
    },
    /// Misuse of the API: a setting out of range, the wrong element type requested, a
    /// buffer of the wrong size, a call on a closed or finished handle, clients alive at done.
    #[error("{0}")]
    Usage(String),
    /// An object that owns threads (a writer, a prefetching or streaming reader) made in
    /// process `pid` was used in a process forked from it without exec (`here`), where its
    /// threads do not exist.
    #[error(
        "this {what} was started in process {pid} and cannot be used in process {here}, forked from it: \
         its threads are not in this process; start a {what} in each process"
    )]
    Forked {
        /// What it is ("writer", "prefetching reader", …).
        what: &'static str,
        /// The process that made it.
        pid: u32,
        /// This process.
        here: u32,
    },
    /// MPI mode: MPI itself failed, or another rank of the job failed (then `rank` names it
    /// and `why` is its message; every rank returns the error, so the job fails as one).
    #[error("MPI{}: {why}", rank.map(|r| format!(" rank {r}")).unwrap_or_default())]
    Mpi {
        /// The rank whose error this is, if it is another rank's.
        rank: Option<usize>,
        /// What failed.
        why: String,
    },
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }

    /// An [`Error::Encode`] for `what`.
    pub(crate) fn encode(what: &'static str) -> impl FnOnce(serde_json::Error) -> Error {
        move |e| Error::Encode { what, why: e.to_string() }
    }

    /// An [`Error::Thread`] for a thread doing `what`.
    pub(crate) fn thread(what: impl Into<String>, why: impl std::fmt::Display) -> Error {
        Error::Thread { what: what.into(), why: why.to_string() }
    }
}

/// Adds a path to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
