//! Write benchmark: how fast the threads-mode writer stores events, next to how fast this
//! machine writes the same number of bytes sequentially, all measured in one run.
//!
//! Cases: (1) the demo's event mix (`smdfs::demo::write_demo`, small mixed fields, default
//! 1,000,000 events), and the same events written through typed field handles
//! (`Client::begin(id).set(..)`); (2) a 64 KiB-per-event image mix (one u16 `[128, 256]`
//! image plus an f64 per event, default 32,768 events ≈ 2 GiB), written per event with the
//! default settings (no fsync), through the batch API (`Client::events` with 128 events per
//! call, the arrays built before the clock starts), and per event with `sync_commits(true)`
//! (every commit durable before it is written). Baselines, sized to the
//! image mix's bytes: a plain Rust loop of 1 MiB `write()` calls with no fsync (page-cache
//! speed), the same loop made durable (writeback started every 8 MiB, one fdatasync at the
//! end: what `done()` must also do, since closing a shard fsyncs its columns), and the real
//! `dd if=/dev/zero of=FILE bs=1M count=N conv=fdatasync` (one fdatasync at the end). The
//! no-fsync cases are compared with the plain write (and, in the closing ratios, with the
//! durable write), the sync case with dd. Bytes of an smdfs case are the sizes of the files under `shard-*/` and `index/`;
//! seconds run from `build()` to the return of `done()`. Page cache is not dropped: before
//! each case an untimed write of the largest case's size goes into the page cache and is
//! deleted before writeback (in this VM the first write into never-touched memory runs at a
//! third of the speed of later ones, which would penalize whichever case runs first; `--cold`
//! skips it), then `sync` flushes the previous case's dirty pages; no-fsync cases end with
//! their data still dirty in memory. Prints figures and ratios; never asserts a timing.
//!
//! Run: `cargo run --release -p smdfs-benches --bin write_bench -- [--demo-events N]
//! [--image-events N] [--servers S] [--clients C] [--dir PATH] [--cold] [--repeat R] [--only CASES]`
//! (environment variables `WRITE_BENCH_DEMO_EVENTS`, `WRITE_BENCH_IMAGE_EVENTS`,
//! `WRITE_BENCH_SERVERS`, `WRITE_BENCH_CLIENTS`, `WRITE_BENCH_DIR`, `WRITE_BENCH_COLD=1` and
//! `WRITE_BENCH_REPEAT` set the same; command-line arguments win). Page-cache speed in this
//! VM varies by 2x from one write to the next: `--repeat 3` runs every case three times in
//! rounds and reports each case's median and range. For CI: `-- --demo-events 20000 --image-events 512`.
//! `--only batch,plain` runs just those cases (names: demo, handles, image, batch, plain, durable,
//! sync, dd).
//! Files go to a temporary directory on the filesystem of `--dir` (default: the system temp
//! dir, or the directory of this executable if that is tmpfs) and are deleted after each case.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use smdfs::{SmallData, Value};

const MIB: u64 = 1 << 20;
const IMG_SHAPE: [usize; 2] = [128, 256];
const USAGE: &str = "usage: write_bench [--demo-events N] [--image-events N] [--servers S] \
                     [--clients C] [--dir PATH] [--cold] [--repeat R] [--only CASES]\n\
                     defaults: 1000000 demo events, 32768 image events (~2 GiB), 2 servers, \
                     4 clients, the system temp dir; 0 events skips a case.\n\
                     --cold: skip the untimed page-cache warm-up write before each case.\n\
                     --repeat R: run all cases R times (rounds), report each case's median \
                     and MB/s range (default 1).\n\
                     --only CASES: comma-separated subset of demo,handles,image,batch,plain,durable,sync,dd \
                     (default: all; a baseline is sized to the image mix's expected bytes).\n\
                     env: WRITE_BENCH_DEMO_EVENTS, WRITE_BENCH_IMAGE_EVENTS, WRITE_BENCH_SERVERS, \
                     WRITE_BENCH_CLIENTS, WRITE_BENCH_DIR, WRITE_BENCH_COLD=1, WRITE_BENCH_REPEAT";

type BoxErr = Box<dyn std::error::Error>;

struct Args {
    demo_events: u64,
    image_events: u64,
    servers: usize,
    clients: usize,
    dir: Option<PathBuf>,
    cold: bool,
    repeat: usize,
    /// `--only`: the cases to run (all when empty).
    only: Vec<String>,
}

/// The names `--only` takes, one per case.
const CASES: [&str; 8] = ["demo", "handles", "image", "batch", "plain", "durable", "sync", "dd"];

impl Args {
    /// Whether case `name` (one of [`CASES`]) runs.
    fn runs(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }
}

fn parse_num<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    let clean: String = s.chars().filter(|c| *c != '_' && *c != ',').collect();
    clean.parse().map_err(|e| format!("{what}: cannot parse {s:?} as a non-negative integer: {e}"))
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut a = Args {
        demo_events: 1_000_000,
        image_events: 32_768,
        servers: 2,
        clients: 4,
        dir: None,
        cold: false,
        repeat: 1,
        only: vec![],
    };
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(v) = env("WRITE_BENCH_DEMO_EVENTS") {
        a.demo_events = parse_num("WRITE_BENCH_DEMO_EVENTS", &v)?;
    }
    if let Some(v) = env("WRITE_BENCH_IMAGE_EVENTS") {
        a.image_events = parse_num("WRITE_BENCH_IMAGE_EVENTS", &v)?;
    }
    if let Some(v) = env("WRITE_BENCH_SERVERS") {
        a.servers = parse_num("WRITE_BENCH_SERVERS", &v)?;
    }
    if let Some(v) = env("WRITE_BENCH_CLIENTS") {
        a.clients = parse_num("WRITE_BENCH_CLIENTS", &v)?;
    }
    if let Some(v) = env("WRITE_BENCH_DIR") {
        a.dir = Some(v.into());
    }
    if let Some(v) = env("WRITE_BENCH_COLD") {
        a.cold = v != "0";
    }
    if let Some(v) = env("WRITE_BENCH_REPEAT") {
        a.repeat = parse_num("WRITE_BENCH_REPEAT", &v)?;
    }
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (flag.clone(), None),
        };
        if name == "-h" || name == "--help" {
            return Ok(None);
        }
        if name == "--cold" && inline.is_none() {
            a.cold = true;
            continue;
        }
        if !matches!(
            name.as_str(),
            "--demo-events" | "--image-events" | "--servers" | "--clients" | "--dir" | "--repeat" | "--only"
        ) {
            return Err(format!("unknown argument {flag:?}"));
        }
        let val = match inline.or_else(|| it.next()) {
            Some(v) => v,
            None => return Err(format!("{name} needs a value")),
        };
        match name.as_str() {
            "--demo-events" => a.demo_events = parse_num(&name, &val)?,
            "--image-events" => a.image_events = parse_num(&name, &val)?,
            "--servers" => a.servers = parse_num(&name, &val)?,
            "--clients" => a.clients = parse_num(&name, &val)?,
            "--repeat" => a.repeat = parse_num(&name, &val)?,
            "--only" => {
                for c in val.split(',').filter(|c| !c.is_empty()) {
                    if !CASES.contains(&c) {
                        return Err(format!("--only: unknown case {c:?}; cases: {}", CASES.join(",")));
                    }
                    a.only.push(c.to_string());
                }
            }
            _ => a.dir = Some(val.into()),
        }
    }
    if a.servers == 0 || a.servers > 1 << 16 {
        return Err(format!("--servers must be 1..=65536, got {}", a.servers));
    }
    if a.repeat == 0 || a.repeat > 100 {
        return Err(format!("--repeat must be 1..=100, got {}", a.repeat));
    }
    if a.clients == 0 || a.clients > 4096 {
        return Err(format!("--clients must be 1..=4096, got {}", a.clients));
    }
    Ok(Some(a))
}

/// One line of the table.
struct Row {
    case: String,
    events: Option<u64>,
    bytes: u64,
    secs: f64,
    /// Name of the row whose MB/s this row is compared with (itself for a baseline).
    baseline: &'static str,
}

impl Row {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs
    }
}

/// Filesystem type of `p` as `stat -f` names it ("ext2/ext3", "tmpfs", ...).
fn fs_type(p: &Path) -> String {
    Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(p)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Device and mount point of `p` from `df`.
fn df_line(p: &Path) -> String {
    Command::new("df")
        .args(["-P", "-T"])
        .arg(p)
        .output()
        .ok()
        .and_then(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.lines().nth(1).map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                match (f.first(), f.get(1), f.last()) {
                    (Some(dev), Some(ty), Some(mnt)) => format!("{dev} ({ty}) mounted on {mnt}"),
                    _ => l.to_string(),
                }
            })
        })
        .unwrap_or_else(|| "unknown device".into())
}

/// Picks the base directory: the user's, else the temp dir unless it is tmpfs/ramfs, else
/// the directory of this executable (the target dir, on disk).
fn base_dir(user: Option<PathBuf>) -> Result<PathBuf, BoxErr> {
    if let Some(d) = user {
        std::fs::create_dir_all(&d).map_err(|e| format!("--dir {}: {e}", d.display()))?;
        return Ok(d);
    }
    let tmp = std::env::temp_dir();
    let t = fs_type(&tmp);
    if t != "tmpfs" && t != "ramfs" {
        return Ok(tmp);
    }
    let exe = std::env::current_exe()?;
    let d = exe.parent().ok_or("executable has no parent directory")?.join("write_bench_tmp");
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
}

/// Sum of the sizes of the files under the run's `shard-*/` and `index/` directories.
fn run_bytes(dir: &Path) -> Result<u64, BoxErr> {
    fn walk(p: &Path) -> std::io::Result<u64> {
        let mut n = 0;
        for e in std::fs::read_dir(p)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                n += walk(&e.path())?;
            } else if t.is_file() {
                n += e.metadata()?.len();
            }
        }
        Ok(n)
    }
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if e.file_type()?.is_dir() && (name.starts_with("shard-") || name == smdfs::format::manifest::INDEX_DIR) {
            n += walk(&e.path())?;
        }
    }
    Ok(n)
}

/// Flushes every dirty page (the previous case's) so the next case starts from a clean cache.
fn sync_all() {
    match Command::new("sync").status() {
        Ok(s) if s.success() => {}
        other => eprintln!("warning: `sync` failed ({other:?}); cases may overlap with writeback"),
    }
}

/// A fresh temporary directory under `base`, removed (and synced) by [`finish_case`].
fn case_dir(base: &Path) -> Result<tempfile::TempDir, BoxErr> {
    Ok(tempfile::Builder::new().prefix("write_bench.").tempdir_in(base)?)
}

fn finish_case(t: tempfile::TempDir) -> Result<(), BoxErr> {
    t.close()?;
    sync_all();
    Ok(())
}

fn demo_case(base: &Path, events: u64, servers: usize, clients: usize) -> Result<Row, BoxErr> {
    let t = case_dir(base)?;
    let dir = t.path().join("run");
    let t0 = Instant::now();
    let rep = smdfs::demo::write_demo(&dir, events, servers, clients, false)?;
    let secs = t0.elapsed().as_secs_f64();
    if rep.events != events {
        return Err(format!("demo: done() reports {} events, expected {events}", rep.events).into());
    }
    let bytes = run_bytes(&dir)?;
    finish_case(t)?;
    Ok(Row {
        case: format!("smdfs demo mix (S={servers}, C={clients})"),
        events: Some(events),
        bytes,
        secs,
        baseline: "plain write",
    })
}

/// What a timed client case is: its row's name and baseline, and how many events it must
/// report.
struct Case {
    name: String,
    baseline: &'static str,
    events: u64,
}

/// Runs one timed case: `build` makes the run (and whatever the clients share, e.g. field
/// handles) after the clock starts; one thread per element of `states` (made before the
/// clock) calls `body(k, state, shared, client)` and finishes its client; the clock stops
/// when `done()` returns, whose event count must be `case.events`.
fn clients_case<S: Send, H: Sync>(
    base: &Path,
    case: Case,
    mut states: Vec<S>,
    build: impl FnOnce(&Path) -> smdfs::Result<(SmallData, H)>,
    body: impl Fn(usize, &mut S, &H, &mut smdfs::Client) -> smdfs::Result<()> + Sync,
) -> Result<Row, BoxErr> {
    let t = case_dir(base)?;
    let dir = t.path().join("run");
    let t0 = Instant::now();
    let (smd, shared) = build(&dir)?;
    std::thread::scope(|s| -> Result<(), BoxErr> {
        let handles: Vec<_> = states
            .iter_mut()
            .enumerate()
            .map(|(k, st)| {
                let mut c = smd.client();
                let (body, shared) = (&body, &shared);
                s.spawn(move || -> smdfs::Result<()> {
                    body(k, st, shared, &mut c)?;
                    c.finish()
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| format!("{}: a client thread panicked", case.name))??;
        }
        Ok(())
    })?;
    let rep = smd.done()?;
    let secs = t0.elapsed().as_secs_f64();
    if rep.events != case.events {
        return Err(format!("{}: done() reports {} events, expected {}", case.name, rep.events, case.events).into());
    }
    let bytes = run_bytes(&dir)?;
    finish_case(t)?;
    Ok(Row { case: case.name, events: Some(case.events), bytes, secs, baseline: case.baseline })
}

fn image_case(base: &Path, events: u64, servers: usize, clients: usize, sync: bool) -> Result<Row, BoxErr> {
    let n_img: usize = IMG_SHAPE.iter().product();
    // Per-thread buffers are made and touched before the clock starts.
    let bufs: Vec<Vec<u16>> = (0..clients).map(|k| (0..n_img).map(|j| (j + k) as u16).collect()).collect();
    let mode = if sync { ", sync_commits" } else { "" };
    let case = Case {
        name: format!("smdfs 64 KiB image mix (S={servers}, C={clients}{mode})"),
        baseline: if sync { "dd conv=fdatasync" } else { "plain write" },
        events,
    };
    clients_case(
        base,
        case,
        bufs,
        |dir| Ok((SmallData::builder(dir).servers(servers).sync_commits(sync).build()?, ())),
        |k, img, _, c| {
            let mut i = k as u64;
            while i < events {
                img[(i as usize) % n_img] = i as u16;
                c.event(i, [("img", Value::array(&img[..], &IMG_SHAPE)), ("e", Value::from(i as f64))])?;
                i += clients as u64;
            }
            Ok(())
        },
    )
}

/// The demo's formula written through typed field handles (`Client::begin(id).set(..)`):
/// the same events, fields and client split as `smdfs::demo::write_demo`.
fn demo_handles_case(base: &Path, events: u64, servers: usize, clients: usize) -> Result<Row, BoxErr> {
    use smdfs::demo;
    use std::fmt::Write as _;
    let case = Case {
        name: format!("smdfs demo mix, field handles (S={servers}, C={clients})"),
        baseline: "plain write",
        events,
    };
    let texts: Vec<String> = (0..clients).map(|_| String::with_capacity(24)).collect();
    clients_case(
        base,
        case,
        texts,
        |dir| {
            let smd = SmallData::builder(dir).servers(servers).build()?;
            let h = (
                smd.scalar::<f64>("energy")?,
                smd.array::<u16>("det/image", &[4, 8])?,
                smd.scalar::<i64>("count")?,
                smd.scalar::<f32>("maybe")?,
                smd.scalar::<u32>("unaligned_hits")?,
                smd.bytes("tag")?,
            );
            Ok((smd, h))
        },
        |k, text, (energy, image, count, maybe, hits, tag), c| {
            let mut i = k as u64;
            while i < events {
                text.clear();
                write!(text, "evt{i}").expect("writing to a String");
                let mut row = c
                    .begin(demo::id(i))
                    .set(energy, demo::energy(i))
                    .set(image, &demo::image(i))
                    .set(count, demo::count(i))
                    .set(tag, text.as_bytes());
                if let Some(m) = demo::maybe(i) {
                    row = row.set(maybe, m);
                }
                if let Some(h) = demo::hits(i) {
                    row = row.set(hits, h);
                }
                row.write()?;
                i += clients as u64;
            }
            Ok(())
        },
    )
}

/// Events per `Client::events` call in the batch-API image case.
const BATCH_ROWS: usize = 128;

/// The image mix through the batch API: each client holds `BATCH_ROWS` events as whole
/// arrays (ids, images, energies, made before the clock starts) and hands them to
/// `Client::events` call after call.
fn image_batch_case(base: &Path, events: u64, servers: usize, clients: usize) -> Result<Row, BoxErr> {
    let n_img: usize = IMG_SHAPE.iter().product();
    let bufs: Vec<(Vec<u16>, Vec<f64>, Vec<u64>)> = (0..clients)
        .map(|k| {
            let img = (0..n_img * BATCH_ROWS).map(|j| (j + k) as u16).collect();
            (img, vec![0.0; BATCH_ROWS], vec![0; BATCH_ROWS])
        })
        .collect();
    let case = Case {
        name: format!("smdfs 64 KiB image mix, batch API events() (S={servers}, C={clients})"),
        baseline: "plain write",
        events,
    };
    clients_case(
        base,
        case,
        bufs,
        |dir| Ok((SmallData::builder(dir).servers(servers).build()?, ())),
        |k, (img, e, ids), _, c| {
            let mut i = k as u64;
            while i < events {
                let mut n = 0;
                while n < BATCH_ROWS && i < events {
                    ids[n] = i;
                    e[n] = i as f64;
                    img[n * n_img] = i as u16;
                    n += 1;
                    i += clients as u64;
                }
                let cols =
                    [smdfs::Column::array("img", &img[..n * n_img], &IMG_SHAPE), smdfs::Column::scalar("e", &e[..n])];
                c.events(&ids[..n], &cols)?;
            }
            Ok(())
        },
    )
}

/// Untimed: writes `mib` MiB into the page cache and deletes the file before writeback, so
/// the next case gets page-cache pages this VM has touched before (the first write into
/// fresh guest memory runs at a third of the speed of later ones). Returns its MB/s.
fn warm_up(base: &Path, mib: u64) -> Result<f64, BoxErr> {
    let t = case_dir(base)?;
    let path = t.path().join("warmup.bin");
    let buf = vec![0x5au8; MIB as usize];
    let t0 = Instant::now();
    let mut f = File::create(&path)?;
    for _ in 0..mib {
        f.write_all(&buf)?;
    }
    drop(f);
    let secs = t0.elapsed().as_secs_f64();
    t.close()?;
    sync_all();
    Ok((mib * MIB) as f64 / 1e6 / secs)
}

/// 1 MiB of xorshift bytes from `seed` (no page of it compresses or repeats).
fn noise_mib(seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..MIB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect()
}

/// `mib` MiB of non-zero bytes in 1 MiB `write()` calls, no fsync.
fn plain_write_case(base: &Path, mib: u64) -> Result<Row, BoxErr> {
    let t = case_dir(base)?;
    let path = t.path().join("plain.bin");
    let mut buf = noise_mib(0x9e37_79b9_7f4a_7c15);
    let t0 = Instant::now();
    let mut f = File::create(&path)?;
    for k in 0..mib {
        buf[0] = k as u8;
        f.write_all(&buf)?;
    }
    drop(f);
    let secs = t0.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path)?.len();
    finish_case(t)?;
    Ok(Row {
        case: "plain write, 1 MiB write() calls, no fsync".into(),
        events: None,
        bytes,
        secs,
        baseline: "plain write",
    })
}

/// The same 1 MiB `write()` loop made durable the fastest way this machine allows:
/// writeback started (`sync_file_range(WRITE)`) after every 8 MiB so the device works while
/// the loop copies, and one fdatasync at the end. smdfs' `done()` makes every column durable
/// (close fsyncs them, FORMAT.md) even without `sync_commits`, so this is the bound a
/// no-fsync smdfs case can reach; the plain write above leaves its bytes dirty in memory.
fn durable_write_case(base: &Path, mib: u64) -> Result<Row, BoxErr> {
    use std::os::fd::AsRawFd;
    const STEP: u64 = 8;
    let t = case_dir(base)?;
    let path = t.path().join("durable.bin");
    let mut buf = noise_mib(0x2545_f491_4f6c_dd1d);
    let t0 = Instant::now();
    let mut f = File::create(&path)?;
    for k in 0..mib {
        buf[0] = k as u8;
        f.write_all(&buf)?;
        if (k + 1) % STEP == 0 {
            let from = ((k + 1 - STEP) * MIB) as i64;
            // SAFETY: a plain syscall on an open descriptor; no memory is passed.
            unsafe { libc::sync_file_range(f.as_raw_fd(), from, (STEP * MIB) as i64, libc::SYNC_FILE_RANGE_WRITE) };
        }
    }
    f.sync_data()?;
    drop(f);
    let secs = t0.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path)?.len();
    finish_case(t)?;
    Ok(Row {
        case: "durable write, 1 MiB write() calls, writeback every 8 MiB, fdatasync".into(),
        events: None,
        bytes,
        secs,
        baseline: "durable write",
    })
}

/// The real dd with one fdatasync at the end; returns the row and dd's own summary line.
fn dd_case(base: &Path, mib: u64) -> Result<(Row, String), BoxErr> {
    let t = case_dir(base)?;
    let path = t.path().join("dd.bin");
    let mut of = std::ffi::OsString::from("of=");
    of.push(path.as_os_str());
    let t0 = Instant::now();
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(&of)
        .arg("bs=1M")
        .arg(format!("count={mib}"))
        .arg("conv=fdatasync")
        .output()
        .map_err(|e| format!("cannot run dd: {e}"))?;
    let secs = t0.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(format!("dd failed ({}): {}", out.status, err.trim()).into());
    }
    let bytes = std::fs::metadata(&path)?.len();
    finish_case(t)?;
    let summary = err.lines().last().unwrap_or("").trim().to_string();
    Ok((
        Row { case: "dd bs=1M conv=fdatasync".into(), events: None, bytes, secs, baseline: "dd conv=fdatasync" },
        summary,
    ))
}

fn read_first_line(p: &str) -> String {
    std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_else(|_| "?".into())
}

fn mem_available_gib() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or_else(|| "?".into(), |kb| format!("{:.1}", kb / (1u64 << 20) as f64))
}

fn fmt_int(n: u64) -> String {
    let digits: Vec<char> = n.to_string().chars().rev().collect();
    let groups: Vec<String> = digits.chunks(3).map(|g| g.iter().rev().collect()).collect();
    groups.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn print_table(rows: &[Row], ranges: &[Option<(f64, f64)>]) {
    let show_range = ranges.iter().any(Option::is_some);
    let header = [
        "case",
        "events",
        "bytes",
        "seconds",
        "events/s",
        "MB/s",
        if show_range { "MB/s min-max" } else { "" },
        "ratio to baseline",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .zip(ranges)
        .map(|(r, range)| {
            let base = rows.iter().find(|b| b.case_key() == r.baseline);
            let ratio = if r.case_key() == r.baseline {
                "1.00 (baseline)".to_string()
            } else {
                match base {
                    Some(b) => format!("{:.2} x {}", r.mb_s() / b.mb_s(), r.baseline),
                    None => format!("- ({} not run)", r.baseline),
                }
            };
            [
                r.case.clone(),
                r.events.map_or_else(|| "-".into(), fmt_int),
                fmt_int(r.bytes),
                format!("{:.3}", r.secs),
                r.events.map_or_else(|| "-".into(), |e| fmt_int((e as f64 / r.secs) as u64)),
                format!("{:.0}", r.mb_s()),
                range.map_or_else(String::new, |(lo, hi)| format!("{lo:.0}-{hi:.0}")),
                ratio,
            ]
        })
        .collect();
    let mut w = header.map(str::len);
    for c in &cells {
        for (k, s) in c.iter().enumerate() {
            w[k] = w[k].max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let mut s = format!("{:<w0$}", c[0], w0 = w[0]);
        for k in 1..7 {
            if k < 6 || show_range {
                s.push_str(&format!("  {:>wk$}", c[k], wk = w[k]));
            }
        }
        s.push_str(&format!("  {}", c[7]));
        println!("{}", s.trim_end());
    };
    line(&header.map(String::from));
    for c in &cells {
        line(c);
    }
}

impl Row {
    /// The baseline name this row stands for, if it is one.
    fn case_key(&self) -> &'static str {
        if self.case.starts_with("plain write") {
            "plain write"
        } else if self.case.starts_with("durable write") {
            "durable write"
        } else if self.case.starts_with("dd ") {
            "dd conv=fdatasync"
        } else {
            ""
        }
    }
}

fn ratio_line(rows: &[Row], only: bool, what: &str, pick: impl Fn(&Row) -> bool, base: &'static str) {
    let r = rows.iter().find(|r| pick(r));
    let b = rows.iter().find(|b| b.case_key() == base);
    match (r, b) {
        (Some(r), Some(b)) => {
            println!("ratio {what} / {base}: {:.2}  ({:.0} / {:.0} MB/s)", r.mb_s() / b.mb_s(), r.mb_s(), b.mb_s())
        }
        // A case left out with --only has no line.
        _ if only => {}
        _ => println!("ratio {what} / {base}: - (a case was not run)"),
    }
}

fn run(a: Args) -> Result<(), BoxErr> {
    let base = base_dir(a.dir.clone())?;
    // Warm-up size: the larger case's expected bytes (64 KiB + 8 per image event, ~140 per
    // demo event).
    let warm_mib = (a.image_events * 65_544).max(a.demo_events * 140).div_ceil(MIB).max(1);
    println!("write_bench: smdfs threads-mode writer vs this machine's sequential write");
    println!("dir: {} on {} [stat -f: {}]", base.display(), df_line(&base), fs_type(&base));
    if a.cold {
        println!("page cache: cold as it is (--cold: no warm-up); not dropped; `sync` before each case");
    } else {
        println!(
            "page cache: before each case an untimed {warm_mib} MiB write into the page cache, deleted \
             before writeback (warms this VM's fresh memory); not dropped; `sync` before each case"
        );
    }
    println!(
        "no-fsync cases end with their data dirty in memory (vm.dirty_ratio {}%, dirty_background_ratio \
         {}%, MemAvailable {} GiB)",
        read_first_line("/proc/sys/vm/dirty_ratio"),
        read_first_line("/proc/sys/vm/dirty_background_ratio"),
        mem_available_gib(),
    );
    println!(
        "MB = 1e6 bytes; smdfs bytes = files under shard-*/ and index/; smdfs seconds = build() to done(); \
         {} cpus",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    sync_all();
    let mut warm = Vec::new();
    let mut prep = |what: &str| -> Result<(), BoxErr> {
        if !a.cold {
            warm.push(warm_up(&base, warm_mib)?);
        }
        eprintln!("running {what} ...");
        Ok(())
    };
    // runs[k]: every round's row of case k (cases run in the same order each round).
    let mut runs: Vec<Vec<Row>> = Vec::new();
    let mut dd_summary = None;
    for round in 0..a.repeat {
        let mut got = Vec::new();
        if a.repeat > 1 {
            eprintln!("round {} of {}", round + 1, a.repeat);
        }
        if a.demo_events > 0 && a.runs("demo") {
            prep(&format!("demo mix, {} events", a.demo_events))?;
            got.push(demo_case(&base, a.demo_events, a.servers, a.clients)?);
        }
        if a.demo_events > 0 && a.runs("handles") {
            prep(&format!("demo mix through field handles, {} events", a.demo_events))?;
            got.push(demo_handles_case(&base, a.demo_events, a.servers, a.clients)?);
        }
        if a.image_events > 0 {
            // The baselines' size: the image mix's bytes (or their expected size when the
            // per-event case is left out by --only).
            let mut mib = (a.image_events * 65_544).div_ceil(MIB).max(1);
            if a.runs("image") {
                prep(&format!("image mix, {} events", a.image_events))?;
                let img = image_case(&base, a.image_events, a.servers, a.clients, false)?;
                mib = img.bytes.div_ceil(MIB).max(1);
                got.push(img);
            }
            if a.runs("batch") {
                prep(&format!("image mix through the batch API, {} events", a.image_events))?;
                got.push(image_batch_case(&base, a.image_events, a.servers, a.clients)?);
            }
            if a.runs("plain") {
                prep(&format!("plain write, {mib} MiB"))?;
                got.push(plain_write_case(&base, mib)?);
            }
            if a.runs("durable") {
                prep(&format!("durable write, {mib} MiB"))?;
                got.push(durable_write_case(&base, mib)?);
            }
            if a.runs("sync") {
                prep("image mix with sync_commits")?;
                got.push(image_case(&base, a.image_events, a.servers, a.clients, true)?);
            }
            if a.runs("dd") {
                prep(&format!("dd, {mib} MiB"))?;
                let (row, s) = dd_case(&base, mib)?;
                got.push(row);
                dd_summary = Some(s);
            }
        } else if let Some(demo) = got.first().filter(|_| a.runs("plain")) {
            let mib = demo.bytes.div_ceil(MIB).max(1);
            prep(&format!("plain write, {mib} MiB"))?;
            got.push(plain_write_case(&base, mib)?);
        }
        runs.resize_with(got.len(), Vec::new);
        for (k, r) in got.into_iter().enumerate() {
            runs[k].push(r);
        }
    }
    // Each case's median run by MB/s (the lower middle for an even count), and its range.
    let mut rows = Vec::new();
    let mut ranges = Vec::new();
    for mut v in runs {
        v.sort_by(|x, y| x.mb_s().total_cmp(&y.mb_s()));
        let range = (v.len() > 1).then(|| (v[0].mb_s(), v[v.len() - 1].mb_s()));
        let mid = (v.len() - 1) / 2;
        rows.push(v.swap_remove(mid));
        ranges.push(range);
    }
    if a.repeat > 1 {
        println!("{} rounds; each row is that case's median run by MB/s", a.repeat);
    }
    println!();
    print_table(&rows, &ranges);
    println!();
    let is_img = |sync: bool| move |r: &Row| r.case.contains("image") && r.case.contains("sync_commits") == sync;
    if a.demo_events > 0 {
        ratio_line(
            &rows,
            !a.only.is_empty(),
            "smdfs demo mix",
            |r| r.case.contains("demo") && !r.case.contains("handles"),
            "plain write",
        );
        ratio_line(
            &rows,
            !a.only.is_empty(),
            "smdfs demo mix, field handles",
            |r| r.case.contains("handles"),
            "plain write",
        );
    }
    if a.image_events > 0 {
        let per_event = |r: &Row| is_img(false)(r) && !r.case.contains("batch API");
        let batch = |r: &Row| r.case.contains("batch API");
        for base in ["plain write", "durable write"] {
            ratio_line(&rows, !a.only.is_empty(), "smdfs image mix", per_event, base);
            ratio_line(&rows, !a.only.is_empty(), "smdfs image mix, batch API", batch, base);
        }
        ratio_line(&rows, !a.only.is_empty(), "smdfs image mix sync_commits", is_img(true), "dd conv=fdatasync");
    }
    if let Some(s) = dd_summary {
        println!("dd's own report: {s}");
    }
    if !warm.is_empty() {
        let w: Vec<String> = warm.iter().map(|m| format!("{m:.0}")).collect();
        println!("warm-up writes before each case, MB/s (untimed, in run order): {}", w.join(", "));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("write_bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("write_bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}
