//! `smdfs mount` / `smdfs umount` end to end through the binary: the daemon returns once the
//! mount answers and exits after `umount`; `--foreground` serves until SIGTERM and unmounts;
//! failures exit 1 with the reason, usage errors 2. Where FUSE or `h5ls` is missing these
//! tests skip with a message, or fail under `SMDFS_REQUIRE_TOOLS=1`.

use std::path::Path;
use std::process::Command;

use smdfs_tests::{fuse_available, machine_has, Need};

mod common;

use common::{demo_and_mountpoint as setup, mounted, server_pids, smdfs, stderr, Cleanup};

fn server_alive(mnt: &Path) -> bool {
    !server_pids(mnt).is_empty()
}

/// Waits until `cond` holds; fails naming `what` if it never does.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    smdfs_tests::wait_until(|| if cond() { Ok(()) } else { Err(format!("waited in vain for {what}")) });
}

#[test]
fn mount_returns_once_the_mount_is_ready_and_umount_ends_the_daemon() {
    if !machine_has(&[Need::Fuse, Need::Tool("h5ls")]) {
        return;
    }
    let (_dir, run, mnt) = setup("1000");
    let _c = Cleanup(mnt.clone());
    let m = mnt.to_str().unwrap();
    let o = smdfs(&["mount", &run, m]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Ready means usable right away, with no polling.
    assert!(mounted(&mnt));
    let h5ls = Command::new("h5ls").arg("-r").arg(mnt.join("run.h5")).output().unwrap();
    assert!(h5ls.status.success() && String::from_utf8_lossy(&h5ls.stdout).contains("/det/image"));
    let energy = std::fs::read(mnt.join("arrays/energy.npy")).unwrap();
    assert_eq!(energy.len(), 128 + 8 * 1000);
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info.lines().find(|l| l.split(' ').nth(4) == Some(m)).unwrap();
    assert!(line.contains(" - fuse.smdfs smdfs ro,") && line.contains("max_read=1048576"), "{line}");

    let again = smdfs(&["mount", &run, m]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("is busy"), "{}", stderr(&again));

    let u = smdfs(&["umount", m]);
    assert!(u.status.success(), "{}", stderr(&u));
    assert!(!mounted(&mnt));
    wait_for("the mount daemon to exit", || !server_alive(&mnt));
    let u = smdfs(&["umount", m]);
    assert_eq!(u.status.code(), Some(1));
    assert!(stderr(&u).contains("is not mounted"), "{}", stderr(&u));
}

#[test]
fn mount_failures_exit_1_with_the_reason_and_usage_errors_exit_2() {
    if !fuse_available() {
        return;
    }
    let (dir, run, mnt) = setup("10");
    let _c = Cleanup(mnt.clone());
    let m = mnt.to_str().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let cases = [
        (smdfs(&["mount", empty.to_str().unwrap(), m]), "is not an smdfs run"),
        (smdfs(&["mount", &run, dir.path().join("nowhere").to_str().unwrap()]), "does not exist"),
        (smdfs(&["mount", &run, &run]), "is not empty"),
        (smdfs(&["mount", &run, &format!("{run}/manifest.json")]), "is not a directory"),
        (smdfs(&["umount", m]), "is not mounted"),
    ];
    for (o, why) in cases {
        assert_eq!(o.status.code(), Some(1), "{why}: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "want {why:?} in {}", stderr(&o));
    }
    assert!(!mounted(&mnt));
    assert_eq!(smdfs(&["mount", &run]).status.code(), Some(2));
    assert_eq!(smdfs(&["umount"]).status.code(), Some(2));
}

#[test]
fn drop_behind_always_serves_the_same_bytes_and_a_bad_value_is_a_usage_error() {
    if !fuse_available() {
        return;
    }
    let (dir, run, mnt) = setup("3000");
    let plain = dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let (_c, _p) = (Cleanup(mnt.clone()), Cleanup(plain.clone()));
    let bad = smdfs(&["mount", "--drop-behind", "sometimes", &run, mnt.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("sometimes"), "{}", stderr(&bad));
    let o = smdfs(&["mount", "--drop-behind", "always", &run, mnt.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = smdfs(&["mount", "--drop-behind", "never", &run, plain.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["run.h5", "arrays/energy.npy", "arrays/det/image.npy", "arrays/tag.npy"] {
        // Twice: the second read of the dropping mount meets shard pages it dropped.
        for _ in 0..2 {
            let (a, b) = (std::fs::read(mnt.join(f)).unwrap(), std::fs::read(plain.join(f)).unwrap());
            assert!(a.len() > 1000 && a == b, "{f} differs between --drop-behind always and never");
        }
    }
    for m in [&mnt, &plain] {
        assert!(smdfs(&["umount", m.to_str().unwrap()]).status.success());
    }
}

#[test]
fn foreground_mount_serves_until_sigterm_then_unmounts() {
    if !fuse_available() {
        return;
    }
    let (_dir, run, mnt) = setup("100");
    let _c = Cleanup(mnt.clone());
    let mut child = Command::new(env!("CARGO_BIN_EXE_smdfs"))
        .args(["mount", "--foreground", "--name", "data.h5", &run, mnt.to_str().unwrap()])
        .spawn()
        .unwrap();
    wait_for("the foreground mount", || mounted(&mnt));
    assert!(std::fs::metadata(mnt.join("data.h5")).unwrap().len() > 0);
    assert!(!mnt.join("run.h5").exists());
    assert_eq!(child.try_wait().unwrap(), None, "a foreground mount stays attached");
    // SAFETY: sending a signal to our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!mounted(&mnt));
}

#[test]
fn umount_of_a_busy_mount_fails_and_lazy_umount_keeps_open_files_readable() {
    if !fuse_available() {
        return;
    }
    let (_dir, run, mnt) = setup("1000");
    let _c = Cleanup(mnt.clone());
    let m = mnt.to_str().unwrap();
    assert!(smdfs(&["mount", &run, m]).status.success());
    let path = mnt.join("arrays/timestamp.npy");
    let whole = std::fs::read(&path).unwrap();
    let open = std::fs::File::open(&path).unwrap();
    let u = smdfs(&["umount", m]);
    assert_eq!(u.status.code(), Some(1));
    assert!(stderr(&u).contains("busy"), "{}", stderr(&u));
    assert!(mounted(&mnt));
    let u = smdfs(&["umount", "--lazy", m]);
    assert!(u.status.success(), "{}", stderr(&u));
    assert!(!mounted(&mnt));
    use std::os::unix::fs::FileExt;
    let mut again = vec![0u8; whole.len()];
    open.read_exact_at(&mut again, 0).unwrap();
    assert!(again == whole);
    drop(open);
    wait_for("the mount daemon to exit", || !server_alive(&mnt));
}

#[test]
fn a_killed_server_leaves_a_dead_mount_that_mount_reports_and_umount_removes() {
    if !fuse_available() {
        return;
    }
    let (_dir, run, mnt) = setup("100");
    let _c = Cleanup(mnt.clone());
    let m = mnt.to_str().unwrap();
    assert!(smdfs(&["mount", &run, m]).status.success());
    let pid = *server_pids(&mnt).first().expect("the mount daemon is running");
    // SAFETY: signalling the daemon this test started, by its pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_for("the killed daemon to go", || !server_alive(&mnt));
    let e = std::fs::read_dir(&mnt).unwrap_err();
    assert!(matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED)), "{e}");
    let again = smdfs(&["mount", &run, m]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("dead FUSE mount"), "{}", stderr(&again));
    let u = smdfs(&["umount", m]);
    assert!(u.status.success(), "{}", stderr(&u));
    assert!(!mounted(&mnt));
    let o = smdfs(&["mount", &run, m]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(smdfs(&["umount", m]).status.success());
    wait_for("the second daemon to exit", || !server_alive(&mnt));
}
