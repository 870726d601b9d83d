//! The `smdfs` binary end to end: exit codes, messages and `info --json` of a real demo run.

mod common;

use common::smdfs;

#[test]
fn demo_of_a_million_events_reports_them_with_their_dtypes_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    let d = smdfs(&["demo", o, "--events", "1000000", "--servers", "2", "--clients", "4"]);
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    let i = smdfs(&["info", o, "--json"]);
    assert!(i.status.success(), "{}", String::from_utf8_lossy(&i.stderr));
    let v: serde_json::Value = serde_json::from_slice(&i.stdout).unwrap();
    assert_eq!(v["state"], "complete");
    assert_eq!(v["events"], 1_000_000);
    assert_eq!(v["shards"], 2);
    let ds = v["datasets"].as_array().unwrap();
    let find = |p: &str| ds.iter().find(|d| d["path"] == p).unwrap_or_else(|| panic!("no dataset {p}"));
    let want = [
        ("energy", "f64", serde_json::json!([1_000_000])),
        ("det/image", "u16", serde_json::json!([1_000_000, 4, 8])),
        ("count", "i64", serde_json::json!([1_000_000])),
        ("maybe", "f32", serde_json::json!([1_000_000])),
        ("unaligned_hits", "u32", serde_json::json!([200_000])),
        ("tag", "u8", serde_json::json!([1_000_000])),
    ];
    for (p, dtype, shape) in want {
        let d = find(p);
        assert_eq!(d["dtype"], dtype, "{p}");
        assert_eq!(d["shape"], shape, "{p}");
    }
    assert_eq!(find("maybe")["missing"], 500_000);
    assert_eq!(find("unaligned_hits")["aligned"], false);
    assert_eq!(find("tag")["kind"], "bytes");
    let summary = v["summary"].as_array().unwrap();
    let s = |n: &str| summary.iter().find(|s| s["name"] == n).unwrap()["value"].as_f64().unwrap();
    assert_eq!(s("n_events"), 1_000_000.0);
    assert_eq!(s("max_energy"), 499_999.5);
    let files = v["view_files"].as_array().unwrap();
    let size = |p: &str| {
        files.iter().find(|f| f["path"] == p).unwrap_or_else(|| panic!("no view file {p}"))["size"].as_u64().unwrap()
    };
    assert!(size("run.h5") > 1_000_000 * 100);
    assert_eq!(size("arrays/energy.npy"), 128 + 8_000_000);
    assert_eq!(size("arrays/det/image.npy"), 128 + 64_000_000);
    // Human-readable form too.
    let h = smdfs(&["info", o]);
    let text = String::from_utf8_lossy(&h.stdout);
    assert!(text.contains("events   1000000") && text.contains("det/image"), "{text}");
    // Writing again into the same directory needs --force.
    let again = smdfs(&["demo", o, "--events", "10"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a run"));
}

#[test]
fn info_on_a_directory_that_is_not_a_run_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let o = smdfs(&["info", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("is not an smdfs run") && e.contains("manifest.json"), "{e}");
    let u = smdfs(&["info"]);
    assert_eq!(u.status.code(), Some(2), "usage errors exit 2");
}
