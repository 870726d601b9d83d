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

pub mod demo;
pub mod error;
#[doc(hidden)]
pub mod fork;
#[doc(hidden)]
pub mod format;
#[cfg(feature = "hdf5")]
pub mod h5;
#[doc(hidden)]
pub mod index;
pub mod model;
pub mod read;
#[doc(hidden)]
pub mod shard;
#[doc(hidden)]
pub mod sync;
pub mod tools;
pub mod write;

pub use error::{Error, Result};
pub use format::manifest::{RunState, SummaryValue};
pub use index::Loc;
pub use model::columns::Column;
pub use model::dtype::{Dtype, Element};
pub use model::handle;
pub use model::schema::{FieldSpec, GroupSpec, Schema, Stats};
pub use model::value::{Field, Kind, Value};
pub use read::field::Block;
pub use read::info::RunInfo;
pub use read::run::gather::Gather;
pub use read::run::{FieldReader, Run};
pub use read::stream::Prefetch;
pub use read::verify::{verify, VerifyReport};
pub use write::client::{Client, EventRow};
pub use write::report::{DoneReport, MpiInfo, MpiRole};
pub use write::share::{block, round_robin};
pub use write::smalldata::{Builder, SmallData};
