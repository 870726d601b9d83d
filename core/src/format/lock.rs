//! The writer lock (`writer.lock`): a run is *writing* while a process holds an exclusive
//! open-file-description (`F_OFD_SETLK`) write lock on it. OFD locks belong to the open file
//! (not the process), vanish when the writer dies, and are tested by readers with
//! `F_OFD_GETLK` without being taken, so a reader's probe never blocks a starting writer.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Name of the writer lock file.
pub const LOCK_FILE: &str = "writer.lock";

/// The exclusive writer lock; released when dropped or when the process dies.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
    path: PathBuf,
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
        Ok(WriterLock { _file: f, path })
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
