//! Integration tests for `smdfs export` (one standalone HDF5 file with the view's layout) and
//! `smdfs::tools::h5stream` (parallel streaming and async reads of any HDF5 file). Exported files are
//! read through h5py (the project's `.venv`) and h5dump and checked value for value against
//! what the runs were written from — the demo formula (docs/ARCHITECTURE.md "The demo run") or the test's own
//! generator — never against the layout code the exporter itself uses; h5stream is checked on
//! files that h5py writes. Without h5dump or the `.venv` Python these tests skip with a
//! message, or fail under `SMDFS_REQUIRE_TOOLS=1`.

use std::path::Path;

use smdfs::h5::export::{export, Compression, ExportOptions};
use smdfs::{demo, fields, Run, SmallData, Value};
use smdfs_tests::{hdf5_reader, machine_has, Need};

/// What these tests need: h5py in the `.venv` and h5dump.
fn tools() -> bool {
    machine_has(&[Need::Python, Need::Tool("h5dump")])
}

fn python(script: &str, args: &[&str]) -> String {
    let out = hdf5_reader(smdfs_tests::python()).arg("-c").arg(script).args(args).output().expect("run python");
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
    use serde_json::{json, Value as Json};

    /// Dumps every dataset of an HDF5 file through h5py: raw C-order bytes to `OUT/<n>.bin`,
    /// and a JSON description (shape, numpy dtype, fill bytes, attrs, chunks, compression).
    const DUMP: &str = r#"
import h5py, json, sys, numpy as np
f = h5py.File(sys.argv[1], 'r')
out = sys.argv[2]
# Dimension-scale bookkeeping (checked by tests/integration/ecosystem.rs), not the layout's.
SCALES = {'CLASS', 'NAME', 'REFERENCE_LIST', 'DIMENSION_LIST', '_Netcdf4Coordinates', '_Netcdf4Dimid'}
DIM_ONLY = b'This is a netCDF dimension but not a netCDF variable.'
def attrs(o):
    r = {}
    for k, v in o.attrs.items():
        if k in SCALES:
            continue
        if isinstance(v, (bytes, str)):
            r[k] = v.decode() if isinstance(v, bytes) else v
        elif isinstance(v, np.ndarray):
            r[k] = v.tolist()
        elif isinstance(v, (np.bool_, bool)):
            r[k] = bool(v)
        elif isinstance(v, (np.floating, float)):
            r[k] = float(v) if np.isfinite(v) else str(float(v))
        else:
            r[k] = int(v)
    return r
desc = {'/': attrs(f)}
names = []
f.visititems(lambda n, o: names.append(n)
             if isinstance(o, h5py.Dataset) and not o.attrs.get('NAME', b'').startswith(DIM_ONLY) else None)
for i, n in enumerate(sorted(names)):
    d = f[n]
    a = np.ascontiguousarray(d[()])
    open(f'{out}/{i}.bin', 'wb').write(a.tobytes())
    fill = np.array(d.fillvalue, dtype=d.dtype).tobytes().hex()
    desc[n] = dict(i=i, shape=list(d.shape), dtype=d.dtype.str, fill=fill, attrs=attrs(d),
                   chunks=list(d.chunks) if d.chunks else None, compression=d.compression)
print(json.dumps(desc))
"#;

    /// One dataset an exported file must hold, derived from what the run was written from.
    struct Want {
        path: String,
        /// numpy's dtype string (`<f8`, `|b1`, …).
        dtype: &'static str,
        shape: Vec<u64>,
        /// C-order little-endian bytes.
        bytes: Vec<u8>,
        /// The HDF5 fill value's bytes, where the data model defines one (docs/FORMAT.md "Fill values and presence").
        fill: Option<Vec<u8>>,
        attrs: Json,
    }

    fn want(path: &str, dtype: &'static str, shape: &[u64], bytes: Vec<u8>, attrs: Json) -> Want {
        Want { path: path.into(), dtype, shape: shape.to_vec(), bytes, fill: None, attrs }
    }

    /// `w` with the HDF5 fill value `fill`.
    fn filled(mut w: Want, fill: Vec<u8>) -> Want {
        w.fill = Some(fill);
        w
    }

    fn le<T, const N: usize>(v: impl IntoIterator<Item = T>, f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        v.into_iter().flat_map(f).collect()
    }

    /// Attributes of a field: what it is, and for a numeric scalar its statistics (count, min,
    /// max, mean of the present values).
    fn field_attrs(dtype: &str, kind: &str, aligned: bool, missing: u64, scalars: Option<&[f64]>) -> Json {
        let mut a = json!({"dtype": dtype, "kind": kind, "aligned": i64::from(aligned), "missing": missing});
        if let Some(v) = scalars {
            let o = a.as_object_mut().unwrap();
            o.insert("count".into(), json!(v.len()));
            o.insert("min".into(), json!(v.iter().copied().fold(f64::INFINITY, f64::min)));
            o.insert("max".into(), json!(v.iter().copied().fold(f64::NEG_INFINITY, f64::max)));
            o.insert("mean".into(), json!(v.iter().sum::<f64>() / v.len() as f64));
        }
        a
    }

    fn ids_attrs() -> Json {
        json!({"long_name": "event id", "description": "event ids, ascending"})
    }

    /// Attributes of a ragged field's lengths and offsets.
    fn len_attrs(base: &str) -> Json {
        json!({"long_name": format!("elements of {base} in each row"), "sample_dimension": format!("{base}_dim0")})
    }

    fn offsets_attrs(base: &str) -> Json {
        json!({"long_name": format!("row i of {base} is {base}[{base}_offsets[i]:{base}_offsets[i+1]] (rows + 1 entries)")})
    }

    fn summary_attrs(name: &str) -> Json {
        json!({"long_name": format!("summary value {name}")})
    }

    fn ragged_attrs(base: &str, dtype: &str, kind: &str) -> Json {
        let mut a = field_attrs(dtype, kind, true, 0, None);
        a["ragged"] = json!(format!("row i is {base}[{base}_offsets[i]:{base}_offsets[i+1]]"));
        a
    }

    /// The root attributes of a complete run of `events` events (format version 1, FORMAT.md).
    fn root_attrs(events: u64) -> Json {
        json!({"smdfs_format_version": 1, "events": events, "state": "complete"})
    }

    /// Every dataset of the demo run of `n` events, from the formula alone.
    fn demo_datasets(n: u64) -> Vec<Want> {
        let all = 0..n;
        let ids = all.clone().map(demo::id);
        let mut v = vec![
            want("timestamp", "<u8", &[n], le(ids, u64::to_le_bytes), ids_attrs()),
            want("summary/n_events", "<u8", &[], n.to_le_bytes().to_vec(), summary_attrs("n_events")),
        ];
        if n == 0 {
            // Nothing was written: no fields, no reductions of energy.
            return v;
        }
        let energy: Vec<f64> = all.clone().map(demo::energy).collect();
        let count: Vec<i64> = all.clone().map(demo::count).collect();
        let maybe: Vec<Option<f32>> = all.clone().map(demo::maybe).collect();
        let hits: Vec<u64> = all.clone().filter(|&i| demo::hits(i).is_some()).collect();
        let tags: Vec<String> = all.clone().map(demo::tag).collect();
        let lens: Vec<u64> = tags.iter().map(|t| t.len() as u64).collect();
        let offsets: Vec<u64> = std::iter::once(0)
            .chain(lens.iter().scan(0, |s, l| {
                *s += l;
                Some(*s)
            }))
            .collect();
        let present: Vec<f64> = maybe.iter().flatten().map(|&m| f64::from(m)).collect();
        let hit_values: Vec<f64> = hits.iter().map(|&i| i as f64).collect();
        let mut e = want(
            "energy",
            "<f8",
            &[n],
            le(energy.clone(), f64::to_le_bytes),
            field_attrs("f64", "fixed", true, 0, Some(&energy)),
        );
        e.fill = Some(f64::NAN.to_le_bytes().to_vec());
        let counts: Vec<f64> = count.iter().map(|&c| c as f64).collect();
        let mut c = want(
            "count",
            "<i8",
            &[n],
            le(count, i64::to_le_bytes),
            field_attrs("i64", "fixed", true, 0, Some(&counts)),
        );
        c.fill = Some((-99_999i64).to_le_bytes().to_vec());
        let mut img = want(
            "det/image",
            "<u2",
            &[n, 4, 8],
            le(all.clone().flat_map(demo::image), u16::to_le_bytes),
            // Stats of an n-d field cover every element of every row.
            field_attrs(
                "u16",
                "fixed",
                true,
                0,
                Some(&all.clone().flat_map(demo::image).map(f64::from).collect::<Vec<_>>()),
            ),
        );
        img.fill = Some(u16::MAX.to_le_bytes().to_vec());
        let mut m = want(
            "maybe",
            "<f4",
            &[n],
            le(maybe.iter().map(|m| m.unwrap_or(f32::NAN)), f32::to_le_bytes),
            field_attrs("f32", "fixed", true, n / 2, Some(&present)),
        );
        m.fill = Some(f32::NAN.to_le_bytes().to_vec());
        // Only a field with missing rows declares `_FillValue`, and names its mask.
        m.attrs["_FillValue"] = json!("nan");
        m.attrs["ancillary_variables"] = json!("/_present/maybe");
        let mask_attrs = json!({
            "long_name": "whether maybe is present in the event",
            "flag_values": [false, true],
            "flag_meanings": "missing present",
            "missing": n / 2,
        });
        let mut hits_ds = want(
            "unaligned_hits",
            "<u4",
            &[hits.len() as u64],
            le(hits.iter().map(|&i| demo::hits(i).unwrap()), u32::to_le_bytes),
            field_attrs("u32", "fixed", false, 0, Some(&hit_values)),
        );
        hits_ds.fill = Some(u32::MAX.to_le_bytes().to_vec());
        let mut tag =
            want("tag", "|u1", &[offsets[n as usize]], tags.concat().into_bytes(), ragged_attrs("tag", "u8", "bytes"));
        tag.fill = Some(vec![0xFF]);
        v.extend([
            e,
            c,
            img,
            m,
            want("_present/maybe", "|b1", &[n], maybe.iter().map(|m| u8::from(m.is_some())).collect(), mask_attrs),
            hits_ds,
            want(
                "unaligned_hits_timestamp",
                "<u8",
                &[hits.len() as u64],
                le(hits.iter().map(|&i| demo::id(i)), u64::to_le_bytes),
                ids_attrs(),
            ),
            tag,
            want("tag_len", "<u8", &[n], le(lens, u64::to_le_bytes), len_attrs("tag")),
            want("tag_offsets", "<u8", &[n + 1], le(offsets, u64::to_le_bytes), offsets_attrs("tag")),
            want(
                "summary/max_energy",
                "<f8",
                &[],
                demo::energy(n - 1).to_le_bytes().to_vec(),
                summary_attrs("max_energy"),
            ),
        ]);
        v
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Attributes equal, key for key; a mean may differ in its last bits (summation order).
    fn check_attrs(what: &str, want: &Json, got: &Json) {
        let (want, got) = (want.as_object().unwrap(), got.as_object().unwrap_or_else(|| panic!("{what}: no attrs")));
        let keys = |m: &serde_json::Map<String, Json>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(got), keys(want), "{what}: attribute names");
        for (k, w) in want {
            let g = &got[k];
            let ok = match (w.as_f64(), g.as_f64()) {
                (Some(a), Some(b)) if k == "mean" => (a - b).abs() <= 1e-12 * a.abs().max(1.0),
                // Numbers: equal, and a float attribute stays a float (an integer one an integer).
                (Some(a), Some(b)) => a == b && w.is_f64() == g.is_f64(),
                _ => w == g,
            };
            assert!(ok, "{what}: attribute {k}: file has {g}, expected {w}");
        }
    }

    /// Exports `run` and checks the file through h5py, value for value against `want` and
    /// `root` (the run's root attributes), and with h5dump.
    fn export_and_check(run: &Run, opts: &ExportOptions, dir: &Path, name: &str, root: &Json, want: &[Want]) -> u64 {
        let file = dir.join(name);
        let mut calls = Vec::new();
        let report = export(run, &file, opts, &mut |d, t| calls.push((d, t))).unwrap();
        assert_eq!(report.datasets, want.len());
        assert_eq!(report.data_bytes, want.iter().map(|d| d.bytes.len() as u64).sum::<u64>());
        let last = *calls.last().unwrap();
        assert_eq!(last, (report.data_bytes, report.data_bytes));
        assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0), "progress goes forward");
        assert!(!dir.join(format!("{name}.partial")).exists());

        let bins = dir.join(format!("{name}.bins"));
        std::fs::create_dir_all(&bins).unwrap();
        let json = python(DUMP, &[file.to_str().unwrap(), bins.to_str().unwrap()]);
        let desc: Json = serde_json::from_str(&json).unwrap();
        check_attrs("root", root, &desc["/"]);
        assert_eq!(
            desc.as_object().unwrap().len(),
            want.len() + 1,
            "no other datasets: {:?}",
            desc.as_object().unwrap().keys()
        );
        for d in want {
            let g = &desc[d.path.as_str()];
            assert!(g.is_object(), "{} missing from the export", d.path);
            let shape: Vec<u64> = g["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
            assert_eq!(shape, d.shape, "{}", d.path);
            assert_eq!(g["dtype"].as_str().unwrap(), d.dtype, "{}", d.path);
            if let Some(fill) = &d.fill {
                assert_eq!(g["fill"].as_str().unwrap(), hex(fill), "{} fill", d.path);
            }
            check_attrs(&d.path, &d.attrs, &g["attrs"]);
            let chunked = !d.shape.is_empty() && !d.bytes.is_empty();
            assert_eq!(g["chunks"].is_array(), chunked, "{} chunks {}", d.path, g["chunks"]);
            if chunked {
                let want = match opts.compression {
                    Compression::Gzip(_) => json!("gzip"),
                    _ => Json::Null,
                };
                assert_eq!(g["compression"], want, "{}", d.path);
            }
            let got = std::fs::read(bins.join(format!("{}.bin", g["i"]))).unwrap();
            assert!(got == d.bytes, "{}: h5py reads other bytes than the run was written with", d.path);
        }
        let out = hdf5_reader("h5dump").arg(&file).output().expect("run h5dump");
        assert!(out.status.success(), "h5dump failed: {}", String::from_utf8_lossy(&out.stderr));
        report.file_size
    }

    #[test]
    fn demo_runs_export_value_for_value_plain_and_gzip() {
        if !tools() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        smdfs::demo::write_demo(&run_dir, 3001, 2, 3, false).unwrap();
        let run = Run::open(&run_dir).unwrap();
        let (root, want) = (root_attrs(3001), demo_datasets(3001));
        let plain = export_and_check(&run, &ExportOptions::default(), dir.path(), "plain.h5", &root, &want);
        let opts = ExportOptions { compression: Compression::Gzip(6), chunk_rows: Some(100) };
        let gz = export_and_check(&run, &opts, dir.path(), "gz.h5", &root, &want);
        assert!(gz < plain, "gzip {gz} bytes, plain {plain}");
        // A run with the fixed field's blocks spanning several 8 MiB blocks, odd chunk rows.
        let big = dir.path().join("big");
        smdfs::demo::write_demo(&big, 150_001, 3, 2, false).unwrap();
        let run = Run::open(&big).unwrap();
        let opts = ExportOptions { compression: Compression::Gzip(1), chunk_rows: Some(9999) };
        export_and_check(&run, &opts, dir.path(), "big.h5", &root_attrs(150_001), &demo_datasets(150_001));
    }

    #[test]
    fn an_empty_run_exports_empty_datasets() {
        if !tools() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        smdfs::demo::write_demo(&run_dir, 0, 2, 2, false).unwrap();
        let run = Run::open(&run_dir).unwrap();
        let (root, want) = (root_attrs(0), demo_datasets(0));
        assert!(want.iter().any(|d| d.bytes.is_empty() && !d.shape.is_empty()));
        export_and_check(&run, &ExportOptions::default(), dir.path(), "empty.h5", &root, &want);
        let gz = ExportOptions { compression: Compression::Gzip(4), ..Default::default() };
        export_and_check(&run, &gz, dir.path(), "empty_gz.h5", &root, &want);
    }

    /// The ragged test's generator: event `i` (id `10 i`) has `wave` = `i + 0.25 j` for
    /// `j < i % 7` and `x` = `i`; events with `i % 4 == 1` also have `peaks` = `[i, 2, 3]`.
    fn wave(i: u64) -> Vec<f32> {
        (0..i % 7).map(|j| i as f32 + j as f32 * 0.25).collect()
    }

    #[test]
    fn ragged_f32_and_unaligned_fields_export() {
        if !tools() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        let smd = SmallData::builder(&run_dir).servers(2).unaligned("peaks").build().unwrap();
        std::thread::scope(|s| {
            for k in 0..3u64 {
                let mut c = smd.client();
                s.spawn(move || {
                    for i in (k..500).step_by(3) {
                        c.event(10 * i, fields! { "wave" => Value::ragged(&wave(i)), "x" => i as i32 }).unwrap();
                        if i % 4 == 1 {
                            c.event(10 * i, fields! { "peaks" => Value::array(&[i as u8, 2, 3], &[3]) }).unwrap();
                        }
                    }
                });
            }
        });
        smd.done().unwrap();
        let run = Run::open(&run_dir).unwrap();
        let n = 500u64;
        let lens: Vec<u64> = (0..n).map(|i| wave(i).len() as u64).collect();
        let offsets: Vec<u64> = std::iter::once(0)
            .chain(lens.iter().scan(0, |s, l| {
                *s += l;
                Some(*s)
            }))
            .collect();
        let peaks: Vec<u64> = (0..n).filter(|i| i % 4 == 1).collect();
        let xs: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let mut x = want(
            "x",
            "<i4",
            &[n],
            le((0..n).map(|i| i as i32), i32::to_le_bytes),
            field_attrs("i32", "fixed", true, 0, Some(&xs)),
        );
        x.fill = Some((-99_999i32).to_le_bytes().to_vec());
        let want = [
            want("timestamp", "<u8", &[n], le((0..n).map(|i| 10 * i), u64::to_le_bytes), ids_attrs()),
            want(
                "wave",
                "<f4",
                &[offsets[n as usize]],
                le((0..n).flat_map(wave), f32::to_le_bytes),
                ragged_attrs("wave", "f32", "ragged"),
            ),
            want("wave_len", "<u8", &[n], le(lens, u64::to_le_bytes), len_attrs("wave")),
            want("wave_offsets", "<u8", &[n + 1], le(offsets, u64::to_le_bytes), offsets_attrs("wave")),
            x,
            filled(
                want(
                    "peaks",
                    "|u1",
                    &[peaks.len() as u64, 3],
                    peaks.iter().flat_map(|&i| [i as u8, 2, 3]).collect(),
                    field_attrs(
                        "u8",
                        "fixed",
                        false,
                        0,
                        Some(&peaks.iter().flat_map(|&i| [f64::from(i as u8), 2.0, 3.0]).collect::<Vec<_>>()),
                    ),
                ),
                vec![0xFF], // u8's default fill, the same for an unaligned field
            ),
            want(
                "peaks_timestamp",
                "<u8",
                &[peaks.len() as u64],
                le(peaks.iter().map(|i| 10 * i), u64::to_le_bytes),
                ids_attrs(),
            ),
        ];
        let opts = ExportOptions { compression: Compression::Gzip(4), chunk_rows: Some(33) };
        export_and_check(&run, &opts, dir.path(), "ragged.h5", &root_attrs(n), &want);
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

    /// The h5py-written file, or `None` (after a skip message) without the `.venv` Python.
    fn fixture() -> Option<(tempfile::TempDir, std::sync::Arc<H5File>)> {
        if !machine_has(&[Need::Python]) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        python(WRITE, &[dir.path().to_str().unwrap()]);
        let f = H5File::open(dir.path().join("f.h5")).unwrap();
        Some((dir, f))
    }

    fn expected(dir: &Path, name: &str) -> Vec<u8> {
        std::fs::read(dir.join(format!("{}.bin", name.replace('/', "_")))).unwrap()
    }

    #[test]
    fn streams_of_every_dataset_match_h5py_bytes_unordered_and_ordered() {
        let Some((dir, f)) = fixture() else { return };
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
        let Some((dir, f)) = fixture() else { return };
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
        let Some((dir, f)) = fixture() else { return };
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
        let Some((_dir, f)) = fixture() else { return };
        assert!(matches!(f.dataset("nope"), Err(smdfs::Error::NotFound { .. })));
        assert!(matches!(f.dataset("text"), Err(smdfs::Error::Usage(_))));
        let req = f.requests(1).unwrap();
        assert!(matches!(req.request("c_f64", 10000..10008), Err(smdfs::Error::OutOfRange { .. })));
        assert!(matches!(req.request("nope", 0..1), Err(smdfs::Error::NotFound { .. })));
        assert!(matches!(f.stream("text", &StreamOptions::default()), Err(smdfs::Error::Usage(_))));
        assert!(H5File::open("/nonexistent/x.h5").is_err());
    }
}
