//! Unit tests of `skeleton`: real libhdf5 files read back by libhdf5 and h5dump.

use super::*;
use hdf5::types::VarLenUnicode;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Mutex;

/// Serializes the tests (libhdf5 is built without thread safety; the crate's lock covers
/// single calls, this covers whole build-and-check sequences).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn plan(path: &str, dtype: Dtype, shape: &[u64]) -> DatasetPlan {
    DatasetPlan::new(path, dtype, shape.to_vec())
}

fn extent<'a>(layout: &'a SkeletonLayout, path: &str) -> &'a DatasetExtent {
    layout.datasets.iter().find(|d| d.path == path).unwrap()
}

fn h5dump(args: &[&str]) -> String {
    let out = std::process::Command::new("h5dump").args(args).output().expect("run h5dump");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "h5dump {args:?} failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

#[test]
fn bytes_written_at_the_offsets_read_back_through_libhdf5_and_h5dump() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.h5");
    let energy = DatasetPlan {
        fill: Some((-1.5f64).to_le_bytes().to_vec()),
        attrs: vec![("units".into(), AttrValue::Str("eV".into())), ("max".into(), AttrValue::F64(4.5))],
        ..plan("/energy", Dtype::F64, &[10])
    };
    let image =
        DatasetPlan { fill: Some(u16::MAX.to_le_bytes().to_vec()), ..plan("/det/image", Dtype::U16, &[10, 4, 8]) };
    let flag = DatasetPlan { fill: Some(vec![0]), ..plan("/_present/flag", Dtype::Bool, &[10]) };
    let n_events =
        DatasetPlan { data: Some(42u64.to_le_bytes().to_vec()), ..plan("/summary/n_events", Dtype::U64, &[]) };
    let plans = vec![
        energy,
        image,
        plan("/timestamp", Dtype::I64, &[10]),
        flag,
        plan("/empty", Dtype::F32, &[0]),
        n_events,
        text_dataset("/summary/name", "démo run"),
    ];
    let root = vec![
        ("smdfs_version".to_string(), AttrValue::U64(1)),
        ("first".to_string(), AttrValue::I64(-3)),
        ("title".to_string(), AttrValue::Str("a run".into())),
    ];
    let layout = build_skeleton(&path, &plans, &[], &root).unwrap();
    assert_eq!(layout.datasets.len(), plans.len());
    for (p, d) in plans.iter().zip(&layout.datasets) {
        assert_eq!(p.path, d.path);
        assert_eq!(d.size, p.byte_size().unwrap());
    }
    assert_eq!(extent(&layout, "/empty"), &DatasetExtent { path: "/empty".into(), offset: 0, size: 0 });

    // Fill every served extent with test bytes, as the view would.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let put = |p: &str, bytes: Vec<u8>| {
        let e = extent(&layout, p);
        assert_eq!(bytes.len() as u64, e.size, "{p}");
        f.write_all_at(&bytes, e.offset).unwrap();
    };
    put("/energy", (0..10).flat_map(|i| (i as f64 * 0.5).to_le_bytes()).collect());
    put("/det/image", (0..320u16).flat_map(|i| (i * 3).to_le_bytes()).collect());
    put("/timestamp", (0..10i64).flat_map(|i| (1000 + i).to_le_bytes()).collect());
    put("/_present/flag", (0..10u8).map(|i| i % 2).collect());
    drop(f);

    let file = hdf5::File::open(&path).unwrap();
    let ds = file.dataset("energy").unwrap();
    assert_eq!(ds.read_raw::<f64>().unwrap(), (0..10).map(|i| i as f64 * 0.5).collect::<Vec<_>>());
    assert_eq!(ds.fill_value().unwrap().unwrap().cast::<f64>().unwrap(), -1.5);
    assert_eq!(ds.attr("units").unwrap().read_scalar::<VarLenUnicode>().unwrap().as_str(), "eV");
    assert_eq!(ds.attr("max").unwrap().read_scalar::<f64>().unwrap(), 4.5);
    assert!(!ds.is_chunked());
    let image = file.dataset("/det/image").unwrap();
    assert_eq!(image.shape(), vec![10, 4, 8]);
    assert_eq!(image.read_raw::<u16>().unwrap(), (0..320u16).map(|i| i * 3).collect::<Vec<_>>());
    assert_eq!(image.fill_value().unwrap().unwrap().cast::<u16>().unwrap(), u16::MAX);
    let ts = file.dataset("timestamp").unwrap().read_raw::<i64>().unwrap();
    assert_eq!(ts, (1000..1010).collect::<Vec<i64>>());
    let flag = file.dataset("_present/flag").unwrap();
    assert_eq!(flag.read_raw::<bool>().unwrap(), (0..10).map(|i| i % 2 == 1).collect::<Vec<_>>());
    assert!(!flag.fill_value().unwrap().unwrap().cast::<bool>().unwrap());
    let empty = file.dataset("empty").unwrap();
    assert_eq!((empty.shape(), empty.is_chunked()), (vec![0], false));
    assert_eq!(file.dataset("summary/n_events").unwrap().read_scalar::<u64>().unwrap(), 42);
    let name = file.dataset("summary/name").unwrap().read_raw::<u8>().unwrap();
    assert_eq!(String::from_utf8(name).unwrap(), "démo run");
    assert_eq!(file.attr("smdfs_version").unwrap().read_scalar::<u64>().unwrap(), 1);
    assert_eq!(file.attr("first").unwrap().read_scalar::<i64>().unwrap(), -3);
    assert_eq!(file.attr("title").unwrap().read_scalar::<VarLenUnicode>().unwrap().as_str(), "a run");
    drop((ds, image, flag, empty));
    file.close().unwrap();

    let p = path.to_str().unwrap();
    let out = h5dump(&["-d", "/energy", p]);
    assert!(out.contains("0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5"), "{out}");
    let out = h5dump(&["-d", "/_present/flag", p]);
    assert!(out.contains("FALSE, TRUE, FALSE, TRUE"), "{out}");
    let out = h5dump(&[p]); // the whole file: every dataset, group and attribute
    assert!(out.contains("1000, 1001, 1002") && out.contains("(0): 42"), "{out}");
}

extern "C" {
    fn H5Fget_eoa(file_id: hdf5_sys::h5i::hid_t, eoa: *mut hdf5_sys::h5::haddr_t) -> hdf5_sys::h5::herr_t;
}

/// The end-of-allocation address libhdf5 records in the file, read back by reopening it.
fn eoa(path: &Path) -> u64 {
    let file = hdf5::File::open(path).unwrap();
    let mut eoa = 0;
    // SAFETY: a live file id and a valid out pointer, under the library lock.
    let rc = hdf5::sync::sync(|| unsafe { H5Fget_eoa(file.id(), &mut eoa) });
    assert!(rc >= 0);
    eoa
}

#[test]
fn a_one_gib_dataset_leaves_the_skeleton_sparse() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.h5");
    let plans = [
        plan("/small", Dtype::U8, &[3]),
        DatasetPlan { fill: Some(f64::NAN.to_le_bytes().to_vec()), ..plan("/big", Dtype::F64, &[1 << 27]) },
        DatasetPlan { data: Some(7i32.to_le_bytes().to_vec()), ..plan("/after", Dtype::I32, &[]) },
    ];
    let layout = build_skeleton(&path, &plans, &[], &[]).unwrap();
    let big = extent(&layout, "/big");
    assert_eq!(big.size, 1 << 30);
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.blocks() * 512 < 1 << 20, "{} blocks allocated", meta.blocks());
    let eoa = eoa(&path);
    assert_eq!(meta.len(), eoa, "libhdf5 extends the file to its EOA on close");
    assert!(layout.file_size >= eoa && layout.file_size >= big.end());
    let file = hdf5::File::open(&path).unwrap();
    assert_eq!(file.dataset("after").unwrap().read_scalar::<i32>().unwrap(), 7);
}

#[test]
fn extents_are_page_aligned_disjoint_and_inside_the_file() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.h5");
    let mut plans = Vec::new();
    for (i, dtype) in Dtype::ALL.into_iter().enumerate() {
        let attrs = vec![("dtype".to_string(), AttrValue::Str(dtype.name().into()))];
        plans.push(DatasetPlan { attrs, ..plan(&format!("/g{}/x{i}", i % 3), dtype, &[i as u64 * 777 + 1]) });
        plans.push(plan(&format!("/scalar{i}"), dtype, &[]));
        plans.push(plan(&format!("/m{i}"), dtype, &[5, 3, i as u64]));
    }
    std::fs::write(&path, b"an older skeleton").unwrap();
    let layout = build_skeleton(&path, &plans, &[], &[]).unwrap();
    let mut live: Vec<&DatasetExtent> = layout.datasets.iter().filter(|d| d.size > 0).collect();
    assert_eq!(live.len(), plans.len() - 1); // only /m0 is empty
    live.sort_by_key(|d| d.offset);
    for d in &live {
        assert_eq!(d.offset % 4096, 0, "{d:?}");
        assert!(d.offset > 0 && layout.file_size >= d.end(), "{d:?}");
    }
    for w in live.windows(2) {
        assert!(w[0].end() <= w[1].offset, "{:?} overlaps {:?}", w[0], w[1]);
    }
    assert!(layout.file_size >= eoa(&path));
    assert_eq!(layout.file_size, std::fs::metadata(&path).unwrap().len());
}

#[test]
fn dimension_scales_are_attached_and_numbered_as_netcdf4_does() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.h5");
    let ts = DatasetPlan { scale: true, dims: vec!["/timestamp".into()], ..plan("/timestamp", Dtype::U64, &[6]) };
    let image = DatasetPlan {
        dims: vec!["/timestamp".into(), "/det/image_dim1".into()],
        ..plan("/det/image", Dtype::U16, &[6, 4])
    };
    let n = DatasetPlan { data: Some(6u64.to_le_bytes().to_vec()), ..plan("/summary/n", Dtype::U64, &[]) };
    let dims = [Dimension { path: "/det/image_dim1".into(), len: 4 }];
    let layout = build_skeleton(&path, &[ts, image, n], &dims, &[]).unwrap();
    assert_eq!(layout.datasets.len(), 3, "a dimension without a variable has no extent");
    let file = hdf5::File::open(&path).unwrap();
    let ts = file.dataset("timestamp").unwrap();
    let img = file.dataset("det/image").unwrap();
    let dim = file.dataset("det/image_dim1").unwrap();
    let names = |d: &hdf5::Dataset| d.attr_names().unwrap();
    assert!(names(&ts).contains(&"REFERENCE_LIST".to_string()), "{:?}", names(&ts));
    assert!(names(&img).contains(&"DIMENSION_LIST".to_string()), "{:?}", names(&img));
    assert_eq!(ts.attr("_Netcdf4Dimid").unwrap().read_scalar::<i32>().unwrap(), 0);
    assert_eq!(dim.attr("_Netcdf4Dimid").unwrap().read_scalar::<i32>().unwrap(), 1);
    assert_eq!(img.attr("_Netcdf4Coordinates").unwrap().read_raw::<i32>().unwrap(), vec![0, 1]);
    assert_eq!(dim.shape(), vec![4]);
    assert_eq!(dim.storage_size(), 0, "never allocated");
    assert_eq!(file.dataset("summary/n").unwrap().read_scalar::<u64>().unwrap(), 6);
    drop((ts, img, dim));
    file.close().unwrap();
    let out = h5dump(&["-A", path.to_str().unwrap()]);
    assert!(out.contains("This is a netCDF dimension but not a netCDF variable.         4"), "{out}");
    assert!(out.contains("\"/det/image_dim1\""), "{out}");
    // A dimension the plans name but nobody declares is an error naming it.
    let orphan = DatasetPlan { dims: vec!["/nowhere".into()], ..plan("/x", Dtype::U8, &[2]) };
    let err = build_skeleton(&path, &[orphan], &[], &[]).unwrap_err().to_string();
    assert!(err.contains("/x") && err.contains("/nowhere"), "{err}");
}

#[test]
fn bad_plans_are_refused_before_the_file_is_touched_and_hdf5_errors_name_the_dataset() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.h5");
    let short = DatasetPlan { data: Some(vec![0; 7]), ..plan("/x", Dtype::F64, &[1]) };
    assert!(matches!(build_skeleton(&path, &[short], &[], &[]), Err(Error::BadValue { .. })));
    let two = DatasetPlan { fill: Some(vec![2]), ..plan("/b", Dtype::Bool, &[1]) };
    assert!(matches!(build_skeleton(&path, &[two], &[], &[]), Err(Error::BadValue { .. })));
    assert!(!path.exists());
    let twice = [plan("/x", Dtype::U8, &[1]), plan("/x", Dtype::U8, &[1])];
    let err = build_skeleton(&path, &twice, &[], &[]).unwrap_err().to_string();
    assert!(err.contains("HDF5 skeleton") && err.contains("/x"), "{err}");
}
