//! Integration tests for the older tools' capabilities in the core crate — the recorder,
//! split records and named slices — on real files, comparing every value read with the
//! value written. Some tests re-run this test binary as child processes (selected by an
//! environment variable) to write or read from another process; named slices are also read
//! back with numpy from the project's `.venv`.

use std::process::Command;

/// Runs the test `name` of this binary in a child process with `env` set; asserts success.
fn run_child(name: &str, env: &[(&str, String)]) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn child test process");
    assert!(
        out.status.success(),
        "child {name} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // `--exact` with a wrong name runs nothing and still succeeds: make sure it ran.
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"), "child {name} did not run");
}

mod recorder {
    use super::run_child;
    use smdfs::tools::recorder::{Recorder, Values};
    use smdfs::Value;
    use std::sync::{Arc, Mutex};

    const N: u64 = 1500;
    const IMAGES: u64 = 40;

    fn image(i: u64) -> Vec<u16> {
        (0..32).map(|k| (i * 7 + k) as u16).collect()
    }

    fn ragged(i: u64) -> Vec<i32> {
        (0..(i % 5) as i32).map(|k| k - i as i32).collect()
    }

    /// Records the reference data set; returns how many values were recorded.
    fn record_all(r: &mut Recorder) -> u64 {
        let mut count = 0;
        for i in 0..N {
            assert_eq!(r.record("loss", i as f64 * 0.25).unwrap(), i);
            assert_eq!(r.record("train/acc", i as f32 / 8.0).unwrap(), i);
            count += 2;
            if i < IMAGES {
                r.record("det/image", Value::array(&image(i), &[4, 8])).unwrap();
                r.record("log", format!("step {i}")).unwrap();
                r.record("train/ragged", Value::ragged(&ragged(i))).unwrap();
                count += 3;
            }
        }
        // One key whose values disagree: scalar, array, text, then a scalar again.
        r.record("mixed", 1.5f64).unwrap();
        r.record("mixed", &[1.0f64, 2.0, 3.0][..]).unwrap();
        r.record("mixed", "three").unwrap();
        r.record("mixed", 4.5f64).unwrap();
        count + 4
    }

    /// Compares everything a recorder returns with what `record_all` recorded.
    fn check(r: &Recorder) {
        assert_eq!(r.keys(), ["det/image", "log", "loss", "mixed", "train/acc", "train/ragged"]);
        let loss = r.get("loss").unwrap();
        assert_eq!(loss.ids, (0..N).collect::<Vec<_>>());
        let Values::Array(Value::Array { shape, .. }) = &loss.values else { panic!("loss is not an array") };
        assert_eq!(shape, &[N as usize]);
        let lv = loss.to_vec::<f64>().unwrap();
        for i in 0..N {
            assert_eq!(lv[i as usize], i as f64 * 0.25, "loss {i}");
        }
        let acc = r.get("train/acc").unwrap().to_vec::<f32>().unwrap();
        for i in 0..N {
            assert_eq!(acc[i as usize], i as f32 / 8.0, "acc {i}");
        }
        let img = r.get("det/image").unwrap();
        assert_eq!(img.as_array().unwrap().shape(), &[IMAGES as usize, 4, 8]);
        let iv = img.to_vec::<u16>().unwrap();
        for i in 0..IMAGES {
            assert_eq!(&iv[i as usize * 32..(i as usize + 1) * 32], &image(i)[..], "image {i}");
        }
        let log = r.get("log").unwrap();
        assert!(log.as_array().is_none(), "text values are a list");
        for (i, v) in log.to_list().iter().enumerate() {
            assert_eq!(v, &Value::from(format!("step {i}")), "log {i}");
        }
        let rg = r.get("train/ragged").unwrap().to_list();
        assert_eq!(rg.len() as u64, IMAGES);
        for (i, v) in rg.iter().enumerate() {
            assert_eq!(v, &Value::ragged(&ragged(i as u64)).into_owned(), "ragged {i}");
        }
        let mixed = r.get("mixed").unwrap();
        assert_eq!(mixed.ids, [0, 1, 2, 3]);
        let l = mixed.to_list();
        assert_eq!(l[0], Value::from(1.5f64));
        assert_eq!(l[1], Value::from(vec![1.0f64, 2.0, 3.0]));
        assert_eq!(l[2], Value::from("three"));
        assert_eq!(l[3], Value::from(4.5f64));
        assert!(mixed.to_vec::<f64>().is_err());
        let train = r.get_all("train").unwrap();
        assert_eq!(train.keys().collect::<Vec<_>>(), ["train/acc", "train/ragged"]);
        assert_eq!(r.get_all("").unwrap().len(), 6);
        assert!(r.get_all("trai").unwrap().is_empty(), "a prefix matches whole segments");
        assert!(r.get("nope").is_err());
    }

    #[test]
    fn recorded_values_read_back_from_memory_this_process_and_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("rec");
        let seen = Arc::new(Mutex::new(Vec::<(String, u64, Value<'static>)>::new()));
        let s2 = Arc::clone(&seen);
        let mut r = Recorder::builder()
            .store(&run)
            .callback(move |k, id, v| s2.lock().unwrap().push((k.to_string(), id, v.clone().into_owned())))
            .build()
            .unwrap();
        let n = record_all(&mut r);
        check(&r); // the in-memory store, while recording
        r.close().unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len() as u64, n, "the callback sees every value");
        assert!(seen
            .iter()
            .filter(|(k, ..)| k == "loss")
            .enumerate()
            .all(|(i, (_, id, v))| { *id == i as u64 && *v == Value::from(i as f64 * 0.25) }));
        let opened = Recorder::open(&run).unwrap();
        check(&opened);
        let zc = opened.get_slice::<f64>("loss").unwrap().expect("one shard holds loss in order");
        assert_eq!(zc.len() as u64, N);
        assert_eq!(zc[7], 1.75);
        assert!(opened.get_slice::<f64>("mixed").unwrap().is_none());
        run_child("recorder::child_opens_recorder", &[("SMDFS_RECORDER_CHILD", run.display().to_string())]);
    }

    /// Child half of the test above: opens the closed recorder in another process.
    #[test]
    fn child_opens_recorder() {
        let Ok(dir) = std::env::var("SMDFS_RECORDER_CHILD") else { return };
        let r = Recorder::open(dir).unwrap();
        check(&r);
        let mut r = r;
        assert!(r.record("loss", 1.0f64).is_err(), "an opened recorder is read-only");
    }

    #[test]
    fn bad_keys_and_values_are_refused_and_take_no_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Recorder::create(dir.path().join("rec")).unwrap();
        r.record("a", 1u8).unwrap();
        for k in ["", "a#b", "/abs", "x//y", "summary/x"] {
            assert!(r.record(k, 1u8).is_err(), "key {k:?} accepted");
        }
        let bad = Value::Array { dtype: smdfs::Dtype::U8, shape: vec![3], data: vec![1u8].into() };
        assert!(r.record("b", bad).is_err());
        assert_eq!(r.record("a", 2u8).unwrap(), 1, "refused values take no id");
        assert_eq!(r.keys(), ["a"]);
        r.close().unwrap();
        let o = Recorder::open(dir.path().join("rec")).unwrap();
        assert_eq!(o.get("a").unwrap().to_vec::<u8>().unwrap(), [1, 2]);
        assert!(Recorder::create(dir.path().join("rec")).is_err(), "an existing run is not replaced");
    }

    #[test]
    fn a_recorder_without_memory_reads_after_close() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Recorder::builder().store(dir.path()).memory(false).build().unwrap();
        for i in 0..10u32 {
            r.record("k/v", i).unwrap();
        }
        assert!(r.get("k/v").is_err(), "no memory store: get says so");
        drop(r); // dropping closes
        let o = Recorder::open(dir.path()).unwrap();
        assert_eq!(o.get("k/v").unwrap().to_vec::<u32>().unwrap(), (0..10).collect::<Vec<_>>());
    }
}

mod split {
    use smdfs::tools::split::{write_split, write_split_arrays, SplitLoader, SplitWriter, INDEX_FILE};
    use std::collections::HashSet;

    fn record(i: u64) -> Vec<u8> {
        (0..(i * 37 % 300)).map(|j| ((i * 31 + j) % 256) as u8).collect()
    }

    #[test]
    fn records_read_back_by_index_binwise_shuffled_and_prefetched() {
        let dir = tempfile::tempdir().unwrap();
        let n = 5000u64;
        assert_eq!(write_split(dir.path(), (0..n).map(record), 16).unwrap(), n);
        for b in 0..16 {
            assert!(dir.path().join(smdfs::tools::split::bin_file_name(b)).is_file());
        }
        let l = SplitLoader::open(dir.path()).unwrap();
        assert_eq!((l.len(), l.splits()), (n, 16));
        for i in 0..n {
            assert_eq!(l.get(i).unwrap(), &record(i)[..], "record {i}");
        }
        assert!(l.get(n).is_err());

        // In order: bin by bin, records in bin order.
        let plain: Vec<u64> = l.iter_binwise(None).map(|r| r.unwrap().0).collect();
        let expect: Vec<u64> = (0..16).flat_map(|b| (b..n).step_by(16)).collect();
        assert_eq!(plain, expect);

        // Shuffled: every record once with its bytes; bins stay contiguous; seeded.
        let mut seen = HashSet::new();
        let mut bins_done = Vec::new();
        for r in l.iter_binwise(Some(42)) {
            let (i, bytes) = r.unwrap();
            assert_eq!(bytes, &record(i)[..]);
            assert!(seen.insert(i), "record {i} twice");
            let b = l.bin_of(i);
            if bins_done.last() != Some(&b) {
                assert!(!bins_done.contains(&b), "bin {b} visited twice");
                bins_done.push(b);
            }
        }
        assert_eq!(seen.len() as u64, n);
        let order42 = l.order(Some(42));
        assert_ne!(order42, expect, "a seed shuffles");
        assert_eq!(order42, l.order(Some(42)), "the same seed, the same order");
        assert_ne!(order42, l.order(Some(43)));

        // Prefetched: same order and bytes, whatever the thread count and depth.
        for (threads, depth) in [(1, 1), (3, 2), (4, 8)] {
            let got: Vec<u64> = l
                .prefetch(Some(42), threads, depth)
                .unwrap()
                .map(|r| {
                    let (i, b) = r.unwrap();
                    assert_eq!(b, &record(i)[..]);
                    i
                })
                .collect();
            assert_eq!(got, order42, "prefetch threads {threads} depth {depth}");
        }
        let decoded: Vec<(u64, Vec<u8>)> =
            l.prefetch_map(Some(42), 2, 2, |i, b| (i, b.to_vec())).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(decoded.len() as u64, n);
        for (k, (i, b)) in decoded.iter().enumerate() {
            assert_eq!(*i, order42[k]);
            assert_eq!(b, &record(*i));
        }
        // Stopping early must not hang the background threads.
        let mut it = l.prefetch(Some(1), 2, 1).unwrap();
        it.next().unwrap().unwrap();
        drop(it);
    }

    #[test]
    fn arrays_read_back_as_zero_copy_typed_slices() {
        let dir = tempfile::tempdir().unwrap();
        let arrays: Vec<Vec<f64>> =
            (0..777u64).map(|i| (0..i % 13).map(|k| i as f64 + k as f64 / 16.0).collect()).collect();
        write_split_arrays(dir.path(), &arrays, 7).unwrap();
        let l = SplitLoader::open(dir.path()).unwrap();
        for (i, a) in arrays.iter().enumerate() {
            assert_eq!(l.get_array::<f64>(i as u64).unwrap(), &a[..], "array {i}");
        }
        let total: usize = l.prefetch_map(None, 2, 2, |_, b| b.len()).unwrap().map(|r| r.unwrap()).sum();
        assert_eq!(total, arrays.iter().map(|a| a.len() * 8).sum::<usize>());
        // An unaligned writer refuses arrays that would not read back zero-copy.
        let d2 = tempfile::tempdir().unwrap();
        let mut w = SplitWriter::create(d2.path(), 2).unwrap();
        assert!(w.push_array(&[1.0f64]).is_err());
        w.push(b"x").unwrap();
        assert_eq!(w.finish().unwrap(), 1);
    }

    #[test]
    fn damaged_or_missing_data_is_an_error_never_wrong_bytes() {
        let dir = tempfile::tempdir().unwrap();
        assert!(SplitLoader::open(dir.path()).is_err(), "no index yet");
        let mut w = SplitWriter::create(dir.path(), 3).unwrap();
        for i in 0..30 {
            w.push(&record(i + 10)).unwrap();
        }
        assert!(SplitLoader::open(dir.path()).is_err(), "index is published only by finish()");
        w.finish().unwrap();
        assert!(SplitWriter::create(dir.path(), 3).is_err(), "existing records are not clobbered");
        // A truncated bin: records past its end are errors, earlier ones still read.
        let bin = dir.path().join(smdfs::tools::split::bin_file_name(1));
        let len = std::fs::metadata(&bin).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&bin).unwrap().set_len(len / 2).unwrap();
        let l = SplitLoader::open(dir.path()).unwrap();
        assert!(l.get(28).is_err(), "last record of bin 1 is gone");
        assert_eq!(l.get(1).unwrap(), &record(11)[..]);
        assert!(l.iter_binwise(None).any(|r| r.is_err()));
        // A damaged header is refused.
        let idx = dir.path().join(INDEX_FILE);
        let mut b = std::fs::read(&idx).unwrap();
        b[20] ^= 1;
        std::fs::write(&idx, b).unwrap();
        assert!(SplitLoader::open(dir.path()).is_err());
    }
}

mod slices {
    use super::run_child;
    use smdfs::tools::slices::{Slices, SlicesWriter};
    use smdfs_tests::{machine_has, Need};
    use std::path::Path;
    use std::process::Command;

    const ROWS: u64 = 2400;
    const COLS: usize = 5;

    /// Element (r, c) of the test array.
    fn val(r: u64, c: usize) -> f32 {
        (r * 10 + c as u64) as f32
    }

    fn rows(range: std::ops::Range<u64>) -> Vec<f32> {
        range.flat_map(|r| (0..COLS).map(move |c| val(r, c))).collect()
    }

    /// Names: `t{k}-{j}` rows written by thread k, `p{k}-{j}` by process k; 40 rows each, the
    /// threads take rows 0..1200, the processes 1200..2400.
    fn name_ranges() -> Vec<(String, std::ops::Range<u64>)> {
        let mut v = Vec::new();
        for k in 0..4u64 {
            for j in 0..(300 / 40 + 1) {
                let start = k * 300 + j * 40;
                let end = (start + 40).min(k * 300 + 300);
                if start < end {
                    v.push((format!("t{k}-{j}"), start..end));
                }
            }
        }
        for k in 0..3u64 {
            for j in 0..10 {
                let start = 1200 + k * 400 + j * 40;
                v.push((format!("p{k}-{j}"), start..start + 40));
            }
        }
        v
    }

    #[test]
    fn rows_written_by_threads_and_processes_read_back_zero_copy_and_with_numpy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let w = SlicesWriter::create::<f32>(&path, &[COLS], ROWS).unwrap();
        let names = name_ranges();
        // Three child processes write their ranges while four threads write theirs.
        let children: Vec<_> = (0..3)
            .map(|k| {
                let path = path.clone();
                std::thread::spawn(move || {
                    run_child(
                        "slices::child_writes_rows",
                        &[("SMDFS_SLICES_CHILD", format!("{}\n{k}", path.display()))],
                    )
                })
            })
            .collect();
        std::thread::scope(|s| {
            for k in 0..4 {
                let (w, names) = (&w, &names);
                s.spawn(move || {
                    for (name, r) in names.iter().filter(|(n, _)| n.starts_with(&format!("t{k}-"))) {
                        assert_eq!(w.write(name, r.start, &rows(r.clone())).unwrap(), r.clone());
                    }
                });
            }
        });
        for c in children {
            c.join().unwrap();
        }
        w.sync().unwrap();

        let x = Slices::<f32>::open(&path).unwrap();
        assert_eq!((x.rows(), x.row_shape()), (ROWS, &[COLS][..]));
        assert_eq!(x.len(), names.len());
        for (name, r) in &names {
            assert_eq!(&x[name.as_str()], &rows(r.clone())[..], "slice {name}");
            assert_eq!(x.range(name), Some(r.clone()));
            assert_eq!(x.view(name).unwrap().shape(), &[(r.end - r.start) as usize, COLS]);
        }
        assert_eq!(x.as_slice(), &rows(0..ROWS)[..], "every row written");
        let mut listed: Vec<&str> = x.names().collect();
        listed.sort_unstable();
        let mut want: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
        want.sort_unstable();
        assert_eq!(listed, want);
        assert_eq!(x.iter().count(), names.len());

        // numpy reads what was written (skipped with a message without the `.venv` Python, a
        // failure under SMDFS_REQUIRE_TOOLS=1).
        if !machine_has(&[Need::Python]) {
            return;
        }
        let py = smdfs_tests::python();
        let script = r#"
import json, sys
import numpy as np
p = sys.argv[1]
rows, cols = int(sys.argv[2]), int(sys.argv[3])
for a in (np.load(p, mmap_mode='r'), np.load(p)):
    assert a.dtype == np.float32 and a.shape == (rows, cols), (a.dtype, a.shape)
    want = np.arange(rows, dtype=np.float64)[:, None] * 10 + np.arange(cols)[None, :]
    assert np.array_equal(a, want.astype(np.float32)), "values differ"
n = 0
for line in open(p + '.names'):
    e = json.loads(line)
    s = a[e['start']:e['end']]
    assert s[0, 0] == e['start'] * 10, e
    n += 1
print('numpy-ok', n)
"#;
        let out = Command::new(&py)
            .args(["-c", script, &path.display().to_string(), &ROWS.to_string(), &COLS.to_string()])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "numpy failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(stdout.trim(), format!("numpy-ok {}", names.len()));

        // And the other way: an array numpy saved opens as slices (no names).
        let np_path = dir.path().join("np.npy");
        let save = "import sys, numpy as np; np.save(sys.argv[1], np.arange(12, dtype='<f8').reshape(4, 3) / 4)";
        let out = Command::new(&py).args(["-c", save, &np_path.display().to_string()]).output().unwrap();
        assert!(out.status.success(), "np.save failed: {}", String::from_utf8_lossy(&out.stderr));
        let y = Slices::<f64>::open(&np_path).unwrap();
        assert_eq!((y.rows(), y.row_shape(), y.len()), (4, &[3][..], 0));
        assert_eq!(y.as_slice(), &(0..12).map(|k| k as f64 / 4.0).collect::<Vec<_>>()[..]);
    }

    /// Child half of the test above: process k opens the file and writes its names.
    #[test]
    fn child_writes_rows() {
        let Ok(spec) = std::env::var("SMDFS_SLICES_CHILD") else { return };
        let (path, k) = spec.rsplit_once('\n').unwrap();
        let w = SlicesWriter::open(Path::new(path)).unwrap();
        for (name, r) in name_ranges().into_iter().filter(|(n, _)| n.starts_with(&format!("p{k}-"))) {
            w.write(&name, r.start, &rows(r.clone())).unwrap();
        }
    }

    #[test]
    fn bad_writes_are_refused_and_a_torn_name_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("y.npy");
        let w = SlicesWriter::create::<i64>(&path, &[2, 2], 10).unwrap();
        assert!(w.write("a", 9, &[1i64; 8]).is_err(), "past the end");
        assert!(w.write("a", 0, &[1i64; 3]).is_err(), "not whole rows");
        assert!(w.write_rows(0, &[1.0f32; 4]).is_err(), "wrong dtype");
        assert!(w.write("", 0, &[1i64; 4]).is_err(), "empty name");
        w.write("a", 2, &[7i64; 8]).unwrap();
        w.write("a", 5, &[8i64; 4]).unwrap(); // a later entry replaces the range
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("y.npy.names"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"name\":\"torn\",\"st"))
            .unwrap();
        let x = Slices::<i64>::open(&path).unwrap();
        assert_eq!(x.names().collect::<Vec<_>>(), ["a"]);
        assert_eq!(&x["a"], &[8i64; 4]);
        assert!(x.get("torn").is_none());
        assert!(x.slice("torn").is_err());
        assert!(Slices::<f64>::open(&path).is_err(), "wrong dtype");
        assert_eq!(x.rows_slice(2..4).unwrap(), &[7i64; 8]);
    }
}
