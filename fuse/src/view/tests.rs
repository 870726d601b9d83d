//! Unit tests of the view without a mount: demo runs read through `View::read_into` and
//! checked against the demo formula, libhdf5 and the Zarr layout.

use super::*;
use smdfs::demo;

fn whole(v: &View, path: &str) -> Vec<u8> {
    let a = v.resolve(path).unwrap();
    let mut buf = vec![0u8; a.size as usize];
    assert_eq!(v.read_into(a.ino, 0, &mut buf).unwrap(), buf.len());
    buf
}

fn npy_body<'a>(file: &'a [u8], descr: &str, shape: &str) -> &'a [u8] {
    let hl = u16::from_le_bytes([file[8], file[9]]) as usize + 10;
    let h = String::from_utf8_lossy(&file[..hl]);
    assert!(h.contains(descr) && h.contains(shape), "{h}");
    &file[hl..]
}

fn demo_view(n: u64, servers: usize, clients: usize) -> (tempfile::TempDir, View) {
    let dir = tempfile::tempdir().unwrap();
    demo::write_demo(dir.path(), n, servers, clients, false).unwrap();
    let v = View::open(dir.path(), &ViewOptions::default()).unwrap();
    (dir, v)
}

#[test]
fn npy_files_hold_the_demo_in_event_id_order() {
    let (_d, v) = demo_view(1234, 3, 4);
    let n = 1234u64;
    let ts = whole(&v, "arrays/timestamp.npy");
    for (i, c) in npy_body(&ts, "<u8", "(1234,)").chunks_exact(8).enumerate() {
        assert_eq!(u64::from_le_bytes(c.try_into().unwrap()), demo::id(i as u64));
    }
    let img = whole(&v, "arrays/det/image.npy");
    let body = npy_body(&img, "<u2", "(1234, 4, 8)");
    for i in 0..n as usize {
        let row: Vec<u16> =
            body[i * 64..(i + 1) * 64].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        assert_eq!(row, demo::image(i as u64));
    }
    let maybe = whole(&v, "arrays/maybe.npy");
    let pres = whole(&v, "arrays/_present/maybe.npy");
    let (mb, pb) = (npy_body(&maybe, "<f4", "(1234,)"), npy_body(&pres, "|b1", "(1234,)"));
    for i in 0..n {
        let x = f32::from_le_bytes(mb[i as usize * 4..i as usize * 4 + 4].try_into().unwrap());
        match demo::maybe(i) {
            Some(m) => assert_eq!((x, pb[i as usize]), (m, 1)),
            None => assert!(x.is_nan() && pb[i as usize] == 0),
        }
    }
    let tag = whole(&v, "arrays/tag.npy");
    let offs = whole(&v, "arrays/tag_offsets.npy");
    let (tb, ob) = (npy_body(&tag, "|u1", ""), npy_body(&offs, "<u8", "(1235,)"));
    let o: Vec<u64> = ob.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
    for i in 0..n as usize {
        assert_eq!(&tb[o[i] as usize..o[i + 1] as usize], demo::tag(i as u64).as_bytes());
    }
    let hits_ts = whole(&v, "arrays/unaligned_hits_timestamp.npy");
    let hb = npy_body(&hits_ts, "<u8", "(247,)");
    assert_eq!(u64::from_le_bytes(hb[8..16].try_into().unwrap()), demo::id(5));
    assert!(v.resolve("arrays/summary").is_err());
}

#[test]
fn reads_at_any_offset_and_length_equal_the_whole_file() {
    let (_d, v) = demo_view(777, 2, 3);
    let mut rng = smdfs::read::shuffle::SplitMix::new(11);
    for path in ["run.h5", "arrays/det/image.npy", "arrays/tag.npy", "arrays/tag_offsets.npy", "arrays/count.npy"] {
        let full = whole(&v, path);
        let ino = v.resolve(path).unwrap().ino;
        for _ in 0..300 {
            let off = rng.below(full.len() as u64 + 10);
            let len = rng.below(70_000) as usize;
            let mut buf = vec![0xAAu8; len];
            let got = v.read_into(ino, off, &mut buf).unwrap();
            let want = &full[(off as usize).min(full.len())..(off as usize + len).min(full.len())];
            assert_eq!(&buf[..got], want, "{path} at {off}+{len}");
        }
    }
}

#[test]
fn run_h5_read_back_through_libhdf5_holds_the_demo() {
    let (_d, v) = demo_view(500, 3, 2);
    let out = tempfile::tempdir().unwrap();
    let copy = out.path().join("copy.h5");
    std::fs::write(&copy, whole(&v, "run.h5")).unwrap();
    let f = hdf5::File::open(&copy).unwrap();
    let ts: Vec<u64> = f.dataset("timestamp").unwrap().read_raw().unwrap();
    assert_eq!(ts, (0..500).map(demo::id).collect::<Vec<_>>());
    let e: Vec<f64> = f.dataset("energy").unwrap().read_raw().unwrap();
    assert_eq!(e, (0..500).map(demo::energy).collect::<Vec<_>>());
    let img = f.dataset("det/image").unwrap();
    assert_eq!(img.shape(), vec![500, 4, 8]);
    let iv: Vec<u16> = img.read_raw().unwrap();
    assert_eq!(&iv[32 * 499..], &demo::image(499));
    let c: Vec<i64> = f.dataset("count").unwrap().read_raw().unwrap();
    assert_eq!(c[7], -7);
    let pres: Vec<bool> = f.dataset("_present/maybe").unwrap().read_raw().unwrap();
    assert_eq!(pres.iter().filter(|&&p| p).count(), 250);
    let hits: Vec<u32> = f.dataset("unaligned_hits").unwrap().read_raw().unwrap();
    assert_eq!(hits, (0..500).step_by(5).map(|i| i as u32).collect::<Vec<_>>());
    let n: u64 = f.dataset("summary/n_events").unwrap().read_scalar().unwrap();
    assert_eq!(n, 500);
    let len: Vec<u64> = f.dataset("tag_len").unwrap().read_raw().unwrap();
    assert_eq!(len[123], 6);
}

#[test]
fn units_given_to_the_builder_become_an_hdf5_attribute() {
    let dir = tempfile::tempdir().unwrap();
    let smd = smdfs::SmallData::builder(dir.path()).servers(1).units("energy", "eV").build().unwrap();
    let mut c = smd.client();
    c.event(1, smdfs::fields! { "energy" => 1.5, "n" => 2u8 }).unwrap();
    drop(c);
    smd.done().unwrap();
    let v = View::open(dir.path(), &ViewOptions::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let copy = out.path().join("copy.h5");
    std::fs::write(&copy, whole(&v, "run.h5")).unwrap();
    let f = hdf5::File::open(&copy).unwrap();
    let u: hdf5::types::VarLenUnicode = f.dataset("energy").unwrap().attr("units").unwrap().read_scalar().unwrap();
    assert_eq!(u.as_str(), "eV");
    assert!(f.dataset("n").unwrap().attr("units").is_err());
}

fn text(v: &View, path: &str) -> String {
    String::from_utf8(whole(v, path)).unwrap()
}

#[test]
fn zarr_chunk_files_are_the_dataset_bytes_padded_to_whole_chunks() {
    let (_d, v) = demo_view(1234, 3, 4);
    let root = text(&v, "run.zarr/zarr.json");
    assert!(root.contains("\"consolidated_metadata\"") && root.contains("\"det/image\""), "{root}");
    // (path, npy dtype, row bytes, shape after the event axis)
    for (path, descr, rb, rest) in
        [("det/image", "<u2", 64u64, ", 4, 8"), ("energy", "<f8", 8, ""), ("_present/maybe", "|b1", 1, "")]
    {
        let meta = text(&v, &format!("run.zarr/{path}/zarr.json"));
        let rows = smdfs::h5::zarr::chunk_rows(1234, rb);
        let chunk_shape: String = format!("{rows}{rest}").split(", ").collect::<Vec<_>>().join(",\n        ");
        assert!(meta.contains(&chunk_shape), "{path}: {meta}");
        assert!(meta.contains("\"name\": \"bytes\"") && meta.contains("\"endian\": \"little\""), "{meta}");
        assert!(!meta.contains("gzip"), "{meta}");
        let npy = whole(&v, &format!("arrays/{path}.npy"));
        let body = npy_body(&npy, descr, "");
        let mut joined = Vec::new();
        for i in 0..1234u64.div_ceil(rows) {
            let key = if rest.is_empty() { format!("c/{i}") } else { format!("c/{i}/0/0") };
            let file = whole(&v, &format!("run.zarr/{path}/{key}"));
            assert_eq!(file.len() as u64, rows * rb, "{path} chunk {i}");
            joined.extend_from_slice(&file);
        }
        assert_eq!(&joined[..body.len()], body, "{path}");
        assert!(joined[body.len()..].iter().all(|&b| b == 0), "{path}: padding");
    }
    let image = text(&v, "run.zarr/det/image/zarr.json");
    assert!(image.contains("\"fill_value\": 65535") && !image.contains("_FillValue"), "{image}");
    let dims = "\"dimension_names\": [\n    \"timestamp\",\n    \"image_dim1\",\n    \"image_dim2\"\n  ]";
    assert!(image.contains(dims), "{image}");
    let maybe = text(&v, "run.zarr/maybe/zarr.json");
    assert!(maybe.contains("\"fill_value\": \"NaN\"") && maybe.contains("\"_FillValue\": \"AAAAAAAA+H8=\""), "{maybe}");
    assert!(maybe.contains("\"ancillary_variables\": \"/_present/maybe\""), "{maybe}");
    assert!(text(&v, "run.zarr/summary/n_events/zarr.json").contains("\"shape\": []"));
    assert_eq!(whole(&v, "run.zarr/summary/n_events/c"), 1234u64.to_le_bytes());
}

#[test]
fn large_arrays_are_chunked_along_the_event_axis_near_eight_mebibytes() {
    let (_d, v) = demo_view(300_000, 2, 2);
    let names: Vec<String> =
        v.readdir(v.resolve("run.zarr/det/image/c").unwrap().ino).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["0", "1", "2"]); // 131 072 rows of 64 bytes each
    let last = v.resolve("run.zarr/det/image/c/2/0/0").unwrap();
    assert_eq!(last.size, 8 << 20);
    let mut buf = vec![0u8; 64];
    v.read_into(last.ino, (300_000 - 2 * 131_072 - 1) * 64, &mut buf).unwrap();
    let want: Vec<u8> = demo::image(299_999).iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(buf, want);
    assert_eq!(v.resolve("run.zarr/energy/c/0").unwrap().size, 300_000 * 8);
}

#[test]
fn unknown_paths_and_directory_reads_are_errors() {
    let (_d, v) = demo_view(10, 1, 1);
    assert_eq!(v.resolve("nope").unwrap_err().to_errno(), libc::ENOENT);
    assert_eq!(v.read_into(ROOT_INO, 0, &mut [0u8; 4]).unwrap_err().to_errno(), libc::EISDIR);
    assert_eq!(v.readdir(v.resolve("run.h5").unwrap().ino).unwrap_err().to_errno(), libc::ENOTDIR);
    let names: Vec<String> = v.readdir(ROOT_INO).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["arrays", "run.h5", "run.zarr"]);
    let files = v.files();
    assert!(files.iter().any(|(p, s)| p == "arrays/det/image.npy" && *s == 128 + 10 * 64));
    assert!(files.iter().any(|(p, _)| p == "run.h5"));
}
