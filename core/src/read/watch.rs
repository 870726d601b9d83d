//! Change detection for runs that are still being written: a [`RunSignature`] changes
//! whenever the run's committed content or state does, and is cheap to take (a few `stat`s:
//! the manifest's identity, each shard log's size and mtime — every commit and close appends
//! to one — and whether a writer holds the run). Live views compare signatures to decide when
//! to open a new snapshot; nothing here reads data.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::format::lock::writer_alive;
use crate::format::manifest::MANIFEST_FILE;
use crate::format::{shard_dir_name, LOG_FILE};

/// What changes whenever a run's committed content or state does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSignature {
    /// Inode, size and mtime of `manifest.json` (replaced atomically, so a new inode).
    manifest: Option<(u64, u64, i64, i64)>,
    /// Size and mtime of each shard's commit log.
    logs: Vec<Option<(u64, i64, i64)>>,
    /// Whether a live writer holds the run (a writer that dies turns it `crashed`).
    writer: bool,
}

impl RunSignature {
    /// Takes the signature of the run in `dir` with `shards` shards. Take it *before*
    /// opening a snapshot: a commit that lands meanwhile changes the next signature, so it
    /// is never missed.
    pub fn read(dir: &Path, shards: usize) -> RunSignature {
        let manifest =
            std::fs::metadata(dir.join(MANIFEST_FILE)).ok().map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()));
        let logs = (0..shards)
            .map(|i| {
                let log = std::fs::metadata(dir.join(shard_dir_name(i)).join(LOG_FILE));
                log.ok().map(|m| (m.len(), m.mtime(), m.mtime_nsec()))
            })
            .collect();
        RunSignature { manifest, logs, writer: writer_alive(dir) }
    }

    /// When the run last changed: the newest of the manifest's and the logs' mtimes (so
    /// tools that compare mtimes, rsync or make, see a snapshot's files change).
    pub fn mtime(&self) -> Option<SystemTime> {
        let times = self.manifest.iter().map(|m| (m.2, m.3)).chain(self.logs.iter().flatten().map(|l| (l.1, l.2)));
        times
            .filter_map(|(s, ns)| Some(SystemTime::UNIX_EPOCH + Duration::new(u64::try_from(s).ok()?, ns as u32)))
            .max()
    }
}
