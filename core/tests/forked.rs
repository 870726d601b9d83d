//! Objects that own threads, used in a process forked from their own without exec (Python's
//! `multiprocessing` with the `fork` start method, a `DataLoader` worker): the child has a
//! copy of their memory but not their threads. A writer (its servers), a prefetching reader,
//! a split-records prefetch and an HDF5 stream or request queue (their workers): every call
//! in the child must fail with `Error::Forked` at once, dropping the child's copies must
//! return, and the parent must go on unharmed — never a hang.

use std::sync::Arc;
use std::time::{Duration, Instant};

use smdfs::h5::export::{export, ExportOptions};
use smdfs::tools::h5stream::{H5File, StreamOptions};
use smdfs::tools::split::{SplitLoader, SplitWriter};
use smdfs::{fields, Error, Prefetch, Run, SmallData};

/// Runs `body` in a forked child and returns its exit code (`None`: still running after
/// `limit`, then killed). The child never returns into the test harness.
fn in_child(limit: Duration, body: impl FnOnce() -> bool) -> Option<i32> {
    // SAFETY: the child runs `body` (no output, no locks another thread may hold: the writer
    // refuses before touching its threads) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(false);
        // SAFETY: ends the child without running the harness's exit code.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let start = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: polls our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        if start.elapsed() > limit {
            // SAFETY: our own child, reaped right after.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The child's own copy of `x` (fork copied the memory); the child ends with `_exit` and
/// never touches the original again.
fn childs_copy<T>(x: &mut T) -> T {
    // SAFETY: see above: in the child the original is never used or dropped after this.
    unsafe { std::ptr::read(x) }
}

fn forked<T: std::fmt::Debug>(r: Option<smdfs::Result<T>>) -> bool {
    matches!(r, Some(Err(Error::Forked { .. })))
}

#[test]
fn every_writer_call_in_a_forked_child_fails_at_once_and_the_parent_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // Small batches and one in flight: a child handing batches to servers that are not
    // there would block on the first full queue.
    let mut smd = SmallData::builder(&run).servers(2).batch_events(8).max_batches_in_flight(1).build().unwrap();
    let mut c = smd.client();
    for i in 0..100u64 {
        c.event(2 * i, fields! { "energy" => i as f64 }).unwrap();
    }
    let (c_here, smd_here) = (&mut c, &mut smd);
    let code = in_child(Duration::from_secs(30), move || {
        let (mut c, smd) = (childs_copy(c_here), childs_copy(smd_here));
        let forked = |r: smdfs::Result<()>| matches!(r, Err(Error::Forked { .. }));
        let mut every = true;
        for i in 0..10_000u64 {
            every &= forked(c.event(2 * i + 1, fields! { "energy" => -1.0 }));
        }
        every &= forked(c.flush());
        every &= matches!(smd.scalar::<f64>("energy"), Err(Error::Forked { .. }));
        let mut other = smd.client();
        every &= forked(other.event(1, fields! { "energy" => -1.0 }));
        drop(other);
        drop(c);
        every &= matches!(smd.done(), Err(Error::Forked { .. }));
        every
    });
    assert_eq!(code, Some(0), "the child: 0 = every call refused with Forked and every drop returned");
    for i in 100..200u64 {
        c.event(2 * i, fields! { "energy" => i as f64 }).unwrap();
    }
    drop(c);
    smd.done().unwrap();
    let r = Run::open(&run).unwrap();
    let energy = r.field("energy").unwrap().read_all::<f64>().unwrap();
    assert_eq!(energy, (0..200).map(|i| i as f64).collect::<Vec<_>>(), "the parent's events, none of the child's");
}

#[test]
fn the_forked_error_names_both_processes_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let smd = SmallData::builder(dir.path().join("run")).servers(1).build().unwrap();
    let parent = std::process::id();
    let mut c = smd.client();
    // The message is checked in the child: it exits 0 only if it names both processes.
    let code = in_child(Duration::from_secs(30), || {
        let Err(e) = c.event(1, fields! { "energy" => 1.0 }) else { return false };
        let msg = e.to_string();
        msg.contains(&parent.to_string())
            && msg.contains(&std::process::id().to_string())
            && msg.contains("start a writer in each process")
    });
    assert_eq!(code, Some(0));
    c.event(1, fields! { "energy" => 1.0 }).unwrap();
    drop(c);
    smd.done().unwrap();
}

#[test]
fn readers_with_worker_threads_refuse_in_a_forked_child_and_go_on_in_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    smdfs::demo::write_demo(&run_dir, 20_000, 2, 3, false).unwrap();
    let run = Arc::new(Run::open(&run_dir).unwrap());
    let energy: Vec<f64> = run.field("energy").unwrap().read_all().unwrap();

    // A prefetching reader, one block taken: the thread is running and its queue is full.
    let mut pre = Prefetch::new(Arc::clone(&run), "energy", 1000, 2).unwrap();
    assert!(pre.next().unwrap().is_ok());
    // A split-records prefetch, one record taken (its bin is in hand, the next ones are
    // being read).
    let split = dir.path().join("split");
    let mut w = SplitWriter::create(&split, 4).unwrap();
    for i in 0..400u32 {
        w.push(&i.to_le_bytes()).unwrap();
    }
    w.finish().unwrap();
    let loader = SplitLoader::open(&split).unwrap();
    let mut bins = loader.prefetch(Some(7), 2, 1).unwrap();
    assert!(bins.next().unwrap().is_ok());
    // An HDF5 stream (ordered, one block taken) and a request queue, on the run exported.
    let h5 = dir.path().join("run.h5");
    export(&run, &h5, &ExportOptions::default(), &mut |_, _| {}).unwrap();
    let file = H5File::open(&h5).unwrap();
    let opts = StreamOptions { block_rows: 1000, threads: 2, ordered: true, ..Default::default() };
    let mut stream = file.stream("energy", &opts).unwrap();
    assert!(stream.next().unwrap().is_ok());
    let requests = file.requests(2).unwrap();
    let pending = requests.request("energy", 0..10).unwrap();
    std::thread::sleep(Duration::from_millis(50));

    let (p, b, s, q) = (&mut pre, &mut bins, &mut stream, &mut &requests);
    let code = in_child(Duration::from_secs(30), move || {
        let (mut pre, mut bins, mut stream) = (childs_copy(p), childs_copy(b), childs_copy(s));
        let requests = childs_copy(q);
        let mut every = forked(pre.next()) && forked(stream.next());
        // The records of the bin in hand are served from the map; the next bin is refused.
        every &= matches!(bins.find_map(|r| r.err()), Some(Error::Forked { .. }));
        every &= matches!(requests.request("energy", 10..20), Err(Error::Forked { .. }));
        drop((pre, bins, stream));
        every
    });
    assert_eq!(code, Some(0), "the child: 0 = every reader refused with Forked and every drop returned");

    // The parent's readers go on: every block, bin and request is there.
    let rest: Vec<f64> = pre
        .flat_map(|b| {
            b.unwrap().data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(rest, energy[1000..]);
    assert_eq!(bins.collect::<smdfs::Result<Vec<_>>>().unwrap().len(), 399);
    assert_eq!(stream.map(|b| b.unwrap().rows).sum::<u64>(), 19_000);
    assert_eq!(pending.wait().unwrap(), energy[..10].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
}
