//! `smdfs export RUN FILE.h5` through the binary: demo runs written by `smdfs demo`, exported
//! plain and gzip-compressed, read back with h5py (`tests/python/check_view.py`: every
//! dataset whole and sliced, dtypes, shapes, attributes and fill values) against the demo
//! formula (docs/ARCHITECTURE.md "The demo run"), and with h5dump; a directory that is not a run fails
//! with exit code 1 and the reason, leaving no file behind. Without the `.venv` Python or
//! h5dump these tests skip with a message, or fail under `SMDFS_REQUIRE_TOOLS=1`.

use std::path::Path;
use std::process::Output;

use smdfs_tests::{hdf5_reader, machine_has, python, run_tool, script, Need};

mod common;

use common::smdfs;

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Checks `file` (an export of the demo run of `n` events) with h5py against the formula and
/// with h5dump; returns each dataset's h5py `compression` (or `None`) by path.
fn check_export(file: &Path, n: u64) -> serde_json::Value {
    let dir = file.parent().unwrap();
    let name = file.file_name().unwrap().to_str().unwrap();
    let ok = run_tool(
        hdf5_reader(python()).arg(script("check_view.py")).arg(dir).arg(n.to_string()).arg(name).arg("--h5-only"),
    );
    assert!(ok.starts_with("ok:"), "{ok}");
    run_tool(hdf5_reader("h5dump").arg("-H").arg(file));
    let compression = r#"
import h5py, json, sys
f = h5py.File(sys.argv[1], 'r')
out = {}
f.visititems(lambda p, o: out.__setitem__(p, [o.compression, list(o.chunks) if o.chunks else None]) if isinstance(o, h5py.Dataset) else None)
print(json.dumps(out))
"#;
    serde_json::from_str(&run_tool(hdf5_reader(python()).arg("-c").arg(compression).arg(file))).unwrap()
}

#[test]
fn export_writes_one_h5_file_that_h5py_reads_as_the_demo_formula() {
    if !machine_has(&[Need::Python, Need::Tool("h5dump")]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let r = run.to_str().unwrap();
    let n = 2_501u64;
    let d = smdfs(&["demo", r, "--events", &n.to_string(), "--servers", "2", "--clients", "3"]);
    assert!(d.status.success(), "{}", text(&d));

    let plain = tmp.path().join("plain.h5");
    let o = smdfs(&["export", r, plain.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("13 datasets"), "{}", text(&o));
    let c = check_export(&plain, n);
    assert!(c.as_object().unwrap().values().all(|v| v[0].is_null()), "no compression by default: {c}");

    let gz = tmp.path().join("gz.h5");
    let o = smdfs(&["export", r, gz.to_str().unwrap(), "--compression", "gzip=6", "--chunk-rows", "1000"]);
    assert!(o.status.success(), "{}", text(&o));
    let c = check_export(&gz, n);
    assert_eq!(c["energy"], serde_json::json!(["gzip", [1000]]), "{c}");
    assert_eq!(c["det/image"], serde_json::json!(["gzip", [1000, 4, 8]]), "{c}");
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(size(&gz) < size(&plain), "gzip {} bytes, plain {}", size(&gz), size(&plain));

    // Exporting again replaces the file only with --force.
    let o = smdfs(&["export", r, gz.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = smdfs(&["export", r, gz.to_str().unwrap(), "--force"]);
    assert!(o.status.success(), "{}", text(&o));
    check_export(&gz, n);
}

#[test]
fn export_of_a_directory_that_is_not_a_run_fails_with_the_reason_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.h5");
    let o = smdfs(&["export", tmp.path().to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("is not an smdfs run"), "{}", text(&o));
    assert!(!out.exists());
    assert_eq!(smdfs(&["export", tmp.path().to_str().unwrap()]).status.code(), Some(2), "usage errors exit 2");
}
