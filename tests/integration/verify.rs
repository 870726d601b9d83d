//! `smdfs::verify` on real runs: sound data, bit rot in committed bytes, torn log
//! tails (reported, not damage), truncated columns, and a tampered global index.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use smdfs::verify;
use smdfs::{demo, RunState};

fn demo_run(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    demo::write_demo(dir.path(), n, 2, 3, false).unwrap();
    dir
}

fn check(dir: &Path) -> smdfs::VerifyReport {
    let mut last = (0, 0);
    let r = verify(dir, &mut |d, t| last = (d, t)).unwrap();
    assert_eq!(last.0, last.1, "progress reaches the total");
    r
}

#[test]
fn a_sound_run_verifies_with_every_committed_byte_checked() {
    let d = demo_run(5000);
    let r = check(d.path());
    assert!(r.is_sound(), "{:?}", r.problems);
    assert_eq!(r.state, Some(RunState::Complete));
    assert_eq!(r.events, 5000);
    assert_eq!(r.shards.iter().map(|s| s.events).sum::<u64>(), 5000);
    assert!(r.shards.iter().all(|s| s.closed && s.torn_bytes == 0 && s.bytes_checked > 0 && s.commits > 0));
}

#[test]
fn a_flipped_bit_in_committed_data_is_damage_named_by_file_and_offset() {
    let d = demo_run(3000);
    let col = d.path().join("shard-00001").join("c000004.col");
    let f = OpenOptions::new().read(true).write(true).open(&col).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 1000).unwrap();
    f.write_all_at(&[b[0] ^ 0x04], 1000).unwrap();
    let r = check(d.path());
    assert!(!r.is_sound());
    let p = &r.problems[0];
    assert_eq!(p.file, col);
    assert!(p.offset <= 1000 && p.what.contains("checksum"), "{p:?}");
}

#[test]
fn a_torn_log_tail_is_reported_but_is_not_damage() {
    let d = demo_run(2000);
    let log = d.path().join("shard-00000").join("log");
    let mut f = OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(&[0x10, 0, 0, 0, 1, 2, 3]).unwrap();
    let r = check(d.path());
    assert!(r.is_sound(), "{:?}", r.problems);
    assert_eq!(r.shards[0].torn_bytes, 7);
    assert_eq!(r.torn_bytes(), 7);
    assert!(r.shards[0].torn_reason.is_some());
}

#[test]
fn a_truncated_column_and_a_tampered_index_are_damage() {
    let d = demo_run(2000);
    let col = d.path().join("shard-00000").join("c000001.col");
    let len = std::fs::metadata(&col).unwrap().len();
    OpenOptions::new().write(true).open(&col).unwrap().set_len(len - 8).unwrap();
    let r = check(d.path());
    assert!(r.problems.iter().any(|p| p.file == col), "{:?}", r.problems);

    let d = demo_run(2000);
    let idx = d.path().join("index").join("g00000.idx");
    let f = OpenOptions::new().read(true).write(true).open(&idx).unwrap();
    let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
    f.read_exact_at(&mut a, 32 + 8 * 10).unwrap();
    f.read_exact_at(&mut b, 32 + 8 * 500).unwrap();
    f.write_all_at(&b, 32 + 8 * 10).unwrap();
    f.write_all_at(&a, 32 + 8 * 500).unwrap();
    let r = check(d.path());
    assert!(r.problems.iter().any(|p| p.file == idx && p.what.contains("descend")), "{:?}", r.problems);
}

#[test]
fn a_directory_that_is_not_a_run_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let r = check(d.path());
    assert!(!r.is_sound());
    assert!(r.problems[0].what.contains("not an smdfs run"));
}
