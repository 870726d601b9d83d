//! The View: an immutable snapshot of a run as a tree of directories and files, each file a
//! list of extents. (Being written.)

use std::path::Path;
use std::time::SystemTime;

use crate::error::ViewError;

/// Inode number (root is [`ROOT_INO`]).
pub type Ino = u64;
/// The root directory's inode.
pub const ROOT_INO: Ino = 1;

/// File or directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Dir,
    /// A regular, read-only file.
    File,
}

/// Attributes of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode.
    pub ino: Ino,
    /// File or directory.
    pub kind: FileKind,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time (the snapshot's).
    pub mtime: SystemTime,
    /// Link count.
    pub nlink: u32,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode.
    pub ino: Ino,
    /// File or directory.
    pub kind: FileKind,
    /// Name.
    pub name: String,
}

/// How to build a view.
#[derive(Clone, Debug)]
pub struct ViewOptions {
    /// Name of the HDF5 file (default `run.h5`).
    pub h5_name: String,
}

impl Default for ViewOptions {
    fn default() -> Self {
        ViewOptions { h5_name: "run.h5".into() }
    }
}

/// An immutable snapshot of a run's view.
pub struct View {}

impl View {
    /// Opens the run in `dir` and builds its view.
    pub fn open(_dir: &Path, _opts: &ViewOptions) -> Result<View, ViewError> {
        Err(ViewError::Mount("view not built yet".into()))
    }
    /// Attributes of an inode.
    pub fn attr(&self, ino: Ino) -> Result<Attr, ViewError> {
        Err(ViewError::NotFound(ino.to_string()))
    }
    /// Looks a name up in a directory.
    pub fn lookup(&self, _parent: Ino, name: &str) -> Result<Attr, ViewError> {
        Err(ViewError::NotFound(name.into()))
    }
    /// A directory's entries (without `.` and `..`).
    pub fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>, ViewError> {
        Err(ViewError::NotFound(ino.to_string()))
    }
    /// Reads up to `buf.len()` bytes at `offset` into `buf`; returns how many (0 at EOF).
    pub fn read_into(&self, ino: Ino, _offset: u64, _buf: &mut [u8]) -> Result<usize, ViewError> {
        Err(ViewError::NotFound(ino.to_string()))
    }
}
