//! The reader's access paths on real runs: event-id lookup, shard-wise shuffled iteration,
//! rayon streaming, prefetching, zero-copy slices, and runs without a stored index.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use smdfs::{demo, fields, Prefetch, Run, RunState, SmallData};

fn demo_run(n: u64, servers: usize, clients: usize) -> (tempfile::TempDir, Run) {
    let dir = tempfile::tempdir().unwrap();
    demo::write_demo(dir.path(), n, servers, clients, false).unwrap();
    let run = Run::open(dir.path()).unwrap();
    (dir, run)
}

#[test]
fn rows_are_found_by_event_id() {
    let (_d, run) = demo_run(5000, 3, 4);
    for i in [0u64, 1, 2, 777, 4999] {
        assert_eq!(run.row_of("", demo::id(i)).unwrap(), Some(i));
        assert_eq!(run.event_id("", i).unwrap(), demo::id(i));
    }
    assert_eq!(run.row_of("", 1001).unwrap(), None);
    assert_eq!(run.row_of("", 0).unwrap(), None);
    assert!(run.event_id("", 5000).is_err());
    assert_eq!(run.row_of("unaligned_hits", demo::id(10)).unwrap(), Some(2));
}

#[test]
fn shardwise_iteration_visits_every_row_once_and_shuffles_by_seed() {
    let (_d, run) = demo_run(3000, 3, 5);
    let energy = run.field("energy").unwrap();
    let plain: Vec<_> = run.shardwise("", None).unwrap().collect();
    let a: Vec<_> = run.shardwise("", Some(7)).unwrap().collect();
    let b: Vec<_> = run.shardwise("", Some(7)).unwrap().collect();
    let c: Vec<_> = run.shardwise("", Some(8)).unwrap().collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_ne!(a, plain);
    let set: HashSet<_> = a.iter().copied().collect();
    assert_eq!(set.len(), 3000);
    // Rows of one shard come together.
    let switches = a.windows(2).filter(|w| w[0].shard != w[1].shard).count();
    assert_eq!(switches, 2);
    let mut seen = HashSet::new();
    for loc in a {
        let mut buf = [0u8; 8];
        energy.read_at(loc, &mut buf).unwrap();
        let e = f64::from_le_bytes(buf);
        let i = (e * 2.0) as u64;
        assert_eq!(run.id_at(0, loc), demo::id(i));
        assert!(seen.insert(i));
    }
}

#[test]
fn parallel_streaming_and_prefetch_read_every_row() {
    let (_d, run) = demo_run(10_000, 2, 3);
    let sum = AtomicU64::new(0);
    let rows = AtomicU64::new(0);
    run.field("count")
        .unwrap()
        .par_for_each_block(333, |b| {
            let v: &[i64] = bytemuck_cast(&b.data);
            sum.fetch_add(v.iter().map(|x| (-x) as u64).sum::<u64>(), Ordering::Relaxed);
            rows.fetch_add(b.rows, Ordering::Relaxed);
        })
        .unwrap();
    assert_eq!(rows.into_inner(), 10_000);
    assert_eq!(sum.into_inner(), (0..10_000u64).sum::<u64>());

    let run = Arc::new(run);
    let mut next = 0u64;
    let p = Prefetch::new(Arc::clone(&run), "energy", 1000, 2).unwrap();
    let mut blocks = Vec::new();
    for b in Prefetch::new(Arc::clone(&run), "energy", 1000, 2).unwrap() {
        let b = b.unwrap();
        assert_eq!(b.start, next);
        let v: &[f64] = bytemuck_cast(&b.data);
        for (k, &e) in v.iter().enumerate() {
            assert_eq!(e, demo::energy(next + k as u64));
        }
        next += b.rows;
        blocks.push(b.rows);
    }
    assert_eq!(next, 10_000);
    drop(p);
    let mut n = 0;
    for b in Prefetch::new(Arc::clone(&run), "tag", 999, 3).unwrap() {
        let b = b.unwrap();
        for r in 0..b.rows as usize {
            let s = &b.data[b.offsets[r] as usize..b.offsets[r + 1] as usize];
            assert_eq!(s, demo::tag(b.start + r as u64).as_bytes());
            n += 1;
        }
    }
    assert_eq!(n, 10_000);
}

fn bytemuck_cast<T: Copy>(b: &[u8]) -> &[T] {
    assert_eq!(b.len() % std::mem::size_of::<T>(), 0);
    assert_eq!(b.as_ptr() as usize % std::mem::align_of::<T>(), 0);
    // SAFETY: length and alignment checked; T is a plain number type in these tests.
    unsafe { std::slice::from_raw_parts(b.as_ptr().cast(), b.len() / std::mem::size_of::<T>()) }
}

#[test]
fn one_server_gives_zero_copy_slices_in_event_order() {
    let (_d, run) = demo_run(4000, 1, 1);
    let e = run.field("energy").unwrap();
    let s = e.as_slice::<f64>().unwrap().expect("one contiguous run");
    assert_eq!(s.len(), 4000);
    assert!(s.iter().enumerate().all(|(i, &x)| x == demo::energy(i as u64)));
    assert_eq!(run.group("").unwrap().index.entries(), 1);
    let (_d2, run2) = demo_run(4000, 2, 4);
    assert!(run2.field("energy").unwrap().as_slice::<f64>().unwrap().is_none());
    let slices = run2.field("energy").unwrap().shard_slices::<f64>().unwrap();
    assert_eq!(slices.iter().map(|s| s.len()).sum::<usize>(), 4000);
    assert!(run2.field("energy").unwrap().as_slice::<u16>().is_err());
}

#[test]
fn a_run_without_done_is_indexed_at_open_identically() {
    let dir = tempfile::tempdir().unwrap();
    let smd = SmallData::builder(dir.path()).servers(3).batch_events(10).build().unwrap();
    std::thread::scope(|s| {
        for k in 0..3u64 {
            let mut c = smd.client();
            s.spawn(move || {
                for i in (k..500).step_by(3).collect::<Vec<_>>().into_iter().rev() {
                    c.event(i, fields! { "x" => i, "s" => format!("{i}") }).unwrap();
                }
            });
        }
    });
    drop(smd);
    let run = Run::open(dir.path()).unwrap();
    assert_eq!(run.state(), RunState::Crashed);
    assert_eq!(run.len(), 500);
    let x = run.field("x").unwrap().read_all::<u64>().unwrap();
    assert_eq!(x, (0..500).collect::<Vec<_>>());
    for i in 0..500 {
        assert_eq!(run.field("s").unwrap().ragged_row(i).unwrap(), format!("{i}").as_bytes());
    }
}

#[test]
fn a_schema_record_whose_batch_never_committed_is_ignored() {
    use smdfs::format::{encode_frame, ColumnDef, Role, SchemaRecord, REC_SCHEMA};
    let dir = tempfile::tempdir().unwrap();
    let smd = SmallData::builder(dir.path()).servers(1).build().unwrap();
    let mut c = smd.client();
    for i in 0..10u64 {
        c.event(i, fields! { "x" => i }).unwrap();
    }
    c.event(10, []).unwrap();
    drop(c);
    drop(smd);
    // The writer died after announcing a new aligned field but before its batch committed.
    let log = dir.path().join("shard-00000").join("log");
    let rec = SchemaRecord {
        groups: vec![],
        fields: vec![smdfs::FieldSpec {
            path: "late".into(),
            kind: smdfs::Kind::Fixed,
            dtype: smdfs::Dtype::F64,
            shape: vec![],
            group: String::new(),
            fill: f64::NAN.to_le_bytes().to_vec(),
            units: None,
            attrs: Default::default(),
        }],
        columns: vec![
            ColumnDef { id: 2, group: String::new(), field: Some("late".into()), role: Role::Data },
            ColumnDef { id: 3, group: String::new(), field: Some("late".into()), role: Role::Present },
        ],
    };
    let mut payload = vec![REC_SCHEMA];
    payload.extend(serde_json::to_vec(&rec).unwrap());
    let mut frame = Vec::new();
    encode_frame(&payload, &mut frame);
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend(frame);
    std::fs::write(&log, bytes).unwrap();
    let run = Run::open(dir.path()).unwrap();
    assert_eq!(run.len(), 11, "the empty event is a row too");
    assert!(run.field("late").is_err());
    let x = run.field("x").unwrap().read_all::<u64>().unwrap();
    assert_eq!(&x[..10], &(0..10).collect::<Vec<_>>()[..]);
    assert_eq!(x[10], u64::MAX, "fill for the empty event");
}

#[test]
fn shards_that_disagree_on_a_field_lose_nothing_else() {
    // Two one-shard runs whose `x` differs in dtype, joined as the two shards of one crashed
    // run (what a job whose ranks sent conflicting dtypes leaves behind).
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for (dir, f32s) in [(a.path(), false), (b.path(), true)] {
        let smd = SmallData::builder(dir).servers(1).build().unwrap();
        let mut c = smd.client();
        for i in 0..50u64 {
            let id = if f32s { 2 * i + 1 } else { 2 * i };
            let x = if f32s { smdfs::Value::from(id as f32) } else { smdfs::Value::from(id as f64) };
            c.event(id, [("x", x), ("y", smdfs::Value::from(id))]).unwrap();
        }
        drop(c);
        drop(smd);
    }
    let run_dir = a.path();
    std::fs::rename(b.path().join("shard-00000"), run_dir.join("shard-00001")).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("manifest.json")).unwrap()).unwrap();
    m["shards"] = 2.into();
    // Edited on purpose: written without a checksum, as writers before revision 4 did.
    m.as_object_mut().unwrap().remove("crc32c");
    std::fs::write(run_dir.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();

    let run = Run::open(run_dir).unwrap();
    assert_eq!(run.len(), 100);
    assert_eq!(run.warnings().len(), 1, "{:?}", run.warnings());
    assert!(run.warnings()[0].contains("\"x\"") && run.warnings()[0].contains("f32"), "{:?}", run.warnings());
    let y = run.field("y").unwrap().read_all::<u64>().unwrap();
    assert_eq!(y, (0..100).collect::<Vec<_>>());
    let x = run.field("x").unwrap().read_all::<f64>().unwrap();
    for (id, v) in x.iter().enumerate() {
        if id % 2 == 0 {
            assert_eq!(*v, id as f64);
        } else {
            assert!(v.is_nan(), "row {id} of the conflicting shard reads as missing");
        }
    }
    assert_eq!(run.field("x").unwrap().data().missing, 50);
}
