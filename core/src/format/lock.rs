//! The writer lock (`writer.lock`): a run is *writing* while a process holds an exclusive
//! open-file-description (`F_OFD_SETLK`) write lock on it. OFD locks belong to the open file
//! (not the process), vanish when the writer dies, and are tested by readers with
//! `F_OFD_GETLK` without being taken, so a reader's probe never blocks a starting writer.
//!
//! A child forked without exec does not share the lock: see [`crate::fork`].

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Name of the writer lock file.
pub const LOCK_FILE: &str = "writer.lock";

/// The exclusive writer lock; released when dropped or when the process dies, and never
/// inherited by a forked child.
#[derive(Debug)]
pub struct WriterLock {
    /// The locked file (held open: closing it releases the lock).
    file: File,
    path: PathBuf,
    /// This lock's slot with the fork handler (`crate::fork`; `None`: all slots were taken,
    /// a child forked while it is held then shares it).
    slot: Option<usize>,
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        // Before the file closes: a child forked from now on must not touch its number. Only
        // if the slot is still ours: in a forked child the handler emptied it, and another
        // lock the child took since may hold it.
        if let Some(k) = self.slot {
            crate::fork::release_lock(k, self.file.as_raw_fd());
        }
    }
}

impl WriterLock {
    /// Takes the lock, failing if another live process holds it.
    pub fn acquire(dir: &Path) -> Result<WriterLock> {
        let path = dir.join(LOCK_FILE);
        let mut f = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).at(&path)?;
        if ofd_lock(&f, libc::F_OFD_SETLK, libc::F_WRLCK as libc::c_short).is_err() {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            return Err(Error::Locked { path: dir.to_path_buf(), holder: holder.trim().to_string() });
        }
        let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        f.set_len(0).at(&path)?;
        writeln!(f, "pid {} host {}", std::process::id(), host.trim()).at(&path)?;
        let slot = crate::fork::hold_lock(f.as_raw_fd());
        Ok(WriterLock { file: f, path, slot })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Issues an open-file-description lock command over the whole file. OFD locks belong to
/// the open file (not the process), vanish when the writer dies, and can be *tested*
/// (`F_OFD_GETLK`) without being taken, so a reader's probe never blocks a writer.
fn ofd_lock(f: &File, cmd: libc::c_int, kind: libc::c_short) -> std::io::Result<libc::flock> {
    // SAFETY: a zeroed `flock` is a valid value; we set the fields fcntl reads.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: fcntl with a valid descriptor and a pointer to a live `flock`.
    if unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut l) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(l)
}

/// True if a live process (on this host) holds the run's writer lock.
pub fn writer_alive(dir: &Path) -> bool {
    // Never blocks: a FIFO or device in the lock's place is no writer.
    let Ok(f) = crate::format::file::open_regular(&dir.join(LOCK_FILE)) else { return false };
    match ofd_lock(&f, libc::F_OFD_GETLK, libc::F_RDLCK as libc::c_short) {
        Ok(l) => l.l_type != libc::F_UNLCK as libc::c_short,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child forked while the lock is held (and still alive) does not keep the run
    /// writing once the writer lets go: the next writer gets the lock.
    #[test]
    fn a_forked_child_does_not_hold_the_writer_lock() {
        let dir = tempfile::tempdir().unwrap();
        let lock = WriterLock::acquire(dir.path()).unwrap();
        assert!(writer_alive(dir.path()));
        let mut ready = [0i32; 2];
        // SAFETY: a pipe into a live array of two descriptors.
        assert_eq!(unsafe { libc::pipe(ready.as_mut_ptr()) }, 0);
        // SAFETY: the child only writes, sleeps and exits (async-signal-safe calls).
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
        if child == 0 {
            // SAFETY: as above. The fork handlers ran before `fork` returned here: say so.
            unsafe {
                libc::write(ready[1], b"x".as_ptr().cast(), 1);
                libc::sleep(30);
                libc::_exit(0);
            }
        }
        let mut byte = 0u8;
        // SAFETY: reads one byte into a live variable; closes our pipe ends once.
        unsafe {
            libc::read(ready[0], (&mut byte as *mut u8).cast(), 1);
            libc::close(ready[0]);
            libc::close(ready[1]);
        }
        let still_held = writer_alive(dir.path());
        drop(lock);
        let after = (writer_alive(dir.path()), WriterLock::acquire(dir.path()).map(|_| ()));
        // SAFETY: our child; reaped below.
        unsafe { libc::kill(child, libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert!(still_held, "the parent still holds the lock while it lives");
        assert!(!after.0, "the forked child kept the run writing");
        assert!(after.1.is_ok(), "the next writer was refused: {:?}", after.1);
    }
}
