//! A writer in a process forked from its own without exec (Python's `multiprocessing` with
//! the `fork` start method): the child has a copy of the writer's memory but not its server
//! threads. Every writer call in the child must fail with `Error::Forked` at once, dropping
//! the child's copies must return, and the parent's run must go on unharmed — never a hang.

use std::time::{Duration, Instant};

use smdfs::{fields, Error, Run, SmallData};

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

#[test]
fn every_writer_call_in_a_forked_child_fails_at_once_and_the_parent_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // Small batches and one in flight: a child handing batches to servers that are not
    // there would block on the first full queue.
    let smd = SmallData::builder(&run).servers(2).batch_events(8).max_batches_in_flight(1).build().unwrap();
    let mut c = smd.client();
    for i in 0..100u64 {
        c.event(2 * i, fields! { "energy" => i as f64 }).unwrap();
    }
    let (c_here, smd_here) = (&mut c, &smd);
    let code = in_child(Duration::from_secs(30), move || {
        // SAFETY: the child's own copies of the parent's writer and client (fork copied the
        // memory); the child ends with `_exit` and never touches the originals again.
        let (mut c, smd) = unsafe { (std::ptr::read(c_here), std::ptr::read(smd_here)) };
        let forked = |r: smdfs::Result<()>| matches!(r, Err(Error::Forked { .. }));
        let mut every = true;
        for i in 0..10_000u64 {
            every &= forked(c.event(2 * i + 1, fields! { "energy" => -1.0 }));
        }
        every &= forked(c.flush());
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
