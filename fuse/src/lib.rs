//! The smdfs view: a run shown as one read-only directory — a real HDF5 file (`run.h5`) and
//! `.npy` arrays — whose bytes come from the shards in event-id order.
//!
//! [`View`] is a pure, immutable model (a tree of files, each a list of extents) tested
//! without mounting; [`live`] follows a run still being written with a series of views;
//! [`mount`] is the thin `fuser` adapter over them.

mod background;
pub mod error;
pub mod live;
pub mod mount;
pub mod stats;
pub mod view;

pub use error::ViewError;
pub use view::{Attr, DirEntry, FileKind, Ino, Order, View, ViewOptions, ROOT_INO};
