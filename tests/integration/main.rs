//! Integration tests across the smdfs crates, one module per area, all on real files.

mod reader;
mod verify;
mod writer;
