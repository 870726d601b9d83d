//! The batch API (`Client::events`) and typed handles (`Client::begin`): every value kind
//! round-trips through a real run and the reader, ids out of order, calls split over
//! several batches, bad calls refused with the field named and nothing written before lost,
//! and all three ways in (fields by name, handles, columns) mixed in one client.

use std::path::Path;

use smdfs::{fields, Column, Error, Run, SmallData, Value};

/// The formula every test writes: event `i` has id `1000 + 7 i`.
fn id(i: u64) -> u64 {
    1000 + 7 * i
}

fn img(i: u64) -> [u16; 6] {
    std::array::from_fn(|k| (i as usize * 10 + k) as u16)
}

fn rag(i: u64) -> Vec<f32> {
    (0..i % 4).map(|j| (i + j) as f32).collect()
}

fn blob(i: u64) -> Vec<u8> {
    vec![i as u8; (i % 3) as usize]
}

fn name(i: u64) -> String {
    format!("e{i}")
}

fn maybe(i: u64) -> Option<f64> {
    i.is_multiple_of(2).then_some(i as f64 + 0.5)
}

fn hits(i: u64) -> Option<u32> {
    i.is_multiple_of(5).then_some(i as u32 * 2)
}

/// A deterministic shuffle of `0..n` (ids out of order).
fn shuffled(n: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for k in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(k, (x % (k as u64 + 1)) as usize);
    }
    v
}

/// Owned columns of every kind for events `is` (kept alive while `Column`s borrow them).
struct Cols {
    ids: Vec<u64>,
    b: Vec<bool>,
    i8s: Vec<i8>,
    i16s: Vec<i16>,
    i32s: Vec<i32>,
    i64s: Vec<i64>,
    u8s: Vec<u8>,
    u16s: Vec<u16>,
    u32s: Vec<u32>,
    u64s: Vec<u64>,
    f32s: Vec<f32>,
    f64s: Vec<f64>,
    img: Vec<u16>,
    rag: Vec<f32>,
    rag_off: Vec<u64>,
    blob: Vec<u8>,
    blob_off: Vec<u64>,
    text: String,
    text_off: Vec<u64>,
    maybe: Vec<f64>,
    maybe_p: Vec<bool>,
    hits: Vec<u32>,
    hits_p: Vec<bool>,
}

impl Cols {
    fn new(is: &[u64]) -> Cols {
        let mut c = Cols {
            ids: is.iter().map(|&i| id(i)).collect(),
            b: is.iter().map(|&i| i % 3 == 0).collect(),
            i8s: is.iter().map(|&i| (i % 100) as i8 - 50).collect(),
            i16s: is.iter().map(|&i| -(i as i16)).collect(),
            i32s: is.iter().map(|&i| i as i32 * -3).collect(),
            i64s: is.iter().map(|&i| -(i as i64) << 33).collect(),
            u8s: is.iter().map(|&i| i as u8).collect(),
            u16s: is.iter().map(|&i| i as u16 * 3).collect(),
            u32s: is.iter().map(|&i| i as u32 * 5).collect(),
            u64s: is.iter().map(|&i| i << 40).collect(),
            f32s: is.iter().map(|&i| i as f32 * 0.25).collect(),
            f64s: is.iter().map(|&i| i as f64 * 0.5).collect(),
            img: is.iter().flat_map(|&i| img(i)).collect(),
            rag: vec![],
            rag_off: vec![0],
            blob: vec![],
            blob_off: vec![0],
            text: String::new(),
            text_off: vec![0],
            maybe: is.iter().map(|&i| maybe(i).unwrap_or(-1.0)).collect(),
            maybe_p: is.iter().map(|&i| maybe(i).is_some()).collect(),
            hits: is.iter().map(|&i| hits(i).unwrap_or(7)).collect(),
            hits_p: is.iter().map(|&i| hits(i).is_some()).collect(),
        };
        for &i in is {
            c.rag.extend(rag(i));
            c.rag_off.push(c.rag.len() as u64);
            c.blob.extend(blob(i));
            c.blob_off.push(c.blob.len() as u64);
            c.text.push_str(&name(i));
            c.text_off.push(c.text.len() as u64);
        }
        c
    }

    fn columns(&self) -> Vec<Column<'_>> {
        vec![
            Column::scalar("k/bool", &self.b),
            Column::scalar("k/i8", &self.i8s),
            Column::scalar("k/i16", &self.i16s),
            Column::scalar("k/i32", &self.i32s),
            Column::scalar("k/i64", &self.i64s),
            Column::scalar("k/u8", &self.u8s),
            Column::scalar("k/u16", &self.u16s),
            Column::scalar("k/u32", &self.u32s),
            Column::scalar("k/u64", &self.u64s),
            Column::scalar("k/f32", &self.f32s),
            Column::scalar("energy", &self.f64s),
            Column::array("det/image", &self.img, &[2, 3]),
            Column::ragged("rag", &self.rag, &self.rag_off),
            Column::bytes("blob", &self.blob, &self.blob_off),
            Column::text("name", &self.text, &self.text_off),
            Column::scalar("maybe", &self.maybe).present(&self.maybe_p),
            Column::scalar("unaligned_hits", &self.hits).present(&self.hits_p),
        ]
    }
}

/// Checks a run holds exactly events `written` (any order) with the formula's values.
fn check_run(dir: &Path, written: &[u64]) {
    let mut is = written.to_vec();
    is.sort_unstable();
    let run = Run::open(dir).expect("open run");
    let n = is.len();
    assert_eq!(run.len(), n as u64, "events in the run");
    let mut ids = vec![0u64; n];
    run.read_ids("", 0, &mut ids).expect("ids");
    assert_eq!(ids, is.iter().map(|&i| id(i)).collect::<Vec<_>>());
    let col = Cols::new(&is);
    macro_rules! same {
        ($path:expr, $t:ty, $want:expr) => {
            assert_eq!(run.field($path).expect($path).read_all::<$t>().expect($path), $want, "field {}", $path);
        };
    }
    same!("k/bool", bool, col.b);
    same!("k/i8", i8, col.i8s);
    same!("k/i16", i16, col.i16s);
    same!("k/i32", i32, col.i32s);
    same!("k/i64", i64, col.i64s);
    same!("k/u8", u8, col.u8s);
    same!("k/u16", u16, col.u16s);
    same!("k/u32", u32, col.u32s);
    same!("k/u64", u64, col.u64s);
    same!("k/f32", f32, col.f32s);
    same!("energy", f64, col.f64s);
    same!("det/image", u16, col.img);
    let (r, b, t) = (run.field("rag").unwrap(), run.field("blob").unwrap(), run.field("name").unwrap());
    for (row, &i) in is.iter().enumerate() {
        assert_eq!(r.row::<f32>(row as u64).unwrap(), rag(i), "rag of event {i}");
        assert_eq!(b.ragged_row(row as u64).unwrap(), blob(i), "blob of event {i}");
        assert_eq!(t.ragged_row(row as u64).unwrap(), name(i).as_bytes(), "name of event {i}");
    }
    let m = run.field("maybe").unwrap();
    let vals = m.read_all::<f64>().unwrap();
    let mut present = vec![0u8; n];
    m.read_present(0, &mut present).unwrap();
    for (row, &i) in is.iter().enumerate() {
        match maybe(i) {
            Some(v) => assert_eq!((vals[row], present[row]), (v, 1), "maybe of event {i}"),
            None => assert!(vals[row].is_nan() && present[row] == 0, "maybe of event {i} must be fill NaN, absent"),
        }
    }
    let hit_is: Vec<u64> = is.iter().copied().filter(|&i| hits(i).is_some()).collect();
    let mut hit_ids = vec![0u64; hit_is.len()];
    run.read_ids("unaligned_hits", 0, &mut hit_ids).unwrap();
    assert_eq!(hit_ids, hit_is.iter().map(|&i| id(i)).collect::<Vec<_>>(), "unaligned group ids");
    let hv = run.field("unaligned_hits").unwrap().read_all::<u32>().unwrap();
    assert_eq!(hv, hit_is.iter().map(|&i| hits(i).unwrap()).collect::<Vec<_>>());
}

#[test]
fn every_value_kind_round_trips_with_ids_out_of_order() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("run");
    // Small batches: a call is split over several, and both servers get calls.
    let smd = SmallData::builder(&dir).servers(2).batch_events(13).build().unwrap();
    let order = shuffled(500);
    std::thread::scope(|s| {
        for (k, part) in order.chunks(250).enumerate() {
            let mut c = smd.client();
            s.spawn(move || {
                // Calls of uneven sizes: 1 event, then 37, then the rest.
                let cuts = [0, 1, 38, part.len()];
                for w in cuts.windows(2) {
                    let cols = Cols::new(&part[w[0]..w[1]]);
                    c.events(&cols.ids, &cols.columns()).unwrap_or_else(|e| panic!("client {k}: {e}"));
                }
                c.finish().unwrap();
            });
        }
    });
    let rep = smd.done().unwrap();
    assert_eq!(rep.events, 500);
    check_run(&dir, &order);
}

#[test]
fn a_call_that_disagrees_with_the_schema_is_refused_whole_and_earlier_data_stays() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("run");
    let smd = SmallData::builder(&dir).servers(1).batch_events(16).build().unwrap();
    let mut c = smd.client();
    let first: Vec<u64> = (0..40).rev().collect();
    let cols = Cols::new(&first);
    c.events(&cols.ids, &cols.columns()).unwrap();

    let next: Vec<u64> = (40..60).collect();
    let good = Cols::new(&next);
    let energy32: Vec<f32> = vec![1.0; next.len()];
    let short: Vec<f64> = vec![1.0; next.len() - 1];
    let bad_off: Vec<u64> = vec![0; next.len()];
    let bad_mask = vec![true; 3];
    let swapped = [3usize, 2];
    // (what replaces one good column, the field the error must name, words the message must hold)
    let cases: Vec<(Column<'_>, &str, &str)> = vec![
        (Column::scalar("energy", &energy32), "energy", "f64 scalar"),
        (Column::scalar("energy", &short), "energy", "160 bytes"),
        (Column::array("det/image", &good.img, &swapped), "det/image", "u16 array [2, 3]"),
        (Column::ragged("rag", &good.rag, &bad_off), "rag", "offsets"),
        (Column::scalar("maybe", &good.maybe).present(&bad_mask), "maybe", "presence mask"),
        (Column::scalar("name", &good.f64s), "name", "str"),
    ];
    for (bad, field, words) in cases {
        let mut cols = good.columns();
        let k = cols.iter().position(|c| c.path() == bad.path()).unwrap();
        cols[k] = bad;
        let e = c.events(&good.ids, &cols).expect_err("a bad column must be refused");
        let msg = e.to_string();
        assert!(
            matches!(&e, Error::SchemaMismatch { field: f, .. } | Error::BadValue { field: f, .. } if f == field),
            "error must name {field:?}: {msg}"
        );
        assert!(msg.contains(words), "error for {field} should say {words:?}: {msg}");
    }
    // A field given twice, and an empty call, change nothing either.
    let mut twice = good.columns();
    twice.push(Column::scalar("energy", &good.f64s));
    assert!(c.events(&good.ids, &twice).unwrap_err().to_string().contains("twice"));
    c.events(&[], &[]).unwrap();
    c.finish().unwrap();
    smd.done().unwrap();
    check_run(&dir, &first);
}

#[test]
fn per_event_handles_and_batch_calls_mix_in_one_client() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("run");
    let smd = SmallData::builder(&dir).servers(2).batch_events(32).build().unwrap();
    let h = (
        smd.scalar::<bool>("k/bool").unwrap(),
        smd.scalar::<i8>("k/i8").unwrap(),
        smd.scalar::<f64>("energy").unwrap(),
        smd.array::<u16>("det/image", &[2, 3]).unwrap(),
        smd.ragged::<f32>("rag").unwrap(),
        smd.bytes("blob").unwrap(),
        smd.text("name").unwrap(),
        smd.scalar::<f64>("maybe").unwrap(),
        smd.scalar::<u32>("unaligned_hits").unwrap(),
    );
    // A handle of the wrong type for a known field is a schema mismatch.
    let e = smd.scalar::<f32>("energy").unwrap_err();
    assert!(matches!(e, Error::SchemaMismatch { ref field, .. } if field == "energy"), "{e}");
    let order = shuffled(300);
    let mut c = smd.client();
    for (k, part) in order.chunks(50).enumerate() {
        match k % 3 {
            0 => c.events(&Cols::new(part).ids, &Cols::new(part).columns()).unwrap(),
            1 => {
                for &i in part {
                    let mut row = c
                        .begin(id(i))
                        .set(&h.0, i % 3 == 0)
                        .set(&h.1, (i % 100) as i8 - 50)
                        .set(&h.2, i as f64 * 0.5)
                        .set(&h.3, &img(i))
                        .set(&h.4, &rag(i)[..])
                        .set(&h.5, &blob(i)[..])
                        .set(&h.6, name(i).as_str());
                    if let Some(m) = maybe(i) {
                        row = row.set(&h.7, m);
                    }
                    if let Some(x) = hits(i) {
                        row = row.set(&h.8, x);
                    }
                    // The other fields by name in the same event are not possible with a
                    // row; write them in the same event through `event` instead below.
                    row.write().unwrap();
                }
            }
            _ => {
                for &i in part {
                    let (im, r, b, nm) = (img(i), rag(i), blob(i), name(i));
                    let mut f = vec![
                        ("k/bool", Value::from(i % 3 == 0)),
                        ("k/i8", Value::from((i % 100) as i8 - 50)),
                        ("energy", Value::from(i as f64 * 0.5)),
                        ("det/image", Value::array(&im, &[2, 3])),
                        ("rag", Value::ragged(&r)),
                        ("blob", Value::bytes(&b)),
                        ("name", Value::from(nm.as_str())),
                    ];
                    if let Some(m) = maybe(i) {
                        f.push(("maybe", Value::from(m)));
                    }
                    if let Some(x) = hits(i) {
                        f.push(("unaligned_hits", Value::from(x)));
                    }
                    c.event(id(i), &f).unwrap();
                }
            }
        }
        // Rejected events between the good ones leave nothing behind.
        let e = c.begin(1).set(&h.2, 1.0).set(&h.3, &[1u16, 2][..]).write().unwrap_err();
        assert!(e.to_string().contains("needs 6 elements, got 2"), "{e}");
        let e = c.begin(2).set(&h.2, 1.0).set(&h.2, 2.0).write().unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        drop(c.begin(3).set(&h.2, 1.0));
        let e = c.event(4, fields! { "energy" => 1.0, "det/image" => &[1u16][..] }).unwrap_err();
        assert!(e.to_string().contains("det/image"), "{e}");
    }
    c.finish().unwrap();
    smd.done().unwrap();
    // Only the fields this test wrote in every event are checked by `check_run`'s formula;
    // the k/* fields other than bool and i8 exist only in batch calls, so check the shared
    // ones here and the rest through a run of batch calls alone (test above).
    let run = Run::open(&dir).unwrap();
    let mut is = order.clone();
    is.sort_unstable();
    assert_eq!(run.len(), 300);
    let mut ids = vec![0u64; 300];
    run.read_ids("", 0, &mut ids).unwrap();
    assert_eq!(ids, is.iter().map(|&i| id(i)).collect::<Vec<_>>());
    let cols = Cols::new(&is);
    assert_eq!(run.field("energy").unwrap().read_all::<f64>().unwrap(), cols.f64s);
    assert_eq!(run.field("k/bool").unwrap().read_all::<bool>().unwrap(), cols.b);
    assert_eq!(run.field("k/i8").unwrap().read_all::<i8>().unwrap(), cols.i8s);
    assert_eq!(run.field("det/image").unwrap().read_all::<u16>().unwrap(), cols.img);
    let (r, b, t) = (run.field("rag").unwrap(), run.field("blob").unwrap(), run.field("name").unwrap());
    let m = run.field("maybe").unwrap().read_all::<f64>().unwrap();
    for (row, &i) in is.iter().enumerate() {
        assert_eq!(r.row::<f32>(row as u64).unwrap(), rag(i));
        assert_eq!(b.ragged_row(row as u64).unwrap(), blob(i));
        assert_eq!(t.ragged_row(row as u64).unwrap(), name(i).as_bytes());
        match maybe(i) {
            Some(v) => assert_eq!(m[row], v, "maybe of {i}"),
            None => assert!(m[row].is_nan(), "maybe of {i} must be the NaN fill"),
        }
    }
    let hv = run.field("unaligned_hits").unwrap().read_all::<u32>().unwrap();
    assert_eq!(hv, is.iter().filter_map(|&i| hits(i)).collect::<Vec<_>>());
    // Fields only the batch calls carried are filled (absent) in the other events.
    let u64s = run.field("k/u64").unwrap();
    let mut present = vec![0u8; 300];
    u64s.read_present(0, &mut present).unwrap();
    assert_eq!(present.iter().filter(|&&p| p == 1).count(), 100, "k/u64 present in the batch calls' events only");
}

#[test]
fn masked_rows_follow_the_per_event_rules() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("run");
    let smd = SmallData::builder(&dir).servers(1).build().unwrap();
    let mut c = smd.client();
    let (x, y) = ([1.0f64, 2.0, 3.0, 4.0], [10u32, 20, 30, 40]);
    let (xp, yp) = ([true, false, true, false], [false, false, true, true]);
    // Event 2 has no value at all: a run-group row with every aligned field filled, as
    // `event(2, [])` makes; event 4 has only an unaligned value: no run-group row.
    c.events(&[1, 2, 3, 4], &[Column::scalar("x", &x).present(&xp), Column::scalar("unaligned_y", &y).present(&yp)])
        .unwrap();
    c.finish().unwrap();
    smd.done().unwrap();
    let run = Run::open(&dir).unwrap();
    let mut ids = vec![0u64; 3];
    run.read_ids("", 0, &mut ids).unwrap();
    assert_eq!(ids, [1, 2, 3]);
    let xs = run.field("x").unwrap().read_all::<f64>().unwrap();
    assert!(xs[0] == 1.0 && xs[1].is_nan() && xs[2] == 3.0, "{xs:?}");
    let mut uids = vec![0u64; 2];
    run.read_ids("unaligned_y", 0, &mut uids).unwrap();
    assert_eq!(uids, [3, 4]);
    assert_eq!(run.field("unaligned_y").unwrap().read_all::<u32>().unwrap(), [30, 40]);
}

#[test]
fn callbacks_see_every_event_of_every_way_in() {
    use std::sync::{Arc, Mutex};
    let t = tempfile::tempdir().unwrap();
    let seen: Arc<Mutex<Vec<(u64, f64, usize)>>> = Arc::default();
    let s2 = Arc::clone(&seen);
    let smd = SmallData::builder(t.path().join("run"))
        .servers(1)
        .callback(move |id, fields| {
            let e = fields
                .iter()
                .find(|(p, _)| *p == "energy")
                .map(|(_, v)| f64::from_le_bytes(v.data().try_into().unwrap()));
            s2.lock().unwrap().push((id, e.unwrap_or(f64::NAN), fields.len()));
        })
        .build()
        .unwrap();
    let e = smd.scalar::<f64>("energy").unwrap();
    let tag = smd.text("tag").unwrap();
    let mut c = smd.client();
    c.begin(1).set(&e, 0.5).set(&tag, "a").write().unwrap();
    c.event(2, fields! { "energy" => 1.0 }).unwrap();
    let (ids, es, present) = ([3u64, 4], [1.5f64, 2.0], [true, false]);
    c.events(&ids, &[Column::scalar("energy", &es).present(&present)]).unwrap();
    // A rejected event calls nothing.
    assert!(c.begin(5).set(&e, 1.0).set(&e, 2.0).write().is_err());
    c.finish().unwrap();
    smd.done().unwrap();
    let mut got = seen.lock().unwrap().clone();
    got.sort_by_key(|g| g.0);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!((got[0].0, got[0].1, got[0].2), (1, 0.5, 2));
    assert_eq!((got[1].0, got[1].1, got[1].2), (2, 1.0, 1));
    assert_eq!((got[2].0, got[2].1, got[2].2), (3, 1.5, 1));
    assert_eq!((got[3].0, got[3].2), (4, 0), "an event whose only value is masked has no fields");
}

#[test]
fn large_calls_without_masks_are_written_from_the_callers_arrays() {
    // A call of at least 256 KiB with no masks skips the client's batch (threads mode): its
    // rows must read back as the batched path's do, after the batch that came before it,
    // with an aligned field the call lacks filled and absent.
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("run");
    let smd = SmallData::builder(&dir).servers(2).build().unwrap();
    let order = shuffled(3000);
    let big = |i: u64| -> Vec<u8> { (0..1024u64).map(|j| (i * 31 + j) as u8).collect() };
    std::thread::scope(|s| {
        for part in order.chunks(1500) {
            let mut c = smd.client();
            s.spawn(move || {
                // A small call with masks (batched), then a large one without.
                let head = Cols::new(&part[..10]);
                let mut cols = head.columns();
                let head_big: Vec<u8> = part[..10].iter().flat_map(|&i| big(i)).collect();
                cols.push(Column::array("big", &head_big, &[1024]));
                c.events(&head.ids, &cols).unwrap();
                let rest = Cols::new(&part[10..]);
                let mut cols = rest.columns();
                cols.retain(|c| !matches!(c.path(), "maybe" | "unaligned_hits"));
                let rest_big: Vec<u8> = part[10..].iter().flat_map(|&i| big(i)).collect();
                assert!(rest_big.len() >= 1 << 20, "the call must be large enough to skip the batch");
                cols.push(Column::array("big", &rest_big, &[1024]));
                c.events(&rest.ids, &cols).unwrap();
                c.finish().unwrap();
            });
        }
    });
    assert_eq!(smd.done().unwrap().events, 3000);
    let mut is = order.clone();
    is.sort_unstable();
    let run = Run::open(&dir).unwrap();
    let mut ids = vec![0u64; is.len()];
    run.read_ids("", 0, &mut ids).unwrap();
    assert_eq!(ids, is.iter().map(|&i| id(i)).collect::<Vec<_>>());
    let col = Cols::new(&is);
    assert_eq!(run.field("k/i64").unwrap().read_all::<i64>().unwrap(), col.i64s);
    assert_eq!(run.field("k/bool").unwrap().read_all::<bool>().unwrap(), col.b);
    assert_eq!(run.field("energy").unwrap().read_all::<f64>().unwrap(), col.f64s);
    assert_eq!(run.field("det/image").unwrap().read_all::<u16>().unwrap(), col.img);
    assert_eq!(
        run.field("big").unwrap().read_all::<u8>().unwrap(),
        is.iter().flat_map(|&i| big(i)).collect::<Vec<_>>()
    );
    let (r, t) = (run.field("rag").unwrap(), run.field("name").unwrap());
    for (row, &i) in is.iter().enumerate() {
        assert_eq!(r.row::<f32>(row as u64).unwrap(), rag(i), "rag of event {i}");
        assert_eq!(t.ragged_row(row as u64).unwrap(), name(i).as_bytes(), "name of event {i}");
    }
    let heads: Vec<u64> = order.chunks(1500).flat_map(|p| p[..10].to_vec()).collect();
    let m = run.field("maybe").unwrap();
    let vals = m.read_all::<f64>().unwrap();
    let mut present = vec![0u8; is.len()];
    m.read_present(0, &mut present).unwrap();
    for (row, &i) in is.iter().enumerate() {
        match maybe(i).filter(|_| heads.contains(&i)) {
            Some(v) => assert_eq!((vals[row], present[row]), (v, 1), "maybe of event {i}"),
            None => assert!(vals[row].is_nan() && present[row] == 0, "maybe of event {i} must be fill NaN, absent"),
        }
    }
    let hit_is: Vec<u64> = is.iter().copied().filter(|&i| hits(i).is_some() && heads.contains(&i)).collect();
    let mut hit_ids = vec![0u64; hit_is.len()];
    run.read_ids("unaligned_hits", 0, &mut hit_ids).unwrap();
    assert_eq!(hit_ids, hit_is.iter().map(|&i| id(i)).collect::<Vec<_>>(), "unaligned group ids");
}
