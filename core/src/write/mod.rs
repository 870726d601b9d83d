//! The write side: clients batch events, servers append them to shards, `done()` completes
//! the run. [`smalldata`] is the facade and its builder; [`client`] the per-worker handle;
//! `threads` and `mpi` (feature `mpi`) the two engines that run servers; `run_dir` the run directory's
//! life (prepare, complete); [`share`] each process's share of an event range. Builds on the
//! model, format, shard and index layers; knows nothing of readers or the view.

pub mod client;
mod columns_direct;
mod columns_in;
#[cfg(feature = "mpi")]
pub(crate) mod mpi;
pub mod report;
pub(crate) mod run_dir;
pub mod share;
pub(crate) mod shared;
pub mod smalldata;
pub(crate) mod threads;
