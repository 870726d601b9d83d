//! Integration tests across the smdfs crates, one module per area, all on real files.

mod ecosystem;
mod full_disk;
mod live;
mod live_refresh;
mod many_readers;
mod mount;
mod reader;
mod verify;
mod view_order;
mod writer;
