//! Runs edited to reach outside themselves or to hang a reader (issue "hostile input"):
//! symbolic links out of the run, FIFOs and devices in place of run files, and manifest
//! names that are paths. Every case must be refused promptly with an error naming the file,
//! by `Run::open` and by `verify` alike — never followed, never a hang.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use smdfs::{verify, Run};

fn demo(dir: &Path) -> PathBuf {
    let run = dir.join("run");
    smdfs::demo::write_demo(&run, 200, 2, 3, false).unwrap();
    run
}

/// Opens and verifies `run` on another thread; a hang fails the test instead of hanging it.
fn open_and_verify(run: &Path) -> (Result<Run, smdfs::Error>, smdfs::Result<smdfs::VerifyReport>) {
    let (tx, rx) = mpsc::channel();
    let run = run.to_path_buf();
    std::thread::spawn(move || {
        let opened = Run::open(&run);
        let checked = verify(&run, &mut |_, _| {});
        let _ = tx.send((opened, checked));
    });
    rx.recv_timeout(Duration::from_secs(120)).expect("opening or verifying the run hangs")
}

/// `Run::open` refuses with a message containing each of `words`, and verify reports damage.
fn refused(run: &Path, words: &[&str]) {
    let (opened, checked) = open_and_verify(run);
    let e = opened.expect_err("the run must be refused").to_string();
    for w in words {
        assert!(e.contains(w), "{e:?} lacks {w:?}");
    }
    let rep = checked.expect("verify reports, it does not fail");
    assert!(!rep.problems.is_empty(), "verify calls a run sound that open refuses: {e}");
}

/// `Run::open` reads the run (index rebuilt from the shards) and warns with each of `words`;
/// verify reports the damage.
fn reindexed(run: &Path, words: &[&str]) {
    let (opened, checked) = open_and_verify(run);
    let r = opened.expect("a run with intact shards is re-indexed");
    let w = r.warnings().join("\n");
    for word in words {
        assert!(w.contains(word), "{w:?} lacks {word:?}");
    }
    assert_eq!(r.len(), 200, "every event is served");
    assert!(!checked.unwrap().problems.is_empty(), "verify calls a damaged index sound");
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", p.display());
}

fn replace_with_link(p: &Path, target: &Path) {
    if p.is_dir() {
        std::fs::remove_dir_all(p).unwrap();
    } else {
        std::fs::remove_file(p).unwrap();
    }
    std::os::unix::fs::symlink(target, p).unwrap();
}

#[test]
fn a_column_file_linked_outside_the_run_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let run = demo(t.path());
    let outside = t.path().join("outside.col");
    std::fs::write(&outside, vec![0x5au8; 1 << 16]).unwrap();
    replace_with_link(&run.join("shard-00000/c000001.col"), &outside);
    refused(&run, &["c000001.col", "symbolic link"]);
}

#[test]
fn a_shard_directory_linked_outside_the_run_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let run = demo(t.path());
    let other = demo(&t.path().join("other"));
    replace_with_link(&run.join("shard-00001"), &other.join("shard-00001"));
    refused(&run, &["shard-00001", "symbolic link"]);
}

#[test]
fn manifest_index_names_that_are_paths_are_refused() {
    for bad in ["/etc/passwd", "../../other/index/g00000.idx", "index/../manifest.json"] {
        let t = tempfile::tempdir().unwrap();
        let run = demo(t.path());
        let m = run.join("manifest.json");
        let text = std::fs::read_to_string(&m).unwrap();
        assert!(text.contains("\"index/g00000.idx\""), "the demo's manifest names its index");
        let edited = text.replace("\"index/g00000.idx\"", &format!("{bad:?}"));
        // Resealed: the name itself must be refused, not only the stale checksum.
        std::fs::write(&m, smdfs::format::manifest::seal(edited.as_bytes())).unwrap();
        refused(&run, &["manifest.json", "not a plain file name"]);
    }
}

#[test]
fn fifos_and_devices_in_place_of_run_files_never_hang_a_reader() {
    for victim in ["manifest.json", "shard-00000/log", "index/g00000.idx", "shard-00000/c000000.col"] {
        let t = tempfile::tempdir().unwrap();
        let run = demo(t.path());
        let p = run.join(victim);
        std::fs::remove_file(&p).unwrap();
        mkfifo(&p);
        if victim.starts_with("index/") {
            // The shards are intact: the group is indexed from them, with a warning.
            reindexed(&run, &["g00000.idx", "FIFO"]);
        } else {
            refused(&run, &[victim.rsplit('/').next().unwrap(), "FIFO"]);
        }
    }
    let t = tempfile::tempdir().unwrap();
    let run = demo(t.path());
    replace_with_link(&run.join("manifest.json"), Path::new("/dev/zero"));
    refused(&run, &["manifest.json", "symbolic link"]);
}

// ---- One source of truth, checked (the manifest against itself and the shards) ----------

/// Edits the manifest's text (`from` must occur) and reseals it, as a writer with a bug or a
/// hand edit that recomputes the checksum would: the checks behind the checksum must hold.
fn edit_sealed(run: &Path, from: &str, to: &str) {
    let m = run.join("manifest.json");
    let text = std::fs::read_to_string(&m).unwrap();
    assert!(text.contains(from), "the demo's manifest holds {from:?}");
    std::fs::write(&m, smdfs::format::manifest::seal(text.replacen(from, to, 1).as_bytes())).unwrap();
}

/// The `"det/image"` field's JSON object in the pretty manifest, for edits inside it.
fn image_spec(run: &Path) -> String {
    let text = std::fs::read_to_string(run.join("manifest.json")).unwrap();
    let at = text.find("\"path\": \"det/image\"").unwrap();
    let end = at + text[at..].find('}').unwrap();
    text[at..end].to_string()
}

#[test]
fn an_edited_manifest_fails_its_checksum_and_an_old_one_without_a_checksum_still_reads() {
    let t = tempfile::tempdir().unwrap();
    let run = demo(t.path());
    let m = run.join("manifest.json");
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, text.replacen("\"shards\": 2", "\"shards\": 1", 1)).unwrap();
    refused(&run, &["manifest.json", "checksum mismatch"]);
    // A writer before document revision 4 wrote no checksum member: still read.
    let at = text.rfind(",\n  \"crc32c\"").unwrap();
    let old = format!("{}\n}}", &text[..at]);
    std::fs::write(&m, &old).unwrap();
    assert_eq!(Run::open(&run).unwrap().len(), 200);
    assert!(verify(&run, &mut |_, _| {}).unwrap().is_sound());
    // ... but a damaged checksum key is not taken for an old writer's manifest.
    std::fs::write(&m, text.replacen("\"crc32c\"", "\"crc32b\"", 1)).unwrap();
    refused(&run, &["manifest.json", "crc32b"]);
}

#[test]
fn bad_summary_bytes_are_refused_by_every_command_and_never_exported() {
    for bad in ["zz", "a0", "a08601000000000000"] {
        let t = tempfile::tempdir().unwrap();
        let run = demo(t.path());
        let text = std::fs::read_to_string(run.join("manifest.json")).unwrap();
        let at = text.find("\"data_hex\": \"").unwrap() + 13;
        let old = &text[at..at + text[at..].find('"').unwrap()];
        edit_sealed(&run, &format!("\"data_hex\": \"{old}\""), &format!("\"data_hex\": \"{bad}\""));
        refused(&run, &["manifest.json", "summary value \"n_events\""]);
    }
}

#[test]
fn a_manifest_schema_that_disagrees_with_the_shards_is_refused_naming_field_and_values() {
    let spec = |run: &Path| image_spec(run);
    let cases: [(&str, &str, &[&str]); 6] = [
        (
            "\"shape\": [\n          4,\n          8\n        ]",
            "\"shape\": [\n          4,\n          9\n        ]",
            &["shape [4, 9]", "[4, 8]"],
        ),
        ("\"dtype\": \"u16\"", "\"dtype\": \"i16\"", &["dtype i16", "u16"]),
        ("\"kind\": \"fixed\"", "\"kind\": \"ragged\"", &["ragged"]),
        ("\"shape\": [\n          4,", "\"shape\": [\n          0,", &["shape [0, 8]"]),
        ("\"fill\": [\n          255,", "\"fill\": [\n          254,", &["fill [254, 255]", "[255, 255]"]),
        (
            "\"shape\": [\n          4,\n          8\n        ]",
            "\"shape\": [65536, 65536, 65536, 65536]",
            &["det/image", "larger than"],
        ),
    ];
    for (from, to, words) in cases {
        let t = tempfile::tempdir().unwrap();
        let run = demo(t.path());
        let s = spec(&run);
        assert!(s.contains(from), "{s}");
        edit_sealed(&run, &s, &s.replacen(from, to, 1));
        let mut all = vec!["manifest.json", "det/image"];
        all.extend_from_slice(words);
        refused(&run, &all);
    }
}

#[test]
fn fields_info_and_mount_refuse_are_damage_to_verify_too() {
    let cases = [
        (
            "\"fill\": [\n          255,\n          255\n        ]",
            "\"fill\": [\n          255\n        ]",
            "fill has 1 bytes",
        ),
        ("\"path\": \"det/image\"", "\"path\": \"\"", "empty path"),
        ("\"path\": \"det/image\"", "\"path\": \"energy\"", "appears twice"),
    ];
    for (from, to, why) in cases {
        let t = tempfile::tempdir().unwrap();
        let run = demo(t.path());
        edit_sealed(&run, from, to);
        refused(&run, &["manifest.json", why]);
    }
}

#[test]
fn a_complete_run_missing_shards_or_its_close_record_is_refused_never_served_smaller() {
    // "shards": 2 -> 0 and 1: the directory holds more shards than the manifest counts.
    for n in ["0", "1"] {
        let t = tempfile::tempdir().unwrap();
        let run = demo(t.path());
        edit_sealed(&run, "\"shards\": 2", &format!("\"shards\": {n}"));
        refused(&run, &["manifest.json"]);
    }
    // A shard directory gone.
    let t = tempfile::tempdir().unwrap();
    let run = demo(t.path());
    std::fs::remove_dir_all(run.join("shard-00001")).unwrap();
    refused(&run, &["shard-00001", "log", "missing"]);
    // A log truncated mid-frame: its close record is gone.
    let t = tempfile::tempdir().unwrap();
    let run = demo(t.path());
    let log = run.join("shard-00000/log");
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(3001).unwrap();
    refused(&run, &["shard-00000/log", "close record"]);
}

#[test]
fn a_complete_run_whose_index_disagrees_with_intact_shards_is_reindexed_with_a_warning() {
    // The index file of another group.
    let t = tempfile::tempdir().unwrap();
    let run = demo(t.path());
    edit_sealed(&run, "\"file\": \"index/g00000.idx\"", "\"file\": \"index/g00001.idx\"");
    reindexed(&run, &["g00001.idx"]);
    // index/ deleted.
    let t = tempfile::tempdir().unwrap();
    let run = demo(t.path());
    std::fs::remove_dir_all(run.join("index")).unwrap();
    reindexed(&run, &["g00000.idx"]);
    // shard_rows that disagree.
    let t = tempfile::tempdir().unwrap();
    let run = demo(t.path());
    let m = run.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    let rows = &mut v["index"]["groups"][0]["shard_rows"][0];
    *rows = (rows.as_u64().unwrap() - 1).into();
    std::fs::write(&m, smdfs::format::manifest::seal(&serde_json::to_vec_pretty(&v).unwrap())).unwrap();
    reindexed(&run, &["shard_rows"]);
}

#[test]
fn rotted_column_bytes_behind_a_damaged_commit_are_damage_to_verify() {
    let t = tempfile::tempdir().unwrap();
    let run = demo(t.path());
    // One bit in the first commit frame's payload: replay stops there, so no valid commit
    // checksums the bytes the close record still serves.
    let log = run.join("shard-00000/log");
    let mut b = std::fs::read(&log).unwrap();
    let frames: Vec<(u64, usize)> = smdfs::format::FrameIter::new(&b).map(|f| (f.offset, f.payload.len())).collect();
    let (off, _) = frames[1];
    b[off as usize + 9] ^= 1;
    std::fs::write(&log, &b).unwrap();
    let col = run.join("shard-00000/c000002.col");
    let mut c = std::fs::read(&col).unwrap();
    c[3] ^= 0x10;
    std::fs::write(&col, &c).unwrap();
    let rep = verify(&run, &mut |_, _| {}).unwrap();
    assert!(!rep.is_sound());
    let text = format!("{:?}", rep.problems);
    assert!(text.contains("close record") && text.contains("no valid commit checksums"), "{text}");
}

#[test]
fn a_field_registered_by_a_rejected_event_does_not_make_a_complete_run_unreadable() {
    let t = tempfile::tempdir().unwrap();
    let smd = smdfs::SmallData::builder(t.path()).servers(1).build().unwrap();
    let mut c = smd.client();
    c.event(1, [("x", smdfs::Value::from(1.0f64))]).unwrap();
    // `y` is new and valid, `x` has the wrong dtype: the event is rejected.
    let bad = c.event(2, [("y", smdfs::Value::from(1u8)), ("x", smdfs::Value::from(1u8))]);
    assert!(bad.is_err());
    c.event(3, [("x", smdfs::Value::from(3.0f64))]).unwrap();
    drop(c);
    smd.done().unwrap();
    let run = Run::open(t.path()).unwrap();
    assert_eq!(run.field("x").unwrap().read_all::<f64>().unwrap(), vec![1.0, 3.0]);
    assert!(verify(t.path(), &mut |_, _| {}).unwrap().is_sound());
}
