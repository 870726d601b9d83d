//! View benchmark, in one run (every figure a side-by-side ratio from the same run):
//! 1. Mount time against event count: demo runs of 10^5 … 10^7 events in 4 shards, timed
//!    from `View::open` to the first `stat` of `run.h5` through a FUSE mount (the median of
//!    5 fresh mounts of each run, synced after writing); the figure is time(largest) /
//!    time(smallest), which should stay near 1.
//! 2. Reads through the mount beside the same bytes in a plain local file (a `cp` of the
//!    mounted file), for a 2 GiB dataset of 64 KiB u16 images and for a 1M-event demo's
//!    `det/image`: `dd bs=1M` of the `.npy` and h5py `read_direct` of the `run.h5` dataset
//!    (into an array touched beforehand), each **warm** (page cache holds the file: best of
//!    three reads after a first) and **cold** (`drop_caches` before
//!    the read, a fresh mount). Also the **daemon path**: a fresh mount whose shard files are
//!    in the page cache, `dd` of the `.npy` beside `dd` of the shard column files behind it,
//!    and beside `dd` of those files into a new tmpfs file — the cost of filling fresh
//!    page-cache pages, which every read through the daemon pays too (the mount's cache).
//!    Requests per MiB come from the mount's own counters (`smdfs_fuse::stats`). Last, the share
//!    of the warm `.npy`'s page-cache pages in large folios, mount and plain copy
//!    (`/proc/kpageflags`): the kernel walks and copies a cache of 4 KiB pages page by page.
//! 3. The live view: a run of N light events written by 2 servers and kept open; the cost of
//!    the refreshes that pick up 100k more events at N events (time per refresh, refreshes,
//!    commits they picked up, total time per commit, index rows merged, shard log bytes
//!    read), and the lag it implies (refresh period 0.25 s + the time of one refresh).
//! 5. No double caching (opt-in, `--only big`, minutes): a run of `--big-mib` MiB of 64 KiB
//!    images — sized above half the machine's memory — read through the mount twice with
//!    `dd bs=1M` from a cold cache, beside a plain file of the same size read twice. Per pass:
//!    MB/s and the resident bytes (`fincore`) of the shard column files and of the view
//!    file, for the default mount (drop-behind: shard pages copied into a reply are dropped)
//!    and for `DropBehind::Never` (every byte cached twice). The plain file is written and
//!    removed before the run, so the disk holds one copy at a time.
//! 4. Many readers: 16 reader processes (8 h5py random slices, 8 sequential `cat` of `.npy`
//!    files) on one mount for a bounded time while another mount is mounted and unmounted
//!    over and over; errors (must be 0) and aggregate throughput.
//!
//! Run: `cargo run --release -p smdfs-benches --bin view_bench -- [--mount-events N,N]
//! [--read-mib 2048] [--demo-events 1000000] [--live-events 10000000,100000000]
//! [--load-secs 30] [--big-mib 14336] [--only mount,read,live,load,big] [--dir DIR]` (default
//! `--only mount,read,live,load`).
//! Needs root (/dev/fuse, `drop_caches`) and `.venv` with h5py (scripts/setup.sh).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smdfs::format::manifest::Manifest;
use smdfs::format::{column_file_name, shard_dir_name, Role, LOG_FILE};
use smdfs::{SmallData, Value};
use smdfs_fuse::live::Live;
use smdfs_fuse::mount::{mount, mount_live, DropBehind, MountOptions, Mounted};
use smdfs_fuse::stats::StatsSnapshot;
use smdfs_fuse::{View, ViewOptions};

struct Args {
    mount_events: Vec<u64>,
    read_mib: u64,
    demo_events: u64,
    live_events: Vec<u64>,
    load_secs: u64,
    big_mib: u64,
    only: Vec<String>,
    dir: PathBuf,
}

fn list(s: &str, what: &str) -> Result<Vec<u64>, String> {
    s.split(',').map(|x| x.trim().parse::<u64>().map_err(|e| format!("{what}: {x:?}: {e}"))).collect()
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        mount_events: vec![100_000, 10_000_000],
        read_mib: 2048,
        demo_events: 1_000_000,
        live_events: vec![10_000_000, 100_000_000],
        load_secs: 30,
        big_mib: 14 * 1024,
        only: vec!["mount".into(), "read".into(), "live".into(), "load".into()],
        dir: std::env::temp_dir(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{k} needs a value"));
        match k.as_str() {
            "--mount-events" => a.mount_events = list(&val()?, "--mount-events")?,
            "--read-mib" => a.read_mib = val()?.parse().map_err(|e| format!("--read-mib: {e}"))?,
            "--demo-events" => a.demo_events = val()?.parse().map_err(|e| format!("--demo-events: {e}"))?,
            "--live-events" => a.live_events = list(&val()?, "--live-events")?,
            "--load-secs" => a.load_secs = val()?.parse().map_err(|e| format!("--load-secs: {e}"))?,
            "--big-mib" => a.big_mib = val()?.parse().map_err(|e| format!("--big-mib: {e}"))?,
            "--only" => a.only = val()?.split(',').map(str::to_string).collect(),
            "--dir" => a.dir = PathBuf::from(val()?),
            "-h" | "--help" => {
                return Err("usage: view_bench [--mount-events N,N] [--read-mib MIB] [--demo-events N] \
                            [--live-events N,N] [--load-secs S] [--big-mib MIB] [--only mount,read,live,load,big] [--dir DIR]"
                    .into());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(a)
}

fn python() -> PathBuf {
    std::env::var_os("SMDFS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(".venv").join("bin").join("python"))
}

fn run_cmd(cmd: &mut Command) -> Result<String, String> {
    let o = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !o.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr)));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Empties the page cache (root): the next read of any file comes from the disk.
fn drop_caches() -> Result<(), String> {
    // SAFETY: sync() cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").map_err(|e| format!("drop_caches (needs root): {e}"))
}

/// Reads `paths` in order with `dd bs=1M`; returns MB/s.
fn dd(paths: &[PathBuf]) -> Result<f64, String> {
    let mut bytes = 0u64;
    let t = Instant::now();
    for p in paths {
        bytes += std::fs::metadata(p).map_err(err)?.len();
        run_cmd(Command::new("dd").arg(format!("if={}", p.display())).args(["of=/dev/null", "bs=1M"]))?;
    }
    Ok(bytes as f64 / t.elapsed().as_secs_f64() / 1e6)
}

/// Copies `paths` in order with `dd bs=1M` into one new file in tmpfs (fresh page-cache
/// pages, no disk); returns MB/s. What filling the page cache costs here: a read that goes
/// through the daemon fills the mount's page cache the same way, so this bounds it.
fn dd_into_tmpfs(paths: &[PathBuf]) -> Result<f64, String> {
    let out = PathBuf::from(format!("/dev/shm/smdfs-view-bench-{}", std::process::id()));
    let mut bytes = 0u64;
    let t = Instant::now();
    for (k, p) in paths.iter().enumerate() {
        bytes += std::fs::metadata(p).map_err(err)?.len();
        let mut cmd = Command::new("dd");
        cmd.arg(format!("if={}", p.display())).arg(format!("of={}", out.display())).arg("bs=1M");
        if k > 0 {
            cmd.args(["oflag=append", "conv=notrunc"]);
        }
        run_cmd(&mut cmd)?;
    }
    let rate = bytes as f64 / t.elapsed().as_secs_f64() / 1e6;
    std::fs::remove_file(&out).map_err(err)?;
    Ok(rate)
}

/// The share of `path`'s page-cache pages that sit in large folios (compound pages), for a
/// file already in the page cache: maps it, touches every page, and reads each page's flags
/// through `/proc/self/pagemap` and `/proc/kpageflags` (root). A page cache of 4 KiB pages is
/// walked and copied page by page; large folios are what lets a warm `read` of a local file
/// run at memory speed. `None` where the kernel hides page frames (not root).
fn large_folio_share(path: &Path) -> Result<Option<f64>, String> {
    use std::os::unix::fs::FileExt;
    const PAGE: usize = 4096;
    const KPF_COMPOUND_HEAD: u64 = 1 << 15;
    const KPF_COMPOUND_TAIL: u64 = 1 << 16;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file.metadata().map_err(err)?.len() as usize;
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: a read-only map of a file nothing writes while it is mapped (the view is
    // read-only; the plain copy is this benchmark's own).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("mmap {}: {e}", path.display()))?;
    let pages = len.div_ceil(PAGE);
    for i in 0..pages {
        // A volatile load, so the touch that faults the page in is not optimised away.
        // SAFETY: `i * PAGE` is inside the map.
        unsafe { std::ptr::read_volatile(map.as_ptr().add(i * PAGE)) };
    }
    let pagemap = std::fs::File::open("/proc/self/pagemap").map_err(err)?;
    let kpageflags = std::fs::File::open("/proc/kpageflags").map_err(|e| format!("/proc/kpageflags: {e}"))?;
    let mut entries = vec![0u8; pages * 8];
    pagemap.read_exact_at(&mut entries, (map.as_ptr() as u64 / PAGE as u64) * 8).map_err(err)?;
    let (mut present, mut large) = (0u64, 0u64);
    let mut flags = [0u8; 8];
    for e in entries.chunks_exact(8) {
        let e = u64::from_le_bytes(e.try_into().expect("8 bytes"));
        let pfn = e & ((1 << 55) - 1);
        if e >> 63 == 0 || pfn == 0 {
            continue;
        }
        kpageflags.read_exact_at(&mut flags, pfn * 8).map_err(err)?;
        present += 1;
        if u64::from_le_bytes(flags) & (KPF_COMPOUND_HEAD | KPF_COMPOUND_TAIL) != 0 {
            large += 1;
        }
    }
    Ok(if present == 0 { None } else { Some(large as f64 / present as f64) })
}

/// Reads dataset `name` of `file` with h5py into one numpy array allocated and touched
/// beforehand (`read_direct`): `warmups` reads, then `reps` timed ones; returns the best MB/s.
/// A fresh `d[:]` array per read would time first touches of new memory (slow on this machine
/// kind, and the same for mount and plain file) rather than the read.
fn h5py_read(file: &Path, name: &str, warmups: u32, reps: u32) -> Result<f64, String> {
    let script = "import sys, time, h5py, numpy as np\n\
        f = h5py.File(sys.argv[1], 'r'); d = f[sys.argv[2]]\n\
        a = np.empty(d.shape, d.dtype); a.fill(0)\n\
        for k in range(int(sys.argv[3])):\n    d.read_direct(a)\n\
        best = 0\n\
        for k in range(int(sys.argv[4])):\n    t = time.perf_counter(); d.read_direct(a); dt = time.perf_counter() - t\n    best = max(best, a.nbytes / dt / 1e6)\n\
        print(best)\n";
    let out = run_cmd(
        Command::new(python()).args(["-c", script]).arg(file).arg(name).arg(warmups.to_string()).arg(reps.to_string()),
    )?;
    out.trim().parse().map_err(|e| format!("h5py output {out:?}: {e}"))
}

/// The best of `reps` runs of `f` (MB/s): warm figures are the machine's, not its noise.
fn best(reps: u32, mut f: impl FnMut() -> Result<f64, String>) -> Result<f64, String> {
    (0..reps).try_fold(0f64, |b, _| Ok(b.max(f()?)))
}

/// Mount cycles timed per run size; the figures are their medians.
const MOUNT_REPS: usize = 5;

/// Median `View::open` and open+mount+stat seconds of `MOUNT_REPS` fresh mounts of a demo
/// run of `events` events. The run is synced first, so the mounts do not share the machine
/// with the writeback of the run just written.
fn mount_time(base: &Path, events: u64) -> Result<(f64, f64), String> {
    let run = base.join(format!("mount-{events}"));
    smdfs::demo::write_demo(&run, events, 4, 4, true).map_err(err)?;
    Command::new("sync").status().map_err(err)?;
    let mnt = base.join(format!("mnt-{events}"));
    std::fs::create_dir_all(&mnt).map_err(err)?;
    let (mut opens, mut totals) = (Vec::new(), Vec::new());
    for _ in 0..MOUNT_REPS {
        let t = Instant::now();
        let view = View::open(&run, &ViewOptions::default()).map_err(err)?;
        opens.push(t.elapsed().as_secs_f64());
        let m = mount(view, &mnt, &MountOptions::default()).map_err(err)?;
        std::fs::metadata(mnt.join("run.h5")).map_err(err)?;
        totals.push(t.elapsed().as_secs_f64());
        m.unmount().map_err(err)?;
    }
    std::fs::remove_dir_all(&run).map_err(err)?;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(opens), median(totals)))
}

fn write_images(run: &Path, mib: u64) -> Result<u64, String> {
    let events = mib * 1024 * 1024 / (64 * 1024);
    let smd = SmallData::builder(run).servers(2).overwrite(true).build().map_err(err)?;
    std::thread::scope(|s| -> Result<(), String> {
        let hs: Vec<_> = (0..4u64)
            .map(|k| {
                let mut c = smd.client();
                s.spawn(move || -> Result<(), String> {
                    let mut img = vec![0u16; 128 * 256];
                    for i in (k..events).step_by(4) {
                        img[0] = i as u16;
                        img[1] = (i >> 16) as u16;
                        c.event(i, [("img", Value::array(&img, &[128, 256]))]).map_err(err)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join().map_err(|_| "writer thread panicked".to_string())??;
        }
        Ok(())
    })?;
    smd.done().map_err(err)?;
    Ok(events)
}

/// The shard column files holding `field` of the run's first group, in shard order.
fn shard_column_files(run: &Path, field: &str) -> Result<Vec<PathBuf>, String> {
    let r = smdfs::Run::open(run).map_err(err)?;
    let group = r.groups()[0].spec.name.clone();
    Ok(r.shards()
        .iter()
        .filter_map(|s| s.column(&group, Some(field), Role::Data).map(|c| (s.index, c)))
        .map(|(i, c)| run.join(shard_dir_name(i)).join(column_file_name(c)))
        .collect())
}

fn fresh_mount(run: &Path, mnt: &Path) -> Result<Mounted, String> {
    let live = Live::open(run, &ViewOptions::default()).map_err(err)?;
    mount_live(live, mnt, &MountOptions::default()).map_err(err)
}

fn per_mib(s: &StatsSnapshot, bytes: u64) -> f64 {
    s.requests() as f64 / (bytes as f64 / (1 << 20) as f64)
}

/// One dataset read every way; prints one table.
fn read_case(base: &Path, label: &str, run: &Path, name: &str, npy: &str) -> Result<(), String> {
    let mnt = base.join(format!("mnt-{label}"));
    std::fs::create_dir_all(&mnt).map_err(err)?;
    let (plain_h5, plain_npy) = (base.join(format!("{label}.h5")), base.join(format!("{label}.npy")));
    let m = fresh_mount(run, &mnt)?;
    let (mh5, mnpy) = (mnt.join("run.h5"), mnt.join(npy));
    let size = std::fs::metadata(&mnpy).map_err(err)?.len();
    std::fs::copy(&mh5, &plain_h5).map_err(err)?;
    std::fs::copy(&mnpy, &plain_npy).map_err(err)?;

    // Warm: the best of three reads after a first one.
    dd(std::slice::from_ref(&mnpy))?;
    let before = m.stats();
    let warm_dd_m = best(3, || dd(std::slice::from_ref(&mnpy)))?;
    let warm_req = per_mib(&m.stats().since(&before), 3 * size);
    dd(std::slice::from_ref(&plain_npy))?;
    let warm_dd_p = best(3, || dd(std::slice::from_ref(&plain_npy)))?;
    // run.h5 is in the page cache since the `cp` above.
    let before = m.stats();
    let warm_h5_m = h5py_read(&mh5, name, 1, 3)?;
    let warm_h5_req = per_mib(&m.stats().since(&before), 4 * size);
    let warm_h5_p = h5py_read(&plain_h5, name, 1, 3)?;
    let folios = (large_folio_share(&mnpy)?, large_folio_share(&plain_npy)?);
    m.unmount().map_err(err)?;

    // Daemon path: a fresh mount (empty view cache) over shard files in the page cache.
    let cols = shard_column_files(run, name)?;
    dd(&cols)?;
    let m = fresh_mount(run, &mnt)?;
    let before = m.stats();
    let daemon_m = dd(std::slice::from_ref(&mnpy))?;
    let daemon_req = per_mib(&m.stats().since(&before), size);
    let daemon_s = dd(&cols)?;
    m.unmount().map_err(err)?;
    let fill = dd_into_tmpfs(&cols)?;

    // Cold: nothing cached, a fresh mount.
    drop_caches()?;
    let m = fresh_mount(run, &mnt)?;
    let before = m.stats();
    let cold_dd_m = dd(std::slice::from_ref(&mnpy))?;
    let cold_req = per_mib(&m.stats().since(&before), size);
    m.unmount().map_err(err)?;
    drop_caches()?;
    let cold_dd_p = dd(std::slice::from_ref(&plain_npy))?;
    drop_caches()?;
    let cold_dd_s = dd(&cols)?;
    drop_caches()?;
    let m = fresh_mount(run, &mnt)?;
    let cold_h5_m = h5py_read(&mh5, name, 0, 1)?;
    m.unmount().map_err(err)?;
    drop_caches()?;
    let cold_h5_p = h5py_read(&plain_h5, name, 0, 1)?;

    println!("\n== {label}: {name} ({:.0} MiB), MB/s; ratio = mount / plain", size as f64 / (1 << 20) as f64);
    println!("{:<44} {:>9} {:>9} {:>7} {:>9}", "", "mount", "plain", "ratio", "req/MiB");
    let row = |what: &str, a: f64, b: f64, req: Option<f64>| {
        let req = req.map_or(String::new(), |r| format!("{r:.2}"));
        println!("{what:<44} {a:>9.0} {b:>9.0} {:>7.2} {req:>9}", a / b);
    };
    row("warm dd bs=1M .npy (plain: cp of it)", warm_dd_m, warm_dd_p, Some(warm_req));
    row("warm h5py read_direct run.h5 (plain: cp)", warm_h5_m, warm_h5_p, Some(warm_h5_req));
    row("daemon path dd .npy (plain: shard columns)", daemon_m, daemon_s, Some(daemon_req));
    row("daemon path (plain: shard columns to tmpfs)", daemon_m, fill, None);
    row("cold dd bs=1M .npy (plain: cp of it)", cold_dd_m, cold_dd_p, Some(cold_req));
    row("cold dd bs=1M .npy (plain: shard columns)", cold_dd_m, cold_dd_s, None);
    row("cold h5py read_direct run.h5 (plain: cp)", cold_h5_m, cold_h5_p, None);
    let pct = |s: Option<f64>| s.map_or("n/a".to_string(), |s| format!("{:.1}%", 100.0 * s));
    println!("{:<44} {:>9} {:>9}", "warm .npy pages in large folios", pct(folios.0), pct(folios.1));
    std::fs::remove_file(&plain_h5).map_err(err)?;
    std::fs::remove_file(&plain_npy).map_err(err)?;
    Ok(())
}

/// Bytes of `paths` resident in the page cache (`fincore`, util-linux).
fn resident(paths: &[PathBuf]) -> Result<u64, String> {
    let out = run_cmd(Command::new("fincore").args(["--bytes", "--noheadings", "--output", "RES"]).args(paths))?;
    out.lines().map(|l| l.trim().parse::<u64>().map_err(|e| format!("fincore output {l:?}: {e}"))).sum()
}

/// Reads `path` with `dd` and prints MB/s and what is resident after it.
/// With a mount: the view file and the mount (its counters give requests per MiB).
fn big_pass(what: &str, path: &Path, shards: &[PathBuf], view: Option<(&Path, &Mounted)>) -> Result<f64, String> {
    let before = view.map(|(_, m)| m.stats());
    let rate = dd(&[path.to_path_buf()])?;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let shard_res = gib(resident(shards)?);
    let (view_res, req) = match (view, before) {
        (Some((v, m)), Some(b)) => {
            let size = std::fs::metadata(v).map_err(err)?.len();
            (
                format!("{:.2}", gib(resident(&[v.to_path_buf()])?)),
                format!("{:.2}", per_mib(&m.stats().since(&b), size)),
            )
        }
        _ => ("-".into(), "-".into()),
    };
    println!("{what:<44} {rate:>9.0} {shard_res:>12.2} {view_res:>12} {req:>9}");
    Ok(rate)
}

/// Case 5: a run above half the memory read through the mount twice, with and without
/// drop-behind, beside a plain file of the same size read twice.
fn big_case(base: &Path, mib: u64) -> Result<(), String> {
    let plain = base.join("big-plain.bin");
    run_cmd(
        Command::new("dd")
            .args(["if=/dev/zero", "bs=4M", "conv=fsync"])
            .arg(format!("of={}", plain.display()))
            .arg(format!("count={}", mib / 4)),
    )?;
    println!("{:<44} {:>9} {:>12} {:>12} {:>9}", "", "MB/s", "shards GiB", "view GiB", "req/MiB");
    drop_caches()?;
    let p1 = big_pass("plain file, pass 1 (cold)", &plain, std::slice::from_ref(&plain), None)?;
    let p2 = big_pass("plain file, pass 2", &plain, std::slice::from_ref(&plain), None)?;
    std::fs::remove_file(&plain).map_err(err)?;
    let run = base.join("big");
    write_images(&run, mib)?;
    let cols = shard_column_files(&run, "img")?;
    let mnt = base.join("mnt-big");
    std::fs::create_dir_all(&mnt).map_err(err)?;
    let mut second = Vec::new();
    for (label, drop_behind) in
        [("mount (default: drop-behind)", DropBehind::Auto), ("mount, DropBehind::Never", DropBehind::Never)]
    {
        drop_caches()?;
        let live = Live::open(&run, &ViewOptions::default()).map_err(err)?;
        let m = mount_live(live, &mnt, &MountOptions { drop_behind, ..Default::default() }).map_err(err)?;
        let npy = mnt.join("arrays/img.npy");
        big_pass(&format!("{label}, pass 1 (cold)"), &npy, &cols, Some((&npy, &m)))?;
        second.push(big_pass(&format!("{label}, pass 2"), &npy, &cols, Some((&npy, &m)))?);
        m.unmount().map_err(err)?;
    }
    println!(
        "pass 2 / plain pass 2: drop-behind {:.2}, never {:.2} (plain pass 1 {p1:.0} MB/s, pass 2 {p2:.0})",
        second[0] / p2,
        second[1] / p2
    );
    std::fs::remove_dir_all(&run).map_err(err)?;
    Ok(())
}

/// Commit records in the run's shard logs (replayed with the reader's own decoder).
fn commits(run: &Path) -> Result<u64, String> {
    let shards = Manifest::load(run).map_err(err)?.shards;
    let mut n = 0;
    for i in 0..shards {
        let path = run.join(shard_dir_name(i)).join(LOG_FILE);
        let log = std::fs::read(&path).map_err(err)?;
        n += smdfs::shard::reader::replay_log(&path, &log, false).map_err(err)?.commits;
    }
    Ok(n)
}

/// Writes events `from..to` (id, `x` f64, `y` i32) with 2 clients at full speed, then flushes.
fn write_light(smd: &SmallData, from: u64, to: u64) -> Result<(), String> {
    std::thread::scope(|s| -> Result<(), String> {
        let hs: Vec<_> = (0..2u64)
            .map(|k| {
                let mut c = smd.client();
                s.spawn(move || -> Result<(), String> {
                    for i in (from + k..to).step_by(2) {
                        c.event(i, [("x", Value::from(i as f64)), ("y", Value::from(i as i32))]).map_err(err)?;
                    }
                    c.flush().map_err(err)
                })
            })
            .collect();
        for h in hs {
            h.join().map_err(|_| "writer thread panicked".to_string())??;
        }
        Ok(())
    })
}

/// The live view at `n` events: the refresh that picks up one more round of commits.
fn live_case(base: &Path, n: u64) -> Result<(), String> {
    let run = base.join(format!("live-{n}"));
    let smd = SmallData::builder(&run).servers(2).overwrite(true).build().map_err(err)?;
    let t = Instant::now();
    write_light(&smd, 0, n)?;
    let write_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let live = Live::open(&run, &ViewOptions::default()).map_err(err)?;
    let open_s = t.elapsed().as_secs_f64();
    let mut line = Vec::new();
    for round in 0..3u64 {
        let c0 = commits(&run)?;
        let extra = 100_000;
        write_light(&smd, n + round * extra, n + (round + 1) * extra)?;
        let c1 = commits(&run)?;
        let before = live.stats().snapshot();
        let t = Instant::now();
        // The servers commit asynchronously: refresh until the new commits are seen.
        loop {
            if live.refresh().map_err(err)?.is_some() && live.current().run().len() >= n + (round + 1) * extra {
                break;
            }
            if t.elapsed() > Duration::from_secs(600) {
                return Err(format!("live view never reached {} events", n + (round + 1) * extra));
            }
        }
        let d = live.stats().snapshot().since(&before);
        let took = d.refresh_nanos as f64 / 1e9;
        line.push((took, d.refreshes, c1 - c0, d.refresh_log_bytes, d.refresh_rows_merged));
    }
    // The servers may land one round's commits in parts, each picked up by its own refresh:
    // a commit waits for the next refresh to start (at most the period) and for that one
    // refresh to finish, so the lag is the period plus the time of one refresh.
    let (took, refreshes, new_commits, log_read, merged) = line[line.len() - 1];
    let each = took / refreshes.max(1) as f64;
    println!(
        "{n:>12} {write_s:>9.1} {open_s:>9.3} {each:>10.3} {refreshes:>4} {new_commits:>8} {:>10.2} {merged:>10} {log_read:>11} {:>8.3}",
        took * 1e3 / new_commits.max(1) as f64,
        0.25 + each
    );
    drop(live);
    smd.done().map_err(err)?;
    std::fs::remove_dir_all(&run).map_err(err)?;
    Ok(())
}

/// 16 readers on one mount for `secs` while another mount comes and goes.
fn load_case(base: &Path, secs: u64) -> Result<(), String> {
    let run = base.join("load");
    smdfs::demo::write_demo(&run, 2_000_000, 2, 4, true).map_err(err)?;
    let (mnt, mnt2) = (base.join("mnt-load"), base.join("mnt-load2"));
    std::fs::create_dir_all(&mnt).map_err(err)?;
    std::fs::create_dir_all(&mnt2).map_err(err)?;
    let m = fresh_mount(&run, &mnt)?;
    let h5 = "import sys, time, random, h5py\n\
        f = h5py.File(sys.argv[1], 'r'); end = time.time() + float(sys.argv[2]); n = 0\n\
        names = ['det/image', 'energy', 'count', 'timestamp', 'maybe']\n\
        while time.time() < end:\n\
        \x20   d = f[random.choice(names)]; a = random.randrange(d.shape[0]); b = min(d.shape[0], a + random.randrange(1, 200000))\n\
        \x20   n += d[a:b].nbytes\n\
        print(n)\n";
    let cat = "end=$(( $(date +%s) + $2 )); n=0; while [ $(date +%s) -lt $end ]; do \
        for f in det/image.npy energy.npy count.npy timestamp.npy; do \
        s=$(cat \"$1/arrays/$f\" | wc -c) || exit 1; n=$((n + s)); done; done; echo $n";
    let t = Instant::now();
    let kids: Vec<_> = (0..16)
        .map(|k| {
            let mut c = if k % 2 == 0 {
                let mut c = Command::new(python());
                c.args(["-c", h5]).arg(mnt.join("run.h5")).arg(secs.to_string());
                c
            } else {
                let mut c = Command::new("sh");
                c.args(["-c", cat, "sh"]).arg(&mnt).arg(secs.to_string());
                c
            };
            c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(err)
        })
        .collect::<Result<_, _>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicU64::new(0));
    let cycler = {
        let (stop, cycles, run, mnt2) = (Arc::clone(&stop), Arc::clone(&cycles), run.clone(), mnt2.clone());
        std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Relaxed) {
                let m2 = fresh_mount(&run, &mnt2)?;
                std::fs::read(mnt2.join("arrays/energy.npy")).map_err(err)?;
                // Retried while busy: a process forked meanwhile holds its parent's open files
                // until it execs.
                let mut tries = 0;
                while let Err(e) = smdfs_fuse::mount::unmount(&mnt2) {
                    tries += 1;
                    if tries == 100 {
                        return Err(e.to_string());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                m2.join().map_err(err)?;
                cycles.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    let (mut bytes, mut errors) = (0u64, 0);
    for k in kids {
        let o = k.wait_with_output().map_err(err)?;
        match String::from_utf8_lossy(&o.stdout).trim().parse::<u64>() {
            Ok(b) if o.status.success() => bytes += b,
            _ => {
                errors += 1;
                eprintln!("reader failed: {}", String::from_utf8_lossy(&o.stderr));
            }
        }
    }
    let took = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let cycled = cycler.join().map_err(|_| "mount cycler panicked".to_string())?;
    let s = m.stats();
    m.unmount().map_err(err)?;
    println!(
        "16 readers for {took:.1} s: {:.0} MB/s aggregate, {errors} reader errors, {} mount/unmount cycles ({}), \
         {} requests",
        bytes as f64 / took / 1e6,
        cycles.load(Ordering::Relaxed),
        match cycled {
            Ok(()) => "no errors".to_string(),
            Err(e) => format!("error: {e}"),
        },
        s.requests()
    );
    std::fs::remove_dir_all(&run).map_err(err)?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("view_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let base = tempfile::tempdir_in(&args.dir).map_err(err)?;
    let on = |s: &str| args.only.iter().any(|o| o == s);
    if on("mount") {
        println!("== mount time against event count (demo runs, 4 shards)");
        println!("{:>12}  {:>12}  {:>16}", "events", "View::open s", "open+mount+stat s");
        let mut times = Vec::new();
        for &n in &args.mount_events {
            let (open, total) = mount_time(base.path(), n)?;
            println!("{n:>12}  {open:>12.4}  {total:>16.4}");
            times.push(total);
        }
        if let (Some(first), Some(last)) = (times.first(), times.last()) {
            let (a, b) = (args.mount_events[0], args.mount_events[args.mount_events.len() - 1]);
            println!("ratio mount time {b} / {a} events: {:.2}", last / first);
        }
    }
    if on("read") {
        let images = base.path().join("images");
        write_images(&images, args.read_mib)?;
        read_case(base.path(), &format!("{} MiB images", args.read_mib), &images, "img", "arrays/img.npy")?;
        std::fs::remove_dir_all(&images).map_err(err)?;
        let demo = base.path().join("demo");
        smdfs::demo::write_demo(&demo, args.demo_events, 2, 4, true).map_err(err)?;
        let label = format!("{}-event demo", args.demo_events);
        read_case(base.path(), &label, &demo, "det/image", "arrays/det/image.npy")?;
        std::fs::remove_dir_all(&demo).map_err(err)?;
    }
    if on("live") {
        println!("\n== live view: the refresh that picks up 100k more events (2 servers, writing)");
        println!(
            "{:>12} {:>9} {:>9} {:>10} {:>4} {:>8} {:>10} {:>10} {:>11} {:>8}",
            "events",
            "write s",
            "open s",
            "s/refresh",
            "refr",
            "commits",
            "ms/commit",
            "rows merged",
            "log B read",
            "lag s"
        );
        for &n in &args.live_events {
            live_case(base.path(), n)?;
        }
    }
    if on("big") {
        println!("\n== no double caching: {} MiB of images (memory: see `free`), dd bs=1M twice", args.big_mib);
        big_case(base.path(), args.big_mib)?;
    }
    if on("load") {
        println!("\n== many readers (2M-event demo)");
        load_case(base.path(), args.load_secs)?;
    }
    Ok(())
}
