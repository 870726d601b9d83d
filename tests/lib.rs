//! Shared helpers for the integration tests: a checker that verifies a run against the demo
//! formula (docs/ARCHITECTURE.md "The demo run") through the reader, value by value.

use smdfs::{demo, Run};

/// Asserts that `run` holds exactly the demo run of `n` events.
pub fn check_demo_run(run: &Run, n: u64) {
    assert_eq!(run.len(), n, "events");
    let mut ids = vec![0u64; n as usize];
    run.read_ids("", 0, &mut ids).unwrap();
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(id, demo::id(i as u64), "timestamp row {i}");
    }
    let energy = run.field("energy").unwrap().read_all::<f64>().unwrap();
    let count = run.field("count").unwrap().read_all::<i64>().unwrap();
    let image = run.field("det/image").unwrap().read_all::<u16>().unwrap();
    let maybe_f = run.field("maybe").unwrap();
    let maybe = maybe_f.read_all::<f32>().unwrap();
    let mut present = vec![0u8; n as usize];
    maybe_f.read_present(0, &mut present).unwrap();
    let tag = run.field("tag").unwrap();
    let offs = tag.offsets().unwrap();
    assert_eq!(offs.len() as u64, n + 1);
    for i in 0..n {
        let k = i as usize;
        assert_eq!(energy[k], demo::energy(i), "energy row {i}");
        assert_eq!(count[k], demo::count(i), "count row {i}");
        assert_eq!(&image[k * 32..(k + 1) * 32], &demo::image(i), "image row {i}");
        match demo::maybe(i) {
            Some(m) => {
                assert_eq!(maybe[k], m, "maybe row {i}");
                assert_eq!(present[k], 1);
            }
            None => {
                assert!(maybe[k].is_nan(), "maybe row {i} should be NaN fill");
                assert_eq!(present[k], 0);
            }
        }
        let t = tag.ragged_row(i).unwrap();
        assert_eq!(t, demo::tag(i).as_bytes(), "tag row {i}");
        assert_eq!(offs[k + 1] - offs[k], t.len() as u64);
    }
    assert_eq!(maybe_f.data().missing, n / 2);
    let hits_ids: Vec<u64> = (0..n).filter(|i| demo::hits(*i).is_some()).collect();
    let hits = run.field("unaligned_hits").unwrap();
    assert_eq!(hits.rows(), hits_ids.len() as u64);
    let hv = hits.read_all::<u32>().unwrap();
    let mut hid = vec![0u64; hits_ids.len()];
    run.read_ids("unaligned_hits", 0, &mut hid).unwrap();
    for (k, &i) in hits_ids.iter().enumerate() {
        assert_eq!(hv[k], i as u32);
        assert_eq!(hid[k], demo::id(i));
    }
    if n > 0 {
        assert_eq!(run.summary_value("n_events").unwrap().as_f64(), Some(n as f64));
        assert_eq!(run.summary_value("max_energy").unwrap().as_f64(), Some(demo::energy(n - 1)));
    }
}

/// Peak resident set size of this process in KiB (`VmHWM`).
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// Current anonymous resident memory of this process in KiB (`RssAnon`).
pub fn rss_anon_kib() -> u64 {
    status_kib("RssAnon:")
}

fn status_kib(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Asserts that every event `run` holds is a demo event with exactly the demo's values for
/// its id (a crashed run holds a subset); returns how many events it holds.
pub fn check_demo_subset(run: &Run) -> u64 {
    let n = run.len();
    let mut ids = vec![0u64; n as usize];
    run.read_ids("", 0, &mut ids).unwrap();
    let energy = run.field("energy").map(|f| f.read_all::<f64>().unwrap()).unwrap_or_default();
    let count = run.field("count").map(|f| f.read_all::<i64>().unwrap()).unwrap_or_default();
    let image = run.field("det/image").map(|f| f.read_all::<u16>().unwrap()).unwrap_or_default();
    let maybe = run.field("maybe").ok();
    let tag = run.field("tag").ok();
    for (k, &id) in ids.iter().enumerate() {
        assert!(id >= 1000 && (id - 1000) % 3 == 0, "row {k}: id {id} is not a demo id");
        if k > 0 {
            assert!(ids[k - 1] < id, "row {k}: ids not strictly ascending");
        }
        let i = (id - 1000) / 3;
        assert_eq!(energy[k], demo::energy(i), "energy of event {i}");
        assert_eq!(count[k], demo::count(i), "count of event {i}");
        assert_eq!(&image[k * 32..(k + 1) * 32], &demo::image(i), "image of event {i}");
        if let Some(t) = &tag {
            assert_eq!(t.ragged_row(k as u64).unwrap(), demo::tag(i).as_bytes(), "tag of event {i}");
        }
        if let Some(m) = &maybe {
            let mut p = [0u8];
            m.read_present(k as u64, &mut p).unwrap();
            let v = m.row::<f32>(k as u64).unwrap()[0];
            match demo::maybe(i) {
                Some(x) => assert_eq!((p[0], v), (1, x), "maybe of event {i}"),
                None => assert!(p[0] == 0 && v.is_nan(), "maybe of event {i}"),
            }
        }
    }
    if let Ok(h) = run.field("unaligned_hits") {
        let v = h.read_all::<u32>().unwrap();
        let mut hid = vec![0u64; v.len()];
        run.read_ids("unaligned_hits", 0, &mut hid).unwrap();
        for (k, &id) in hid.iter().enumerate() {
            let i = (id - 1000) / 3;
            assert_eq!(Some(v[k]), demo::hits(i), "unaligned_hits of event {i}");
        }
    }
    n
}

/// True if FUSE mounts are possible here (`/dev/fuse` exists); prints why a test skips if not.
pub fn fuse_available() -> bool {
    let ok = std::path::Path::new("/dev/fuse").exists();
    if !ok {
        eprintln!("skipping: /dev/fuse is absent, so nothing can be mounted here");
    }
    ok
}
