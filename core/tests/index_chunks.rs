//! Chunk checksums of stored index and offsets files (FORMAT.md revision 5), on real runs
//! written by the real writer: a complete run opens without reading its index, a damaged
//! chunk is found when first served and the group (or the ragged offsets) is served from the
//! shards instead — the same bytes — with a warning naming the file; a checksum list that
//! does not fit its file is damage found at open and handled like any other index damage;
//! `verify` reports both.

use std::path::Path;

use smdfs::format::manifest::seal;
use smdfs::{verify, Run};

/// A demo run big enough that its dense run-group index and `tag` offsets span several
/// 1 MiB chunks (400k rows: 3.2 MB each).
const EVENTS: u64 = 400_000;

fn demo(dir: &Path) {
    smdfs::demo::write_demo(dir, EVENTS, 4, 4, true).expect("demo");
}

/// Everything the demo formula says about the run group's `energy` and `tag`, and the ids.
fn served_right(run: &Run) {
    let energy = run.field("energy").expect("energy").read_all::<f64>().expect("reads energy");
    assert_eq!(energy.len() as u64, EVENTS);
    assert!(energy.iter().enumerate().all(|(i, &e)| e == i as f64 * 0.5), "energy is the formula's");
    let mut ids = vec![0u64; EVENTS as usize];
    run.read_ids("", 0, &mut ids).expect("ids");
    assert!(ids.iter().enumerate().all(|(i, &id)| id == 1000 + 3 * i as u64), "ids are the formula's");
    assert_eq!(run.row_of("", 1000 + 3 * 200_001).expect("row_of"), Some(200_001));
    let tag = run.field("tag").expect("tag");
    for i in [0u64, 1, 131_067, 200_000, 200_001, EVENTS - 1] {
        assert_eq!(tag.ragged_row(i).expect("tag row"), format!("evt{i}").as_bytes(), "tag row {i}");
    }
    let offs = tag.offsets().expect("ragged");
    let mut out = vec![0u8; (offs[200_100] - offs[199_900]) as usize];
    tag.read_ragged(199_900, 200_100, &mut out).expect("ragged range");
    let want: String = (199_900..200_100).map(|i| format!("evt{i}")).collect();
    assert_eq!(out, want.as_bytes());
}

fn flip_middle(path: &Path) {
    let mut b = std::fs::read(path).expect("read");
    let mid = b.len() / 2;
    b[mid] ^= 0x10;
    std::fs::write(path, b).expect("write");
}

fn problems(dir: &Path) -> String {
    let rep = verify(dir, &mut |_, _| {}).expect("verify runs");
    rep.problems.iter().map(|p| format!("{}: {}", p.file.display(), p.what)).collect::<Vec<_>>().join("\n")
}

/// Edits the manifest's JSON and reseals it (a tool that means to, or damage that did).
fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json");
    v.as_object_mut().expect("object").remove("crc32c");
    f(&mut v);
    std::fs::write(&p, seal(&serde_json::to_vec_pretty(&v).expect("json"))).expect("write");
}

#[test]
fn a_complete_run_records_chunk_checksums_and_opens_without_warnings() {
    let dir = tempfile::tempdir().expect("tempdir");
    demo(dir.path());
    let run = Run::open(dir.path()).expect("opens");
    let ix = run.manifest().index.as_ref().expect("complete");
    let g = &ix.groups[0];
    let len = std::fs::metadata(dir.path().join(&g.file)).expect("index file").len();
    assert_eq!(g.chunks.chunk_bytes, Some(1 << 20));
    assert_eq!(g.chunks.crc32c.as_ref().map(Vec::len), Some(len.div_ceil(1 << 20) as usize));
    assert!(len > 3 << 20, "the index spans several chunks");
    assert!(ix.ragged[0].chunks.crc32c.is_some(), "offsets files are checksummed too");
    served_right(&run);
    assert!(run.warnings().is_empty(), "{:?}", run.warnings());
    assert_eq!(run.merged_rows(), 0, "the stored index was served, not rebuilt");
    assert_eq!(problems(dir.path()), "");
}

#[test]
fn a_flipped_byte_in_the_middle_of_a_big_index_is_served_from_the_shards_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    demo(dir.path());
    flip_middle(&dir.path().join("index/g00000.idx"));
    let run = Run::open(dir.path()).expect("opens: the damage is in a chunk not yet served");
    served_right(&run);
    let w = run.warnings().join("\n");
    assert!(w.contains("g00000.idx") && w.contains("fails the crc32c"), "{w}");
    assert_eq!(run.warnings().len(), 1, "one warning, however many reads: {w}");
    let p = problems(dir.path());
    assert!(p.contains("g00000.idx") && p.contains("chunk"), "verify reports it: {p}");
}

#[test]
fn a_flipped_byte_in_a_ragged_offsets_file_is_recomputed_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    demo(dir.path());
    flip_middle(&dir.path().join("index/f00003.off"));
    let run = Run::open(dir.path()).expect("opens");
    served_right(&run);
    let w = run.warnings().join("\n");
    assert!(w.contains("f00003.off") && w.contains("\"tag\""), "{w}");
    assert!(problems(dir.path()).contains("f00003.off"));
}

#[test]
fn a_checksum_list_of_the_wrong_length_is_index_damage_found_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    demo(dir.path());
    edit_manifest(dir.path(), |v| {
        let crcs = v["index"]["groups"][0]["chunk_crc32c"].as_array_mut().expect("list");
        crcs.pop();
    });
    let run = Run::open(dir.path()).expect("re-indexed from the shards");
    let w = run.warnings().join("\n");
    assert!(w.contains("chunk checksums for a file of") && w.contains("indexed from the shards"), "{w}");
    served_right(&run);
    assert!(problems(dir.path()).contains("chunk checksums"));

    // Only one of the two members: damage too.
    demo(dir.path());
    edit_manifest(dir.path(), |v| {
        v["index"]["ragged"][0].as_object_mut().expect("entry").remove("chunk_bytes");
    });
    let run = Run::open(dir.path()).expect("offsets recomputed");
    assert!(run.warnings().join("\n").contains("\"tag\""), "{:?}", run.warnings());
    served_right(&run);
}
