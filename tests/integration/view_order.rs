//! The mount's row orders and its own counters, on real FUSE mounts read by h5py:
//! - `--order arrival`: every dataset h5py reads from `run.h5` (and numpy from the `.npy`
//!   files) is the shards' column files concatenated, read straight from disk here;
//! - the counters (`smdfs_fuse::stats`): a first read reaches the daemon, a second read of the
//!   same file through a new `open` is answered by the kernel's page cache (`FOPEN_KEEP_CACHE`
//!   survives re-opens, and no GETATTR or LOOKUP round trip per read).

use std::path::Path;
use std::process::Command;

use smdfs::format::{column_file_name, shard_dir_name, Role};
use smdfs::Run;
use smdfs_fuse::live::Live;
use smdfs_fuse::mount::{mount_live, MountOptions};
use smdfs_fuse::stats::Op;
use smdfs_fuse::{Order, ViewOptions};
use smdfs_tests::{demo_run_and_mountpoint, machine_has, python, run_tool, Need};

/// The committed bytes of one column of every shard, read from the column files on disk,
/// concatenated in shard order.
fn shard_files_concatenated(run: &Path, group: &str, field: Option<&str>, role: Role) -> Vec<u8> {
    let r = Run::open(run).unwrap();
    let mut out = Vec::new();
    for s in r.shards() {
        let Some(c) = s.column(group, field, role) else { continue };
        let file = run.join(shard_dir_name(s.index)).join(column_file_name(c));
        let bytes = std::fs::read(&file).unwrap();
        out.extend_from_slice(&bytes[..s.lens[c as usize] as usize]);
    }
    out
}

/// h5py reads `datasets` of `file` and writes each one's raw bytes to `out/<k>.bin`.
fn h5py_dump(file: &Path, datasets: &[&str], out: &Path) {
    let script = "import sys, h5py\n\
        f = h5py.File(sys.argv[1], 'r')\n\
        for k, name in enumerate(sys.argv[3:]):\n\
        \x20   open(f'{sys.argv[2]}/{k}.bin', 'wb').write(f[name][:].tobytes())\n\
        print('ok')\n";
    let o = run_tool(Command::new(python()).args(["-c", script]).arg(file).arg(out).args(datasets));
    assert_eq!(o.trim(), "ok", "{o}");
}

#[test]
fn h5py_reading_the_arrival_order_view_gets_the_shard_columns_concatenated() {
    if !machine_has(&[Need::Fuse, Need::Python]) {
        return;
    }
    let (dir, run, mnt) = demo_run_and_mountpoint(30_000, 3, 4);
    let opts = ViewOptions { order: Order::Arrival, ..Default::default() };
    let m = mount_live(Live::open(&run, &opts).unwrap(), &mnt, &MountOptions::default()).unwrap();
    let group = Run::open(&run).unwrap().groups()[0].spec.name.clone();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let cases: [(&str, Option<&str>, Role); 5] = [
        ("/timestamp", None, Role::Ts),
        ("/det/image", Some("det/image"), Role::Data),
        ("/energy", Some("energy"), Role::Data),
        ("/tag", Some("tag"), Role::Data),
        ("/tag_len", Some("tag"), Role::Len),
    ];
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    h5py_dump(&mnt.join("run.h5"), &names, &out);
    for (k, (name, field, role)) in cases.iter().enumerate() {
        let got = std::fs::read(out.join(format!("{k}.bin"))).unwrap();
        let want = shard_files_concatenated(&run, &group, *field, *role);
        assert!(!want.is_empty(), "{name}");
        assert!(got == want, "{name}: h5py read {} bytes that differ from the shard files' {}", got.len(), want.len());
    }
    // numpy through the .npy file: the same bytes behind the header.
    let npy = std::fs::read(mnt.join("arrays/det/image.npy")).unwrap();
    let hl = u16::from_le_bytes([npy[8], npy[9]]) as usize + 10;
    assert!(npy[hl..] == shard_files_concatenated(&run, &group, Some("det/image"), Role::Data)[..]);
    m.unmount().unwrap();
}

#[test]
fn a_second_read_through_a_new_open_is_served_by_the_page_cache() {
    if !machine_has(&[Need::Fuse]) {
        return;
    }
    let (dir, run, mnt) = demo_run_and_mountpoint(50_000, 2, 4);
    let stats_file = dir.path().join("stats");
    let opts = MountOptions { stats_file: Some(stats_file.clone()), ..Default::default() };
    let m = mount_live(Live::open(&run, &ViewOptions::default()).unwrap(), &mnt, &opts).unwrap();
    let file = mnt.join("arrays/det/image.npy");
    let size = std::fs::metadata(&file).unwrap().len();
    let before = m.stats();
    assert_eq!(std::fs::read(&file).unwrap().len() as u64, size);
    let first = m.stats().since(&before);
    assert!(first.get(Op::Read) > 0 && first.read_bytes >= size, "first read: {}", first.render());
    for _ in 0..3 {
        let before = m.stats();
        assert_eq!(std::fs::read(&file).unwrap().len() as u64, size);
        let again = m.stats().since(&before);
        assert_eq!(again.get(Op::Read), 0, "a warm read reached the daemon: {}", again.render());
        assert_eq!(again.get(Op::Getattr) + again.get(Op::Lookup), 0, "round trips: {}", again.render());
    }
    drop(m);
    // The counters file holds what the mount counted, at the latest when it unmounted.
    let written = std::fs::read_to_string(&stats_file).unwrap();
    let reads = smdfs_fuse::stats::StatsSnapshot::parse(&written);
    assert!(reads.iter().any(|(k, v)| k == "op.read" && *v > 0), "{written}");
}
