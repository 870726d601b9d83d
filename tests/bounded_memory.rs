//! 10,000,000 scalar events through the threads-mode writer with bounded memory, asserted
//! from this process's own resident set (this test is its own binary, so nothing else runs
//! in the process).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use smdfs::{fields, Run, SmallData};
use smdfs_tests::{peak_rss_kib, rss_anon_kib};

#[test]
fn ten_million_scalar_events_write_with_bounded_memory() {
    let n: u64 = 10_000_000;
    let dir = tempfile::tempdir().unwrap();
    let before = rss_anon_kib();
    let peak_anon = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let report = std::thread::scope(|s| {
        // Anonymous memory is what the writer allocates; file pages of mapped columns are
        // page cache the kernel may drop, so they are sampled apart from it.
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                peak_anon.fetch_max(rss_anon_kib(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        let smd = SmallData::builder(dir.path()).servers(2).build().unwrap();
        std::thread::scope(|w| {
            for k in 0..4u64 {
                let mut c = smd.client();
                w.spawn(move || {
                    let mut i = k;
                    while i < n {
                        c.event(i, fields! { "x" => i as f64 }).unwrap();
                        i += 4;
                    }
                });
            }
        });
        let write_peak = peak_anon.load(Ordering::Relaxed);
        let r = smd.done().unwrap();
        stop.store(true, Ordering::Relaxed);
        (r, write_peak)
    });
    let (report, write_peak) = report;
    assert_eq!(report.events, n);
    let data_mib = n * 16 / 1024 / 1024;
    let write_growth_mib = write_peak.saturating_sub(before) / 1024;
    let done_growth_mib = peak_anon.load(Ordering::Relaxed).saturating_sub(before) / 1024;
    println!(
        "10M events ({data_mib} MiB of columns): anon growth while writing {write_growth_mib} MiB, \
         through done() {done_growth_mib} MiB, VmHWM {} MiB",
        peak_rss_kib() / 1024
    );
    // Writing holds at most clients x batch + servers x in-flight batches: a few MiB here,
    // never the run. done() streams the merged index to its file: memory per sorted
    // stretch (client batch), not per event.
    assert!(write_growth_mib < 64, "writing grew anonymous memory by {write_growth_mib} MiB");
    assert!(done_growth_mib < 64, "done() grew anonymous memory by {done_growth_mib} MiB");

    let run = Run::open(dir.path()).unwrap();
    assert_eq!(run.len(), n);
    let x = run.field("x").unwrap();
    let mut buf = vec![0u8; 8 * 1_000_000];
    for start in (0..n).step_by(1_000_000) {
        x.read_rows(start, &mut buf).unwrap();
        for (k, v) in buf.chunks_exact(8).enumerate() {
            assert_eq!(f64::from_le_bytes(v.try_into().unwrap()), (start + k as u64) as f64);
        }
    }
}
