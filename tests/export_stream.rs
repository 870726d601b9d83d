//! Integration tests for `smdfs export` (one standalone HDF5 file with the view's layout) and
//! `smdfs::tools::h5stream` (parallel streaming and async reads of any HDF5 file). Exported files are
//! checked value for value against [`DatasetLayout::read`] through h5py (the project's `.venv`)
//! and h5dump; h5stream is checked on files that h5py writes.

use std::path::{Path, PathBuf};
use std::process::Command;

use smdfs::h5::export::{export, Compression, ExportOptions};
use smdfs::h5::layout::{plan, root_attrs, DatasetLayout};
use smdfs::h5::skeleton::AttrValue;
use smdfs::{fields, Run, SmallData, Value};

fn venv_python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(p.exists(), "{} is missing: create the venv with h5py (benches/peers/setup.sh)", p.display());
    p
}

/// Readers spawned by these tests take no HDF5 file locks: the tests run in parallel threads,
/// and libhdf5 opens files without `O_CLOEXEC`, so a child spawned by one test can inherit
/// (and hold) the lock of a file another test has open.
fn reader(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env("HDF5_USE_FILE_LOCKING", "FALSE");
    c
}

fn python(script: &str, args: &[&str]) -> String {
    let out = reader(venv_python()).arg("-c").arg(script).args(args).output().expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

mod export_tests {
    use super::*;

    /// Dumps every dataset of an HDF5 file through h5py: raw C-order bytes to `OUT/<n>.bin`,
    /// and a JSON description (shape, numpy dtype, fill bytes, attrs, chunks, compression).
    const DUMP: &str = r#"
import h5py, json, sys, numpy as np
f = h5py.File(sys.argv[1], 'r')
out = sys.argv[2]
def attrs(o):
    r = {}
    for k, v in o.attrs.items():
        if isinstance(v, (bytes, str)):
            r[k] = v.decode() if isinstance(v, bytes) else v
        elif isinstance(v, (np.floating, float)):
            r[k] = float(v)
        else:
            r[k] = int(v)
    return r
desc = {'/': attrs(f)}
names = []
f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
for i, n in enumerate(sorted(names)):
    d = f[n]
    a = np.ascontiguousarray(d[()])
    open(f'{out}/{i}.bin', 'wb').write(a.tobytes())
    fill = np.array(d.fillvalue, dtype=d.dtype).tobytes().hex()
    desc[n] = dict(i=i, shape=list(d.shape), dtype=d.dtype.str, fill=fill, attrs=attrs(d),
                   chunks=list(d.chunks) if d.chunks else None, compression=d.compression)
print(json.dumps(desc))
"#;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn check_attrs(what: &str, want: &[(String, AttrValue)], got: &serde_json::Value) {
        let got = got.as_object().unwrap_or_else(|| panic!("{what}: no attrs"));
        assert_eq!(got.len(), want.len(), "{what}: attrs {got:?} vs {want:?}");
        for (k, v) in want {
            let g = &got[k];
            let ok = match v {
                AttrValue::I64(x) => g.as_i64() == Some(*x),
                AttrValue::U64(x) => g.as_u64() == Some(*x),
                AttrValue::F64(x) => g.as_f64() == Some(*x),
                AttrValue::Str(s) => g.as_str() == Some(s.as_str()),
            };
            assert!(ok, "{what}: attribute {k}: file has {g}, layout says {v:?}");
        }
    }

    /// Exports `run` and checks the file through h5py, value for value, and with h5dump.
    fn export_and_check(run: &Run, opts: &ExportOptions, dir: &Path, name: &str) -> u64 {
        let file = dir.join(name);
        let mut calls = Vec::new();
        let report = export(run, &file, opts, &mut |d, t| calls.push((d, t))).unwrap();
        let layout = plan(run);
        assert_eq!(report.datasets, layout.len());
        assert_eq!(report.data_bytes, layout.iter().map(DatasetLayout::byte_size).sum::<u64>());
        let last = *calls.last().unwrap();
        assert_eq!(last, (report.data_bytes, report.data_bytes));
        assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0), "progress goes forward");
        assert!(!dir.join(format!("{name}.partial")).exists());

        let bins = dir.join(format!("{name}.bins"));
        std::fs::create_dir_all(&bins).unwrap();
        let json = python(DUMP, &[file.to_str().unwrap(), bins.to_str().unwrap()]);
        let desc: serde_json::Value = serde_json::from_str(&json).unwrap();
        check_attrs("root", &root_attrs(run), &desc["/"]);
        assert_eq!(desc.as_object().unwrap().len(), layout.len() + 1, "no other datasets");
        for d in &layout {
            let g = &desc[d.path.as_str()];
            assert!(g.is_object(), "{} missing from the export", d.path);
            let shape: Vec<u64> = g["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
            assert_eq!(shape, d.shape, "{}", d.path);
            assert_eq!(g["dtype"].as_str().unwrap(), d.dtype.numpy_descr(), "{}", d.path);
            if let Some(fill) = &d.fill {
                assert_eq!(g["fill"].as_str().unwrap(), hex(fill), "{} fill", d.path);
            }
            check_attrs(&d.path, &d.attrs, &g["attrs"]);
            let chunked = !d.shape.is_empty() && d.byte_size() > 0;
            assert_eq!(g["chunks"].is_array(), chunked, "{} chunks {}", d.path, g["chunks"]);
            if chunked {
                let want = match opts.compression {
                    Compression::Gzip(_) => serde_json::json!("gzip"),
                    _ => serde_json::Value::Null,
                };
                assert_eq!(g["compression"], want, "{}", d.path);
            }
            let got = std::fs::read(bins.join(format!("{}.bin", g["i"]))).unwrap();
            let mut want = vec![0u8; d.byte_size() as usize];
            d.read(&run, 0, &mut want).unwrap();
            assert!(got == want, "{}: h5py reads other bytes than read_dataset", d.path);
        }
        let out = reader("h5dump").arg(&file).output().expect("run h5dump");
        assert!(out.status.success(), "h5dump failed: {}", String::from_utf8_lossy(&out.stderr));
        report.file_size
    }

    #[test]
    fn demo_runs_export_value_for_value_plain_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        smdfs::demo::write_demo(&run_dir, 3001, 2, 3, false).unwrap();
        let run = Run::open(&run_dir).unwrap();
        let plain = export_and_check(&run, &ExportOptions::default(), dir.path(), "plain.h5");
        let opts = ExportOptions { compression: Compression::Gzip(6), chunk_rows: Some(100) };
        let gz = export_and_check(&run, &opts, dir.path(), "gz.h5");
        assert!(gz < plain, "gzip {gz} bytes, plain {plain}");
        // A run with the fixed field's blocks spanning several 8 MiB blocks, odd chunk rows.
        let big = dir.path().join("big");
        smdfs::demo::write_demo(&big, 150_001, 3, 2, false).unwrap();
        let run = Run::open(&big).unwrap();
        let opts = ExportOptions { compression: Compression::Gzip(1), chunk_rows: Some(9999) };
        export_and_check(&run, &opts, dir.path(), "big.h5");
    }

    #[test]
    fn an_empty_run_exports_empty_datasets() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        smdfs::demo::write_demo(&run_dir, 0, 2, 2, false).unwrap();
        let run = Run::open(&run_dir).unwrap();
        assert!(plan(&run).iter().any(|d| d.byte_size() == 0 && !d.shape.is_empty()));
        export_and_check(&run, &ExportOptions::default(), dir.path(), "empty.h5");
        let gz = ExportOptions { compression: Compression::Gzip(4), ..Default::default() };
        export_and_check(&run, &gz, dir.path(), "empty_gz.h5");
    }

    #[test]
    fn ragged_f32_and_unaligned_fields_export() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        let smd = SmallData::builder(&run_dir).servers(2).unaligned("peaks").build().unwrap();
        std::thread::scope(|s| {
            for k in 0..3u64 {
                let mut c = smd.client();
                s.spawn(move || {
                    for i in (k..500).step_by(3) {
                        let wave: Vec<f32> = (0..i % 7).map(|j| i as f32 + j as f32 * 0.25).collect();
                        c.event(10 * i, fields! { "wave" => Value::ragged(&wave), "x" => i as i32 }).unwrap();
                        if i % 4 == 1 {
                            c.event(10 * i, fields! { "peaks" => Value::array(&[i as u8, 2, 3], &[3]) }).unwrap();
                        }
                    }
                });
            }
        });
        smd.done().unwrap();
        let run = Run::open(&run_dir).unwrap();
        let paths: Vec<String> = plan(&run).into_iter().map(|d| d.path).collect();
        for p in ["wave", "wave_len", "wave_offsets", "peaks", "peaks_timestamp", "x"] {
            assert!(paths.iter().any(|x| x == p), "{p} not in {paths:?}");
        }
        let opts = ExportOptions { compression: Compression::Gzip(4), chunk_rows: Some(33) };
        export_and_check(&run, &opts, dir.path(), "ragged.h5");
    }

    #[test]
    fn lzf_without_the_filter_and_zero_chunk_rows_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        smdfs::demo::write_demo(&run_dir, 10, 1, 1, false).unwrap();
        let run = Run::open(&run_dir).unwrap();
        let file = dir.path().join("x.h5");
        // Debian's libhdf5 does not register h5py's LZF filter (id 32000).
        let lzf = ExportOptions { compression: Compression::Lzf, ..Default::default() };
        let e = export(&run, &file, &lzf, &mut |_, _| {}).unwrap_err();
        assert!(matches!(e, smdfs::Error::Usage(_)) && e.to_string().contains("lzf"), "{e}");
        let zero = ExportOptions { chunk_rows: Some(0), ..Default::default() };
        assert!(matches!(export(&run, &file, &zero, &mut |_, _| {}), Err(smdfs::Error::Usage(_))));
        assert!(!file.exists());
    }
}

mod h5stream_tests {
    use super::*;
    use smdfs::tools::h5stream::{Access, H5File, StreamOptions};

    /// Writes `f.h5` with h5py (contiguous, chunked + gzip, 2-D rows, several dtypes, a scalar,
    /// an unwritten contiguous dataset, a string dataset) and each dataset's raw bytes as
    /// `<name>.bin`.
    const WRITE: &str = r#"
import h5py, sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(7)
data = {
    'c_f64': (np.arange(10007) * 0.5, {}),
    'c_u16_2d': ((np.arange(5003 * 12) % 65536).astype('<u2').reshape(5003, 12), {}),
    'g/c_i8_3d': (rng.integers(-128, 127, size=(777, 3, 5), dtype='i1'), {}),
    'k_f32_2d': (rng.standard_normal((9001, 7)).astype('<f4'), dict(chunks=(100, 7), compression='gzip')),
    'k_i64': (np.arange(-5000, 12000, dtype='<i8'), dict(chunks=(333,))),
    'k_bool': (np.arange(3001) % 3 == 0, dict(chunks=(64,), compression='gzip')),
    'scalar': (np.float64(2.5), {}),
    'empty': (np.zeros((0, 4), dtype='<u4'), {}),
}
with h5py.File(f'{d}/f.h5', 'w') as f:
    for name, (a, kw) in data.items():
        f.create_dataset(name, data=a, **kw)
        open(f'{d}/{name.replace("/", "_")}.bin', 'wb').write(np.ascontiguousarray(a).tobytes())
    f.create_dataset('unwritten', shape=(50, 2), dtype='<i4', fillvalue=-7)
    open(f'{d}/unwritten.bin', 'wb').write(np.full((50, 2), -7, dtype='<i4').tobytes())
    f.create_dataset('text', data=['a', 'bc'], dtype=h5py.string_dtype())
"#;

    const NAMES: [&str; 9] =
        ["c_f64", "c_u16_2d", "g/c_i8_3d", "k_f32_2d", "k_i64", "k_bool", "scalar", "empty", "unwritten"];

    fn fixture() -> (tempfile::TempDir, std::sync::Arc<H5File>) {
        let dir = tempfile::tempdir().unwrap();
        python(WRITE, &[dir.path().to_str().unwrap()]);
        let f = H5File::open(dir.path().join("f.h5")).unwrap();
        (dir, f)
    }

    fn expected(dir: &Path, name: &str) -> Vec<u8> {
        std::fs::read(dir.join(format!("{}.bin", name.replace('/', "_")))).unwrap()
    }

    #[test]
    fn streams_of_every_dataset_match_h5py_bytes_unordered_and_ordered() {
        let (dir, f) = fixture();
        for name in NAMES {
            let d = f.dataset(name).unwrap();
            // h5py allocates contiguous storage only when data is written.
            let chunked = name.starts_with("k_") || name == "unwritten" || name == "empty";
            let want_access = if chunked { Access::Library } else { Access::Pread { offset: 0 } };
            assert_eq!(
                std::mem::discriminant(&d.access),
                std::mem::discriminant(&want_access),
                "{name}: {:?}",
                d.access
            );
            let want = expected(dir.path(), name);
            for (threads, block_rows, ordered) in [(1, 1000, false), (3, 97, false), (4, 33, true), (2, 1, true)] {
                let opts = StreamOptions { block_rows, threads, ordered, depth: 5 };
                let mut got = vec![0u8; want.len()];
                let mut next = 0u64;
                let rb = d.row_bytes();
                let mut blocks = Vec::new();
                for b in f.stream(name, &opts).unwrap() {
                    let b = b.unwrap();
                    if ordered {
                        assert_eq!(b.start, next, "{name}: ordered stream out of order");
                    }
                    next = b.start + b.rows;
                    let at = b.start as usize * rb;
                    got[at..at + b.data.len()].copy_from_slice(&b.data);
                    blocks.push(b.index);
                }
                blocks.sort_unstable();
                let n = d.rows().div_ceil(block_rows);
                assert_eq!(blocks, (0..n).collect::<Vec<_>>(), "{name}: every block once");
                assert!(got == want, "{name}: streamed bytes differ (threads {threads}, rows {block_rows})");
            }
        }
    }

    #[test]
    fn recycled_buffers_are_reused_and_dropping_a_stream_early_stops_it() {
        let (dir, f) = fixture();
        let want = expected(dir.path(), "c_f64");
        let mut s = f.stream("c_f64", &StreamOptions { block_rows: 100, threads: 2, ordered: true, depth: 2 }).unwrap();
        for k in 0..5u64 {
            let b = s.next().unwrap().unwrap();
            assert_eq!(b.start, k * 100);
            assert!(b.data[..] == want[k as usize * 800..(k as usize + 1) * 800]);
            s.recycle(b);
        }
        drop(s); // joins its threads though most blocks were never taken
    }

    #[test]
    fn async_requests_out_of_order_match_h5py_bytes() {
        let (dir, f) = fixture();
        let req = f.requests(3).unwrap();
        let mut rng = smdfs::read::shuffle::SplitMix::new(11);
        let mut pending = Vec::new();
        for k in 0..200 {
            let name = NAMES[rng.below(NAMES.len() as u64) as usize];
            let d = f.dataset(name).unwrap();
            let a = rng.below(d.rows() + 1);
            let b = a + rng.below(d.rows() - a + 1).min(700);
            let r = if k % 2 == 0 {
                req.request(name, a..b).unwrap()
            } else {
                req.request_into(name, a..b, vec![0xAB; 3]).unwrap()
            };
            pending.push((name, a, b, d.row_bytes(), r));
        }
        // Complete them in reverse order, half by polling.
        let mut polled = 0;
        while let Some((name, a, b, rb, mut r)) = pending.pop() {
            let bytes = if pending.len() % 2 == 0 {
                loop {
                    if let Some(x) = r.poll() {
                        polled += 1;
                        break x.unwrap();
                    }
                    std::thread::yield_now();
                }
            } else {
                r.wait().unwrap()
            };
            let want = expected(dir.path(), name);
            assert!(bytes[..] == want[a as usize * rb..b as usize * rb], "{name} rows {a}..{b}");
            req.recycle(bytes);
        }
        assert_eq!(polled, 100);
    }

    #[test]
    fn bad_requests_are_errors_not_panics() {
        let (_dir, f) = fixture();
        assert!(matches!(f.dataset("nope"), Err(smdfs::Error::NotFound { .. })));
        assert!(matches!(f.dataset("text"), Err(smdfs::Error::Usage(_))));
        let req = f.requests(1).unwrap();
        assert!(matches!(req.request("c_f64", 10000..10008), Err(smdfs::Error::OutOfRange { .. })));
        assert!(matches!(req.request("nope", 0..1), Err(smdfs::Error::NotFound { .. })));
        assert!(matches!(f.stream("text", &StreamOptions::default()), Err(smdfs::Error::Usage(_))));
        assert!(H5File::open("/nonexistent/x.h5").is_err());
    }
}
