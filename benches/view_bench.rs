//! View benchmark, in one run:
//! 1. Mount time against event count: demo runs of 10^5, 10^6 and 10^7 events in 4 shards,
//!    timed from `View::open` to the first `stat` of `run.h5` through a live FUSE mount.
//!    The figure is the ratio time(10^7) / time(10^5); it should be near 1.
//! 2. Read throughput of a 2 GiB dataset (64 KiB u16 images) through the mount — `dd bs=1M`
//!    of its `.npy` and h5py reading the `run.h5` dataset — beside the same bytes in a plain
//!    local HDF5 file written by h5py, read the same two ways. Each read runs twice and the
//!    second (page cache warm) is reported. The figures are the ratios mount / plain.
//!
//! Run: `cargo run --release -p smdfs-benches --bin view_bench -- [--mount-events 100000,1000000,10000000]
//! [--read-mib 2048] [--dir DIR]`. Needs /dev/fuse (root) and `.venv` with h5py (scripts/setup.sh).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use smdfs::{SmallData, Value};
use smdfs_fuse::mount::{mount, MountOptions};
use smdfs_fuse::{View, ViewOptions};

struct Args {
    mount_events: Vec<u64>,
    read_mib: u64,
    dir: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { mount_events: vec![100_000, 1_000_000, 10_000_000], read_mib: 2048, dir: std::env::temp_dir() };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{k} needs a value"));
        match k.as_str() {
            "--mount-events" => {
                a.mount_events = val()?
                    .split(',')
                    .map(|s| s.trim().parse::<u64>().map_err(|e| format!("--mount-events: {s:?}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--read-mib" => a.read_mib = val()?.parse().map_err(|e| format!("--read-mib: {e}"))?,
            "--dir" => a.dir = PathBuf::from(val()?),
            "-h" | "--help" => {
                return Err("usage: view_bench [--mount-events N,N,..] [--read-mib MIB] [--dir DIR]".into());
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

fn secs(f: impl FnOnce() -> Result<(), String>) -> Result<f64, String> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

fn run_cmd(cmd: &mut Command) -> Result<String, String> {
    let o = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !o.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr)));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn mount_time(base: &Path, events: u64) -> Result<(f64, f64), String> {
    let run = base.join(format!("mount-{events}"));
    smdfs::demo::write_demo(&run, events, 4, 4, true).map_err(|e| e.to_string())?;
    let mnt = base.join(format!("mnt-{events}"));
    std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let view = View::open(&run, &ViewOptions::default()).map_err(|e| e.to_string())?;
    let open = t.elapsed().as_secs_f64();
    let m = mount(view, &mnt, &MountOptions::default()).map_err(|e| e.to_string())?;
    std::fs::metadata(mnt.join("run.h5")).map_err(|e| e.to_string())?;
    let total = t.elapsed().as_secs_f64();
    m.unmount().map_err(|e| e.to_string())?;
    std::fs::remove_dir_all(&run).map_err(|e| e.to_string())?;
    Ok((open, total))
}

fn write_images(run: &Path, mib: u64) -> Result<u64, String> {
    let events = mib * 1024 * 1024 / (64 * 1024);
    let smd = SmallData::builder(run).servers(2).overwrite(true).build().map_err(|e| e.to_string())?;
    std::thread::scope(|s| -> Result<(), String> {
        let hs: Vec<_> = (0..4u64)
            .map(|k| {
                let mut c = smd.client();
                s.spawn(move || -> Result<(), String> {
                    let mut img = vec![0u16; 128 * 256];
                    for i in (k..events).step_by(4) {
                        img[0] = i as u16;
                        img[1] = (i >> 16) as u16;
                        c.event(i, [("img", Value::array(&img, &[128, 256]))]).map_err(|e| e.to_string())?;
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
    smd.done().map_err(|e| e.to_string())?;
    Ok(events)
}

/// Reads a file with dd twice; returns the second (warm) rate in MB/s.
fn dd(path: &Path) -> Result<f64, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len() as f64;
    let mut t = 0.0;
    for _ in 0..2 {
        t = secs(|| {
            run_cmd(Command::new("dd").arg(format!("if={}", path.display())).args(["of=/dev/null", "bs=1M"])).map(drop)
        })?;
    }
    Ok(size / t / 1e6)
}

/// Reads dataset `img` with h5py twice; returns the second (warm) rate in MB/s.
fn h5py_read(path: &Path) -> Result<f64, String> {
    let script = "import sys, time, h5py\n\
        f = h5py.File(sys.argv[1], 'r'); d = f['img']\n\
        for k in range(2):\n    t = time.perf_counter(); a = d[:]; dt = time.perf_counter() - t\n\
        print(a.nbytes / dt / 1e6)\n";
    let out = run_cmd(Command::new(python()).args(["-c", script]).arg(path))?;
    out.trim().parse().map_err(|e| format!("h5py output {out:?}: {e}"))
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
    let base = tempfile::tempdir_in(&args.dir).map_err(|e| e.to_string())?;
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

    println!("\n== reading a {} MiB dataset (64 KiB u16 images), page cache warm", args.read_mib);
    let run = base.path().join("images");
    let events = write_images(&run, args.read_mib)?;
    let mnt = base.path().join("mnt-images");
    std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    let view = View::open(&run, &ViewOptions::default()).map_err(|e| e.to_string())?;
    let m = mount(view, &mnt, &MountOptions::default()).map_err(|e| e.to_string())?;
    let result = (|| -> Result<(), String> {
        let plain = base.path().join("plain.h5");
        let copy = "import sys, h5py\n\
            src = h5py.File(sys.argv[1], 'r')['img']\n\
            with h5py.File(sys.argv[2], 'w') as f:\n    d = f.create_dataset('img', shape=src.shape, dtype=src.dtype)\n\
            \x20   for i in range(0, src.shape[0], 1024): d[i:i+1024] = src[i:i+1024]\n";
        run_cmd(Command::new(python()).args(["-c", copy]).arg(mnt.join("run.h5")).arg(&plain))?;
        let mount_dd = dd(&mnt.join("arrays").join("img.npy"))?;
        let plain_dd = dd(&plain)?;
        let mount_h5 = h5py_read(&mnt.join("run.h5"))?;
        let plain_h5 = h5py_read(&plain)?;
        println!("{events} events; MB/s (second read):");
        println!("{:<34} {:>8}", "dd bs=1M, mount arrays/img.npy", format!("{mount_dd:.0}"));
        println!("{:<34} {:>8}", "dd bs=1M, plain h5py file", format!("{plain_dd:.0}"));
        println!("{:<34} {:>8}", "h5py d[:], mount run.h5", format!("{mount_h5:.0}"));
        println!("{:<34} {:>8}", "h5py d[:], plain h5py file", format!("{plain_h5:.0}"));
        println!("ratio mount / plain, dd: {:.2}", mount_dd / plain_dd);
        println!("ratio mount / plain, h5py: {:.2}", mount_h5 / plain_h5);
        Ok(())
    })();
    m.unmount().map_err(|e| e.to_string())?;
    result
}
