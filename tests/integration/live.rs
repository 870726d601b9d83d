//! The live view on a real FUSE mount: a demo run is written slowly in this process while
//! h5py, numpy and plain reads look at the mount. Every value read must be the demo formula's
//! for its event id, the event count a reader sees never decreases, a file already open keeps
//! the bytes it was opened with, and once `done()` returns the mount becomes the finished run
//! (byte for byte what a fresh `View::open` serves) within two seconds, without remounting.
//!
//! Skipped, with a message, only where `/dev/fuse` is absent.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use smdfs::{demo, Client, SmallData, Value};
use smdfs_fuse::live::Live;
use smdfs_fuse::mount::{self, MountOptions, Mounted};
use smdfs_fuse::{View, ViewOptions};

/// How long after a commit or `done()` the mount may lag (DESIGN: "≤ ~1 s"), with slack for
/// a loaded machine.
const LAG: Duration = Duration::from_secs(2);

/// A live mount of a run that unmounts when dropped (lazily, if a clean unmount is refused).
struct LiveMount {
    mounted: Option<Mounted>,
    path: PathBuf,
}

impl LiveMount {
    fn new(run: &Path, mountpoint: &Path) -> LiveMount {
        let live = Live::open(run, &ViewOptions::default()).expect("open the live view");
        let mounted = mount::mount_live(live, mountpoint, &MountOptions::default()).expect("mount");
        LiveMount { mounted: Some(mounted), path: mountpoint.to_path_buf() }
    }
}

impl LiveMount {
    fn live(&self) -> &Live {
        self.mounted.as_ref().unwrap().live()
    }
}

/// Once no file of an old snapshot is open, the kernel forgets their inodes (each swap
/// invalidated their names) and the snapshots are freed.
fn snapshots_are_released(m: &LiveMount) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while m.live().superseded_inodes() > 0 {
        assert!(Instant::now() < deadline, "{} superseded inodes are never forgotten", m.live().superseded_inodes());
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for LiveMount {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            if m.unmount().is_err() {
                let _ = mount::detach(&self.path);
            }
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn python() -> PathBuf {
    let p = std::env::var_os("SMDFS_PYTHON").map_or_else(|| repo_root().join(".venv/bin/python"), PathBuf::from);
    assert!(p.exists(), "no Python with h5py and numpy at {} (run scripts/setup.sh or set SMDFS_PYTHON)", p.display());
    p
}

fn script(name: &str) -> PathBuf {
    repo_root().join("tests/python").join(name)
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

/// Writes client `k`'s share of the demo's `n` events, pausing after each, and its reductions.
fn write_share_slowly(mut c: Client, n: u64, clients: u64, k: u64, pause: Duration) {
    let mut i = k;
    while i < n {
        demo_event(&mut c, i);
        std::thread::sleep(pause);
        i += clients;
    }
    let mine = (k..n).step_by(clients as usize);
    c.reduce("n_events", mine.clone().count() as u64).unwrap();
    if let Some(last) = mine.last() {
        c.reduce("max_energy", demo::energy(last)).unwrap();
    }
    c.finish().unwrap();
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

/// Waits until a fresh open of `path` shows at least `rows` rows; returns its bytes.
fn wait_for_rows(path: &Path, rows: u64) -> Vec<u8> {
    let deadline = Instant::now() + LAG;
    loop {
        if let Ok(b) = std::fs::read(path) {
            if npy_rows(&b) >= rows {
                return b;
            }
        }
        assert!(Instant::now() < deadline, "{} never showed {rows} rows", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
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

/// Waits until the mount at `root` serves exactly the finished run in `run`.
fn wait_for_finished_run(run: &Path, root: &Path, since: Instant) {
    let fresh = View::open(run, &ViewOptions::default()).unwrap();
    assert_eq!(fresh.run().state(), smdfs::RunState::Complete);
    loop {
        let bad = differences(&fresh, root);
        if bad.is_empty() {
            return;
        }
        assert!(since.elapsed() < LAG, "{:?} after done(), these files still differ: {bad:?}", since.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn h5py_reading_while_the_demo_writes_sees_only_correct_values_and_never_fewer_events() {
    if !smdfs_tests::fuse_available() {
        return;
    }
    let n = 3000u64;
    let clients = 2u64;
    let (_dir, run, mnt, smd) = start_run(2, 8);
    let m = LiveMount::new(&run, &mnt);
    let reader = Command::new(python())
        .arg(script("live_reader.py"))
        .arg(&mnt)
        .arg(n.to_string())
        .arg("60")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the h5py reader");

    // About 3 s of writing: each client pauses 2 ms after each of its 1500 events.
    std::thread::scope(|s| {
        for k in 0..clients {
            let c = smd.client();
            s.spawn(move || write_share_slowly(c, n, clients, k, Duration::from_millis(2)));
        }
    });
    finish(smd);
    let done_at = Instant::now();
    wait_for_finished_run(&run, &mnt, done_at);
    let mount_done = done_at.elapsed();

    let out = reader.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the h5py reader failed ({}):\n{stdout}\n{stderr}", out.status);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    eprintln!("h5py live reader: {report}; mount equal to the finished run {:?} after done()", mount_done);
    let counts: Vec<u64> = report["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
    let growing = counts.iter().filter(|&&c| c > 0 && c < n).count();
    assert!(growing >= 3, "the reader should have seen the run grow: {report}");
    assert_eq!(counts.last(), Some(&n), "{report}");

    assert!(m.live().generation() >= 5, "snapshots swapped in: {}", m.live().generation());
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
    if !smdfs_tests::fuse_available() {
        return;
    }
    // Two clients, one per server: client 0 writes even events, client 1 odd ones, and each
    // flush commits, so the test decides when rows land — and makes them land in the middle.
    let (_dir, run, mnt, smd) = start_run(2, 10_000);
    let m = LiveMount::new(&run, &mnt);
    let (mut even, mut odd) = (smd.client(), smd.client());
    let ts = mnt.join("arrays/timestamp.npy");
    let img = mnt.join("arrays/det/image.npy");

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
    let first = wait_for_rows(&ts, 100);
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
    for i in odds(100..200) {
        demo_event(&mut odd, i);
    }
    odd.flush().unwrap();
    let grown = wait_for_rows(&ts, 150);
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
    for i in evens(100..200) {
        demo_event(&mut even, i);
    }
    even.flush().unwrap();
    let all = wait_for_rows(&ts, 200);
    assert_eq!(npy_ids(&all), (0..200).map(demo::id).collect::<Vec<_>>());
    let image = wait_for_rows(&img, 200);
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
    finish(smd);
    wait_for_finished_run(&run, &mnt, Instant::now());
    unchanged(&held);
    h5_in.write_all(b"next\n").unwrap();
    assert_eq!(h5_events(), 200);
    drop(h5_in);
    let out = h5py.wait_with_output().unwrap();
    assert!(out.status.success(), "hold_open.py failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(m.live().superseded_inodes() > 0, "open files keep their snapshots");
    drop(held);
    snapshots_are_released(&m);
}
