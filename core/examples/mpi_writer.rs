//! The writer program of docs/ARCHITECTURE.md, one source for both modes: `cargo run --example mpi_writer
//! -- OUT` writes with threads; built with `--features mpi` and started by `mpirun -n P`, the
//! same binary writes with P ranks (the last S serve, the others are clients). Each client
//! writes its block of event indices with rayon, one client handle per worker thread.
//!
//! Usage: `mpi_writer OUT [--events N] [--servers S] [--sequential] [--fail-rank R]
//! [--f32-on-odd-ranks]`. `--sequential` writes with one client handle per process instead
//! of rayon's (in MPI mode client rank `k` then sends only to server `k % S`).
//! `--fail-rank R` makes rank R's events fail midway (the job must fail with that message);
//! `--f32-on-odd-ranks` makes odd ranks write `energy` as f32 (ranks disagree on a field's
//! dtype: the job must fail naming it). The integration tests in `tests/mpi.rs` use both.

use rayon::prelude::*;
use smdfs::{fields, Error, SmallData};

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Result<Option<T>, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => {
            args.get(i + 1).and_then(|v| v.parse().ok()).map(Some).ok_or_else(|| format!("{name} needs a number"))
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args.first().filter(|a| !a.starts_with("--")).ok_or("usage: mpi_writer OUT [options]")?;
    let n: u64 = arg(&args, "--events")?.unwrap_or(100_000);
    let servers: usize = arg(&args, "--servers")?.unwrap_or(2);
    let fail_rank: Option<usize> = arg(&args, "--fail-rank")?;
    let f32_on_odd = args.iter().any(|a| a == "--f32-on-odd-ranks");
    let sequential = args.iter().any(|a| a == "--sequential");

    let smd = SmallData::builder(out).servers(servers).overwrite(true).build()?;
    let rank = smd.mpi().map_or(0, |m| m.rank);
    let mine = smd.block(0..n);
    let fail_at = (fail_rank == Some(rank)).then(|| mine.start + (mine.end - mine.start) / 2);
    let write = |c: &mut smdfs::Client, i: u64| -> Result<(), Error> {
        if Some(i) == fail_at {
            return Err(Error::Usage(format!("injected failure on rank {rank} at event {i}")));
        }
        let img = [i as u16; 16];
        if f32_on_odd && rank % 2 == 1 {
            c.event(1000 + 3 * i, fields! { "energy" => i as f32 * 0.5, "det/image" => &img })?;
        } else {
            c.event(1000 + 3 * i, fields! { "energy" => i as f64 * 0.5, "det/image" => &img })?;
        }
        c.reduce("n_events", 1u64)
    };
    if sequential {
        if smd.is_client() {
            let mut c = smd.client();
            mine.clone().try_for_each(|i| write(&mut c, i))?;
            c.finish()?;
        }
    } else {
        mine.into_par_iter().try_for_each_init(|| smd.client(), write)?;
    }
    let total: u64 = smd.sum("n_events")?; // collective in MPI mode
    smd.save_summary(fields! { "n_events" => total })?;
    let report = smd.done()?;
    if rank == 0 {
        println!("wrote {} events ({} summed over clients) to {out}", report.events, total);
    }
    Ok(())
}
