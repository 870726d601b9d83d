//! What a process forked without exec inherits from a writer, and keeps from it. Such a
//! child (Python's `multiprocessing` with the `fork` start method, `os.fork()`) gets a copy
//! of the writer's memory but none of its threads, and shares its open file descriptions.
//! One handler, run in every child by `fork` itself ([`install`]), makes that safe:
//! - it bumps this process's fork **generation**: a writer records the generation it was
//!   made in ([`Origin`]) and refuses every call from a later one with [`Error::Forked`] —
//!   its server threads are not in the child, so a batch handed to them would wait forever;
//! - it points every **writer lock** descriptor ([`hold_lock`]) at `/dev/null`, so the lock's
//!   open file description stays the writer's alone: a child that outlives a finished or
//!   killed writer does not keep its run *writing*.
//!
//! The handler uses atomics only (a child must not wait on a lock another thread held at
//! the fork) and async-signal-safe calls.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering::SeqCst};
use std::sync::Once;

use crate::error::{Error, Result};

/// Bumped in every forked child.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Descriptors of the writer locks this process holds (-1: a free slot).
static LOCKS: [AtomicI32; 64] = [const { AtomicI32::new(-1) }; 64];
static INSTALL: Once = Once::new();

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
    INSTALL.call_once(|| {
        // SAFETY: registers a child-only handler; it lives as long as the process (this code
        // is never unloaded: CPython does not unload extension modules).
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

/// Where a writer was made: the process, and its fork generation then.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Origin {
    pid: u32,
    generation: u64,
}

impl Origin {
    /// This process, now.
    pub(crate) fn here() -> Origin {
        install();
        Origin { pid: std::process::id(), generation: GENERATION.load(SeqCst) }
    }

    /// True in a process forked from the origin since.
    pub(crate) fn forked(&self) -> bool {
        GENERATION.load(std::sync::atomic::Ordering::Relaxed) != self.generation
    }

    /// [`Error::Forked`] in a process forked from the origin since.
    #[inline]
    pub(crate) fn check(&self) -> Result<()> {
        if self.forked() {
            return Err(Error::Forked { pid: self.pid, here: std::process::id() });
        }
        Ok(())
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
