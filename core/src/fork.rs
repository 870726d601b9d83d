//! What a process forked without exec inherits from smdfs, and keeps from it. Such a child
//! (Python's `multiprocessing` with the `fork` start method, `os.fork()`, a PyTorch
//! `DataLoader` worker) gets a copy of the parent's memory but none of its threads, and shares
//! its open file descriptions. One handler, run in every child by `fork` itself, makes that
//! safe:
//! - it bumps this process's fork **generation**. An object that owns threads — a writer
//!   (its servers), a prefetching or streaming reader (its workers) — records the generation
//!   it was made in ([`Origin`], [`Threads`]) and refuses every call from a later one with
//!   [`Error::Forked`]: its threads are not in the child, so waiting on them would wait
//!   forever, and a lock they held at the fork would never be released. Dropping such an
//!   object in the child lets its (absent) threads go without a wait;
//! - it points every **writer lock** descriptor ([`hold_lock`]) at `/dev/null`, so the lock's
//!   open file description stays the writer's alone: a child that outlives a finished or
//!   killed writer does not keep its run *writing*.
//!
//! The handler uses atomics only (a child must not wait on a lock another thread held at
//! the fork) and async-signal-safe calls.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::SeqCst};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

/// Bumped in every forked child.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Descriptors of the writer locks this process holds (-1: a free slot).
static LOCKS: [AtomicI32; 64] = [const { AtomicI32::new(-1) }; 64];
/// Whether the handler is registered. A flag, not a `Once`: a child forked while another
/// thread ran a `Once` would find it running forever. (A fork racing the very first
/// registration, on another thread, may run without the handler.)
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Runs in the child of every `fork`, before `fork` returns there.
extern "C" fn in_child() {
    GENERATION.fetch_add(1, SeqCst);
    for slot in &LOCKS {
        let fd = slot.swap(-1, SeqCst);
        if fd < 0 {
            continue;
        }
        // SAFETY: open, dup3 and close are async-signal-safe; `fd` was open in the parent at
        // the fork (a lock leaves its slot before its file closes), so it is open here.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if null >= 0 {
                libc::dup3(null, fd, libc::O_CLOEXEC);
                libc::close(null);
            }
        }
    }
}

/// Registers the child handler with `pthread_atfork` (once per process).
fn install() {
    if !INSTALLED.swap(true, SeqCst) {
        // SAFETY: registers a child-only handler; it lives as long as the process (this code
        // is never unloaded: CPython does not unload extension modules).
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    }
}

/// Where an object that owns threads was made: the process, and its fork generation then.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    what: &'static str,
    pid: u32,
    generation: u64,
}

impl Origin {
    /// A `what` (named in the error: "writer", "prefetching reader", …) made in this process now.
    pub fn here(what: &'static str) -> Origin {
        install();
        Origin { what, pid: std::process::id(), generation: GENERATION.load(SeqCst) }
    }

    /// True in a process forked from the origin since.
    #[inline]
    pub fn forked(&self) -> bool {
        GENERATION.load(std::sync::atomic::Ordering::Relaxed) != self.generation
    }

    /// [`Error::Forked`] in a process forked from the origin since.
    #[inline]
    pub fn check(&self) -> Result<()> {
        if self.forked() {
            return Err(self.error());
        }
        Ok(())
    }

    /// The [`Error::Forked`] a call in a forked child gets.
    pub fn error(&self) -> Error {
        Error::Forked { what: self.what, pid: self.pid, here: std::process::id() }
    }
}

/// The threads an object started, and where: joined when the object is done with them —
/// except in a forked child, where they do not exist and are let go without a wait.
#[derive(Debug)]
pub struct Threads {
    origin: Origin,
    handles: Vec<JoinHandle<()>>,
}

impl Threads {
    /// No threads yet, for a `what` made in this process now.
    pub fn new(what: &'static str) -> Threads {
        Threads { origin: Origin::here(what), handles: Vec::new() }
    }

    /// Adds a started thread.
    pub fn push(&mut self, h: JoinHandle<()>) {
        self.handles.push(h);
    }

    /// How many threads were started.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// True before any thread was started.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Where they were started.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// [`Error::Forked`] in a process forked since they started.
    #[inline]
    pub fn check(&self) -> Result<()> {
        self.origin.check()
    }

    /// Waits for every thread to end (the caller told them to stop); in a forked child
    /// forgets them instead.
    pub fn join_all(&mut self) {
        if self.origin.forked() {
            std::mem::forget(std::mem::take(&mut self.handles));
            return;
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Registers the descriptor of a writer lock this process took, so forked children let go
/// of it; returns its slot (`None` when all are taken: a child then shares the lock).
pub(crate) fn hold_lock(fd: i32) -> Option<usize> {
    install();
    LOCKS.iter().position(|slot| slot.compare_exchange(-1, fd, SeqCst, SeqCst).is_ok())
}

/// Unregisters a lock's descriptor before its file closes (a no-op if a fork handler emptied
/// the slot since, or another lock took it).
pub(crate) fn release_lock(slot: usize, fd: i32) {
    let _ = LOCKS[slot].compare_exchange(fd, -1, SeqCst, SeqCst);
}
