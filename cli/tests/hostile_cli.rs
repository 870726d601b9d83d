//! Hostile input through the binary (issue "hostile input"): summary bytes that crashed
//! `export` are refused by every command, damage is exit 1 from `verify` whenever another
//! command refuses, a sample of the damage family through the CLI and a real mount, private
//! runs (`demo --private`), a closed stdout (`info --json | head`) is not an error, and
//! messages name the file and print each OS cause once.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use smdfs_tests::{machine_has, Need};

mod common;

use common::{smdfs, stderr, Cleanup};

fn demo(dir: &Path, extra: &[&str]) -> PathBuf {
    let run = dir.join("run");
    let mut args = vec!["demo", run.to_str().unwrap(), "--events", "300", "--servers", "2", "--clients", "3"];
    args.extend_from_slice(extra);
    let o = smdfs(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    run
}

/// Replaces the first `from` in the manifest and reseals its checksum.
fn edit_sealed(run: &Path, from: &str, to: &str) {
    let m = run.join("manifest.json");
    let text = std::fs::read_to_string(&m).unwrap();
    assert!(text.contains(from), "{from:?}");
    std::fs::write(&m, smdfs::format::manifest::seal(text.replacen(from, to, 1).as_bytes())).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn summary_bytes_that_crashed_export_are_refused_by_every_command() {
    for bad in ["zz", "a0"] {
        let t = tempfile::tempdir().unwrap();
        let run = demo(t.path(), &[]);
        let text = std::fs::read_to_string(run.join("manifest.json")).unwrap();
        let at = text.find("\"data_hex\": \"").unwrap() + 13;
        let old = text[at..at + 16].to_string();
        edit_sealed(&run, &format!("\"data_hex\": \"{old}\""), &format!("\"data_hex\": \"{bad}\""));
        let out = t.path().join("x.h5");
        let e = smdfs(&["export", s(&run), s(&out)]);
        assert_eq!(e.status.code(), Some(1), "export of data_hex {bad:?}: {}", stderr(&e));
        assert!(stderr(&e).contains("manifest.json") && stderr(&e).contains("n_events"), "{}", stderr(&e));
        assert!(!out.exists(), "no file is written");
        assert_eq!(smdfs(&["info", s(&run)]).status.code(), Some(1));
        let v = smdfs(&["verify", s(&run)]);
        assert_eq!(v.status.code(), Some(1), "{}", String::from_utf8_lossy(&v.stdout));
    }
}

#[test]
fn an_overflowing_shape_is_refused_by_export_as_by_info() {
    let t = tempfile::tempdir().unwrap();
    let run = demo(t.path(), &[]);
    edit_sealed(&run, "\"shape\": [\n          4,\n          8\n        ]", "\"shape\": [65536, 65536, 65536, 65536]");
    let out = t.path().join("x.h5");
    for args in [vec!["export", s(&run), s(&out)], vec!["info", s(&run)], vec!["verify", s(&run)]] {
        let o = smdfs(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
    }
    assert!(!out.exists());
}

/// The damage family's sample through the binary and a mount: every damaged copy is exit 1
/// from verify; info/export/mount refuse it or serve the demo's values.
#[test]
fn a_sample_of_the_damage_family_through_the_cli_and_a_mount() {
    let mount_ok = machine_has(&[Need::Fuse]);
    let t = tempfile::tempdir().unwrap();
    let base = t.path().canonicalize().unwrap();
    let pristine = demo(&base, &[]);
    let cases: Vec<(&str, Damage)> = vec![
        (
            "manifest bit flip",
            Box::new(|r: &Path| {
                let m = r.join("manifest.json");
                let mut b = std::fs::read(&m).unwrap();
                b[100] ^= 4;
                std::fs::write(&m, b).unwrap();
            }),
        ),
        ("index deleted", Box::new(|r: &Path| std::fs::remove_dir_all(r.join("index")).unwrap())),
        (
            "index truncated",
            Box::new(|r: &Path| {
                let f = std::fs::OpenOptions::new().write(true).open(r.join("index/g00000.idx")).unwrap();
                f.set_len(32 + 8 * 7 + 1).unwrap();
            }),
        ),
        (
            "column truncated by one row",
            Box::new(|r: &Path| {
                let p = r.join("shard-00000/c000002.col");
                let n = std::fs::metadata(&p).unwrap().len();
                std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(n - 8).unwrap();
            }),
        ),
        ("shards 2 -> 1, resealed", Box::new(|r: &Path| edit_sealed(r, "\"shards\": 2", "\"shards\": 1"))),
        (
            "log truncated mid-frame",
            Box::new(|r: &Path| {
                let f = std::fs::OpenOptions::new().write(true).open(r.join("shard-00001/log")).unwrap();
                f.set_len(3001).unwrap();
            }),
        ),
    ];
    for (k, (name, damage)) in cases.iter().enumerate() {
        let run = base.join(format!("case{k}"));
        std::fs::create_dir(&run).unwrap();
        for e in walk(&pristine) {
            let to = run.join(e.strip_prefix(&pristine).unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&e, &to).unwrap();
        }
        damage(&run);
        let v = smdfs(&["verify", s(&run)]);
        assert_eq!(v.status.code(), Some(1), "{name}: verify: {}", String::from_utf8_lossy(&v.stdout));
        let info = smdfs(&["info", "--json", s(&run)]);
        let out = base.join(format!("case{k}.h5"));
        let export = smdfs(&["export", s(&run), s(&out)]);
        assert_eq!(info.status.success(), export.status.success(), "{name}: info and export agree");
        if info.status.success() {
            let j: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
            assert_eq!(j["events"], 300, "{name}: never served smaller");
            assert!(!j["warnings"].as_array().unwrap().is_empty(), "{name}: the reader says what it worked around");
            assert!(stderr(&export).contains("smdfs: warning: "), "{name}: export warns: {}", stderr(&export));
            let text = smdfs(&["info", s(&run)]);
            assert!(String::from_utf8_lossy(&text.stdout).contains("warning  "), "{name}: info shows the warning");
        } else {
            assert_eq!(info.status.code(), Some(1), "{name}: {}", stderr(&info));
        }
        if mount_ok {
            let mnt = base.join(format!("mnt{k}"));
            std::fs::create_dir(&mnt).unwrap();
            let m = smdfs(&["mount", s(&run), s(&mnt)]);
            let _guard = Cleanup(mnt.clone());
            assert_eq!(m.status.success(), info.status.success(), "{name}: mount agrees with info: {}", stderr(&m));
            if m.status.success() {
                assert!(stderr(&m).contains("smdfs: warning: "), "{name}: mount warns: {}", stderr(&m));
                let npy = std::fs::read(mnt.join("arrays/energy.npy"));
                let u = smdfs(&["umount", s(&mnt)]);
                assert!(u.status.success());
                let npy = npy.unwrap();
                let vals: Vec<f64> =
                    npy[128..].chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
                assert_eq!(vals, (0..300).map(|i| i as f64 * 0.5).collect::<Vec<_>>(), "{name}: energy");
            }
        }
    }
}

/// One way to damage a copied run.
type Damage = Box<dyn Fn(&Path)>;

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v
}

#[test]
fn demo_private_makes_the_run_owner_only() {
    let t = tempfile::tempdir().unwrap();
    let run = demo(t.path(), &["--private"]);
    assert_eq!(std::fs::metadata(&run).unwrap().permissions().mode() & 0o777, 0o700);
    let open = t.path().join("open");
    std::fs::create_dir(&open).unwrap();
    let o = smdfs(&["demo", s(&open.join("run")), "--events", "10"]);
    assert!(o.status.success());
    assert_ne!(std::fs::metadata(open.join("run")).unwrap().permissions().mode() & 0o077, 0, "default: umask");
    // A run that --private is refused on (no --force) keeps its mode.
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = smdfs(&["demo", s(&run), "--events", "10", "--private"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&run).unwrap().permissions().mode() & 0o777, 0o755);
    // An existing directory it writes is made private too.
    let o = smdfs(&["demo", s(&run), "--events", "10", "--force", "--private"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&run).unwrap().permissions().mode() & 0o777, 0o700);
}

#[test]
fn a_closed_stdout_ends_quietly_with_exit_0() {
    let t = tempfile::tempdir().unwrap();
    let run = demo(t.path(), &[]);
    for args in [vec!["info", "--json"], vec!["info"], vec!["verify", "--json"], vec!["verify"]] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_smdfs"))
            .args(&args)
            .arg(&run)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the first byte (like `head -c 0`).
        drop(c.stdout.take());
        let mut err = String::new();
        c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let st = c.wait().unwrap();
        assert_eq!(st.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} prints {err:?}");
    }
    // And through a shell pipe, as users type it, its reader already gone when it writes.
    let status = t.path().join("status");
    let sh = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(sleep 0.3; {} info --json {}; echo \"exit=$?\" > {}) | true",
            env!("CARGO_BIN_EXE_smdfs"),
            s(&run),
            s(&status)
        ))
        .output()
        .unwrap();
    assert!(sh.status.success() && sh.stderr.is_empty(), "{}", String::from_utf8_lossy(&sh.stderr));
    assert_eq!(std::fs::read_to_string(&status).unwrap().trim(), "exit=0");
}

#[test]
fn short_files_are_named_with_what_was_expected_and_os_causes_print_once() {
    let t = tempfile::tempdir().unwrap();
    let run = demo(t.path(), &[]);
    let log = run.join("shard-00000/log");
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(5).unwrap();
    for cmd in ["info", "export"] {
        let mut args = vec![cmd, s(&run)];
        let out = t.path().join("x.h5");
        if cmd == "export" {
            args.push(s(&out));
        }
        let o = smdfs(&args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{e}");
        assert!(!e.contains("failed to fill whole buffer"), "{e}");
        assert!(e.contains("shard-00000/log") && e.contains("16-byte header"), "{e}");
    }
    let v = smdfs(&["verify", s(&run)]);
    let out = String::from_utf8_lossy(&v.stdout);
    assert!(!out.contains("failed to fill whole buffer") && out.contains("shard-00000/log"), "{out}");
    // One OS cause, printed once.
    let t = tempfile::tempdir().unwrap();
    let run = demo(t.path(), &[]);
    let m = run.join("manifest.json");
    std::fs::remove_file(&m).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", &m).unwrap();
    let o = smdfs(&["info", s(&run)]);
    let e = stderr(&o);
    assert_eq!(e.matches("symbolic link").count(), 1, "{e}");
}

/// A byte flipped in the second 1 MiB chunk of a stored index (FORMAT.md revision 5): the
/// mount opens (the chunk is checked when first served, not at open) and serves the demo's
/// values from the shards, and its `--stats` file then carries a warning naming the file and
/// the chunk; `verify` is exit 1 naming them too.
#[test]
fn a_damaged_index_chunk_is_served_from_the_shards_through_a_mount_and_verify_names_it() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().canonicalize().unwrap();
    let run = base.join("run");
    let n = 200_000u64;
    let o = smdfs(&["demo", s(&run), "--events", &n.to_string(), "--servers", "2", "--clients", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let idx = run.join("index/g00000.idx");
    let mut b = std::fs::read(&idx).unwrap();
    assert!(b.len() > 1 << 20, "the index spans two chunks");
    let at = (1 << 20) + 8 * 1000 + 3;
    b[at] ^= 0x40;
    std::fs::write(&idx, b).unwrap();
    let v = smdfs(&["verify", s(&run)]);
    let out = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(1), "verify: {out}");
    assert!(out.contains("g00000.idx") && out.contains("chunk 1"), "verify names the file and chunk: {out}");
    if !machine_has(&[Need::Fuse]) {
        return;
    }
    let mnt = base.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let stats = base.join("stats");
    let m = smdfs(&["mount", s(&run), s(&mnt), "--stats", s(&stats)]);
    let _guard = Cleanup(mnt.clone());
    assert!(m.status.success(), "mount: {}", stderr(&m));
    let npy = std::fs::read(mnt.join("arrays/energy.npy"));
    // The detached daemon found the damage on the first read: its stats file says so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let warned = loop {
        let text = std::fs::read_to_string(&stats).unwrap_or_default();
        if let Some(w) = text.lines().find(|l| l.starts_with("warning ")) {
            break w.to_string();
        }
        if std::time::Instant::now() > deadline {
            break String::new();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let u = smdfs(&["umount", s(&mnt)]);
    assert!(u.status.success());
    assert!(warned.contains("g00000.idx") && warned.contains("chunk 1"), "stats file warning: {warned:?}");
    let npy = npy.unwrap();
    let vals: Vec<f64> = npy[128..].chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(vals.len() as u64, n);
    assert!(vals.iter().enumerate().all(|(i, &e)| e == i as f64 * 0.5), "energy through the mount is the formula's");
}
