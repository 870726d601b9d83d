//! Shared helpers for the integration tests of this crate and of the `smdfs` binary:
//! checkers that verify a run against the demo formula (docs/ARCHITECTURE.md "The demo run") through the
//! reader, value by value; what a test needs from the machine (FUSE, root, the HDF5 tools, the
//! `.venv` Python with h5py and numpy, mpirun, strace) and what happens when it is missing; one
//! real FUSE mount served by the test process ([`Mount`], fixed or live); running the real
//! tools; waiting on a condition; and counting a run's commits from its logs as they grow.
//!
//! A test that needs something the machine lacks skips with a printed `SKIP` line naming it,
//! unless the environment sets `SMDFS_REQUIRE_TOOLS=1` (`scripts/test.sh` does): then the
//! missing thing is a test failure whose message names it and how to install it.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use smdfs::{demo, Run};
use smdfs_fuse::live::Live;
use smdfs_fuse::mount::{self, MountOptions, Mounted};
use smdfs_fuse::{View, ViewOptions};

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

/// The environment switch: `SMDFS_REQUIRE_TOOLS=1` turns every "this machine lacks X, skipping"
/// into a failure naming X. `scripts/test.sh` sets it, so the suite cannot pass by skipping.
pub const REQUIRE_ENV: &str = "SMDFS_REQUIRE_TOOLS";

/// Something a test needs from the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// FUSE mounts: `/dev/fuse` (the FUSE character device, 10:229, openable), and root or the
    /// `fusermount3` helper.
    Fuse,
    /// Root (mounting a tmpfs).
    Root,
    /// A program on `PATH` (`h5dump`, `h5ls`, `mpirun`, `strace`, `mount`, …).
    Tool(&'static str),
    /// The project's Python (`SMDFS_PYTHON`, else `.venv/bin/python`) importing h5py and numpy.
    Python,
}

/// True when the switch [`REQUIRE_ENV`] is on.
pub fn required() -> bool {
    std::env::var_os(REQUIRE_ENV).is_some_and(|v| v == "1")
}

/// True if the machine has everything in `needs`. Otherwise prints `SKIP <test>: <what is
/// missing>` and returns false — or, under `SMDFS_REQUIRE_TOOLS=1`, fails the test with that
/// message.
pub fn machine_has(needs: &[Need]) -> bool {
    let missing: Vec<String> = needs.iter().filter_map(|n| problem(*n)).collect();
    if missing.is_empty() {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("this test").to_string();
    let what = missing.join("; ");
    assert!(!required(), "{REQUIRE_ENV}=1 and {test} cannot run here: {what}");
    eprintln!("SKIP {test}: {what} (with {REQUIRE_ENV}=1 this is a failure)");
    false
}

/// Shorthand for `machine_has(&[Need::Fuse])`, the check every mount test starts with.
pub fn fuse_available() -> bool {
    machine_has(&[Need::Fuse])
}

/// What is missing for `need`, if anything.
fn problem(need: Need) -> Option<String> {
    match need {
        Need::Fuse => fuse_problem(),
        Need::Root => (!is_root()).then(|| "not running as root (euid 0)".to_string()),
        Need::Tool(name) => {
            on_path(name).is_none().then(|| format!("`{name}` is not on PATH ({})", install_hint(name)))
        }
        Need::Python => python_checked().as_ref().err().cloned(),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn fuse_problem() -> Option<String> {
    let dev = Path::new("/dev/fuse");
    let shown = dev.display();
    let md = match std::fs::metadata(dev) {
        Ok(m) => m,
        Err(e) => {
            return Some(format!(
            "{shown} is missing ({e}): no FUSE here (load the fuse module; in a container, pass --device /dev/fuse)"
        ))
        }
    };
    use std::os::unix::fs::MetadataExt;
    let rdev = md.rdev();
    if !md.file_type().is_char_device() || (libc::major(rdev), libc::minor(rdev)) != (10, 229) {
        return Some(format!("{shown} is not the FUSE device (character device 10:229)"));
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        return Some(format!("cannot open {shown} read-write: {e}"));
    }
    if !is_root() && on_path("fusermount3").is_none() {
        return Some(
            "not root and `fusermount3` is not on PATH, so nothing can be mounted (Debian package fuse3)".into(),
        );
    }
    None
}

/// The full path of program `name` found on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

fn install_hint(tool: &str) -> &'static str {
    match tool {
        "h5dump" | "h5ls" => "Debian package hdf5-tools; scripts/setup.sh installs it",
        "mpirun" => "Debian package mpich; scripts/setup.sh installs it",
        "fusermount3" => "Debian package fuse3; scripts/setup.sh installs it",
        "strace" => "Debian package strace",
        "mount" | "umount" => "Debian package mount",
        _ => "install it",
    }
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// A helper script of `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    repo_root().join("tests").join("python").join(name)
}

/// The Python the tests read with: `SMDFS_PYTHON` if set (scripts/test.sh sets it), else the
/// repository's `.venv/bin/python`. Fails naming what is missing unless it exists and imports
/// h5py and numpy; tests that can skip check [`Need::Python`] with [`machine_has`] first.
pub fn python() -> PathBuf {
    match python_checked() {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn python_checked() -> &'static Result<PathBuf, String> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let p = std::env::var_os("SMDFS_PYTHON").map_or_else(|| repo_root().join(".venv/bin/python"), PathBuf::from);
        let how = "run scripts/setup.sh, or set SMDFS_PYTHON to a Python with h5py and numpy";
        if !p.exists() {
            return Err(format!("no Python at {} ({how})", p.display()));
        }
        match Command::new(&p).args(["-c", "import h5py, numpy"]).output() {
            Ok(o) if o.status.success() => Ok(p),
            Ok(o) => Err(format!(
                "{} cannot import h5py and numpy ({how}): {}",
                p.display(),
                String::from_utf8_lossy(&o.stderr).trim().lines().last().unwrap_or("")
            )),
            Err(e) => Err(format!("cannot run {} ({how}): {e}", p.display())),
        }
    })
}

/// A command for an HDF5 reader (h5py, h5dump) that takes no HDF5 file locks. Tests run in
/// parallel threads and libhdf5 opens files without `O_CLOEXEC`, so a child spawned by one test
/// can inherit (and hold) the lock of a file another test has open.
pub fn hdf5_reader(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env("HDF5_USE_FILE_LOCKING", "FALSE");
    c
}

/// Runs `cmd` and returns its stdout; fails with its status, stdout and stderr unless it
/// succeeds.
pub fn run_tool(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tool output is UTF-8")
}

/// How long [`wait_until`] waits before it calls a wait a hang. A guard against hanging, not
/// a speed requirement: assertions are made on what happened, never on how fast.
pub const HANG_LIMIT: Duration = Duration::from_secs(120);

/// Polls `poll` every few milliseconds until it returns `Ok`, and returns that value. Fails
/// with the last `Err` message (which names what never happened) after [`HANG_LIMIT`].
pub fn wait_until<T>(mut poll: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match poll() {
            Ok(v) => return v,
            Err(why) => assert!(start.elapsed() < HANG_LIMIT, "after {HANG_LIMIT:?}: {why}"),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A real FUSE mount served by this test process (`smdfs_fuse::mount` on background threads)
/// that unmounts when dropped — also when a test panics — lazily if a clean unmount is
/// refused. The CLI's daemon path is tested through the binary in `cli/tests/mount.rs`.
pub struct Mount {
    mounted: Option<Mounted>,
    path: PathBuf,
}

impl Mount {
    /// Mounts the run in `run` at `mountpoint` as it is now.
    pub fn fixed(run: &Path, mountpoint: &Path) -> Mount {
        let view = View::open(run, &ViewOptions::default()).expect("open the view");
        let mounted = mount::mount(view, mountpoint, &MountOptions::default()).expect("mount");
        Mount { mounted: Some(mounted), path: mountpoint.to_path_buf() }
    }

    /// Mounts the run in `run` at `mountpoint` live: the mount follows its commits.
    pub fn live(run: &Path, mountpoint: &Path) -> Mount {
        let live = Live::open(run, &ViewOptions::default()).expect("open the live view");
        let mounted = mount::mount_live(live, mountpoint, &MountOptions::default()).expect("mount");
        Mount { mounted: Some(mounted), path: mountpoint.to_path_buf() }
    }

    /// The snapshots being served (a fixed mount has one).
    pub fn view(&self) -> &Live {
        self.mounted.as_ref().expect("mounted until dropped").live()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            if m.unmount().is_err() {
                let _ = mount::detach(&self.path);
            }
        }
    }
}

/// Commit records (type 2) in the valid frames of every `shard-*/log` of the run in `run`,
/// decoded from docs/FORMAT.md alone: 16-byte header, then frames `len u32 | crc32c(len) |
/// payload | crc32c(payload)`, stopping at the first short or corrupt frame. Safe to call
/// while a writer appends (a torn tail is not counted).
pub fn commits_in_logs(run: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(run) else { return 0 };
    let mut commits = 0;
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with("shard-") {
            continue;
        }
        let Ok(log) = std::fs::read(e.path().join("log")) else { continue };
        let mut at = 16;
        while let Some(head) = log.get(at..at + 8) {
            let len_bytes: [u8; 4] = head[..4].try_into().expect("4 bytes");
            let len = u32::from_le_bytes(len_bytes) as usize;
            if crc32c::crc32c(&len_bytes) != u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) || len == 0 {
                break;
            }
            let (Some(payload), Some(crc)) = (log.get(at + 8..at + 8 + len), log.get(at + 8 + len..at + 12 + len))
            else {
                break;
            };
            if crc32c::crc32c(payload) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
                break;
            }
            commits += u64::from(payload[0] == 2);
            at += len + 12;
        }
    }
    commits
}

/// A temporary directory with a demo run of `n` events in `run/` and an empty `mnt/` (what
/// the mount tests start from).
pub fn demo_run_and_mountpoint(
    n: u64,
    servers: usize,
    clients: usize,
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (run, mnt) = (dir.path().join("run"), dir.path().join("mnt"));
    smdfs::demo::write_demo(&run, n, servers, clients, false).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    (dir, run, mnt)
}
