//! The few file operations a shard writer does — create a file, positioned write,
//! fdatasync/fsync, fsync of the shard directory — behind one small type, [`ShardFile`], with
//! an optional fault-injection hook ([`Faults`]) for crash tests.
//!
//! Production runs carry no hook: each operation is the plain syscall plus one branch on a
//! `None`. A test gives the writer a `Faults` (through the builder's hidden
//! `fault_injection`) that can fail the N-th write with an error, or emulate a power loss at
//! the N-th sync: that sync and every operation after it fail, and
//! [`Faults::power_loss_image`] rebuilds the run directory as a disk would hold it after the
//! power came back — per file only the bytes a completed fdatasync covered, and only files
//! whose directory entry a completed directory fsync covered.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{IoContext, Result};
use crate::sync::lock;

/// One file of a shard (a column or the log).
pub(crate) struct ShardFile {
    file: File,
    path: PathBuf,
    faults: Option<Arc<Faults>>,
}

impl ShardFile {
    /// Creates (truncates) a file for reading and writing.
    pub(crate) fn create(path: &Path, faults: Option<&Arc<Faults>>) -> Result<ShardFile> {
        if let Some(f) = faults {
            f.on_create(path).at(path)?;
        }
        let file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(path).at(path)?;
        Ok(ShardFile { file, path: path.into(), faults: faults.cloned() })
    }

    /// Writes all of `buf` at `offset`.
    #[inline]
    pub(crate) fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        if let Some(f) = &self.faults {
            f.on_write(&self.path).at(&self.path)?;
        }
        self.file.write_all_at(buf, offset).at(&self.path)
    }

    /// Starts writing back `len` bytes at `offset` without waiting (a hint: the fdatasync
    /// that follows finds less to do). Errors are left to that fdatasync.
    pub(crate) fn start_writeback(&self, offset: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else { return };
        // SAFETY: a plain syscall on an open descriptor; no memory is passed.
        unsafe {
            libc::sync_file_range(self.file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE);
        }
    }

    /// fdatasync.
    pub(crate) fn sync_data(&self) -> Result<()> {
        if let Some(f) = &self.faults {
            f.on_sync(Some(&self.path)).at(&self.path)?;
        }
        self.file.sync_data().at(&self.path)
    }

    /// fsync (data and metadata).
    pub(crate) fn sync_all(&self) -> Result<()> {
        if let Some(f) = &self.faults {
            f.on_sync(Some(&self.path)).at(&self.path)?;
        }
        self.file.sync_all().at(&self.path)
    }
}

/// fsyncs directory `dir` (new entries in it become durable).
pub(crate) fn sync_dir(dir: &Path, faults: Option<&Arc<Faults>>) -> Result<()> {
    if let Some(f) = faults {
        f.on_sync_dir(dir).at(dir)?;
    }
    crate::format::manifest::sync_dir(dir)
}

/// A fault plan and what the writer did under it (see the module docs). Share one between a
/// test and the run with `Arc`.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    fail_write: Option<u64>,
    power_loss_at_sync: Option<u64>,
    writes: u64,
    syncs: u64,
    powered_off: bool,
    created: BTreeSet<PathBuf>,
    /// Per file: its contents at its last completed sync.
    durable: BTreeMap<PathBuf, Vec<u8>>,
    /// Files whose directory entry a completed directory sync covered.
    linked: BTreeSet<PathBuf>,
}

impl Faults {
    /// No faults: counts the writes and syncs of a run (to know which N to try).
    pub fn count() -> Arc<Faults> {
        Arc::new(Faults::default())
    }

    /// The `n`-th write (1-based, over the whole run) fails with an error.
    pub fn fail_write(n: u64) -> Arc<Faults> {
        let f = Faults::default();
        lock(&f.state).fail_write = Some(n);
        Arc::new(f)
    }

    /// The power goes off at the `n`-th sync (file or directory, 1-based): it and every
    /// operation after it fail.
    pub fn power_loss_at_sync(n: u64) -> Arc<Faults> {
        let f = Faults::default();
        lock(&f.state).power_loss_at_sync = Some(n);
        Arc::new(f)
    }

    /// Writes attempted so far.
    pub fn writes(&self) -> u64 {
        lock(&self.state).writes
    }

    /// Syncs attempted so far.
    pub fn syncs(&self) -> u64 {
        lock(&self.state).syncs
    }

    /// True once the emulated power loss happened.
    pub fn powered_off(&self) -> bool {
        lock(&self.state).powered_off
    }

    /// Copies run directory `run` to `to` as the disk would hold it after the power loss:
    /// files the writer made hold only what a completed sync covered (files whose entry no
    /// directory sync covered are gone); files made outside this layer (manifest, lock,
    /// index) are copied as they are.
    pub fn power_loss_image(&self, run: &Path, to: &Path) -> io::Result<()> {
        let st = lock(&self.state);
        copy_tree(run, to, &|src: &Path| {
            if !st.created.contains(src) {
                return Some(None);
            }
            if !st.linked.contains(src) {
                return None;
            }
            Some(Some(st.durable.get(src).cloned().unwrap_or_default()))
        })
    }

    fn dead() -> io::Error {
        io::Error::other("power lost (fault injection)")
    }

    fn on_create(&self, path: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        if st.powered_off {
            return Err(Faults::dead());
        }
        st.created.insert(path.into());
        st.durable.remove(path);
        Ok(())
    }

    fn on_write(&self, _path: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        if st.powered_off {
            return Err(Faults::dead());
        }
        st.writes += 1;
        if st.fail_write == Some(st.writes) {
            return Err(io::Error::other(format!("injected failure of write #{}", st.writes)));
        }
        Ok(())
    }

    /// Before a sync: counts it, cuts the power at the planned one, and otherwise records the
    /// file's contents as durable (the real sync follows; a sync that fails for real makes
    /// the writer stop anyway).
    fn on_sync(&self, path: Option<&Path>) -> io::Result<()> {
        let mut st = lock(&self.state);
        if st.powered_off {
            return Err(Faults::dead());
        }
        st.syncs += 1;
        if st.power_loss_at_sync == Some(st.syncs) {
            st.powered_off = true;
            return Err(Faults::dead());
        }
        if let Some(p) = path {
            let bytes = std::fs::read(p)?;
            st.durable.insert(p.into(), bytes);
        }
        Ok(())
    }

    fn on_sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.on_sync(None)?;
        let mut st = lock(&self.state);
        let now: Vec<PathBuf> = st.created.iter().filter(|p| p.parent() == Some(dir)).cloned().collect();
        st.linked.extend(now);
        Ok(())
    }
}

/// Copies `from` to `to` recursively; `pick(file)` says: `Some(None)` copy as is,
/// `Some(Some(bytes))` write these bytes instead, `None` leave the file out.
fn copy_tree(from: &Path, to: &Path, pick: &dyn Fn(&Path) -> Option<Option<Vec<u8>>>) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_tree(&src, &dst, pick)?;
            continue;
        }
        match pick(&src) {
            Some(None) => {
                std::fs::copy(&src, &dst)?;
            }
            Some(Some(bytes)) => std::fs::write(&dst, bytes)?,
            None => {}
        }
    }
    Ok(())
}
