//! Older-tools benchmark: smdfs's split records and named slices against the PyPI packages
//! they replace, on the same data in one run.
//!
//! Split records (`smdfs::tools::split`) against `splitdataloader` 0.0.1: writing the same records
//! into the same number of bins, random access (the same list of seeded random indices on
//! both sides), shuffled bin-wise iteration over every record, and the prefetching iterator
//! (smdfs: background threads fault in the next bins' pages, records stay zero-copy slices;
//! splitdataloader: `MpQItr`, the iterator in a child process feeding a bounded queue). The
//! records (default 100,000 of 64..2048 bytes, ~100 MB) are generated here and handed to the
//! Python side as files, so both write identical bytes. The consumer on the smdfs side reads
//! every byte of every record (xor of its 8-byte words, so the data is really read); the
//! Python side takes `len()` of each `bytes` object it gets (already a copy in memory).
//!
//! Named slices (`smdfs::tools::slices`) against `bigarray` 0.2.2 (`PointerArrayWriter` /
//! `PointerArray`): writing M names of R rows × C f32 each (default 10,000 × 64 × 64 ≈ 164 MB)
//! one name per call at its row position into a file created at full size, then closing it
//! (smdfs: fdatasync of data and names; bigarray: msync of its map plus its pickled index),
//! and opening the file and iterating every name's slice, summing its values (smdfs: a plain
//! loop over the zero-copy `&[f32]`; bigarray: numpy's `.sum()` of the memmap slice).
//!
//! Every figure is wall time of one pass with the page cache warm (each side reads what it
//! has just written). Ratios are peer time / smdfs time: above 1, smdfs is faster. The Python
//! peers run as subprocesses of `benches/peers/older_tools_peers.py` with the project's
//! `.venv` (install them with `bash benches/peers/setup.sh`); without them only the smdfs
//! figures print. Never asserts a timing.
//!
//! Run: `cargo run --release -p smdfs-benches --bin older_tools_bench -- [--records N]
//! [--splits S] [--lookups K] [--names M] [--rows-per-name R] [--cols C] [--dir PATH]
//! [--python PATH]`. For CI: `-- --records 5000 --lookups 2000 --names 500`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use smdfs::read::shuffle::SplitMix;
use smdfs::tools::slices::{Slices, SlicesWriter};
use smdfs::tools::split::{SplitLoader, SplitWriter};

const USAGE: &str = "usage: older_tools_bench [--records N] [--splits S] [--lookups K] [--names M] \
                     [--rows-per-name R] [--cols C] [--dir PATH] [--python PATH]\n\
                     defaults: 100000 records in 64 splits, 20000 lookups, 10000 names of 64 rows \
                     x 64 f32, the system temp dir, <repo>/.venv/bin/python";
const SEED: u64 = 42;

type BoxErr = Box<dyn std::error::Error>;
/// One benchmark case.
type Case = fn(&Args, &Path) -> Result<(), BoxErr>;

struct Args {
    records: u64,
    splits: usize,
    lookups: u64,
    names: u64,
    rows_per_name: u64,
    cols: usize,
    dir: Option<PathBuf>,
    python: PathBuf,
}

fn parse_args() -> Result<Option<Args>, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut a = Args {
        records: 100_000,
        splits: 64,
        lookups: 20_000,
        names: 10_000,
        rows_per_name: 64,
        cols: 64,
        dir: None,
        python: root.join(".venv/bin/python"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |s: &str| s.replace('_', "").parse::<u64>().map_err(|e| format!("{flag} {s:?}: {e}"));
        match flag.as_str() {
            "--records" => a.records = num(&v)?,
            "--splits" => a.splits = num(&v)? as usize,
            "--lookups" => a.lookups = num(&v)?,
            "--names" => a.names = num(&v)?,
            "--rows-per-name" => a.rows_per_name = num(&v)?,
            "--cols" => a.cols = num(&v)? as usize,
            "--dir" => a.dir = Some(v.into()),
            "--python" => a.python = v.into(),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if a.records == 0 || a.splits == 0 || a.names == 0 || a.rows_per_name == 0 || a.cols == 0 {
        return Err("--records, --splits, --names, --rows-per-name and --cols must be at least 1".into());
    }
    Ok(Some(a))
}

/// Length of record i: 64..2048 bytes, spread deterministically.
fn record_len(i: u64) -> usize {
    64 + (i.wrapping_mul(7919) % 1985) as usize
}

/// Reads every byte (xor of 8-byte words): what the smdfs-side consumer does with each record.
fn touch(b: &[u8]) -> u64 {
    let mut acc = [0u64; 4];
    let mut it = b.chunks_exact(32);
    for c in &mut it {
        for (k, a) in acc.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&c[k * 8..k * 8 + 8]);
            *a ^= u64::from_le_bytes(w);
        }
    }
    it.remainder().iter().fold(acc[0] ^ acc[1] ^ acc[2] ^ acc[3], |a, &x| a.rotate_left(8) ^ u64::from(x))
}

/// Sums f32s in eight lanes (vectorizes; numpy's `.sum()` is SIMD too).
fn sum_f32(s: &[f32]) -> f64 {
    let mut acc = [0f32; 8];
    let mut it = s.chunks_exact(8);
    for c in &mut it {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    acc.iter().map(|&a| f64::from(a)).sum::<f64>() + it.remainder().iter().map(|&x| f64::from(x)).sum::<f64>()
}

/// One Python peer run: `key value` lines, or why it could not run.
fn run_peer(args: &Args, cmd: &[String]) -> Result<Vec<(String, String)>, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/older_tools_peers.py");
    let out = Command::new(&args.python)
        .arg(&script)
        .args(cmd)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args.python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {} failed ({}): {}",
            args.python.display(),
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(k, v)| (k.to_string(), v.trim().to_string())))
        .collect())
}

fn get_f(kv: &[(String, String)], k: &str) -> Option<f64> {
    kv.iter().find(|(key, _)| key == k).and_then(|(_, v)| v.parse().ok())
}

struct Row {
    case: String,
    ours: f64,
    peer: Option<f64>,
    /// Divides both times for display (per-op figures); 1 for totals.
    per: f64,
    unit: &'static str,
}

fn fmt_time(s: f64, per: f64, unit: &'static str) -> String {
    if per > 1.0 {
        format!("{:.2} µs/{unit}", s / per * 1e6)
    } else {
        format!("{s:.3} s")
    }
}

fn print_rows(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!("{:<58} {:>16} {:>16} {:>12}", "case", "smdfs", "peer", "peer/smdfs");
    for r in rows {
        let peer = r.peer.map_or_else(|| "-".into(), |p| fmt_time(p, r.per, r.unit));
        let ratio = r.peer.map_or_else(|| "-".into(), |p| format!("{:.1}x", p / r.ours));
        println!("{:<58} {:>16} {:>16} {:>12}", r.case, fmt_time(r.ours, r.per, r.unit), peer, ratio);
    }
}

fn bench_split(args: &Args, dir: &Path) -> Result<(), BoxErr> {
    let n = args.records;
    // The records, identical for both sides: record i is `record_len(i)` bytes of a pattern.
    let lens: Vec<u32> = (0..n).map(|i| record_len(i) as u32).collect();
    let mut blob = Vec::with_capacity(lens.iter().map(|&l| l as usize).sum());
    for i in 0..n {
        blob.extend((0..record_len(i)).map(|j| (i as usize * 31 + j) as u8));
    }
    let mut offs = Vec::with_capacity(n as usize + 1);
    offs.push(0usize);
    for &l in &lens {
        offs.push(offs.last().copied().unwrap_or(0) + l as usize);
    }
    let mut rng = SplitMix::new(SEED);
    let lookups: Vec<u64> = (0..args.lookups).map(|_| rng.below(n)).collect();
    let (src, lens_p, look_p) = (dir.join("src.raw"), dir.join("lens.u32"), dir.join("lookups.u64"));
    std::fs::write(&src, &blob)?;
    std::fs::write(&lens_p, lens.iter().flat_map(|l| l.to_le_bytes()).collect::<Vec<u8>>())?;
    std::fs::write(&look_p, lookups.iter().flat_map(|l| l.to_le_bytes()).collect::<Vec<u8>>())?;
    let mb = blob.len() as f64 / 1e6;

    let ours_dir = dir.join("smdfs-split");
    let t = Instant::now();
    let mut w = SplitWriter::create(&ours_dir, args.splits)?;
    for i in 0..n as usize {
        w.push(&blob[offs[i]..offs[i + 1]])?;
    }
    w.finish()?;
    let write_s = t.elapsed().as_secs_f64();

    let l = SplitLoader::open(&ours_dir)?;
    let t = Instant::now();
    let mut random_bytes = 0u64;
    let mut sink = 0u64;
    for &i in &lookups {
        let r = l.get(i)?;
        random_bytes += r.len() as u64;
        sink = sink.wrapping_add(touch(r));
    }
    let random_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let (mut sn, mut sbytes) = (0u64, 0u64);
    for r in l.iter_binwise(Some(SEED)) {
        let (_, b) = r?;
        sn += 1;
        sbytes += b.len() as u64;
        sink = sink.wrapping_add(touch(b));
    }
    let shuffled_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let (mut pn, mut pbytes) = (0u64, 0u64);
    for r in l.prefetch(Some(SEED), 2, 4)? {
        let (_, b) = r?;
        pn += 1;
        pbytes += b.len() as u64;
        sink = sink.wrapping_add(touch(b));
    }
    let prefetch_s = t.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    if (sn, sbytes) != (n, blob.len() as u64) || (pn, pbytes) != (n, blob.len() as u64) {
        return Err(format!("smdfs iteration saw {sn}/{pn} records, {sbytes}/{pbytes} bytes").into());
    }

    let peer_dir = dir.join("peer-split");
    let cmd: Vec<String> = [
        "split",
        "--src",
        &src.display().to_string(),
        "--lens",
        &lens_p.display().to_string(),
        "--lookups",
        &look_p.display().to_string(),
        "--dir",
        &peer_dir.display().to_string(),
        "--splits",
        &args.splits.to_string(),
        "--seed",
        &SEED.to_string(),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let peer = match run_peer(args, &cmd) {
        Ok(kv) => {
            // Same data on both sides, or the comparison means nothing.
            let same = get_f(&kv, "random_bytes") == Some(random_bytes as f64)
                && get_f(&kv, "shuffled_n") == Some(n as f64)
                && get_f(&kv, "shuffled_bytes") == Some(blob.len() as f64)
                && get_f(&kv, "prefetch_n") == Some(n as f64);
            if !same {
                return Err(format!("splitdataloader read other data than smdfs: {kv:?}").into());
            }
            Some(kv)
        }
        Err(e) => {
            eprintln!("peer splitdataloader unavailable: {e}\n(install with: bash benches/peers/setup.sh)");
            None
        }
    };
    let p = |k: &str| peer.as_ref().and_then(|kv| get_f(kv, k));
    let k = args.lookups as f64;
    print_rows(
        &format!("Split records vs splitdataloader: {n} records, {mb:.1} MB, {} bins", args.splits),
        &[
            Row { case: "write all records".into(), ours: write_s, peer: p("write_s"), per: 1.0, unit: "" },
            Row {
                case: format!("random access ({} lookups)", args.lookups),
                ours: random_s,
                peer: p("random_s"),
                per: k,
                unit: "lookup",
            },
            Row {
                case: "shuffled bin-wise iteration (every record)".into(),
                ours: shuffled_s,
                peer: p("shuffled_s"),
                per: 1.0,
                unit: "",
            },
            Row {
                case: "prefetching shuffled iteration (smdfs 2 thr / MpQItr)".into(),
                ours: prefetch_s,
                peer: p("prefetch_s"),
                per: 1.0,
                unit: "",
            },
        ],
    );
    Ok(())
}

fn bench_slices(args: &Args, dir: &Path) -> Result<(), BoxErr> {
    let (m, r, c) = (args.names, args.rows_per_name, args.cols);
    let total = m * r;
    // Element (row, col) = row * C + col as f32: what the Python side builds with numpy.
    let data: Vec<f32> = (0..total * c as u64).map(|x| x as f32).collect();
    let names: Vec<String> = (0..m).map(|i| format!("n{i}")).collect();
    let path = dir.join("slices.npy");
    let row_elems = r as usize * c;

    let t = Instant::now();
    let w = SlicesWriter::create::<f32>(&path, &[c], total)?;
    for (i, name) in names.iter().enumerate() {
        w.write(name, i as u64 * r, &data[i * row_elems..(i + 1) * row_elems])?;
    }
    let write_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    w.sync()?;
    drop(w);
    let close_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let x = Slices::<f32>::open(&path)?;
    let (mut rows, mut acc, mut count) = (0u64, 0f64, 0u64);
    for (_, s) in x.iter() {
        rows += (s.len() / c) as u64;
        acc += sum_f32(s);
        count += 1;
    }
    let iterate_s = t.elapsed().as_secs_f64();
    if (count, rows) != (m, total) {
        return Err(format!("smdfs iterated {count} names, {rows} rows").into());
    }

    let peer_path = dir.join("bigarray.dat");
    let cmd: Vec<String> = [
        "bigarray",
        "--path",
        &peer_path.display().to_string(),
        "--names",
        &m.to_string(),
        "--rows-per-name",
        &r.to_string(),
        "--cols",
        &c.to_string(),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let peer = match run_peer(args, &cmd) {
        Ok(kv) => {
            let psum = get_f(&kv, "iterate_sum").unwrap_or(f64::NAN);
            let same = get_f(&kv, "iterate_names") == Some(m as f64)
                && get_f(&kv, "iterate_rows") == Some(total as f64)
                && ((psum - acc).abs() <= 1e-4 * acc.abs().max(1.0));
            if !same {
                return Err(format!("bigarray read other data than smdfs (sum {acc}): {kv:?}").into());
            }
            Some(kv)
        }
        Err(e) => {
            eprintln!("peer bigarray unavailable: {e}\n(install with: bash benches/peers/setup.sh)");
            None
        }
    };
    let p = |k: &str| peer.as_ref().and_then(|kv| get_f(kv, k));
    let both = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a + b);
    let mb = (total as usize * c * 4) as f64 / 1e6;
    print_rows(
        &format!("Named slices vs bigarray: {m} names x {r} rows x {c} f32, {mb:.1} MB"),
        &[
            Row {
                case: "write, one name per call (page cache)".into(),
                ours: write_s,
                peer: p("write_s"),
                per: 1.0,
                unit: "",
            },
            Row {
                case: "write + durable close (fdatasync / msync)".into(),
                ours: write_s + close_s,
                peer: both(p("write_s"), p("close_s")),
                per: 1.0,
                unit: "",
            },
            Row {
                case: "open + iterate every name, sum its values".into(),
                ours: iterate_s,
                peer: p("iterate_s"),
                per: 1.0,
                unit: "",
            },
        ],
    );
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
            eprintln!("older_tools_bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = match tempfile::Builder::new().prefix("older-tools-bench-").tempdir_in(&base) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("older_tools_bench: cannot make a directory in {}: {e}", base.display());
            return ExitCode::FAILURE;
        }
    };
    println!("older_tools_bench: files in {}; peers with {}", tmp.path().display(), args.python.display());
    let cases: [(&str, Case); 2] = [("split records", bench_split), ("named slices", bench_slices)];
    for (what, f) in cases {
        if let Err(e) = f(&args, tmp.path()) {
            eprintln!("older_tools_bench: {what}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
