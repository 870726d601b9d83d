//! Helpers shared by the CLI's end-to-end tests: run the `smdfs` binary, read its stderr, find
//! a mount and the daemons serving it, a demo run beside an empty mount point, and a guard that
//! leaves no mount behind. Each test file uses the part it needs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `smdfs` binary built for these tests with `args`.
pub(crate) fn smdfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smdfs")).args(args).output().expect("run smdfs")
}

/// The process's stderr as text.
pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether something is mounted at `path` (absolute, without escapes).
pub(crate) fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

/// Pids of the `smdfs mount … <mnt>` processes alive now.
pub(crate) fn server_pids(mnt: &Path) -> Vec<i32> {
    let want = mnt.to_str().unwrap().as_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| {
            let pid: i32 = p.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(p.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
            let ours = args.first()?.ends_with(b"smdfs") && args.contains(&&b"mount"[..]) && args.contains(&want);
            ours.then_some(pid)
        })
        .collect()
}

/// A temporary directory with a demo run `run/` of `events` events (written by the binary, 2
/// servers, 3 clients) and an empty `mnt/`; returns the directory, the run's path and `mnt`.
pub(crate) fn demo_and_mountpoint(events: &str) -> (tempfile::TempDir, String, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let run = base.join("run");
    let d = smdfs(&["demo", run.to_str().unwrap(), "--events", events, "--servers", "2", "--clients", "3"]);
    assert!(d.status.success(), "{}", stderr(&d));
    let mnt = base.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    (dir, run.to_str().unwrap().to_string(), mnt)
}

/// On drop, resumes any stopped daemon of the mount point and unmounts (lazily) whatever a
/// test left mounted there.
pub(crate) struct Cleanup(pub(crate) PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in server_pids(&self.0) {
            // SAFETY: plain signal to a process this test started.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
        while mounted(&self.0) {
            if !smdfs(&["umount", "--lazy", self.0.to_str().unwrap()]).status.success() {
                break;
            }
        }
    }
}
