//! Drop-behind: the page cache behind the shards while the mount serves reads. Every byte a
//! read request returns lands in the kernel's page cache of the view file (files open with
//! `FOPEN_KEEP_CACHE`), so the shard pages the daemon copied it from are a second copy of
//! the same bytes. After a reply, the shard pages it came from are dropped
//! (`Shard::release`: clean pages only this process maps; a page another process maps, or
//! the writer has not yet written back, stays), as [`DropBehind`] says. `Auto` does so for
//! runs whose committed bytes exceed a quarter of the machine's memory — there the two
//! copies would take more than half of it and push each other out — and keeps the shard
//! pages of smaller runs (a re-mount, or run.h5 and an `.npy` of the same dataset, then
//! read them from memory).
//!
//! Pages are dropped in whole aligned blocks (`RELEASE_BLOCK`, the largest page-cache
//! folio: a folio only partly inside a range is not dropped, and splitting it would cost
//! more than the copy). A sequential reader — told apart by inode; a request within `SLACK`
//! of where the last one ended continues its stream — drops each block once it is `LAG`
//! bytes behind the request (requests in flight on other threads may still be copying from
//! just behind it), and the rest of a column when a request reaches its end. A request that
//! continues no stream drops only whole blocks inside what it read. Dropping never changes
//! the bytes a read returns: a dropped page is read again on its next touch.
//!
//! Dropping costs the kernel about as much per page as the copy did (each page leaves the
//! cache under its lock), so one background thread does it, fed through a bounded queue:
//! a request never waits for it, and when the queue is full a block is left cached rather
//! than slowing the reader.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};

use smdfs::shard::reader::RELEASE_BLOCK;

use crate::view::{Ino, View};

/// When the mount drops shard pages it has copied into a reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DropBehind {
    /// When the run's committed bytes exceed a quarter of the machine's memory.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never: shard pages stay in the page cache as long as the kernel keeps them.
    Never,
}

/// How far from the end of the last request a request still continues a stream.
const SLACK: u64 = 16 << 20;
/// How far behind a sequential request (in a shard column's bytes) blocks are dropped.
const LAG: u64 = 8 << 20;
/// Streams remembered before the table is emptied (a stream then starts again).
const MAX_STREAMS: usize = 4096;
/// Blocks waiting for the dropping thread before more are left cached.
const QUEUE: usize = 256;

/// Bytes of a shard column (by position in `Run::shards`) to drop, and the snapshot whose
/// maps they are in.
type Job = (Arc<View>, usize, u32, Range<u64>);

/// The mount's drop-behind policy and its sequential readers.
#[derive(Debug)]
pub(super) struct ShardCache {
    drop_behind: DropBehind,
    /// Committed bytes above which `DropBehind::Auto` drops (a quarter of the memory).
    auto_above: u64,
    /// Per mount inode: the furthest end of a request of its sequential stream.
    streams: Mutex<HashMap<u64, u64>>,
    /// The dropping thread's queue (`None`: it could not start; nothing is dropped). The
    /// thread ends when this sender is dropped with the mount's file system.
    queue: Option<Mutex<SyncSender<Job>>>,
}

/// The machine's memory in bytes, from `/proc/meminfo` (`None` where unreadable).
fn mem_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The column bytes to drop after a request read `read` of a column of `len` committed
/// bytes: whole blocks only; a sequential request's blocks `LAG` behind it.
fn to_drop(read: Range<u64>, len: u64, sequential: bool) -> Range<u64> {
    let down = |x: u64| x / RELEASE_BLOCK * RELEASE_BLOCK;
    let (start, end) = if sequential {
        (down(read.start.saturating_sub(LAG)), down(read.end.saturating_sub(LAG)))
    } else {
        (read.start.div_ceil(RELEASE_BLOCK) * RELEASE_BLOCK, down(read.end))
    };
    // The column's last block is whole once the request reaches the column's end.
    let end = if read.end >= len { len } else { end };
    start..end.max(start)
}

impl ShardCache {
    pub(super) fn new(drop_behind: DropBehind) -> ShardCache {
        let queue = (drop_behind != DropBehind::Never).then(|| {
            let (tx, rx) = sync_channel::<Job>(QUEUE);
            std::thread::Builder::new()
                .name("smdfs-drop".into())
                .spawn(move || {
                    for (view, shard, col, r) in rx {
                        if let Some(s) = view.run().shards().get(shard) {
                            s.release(col, r);
                        }
                    }
                })
                .ok()
                .map(|_| Mutex::new(tx))
        });
        ShardCache {
            drop_behind,
            auto_above: mem_total().map_or(u64::MAX, |m| m / 4),
            streams: Mutex::new(HashMap::new()),
            queue: queue.flatten(),
        }
    }

    /// Whether pages behind replies from `view` are dropped.
    fn drops(&self, view: &View) -> bool {
        match self.drop_behind {
            DropBehind::Always => true,
            DropBehind::Never => false,
            DropBehind::Auto => {
                let bytes: u64 = view.run().shards().iter().map(|s| s.lens.iter().sum::<u64>()).sum();
                bytes > self.auto_above
            }
        }
    }

    /// Whether a request for `offset..end` of mount inode `ino` continues its sequential
    /// stream (a request that does not starts a new one).
    fn continues(&self, ino: u64, offset: u64, end: u64) -> bool {
        let mut streams = smdfs::sync::lock(&self.streams);
        if streams.len() >= MAX_STREAMS && !streams.contains_key(&ino) {
            streams.clear();
        }
        let next = streams.entry(ino).or_insert(0);
        let sequential = offset <= next.saturating_add(SLACK) && end.saturating_add(SLACK) >= *next;
        *next = if sequential { (*next).max(end) } else { end };
        sequential
    }

    /// Called once `n` bytes at `offset` of mount inode `ino` (view file `vino`) were
    /// replied, so they are in the view file's page cache: drops the shard pages they came
    /// from, when the policy says so.
    pub(super) fn after_read(&self, view: &Arc<View>, ino: u64, vino: Ino, offset: u64, n: u64) {
        let Some(queue) = &self.queue else { return };
        if n == 0 || !self.drops(view) {
            return;
        }
        let sequential = self.continues(ino, offset, offset + n);
        let shards = view.run().shards();
        let mut jobs = Vec::new();
        view.shard_ranges(vino, offset, n, |s, col, read| {
            let len = shards.get(s).and_then(|sh| sh.lens.get(col as usize)).copied().unwrap_or(0);
            let r = to_drop(read, len, sequential);
            if r.start < r.end {
                jobs.push((Arc::clone(view), s, col, r));
            }
        });
        if jobs.is_empty() {
            return;
        }
        let queue = smdfs::sync::lock(queue);
        for job in jobs {
            // A full queue: the block stays cached rather than the reader waiting.
            let _ = queue.try_send(job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: u64 = RELEASE_BLOCK;

    #[test]
    fn only_whole_blocks_are_dropped_and_a_stream_drops_them_lag_behind() {
        // A random request inside one block drops nothing; one spanning blocks drops those inside.
        assert!(to_drop(B + 5..B + 1000, 100 * B, false).is_empty());
        assert_eq!(to_drop(B / 2..3 * B + 1, 100 * B, false), B..3 * B);
        // A sequential request drops the blocks that end LAG before it.
        assert!(to_drop(0..B, 100 * B, true).is_empty());
        assert_eq!(to_drop(LAG + B - 10..LAG + B + 10, 100 * B, true), 0..B);
        assert_eq!(to_drop(LAG + 2 * B..LAG + 3 * B, 100 * B, true), 2 * B..3 * B);
        // Reaching the column's end drops its tail too.
        assert_eq!(to_drop(10 * B..10 * B + 7, 10 * B + 7, true), (10 * B - LAG)..10 * B + 7);
        assert_eq!(to_drop(10 * B - 5..10 * B + 7, 10 * B + 7, false), 10 * B..10 * B + 7);
    }
}
