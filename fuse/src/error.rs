//! The view crate's one error type — a variant per kind of failure: a missing or mistyped
//! node, the read-only tree, the run's own errors, I/O outside the run, a run whose names
//! cannot form a view, an unusable mount point, and mounting or unmounting that failed —
//! and its one errno mapping for FUSE replies.

use std::path::PathBuf;

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
    /// The run's names cannot be laid out as a view (a name that is both a file and a
    /// directory, two entries of one name, an invalid HDF5 file name).
    #[error("{0}")]
    Layout(String),
    /// The mount point cannot take a mount (missing, not a directory, not empty, busy, a
    /// dead FUSE mount).
    #[error("mount point {} {why}", path.display())]
    MountPoint {
        /// The mount point as given.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The kernel refused the mount.
    #[error("cannot mount at {}: {source}", path.display())]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Unmounting failed (not mounted, not a FUSE mount, busy, not permitted).
    #[error("cannot unmount {}: {why}", path.display())]
    Unmount {
        /// The mount point as given.
        path: PathBuf,
        /// Why.
        why: String,
    },
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
            ViewError::Layout(_) => libc::EINVAL,
            ViewError::MountPoint { .. } => libc::EINVAL,
            ViewError::Mount { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            ViewError::Unmount { .. } => libc::EBUSY,
        }
    }
}
