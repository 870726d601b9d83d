//! MPI benchmark: events/s and GB/s of `mpirun -n P` ranks writing one run with smdfs in MPI
//! mode, beside the experts' ways of writing from MPI ranks, for P = 2, 4, 8 and two
//! workloads, all in one run:
//!
//! - `demo`: the demo run (docs/ARCHITECTURE.md "The demo run"): small mixed fields, a ragged
//!   tag, a missing-value field and an unaligned group (~110 B of values per event).
//! - `arrays`: what users who already hold arrays write: `energy` f64 = `i * 0.5` and `wave`
//!   f32[64] with element j = `i + j` (264 B of values per event), 1000-event batches.
//!
//! Rank k of P takes events i = k, k + P, … in every case. Cases, per workload and P:
//! - `smdfs per-event, S=P`: this binary re-launched as `mpirun -n P mpi_bench --worker …`;
//!   `servers(P)`: every rank writes its own shard (no bytes cross MPI), one run, one index.
//!   Each event is one `Client::event` call built from scalars (the demo's own writer,
//!   `demo::write_client_share`, for `demo`).
//! - `smdfs batch, S=P`: the same, but every 1000 (`arrays`) / 4096 (`demo`) events are first
//!   built as whole column arrays, as the peers build theirs, then handed over in one
//!   `Client::events` call (the batch API; `demo`'s missing values as presence masks).
//! - `smdfs per-event, S=…+C`: the client/server layout (S server ranks, P − S clients
//!   sending batches with zero-copy `MPI_Issend`s), S = 1 for P ≤ 4, P / 4 above.
//! - `h5py peer` (`benches/peers/mpi_h5py_peer.py`): mpi4py + h5py, every rank appending the
//!   numpy batches to its own chunked HDF5 file, then rank 0 joining them into one file of
//!   virtual datasets in event-id order (checked to open in Debian's HDF5 1.10 `h5dump`).
//! - `ADIOS2 peer` (`benches/peers/mpi_adios2_peer.py`): mpi4py + the PyPI `adios2` wheel
//!   (serial per rank), every rank writing its own BP5 output, one step per batch; no join.
//!
//! Seconds: rank 0's clock from a barrier after start-up (MPI, Python imports) to the end of
//! the job's write: smdfs's `done()` (shards closed, global index built, manifest complete;
//! rank 0 returns last), the h5py peer's join file closed, the ADIOS2 peer's last rank
//! closed. `wall s` is the whole `mpirun`. GB/s counts the values the events carry (ids not
//! included), the same bytes for every writer, so it compares work done, not file sizes.
//! Ranks outnumber this machine's 2 cores at P = 4 and 8; every case shares them. Each case
//! runs `--repeat` times in rounds; the median is reported. Prints figures; never asserts a
//! timing.
//!
//! Run: `cargo run --release -p smdfs-benches --features mpi --bin mpi_bench -- [--events N]
//! [--ranks 2,4,8] [--workloads demo,arrays] [--repeat R] [--dir PATH]`. The peers need
//! `.venv` with mpi4py, h5py, numpy and adios2 (`bash benches/peers/setup.sh`;
//! `SMDFS_PYTHON` names another interpreter) and MPICH's library reachable as
//! `libmpi.so.12` (`.venv/mpich-abi`; otherwise this benchmark makes the link in its
//! temporary directory). A peer that cannot run is skipped with the reason.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use smdfs::{Client, Column, SmallData, Value};

type BoxErr = Box<dyn std::error::Error>;

const USAGE: &str = "usage: mpi_bench [--events N] [--ranks 2,4,8] [--workloads demo,arrays] [--repeat R] [--dir PATH]";

const WORKLOADS: [&str; 2] = ["demo", "arrays"];

struct Args {
    events: u64,
    ranks: Vec<usize>,
    workloads: Vec<String>,
    repeat: usize,
    dir: Option<PathBuf>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        events: 1_000_000,
        ranks: vec![2, 4, 8],
        workloads: WORKLOADS.iter().map(|w| w.to_string()).collect(),
        repeat: 1,
        dir: None,
    };
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or_else(|| format!("{k} needs a value\n{USAGE}"));
        match k.as_str() {
            "--events" => a.events = v()?.parse().map_err(|e| format!("--events: {e}"))?,
            "--repeat" => a.repeat = v()?.parse::<usize>().map_err(|e| format!("--repeat: {e}"))?.max(1),
            "--dir" => a.dir = Some(PathBuf::from(v()?)),
            "--workloads" => {
                a.workloads = v()?.split(',').map(|w| w.trim().to_string()).collect();
                if let Some(w) = a.workloads.iter().find(|w| !WORKLOADS.contains(&w.as_str())) {
                    return Err(format!("--workloads: unknown workload {w:?} (demo, arrays)"));
                }
            }
            "--ranks" => {
                a.ranks = v()?
                    .split(',')
                    .map(|r| r.trim().parse::<usize>().map_err(|e| format!("--ranks: {e}")))
                    .collect::<Result<_, _>>()?;
                if a.ranks.iter().any(|&p| p < 2) {
                    return Err("--ranks: MPI mode needs at least 2 ranks".into());
                }
            }
            "-h" | "--help" => return Err(USAGE.into()),
            _ => return Err(format!("unknown argument {k}\n{USAGE}")),
        }
    }
    Ok(a)
}

/// Server ranks of the client/server layout for a job of `p` ranks.
fn servers_for(p: usize) -> usize {
    if p <= 4 {
        1
    } else {
        p / 4
    }
}

/// Bytes of all files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Bytes of values the workload's `n` events carry (ids not included).
fn value_bytes(workload: &str, n: u64) -> u64 {
    if workload == "arrays" {
        return n * (8 + 64 * 4);
    }
    let (mut tags, mut digits, mut lo) = (3 * n, 1u32, 0u64);
    while lo < n {
        let hi = n.min(10u64.pow(digits));
        tags += u64::from(digits) * (hi - lo);
        lo = hi;
        digits += 1;
    }
    n * (8 + 64 + 8) + n.div_ceil(2) * 4 + n.div_ceil(5) * 4 + tags
}

/// `wave` of `arrays` event `i`.
fn wave(i: u64, out: &mut [f32; 64]) {
    for (j, w) in out.iter_mut().enumerate() {
        *w = i as f32 + j as f32;
    }
}

/// `arrays`, one event per call, built from scalars.
fn arrays_per_event(c: &mut Client, mine: impl Iterator<Item = u64>) -> smdfs::Result<()> {
    let mut w = [0f32; 64];
    for i in mine {
        wave(i, &mut w);
        c.event(smdfs::demo::id(i), [("energy", Value::from(i as f64 * 0.5)), ("wave", Value::array(&w, &[64]))])?;
    }
    Ok(())
}

/// `arrays`, 1000 events at a time built as whole columns, then handed over in one
/// `Client::events` call.
fn arrays_batched(c: &mut Client, mine: &[u64]) -> smdfs::Result<()> {
    let (mut ids, mut energy, mut waves) = (Vec::new(), Vec::new(), Vec::new());
    for chunk in mine.chunks(1000) {
        ids.clear();
        energy.clear();
        waves.clear();
        let mut w = [0f32; 64];
        for &i in chunk {
            ids.push(smdfs::demo::id(i));
            energy.push(i as f64 * 0.5);
            wave(i, &mut w);
            waves.extend_from_slice(&w);
        }
        c.events(&ids, &[Column::scalar("energy", &energy), Column::array("wave", &waves, &[64])])?;
    }
    Ok(())
}

/// `demo`, 4096 events at a time built as whole columns (`maybe` and `unaligned_hits` with
/// presence masks, `tag` as values + offsets), then handed over in one `Client::events` call.
fn demo_batched(c: &mut Client, mine: &[u64]) -> smdfs::Result<()> {
    use smdfs::demo;
    let (mut ids, mut energy, mut images, mut count) = (Vec::new(), Vec::new(), Vec::<u16>::new(), Vec::new());
    let (mut maybe, mut maybe_p, mut hits, mut hits_p) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut tags, mut offs) = (Vec::<u8>::new(), Vec::<u64>::new());
    for chunk in mine.chunks(4096) {
        ids.clear();
        energy.clear();
        images.clear();
        count.clear();
        maybe.clear();
        maybe_p.clear();
        hits.clear();
        hits_p.clear();
        tags.clear();
        offs.clear();
        offs.push(0);
        for &i in chunk {
            ids.push(demo::id(i));
            energy.push(demo::energy(i));
            images.extend_from_slice(&demo::image(i));
            count.push(demo::count(i));
            let (m, h) = (demo::maybe(i), demo::hits(i));
            maybe.push(m.unwrap_or(0.0));
            maybe_p.push(m.is_some());
            hits.push(h.unwrap_or(0));
            hits_p.push(h.is_some());
            tags.extend_from_slice(demo::tag(i).as_bytes());
            offs.push(tags.len() as u64);
        }
        let cols = [
            Column::scalar("energy", &energy),
            Column::array("det/image", &images, &[4, 8]),
            Column::scalar("count", &count),
            Column::scalar("maybe", &maybe).present(&maybe_p),
            Column::scalar("unaligned_hits", &hits).present(&hits_p),
            Column::bytes("tag", &tags, &offs),
        ];
        c.events(&ids, &cols)?;
    }
    Ok(())
}

/// The worker under mpirun: rank 0 prints `{"events":…,"seconds":…,"bytes":…}`.
fn worker(out: &str, events: u64, servers: usize, workload: &str, batched: bool) -> Result<(), BoxErr> {
    use mpi::traits::{Communicator, CommunicatorCollectives};
    // Started here, not by smdfs, so the timing below excludes MPI's start-up (smdfs uses a
    // world the program started, if it has MPI_THREAD_MULTIPLE).
    let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Multiple).ok_or("MPI already started")?;
    let world = universe.world();
    world.barrier();
    let t = Instant::now();
    // done() is collective and rank 0 returns last (it builds the index, then tells the
    // others): rank 0's clock covers the whole job. (A barrier here would spin in MPICH on
    // the ranks done early, taking the cores rank 0 needs.)
    let smd = SmallData::builder(out).servers(servers).overwrite(true).build()?;
    let info = smd.mpi().ok_or("not in MPI mode")?;
    if let smdfs::MpiRole::Client(k) = info.role {
        let mut c = smd.client();
        let (k, n) = (k as u64, info.clients as u64);
        let mine: Vec<u64> = (k..events).step_by(n as usize).collect();
        match (workload, batched) {
            ("demo", false) => smdfs::demo::write_client_share(&mut c, events, n, k)?,
            ("demo", true) => demo_batched(&mut c, &mine)?,
            (_, false) => arrays_per_event(&mut c, mine.iter().copied())?,
            (_, true) => arrays_batched(&mut c, &mine)?,
        }
        c.finish()?;
    }
    let before_done = t.elapsed().as_secs_f64();
    let r = smd.done()?;
    let secs = t.elapsed().as_secs_f64();
    if world.rank() == 0 {
        println!(
            r#"{{"events": {}, "seconds": {secs}, "done": {}, "bytes": {}}}"#,
            r.events,
            secs - before_done,
            dir_bytes(Path::new(out))
        );
    }
    Ok(())
}

/// One measurement: events, in-job seconds, wall seconds, bytes on disk.
#[derive(Clone, Copy, Debug)]
struct Sample {
    events: u64,
    secs: f64,
    wall: f64,
    bytes: u64,
}

/// Reads the one JSON line a job's rank 0 printed.
fn parse_line(out: &str, wall: f64) -> Result<Sample, BoxErr> {
    let line = out.lines().find(|l| l.starts_with('{')).ok_or("no result line")?;
    let num = |key: &str| -> Result<f64, BoxErr> {
        let at = line.find(&format!("\"{key}\":")).ok_or(format!("no {key} in {line}"))? + key.len() + 3;
        let rest = line[at..].trim_start();
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Ok(rest[..end].trim().parse()?)
    };
    Ok(Sample { events: num("events")? as u64, secs: num("seconds")?, wall, bytes: num("bytes")? as u64 })
}

fn run_job(cmd: &mut Command) -> Result<Sample, BoxErr> {
    let t = Instant::now();
    let o = cmd.stdin(Stdio::null()).output()?;
    let wall = t.elapsed().as_secs_f64();
    if !o.status.success() {
        return Err(format!(
            "{:?} failed ({}): {}{}",
            cmd,
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
        .into());
    }
    parse_line(&String::from_utf8_lossy(&o.stdout), wall)
}

/// The peers' interpreter and the `LD_LIBRARY_PATH` that makes mpi4py's wheel find MPICH,
/// or why no peer can run.
fn python_env(tmp: &Path) -> Result<(PathBuf, String), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).to_path_buf();
    let python = std::env::var_os("SMDFS_PYTHON").map(PathBuf::from).unwrap_or_else(|| root.join(".venv/bin/python"));
    let abi = root.join(".venv/mpich-abi");
    let abi = if abi.join("libmpi.so.12").exists() {
        abi
    } else {
        let lib = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"]
            .iter()
            .map(|d| Path::new(d).join("libmpich.so.12"))
            .find(|p| p.exists())
            .ok_or("MPICH's libmpich.so.12 not found (install mpich)")?;
        let d = tmp.join("mpich-abi");
        std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
        let _ = std::os::unix::fs::symlink(lib, d.join("libmpi.so.12"));
        d
    };
    let ld = match std::env::var("LD_LIBRARY_PATH") {
        Ok(old) if !old.is_empty() => format!("{}:{old}", abi.display()),
        _ => abi.display().to_string(),
    };
    Ok((python, ld))
}

/// Whether `python` imports `modules` (with `ld`), or why not.
fn imports(python: &Path, ld: &str, modules: &str) -> Result<(), String> {
    let ok = Command::new(python)
        .args(["-c", &format!("import {modules}")])
        .env("LD_LIBRARY_PATH", ld)
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if ok.status.success() {
        return Ok(());
    }
    Err(format!(
        "{} cannot import {modules} (run bash benches/peers/setup.sh): {}",
        python.display(),
        String::from_utf8_lossy(&ok.stderr).lines().last().unwrap_or("")
    ))
}

/// A peer's interpreter and `LD_LIBRARY_PATH`, or why it cannot run.
type PeerEnv = Result<(PathBuf, String), String>;

fn median(v: &mut [Sample]) -> Sample {
    v.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    v[v.len() / 2]
}

/// A case's samples, by workload, case name and P.
struct Row {
    workload: String,
    case: String,
    p: usize,
    layout: String,
    samples: Vec<Sample>,
}

const PER_EVENT: &str = "smdfs per-event, S=P";
const BATCH: &str = "smdfs batch, S=P";
const SERVERS: &str = "smdfs per-event, server ranks";
const H5PY: &str = "h5py peer";
const ADIOS2: &str = "ADIOS2 peer";

fn run(a: Args) -> Result<(), BoxErr> {
    let base = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let tmp = tempfile::Builder::new().prefix("mpi_bench").tempdir_in(&base)?;
    let exe = std::env::current_exe()?;
    let peers_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers");
    let py = python_env(tmp.path());
    let peer = |modules: &str| match &py {
        Ok((python, ld)) => imports(python, ld, modules).map(|()| (python.clone(), ld.clone())),
        Err(e) => Err(e.clone()),
    };
    let peers: Vec<(&str, &str, PeerEnv)> = vec![
        (H5PY, "mpi_h5py_peer.py", peer("mpi4py.MPI, h5py, numpy")),
        (ADIOS2, "mpi_adios2_peer.py", peer("mpi4py.MPI, adios2, numpy")),
    ];
    for (name, _, p) in &peers {
        if let Err(why) = p {
            println!("{name} skipped: {why}");
        }
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut push = |workload: &str, case: &str, p: usize, layout: String, smp: Sample| match rows
        .iter_mut()
        .find(|r| r.workload == workload && r.case == case && r.p == p)
    {
        Some(r) => r.samples.push(smp),
        None => rows.push(Row { workload: workload.into(), case: case.into(), p, layout, samples: vec![smp] }),
    };
    let mut h5dump_ok: Option<Result<(), String>> = None;
    let n = a.events.to_string();
    for round in 0..a.repeat {
        if a.repeat > 1 {
            println!("round {} of {}", round + 1, a.repeat);
        }
        for workload in &a.workloads {
            for &p in &a.ranks {
                let smdfs_cases = [(PER_EVENT, p, "event"), (BATCH, p, "batch"), (SERVERS, servers_for(p), "event")];
                for (case, s, how) in smdfs_cases {
                    let out = tmp.path().join(format!("smdfs-{p}"));
                    println!("{workload}: {case}, {p} ranks, {s} server(s) ...");
                    let smp = run_job(Command::new("mpirun").arg("-n").arg(p.to_string()).arg(&exe).args([
                        "--worker",
                        out.to_str().ok_or("non-UTF-8 path")?,
                        &n,
                        &s.to_string(),
                        workload,
                        how,
                    ]))?;
                    let layout = if s == p { format!("{p} shards") } else { format!("{s} + {}", p - s) };
                    push(workload, case, p, layout, smp);
                    std::fs::remove_dir_all(&out)?;
                }
                for (case, script, env) in &peers {
                    let Ok((python, ld)) = env else { continue };
                    println!("{workload}: {case}, {p} ranks ...");
                    let out = tmp.path().join(format!("peer-{p}"));
                    let smp = run_job(
                        Command::new("mpirun")
                            .arg("-n")
                            .arg(p.to_string())
                            .arg(python)
                            .arg(peers_dir.join(script))
                            .arg(&out)
                            .arg(&n)
                            .arg(workload)
                            .env("LD_LIBRARY_PATH", ld),
                    )?;
                    if *case == H5PY && h5dump_ok.is_none() {
                        let o = Command::new("h5dump").arg("-H").arg(out.join("run.h5")).output();
                        h5dump_ok = Some(match o {
                            Ok(o) if o.status.success() => Ok(()),
                            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).into_owned()),
                            Err(e) => Err(format!("h5dump: {e}")),
                        });
                    }
                    push(workload, case, p, format!("{p} files"), smp);
                    std::fs::remove_dir_all(&out)?;
                }
            }
        }
    }

    println!();
    if a.repeat > 1 {
        println!("{} rounds; each row is that case's median run", a.repeat);
    }
    println!(
        "{:<8} {:<30} {:>5} {:>10} {:>9} {:>13} {:>8} {:>10} {:>7} {:>7}",
        "workload", "case", "ranks", "layout", "events", "disk bytes", "seconds", "events/s", "GB/s", "wall s"
    );
    let mut medians = Vec::new();
    for r in &mut rows {
        let m = median(&mut r.samples);
        let gbs = value_bytes(&r.workload, m.events) as f64 / m.secs / 1e9;
        println!(
            "{:<8} {:<30} {:>5} {:>10} {:>9} {:>13} {:>8.3} {:>10.0} {:>7.3} {:>7.2}",
            r.workload,
            r.case,
            r.p,
            r.layout,
            m.events,
            m.bytes,
            m.secs,
            m.events as f64 / m.secs,
            gbs,
            m.wall
        );
        medians.push((r.workload.clone(), r.case.clone(), r.p, m));
    }
    println!();
    println!("ratios of events/s (same workload, same P, this run):");
    for workload in &a.workloads {
        for &p in &a.ranks {
            let rate = |case: &str| {
                medians
                    .iter()
                    .find(|(w, c, q, _)| w == workload && c == case && *q == p)
                    .map(|(_, _, _, m)| m.events as f64 / m.secs)
            };
            let mut line = format!("{workload:<7} P={p}:");
            for mine in [PER_EVENT, BATCH, SERVERS] {
                for peer in [H5PY, ADIOS2] {
                    if let (Some(x), Some(y)) = (rate(mine), rate(peer)) {
                        line.push_str(&format!("  {} / {}: {:.2}", short(mine), short(peer), x / y));
                    }
                }
            }
            println!("{line}");
        }
    }
    match h5dump_ok {
        Some(Ok(())) => println!("the h5py peer's joined run.h5 opens in h5dump (Debian's HDF5 1.10): ok"),
        Some(Err(e)) => println!("the h5py peer's joined run.h5 does NOT open in h5dump: {e}"),
        None => {}
    }
    Ok(())
}

fn short(case: &str) -> &str {
    match case {
        PER_EVENT => "per-event",
        BATCH => "batch",
        SERVERS => "server-ranks",
        H5PY => "h5py",
        ADIOS2 => "adios2",
        other => other,
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--worker") {
        let w: Vec<String> = args.skip(1).collect();
        let (Some(out), Some(Ok(n)), Some(Ok(s)), Some(workload), Some(how)) =
            (w.first(), w.get(1).map(|v| v.parse::<u64>()), w.get(2).map(|v| v.parse::<usize>()), w.get(3), w.get(4))
        else {
            eprintln!("usage: mpi_bench --worker OUT EVENTS SERVERS demo|arrays event|batch");
            return ExitCode::from(2);
        };
        return match worker(out, n, s, workload, how == "batch") {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mpi_bench worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mpi_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
