//! The smdfs command.
fn main() {}
