//! The `smdfs` command: a thin shell over the library crates. Parsing, printing and exit
//! codes live here; anything a library user could need lives in `smdfs` / `smdfs-fuse`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Write one parallel for-loop's results into one dataset, and read it back as one file.
#[derive(Parser)]
#[command(name = "smdfs", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write the demo run (DESIGN.md "Demo run") with server and client threads.
    Demo {
        /// Output run directory.
        out: PathBuf,
        /// Number of events.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Server threads (shards).
        #[arg(long, default_value_t = 2)]
        servers: usize,
        /// Client threads.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Replace a run already in OUT.
        #[arg(long)]
        force: bool,
    },
    /// Describe a run: state, events, datasets (dtype, shape, rows), groups, summary.
    Info {
        /// Run directory.
        run: PathBuf,
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
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
            println!(
                "wrote {} events to {} with {servers} server(s) and {clients} client(s) in {secs:.2} s ({:.0} events/s)",
                r.events,
                out.display(),
                r.events as f64 / secs.max(1e-9)
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Info { run, json } => {
            let r = smdfs::Run::open(&run).with_context(|| format!("opening {}", run.display()))?;
            let info = r.info();
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &info)?;
                writeln!(out)?;
            } else {
                print_info(&mut out, &info)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_info(out: &mut impl Write, info: &smdfs::info::RunInfo) -> std::io::Result<()> {
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
