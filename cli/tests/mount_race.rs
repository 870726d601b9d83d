//! Mount ownership (issue "hostile input"): a daemon unmounts only the mount it made. The
//! race: mount R on M; the daemon is stopped (SIGSTOP); `smdfs umount M`; mount R on M again;
//! the old daemon resumes and ends — and must leave the new mount alone. Reproduced exactly,
//! then as many quick mount/umount cycles as `SMDFS_MOUNT_CYCLES` says (default 1000), each
//! new mount made while the previous daemon may still be shutting down, each checked to
//! still be mounted (its `umount` succeeds) at the end of its cycle.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use smdfs_tests::{machine_has, Need};

mod common;

use common::{mounted, server_pids, smdfs, stderr, Cleanup};

fn alive(pid: i32) -> bool {
    // A zombie is gone for our purpose (its mount handling is over).
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

fn setup() -> (tempfile::TempDir, String, PathBuf) {
    common::demo_and_mountpoint("100")
}

#[test]
fn a_stopped_daemon_that_resumes_leaves_the_newer_mount_alone() {
    if !machine_has(&[Need::Fuse]) {
        return;
    }
    let (_dir, run, mnt) = setup();
    let _c = Cleanup(mnt.clone());
    let m = mnt.to_str().unwrap();
    let o = smdfs(&["mount", &run, m]);
    assert!(o.status.success(), "{}", stderr(&o));
    let old = server_pids(&mnt);
    assert_eq!(old.len(), 1, "one daemon serves the first mount");
    let old = old[0];
    // SAFETY: plain signals to the daemon this test started.
    assert_eq!(unsafe { libc::kill(old, libc::SIGSTOP) }, 0);
    let u = smdfs(&["umount", m]);
    assert!(u.status.success(), "umount while the daemon is stopped: {}", stderr(&u));
    let o = smdfs(&["mount", &run, m]);
    assert!(o.status.success(), "mount again: {}", stderr(&o));
    let new: Vec<i32> = server_pids(&mnt).into_iter().filter(|&p| p != old).collect();
    assert_eq!(new.len(), 1);
    assert_eq!(unsafe { libc::kill(old, libc::SIGCONT) }, 0);
    let t = Instant::now();
    while alive(old) {
        assert!(t.elapsed() < Duration::from_secs(30), "the old daemon never exits");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The issue saw the new mount vanish within a second of SIGCONT.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(mounted(&mnt), "the old daemon took the new mount down");
    assert!(alive(new[0]), "the new daemon still serves");
    assert_eq!(std::fs::read(mnt.join("arrays/energy.npy")).unwrap().len(), 128 + 8 * 100);
    let u = smdfs(&["umount", m]);
    assert!(u.status.success(), "{}", stderr(&u));
}

#[test]
fn quick_mount_umount_cycles_never_lose_a_mount() {
    if !machine_has(&[Need::Fuse]) {
        return;
    }
    let cycles: u32 = std::env::var("SMDFS_MOUNT_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let (_dir, run, mnt) = setup();
    let _c = Cleanup(mnt.clone());
    let m = mnt.to_str().unwrap();
    let t = Instant::now();
    let mut stopped: Vec<i32> = Vec::new();
    for k in 0..cycles {
        let o = smdfs(&["mount", &run, m]);
        assert!(o.status.success(), "cycle {k}: mount: {}", stderr(&o));
        // The previous cycle's daemon, stopped before its umount, resumes now that the path
        // holds a newer mount; its end must leave this mount alone.
        for p in stopped.drain(..) {
            // SAFETY: plain signals to daemons this test started.
            unsafe { libc::kill(p, libc::SIGCONT) };
            let t = Instant::now();
            while alive(p) {
                assert!(t.elapsed() < Duration::from_secs(30), "cycle {k}: a resumed daemon never exits");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if k % 10 == 0 {
            stopped = server_pids(&mnt);
            for &p in &stopped {
                unsafe { libc::kill(p, libc::SIGSTOP) };
            }
        }
        let u = smdfs(&["umount", m]);
        assert!(u.status.success(), "cycle {k}: the mount vanished before its umount: {}", stderr(&u));
    }
    for p in stopped {
        unsafe { libc::kill(p, libc::SIGCONT) };
    }
    eprintln!("{cycles} mount/umount cycles in {:.1} s", t.elapsed().as_secs_f64());
}
