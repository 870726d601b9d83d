//! A full disk: a run written into a small real tmpfs until it fills. The writer must fail
//! with an error naming the shard and the file, and everything committed before must stay
//! readable, value by value. Needs root to mount the tmpfs: skipped with a message without
//! it, or failed under `SMDFS_REQUIRE_TOOLS=1`.

use std::path::Path;
use std::process::Command;

use smdfs::{Error, Run, RunState, SmallData, Value};
use smdfs_tests::{machine_has, required, Need, REQUIRE_ENV};

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `at`; the error says why not.
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).output();
        match out {
            Ok(o) if o.status.success() => Ok(Tmpfs(at.into())),
            Ok(o) => {
                Err(format!("mount -t tmpfs failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr).trim()))
            }
            Err(e) => Err(format!("cannot run mount: {e}")),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_the_committed_prefix_stays_readable() {
    if !machine_has(&[Need::Root, Need::Tool("mount"), Need::Tool("umount")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _fs = match Tmpfs::mount(dir.path(), "4m") {
        Ok(fs) => fs,
        Err(why) => {
            assert!(!required(), "{REQUIRE_ENV}=1 and a 4 MiB tmpfs cannot be mounted: {why}");
            eprintln!("SKIP: cannot mount a tmpfs here: {why}");
            return;
        }
    };
    let run = dir.path().join("run");
    let smd = SmallData::builder(&run).servers(2).batch_events(4).build().unwrap();
    let mut c = smd.client();
    let img = vec![7u16; 8 * 1024]; // 16 KiB per event
    let mut err = None;
    let mut sent = 0u64;
    for i in 0..10_000u64 {
        let r = c.event(i, [("x", Value::from(i)), ("img", Value::array(&img, &[8, 1024]))]);
        if let Err(e) = r {
            err = Some(e);
            break;
        }
        sent += 1;
    }
    let e = match err {
        Some(e) => {
            drop(c);
            drop(smd);
            e
        }
        None => {
            drop(c);
            smd.done().expect_err("10,000 events of 16 KiB cannot fit in 4 MiB")
        }
    };
    let msg = e.to_string();
    assert!(matches!(e, Error::ServerFailed { .. }), "{msg}");
    assert!(msg.contains("shard") && msg.contains("No space left"), "{msg}");
    assert!(msg.contains("shard-0000") && (msg.contains(".col") || msg.contains("log")), "names the file: {msg}");
    println!("after {sent} events: {msg}");

    // The writer's lock is an open-file-description lock: a process another test forks at
    // this moment holds a copy of its descriptor until it execs, so the run may read as
    // still being written for that instant.
    let r = smdfs_tests::wait_until(|| {
        let r = Run::open(&run).map_err(|e| e.to_string())?;
        if r.state() == RunState::Crashed {
            Ok(r)
        } else {
            Err(format!("state {:?}, not crashed", r.state()))
        }
    });
    assert!(!r.is_empty() && r.len() <= sent, "{} rows of {sent} sent", r.len());
    let x = r.field("x").unwrap().read_all::<u64>().unwrap();
    let im = r.field("img").unwrap().read_all::<u16>().unwrap();
    let mut ids = vec![0u64; r.len() as usize];
    r.read_ids("", 0, &mut ids).unwrap();
    for (k, &id) in ids.iter().enumerate() {
        assert_eq!(x[k], id, "row {k}");
        assert!(im[k * 8192..(k + 1) * 8192].iter().all(|&v| v == 7));
    }
    let v = smdfs::verify(&run, &mut |_, _| {}).unwrap();
    assert!(v.is_sound(), "{:?}", v.problems);
}
