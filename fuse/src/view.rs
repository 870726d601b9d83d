//! The View: an immutable snapshot of a run as a tree of directories and files, each file a
//! sorted list of extents — skeleton bytes, literal bytes, or a dataset's bytes gathered from
//! the shards in event-id order. [`View::read_into`] is the whole read path; it is tested
//! without mounting.
//!
//! `run.h5` is a real HDF5 file: its metadata comes from a skeleton libhdf5 writes (see
//! `smdfs::h5::skeleton`), and every byte inside a dataset's extent is served from the run.
//! `arrays/<path>.npy` serve the same dataset bytes behind an `.npy` header. Layout:
//! `/timestamp`, `/<path>` per aligned field, `/<G>/timestamp` + `/<G>/<path>` for a named
//! aligned group, `/<P>` + `/<P>_timestamp` for an unaligned field, ragged `x` as `/x` (flat
//! values) + `/x_len` + `/x_offsets`, `/_present/<path>` for aligned fields with missing
//! rows, `/summary/<name>`. `run.zarr/` shows the same datasets as a Zarr v3 hierarchy whose
//! chunk files are extents of the same dataset bytes (see [`zarr`]).
//!
//! This file holds the snapshot's data (nodes, extents, datasets) and its public vocabulary;
//! the work is split by concept: `build` (a run into a view), `tree` (nodes and names),
//! `read` (bytes of a file), `ranges` (which shard bytes a read copies), `options` (how to build), `arrival` and `zarr`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use memmap2::Mmap;
use smdfs::h5::layout::DatasetLayout;
use smdfs::Run;

use crate::error::ViewError;

mod arrival;
mod build;
mod options;
mod ranges;
mod read;
#[cfg(test)]
mod tests;
mod tree;
mod zarr;

pub use options::{Order, ViewOptions};

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

/// A dataset of the view: its layout and where libhdf5 placed its bytes in the skeleton.
#[derive(Clone, Debug)]
struct Dataset {
    layout: DatasetLayout,
    offset: u64,
    size: u64,
    /// Its bytes in arrival order (`Order::Arrival` only).
    arrival: Option<Vec<arrival::Seg>>,
}

/// A piece of a file.
#[derive(Clone, Debug)]
enum Piece {
    /// Bytes of the skeleton starting at this offset.
    Skeleton(u64),
    /// Literal bytes.
    Literal(Arc<[u8]>),
    /// Bytes of dataset `usize` starting at this byte offset within it.
    Data(usize, u64),
}

#[derive(Clone, Debug)]
struct Extent {
    start: u64,
    len: u64,
    piece: Piece,
}

enum Node {
    Dir { children: BTreeMap<String, Ino> },
    File { size: u64, extents: Vec<Extent> },
}

/// An immutable snapshot of a run's view.
pub struct View {
    run: Run,
    datasets: Vec<Dataset>,
    nodes: Vec<Node>,
    skeleton: Option<Mmap>,
    mtime: SystemTime,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View").field("run", &self.run.dir()).field("nodes", &self.nodes.len()).finish()
    }
}
impl View {
    fn node(&self, ino: Ino) -> Result<&Node, ViewError> {
        ino.checked_sub(1)
            .and_then(|i| self.nodes.get(i as usize))
            .ok_or_else(|| ViewError::NotFound(format!("inode {ino}")))
    }

    /// The run this view shows.
    pub fn run(&self) -> &Run {
        &self.run
    }
}
