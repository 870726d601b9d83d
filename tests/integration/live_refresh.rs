//! Live refreshes cost what was added, not the whole run: a long run is written in rounds
//! while a live mount follows it, and the mount's own counters (`smdfs_fuse::stats`) show
//! that its refreshes merged each new row into the index about once and read each byte of the
//! shard logs about once — not every row and every log again at every refresh, which is what
//! reopening the run from scratch does. Nothing is timed.
//! The rows each snapshot serves stay right: the last one equals a fresh open byte for byte.

use std::time::Duration;

use smdfs::SmallData;
use smdfs_fuse::live::Live;
use smdfs_fuse::mount::{mount_live, MountOptions};
use smdfs_fuse::{View, ViewOptions};
use smdfs_tests::{machine_has, wait_until, Need};

const ROUNDS: u64 = 30;
const PER_ROUND: u64 = 20_000;

#[test]
fn refreshes_of_a_long_run_merge_only_the_new_rows_and_read_only_the_new_log_bytes() {
    if !machine_has(&[Need::Fuse]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (run, mnt) = (dir.path().join("run"), dir.path().join("mnt"));
    std::fs::create_dir(&mnt).unwrap();
    let smd = SmallData::builder(&run).servers(2).build().unwrap();
    let mut clients: Vec<_> = (0..2).map(|_| smd.client()).collect();
    let write = |clients: &mut Vec<smdfs::Client>, round: u64| {
        for (k, c) in clients.iter_mut().enumerate() {
            for i in (round * PER_ROUND + k as u64..(round + 1) * PER_ROUND).step_by(2) {
                c.event(i, smdfs::fields! { "x" => i as f64, "tag" => format!("e{i}").as_str() }).unwrap();
            }
            c.flush().unwrap();
        }
    };
    write(&mut clients, 0);
    let live = wait_until(|| match Live::open(&run, &ViewOptions::default()) {
        Ok(l) if !l.current().run().is_empty() => Ok(l),
        _ => Err("the first commits never landed".to_string()),
    });
    let opts = MountOptions { refresh: Duration::from_millis(20), ..Default::default() };
    let m = mount_live(live, &mnt, &opts).unwrap();
    for round in 1..ROUNDS {
        write(&mut clients, round);
        let want = (round + 1) * PER_ROUND;
        wait_until(|| {
            let n = m.live().current().run().len();
            if n == want {
                Ok(())
            } else {
                Err(format!("round {round}: the mount shows {n} of {want} rows"))
            }
        });
    }
    let s = m.stats();
    let total = ROUNDS * PER_ROUND;
    assert!(s.refreshes >= ROUNDS / 2, "{}", s.render());
    // Each refresh merges its new rows and the few old rows they interleave with: about the
    // run once in all. Reopening from scratch would merge every row at every refresh.
    assert!(s.refresh_rows_merged <= 2 * total, "{}", s.render());
    assert!(s.last_refresh_rows_merged * 4 < s.last_refresh_rows, "{}", s.render());
    // Each refresh reads the shard logs from where the previous one's replay ended: about
    // the logs once in all (a torn tail is read again), not every log whole every time.
    let logs: u64 = (0..2)
        .map(|i| std::fs::metadata(run.join(smdfs::format::shard_dir_name(i)).join(smdfs::format::LOG_FILE)))
        .map(|m| m.unwrap().len())
        .sum();
    assert!(s.refresh_log_bytes < 2 * logs, "{} log bytes: {}", logs, s.render());
    assert!(s.last_refresh_log_bytes * 4 < logs, "{} log bytes: {}", logs, s.render());
    let served = std::fs::read(mnt.join("arrays/x.npy")).unwrap();
    let fresh = View::open(&run, &ViewOptions::default()).unwrap();
    let a = fresh.resolve("arrays/x.npy").unwrap();
    let mut want = vec![0u8; a.size as usize];
    fresh.read_into(a.ino, 0, &mut want).unwrap();
    assert!(served == want, "the last snapshot differs from a fresh open");
    drop(clients);
    smd.done().unwrap();
    m.unmount().unwrap();
}
