//! The read side: [`Run`](run::Run) (a snapshot of a run: complete, crashed or still
//! writing), per-field readers, bulk streams and prefetch, shard-wise shuffled iteration,
//! change detection for live views, `info` and `verify`. Builds on shards and the index;
//! never writes a run.

pub(crate) mod complete;
pub mod field;
pub mod info;
pub mod ragged;
pub mod run;
pub mod shuffle;
pub mod stream;
pub mod verify;
pub mod watch;
