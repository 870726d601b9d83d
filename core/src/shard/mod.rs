//! One shard: a server's append-only column files and commit log. [`writer`] appends
//! batches and commits them; [`reader`] replays the log and maps what it commits. Knows the
//! format and the model; nothing of clients, the global index or the view.

pub mod io;
pub mod reader;
mod stats;
mod syncer;
pub mod writer;
