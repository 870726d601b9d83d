//! The view crate's one error type and its errno mapping.

/// Errors of the view and the mount.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// No such inode or name.
    #[error("no such file or directory: {0}")]
    NotFound(String),
    /// A directory operation on a file.
    #[error("not a directory: inode {0}")]
    NotADirectory(u64),
    /// A file operation on a directory.
    #[error("is a directory: inode {0}")]
    IsADirectory(u64),
    /// The view is read-only.
    #[error("read-only view")]
    ReadOnly,
    /// Reading the run failed.
    #[error(transparent)]
    Run(#[from] smdfs::Error),
    /// An I/O error outside the run (skeleton file, mount point).
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Mounting failed (not a run, busy mount point, no permission).
    #[error("{0}")]
    Mount(String),
}

impl ViewError {
    /// The errno a FUSE reply carries for this error.
    pub fn to_errno(&self) -> i32 {
        match self {
            ViewError::NotFound(_) => libc::ENOENT,
            ViewError::NotADirectory(_) => libc::ENOTDIR,
            ViewError::IsADirectory(_) => libc::EISDIR,
            ViewError::ReadOnly => libc::EROFS,
            ViewError::Run(_) => libc::EIO,
            ViewError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            ViewError::Mount(_) => libc::EIO,
        }
    }
}
