//! Unit tests of `live`.

use super::*;
use smdfs::{demo, Client, SmallData, Value};

fn write(c: &mut Client, range: std::ops::Range<u64>) {
    for i in range {
        let img = demo::image(i);
        let fields = [("energy", Value::from(demo::energy(i))), ("det/image", Value::array(&img, &[4, 8]))];
        c.event(demo::id(i), &fields).unwrap();
    }
    c.flush().unwrap();
}

fn whole(live: &Live, ino: Ino) -> Vec<u8> {
    let mut buf = vec![0u8; live.attr(ino).unwrap().size as usize];
    assert_eq!(live.read_into(ino, 0, &mut buf).unwrap(), buf.len());
    buf
}

fn lookup_path(live: &Live, path: &str) -> Attr {
    let mut a = live.attr(ROOT_INO).unwrap();
    for seg in path.split('/') {
        a = live.lookup(a.ino, seg).unwrap();
    }
    a
}

/// Refreshes until the current snapshot holds `n` events (the server commits on its own
/// thread after a flush).
fn refresh_until(live: &Live, n: u64) -> Changed {
    // A hang guard, not a timing assertion: the bound only turns a hang into a message.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut changed = Changed::default();
    while live.current().run().len() < n {
        assert!(std::time::Instant::now() < deadline, "the run never reached {n} events");
        if let Some(c) = live.refresh().unwrap() {
            changed.entries.extend(c.entries);
            changed.dirs = c.dirs;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    changed
}

#[test]
fn files_move_to_new_inodes_as_the_run_grows_while_old_inodes_keep_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let smd = SmallData::builder(dir.path()).servers(2).batch_events(4).build().unwrap();
    let live = Live::open(dir.path(), &ViewOptions::default()).unwrap();
    assert!(!live.is_final());
    assert_eq!(live.refresh().unwrap(), None, "nothing committed since open");
    // An empty run shows no fields yet.
    let arrays = lookup_path(&live, "arrays");
    let names = |l: &[DirEntry]| l.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
    let before = names(&live.readdir(arrays.ino).unwrap());
    assert!(!before.contains(&"det".to_string()), "{before:?}");
    let stream = live.opendir(arrays.ino).unwrap();

    let mut c = smd.client();
    write(&mut c, 0..10);
    refresh_until(&live, 10);
    assert_eq!(lookup_path(&live, "arrays").ino, arrays.ino, "directories keep their inode");
    // An open directory stream keeps its listing; a new one sees the new fields.
    assert_eq!(names(&live.listing(arrays.ino, stream).unwrap()), before);
    let now = names(&live.listing(arrays.ino, live.opendir(arrays.ino).unwrap()).unwrap());
    assert!(now.contains(&"det".to_string()) && now.contains(&"energy.npy".to_string()), "{now:?}");
    live.releasedir(stream);
    assert_eq!(names(&live.listing(arrays.ino, stream).unwrap()), now, "a released handle lists afresh");
    let det = lookup_path(&live, "arrays/det");
    let old = lookup_path(&live, "arrays/det/image.npy");
    assert_eq!(lookup_path(&live, "arrays/det/image.npy").ino, old.ino, "one inode per file and snapshot");
    let old_bytes = whole(&live, old.ino);
    let listed = live.readdir(det.ino).unwrap();
    assert_eq!(listed.iter().map(|e| (e.ino, e.name.as_str())).collect::<Vec<_>>(), [(old.ino, "image.npy")]);

    write(&mut c, 10..30);
    let changed = refresh_until(&live, 30);
    assert!(changed.entries.contains(&(det.ino, "image.npy".to_string())), "{changed:?}");
    assert!(changed.dirs.contains(&ROOT_INO) && changed.dirs.contains(&det.ino));
    // The old inode still serves its snapshot; the name now leads to a new, bigger file.
    assert_eq!(live.attr(old.ino).unwrap(), old);
    assert_eq!(whole(&live, old.ino), old_bytes);
    let new = lookup_path(&live, "arrays/det/image.npy");
    assert_ne!(new.ino, old.ino);
    assert!(new.mtime > old.mtime, "the new snapshot carries the time of the commits it shows");
    assert_eq!(new.size, old.size + 20 * 64);
    assert_eq!(lookup_path(&live, "arrays/det").ino, det.ino);
    // One client, so one shard: the new rows come after the old ones.
    assert_eq!(whole(&live, new.ino)[128..128 + 10 * 64], old_bytes[128..]);

    // Forgetting: a superseded inode goes once the kernel drops all its lookups; the
    // current snapshot's inodes stay.
    live.forget(old.ino, 1);
    assert!(live.attr(old.ino).is_ok(), "two lookups, one forgotten");
    live.forget(old.ino, 1);
    assert_eq!(live.attr(old.ino).unwrap_err().to_errno(), libc::ENOENT);
    live.forget(new.ino, 1);
    assert_eq!(live.attr(new.ino).unwrap(), new);
    assert_eq!(lookup_path(&live, "arrays/det/image.npy").ino, new.ino);

    c.finish().unwrap();
    smd.done().unwrap();
    refresh_until(&live, 30);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !live.is_final() {
        assert!(
            std::time::Instant::now() < deadline,
            "the view never turned final after done(); the run reads {:?}",
            live.current().run().state()
        );
        live.refresh().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let fresh = View::open(dir.path(), &ViewOptions::default()).unwrap();
    for (path, size) in fresh.files() {
        let a = lookup_path(&live, &path);
        assert_eq!(a.size, size, "{path}");
        let mut want = vec![0u8; size as usize];
        fresh.read_into(fresh.resolve(&path).unwrap().ino, 0, &mut want).unwrap();
        assert!(whole(&live, a.ino) == want, "{path}: the final snapshot is the finished run");
    }
}

#[test]
fn a_fixed_view_never_refreshes_and_keeps_its_inodes() {
    let dir = tempfile::tempdir().unwrap();
    demo::write_demo(dir.path(), 20, 1, 1, false).unwrap();
    let live = Live::fixed(View::open(dir.path(), &ViewOptions::default()).unwrap());
    assert!(live.is_final());
    assert_eq!(live.refresh().unwrap(), None);
    let a = lookup_path(&live, "run.h5");
    live.forget(a.ino, 1);
    assert_eq!(lookup_path(&live, "run.h5"), a);
    assert_eq!(live.read_into(ROOT_INO, 0, &mut [0; 4]).unwrap_err().to_errno(), libc::EISDIR);
    assert_eq!(live.readdir(a.ino).unwrap_err().to_errno(), libc::ENOTDIR);
    assert_eq!(live.lookup(ROOT_INO, "nope").unwrap_err().to_errno(), libc::ENOENT);
    let names: Vec<String> = live.readdir(ROOT_INO).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["arrays", "run.h5", "run.zarr"]);
}

#[test]
fn a_complete_run_opens_final_and_its_watcher_stops() {
    let dir = tempfile::tempdir().unwrap();
    demo::write_demo(dir.path(), 5, 1, 1, false).unwrap();
    let live = Arc::new(Live::open(dir.path(), &ViewOptions::default()).unwrap());
    assert!(live.is_final());
    let calls = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&calls);
    let w = live
        .watch(Duration::from_millis(10), move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !w.is_finished() {
        assert!(std::time::Instant::now() < deadline, "the watcher of a complete run never stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "a complete run does not change");
    assert_eq!(live.generation(), 0);
}
