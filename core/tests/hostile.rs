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
