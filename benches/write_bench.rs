//! Write benchmark.
fn main() {}
