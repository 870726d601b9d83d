//! Kill tests: the demo writer (`smdfs demo`, a real process) is SIGKILLed mid-run, many
//! times. The kill is placed by progress, not time: each trial picks k at random and kills
//! the writer as soon as its shard logs hold k commits, with k at most half the commits the
//! run makes, so every kill lands mid-run on any machine, fast or slow. Each time, every event
//! the reader returns must carry exactly the demo formula's values for its id (no torn or
//! mixed rows), the k commits seen before the kill must survive it, and `smdfs verify` must
//! find the committed data sound (exit 0) while reporting any torn bytes. Every fifth trial is
//! also read with h5py/numpy through a real mount (skipped with a message without FUSE or the
//! `.venv` Python, a failure under `SMDFS_REQUIRE_TOOLS=1`).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use smdfs::{Run, RunState};
use smdfs_tests::{check_demo_subset, commits_in_logs, machine_has, python, script, wait_until, Need};

/// Mounts the run with `smdfs mount`, checks it with h5py/numpy, unmounts; returns the events
/// the Python check saw.
fn read_through_mount(run: &std::path::Path, scratch: &std::path::Path) -> u64 {
    let mnt = scratch.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let bin = env!("CARGO_BIN_EXE_smdfs");
    let m = Command::new(bin).arg("mount").arg(run).arg(&mnt).output().unwrap();
    assert!(m.status.success(), "mount: {}", String::from_utf8_lossy(&m.stderr));
    let out = Command::new(python()).arg(script("check_demo_subset.py")).arg(&mnt).output();
    let u = Command::new(bin).arg("umount").arg(&mnt).output().unwrap();
    let out = out.unwrap();
    assert!(out.status.success(), "h5py check failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(u.status.success(), "umount: {}", String::from_utf8_lossy(&u.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// SplitMix64: a seeded, reproducible choice of k per trial.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// The demo each trial runs: 400,000 events from 4 clients in batches of 4,096 events make
/// about 100 commits over 3 shards.
const EVENTS: &str = "400000";
/// Kills land after 1..=MAX_K commits: at most half the run, so the writer is always mid-run.
const MAX_K: u64 = 50;

const TRIALS: u64 = 30;

#[test]
fn a_writer_killed_at_any_moment_leaves_a_readable_consistent_prefix() {
    let mut rng = Rng(0x5eed);
    let can_mount = machine_has(&[Need::Fuse, Need::Python]);
    let (mut crashed, mut torn_seen, mut events_seen, mut mounted) = (0, 0u64, 0u64, 0);
    for trial in 0..TRIALS {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let k = 1 + rng.below(MAX_K);
        let mut child = Command::new(env!("CARGO_BIN_EXE_smdfs"))
            .args(["demo", out.to_str().unwrap(), "--events", EVENTS, "--servers", "3", "--clients", "4"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill as soon as the logs hold k commits.
        let seen = wait_until(|| match commits_in_logs(&out) {
            c if c >= k => Ok(c),
            c => match child.try_wait().unwrap() {
                Some(status) => panic!("trial {trial}: the writer ended ({status}) after {c} commits, before {k}"),
                None => Err(format!("trial {trial}: the writer never made {k} commits (made {c})")),
            },
        });
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "trial {trial}: the writer ended before the kill: {status}");
        let run = Run::open(&out).unwrap_or_else(|e| panic!("trial {trial}: cannot open the killed run: {e}"));
        assert_eq!(run.state(), RunState::Crashed, "trial {trial}");
        crashed += 1;
        // Each commit seen before the kill committed at least one event; none may be lost.
        assert!(run.len() >= seen, "trial {trial}: {seen} commits were in the logs, {} events survive", run.len());
        events_seen += check_demo_subset(&run);
        if trial % 5 == 0 && can_mount {
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
    assert_eq!(crashed, TRIALS, "every trial kills the writer mid-run");
}
