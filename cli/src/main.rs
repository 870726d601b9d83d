//! The `smdfs` command: a thin shell over the library crates. Parsing, printing and exit
//! codes live here; anything a library user could need lives in `smdfs` / `smdfs-fuse`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod daemon;

/// Write one parallel for-loop's results into one dataset, and read it back as one file.
#[derive(Parser)]
#[command(name = "smdfs", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write the demo run (docs/ARCHITECTURE.md "The demo run") with server and client threads.
    Demo {
        /// Output run directory.
        out: PathBuf,
        /// Number of events.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Server threads (shards); under `mpirun` (feature `mpi`), server ranks.
        #[arg(long, default_value_t = 2)]
        servers: usize,
        /// Client threads; under `mpirun` (feature `mpi`) every rank that is not a server is one
        /// client and this is ignored.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Replace a run already in OUT.
        #[arg(long)]
        force: bool,
    },
    /// Check a run: every commit's checksum, committed lengths against file sizes, row
    /// counts, the global index and offsets against the shards, the manifest against the
    /// shards. Exit 0 when the committed data is sound (torn log tails are reported, not
    /// damage), 1 when committed data is damaged, 2 on usage errors.
    Verify {
        /// Run directory.
        run: PathBuf,
        /// Machine-readable JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Describe a run: state, events, datasets (dtype, shape, rows), groups, summary.
    Info {
        /// Run directory.
        run: PathBuf,
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mount a run read-only: one HDF5 file (`run.h5`) and `arrays/**/*.npy`.
    ///
    /// Returns once the mount is ready; a background process serves it until `smdfs umount
    /// MOUNTPOINT` (or SIGTERM to it). Only the mounting user can read it unless
    /// --allow-other. A run still being written is shown live: the mount grows as commits
    /// land (within about a second), a file already open keeps the snapshot it was opened
    /// with, and the view becomes the complete run when the writer finishes. Exits 1 when
    /// RUN is not a run or MOUNTPOINT is missing, not an empty directory, or already a mount
    /// point.
    Mount {
        /// Run directory.
        run: PathBuf,
        /// Empty directory to mount on.
        mountpoint: PathBuf,
        /// Stay attached and serve until unmounted (Ctrl-C unmounts).
        #[arg(long, short = 'f')]
        foreground: bool,
        /// Let other users read the mount (needs root or `user_allow_other` in /etc/fuse.conf).
        #[arg(long)]
        allow_other: bool,
        /// Name of the HDF5 file in the mount.
        #[arg(long, default_value = "run.h5")]
        name: String,
        /// FUSE worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Write one standalone HDF5 file with the layout of the view's `run.h5` (chunked,
    /// optionally gzip-compressed), for users who must ship a single file. LZF needs a
    /// libhdf5 with h5py's LZF filter registered; without it the export fails (no fallback).
    Export {
        /// Run directory.
        run: PathBuf,
        /// HDF5 file to write (replaced if it exists).
        file: PathBuf,
        /// none, gzip (level 4), gzip=0..9 or lzf.
        #[arg(long, default_value = "none")]
        compression: String,
        /// Rows per chunk (default: about 1 MiB of rows).
        #[arg(long)]
        chunk_rows: Option<u64>,
    },
    /// Unmount a mount made by `smdfs mount`; fails while a process still uses it.
    Umount {
        /// Mount point.
        mountpoint: PathBuf,
        /// Detach now even if busy; open files keep working until closed.
        #[arg(long)]
        lazy: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) {
                return ExitCode::SUCCESS;
            }
            eprintln!("smdfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Demo { out, events, servers, clients, force } => {
            let t = std::time::Instant::now();
            let r = smdfs::demo::write_demo(&out, events, servers, clients, force)
                .with_context(|| format!("writing the demo run to {}", out.display()))?;
            let secs = t.elapsed().as_secs_f64();
            // MPI mode (feature `mpi`, under mpirun): clients are the ranks that are not
            // servers, and rank 0 speaks for the job.
            let (clients, how) = match r.mpi {
                Some(m) => (m.clients, format!(" (MPI, {} ranks)", m.size)),
                None => (clients, String::new()),
            };
            if r.mpi.is_none_or(|m| m.rank == 0) {
                println!(
                    "wrote {} events to {} with {servers} server(s) and {clients} client(s){how} in {secs:.2} s ({:.0} events/s)",
                    r.events,
                    out.display(),
                    r.events as f64 / secs.max(1e-9)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Verify { run, json } => verify(&run, json),
        Cmd::Info { run, json } => {
            let r = smdfs::Run::open(&run).with_context(|| format!("opening {}", run.display()))?;
            let info = smdfs::RunInfo::of(&r);
            // The files `smdfs mount` would show, with their sizes.
            let view = smdfs_fuse::View::from_run(r, &smdfs_fuse::ViewOptions::default())
                .with_context(|| format!("building the view of {}", run.display()))?;
            let files = view.files();
            let mut out = std::io::stdout().lock();
            if json {
                let mut v = serde_json::to_value(&info)?;
                v["view_files"] =
                    files.iter().map(|(p, s)| serde_json::json!({ "path": p, "size": s })).collect::<Vec<_>>().into();
                serde_json::to_writer_pretty(&mut out, &v)?;
                writeln!(out)?;
            } else {
                print_info(&mut out, &info)?;
                writeln!(out, "view files (smdfs mount)")?;
                for (p, size) in &files {
                    writeln!(out, "  {p:<40} {size:>14}")?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Mount { run, mountpoint, foreground, allow_other, name, threads } => {
            let mount = smdfs_fuse::mount::MountOptions { allow_other, threads, ..Default::default() };
            let view = smdfs_fuse::ViewOptions { h5_name: name, ..Default::default() };
            daemon::mount(daemon::MountArgs { run, mountpoint, foreground, view, mount })
        }
        Cmd::Umount { mountpoint, lazy } => daemon::umount(&mountpoint, lazy),
        Cmd::Export { run, file, compression, chunk_rows } => export(&run, &file, &compression, chunk_rows),
    }
}

fn print_info(out: &mut impl Write, info: &smdfs::RunInfo) -> std::io::Result<()> {
    writeln!(out, "run      {}", info.dir)?;
    writeln!(out, "state    {}", info.state)?;
    writeln!(out, "events   {}", info.events)?;
    writeln!(out, "shards   {}", info.shards)?;
    if info.torn_bytes > 0 {
        writeln!(out, "torn     {} bytes at log tails (ignored)", info.torn_bytes)?;
    }
    writeln!(out, "datasets")?;
    for d in &info.datasets {
        let group = if d.aligned { String::new() } else { "  unaligned".to_string() };
        let missing = if d.missing > 0 { format!("  missing {}", d.missing) } else { String::new() };
        writeln!(
            out,
            "  {:<24} {:<4} {:<7} shape {:?}  rows {}{group}{missing}  shards {}",
            d.path,
            d.dtype.name(),
            format!("{:?}", d.kind).to_lowercase(),
            d.shape,
            d.rows,
            d.shards
        )?;
    }
    for g in info.groups.iter().filter(|g| g.duplicates > 0) {
        writeln!(out, "duplicates in group {:?}: {} (ids {:?})", g.name, g.duplicates, g.duplicate_ids)?;
    }
    if !info.summary.is_empty() {
        writeln!(out, "summary")?;
        for s in &info.summary {
            match (&s.value, &s.text) {
                (Some(v), _) => writeln!(out, "  {:<24} {v}", s.name)?,
                (_, Some(t)) => writeln!(out, "  {:<24} {t:?}", s.name)?,
                _ => writeln!(out, "  {:<24} {} array {:?}", s.name, s.dtype, s.shape)?,
            }
        }
    }
    Ok(())
}

fn export(
    run: &std::path::Path,
    file: &std::path::Path,
    compression: &str,
    chunk_rows: Option<u64>,
) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let compression = compression.parse()?;
    let opts = smdfs::h5::export::ExportOptions { compression, chunk_rows };
    let r = smdfs::Run::open(run).with_context(|| format!("opening {}", run.display()))?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("exporting {bar:40} {bytes}/{total_bytes} ({eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let t = std::time::Instant::now();
    let report = smdfs::h5::export::export(&r, file, &opts, &mut |done, total| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    })
    .with_context(|| format!("exporting {} to {}", run.display(), file.display()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "wrote {} ({} datasets, {} data bytes, {} bytes on disk, {compression}) in {secs:.2} s ({:.0} MB/s)",
        report.path.display(),
        report.datasets,
        report.data_bytes,
        report.file_size,
        report.data_bytes as f64 / 1e6 / secs.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(run: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("verifying {bar:40} {bytes}/{total_bytes} ({eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let report = smdfs::verify(run, &mut |done, total| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    })
    .with_context(|| format!("verifying {}", run.display()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut out = std::io::stdout().lock();
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["sound"] = report.is_sound().into();
        v["torn_bytes"] = report.torn_bytes().into();
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else {
        let state = report.state.map_or("unreadable".to_string(), |s| s.to_string());
        writeln!(out, "run      {}", report.dir.display())?;
        writeln!(out, "state    {state}")?;
        writeln!(out, "events   {}", report.events)?;
        for s in &report.shards {
            let torn = match (&s.torn_reason, s.torn_bytes) {
                (_, 0) => String::new(),
                (Some(r), n) => format!("  torn {n} bytes ignored ({r})"),
                (None, n) => format!("  torn {n} bytes ignored"),
            };
            let closed = if s.closed { "closed" } else { "open" };
            writeln!(
                out,
                "shard {:>5}  events {:>10}  commits {:>7}  checked {:>12} bytes  {closed}{torn}",
                s.shard, s.events, s.commits, s.bytes_checked
            )?;
        }
        for p in &report.problems {
            writeln!(out, "DAMAGE {} at byte {}: {}", p.file.display(), p.offset, p.what)?;
        }
        writeln!(out, "{}", if report.is_sound() { "sound" } else { "damaged" })?;
    }
    Ok(if report.is_sound() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
