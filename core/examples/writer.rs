//! The README's writer program: 100,000 events from rayon workers into 2 shards, a
//! per-client reduction saved as a summary, then read back. `cargo run --example writer -p smdfs`.

use rayon::prelude::*;
use smdfs::{fields, SmallData, Value};

fn main() -> smdfs::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "out-example".into());
    let smd = SmallData::builder(&dir).servers(2).overwrite(true).build()?; // 2 server threads = 2 shards
    (0..100_000u64).into_par_iter().for_each_init(
        || smd.client(), // one client per rayon worker
        |c, i| {
            let img = vec![(i % 256) as u16; 4 * 8];
            c.event(
                1000 + 3 * i,
                fields! {                                                // event id, then named fields
                    "energy" => i as f64 * 0.5,
                    "det/image" => Value::array(&img, &[4, 8]),          // nested path = HDF5 group
                },
            )
            .unwrap();
            c.reduce("n_events", 1u64).unwrap(); // per-client reduction
        },
    );
    let n: u64 = smd.sum("n_events")?;
    smd.save_summary(fields! { "n_events" => n })?;
    smd.done()?; // shards closed, index merged

    let run = smdfs::Run::open(&dir)?;
    let energy = run.field("energy")?.read_all::<f64>()?;
    println!("{} events; energy[..3] = {:?}; n_events = {n}", run.len(), &energy[..3]);
    Ok(())
}
