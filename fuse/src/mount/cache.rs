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
//! more than the copy), each once every byte of it was copied into a reply: the daemon
//! counts the bytes replies took from each block of each shard column ([`View::shard_ranges`]
//! names them exactly), so a block is not dropped while a reader still needs part of it,
//! whatever order the reads come in (event-id order reads a shard's column in several
//! interleaved stretches when its clients' batches interleave). Bytes read twice count
//! twice (the block may go a little early: a page is then read again, never wrong). Blocks
//! partly read are forgotten beyond `MAX_BLOCKS` (they then stay cached). Dropping never
//! changes the bytes a read returns: a dropped page is read again on its next touch.
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

/// Partly read blocks remembered before the table is emptied.
const MAX_BLOCKS: usize = 1 << 16;
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
    /// Per (shard, column, block): the bytes replies have taken from it so far.
    taken: Mutex<HashMap<(usize, u32, u64), u64>>,
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

/// Adds the bytes `read` of a column of `len` committed bytes to `taken` (per block) and
/// calls `full(block)` for each block all of whose bytes have now been taken.
fn take(
    taken: &mut HashMap<(usize, u32, u64), u64>,
    key: (usize, u32),
    read: Range<u64>,
    len: u64,
    mut full: impl FnMut(u64),
) {
    let mut at = read.start;
    while at < read.end.min(len) {
        let block = at / RELEASE_BLOCK;
        let (bstart, bend) = (block * RELEASE_BLOCK, ((block + 1) * RELEASE_BLOCK).min(len));
        let upto = read.end.min(bend);
        let n = taken.entry((key.0, key.1, block)).or_insert(0);
        *n += upto - at;
        if *n >= bend - bstart {
            taken.remove(&(key.0, key.1, block));
            full(block);
        }
        at = upto;
    }
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
            taken: Mutex::new(HashMap::new()),
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

    /// Called once `n` bytes at `offset` of mount inode `ino` (view file `vino`) were
    /// replied, so they are in the view file's page cache: drops the shard pages they came
    /// from, when the policy says so.
    pub(super) fn after_read(&self, view: &Arc<View>, vino: Ino, offset: u64, n: u64) {
        let Some(queue) = &self.queue else { return };
        if n == 0 || !self.drops(view) {
            return;
        }
        let shards = view.run().shards();
        let mut jobs = Vec::new();
        {
            let mut taken = smdfs::sync::lock(&self.taken);
            if taken.len() >= MAX_BLOCKS {
                taken.clear();
            }
            view.shard_ranges(vino, offset, n, |s, col, read| {
                let len = shards.get(s).and_then(|sh| sh.lens.get(col as usize)).copied().unwrap_or(0);
                take(&mut taken, (s, col), read, len, |block| {
                    let start = block * RELEASE_BLOCK;
                    jobs.push((Arc::clone(view), s, col, start..(start + RELEASE_BLOCK).min(len)));
                });
            });
        }
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
    fn a_block_is_full_once_every_byte_of_it_was_taken_in_any_order() {
        let mut taken = HashMap::new();
        let mut full = Vec::new();
        let len = 3 * B + 100;
        // Two interleaved stretches of one column, read backwards and forwards.
        take(&mut taken, (0, 7), B + B / 2..2 * B, len, |b| full.push(b));
        take(&mut taken, (0, 7), 10..B / 2, len, |b| full.push(b));
        assert!(full.is_empty());
        take(&mut taken, (0, 7), B..B + B / 2, len, |b| full.push(b));
        assert_eq!(full, [1]);
        take(&mut taken, (0, 7), B / 2..B + 5, len, |b| full.push(b));
        assert_eq!(full, [1], "block 0 misses its first 10 bytes");
        take(&mut taken, (0, 7), 0..10, len, |b| full.push(b));
        assert_eq!(full, [1, 0]);
        // Another column's blocks are its own; the column's short last block fills at its end.
        take(&mut taken, (1, 7), 3 * B..3 * B + 100, len, |b| full.push(b));
        assert_eq!(full, [1, 0, 3]);
        // Bytes past the committed length are not counted.
        take(&mut taken, (0, 7), 2 * B..4 * B, len, |b| full.push(b));
        assert_eq!(full, [1, 0, 3, 2, 3]);
        // Block 1 was read again after it was full: those 5 bytes count towards its next drop.
        assert_eq!(taken.into_iter().collect::<Vec<_>>(), [((0, 7, 1), 5)]);
    }
}
