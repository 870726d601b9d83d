//! The `smdfs` command: a thin shell over the library crates. Parsing, printing and exit
//! codes live here; anything a library user could need lives in `smdfs` / `smdfs-fuse`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use smdfs_fuse::mount::DropBehind;

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
        /// Create OUT owner-only (mode 0700): nobody else can list or read the run. (Mounts
        /// are owner-only too unless `smdfs mount --allow-other`.)
        #[arg(long)]
        private: bool,
    },
    /// Check a run: the manifest's checksum, every commit's checksum, committed lengths
    /// against file sizes, row counts, the global index and offsets against the shards, the
    /// manifest against the shards, and that every row a complete run serves lies in
    /// checksummed data. Exit 0 when the committed data is sound (torn log tails and bytes
    /// after a complete run's close record are reported, not damage), 1 when it is damaged
    /// (whatever any other command refuses is damage too), 2 on usage errors (RUN missing or
    /// not a directory).
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
    /// Mount a run read-only: one HDF5 file (`run.h5`), `run.zarr/` and `arrays/**/*.npy`.
    ///
    /// Returns once the mount is ready; a background process serves it until `smdfs umount
    /// MOUNTPOINT` (or SIGTERM to it). Only the mounting user can read it unless
    /// --allow-other. A run still being written is shown live: the mount grows as commits
    /// land (within about a second), a file already open keeps the snapshot it was opened
    /// with, and the view becomes the complete run when the writer finishes. The mount also
    /// shows `run.zarr/`, the same datasets as a Zarr v3 hierarchy. Exits 2 when RUN does not
    /// exist, 1 when RUN is not a run or MOUNTPOINT is missing, not an empty directory, or
    /// already a mount point.
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
        /// Keep the daemon's counters in FILE, rewritten whenever they change: requests by
        /// kind (`op.read 12`), bytes served (`read_bytes`), live refreshes, their time and
        /// the shard log bytes and index rows they read and merged (`refreshes`, `refresh_nanos`,
        /// `refresh_log_bytes`, `refresh_rows_merged`); then one `warning TEXT` line per
        /// damage the daemon worked around, including damage found only when a read first
        /// touched it (a stored index chunk failing its checksum), which a daemon in the
        /// background cannot print.
        #[arg(long, value_name = "FILE")]
        stats: Option<PathBuf>,
        /// Row order of every dataset: `event-id` (ascending event ids through the global
        /// index) or `arrival` (each shard's rows as committed, shard after shard: no gather,
        /// `timestamp` not sorted).
        #[arg(long, default_value = "event-id", value_parser = ["event-id", "arrival"])]
        order: String,
        /// When the daemon drops the shard pages it copied into a reply (they then sit in
        /// the view file's page cache, and memory holds each byte once): `auto` for runs
        /// whose committed bytes exceed a quarter of the machine's memory, `always`, `never`.
        #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"])]
        drop_behind: String,
    },
    /// Write one standalone HDF5 file with the layout of the view's `run.h5` (chunked,
    /// optionally gzip-compressed), for users who must ship a single file; or, with
    /// `--format zarr`, the view's `run.zarr/` as a directory of real files (gzip-compressed
    /// chunks), for object stores. LZF needs a libhdf5 with h5py's LZF filter registered;
    /// without it the export fails (no fallback). An existing OUT is replaced only with --force.
    Export {
        /// Run directory.
        run: PathBuf,
        /// HDF5 file (or, with `--format zarr`, directory) to write.
        #[arg(value_name = "OUT")]
        file: PathBuf,
        /// hdf5 (one file) or zarr (a Zarr v3 directory tree).
        #[arg(long, default_value = "hdf5", value_parser = ["hdf5", "zarr"])]
        format: String,
        /// HDF5: none (default), gzip (level 4), gzip=0..9 or lzf. Zarr: gzip (default, level
        /// 4) or gzip=0..9.
        #[arg(long)]
        compression: Option<String>,
        /// Rows per chunk of the HDF5 file (default: about 1 MiB of rows).
        #[arg(long)]
        chunk_rows: Option<u64>,
        /// Replace OUT if it exists.
        #[arg(long)]
        force: bool,
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

/// A usage error found by the command itself (a missing path, an output that exists without
/// `--force`): printed as is, exit status 2 like clap's own.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    Usage(msg.into()).into()
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("smdfs: {}", message(&e));
            if is_usage(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Whether the error is a closed stdout (`smdfs info --json | head`): not an error, the
/// reader has all it wanted. Printing through serde_json wraps the I/O error in its own.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}

/// The error and its causes joined by `: `, each printed once: a cause whose text the message
/// already ends with (an I/O error that prints its OS cause, then that cause again as its
/// source) is skipped.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Whether the error is the user's to fix by changing the command line (exit 2).
fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<Usage>()
            || matches!(c.downcast_ref::<smdfs::Error>(), Some(smdfs::Error::Usage(_) | smdfs::Error::RunExists { .. }))
    })
}

/// A usage error unless `path` exists and is a directory (the RUN argument of a command).
fn existing_dir(path: &std::path::Path) -> anyhow::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(usage(format!("{} is not a directory (RUN must be a run directory)", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(usage(format!("{} does not exist", path.display()))),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            Err(usage(format!("{} does not exist (a parent is not a directory)", path.display())))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Demo { out, events, servers, clients, force, private } => {
            let t = std::time::Instant::now();
            let r = match smdfs::demo::write_demo_private(&out, events, servers, clients, force, private) {
                Err(smdfs::Error::RunExists { path }) => {
                    return Err(usage(format!("{} already holds a run (pass --force to replace it)", path.display())))
                }
                r => r.with_context(|| format!("writing the demo run to {}", out.display()))?,
            };
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
            existing_dir(&run)?;
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
                // The Zarr tree's many chunk files are summed up on one line.
                let zarr = "run.zarr/";
                let (z, rest): (Vec<_>, Vec<_>) = files.iter().partition(|(p, _)| p.starts_with(zarr));
                for (p, size) in &rest {
                    writeln!(out, "  {p:<40} {size:>14}")?;
                }
                if !z.is_empty() {
                    let total: u64 = z.iter().map(|(_, s)| s).sum();
                    writeln!(out, "  {:<40} {total:>14}  ({} files, Zarr v3)", zarr, z.len())?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Mount { run, mountpoint, foreground, allow_other, name, threads, stats, order, drop_behind } => {
            existing_dir(&run)?;
            // The daemon leaves the working directory: a relative FILE must not move with it.
            let stats_file = stats.map(std::path::absolute).transpose().context("resolving --stats")?;
            let drop_behind = match drop_behind.as_str() {
                "always" => DropBehind::Always,
                "never" => DropBehind::Never,
                _ => DropBehind::Auto,
            };
            let mount =
                smdfs_fuse::mount::MountOptions { allow_other, threads, stats_file, drop_behind, ..Default::default() };
            let order = order.parse().map_err(Usage)?;
            let view = smdfs_fuse::ViewOptions { h5_name: name, order, ..Default::default() };
            daemon::mount(daemon::MountArgs { run, mountpoint, foreground, view, mount })
        }
        Cmd::Umount { mountpoint, lazy } => daemon::umount(&mountpoint, lazy),
        Cmd::Export { run, file, format, compression, chunk_rows, force } => {
            existing_dir(&run)?;
            if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty() && !p.is_dir()) {
                return Err(usage(format!(
                    "{} is not a directory (OUT must be in an existing directory)",
                    parent.display()
                )));
            }
            if file.symlink_metadata().is_ok() && !force {
                return Err(usage(format!("{} already exists (pass --force to replace it)", file.display())));
            }
            if format == "zarr" {
                if chunk_rows.is_some() {
                    return Err(usage("--chunk-rows applies to --format hdf5 only (Zarr chunks hold about 8 MiB)"));
                }
                export_zarr(&run, &file, compression.as_deref().unwrap_or("gzip"), force)
            } else {
                export(&run, &file, compression.as_deref().unwrap_or("none"), chunk_rows)
            }
        }
    }
}

/// Prints what the reader worked around (a complete run re-indexed from its shards, shards
/// disagreeing on a field) to stderr: the command goes on, but the user should know.
pub(crate) fn warn_run(r: &smdfs::Run) {
    for w in r.warnings() {
        eprintln!("smdfs: warning: {}: {w}", r.dir().display());
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
    for w in &info.warnings {
        writeln!(out, "warning  {w}")?;
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
    let compression =
        compression.parse::<smdfs::h5::export::Compression>().map_err(|e| usage(format!("--compression: {e}")))?;
    let opts = smdfs::h5::export::ExportOptions { compression, chunk_rows };
    let r = smdfs::Run::open(run).with_context(|| format!("opening {}", run.display()))?;
    warn_run(&r);
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

fn progress_bar(what: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(&format!("{what} {{bar:40}} {{bytes}}/{{total_bytes}} ({{eta}})"))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    })
}

fn export_zarr(
    run: &std::path::Path,
    out: &std::path::Path,
    compression: &str,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let level = match compression.split_once('=') {
        None if compression == "gzip" => 4,
        Some(("gzip", l)) => l.parse::<u32>().ok().filter(|&l| l <= 9).ok_or_else(|| {
            usage(format!("--compression {compression:?}: expected gzip or gzip=0..9 for --format zarr"))
        })?,
        _ => return Err(usage(format!("--compression {compression:?}: expected gzip or gzip=0..9 for --format zarr"))),
    };
    let r = smdfs::Run::open(run).with_context(|| format!("opening {}", run.display()))?;
    warn_run(&r);
    let bar = progress_bar("exporting");
    let t = std::time::Instant::now();
    let opts = smdfs::h5::zarr::ZarrExportOptions { gzip_level: level, overwrite: force };
    let report = smdfs::h5::zarr::export(&r, out, &opts, &mut |done, total| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    })
    .with_context(|| format!("exporting {} to {}", run.display(), out.display()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "wrote {} (Zarr v3, {} arrays, {} chunk files, {} data bytes, {} bytes stored, gzip={level}) in {secs:.2} s",
        report.path.display(),
        report.arrays,
        report.chunks,
        report.data_bytes,
        report.stored_bytes
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(run: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    existing_dir(run)?;
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
