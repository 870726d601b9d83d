//! A running mount: [`Mounted`] owns the FUSE session, the refresh thread and the counters
//! writer; it unmounts (or waits for an unmount) only while the mount at its path is still
//! this one (see `owner`), and [`Unmounter`] does the same from another thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{owner, point};
use crate::error::ViewError;
use crate::live::{Live, Watcher};
use crate::stats::{StatsSnapshot, StatsWriter};

/// A live mount served by background threads. Dropping it unmounts (when nothing uses it),
/// but only while the mount at its path is still this one (see `owner`).
pub struct Mounted {
    /// fuser's session; its own drop unmounts by path, so it is dropped only while the
    /// mount is still ours and otherwise leaked (its `/dev/fuse` descriptor with it).
    pub(super) session: Option<std::mem::ManuallyDrop<fuser::BackgroundSession>>,
    pub(super) mountpoint: PathBuf,
    /// The kernel's id of this mount (`owner::mount_id`), taken once it answered.
    pub(super) id: Option<u64>,
    pub(super) live: Arc<Live>,
    /// Follows a run still being written; `None` once nothing can change.
    pub(super) watcher: Option<Watcher>,
    /// Keeps `MountOptions::stats_file` current.
    pub(super) stats_writer: Option<StatsWriter>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if owner::still_ours(&self.mountpoint, self.id) {
                drop(std::mem::ManuallyDrop::into_inner(s));
            }
        }
    }
}

impl Mounted {
    /// The mount point (absolute).
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The view being served.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// The kernel's id of this mount (a unique mount id on Linux ≥ 6.8), if it could be read.
    pub fn id(&self) -> Option<u64> {
        self.id
    }

    /// The mount's request and refresh counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.live.stats().snapshot()
    }

    /// Blocks until the file system is unmounted (by [`unmount`], `umount` or `fusermount3 -u`).
    /// The session's end never unmounts a newer mount at the same path: fuser's by-path
    /// unmount runs only if the mount there is still this one.
    pub fn join(mut self) -> Result<(), ViewError> {
        let what = format!("serving {}", self.mountpoint.display());
        let s = self.session.take().expect("a Mounted holds its session until join or unmount");
        // SAFETY: the guard is moved out exactly once and `s` (ManuallyDrop) is then either
        // leaked or has its guard forgotten below, so it is never dropped twice.
        let guard = unsafe { std::ptr::read(&s.guard) };
        let served = guard
            .join()
            .map_err(|_| std::io::Error::other("the FUSE session thread panicked"))
            .and_then(|r| r)
            .map_err(|source| ViewError::Io { what, source });
        drop(self.watcher.take());
        drop(self.stats_writer.take());
        // The session thread has ended: the mount is gone, or (the thread failed) dead. Only a
        // dead mount that is still ours is detached; fuser's state is leaked, never dropped
        // (its drop would unmount by path, and the guard was moved out of it).
        if owner::still_ours(&self.mountpoint, self.id) {
            let _ = point::detach(&self.mountpoint);
        }
        served
    }

    /// Unmounts (fails with EBUSY while a process uses the mount) and waits for the threads;
    /// a mount at the path that is no longer this one is left alone.
    pub fn unmount(mut self) -> Result<(), ViewError> {
        let what = format!("unmounting {}", self.mountpoint.display());
        drop(self.watcher.take());
        drop(self.stats_writer.take());
        if !owner::still_ours(&self.mountpoint, self.id) {
            return self.join();
        }
        let s = self.session.take().expect("a Mounted holds its session until join or unmount");
        std::mem::ManuallyDrop::into_inner(s).umount_and_join().map_err(|source| ViewError::Io { what, source })
    }

    /// Unmounts this mount from another thread (a signal handler's), only while the mount at
    /// its path is still this one: a stop signal never takes down a newer mount.
    pub fn unmounter(&self) -> Unmounter {
        Unmounter { mountpoint: self.mountpoint.clone(), id: self.id }
    }
}

/// Unmounts one [`Mounted`] by path, checking first that it is still the one mounted there.
#[derive(Clone, Debug)]
pub struct Unmounter {
    mountpoint: PathBuf,
    id: Option<u64>,
}

impl Unmounter {
    /// Unmounts cleanly, or (busy) lazily; does nothing if the mount there is not ours.
    pub fn unmount(&self) -> Result<(), ViewError> {
        if !owner::still_ours(&self.mountpoint, self.id) {
            return Ok(());
        }
        point::unmount(&self.mountpoint).or_else(|_| point::detach(&self.mountpoint))
    }
}
