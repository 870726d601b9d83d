//! Kill tests: the demo writer (`smdfs demo`, a real process) is SIGKILLed at a random
//! moment, many times. Each time, every event the reader returns must carry exactly the demo
//! formula's values for its id (no torn or mixed rows), and `smdfs verify` must find the
//! committed data sound (exit 0) while reporting any torn bytes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use smdfs::read::shuffle::SplitMix;
use smdfs::{Run, RunState};
use smdfs_tests::check_demo_subset;

/// Mounts the run with `smdfs mount`, checks it with h5py/numpy, unmounts; returns the events
/// the Python check saw.
fn read_through_mount(run: &std::path::Path, scratch: &std::path::Path) -> u64 {
    let mnt = scratch.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let bin = env!("CARGO_BIN_EXE_smdfs");
    let m = Command::new(bin).arg("mount").arg(run).arg(&mnt).output().unwrap();
    assert!(m.status.success(), "mount: {}", String::from_utf8_lossy(&m.stderr));
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var_os("SMDFS_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo.join(".venv").join("bin").join("python"));
    let out =
        Command::new(python).arg(repo.join("tests").join("python").join("check_demo_subset.py")).arg(&mnt).output();
    let u = Command::new(bin).arg("umount").arg(&mnt).output().unwrap();
    let out = out.unwrap();
    assert!(out.status.success(), "h5py check failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(u.status.success(), "umount: {}", String::from_utf8_lossy(&u.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

const TRIALS: u64 = 30;

#[test]
fn a_writer_killed_at_any_moment_leaves_a_readable_consistent_prefix() {
    let mut rng = SplitMix::new(0x5eed);
    let (mut crashed, mut torn_seen, mut events_seen, mut mounted) = (0, 0u64, 0u64, 0);
    for trial in 0..TRIALS {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut child = Command::new(env!("CARGO_BIN_EXE_smdfs"))
            .args(["demo", out.to_str().unwrap(), "--events", "400000", "--servers", "3", "--clients", "4"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill only once the run exists (before that there is nothing to keep).
        let t = Instant::now();
        while !out.join("manifest.json").exists() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(rng.below(400_000)));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().unwrap();
        let run = Run::open(&out).unwrap_or_else(|e| panic!("trial {trial}: cannot open the killed run: {e}"));
        if status.success() {
            assert_eq!(run.state(), RunState::Complete);
        } else {
            assert_eq!(run.state(), RunState::Crashed, "trial {trial}");
            crashed += 1;
        }
        events_seen += check_demo_subset(&run);
        if trial % 5 == 0 {
            // h5py and numpy through a real mount see the same consistent events.
            assert_eq!(read_through_mount(&out, dir.path()), run.len(), "trial {trial}");
            mounted += 1;
        }
        let v = Command::new(env!("CARGO_BIN_EXE_smdfs"))
            .args(["verify", out.to_str().unwrap(), "--json"])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&v.stdout)
            .unwrap_or_else(|e| panic!("trial {trial}: verify output: {e}: {}", String::from_utf8_lossy(&v.stderr)));
        assert_eq!(v.status.code(), Some(0), "trial {trial}: verify found damage: {report}");
        torn_seen += report["torn_bytes"].as_u64().unwrap();
        assert_eq!(report["events"].as_u64(), Some(run.len()));
    }
    println!(
        "{TRIALS} trials: {crashed} killed mid-run, {events_seen} events checked, {mounted} read with h5py \
         through a mount, {torn_seen} torn bytes reported"
    );
    assert!(crashed >= TRIALS / 2, "most trials should kill the writer mid-run ({crashed}/{TRIALS})");
}
