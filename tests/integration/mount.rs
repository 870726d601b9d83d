//! Real FUSE mounts of real demo runs, read with the real tools: h5ls, h5dump, h5py, numpy
//! (`np.load(mmap_mode='r')`) and `cp -r`, each value compared with the demo formula; writes
//! fail with EROFS, missing paths with ENOENT, bad runs and mount points with clear messages.
//!
//! The mount is served by this test process ([`Mount`] from `smdfs-tests`, which unmounts on
//! drop, also when a test panics). The CLI's daemon path is tested in `cli/tests/mount.rs`.
//! Where FUSE or a reading tool is missing these tests skip with a message, or fail under
//! `SMDFS_REQUIRE_TOOLS=1` (see `smdfs_tests::machine_has`).

use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;

use smdfs::demo;
use smdfs_fuse::mount::{self, MountOptions};
use smdfs_fuse::{View, ViewOptions};
use smdfs_tests::{demo_run_and_mountpoint, machine_has, python, run_tool, script, Mount, Need};

/// Runs `tests/python/check_view.py` (h5py and numpy against the formula) on `root`.
fn check_with_python(root: &Path, n: u64) {
    let out = run_tool(Command::new(python()).arg(script("check_view.py")).arg(root).arg(n.to_string()));
    assert!(out.starts_with("ok:"), "{out}");
}

const DATASETS: [&str; 13] = [
    "/timestamp",
    "/energy",
    "/det/image",
    "/count",
    "/maybe",
    "/_present/maybe",
    "/unaligned_hits",
    "/unaligned_hits_timestamp",
    "/tag",
    "/tag_len",
    "/tag_offsets",
    "/summary/n_events",
    "/summary/max_energy",
];

/// Every dataset of the demo, flattened, as f64 (what h5dump prints).
fn formula(path: &str, n: u64) -> Vec<f64> {
    let all = 0..n;
    let tags: Vec<String> = all.clone().map(demo::tag).collect();
    let lens: Vec<f64> = tags.iter().map(|t| t.len() as f64).collect();
    match path {
        "/timestamp" => all.map(|i| demo::id(i) as f64).collect(),
        "/energy" => all.map(demo::energy).collect(),
        "/det/image" => all.flat_map(|i| demo::image(i).map(f64::from)).collect(),
        "/count" => all.map(|i| demo::count(i) as f64).collect(),
        "/maybe" => all.map(|i| demo::maybe(i).map_or(f64::NAN, f64::from)).collect(),
        "/_present/maybe" => all.map(|i| f64::from(u8::from(demo::maybe(i).is_some()))).collect(),
        "/unaligned_hits" => all.filter_map(|i| demo::hits(i).map(f64::from)).collect(),
        "/unaligned_hits_timestamp" => all.filter(|&i| demo::hits(i).is_some()).map(|i| demo::id(i) as f64).collect(),
        "/tag" => tags.iter().flat_map(|t| t.bytes().map(f64::from)).collect(),
        "/tag_len" => lens,
        "/tag_offsets" => std::iter::once(0.0)
            .chain(lens.iter().scan(0.0, |s, l| {
                *s += l;
                Some(*s)
            }))
            .collect(),
        "/summary/n_events" => vec![n as f64],
        "/summary/max_energy" => vec![demo::energy(n - 1)],
        p => panic!("no formula for {p}"),
    }
}

/// The values of the first `DATA { … }` block of `h5dump -d path -y -w 0`.
fn h5dump_values(file: &Path, path: &str) -> Vec<f64> {
    let out = run_tool(Command::new("h5dump").args(["-d", path, "-y", "-w", "0"]).arg(file));
    let data = out.split_once("DATA {").unwrap_or_else(|| panic!("no DATA in h5dump of {path}:\n{out}")).1;
    let data = data.split_once('}').unwrap().0;
    data.split([',', '\n', ' '])
        .filter(|t| !t.is_empty())
        .map(|t| match t {
            "TRUE" => 1.0,
            "FALSE" => 0.0,
            t => t.parse().unwrap_or_else(|_| panic!("h5dump of {path}: not a number {t:?}")),
        })
        .collect()
}

fn same(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
}

/// Every file of the view, read through the mount, equals the view's own bytes.
fn check_bytes_against_view(run: &Path, root: &Path) {
    let view = View::open(run, &ViewOptions::default()).unwrap();
    let files = view.files();
    assert!(files.len() >= 12, "{files:?}");
    for (path, size) in files {
        let got = std::fs::read(root.join(&path)).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        assert_eq!(got.len() as u64, size, "{path}: size");
        let attr = view.resolve(&path).unwrap();
        let mut want = vec![0u8; size as usize];
        assert_eq!(view.read_into(attr.ino, 0, &mut want).unwrap(), want.len(), "{path}");
        assert!(got == want, "{path}: bytes through the mount differ from the view's");
    }
}

/// Mounts the demo run and reads it with every tool; then copies the mount and reads the copy.
fn every_tool_reads_the_demo_formula(n: u64, servers: usize, clients: usize, dump_everything: bool) {
    if !machine_has(&[Need::Fuse, Need::Tool("h5ls"), Need::Tool("h5dump"), Need::Tool("cp"), Need::Python]) {
        return;
    }
    let (dir, run, mnt) = demo_run_and_mountpoint(n, servers, clients);
    let m = Mount::fixed(&run, &mnt);
    let h5 = mnt.join("run.h5");

    let mut names: Vec<String> =
        std::fs::read_dir(&mnt).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["arrays", "run.h5", "run.zarr"]);

    let listing = run_tool(Command::new("h5ls").arg("-r").arg(&h5));
    for d in DATASETS {
        assert!(listing.lines().any(|l| l.split_whitespace().next() == Some(d)), "h5ls -r lacks {d}:\n{listing}");
    }
    if dump_everything {
        let all = run_tool(Command::new("h5dump").arg(&h5));
        for d in DATASETS {
            let name = d.rsplit('/').next().unwrap();
            assert!(all.contains(&format!("DATASET \"{name}\"")), "h5dump lacks {d}:\n{}", &all[..all.len().min(3000)]);
        }
    }
    for d in DATASETS {
        let got = h5dump_values(&h5, d);
        assert!(same(&got, &formula(d, n)), "h5dump {d}: {:?}…", &got[..got.len().min(20)]);
    }

    check_with_python(&mnt, n);
    check_bytes_against_view(&run, &mnt);

    // `cp -r` of the whole mount is a plain directory that reads identically.
    let copy = dir.path().join("copy");
    run_tool(Command::new("cp").arg("-r").arg(&mnt).arg(&copy));
    check_with_python(&copy, n);
    check_bytes_against_view(&run, &copy);
    drop(m);
    assert!(std::fs::read_dir(&mnt).unwrap().next().is_none(), "unmounted: the mount point is empty again");
}

#[test]
fn one_server_run_reads_as_the_demo_formula_with_h5dump_h5ls_h5py_numpy_and_cp() {
    every_tool_reads_the_demo_formula(57, 1, 2, true);
}

#[test]
fn three_server_run_reads_as_the_demo_formula_with_h5dump_h5ls_h5py_numpy_and_cp() {
    every_tool_reads_the_demo_formula(20_000, 3, 4, false);
}

#[test]
fn writes_fail_with_erofs_and_missing_paths_with_enoent() {
    if !smdfs_tests::fuse_available() {
        return;
    }
    let (_dir, run, mnt) = demo_run_and_mountpoint(20, 2, 2);
    let _m = Mount::fixed(&run, &mnt);
    let erofs = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
    };
    let h5 = mnt.join("run.h5");
    erofs(std::fs::write(mnt.join("new"), b"x"), "create a file");
    erofs(std::fs::OpenOptions::new().write(true).open(&h5).map(drop), "open run.h5 for writing");
    erofs(std::fs::OpenOptions::new().read(true).write(true).open(&h5).map(drop), "open run.h5 read-write");
    erofs(std::fs::create_dir(mnt.join("d")), "mkdir");
    erofs(std::fs::remove_file(&h5), "unlink");
    erofs(std::fs::remove_dir(mnt.join("arrays")), "rmdir");
    erofs(std::fs::rename(&h5, mnt.join("other.h5")), "rename");
    erofs(std::fs::hard_link(&h5, mnt.join("link.h5")), "link");
    erofs(std::os::unix::fs::symlink("run.h5", mnt.join("sym")), "symlink");
    erofs(std::fs::set_permissions(&h5, std::os::unix::fs::PermissionsExt::from_mode(0o644)), "chmod");
    for missing in ["missing", "arrays/missing.npy", "arrays/det/missing.npy", "run.h5/inside"] {
        let e = std::fs::metadata(mnt.join(missing)).expect_err(missing);
        assert!(matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)), "{missing}: {e}");
    }
    assert_eq!(std::fs::metadata(mnt.join("missing")).unwrap_err().kind(), ErrorKind::NotFound);
    // Attributes: read-only modes, the mounting user's ids, 1 MiB blocks.
    use std::os::unix::fs::MetadataExt;
    let (f, d) = (std::fs::metadata(&h5).unwrap(), std::fs::metadata(mnt.join("arrays")).unwrap());
    assert_eq!((f.mode() & 0o7777, d.mode() & 0o7777), (0o444, 0o555));
    // SAFETY: getuid cannot fail.
    assert_eq!(f.uid(), unsafe { libc::getuid() });
    assert_eq!(f.blksize(), 1 << 20);
}

#[test]
fn a_non_run_or_an_unsuitable_mount_point_fails_with_a_clear_message() {
    if !smdfs_tests::fuse_available() {
        return;
    }
    let (dir, run, mnt) = demo_run_and_mountpoint(10, 1, 1);
    let not_a_run = dir.path().join("empty");
    std::fs::create_dir(&not_a_run).unwrap();
    let Err(e) = View::open(&not_a_run, &ViewOptions::default()) else { panic!("an empty directory is not a run") };
    assert!(e.to_string().contains("is not an smdfs run"), "{e}");

    let try_mount = |at: &Path| {
        let view = View::open(&run, &ViewOptions::default()).unwrap();
        let Err(e) = mount::mount(view, at, &MountOptions::default()) else { panic!("mounting at {at:?} should fail") };
        e.to_string()
    };
    let m = Mount::fixed(&run, &mnt);
    let busy = try_mount(&mnt);
    assert!(busy.contains("is busy") && busy.contains("already mounted"), "{busy}");
    let e = try_mount(&dir.path().join("nowhere"));
    assert!(e.contains("does not exist"), "{e}");
    let e = try_mount(&run.join("manifest.json"));
    assert!(e.contains("is not a directory"), "{e}");
    let e = try_mount(&run);
    assert!(e.contains("is not empty"), "{e}");
    drop(m);
    let e = mount::unmount(&mnt).unwrap_err().to_string();
    assert!(e.contains("is not mounted"), "{e}");
}

#[test]
fn a_mount_in_use_refuses_a_clean_unmount_until_its_files_are_closed() {
    if !smdfs_tests::fuse_available() {
        return;
    }
    let (_dir, run, mnt) = demo_run_and_mountpoint(10, 1, 1);
    let _m = Mount::fixed(&run, &mnt);
    let open = std::fs::File::open(mnt.join("arrays/energy.npy")).unwrap();
    let e = mount::unmount(&mnt).unwrap_err().to_string();
    assert!(e.contains("busy"), "{e}");
    drop(open);
    mount::unmount(&mnt).unwrap();
    assert!(std::fs::read_dir(&mnt).unwrap().next().is_none());
}

#[test]
fn concurrent_readers_get_the_same_bytes_as_one_reader() {
    if !smdfs_tests::fuse_available() {
        return;
    }
    let (_dir, run, mnt) = demo_run_and_mountpoint(30_000, 2, 3);
    let _m = Mount::fixed(&run, &mnt);
    let path = mnt.join("arrays/det/image.npy");
    let whole = std::fs::read(&path).unwrap();
    std::thread::scope(|s| {
        for chunk in [4096usize, 65_536, 1 << 20, 3 * (1 << 20) + 17] {
            let (path, whole) = (&path, &whole);
            s.spawn(move || {
                use std::os::unix::fs::FileExt;
                let f = std::fs::File::open(path).unwrap();
                let mut buf = vec![0u8; chunk];
                // Read back to front so threads disagree about what the page cache holds.
                let mut off = whole.len();
                while off > 0 {
                    let start = off.saturating_sub(chunk);
                    f.read_exact_at(&mut buf[..off - start], start as u64).unwrap();
                    assert!(buf[..off - start] == whole[start..off], "chunk {chunk} at {start}");
                    off = start;
                }
            });
        }
    });
}
