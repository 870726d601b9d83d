//! The bytes on disk, as `docs/FORMAT.md` specifies them: commit-log frames and records,
//! file names, the run manifest and the writer lock, and `.npy` headers. Encoders and
//! decoders only: this layer opens no shard and knows nothing of writers or readers.

pub mod file;
pub mod lock;
pub mod log;
pub mod manifest;
pub mod npy;

pub use log::*;
