//! The live view on a real FUSE mount: a demo run is written in this process while h5py,
//! numpy and plain reads look at the mount. Every value read must be the demo formula's for
//! its event id, the event count a reader sees never decreases, a file already open keeps the
//! bytes it was opened with, and once `done()` returns the mount becomes the finished run
//! (byte for byte what a fresh `View::open` serves) without remounting.
//!
//! Nothing here is timed: the tests assert on what the mount's [`Live`] counts — snapshots
//! swapped in (`generation`), superseded inodes still held, whether the run is final — and on
//! what the readers saw. Where a test must wait (for the refresh thread, the kernel forgetting
//! inodes, the h5py reader's next pass) it waits on that condition with a generous bound
//! ([`HANG_LIMIT`]) whose expiry names what never happened. How fast the mount follows
//! commits (the CLI promises "within about a second") is a benchmark's business; the lag is only printed here.
//!
//! Without FUSE or the `.venv` Python these tests skip with a message, or fail under
//! `SMDFS_REQUIRE_TOOLS=1`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use smdfs::{demo, Client, SmallData, Value};
use smdfs_fuse::live::Live;
use smdfs_fuse::{View, ViewOptions};
use smdfs_tests::{machine_has, python, script, wait_until, Mount, Need, HANG_LIMIT};

/// A one-line account of a live view's counters, for failure messages.
fn counters(live: &Live) -> String {
    let v = live.current();
    format!(
        "live generation {}, current snapshot {} events ({}), {} superseded inodes",
        live.generation(),
        v.run().len(),
        v.run().state(),
        live.superseded_inodes()
    )
}

/// Once no file of an old snapshot is open, the kernel forgets their inodes (each swap
/// invalidated their names) and the snapshots are freed.
fn snapshots_are_released(m: &Mount) {
    wait_until(|| match m.view().superseded_inodes() {
        0 => Ok(()),
        k => Err(format!("the kernel never forgot {k} superseded inodes ({})", counters(m.view()))),
    });
}

/// A temporary directory with `run/` (a writer started on it) and an empty `mnt/`.
fn start_run(servers: usize, batch: usize) -> (tempfile::TempDir, PathBuf, PathBuf, SmallData) {
    let dir = tempfile::tempdir().unwrap();
    let (run, mnt) = (dir.path().join("run"), dir.path().join("mnt"));
    std::fs::create_dir(&mnt).unwrap();
    let smd = SmallData::builder(&run).servers(servers).batch_events(batch).build().unwrap();
    (dir, run, mnt, smd)
}

/// Demo event `i` (docs/ARCHITECTURE.md "The demo run"), exactly as `demo::write_client_share` writes it.
fn demo_event(c: &mut Client, i: u64) {
    let img = demo::image(i);
    let tag = demo::tag(i);
    let mut fields = vec![
        ("energy", Value::from(demo::energy(i))),
        ("det/image", Value::array(&img, &[4, 8])),
        ("count", Value::from(demo::count(i))),
        ("tag", Value::bytes(tag.as_bytes())),
    ];
    if let Some(m) = demo::maybe(i) {
        fields.push(("maybe", Value::from(m)));
    }
    if let Some(h) = demo::hits(i) {
        fields.push(("unaligned_hits", Value::from(h)));
    }
    c.event(demo::id(i), &fields).unwrap();
}

/// Writes client `k`'s share (events `i % clients == k`) of demo events `range`, pausing
/// after each so that commits land while readers read, then flushes it to its server.
fn write_share_slowly(c: &mut Client, range: std::ops::Range<u64>, clients: u64, k: u64, pause: Duration) {
    for i in range.filter(|i| i % clients == k) {
        demo_event(c, i);
        std::thread::sleep(pause);
    }
    c.flush().unwrap();
}

/// Client `k`'s reductions over its share of the demo's `n` events.
fn reduce_share(c: &mut Client, n: u64, clients: u64, k: u64) {
    let mine = (k..n).step_by(clients as usize);
    c.reduce("n_events", mine.clone().count() as u64).unwrap();
    if let Some(last) = mine.last() {
        c.reduce("max_energy", demo::energy(last)).unwrap();
    }
}

/// Finishes the demo run: summary, then `done()`.
fn finish(smd: SmallData) {
    demo::save_demo_summary(&smd).unwrap();
    smd.done().unwrap();
}

/// Rows of the `.npy` at `path` (its first dimension), from its header.
fn npy_rows(bytes: &[u8]) -> u64 {
    let hl = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hl]).unwrap();
    let dims = header.split_once("'shape': (").unwrap().1;
    dims.split([',', ')']).next().unwrap().trim().parse().unwrap_or(0)
}

/// Waits until the live mount has swapped in a snapshot after generation `before` and a fresh
/// open of `path` shows at least `rows` rows; returns its bytes.
fn wait_for_rows(m: &Mount, before: u64, path: &Path, rows: u64) -> Vec<u8> {
    let bytes = wait_until(|| {
        let shown = match std::fs::read(path) {
            Ok(b) if npy_rows(&b) >= rows => return Ok(b),
            Ok(b) => format!("{} rows", npy_rows(&b)),
            Err(e) => e.to_string(),
        };
        Err(format!(
            "{} never showed {rows} rows through the mount (shows {shown}; {})",
            path.display(),
            counters(m.view())
        ))
    });
    assert!(m.view().generation() > before, "rows appeared without a new snapshot: {}", counters(m.view()));
    bytes
}

/// The event ids in a `timestamp.npy`'s bytes.
fn npy_ids(bytes: &[u8]) -> Vec<u64> {
    let hl = u16::from_le_bytes([bytes[8], bytes[9]]) as usize + 10;
    bytes[hl..].chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect()
}

/// Files of `view` whose bytes through the mount at `root` differ from the view's.
fn differences(view: &View, root: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    for (path, size) in view.files() {
        let mut want = vec![0u8; size as usize];
        view.read_into(view.resolve(&path).unwrap().ino, 0, &mut want).unwrap();
        if std::fs::read(root.join(&path)).ok().as_deref() != Some(&want[..]) {
            bad.push(path);
        }
    }
    bad
}

/// After `done()`: waits until the live mount `m` at `root` has swapped in the complete run
/// (a generation after `before`, final), then until every file through the mount is byte for
/// byte what a fresh `View::open` of `run` serves (the kernel has dropped its cached names).
fn wait_for_finished_run(m: &Mount, before: u64, run: &Path, root: &Path) {
    let since = Instant::now();
    wait_until(|| match m.view().is_final() {
        true => Ok(()),
        false => Err(format!("the live mount never showed the finished run ({})", counters(m.view()))),
    });
    assert!(m.view().generation() > before, "done() swapped in a new snapshot: {}", counters(m.view()));
    let fresh = View::open(run, &ViewOptions::default()).unwrap();
    assert_eq!(fresh.run().state(), smdfs::RunState::Complete);
    assert_eq!(m.view().current().run().len(), fresh.run().len());
    wait_until(|| match differences(&fresh, root) {
        bad if bad.is_empty() => Ok(()),
        bad => {
            Err(format!("the finished run's files still differ through the mount: {bad:?} ({})", counters(m.view())))
        }
    });
    eprintln!("the live mount served the finished run {:?} after done() returned", since.elapsed());
}

/// What `live_reader.py` reports: one line per new event count it sees, then a summary.
enum ReaderLine {
    Saw(u64),
    Summary(serde_json::Value),
}

#[test]
fn h5py_reading_while_the_demo_writes_sees_only_correct_values_and_never_fewer_events() {
    if !machine_has(&[Need::Fuse, Need::Python]) {
        return;
    }
    let n = 3000u64;
    let clients = 2u64;
    // The run grows in STAGES steps. After each, the test waits until the mount swapped in a
    // snapshot holding it and the h5py reader reported seeing it, so the reader sees the run
    // grow by construction, however fast or slow the machine; within a step, commits land
    // (batches of 8) while the reader reads.
    const STAGES: u64 = 5;
    let (_dir, run, mnt, smd) = start_run(2, 8);
    let m = Mount::live(&run, &mnt);
    let mut reader = Command::new(python())
        .arg(script("live_reader.py"))
        .arg(&mnt)
        .arg(n.to_string())
        .arg(HANG_LIMIT.as_secs().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the h5py reader");
    let (tx, rx) = mpsc::channel();
    let stdout = BufReader::new(reader.stdout.take().unwrap());
    let lines = std::thread::spawn(move || {
        for line in stdout.lines() {
            let line = line.unwrap();
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("live_reader.py said {line:?}: {e}"));
            let msg = match v["events"].as_u64() {
                Some(k) if v.get("passes").is_none() => ReaderLine::Saw(k),
                _ => ReaderLine::Summary(v),
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    });
    let mut stderr = reader.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut summary = None;
    let mut reader_saw = 0;
    let mut listen = |until: u64, reader: &mut std::process::Child| {
        wait_until(|| {
            while let Ok(l) = rx.try_recv() {
                match l {
                    ReaderLine::Saw(k) => reader_saw = k,
                    ReaderLine::Summary(v) => summary = Some(v),
                }
            }
            if reader_saw >= until {
                return Ok(());
            }
            if let Ok(Some(status)) = reader.try_wait() {
                return Err(format!("the h5py reader exited ({status}) having seen {reader_saw} of {until} events"));
            }
            Err(format!("the h5py reader never saw {until} events (saw {reader_saw}; {})", counters(m.view())))
        });
    };

    let mut cs: Vec<Client> = (0..clients).map(|_| smd.client()).collect();
    for stage in 1..=STAGES {
        let range = (stage - 1) * n / STAGES..stage * n / STAGES;
        let before = m.view().generation();
        std::thread::scope(|s| {
            for (k, c) in cs.iter_mut().enumerate() {
                let range = range.clone();
                s.spawn(move || write_share_slowly(c, range, clients, k as u64, Duration::from_millis(1)));
            }
        });
        wait_until(|| match m.view().current().run().len() {
            len if len >= range.end => Ok(()),
            len => {
                Err(format!("the live mount never showed {} events (shows {len}; {})", range.end, counters(m.view())))
            }
        });
        assert!(m.view().generation() > before, "stage {stage}: {}", counters(m.view()));
        if stage < STAGES {
            listen(range.end, &mut reader);
        }
    }
    for (k, mut c) in cs.into_iter().enumerate() {
        reduce_share(&mut c, n, clients, k as u64);
        c.finish().unwrap();
    }
    let before = m.view().generation();
    finish(smd);
    wait_for_finished_run(&m, before, &run, &mnt);
    listen(n, &mut reader);

    let status = reader.wait().unwrap();
    lines.join().unwrap();
    while let Ok(l) = rx.try_recv() {
        if let ReaderLine::Summary(v) = l {
            summary = Some(v);
        }
    }
    let errors = errors.join().unwrap();
    assert!(status.success(), "the h5py reader failed ({status}):\n{errors}");
    let report = summary.unwrap_or_else(|| panic!("the h5py reader printed no summary:\n{errors}"));
    eprintln!("h5py live reader: {report}; {}", counters(m.view()));
    let counts: Vec<u64> = report["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
    let growing = counts.iter().filter(|&&c| c > 0 && c < n).count();
    assert!(growing >= 3, "the reader should have seen the run grow: {report}");
    assert_eq!(counts.last(), Some(&n), "{report}");

    assert!(m.view().generation() >= 5, "snapshots swapped in: {}", m.view().generation());
    snapshots_are_released(&m);

    // The final view through the mount, with every tool check of the static mount tests.
    let check = Command::new(python()).arg(script("check_view.py")).arg(&mnt).arg(n.to_string()).output().unwrap();
    assert!(
        check.status.success(),
        "check_view.py on the finished live mount:\n{}\n{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn an_open_file_keeps_its_bytes_while_new_opens_see_the_run_grow() {
    if !machine_has(&[Need::Fuse, Need::Python]) {
        return;
    }
    // Two clients, one per server: client 0 writes even events, client 1 odd ones, and each
    // flush commits, so the test decides when rows land — and makes them land in the middle.
    let (_dir, run, mnt, smd) = start_run(2, 10_000);
    let m = Mount::live(&run, &mnt);
    let (mut even, mut odd) = (smd.client(), smd.client());
    let ts = mnt.join("arrays/timestamp.npy");
    let img = mnt.join("arrays/det/image.npy");

    let mut before = m.view().generation();
    let evens = |r: std::ops::Range<u64>| r.filter(|i| i % 2 == 0).collect::<Vec<_>>();
    let odds = |r: std::ops::Range<u64>| r.filter(|i| i % 2 == 1).collect::<Vec<_>>();
    for i in evens(0..100) {
        demo_event(&mut even, i);
    }
    even.flush().unwrap();
    for i in odds(0..100) {
        demo_event(&mut odd, i);
    }
    odd.flush().unwrap();
    let first = wait_for_rows(&m, before, &ts, 100);
    assert_eq!(npy_ids(&first), (0..100).map(demo::id).collect::<Vec<_>>());

    // Hold files open: plain handles, and h5py holding run.h5.
    let held: Vec<(PathBuf, std::fs::File, Vec<u8>)> = [&ts, &img, &mnt.join("run.h5")]
        .into_iter()
        .map(|p| {
            let f = std::fs::File::open(p).unwrap();
            let mut bytes = vec![0u8; f.metadata().unwrap().len() as usize];
            f.read_exact_at(&mut bytes, 0).unwrap();
            (p.clone(), f, bytes)
        })
        .collect();
    assert_eq!(npy_ids(&held[0].2), (0..100).map(demo::id).collect::<Vec<_>>());
    let mut h5py = Command::new(python())
        .arg(script("hold_open.py"))
        .arg(&mnt)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut h5_in = h5py.stdin.take().unwrap();
    let mut h5_out = BufReader::new(h5py.stdout.take().unwrap());
    let mut h5_events = || {
        let mut line = String::new();
        h5_out.read_line(&mut line).unwrap();
        let v: Option<serde_json::Value> = serde_json::from_str(&line).ok();
        v.and_then(|v| v["events"].as_u64()).unwrap_or_else(|| panic!("hold_open.py said {line:?}"))
    };
    assert_eq!(h5_events(), 100);

    let unchanged = |held: &[(PathBuf, std::fs::File, Vec<u8>)]| {
        for (p, f, bytes) in held {
            assert_eq!(f.metadata().unwrap().len(), bytes.len() as u64, "{}: size of an open file", p.display());
            let mut again = vec![0u8; bytes.len()];
            f.read_exact_at(&mut again, 0).unwrap();
            assert!(&again == bytes, "{}: bytes changed under an open file", p.display());
            assert_eq!(f.read_at(&mut [0u8; 64], bytes.len() as u64).unwrap(), 0, "{}: past its end", p.display());
        }
    };

    // Odd events 101..199 land: rows after id 1300 move.
    before = m.view().generation();
    for i in odds(100..200) {
        demo_event(&mut odd, i);
    }
    odd.flush().unwrap();
    let grown = wait_for_rows(&m, before, &ts, 150);
    let ids = npy_ids(&grown);
    let want: Vec<u64> = (0..100).chain(odds(100..200)).map(demo::id).collect();
    assert_eq!(ids, want);
    std::fs::read(&img).unwrap(); // a new open fills its own page cache
    unchanged(&held);
    let modified = |m: std::fs::Metadata| m.modified().unwrap();
    let (was, now) = (modified(held[0].1.metadata().unwrap()), modified(std::fs::metadata(&ts).unwrap()));
    assert!(now > was, "a grown file has a newer mtime: {was:?} then {now:?}");
    h5_in.write_all(b"next\n").unwrap();
    assert_eq!(h5_events(), 150);

    // Even events 100..198 land between them.
    before = m.view().generation();
    for i in evens(100..200) {
        demo_event(&mut even, i);
    }
    even.flush().unwrap();
    let all = wait_for_rows(&m, before, &ts, 200);
    assert_eq!(npy_ids(&all), (0..200).map(demo::id).collect::<Vec<_>>());
    let image = wait_for_rows(&m, before, &img, 200);
    let hl = u16::from_le_bytes([image[8], image[9]]) as usize + 10;
    for (i, row) in image[hl..].chunks_exact(64).enumerate() {
        let row: Vec<u16> = row.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        assert_eq!(row, demo::image(i as u64), "image row {i}");
    }
    unchanged(&held);
    h5_in.write_all(b"next\n").unwrap();
    assert_eq!(h5_events(), 200);

    // The writer finishes: the mount becomes the finished run; open files still do not change.
    even.reduce("n_events", 100u64).unwrap();
    odd.reduce("n_events", 100u64).unwrap();
    even.reduce("max_energy", demo::energy(198)).unwrap();
    odd.reduce("max_energy", demo::energy(199)).unwrap();
    even.finish().unwrap();
    odd.finish().unwrap();
    before = m.view().generation();
    finish(smd);
    wait_for_finished_run(&m, before, &run, &mnt);
    unchanged(&held);
    h5_in.write_all(b"next\n").unwrap();
    assert_eq!(h5_events(), 200);
    drop(h5_in);
    let out = h5py.wait_with_output().unwrap();
    assert!(out.status.success(), "hold_open.py failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(m.view().superseded_inodes() > 0, "open files keep their snapshots");
    drop(held);
    snapshots_are_released(&m);
}
