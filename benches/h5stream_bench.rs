//! Streaming benchmark: `smdfs::tools::h5stream` against the PyPI package `multitables` 2.0.1 and
//! plain h5py, streaming the same dataset of the same HDF5 file in one run.
//!
//! The file (default 1 GiB: f32 `[1 Mi, 256]`, contiguous, `/data`) is written by h5py, so
//! smdfs reads a file it did not write. Measured, each one full pass over the dataset in
//! blocks of `--block-rows` rows (default 1024 = 1 MiB): smdfs h5stream with 1 and 2 threads
//! (unordered; pooled buffers, parallel `pread` — no libhdf5 in the hot path) and 2 threads
//! ordered; h5py `d[:]` (one read into a fresh array) and an h5py block loop (`read_direct`
//! into one reused buffer); multitables `Streamer.get_queue` with 1, 2 and 4 reader
//! processes (shared-memory stages). The consumer touches each block's first byte only (the
//! peers do not touch data either). The page cache is warmed (one plain read of the file)
//! before the warm pass; with `--cold` a second pass drops the file's pages
//! (`POSIX_FADV_DONTNEED`) before every measurement. Ratios are peer time / smdfs time with 2
//! threads: above 1, smdfs is faster. The Python peers run as subprocesses of
//! `benches/peers/h5stream_peers.py` with the project's `.venv` (`bash benches/peers/setup.sh`).
//! Never asserts a timing.
//!
//! Run: `cargo run --release -p smdfs-benches --bin h5stream_bench -- [--rows N] [--cols C]
//! [--block-rows B] [--dir PATH] [--python PATH] [--cold]`. For CI: `-- --rows 65536`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use smdfs::tools::h5stream::{H5File, StreamOptions};

const USAGE: &str = "usage: h5stream_bench [--rows N] [--cols C] [--block-rows B] [--dir PATH] \
                     [--python PATH] [--cold]";

struct Args {
    rows: u64,
    cols: u64,
    block_rows: u64,
    dir: Option<PathBuf>,
    python: PathBuf,
    cold: bool,
}

type BoxErr = Box<dyn std::error::Error>;

fn parse_args() -> Result<Args, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut a = Args {
        rows: 1 << 20,
        cols: 256,
        block_rows: 1024,
        dir: None,
        python: root.join(".venv/bin/python"),
        cold: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{k} needs a value\n{USAGE}"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{k} {v}: {e}"));
        match k.as_str() {
            "--rows" => a.rows = num(val()?)?,
            "--cols" => a.cols = num(val()?)?,
            "--block-rows" => a.block_rows = num(val()?)?.max(1),
            "--dir" => a.dir = Some(PathBuf::from(val()?)),
            "--python" => a.python = PathBuf::from(val()?),
            "--cold" => a.cold = true,
            _ => return Err(format!("unknown argument {k}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/h5stream_peers.py")
}

fn python(args: &Args, cmd: &[&str]) -> Result<String, String> {
    let out = Command::new(&args.python)
        .arg(peer_script())
        .args(cmd)
        .output()
        .map_err(|e| format!("{}: {e}", args.python.display()))?;
    if !out.status.success() {
        return Err(format!("peer {cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn drop_cache(path: &Path) -> Result<(), BoxErr> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path)?;
    // SAFETY: a valid open descriptor; advice only.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(format!("posix_fadvise: {rc}").into());
    }
    Ok(())
}

fn warm(path: &Path) -> Result<(), BoxErr> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 8 << 20];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

/// One full pass; returns (seconds, bytes).
fn smdfs_pass(path: &Path, block_rows: u64, threads: usize, ordered: bool) -> Result<(f64, u64), BoxErr> {
    let t = Instant::now();
    let f = H5File::open(path)?;
    let opts = StreamOptions { block_rows, threads, ordered, depth: 4 * threads };
    let stream = f.stream("data", &opts)?;
    let (mut bytes, mut touch) = (0u64, 0u8);
    let mut s = stream;
    while let Some(b) = s.next() {
        let b = b?;
        bytes += b.data.len() as u64;
        touch ^= b.data.first().copied().unwrap_or(0);
        s.recycle(b);
    }
    std::hint::black_box(touch);
    Ok((t.elapsed().as_secs_f64(), bytes))
}

fn pass(args: &Args, file: &Path, cold: bool) -> Result<(), BoxErr> {
    let mut rows: Vec<(String, f64, u64)> = Vec::new();
    for (name, threads, ordered) in [
        ("smdfs h5stream 1 thread", 1, false),
        ("smdfs h5stream 2 threads", 2, false),
        ("smdfs h5stream 2 ordered", 2, true),
    ] {
        if cold {
            drop_cache(file)?;
        }
        let (s, b) = smdfs_pass(file, args.block_rows, threads, ordered)?;
        rows.push((name.to_string(), s, b));
    }
    let mut cmd = vec!["read".to_string(), file.display().to_string(), args.block_rows.to_string()];
    if cold {
        cmd.push("--cold".into());
    }
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    match python(args, &cmd) {
        Ok(out) => {
            for l in out.lines() {
                let p: Vec<&str> = l.split_whitespace().collect();
                if let [n, s, b] = p[..] {
                    let name = match n {
                        "h5py_all" => "h5py d[:]".to_string(),
                        "h5py_blocks" => "h5py block loop (read_direct)".to_string(),
                        m => m.replace("multitables_", "multitables n_procs="),
                    };
                    rows.push((name, s.parse()?, b.parse()?));
                }
            }
        }
        Err(e) => eprintln!("skipping Python peers: {e}"),
    }
    let base = rows[1].1;
    println!(
        "\n{} page cache, {} MiB, blocks of {} rows",
        if cold { "cold" } else { "warm" },
        rows[0].2 >> 20,
        args.block_rows
    );
    println!("  {:<34} {:>9} {:>10} {:>12}", "reader", "seconds", "MB/s", "vs smdfs 2t");
    for (n, s, b) in &rows {
        println!("  {n:<34} {s:>9.3} {:>10.0} {:>11.2}x", *b as f64 / 1e6 / s, s / base);
    }
    Ok(())
}

fn run(args: &Args) -> Result<(), BoxErr> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir_in(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))?;
            tmp.path().to_path_buf()
        }
    };
    let file = dir.join("stream.h5");
    let t = Instant::now();
    python(args, &["write", &file.display().to_string(), &args.rows.to_string(), &args.cols.to_string()])?;
    println!(
        "h5py wrote {} ({} bytes) in {:.1} s",
        file.display(),
        std::fs::metadata(&file)?.len(),
        t.elapsed().as_secs_f64()
    );
    warm(&file)?;
    pass(args, &file, false)?;
    if args.cold {
        pass(args, &file, true)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("h5stream_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
