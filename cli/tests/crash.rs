//! Kill tests: the demo writer (`smdfs demo`, a real process) is SIGKILLed at a random
//! moment, many times. Each time, every event the reader returns must carry exactly the demo
//! formula's values for its id (no torn or mixed rows), and `smdfs verify` must find the
//! committed data sound (exit 0) while reporting any torn bytes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use smdfs::reader::SplitMix;
use smdfs::{Run, RunState};
use smdfs_tests::check_demo_subset;

const TRIALS: u64 = 30;

#[test]
fn a_writer_killed_at_any_moment_leaves_a_readable_consistent_prefix() {
    let mut rng = SplitMix::new(0x5eed);
    let (mut crashed, mut torn_seen, mut events_seen) = (0, 0u64, 0u64);
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
        "{TRIALS} trials: {crashed} killed mid-run, {events_seen} events checked, {torn_seen} torn bytes reported"
    );
    assert!(crashed >= TRIALS / 2, "most trials should kill the writer mid-run ({crashed}/{TRIALS})");
}
