//! Many readers on one mount: 16 reader processes for a bounded time — 8 h5py processes
//! reading random slices of `run.h5` and checking every value against the demo formula, 8
//! shell loops `cat`-ing `.npy` files and comparing them byte for byte with what the view
//! serves — while another mount of the same run is mounted, read and unmounted over and
//! over. Every reader must finish without an error and have read something; the aggregate
//! throughput is the benchmark's business (`view_bench`'s "many readers").

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use smdfs_fuse::live::Live;
use smdfs_fuse::mount::{mount_live, MountOptions};
use smdfs_fuse::{View, ViewOptions};
use smdfs_tests::{demo_run_and_mountpoint, machine_has, python, Need};

/// How long the readers run.
const SECS: u64 = 20;
const EVENTS: u64 = 300_000;

const H5PY_READER: &str = "import sys, time, random, h5py, numpy as np\n\
    f = h5py.File(sys.argv[1], 'r'); end = time.time() + float(sys.argv[2]); rounds = 0\n\
    while time.time() < end:\n\
    \x20   a = random.randrange(f['energy'].shape[0]); b = min(f['energy'].shape[0], a + random.randrange(1, 50000))\n\
    \x20   i = np.arange(a, b)\n\
    \x20   assert (f['energy'][a:b] == i * 0.5).all(), ('energy', a, b)\n\
    \x20   assert (f['timestamp'][a:b] == 1000 + 3 * i).all(), ('timestamp', a, b)\n\
    \x20   img = f['det/image'][a:b].astype(np.int64)\n\
    \x20   want = (i[:, None, None] + 8 * np.arange(4)[None, :, None] + np.arange(8)[None, None, :]) % 65536\n\
    \x20   assert (img == want).all(), ('det/image', a, b)\n\
    \x20   rounds += 1\n\
    print(rounds)\n";

/// `cat`s each `.npy` (argument 3 on: mount-relative path and reference file, alternating)
/// and compares it with the reference until the time is up; prints the rounds.
const CAT_READER: &str = "end=$(( $(date +%s) + $2 )); rounds=0; root=$1; shift 2; \
    while [ $(date +%s) -lt $end ]; do set -- \"$@\"; \
    for pair in \"$@\"; do f=${pair%%=*}; ref=${pair#*=}; \
    cat \"$root/$f\" | cmp -s - \"$ref\" || { echo \"$f differs\" >&2; exit 1; }; done; \
    rounds=$((rounds + 1)); done; echo $rounds";

fn reference(view: &View, path: &str, out: &Path) -> String {
    let a = view.resolve(path).unwrap();
    let mut buf = vec![0u8; a.size as usize];
    assert_eq!(view.read_into(a.ino, 0, &mut buf).unwrap(), buf.len());
    let file = out.join(path.replace('/', "_"));
    std::fs::write(&file, buf).unwrap();
    format!("{path}={}", file.display())
}

#[test]
fn sixteen_readers_and_a_mount_coming_and_going_see_no_error() {
    if !machine_has(&[Need::Fuse, Need::Python]) {
        return;
    }
    let (dir, run, mnt) = demo_run_and_mountpoint(EVENTS, 2, 4);
    let mnt2 = dir.path().join("mnt2");
    std::fs::create_dir(&mnt2).unwrap();
    let refs = dir.path().join("refs");
    std::fs::create_dir(&refs).unwrap();
    let view = View::open(&run, &ViewOptions::default()).unwrap();
    let pairs: Vec<String> = ["arrays/det/image.npy", "arrays/energy.npy", "arrays/tag.npy", "arrays/maybe.npy"]
        .iter()
        .map(|p| reference(&view, p, &refs))
        .collect();
    drop(view);
    let m = mount_live(Live::open(&run, &ViewOptions::default()).unwrap(), &mnt, &MountOptions::default()).unwrap();

    let kids: Vec<_> = (0..16)
        .map(|k| {
            let mut c = if k % 2 == 0 {
                let mut c = Command::new(python());
                c.args(["-c", H5PY_READER]).arg(mnt.join("run.h5")).arg(SECS.to_string());
                c
            } else {
                let mut c = Command::new("sh");
                c.args(["-c", CAT_READER, "sh"]).arg(&mnt).arg(SECS.to_string()).args(&pairs);
                c
            };
            (k, c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
        })
        .collect();
    // Mounting and unmounting start once the readers run: no fork races an open file.
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicU64::new(0));
    let cycler = {
        let (stop, cycles, run, mnt2) = (Arc::clone(&stop), Arc::clone(&cycles), run.clone(), mnt2.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let live = Live::open(&run, &ViewOptions::default()).unwrap();
                let m2 = mount_live(live, &mnt2, &MountOptions::default()).unwrap();
                assert_eq!(std::fs::read(mnt2.join("arrays/energy.npy")).unwrap().len() as u64, 128 + EVENTS * 8);
                // A clean unmount, retried while busy: a process forked meanwhile holds the
                // open files of its parent until it execs.
                let mut tries = 0;
                while let Err(e) = smdfs_fuse::mount::unmount(&mnt2) {
                    tries += 1;
                    assert!(tries < 100, "{e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
                m2.join().unwrap();
                cycles.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut failures = Vec::new();
    for (k, kid) in kids {
        let o = kid.wait_with_output().unwrap();
        let rounds = String::from_utf8_lossy(&o.stdout).trim().parse::<u64>().unwrap_or(0);
        if !o.status.success() || rounds == 0 {
            failures.push(format!("reader {k}: {} rounds, {}", rounds, String::from_utf8_lossy(&o.stderr)));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let cycled = cycler.join();
    m.unmount().unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(cycled.is_ok(), "mounting and unmounting beside the readers failed");
    assert!(cycles.load(Ordering::Relaxed) > 0, "the second mount never came up");
}
