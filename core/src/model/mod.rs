//! The data model: element types, values, field paths, the schema (groups and fields fixed
//! at first sight, and its merge over shards or ranks), reductions, and the columnar batch a
//! client fills. Pure in-memory types: this layer knows nothing of files, servers or readers.

pub mod batch;
pub mod columns;
pub mod dtype;
pub mod handle;
pub mod path;
pub mod reduce;
pub mod schema;
pub mod value;
