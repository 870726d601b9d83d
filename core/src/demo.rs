//! The demo run of docs/ARCHITECTURE.md ("The demo run"): a formula any checker can verify a run against.
//!
//! For i in 0..N: id `1000 + 3*i`; dealt to C clients round-robin (`i % C`), each client in
//! increasing i; fields `energy` (f64 `i*0.5`), `det/image` (u16 [4, 8], `(i + 8r + c) %
//! 65536`), `count` (i64 `-i`), `maybe` (f32 `i`, only when `i % 2 == 0`), `unaligned_hits`
//! (u32 `i`, only when `i % 5 == 0`), `tag` (bytes `evt{i}`); summary `n_events` (sum of
//! events per client) and `max_energy` (max over clients).
//!
//! [`write_demo`] run by `mpirun -n P` (built with the `mpi` feature) writes the same run
//! with ranks: the C = P − S client ranks are the clients (client `k` is rank `k`).

use std::path::Path;

use crate::error::Result;
use crate::model::value::Value;
use crate::write::report::{DoneReport, MpiRole};
use crate::write::smalldata::SmallData;

/// Event id of demo event `i`.
pub fn id(i: u64) -> u64 {
    1000 + 3 * i
}

/// `energy` of event `i`.
pub fn energy(i: u64) -> f64 {
    i as f64 * 0.5
}

/// `det/image` of event `i`, C order.
pub fn image(i: u64) -> [u16; 32] {
    let mut a = [0u16; 32];
    for r in 0..4u64 {
        for c in 0..8u64 {
            a[(r * 8 + c) as usize] = ((i + 8 * r + c) % 65536) as u16;
        }
    }
    a
}

/// `count` of event `i`.
pub fn count(i: u64) -> i64 {
    -(i as i64)
}

/// `maybe` of event `i`, if present.
pub fn maybe(i: u64) -> Option<f32> {
    i.is_multiple_of(2).then_some(i as f32)
}

/// `unaligned_hits` of event `i`, if present.
pub fn hits(i: u64) -> Option<u32> {
    i.is_multiple_of(5).then_some(i as u32)
}

/// `tag` of event `i`.
pub fn tag(i: u64) -> String {
    format!("evt{i}")
}

/// Writes one client's share of the demo (events `i % clients == client`).
pub fn write_client_share(c: &mut crate::write::client::Client, events: u64, clients: u64, client: u64) -> Result<()> {
    use std::fmt::Write;
    let (mut n, mut max_e) = (0u64, f64::NEG_INFINITY);
    // Per event: no allocation of its own (the tag's text goes into one reused buffer, the
    // optional fields into the tail of one array).
    let mut t = String::with_capacity(24);
    let mut i = client;
    while i < events {
        let img = image(i);
        t.clear();
        write!(t, "evt{i}").expect("writing to a String");
        let mut f = [
            ("energy", Value::from(energy(i))),
            ("det/image", Value::array(&img, &[4, 8])),
            ("count", Value::from(count(i))),
            ("tag", Value::bytes(t.as_bytes())),
            ("maybe", Value::from(0f32)),
            ("unaligned_hits", Value::from(0u32)),
        ];
        let mut k = 4;
        if let Some(m) = maybe(i) {
            f[k] = ("maybe", Value::from(m));
            k += 1;
        }
        if let Some(h) = hits(i) {
            f[k] = ("unaligned_hits", Value::from(h));
            k += 1;
        }
        c.event(id(i), &f[..k])?;
        n += 1;
        max_e = max_e.max(energy(i));
        i += clients;
    }
    c.reduce("n_events", n)?;
    if n > 0 {
        c.reduce("max_energy", max_e)?;
    }
    Ok(())
}

/// Writes the demo run with `servers` server threads and `clients` client threads.
///
/// In MPI mode (see [`SmallData::builder`]'s `build`) it is collective: `servers` is the
/// number of server ranks, every other rank is one client (`clients` is ignored: it is
/// P − S), and every rank returns the same report.
pub fn write_demo(dir: &Path, events: u64, servers: usize, clients: usize, overwrite: bool) -> Result<DoneReport> {
    write_demo_private(dir, events, servers, clients, overwrite, false)
}

/// [`write_demo`], the run directory owner-only when `private` (see [`Builder::private`]).
///
/// [`Builder::private`]: crate::write::smalldata::Builder::private
pub fn write_demo_private(
    dir: &Path,
    events: u64,
    servers: usize,
    clients: usize,
    overwrite: bool,
    private: bool,
) -> Result<DoneReport> {
    let smd = SmallData::builder(dir).servers(servers).overwrite(overwrite).private(private).build()?;
    if let Some(info) = smd.mpi() {
        if let MpiRole::Client(k) = info.role {
            let mut c = smd.client();
            write_client_share(&mut c, events, info.clients as u64, k as u64)?;
            c.finish()?;
        }
        save_demo_summary(&smd)?;
        return smd.done();
    }
    let clients = clients.max(1);
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..clients)
            .map(|k| {
                let mut c = smd.client();
                s.spawn(move || -> Result<()> {
                    write_client_share(&mut c, events, clients as u64, k as u64)?;
                    c.finish()
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| crate::Error::thread("demo client", "panicked"))??;
        }
        Ok(())
    })?;
    save_demo_summary(&smd)?;
    smd.done()
}

/// Saves the demo's summary from the clients' reductions.
pub fn save_demo_summary(smd: &SmallData) -> Result<()> {
    let n: u64 = smd.sum("n_events")?;
    match smd.max::<f64>("max_energy") {
        Ok(m) => smd.save_summary(crate::fields! { "n_events" => n, "max_energy" => m }),
        Err(_) => smd.save_summary(crate::fields! { "n_events" => n }),
    }
}
