//! MPI benchmark: events/s of the demo run (docs/ARCHITECTURE.md "The demo run", default 1,000,000 events)
//! written by `mpirun -n P` ranks in MPI mode, for P = 2, 4, 8, beside the same job in threads
//! mode in one process and beside a Python peer doing it the common way, all in one run.
//!
//! Cases, per P (S = 1 server rank for P ≤ 4, P / 4 above; C = P − S client ranks):
//! - smdfs MPI: this binary re-launched as `mpirun -n P mpi_bench --worker OUT N S`, which
//!   starts MPI itself, then times on rank 0 from a barrier to the return of `done()` (shards
//!   closed, index merged, manifest complete; rank 0 returns last): `smdfs::demo::write_demo`
//!   under MPI.
//! - smdfs threads: `write_demo` with S server threads and C client threads in this process.
//! - Python peer (`benches/peers/mpi_h5py_peer.py`): mpi4py + h5py, all P ranks writing, each
//!   appending 4096-event batches to its own chunked HDF5 file, then rank 0 joining them into
//!   one file of virtual datasets (event-id order through strided mappings; written so HDF5
//!   1.10 reads it, which this benchmark checks with Debian's `h5dump`). Timed the same way:
//!   from a barrier after start-up to the join file closed.
//!
//! Seconds exclude process start-up (MPI, Python imports), which `wall s` (the whole
//! `mpirun`) includes. The figure is the ratio of smdfs MPI's events/s to the peer's at the
//! same P. Ranks outnumber this machine's 2 cores at P = 4 and 8: all cases share them. Each
//! case runs `--repeat` times in rounds; the median is reported. Prints figures; never
//! asserts a timing.
//!
//! Run: `cargo run --release -p smdfs-benches --features mpi --bin mpi_bench -- [--events N]
//! [--ranks 2,4,8] [--repeat R] [--dir PATH]`. The peer needs `.venv` with mpi4py, h5py and
//! numpy (`scripts/setup.sh` installs them; `SMDFS_PYTHON` names another interpreter) and
//! MPICH's library reachable as `libmpi.so.12` (setup.sh links it into `.venv/mpich-abi`;
//! otherwise this benchmark makes the link in its temporary directory). Without them the peer
//! is skipped with the reason.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

type BoxErr = Box<dyn std::error::Error>;

const USAGE: &str = "usage: mpi_bench [--events N] [--ranks 2,4,8] [--repeat R] [--dir PATH]";

struct Args {
    events: u64,
    ranks: Vec<usize>,
    repeat: usize,
    dir: Option<PathBuf>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args { events: 1_000_000, ranks: vec![2, 4, 8], repeat: 1, dir: None };
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or_else(|| format!("{k} needs a value\n{USAGE}"));
        match k.as_str() {
            "--events" => a.events = v()?.parse().map_err(|e| format!("--events: {e}"))?,
            "--repeat" => a.repeat = v()?.parse::<usize>().map_err(|e| format!("--repeat: {e}"))?.max(1),
            "--dir" => a.dir = Some(PathBuf::from(v()?)),
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

/// Server ranks for a job of `p` ranks.
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

/// The worker under mpirun: rank 0 prints `{"events":…,"seconds":…,"bytes":…}`.
fn worker(out: &str, events: u64, servers: usize) -> Result<(), BoxErr> {
    use mpi::traits::{Communicator, CommunicatorCollectives};
    // Started here, not by smdfs, so the timing below excludes MPI's start-up (smdfs uses a
    // world the program started, if it has MPI_THREAD_MULTIPLE).
    let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Multiple).ok_or("MPI already started")?;
    let world = universe.world();
    world.barrier();
    let t = Instant::now();
    // done() is collective and rank 0 returns last (it merges the index, then tells the
    // others): rank 0's clock covers the whole job. (A barrier here would spin in MPICH on
    // the ranks done early, taking the cores rank 0 needs.)
    let r = smdfs::demo::write_demo(Path::new(out), events, servers, 0, true)?;
    let secs = t.elapsed().as_secs_f64();
    if world.rank() == 0 {
        println!(r#"{{"events": {}, "seconds": {secs}, "bytes": {}}}"#, r.events, dir_bytes(Path::new(out)));
    }
    Ok(())
}

/// One measurement: events, in-job seconds, wall seconds, bytes.
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

/// The Python peer's interpreter and the `LD_LIBRARY_PATH` that makes mpi4py's wheel find
/// MPICH, or why the peer cannot run.
fn peer_env(tmp: &Path) -> Result<(PathBuf, String), String> {
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
    let ok = Command::new(&python)
        .args(["-c", "import mpi4py.MPI, h5py, numpy"])
        .env("LD_LIBRARY_PATH", &ld)
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !ok.status.success() {
        return Err(format!(
            "{} cannot import mpi4py, h5py and numpy (run scripts/setup.sh): {}",
            python.display(),
            String::from_utf8_lossy(&ok.stderr).lines().last().unwrap_or("")
        ));
    }
    Ok((python, ld))
}

fn median(v: &mut [Sample]) -> Sample {
    v.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    v[v.len() / 2]
}

fn run(a: Args) -> Result<(), BoxErr> {
    let base = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let tmp = tempfile::Builder::new().prefix("mpi_bench").tempdir_in(&base)?;
    let exe = std::env::current_exe()?;
    let peer = peer_env(tmp.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/mpi_h5py_peer.py");
    if let Err(why) = &peer {
        println!("Python peer skipped: {why}");
    }
    let n = a.events.to_string();
    // (case, P) -> samples
    let mut rows: Vec<(String, usize, usize, Vec<Sample>)> = Vec::new();
    let mut h5dump_ok: Option<Result<(), String>> = None;
    for round in 0..a.repeat {
        if a.repeat > 1 {
            println!("round {} of {}", round + 1, a.repeat);
        }
        for &p in &a.ranks {
            let s = servers_for(p);
            let push = |name: String, smp: Sample, rows: &mut Vec<(String, usize, usize, Vec<Sample>)>| match rows
                .iter_mut()
                .find(|r| r.0 == name && r.1 == p)
            {
                Some(r) => r.3.push(smp),
                None => rows.push((name, p, s, vec![smp])),
            };
            let out = tmp.path().join(format!("smdfs-mpi-{p}"));
            println!("running smdfs MPI, {p} ranks ({s} server(s)) ...");
            let smp = run_job(Command::new("mpirun").arg("-n").arg(p.to_string()).arg(&exe).args([
                "--worker",
                out.to_str().ok_or("non-UTF-8 path")?,
                &n,
                &s.to_string(),
            ]))?;
            push("smdfs MPI".into(), smp, &mut rows);
            std::fs::remove_dir_all(&out)?;

            println!("running smdfs threads, {s} server(s) + {} client(s) ...", p - s);
            let out = tmp.path().join(format!("smdfs-threads-{p}"));
            let t = Instant::now();
            let r = smdfs::demo::write_demo(&out, a.events, s, p - s, true)?;
            let secs = t.elapsed().as_secs_f64();
            let bytes = dir_bytes(&out);
            push("smdfs threads".into(), Sample { events: r.events, secs, wall: secs, bytes }, &mut rows);
            std::fs::remove_dir_all(&out)?;

            if let Ok((python, ld)) = &peer {
                println!("running Python peer (mpi4py + h5py), {p} ranks ...");
                let out = tmp.path().join(format!("peer-{p}"));
                let smp = run_job(
                    Command::new("mpirun")
                        .arg("-n")
                        .arg(p.to_string())
                        .arg(python)
                        .arg(&script)
                        .arg(&out)
                        .arg(&n)
                        .env("LD_LIBRARY_PATH", ld),
                )?;
                if h5dump_ok.is_none() {
                    let o = Command::new("h5dump").arg("-H").arg(out.join("run.h5")).output();
                    h5dump_ok = Some(match o {
                        Ok(o) if o.status.success() => Ok(()),
                        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).into_owned()),
                        Err(e) => Err(format!("h5dump: {e}")),
                    });
                }
                push("Python mpi4py + h5py peer".into(), smp, &mut rows);
                std::fs::remove_dir_all(&out)?;
            }
        }
    }

    println!();
    if a.repeat > 1 {
        println!("{} rounds; each row is that case's median run", a.repeat);
    }
    println!(
        "{:<28} {:>5} {:>9} {:>11} {:>13} {:>9} {:>11} {:>8}",
        "case", "ranks", "S + C", "events", "bytes", "seconds", "events/s", "wall s"
    );
    let mut medians = Vec::new();
    for (name, p, s, samples) in &mut rows {
        let m = median(samples);
        let sc = if name.starts_with("Python") { format!("{p} writers") } else { format!("{s} + {}", *p - *s) };
        println!(
            "{:<28} {:>5} {:>9} {:>11} {:>13} {:>9.3} {:>11.0} {:>8.2}",
            name,
            p,
            sc,
            m.events,
            m.bytes,
            m.secs,
            m.events as f64 / m.secs,
            m.wall
        );
        medians.push((name.clone(), *p, m));
    }
    println!();
    for &p in &a.ranks {
        let get = |name: &str| medians.iter().find(|(n, q, _)| n == name && *q == p).map(|(_, _, m)| *m);
        let (Some(mpi), Some(threads)) = (get("smdfs MPI"), get("smdfs threads")) else { continue };
        let rate = |m: Sample| m.events as f64 / m.secs;
        match get("Python mpi4py + h5py peer") {
            Some(peer) => println!(
                "P={p}: ratio smdfs MPI / Python peer: {:.2} (in-job events/s {:.0} / {:.0}; whole mpirun {:.2}); \
                 smdfs MPI / threads: {:.2}",
                rate(mpi) / rate(peer),
                rate(mpi),
                rate(peer),
                peer.wall / mpi.wall,
                rate(mpi) / rate(threads)
            ),
            None => println!("P={p}: smdfs MPI / threads: {:.2}", rate(mpi) / rate(threads)),
        }
    }
    match h5dump_ok {
        Some(Ok(())) => println!("the peer's joined run.h5 opens in h5dump (Debian's HDF5 1.10): ok"),
        Some(Err(e)) => println!("the peer's joined run.h5 does NOT open in h5dump: {e}"),
        None => {}
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--worker") {
        let w: Vec<String> = args.skip(1).collect();
        let (Some(out), Some(Ok(n)), Some(Ok(s))) =
            (w.first(), w.get(1).map(|v| v.parse::<u64>()), w.get(2).map(|v| v.parse::<usize>()))
        else {
            eprintln!("usage: mpi_bench --worker OUT EVENTS SERVERS");
            return ExitCode::from(2);
        };
        return match worker(out, n, s) {
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
