//! Real-mount tests of drop-behind (`cache`): what a reader gets through the mount after the
//! daemon dropped the shard pages behind its replies is still the shards' truth, for a
//! complete run and for a run still being written (whose dirty tail must never be lost or
//! stale). Needs /dev/fuse (root here, as in CI).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use smdfs::format::{column_file_name, shard_dir_name, Role};
use smdfs::{demo, SmallData, Value};

use super::{mount, mount_live, DropBehind, MountOptions};
use crate::live::Live;
use crate::view::{View, ViewOptions};

/// Bytes of `path` in the page cache (mincore over a fresh map of it).
fn resident(path: &Path) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    if len == 0 {
        return 0;
    }
    // SAFETY: a read-only map of a file nobody truncates during the test.
    let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
    let mut vec = vec![0u8; len.div_ceil(4096)];
    // SAFETY: `vec` has one byte per page of the map.
    let rc = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore {}", path.display());
    vec.iter().filter(|&&b| b & 1 == 1).count() as u64 * 4096
}

/// The column files holding `field` of the run's first group.
fn column_files(run: &Path, field: &str) -> Vec<PathBuf> {
    let r = smdfs::Run::open(run).unwrap();
    let group = r.groups()[0].spec.name.clone();
    r.shards()
        .iter()
        .filter_map(|s| s.column(&group, Some(field), Role::Data).map(|c| (s.index, c)))
        .map(|(i, c)| run.join(shard_dir_name(i)).join(column_file_name(c)))
        .collect()
}

/// The `.npy` body: what follows its header.
fn body(npy: &[u8]) -> &[u8] {
    &npy[u16::from_le_bytes([npy[8], npy[9]]) as usize + 10..]
}

/// Polls `cond` (the dropping thread works in the background); a hang guard, not a timing
/// assertion.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reads_after_the_daemon_dropped_shard_pages_are_the_shards_truth() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // 2 shards of 128k 64-byte images each: 8 MiB columns, several drop blocks.
    let n = 262_144u64;
    demo::write_demo(&run, n, 2, 2, false).unwrap();
    let cols = column_files(&run, "det/image");
    for c in &cols {
        // Written back and in the cache: the pages the mount reads are clean.
        std::fs::File::open(c).unwrap().sync_all().unwrap();
        std::fs::read(c).unwrap();
    }
    let cached: u64 = cols.iter().map(|c| resident(c)).sum();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let view = View::open(&run, &ViewOptions::default()).unwrap();
    let m = mount(view, &mnt, &MountOptions { drop_behind: DropBehind::Always, ..Default::default() }).unwrap();
    let npy = mnt.join("arrays/det/image.npy");
    let check = |bytes: &[u8]| {
        let b = body(bytes);
        assert_eq!(b.len() as u64, n * 64);
        for (i, row) in b.chunks_exact(64).enumerate() {
            let want: Vec<u8> = demo::image(i as u64).iter().flat_map(|v| v.to_le_bytes()).collect();
            assert_eq!(row, &want[..], "row {i}");
        }
    };
    check(&std::fs::read(&npy).unwrap());
    // The shard pages behind the replies leave the cache (all but the blocks a sequential
    // reader keeps behind it, and the partly read ones).
    eventually("the shard pages are dropped", || cols.iter().map(|c| resident(c)).sum::<u64>() < cached / 2);
    // The view's own cache gone too: the daemon now reads the shards from the disk again.
    let f = std::fs::File::open(&npy).unwrap();
    // SAFETY: a valid descriptor; fadvise only advises.
    unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 0, libc::POSIX_FADV_DONTNEED) };
    check(&std::fs::read(&npy).unwrap());
    // Random reads (no stream) through the mount equal the shards' truth too.
    let whole = std::fs::read(&npy).unwrap();
    let mut rng = smdfs::read::shuffle::SplitMix::new(7);
    for _ in 0..200 {
        let off = rng.below(whole.len() as u64);
        let mut buf = vec![0u8; 1 + rng.below(3 << 20) as usize];
        let got = f.read_at(&mut buf, off).unwrap();
        assert_eq!(&buf[..got], &whole[off as usize..off as usize + got]);
    }
    drop(f);
    m.unmount().unwrap();
}

#[test]
fn a_live_run_read_with_drop_behind_keeps_its_tail_right() {
    let dir = tempfile::tempdir().unwrap();
    let smd = SmallData::builder(dir.path()).servers(2).build().unwrap();
    let mut c = smd.client();
    let mnt = tempfile::tempdir().unwrap();
    let live = Live::open(dir.path(), &ViewOptions::default()).unwrap();
    let opts =
        MountOptions { drop_behind: DropBehind::Always, refresh: Duration::from_millis(50), ..Default::default() };
    let m = mount_live(live, mnt.path(), &opts).unwrap();
    let npy = mnt.path().join("arrays/x.npy");
    // 4 KiB rows holding their event id: 1000 events a round, 4 MiB.
    let row = |id: u64| vec![id; 512];
    let mut written = 0u64;
    for round in 0..6 {
        for id in written..written + 1000 {
            c.event(id, [("x", Value::array(&row(id), &[512]))]).unwrap();
        }
        c.flush().unwrap();
        written += 1000;
        // Every row a snapshot shows is the row written, up to the newest commit.
        eventually("the mount shows the new rows", || {
            let b = std::fs::read(&npy).map(|b| body(&b).len() as u64).unwrap_or(0);
            b == written * 4096
        });
        let bytes = std::fs::read(&npy).unwrap();
        for (i, r) in body(&bytes).chunks_exact(4096).enumerate() {
            let ids: Vec<u64> = r.chunks_exact(8).map(|v| u64::from_le_bytes(v.try_into().unwrap())).collect();
            assert!(ids.iter().all(|&v| v == i as u64), "round {round}: row {i} reads {}", ids[0]);
        }
    }
    drop(c);
    m.unmount().unwrap();
    smd.done().unwrap();
}
