//! The `smdfs` binary's errors, each case through the real binary: exit status 2 for what the
//! user fixes on the command line (a RUN that does not exist, an OUT that exists without
//! `--force`, a bad `--compression`, a demo into an existing run), the flag to use named in
//! the message, each OS cause printed once, and nothing replaced or left behind.

use std::path::Path;
use std::process::Output;

mod common;

use common::{smdfs, stderr};

/// Asserts exit status `code` and that stderr contains every one of `want`.
fn fails(o: &Output, code: i32, want: &[&str]) -> String {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stdout {} stderr {e}", String::from_utf8_lossy(&o.stdout));
    for w in want {
        assert!(e.contains(w), "want {w:?} in {e:?}");
    }
    e
}

fn demo(dir: &Path) -> String {
    let run = dir.join("run");
    let o = smdfs(&["demo", run.to_str().unwrap(), "--events", "100", "--servers", "1", "--clients", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    run.to_str().unwrap().to_string()
}

#[test]
fn verify_and_info_of_a_missing_path_say_it_does_not_exist_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere");
    let m = missing.to_str().unwrap();
    for cmd in ["verify", "info"] {
        let o = smdfs(&[cmd, m]);
        let e = fails(&o, 2, &[m, "does not exist"]);
        assert!(!e.contains("manifest.json") && !e.contains("damaged"), "{cmd}: {e}");
        assert!(!String::from_utf8_lossy(&o.stdout).contains("damaged"), "{cmd}");
    }
    // Under a regular file: also a usage error, the OS cause not repeated.
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let under = file.join("run");
    for cmd in [vec!["info", under.to_str().unwrap()], vec!["export", under.to_str().unwrap(), "/tmp/never.h5"]] {
        let e = fails(&smdfs(&cmd), 2, &["does not exist", "not a directory"]);
        assert_eq!(e.matches("ot a directory").count(), 1, "{e}");
    }
    let e = fails(&smdfs(&["verify", file.to_str().unwrap()]), 2, &["is not a directory"]);
    assert!(!e.contains("damaged"), "{e}");
}

#[test]
fn an_os_error_is_printed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let run = demo(tmp.path());
    // A regular file where the export's `OUT.partial` directory must go: the OS refuses with
    // EEXIST, carried by an I/O error that also prints its cause.
    let out = tmp.path().join("out.zarr");
    std::fs::write(tmp.path().join("out.zarr.partial"), b"in the way").unwrap();
    let o = smdfs(&["export", &run, out.to_str().unwrap(), "--format", "zarr"]);
    let e = fails(&o, 1, &["out.zarr.partial", "File exists"]);
    assert_eq!(e.matches("File exists").count(), 1, "{e}");
    assert_eq!(e.matches("os error 17").count(), 1, "{e}");
    assert!(!out.exists());
}

#[test]
fn export_refuses_to_replace_an_existing_file_or_tree_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let run = demo(tmp.path());
    let out = tmp.path().join("out.h5");
    std::fs::write(&out, b"precious").unwrap();
    let o = out.to_str().unwrap();
    fails(&smdfs(&["export", &run, o]), 2, &[o, "already exists", "--force"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    let ok = smdfs(&["export", &run, o, "--force"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_ne!(std::fs::read(&out).unwrap(), b"precious");

    let tree = tmp.path().join("out.zarr");
    let t = tree.to_str().unwrap();
    let ok = smdfs(&["export", &run, t, "--format", "zarr"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(tree.join("zarr.json").is_file());
    fails(&smdfs(&["export", &run, t, "--format", "zarr"]), 2, &[t, "already exists", "--force"]);
    let ok = smdfs(&["export", &run, t, "--format", "zarr", "--force"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(!tmp.path().join("out.zarr.partial").exists());
}

#[test]
fn bad_export_options_name_the_flag_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let run = demo(tmp.path());
    let out = tmp.path().join("x.h5");
    let o = out.to_str().unwrap();
    fails(&smdfs(&["export", &run, o, "--compression", "zstd"]), 2, &["--compression", "zstd"]);
    fails(&smdfs(&["export", &run, o, "--format", "zarr", "--compression", "lzf"]), 2, &["--compression", "gzip"]);
    fails(&smdfs(&["export", &run, o, "--format", "zarr", "--chunk-rows", "5"]), 2, &["--chunk-rows"]);
    fails(&smdfs(&["export", &run, o, "--format", "parquet"]), 2, &["--format"]);
    let nowhere = tmp.path().join("no/such/dir/x.h5");
    fails(&smdfs(&["export", &run, nowhere.to_str().unwrap()]), 2, &["no/such/dir", "is not a directory"]);
    assert!(!out.exists());
}

#[test]
fn demo_into_an_existing_run_names_force_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let run = demo(tmp.path());
    fails(
        &smdfs(&["demo", &run, "--events", "10", "--servers", "1", "--clients", "1"]),
        2,
        &[&run, "already holds a run", "--force"],
    );
    let ok = smdfs(&["demo", &run, "--events", "10", "--servers", "1", "--clients", "1", "--force"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
}
