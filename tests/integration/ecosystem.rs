//! The view speaks the ecosystem: a real FUSE mount of a real demo run read by the real
//! clients — xarray through h5netcdf and netCDF4 (a shared `timestamp` coordinate, `.sel` by
//! timestamp, `open_datatree` over the groups), kerchunk references into xarray, zarr-python,
//! `xr.open_zarr` and dask on `run.zarr/`, h5py's `ds.dims` — every value compared with h5py's
//! reading of `run.h5`, itself checked against the demo formula (`tests/python/
//! check_ecosystem.py`); Debian's `h5dump` (HDF5 1.10) reads the dimension scales; and a tree
//! written by `smdfs::h5::zarr::export` (what `smdfs export --format zarr` calls) reads equal.
//!
//! The Python readers come from `scripts/requirements-view.txt` in the `.venv`; without them
//! (or FUSE, or h5dump) these tests skip with a message, or fail under `SMDFS_REQUIRE_TOOLS=1`.

use std::path::Path;
use std::process::Command;

use smdfs_tests::{
    demo_run_and_mountpoint, hdf5_reader, machine_has, python, required, run_tool, script, Mount, Need, REQUIRE_ENV,
};

/// The modules `check_ecosystem.py` imports.
const MODULES: &str = "xarray, h5netcdf, netCDF4, zarr, kerchunk, dask, fsspec";

/// True if the machine has FUSE, h5dump and the `.venv` Python with the view's readers;
/// otherwise prints a SKIP line (or fails under `SMDFS_REQUIRE_TOOLS=1`).
fn readers_available() -> bool {
    if !machine_has(&[Need::Fuse, Need::Python, Need::Tool("h5dump")]) {
        return false;
    }
    let out = Command::new(python()).args(["-c", &format!("import {MODULES}")]).output().expect("run python");
    if out.status.success() {
        return true;
    }
    let why = format!(
        "{} cannot import {MODULES} (pip install -r scripts/requirements-view.txt): {}",
        python().display(),
        String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or("")
    );
    assert!(!required(), "{REQUIRE_ENV}=1 and the ecosystem tests cannot run: {why}");
    eprintln!("SKIP ecosystem: {why}");
    false
}

/// Writes the run's Zarr tree as real files, as `smdfs export --format zarr` does.
fn export_zarr(run: &Path, out: &Path) {
    let r = smdfs::Run::open(run).unwrap();
    let opts = smdfs::h5::zarr::ZarrExportOptions::default();
    let report = smdfs::h5::zarr::export(&r, out, &opts, &mut |_, _| {}).unwrap();
    assert!(report.stored_bytes < report.data_bytes, "gzip stored {report:?}");
}

fn check_ecosystem(root: &Path, n: u64, exported: Option<&Path>) {
    let mut cmd = hdf5_reader(python());
    cmd.arg(script("check_ecosystem.py")).arg(root).arg(n.to_string());
    if let Some(e) = exported {
        cmd.arg(e);
    }
    let out = run_tool(&mut cmd);
    assert!(out.trim_end().lines().last().is_some_and(|l| l.starts_with("ok:")), "{out}");
}

/// 200 000 events (as in the report that asked for this): `count` holds a real −99999 at
/// event 99 999 and `det/image` real 65535s, which a reader taking the fill property as
/// "missing" would mask; `det/image` spans two Zarr chunks, the second padded.
#[test]
fn xarray_kerchunk_zarr_and_dask_read_every_value_of_the_mount_exactly() {
    if !readers_available() {
        return;
    }
    let (dir, run, mnt) = demo_run_and_mountpoint(200_000, 3, 4);
    let exported = dir.path().join("exported.zarr");
    export_zarr(&run, &exported);
    let _m = Mount::fixed(&run, &mnt);
    let mut names: Vec<String> =
        std::fs::read_dir(&mnt).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["arrays", "run.h5", "run.zarr"]);
    check_ecosystem(&mnt, 200_000, Some(&exported));
}

/// A run with more shards than clients and an odd size, read the same ways.
#[test]
fn an_uneven_small_run_reads_the_same_through_every_client() {
    if !readers_available() {
        return;
    }
    let (_dir, run, mnt) = demo_run_and_mountpoint(1_237, 4, 3);
    let _m = Mount::fixed(&run, &mnt);
    check_ecosystem(&mnt, 1_237, None);
}

#[test]
fn debian_h5dump_reads_the_dimension_scales_and_fill_attributes() {
    if !readers_available() {
        return;
    }
    let (_dir, run, mnt) = demo_run_and_mountpoint(500, 2, 2);
    let _m = Mount::fixed(&run, &mnt);
    let h5 = mnt.join("run.h5");
    let all = run_tool(hdf5_reader("h5dump").arg(&h5));
    assert!(all.contains("\"DIMENSION_SCALE\""), "no dimension scale in h5dump output");
    let count = run_tool(hdf5_reader("h5dump").args(["-d", "/count", "-s", "7", "-c", "2", "-w", "0"]).arg(&h5));
    assert!(count.contains("-7, -8"), "{count}");
    assert!(count.contains("(DATASET") && count.contains("\"/timestamp\")"), "count lacks its scale: {count}");
    assert!(!count.contains("_FillValue"), "count has no missing rows: {count}");
    let image = run_tool(hdf5_reader("h5dump").args(["-A", "-d", "/det/image"]).arg(&h5));
    assert!(image.contains("\"/det/image_dim1\"") && image.contains("\"/det/image_dim2\""), "{image}");
    let maybe = run_tool(hdf5_reader("h5dump").args(["-A", "-d", "/maybe"]).arg(&h5));
    assert!(maybe.contains("_FillValue") && maybe.contains("/_present/maybe"), "{maybe}");
    let mask = run_tool(hdf5_reader("h5dump").args(["-A", "-d", "/_present/maybe"]).arg(&h5));
    assert!(mask.contains("flag_values") && mask.contains("missing present"), "{mask}");
}
