//! Power loss and failing writes, emulated under the shard writer by its fault-injection I/O
//! layer (`smdfs::shard::io::Faults`): a small run with `sync_commits` on is written once per
//! N with the power cut at the N-th sync (only what completed syncs covered survives) and once
//! per N with the N-th write failing. Every trial must end in a clear error (no panic), and
//! the run left behind must read as a committed prefix of what was written, value by value.

use std::path::Path;
use std::sync::Arc;

use smdfs::shard::io::Faults;
use smdfs::{Run, SmallData, Value};

const EVENTS: u64 = 40;
const BATCH: usize = 8;

fn image(i: u64) -> [u16; 6] {
    std::array::from_fn(|k| (i * 6 + k as u64) as u16)
}

/// Writes the run under `faults`: events 0..EVENTS, one client, one server, `BATCH` events
/// per batch. Returns the first error (the run stops at it).
fn write_run(dir: &Path, faults: Arc<Faults>) -> smdfs::Result<()> {
    let smd =
        SmallData::builder(dir).servers(1).batch_events(BATCH).sync_commits(true).fault_injection(faults).build()?;
    let mut c = smd.client();
    for i in 0..EVENTS {
        let img = image(i);
        let tag = format!("evt{i}");
        let mut f = vec![
            ("energy", Value::from(i as f64 * 0.5)),
            ("det/image", Value::array(&img, &[2, 3])),
            ("tag", Value::bytes(tag.as_bytes())),
        ];
        if i.is_multiple_of(2) {
            f.push(("maybe", Value::from(i as f32)));
        }
        c.event(1000 + i, &f)?;
    }
    c.finish()?;
    smd.done().map(|_| ())
}

/// The run at `dir` must hold events 0..k for some k that ends a batch (or all events), each
/// with the values written. Returns k.
fn check_prefix(dir: &Path, what: &str) -> u64 {
    let run = Run::open(dir).unwrap_or_else(|e| panic!("{what}: the run must open: {e}"));
    let k = run.len();
    assert!(k == EVENTS || k.is_multiple_of(BATCH as u64), "{what}: {k} events is not a committed prefix");
    let mut ids = vec![0u64; k as usize];
    run.read_ids("", 0, &mut ids).unwrap();
    assert_eq!(ids, (0..k).map(|i| 1000 + i).collect::<Vec<_>>(), "{what}: ids");
    if k == 0 {
        return 0;
    }
    let energy = run.field("energy").unwrap().read_all::<f64>().unwrap();
    assert_eq!(energy, (0..k).map(|i| i as f64 * 0.5).collect::<Vec<_>>(), "{what}: energy");
    let img = run.field("det/image").unwrap().read_all::<u16>().unwrap();
    assert_eq!(img, (0..k).flat_map(image).collect::<Vec<_>>(), "{what}: det/image");
    let tag = run.field("tag").unwrap();
    let maybe = run.field("maybe").unwrap().read_all::<f32>().unwrap();
    for i in 0..k {
        assert_eq!(tag.ragged_row(i).unwrap(), format!("evt{i}").as_bytes(), "{what}: tag of {i}");
        if i.is_multiple_of(2) {
            assert_eq!(maybe[i as usize], i as f32, "{what}: maybe of {i}");
        } else {
            assert!(maybe[i as usize].is_nan(), "{what}: maybe of {i} must be the fill");
        }
    }
    k
}

#[test]
fn power_loss_at_every_sync_leaves_a_committed_prefix() {
    let t = tempfile::tempdir().unwrap();
    let count = Faults::count();
    write_run(&t.path().join("clean"), Arc::clone(&count)).expect("a run without faults completes");
    assert_eq!(check_prefix(&t.path().join("clean"), "clean run"), EVENTS);
    let syncs = count.syncs();
    assert!(syncs > 10, "a synced run of {EVENTS} events syncs more than {syncs} times");
    // The committer groups batches as timing allows, so a run's sync count varies: cut the
    // power at sync 1, 2, … until a run completes before its N-th sync.
    let mut seen = std::collections::BTreeSet::new();
    for n in 1.. {
        assert!(n < 1000, "runs keep syncing past 1000 syncs");
        let dir = t.path().join(format!("p{n}"));
        let faults = Faults::power_loss_at_sync(n);
        let r = write_run(&dir, Arc::clone(&faults));
        if !faults.powered_off() {
            r.unwrap_or_else(|e| panic!("a run that never lost power must complete: {e}"));
            assert_eq!(check_prefix(&dir, &format!("run with fewer than {n} syncs")), EVENTS);
            break;
        }
        let e = r.expect_err("writing on after a power loss must fail");
        assert!(e.to_string().contains("power lost"), "power loss at sync {n}: unclear error: {e}");
        let image = t.path().join(format!("i{n}"));
        faults.power_loss_image(&dir, &image).unwrap();
        seen.insert(check_prefix(&image, &format!("power loss at sync {n}")));
    }
    // The trials cut the run from before its first commit to after its last. (Which batch
    // boundaries in between appear depends on how the committer grouped batches.)
    assert!(seen.contains(&0) && seen.contains(&EVENTS), "committed prefixes seen over all trials: {seen:?}");
}

#[test]
fn a_failing_write_stops_the_run_with_a_clear_error_and_keeps_the_committed_prefix() {
    let t = tempfile::tempdir().unwrap();
    let count = Faults::count();
    write_run(&t.path().join("clean"), Arc::clone(&count)).unwrap();
    let writes = count.writes();
    assert!(writes > 20, "{writes} writes");
    for n in 1..=writes {
        let dir = t.path().join(format!("w{n}"));
        let r = write_run(&dir, Faults::fail_write(n));
        let e = r.expect_err("a failed write must be reported");
        assert!(e.to_string().contains(&format!("injected failure of write #{n}")), "write {n}: unclear error: {e}");
        check_prefix(&dir, &format!("write {n} of {writes} failed"));
    }
}
