//! smdfs: write one parallel for-loop's results into one dataset.
//!
//! Workers call [`Client::event`] with an event id and named fields; a few servers append
//! what they receive to shard files with a crash-safe commit log; [`SmallData::done`] merges
//! the shards' index maps into a global event-id-ordered index. [`Run`] reads a run back —
//! complete, crashed or still being written. `docs/FORMAT.md` specifies the bytes.
//!
//! ```no_run
//! use smdfs::{fields, SmallData, Value};
//! let smd = SmallData::builder("out/").servers(2).build()?;
//! std::thread::scope(|s| {
//!     for k in 0..4u64 {
//!         let mut c = smd.client();
//!         s.spawn(move || {
//!             for i in (k..1000).step_by(4) {
//!                 c.event(i, fields! { "energy" => i as f64 * 0.5 }).unwrap();
//!             }
//!         });
//!     }
//! });
//! smd.done()?;
//! let run = smdfs::Run::open("out/")?;
//! assert_eq!(run.field("energy")?.read_all::<f64>()?.len(), 1000);
//! # Ok::<(), smdfs::Error>(())
//! ```

mod batch;
pub mod demo;
pub mod dtype;
pub mod error;
pub mod export;
pub mod format;
pub mod h5skeleton;
pub mod h5stream;
pub mod index;
pub mod info;
pub mod layout;
pub mod manifest;
pub mod mpi;
pub mod npy;
pub mod path;
pub mod reader;
pub mod recorder;
pub mod reduce;
pub mod schema;
pub mod shard;
mod shard_writer;
pub mod slices;
pub mod split;
pub mod stream;
pub mod value;
pub mod verify;
pub mod writer;

pub use crate::mpi::{block, round_robin};
pub use dtype::{Dtype, Element};
pub use error::{Error, Result};
pub use index::Loc;
pub use manifest::{RunState, SummaryValue};
pub use reader::{FieldReader, Run};
pub use schema::{FieldSpec, GroupSpec, Schema, Stats};
pub use stream::{Block, Prefetch};
pub use value::{Field, Kind, Value};
pub use writer::{Builder, Client, DoneReport, MpiInfo, MpiRole, SmallData};
