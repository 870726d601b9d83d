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
//! interleaved stretches when its clients' batches interleave). A reply's bytes are summed
//! per block first, so a reply of small interleaved rows costs one table update per block,
//! not per row. Bytes read twice count twice (the block may go a little early: a page is
//! then read again, never wrong). Blocks
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

/// Calls `piece(block, bytes)` for each block that bytes `read` of a column of `len`
/// committed bytes touch, with how many of them fall in it (bytes past `len` do not count).
fn blocks_of(read: Range<u64>, len: u64, mut piece: impl FnMut(u64, u64)) {
    let mut at = read.start;
    while at < read.end.min(len) {
        let block = at / RELEASE_BLOCK;
        let upto = read.end.min(((block + 1) * RELEASE_BLOCK).min(len));
        piece(block, upto - at);
        at = upto;
    }
}

/// Adds `bytes` taken from `block` of column `key` (of `len` committed bytes) to `taken` and
/// calls `full(block)` if every byte of the block has now been taken.
fn take_block(
    taken: &mut HashMap<(usize, u32, u64), u64>,
    key: (usize, u32),
    block: u64,
    bytes: u64,
    len: u64,
    full: impl FnOnce(u64),
) {
    let size = ((block + 1) * RELEASE_BLOCK).min(len) - block * RELEASE_BLOCK;
    let n = taken.entry((key.0, key.1, block)).or_insert(0);
    *n += bytes;
    if *n >= size {
        taken.remove(&(key.0, key.1, block));
        full(block);
    }
}

/// The bytes one reply took, summed per (shard, column, block) before they reach the shared
/// table: a reply of event-id ordered small rows names a new stretch of a shard column every
/// row or few rows, and one table update per stretch cost more than the copy itself.
#[derive(Clone, Debug, Default)]
struct Taken {
    /// (shard, column, block, column length, bytes); a reply touches few blocks.
    blocks: Vec<(usize, u32, u64, u64, u64)>,
}

impl Taken {
    fn add(&mut self, shard: usize, col: u32, read: Range<u64>, len: u64) {
        blocks_of(read, len, |block, bytes| {
            let hit = self.blocks.iter_mut().rev().find(|b| b.0 == shard && b.1 == col && b.2 == block);
            match hit {
                Some(b) => b.4 += bytes,
                None => self.blocks.push((shard, col, block, len, bytes)),
            }
        });
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
        let mut reply = Taken::default();
        view.shard_ranges(vino, offset, n, |s, col, read| {
            let len = shards.get(s).and_then(|sh| sh.lens.get(col as usize)).copied().unwrap_or(0);
            reply.add(s, col, read, len);
        });
        let mut jobs = Vec::new();
        {
            let mut taken = smdfs::sync::lock(&self.taken);
            if taken.len() >= MAX_BLOCKS {
                taken.clear();
            }
            for (s, col, block, len, bytes) in reply.blocks {
                take_block(&mut taken, (s, col), block, bytes, len, |block| {
                    let start = block * RELEASE_BLOCK;
                    jobs.push((Arc::clone(view), s, col, start..(start + RELEASE_BLOCK).min(len)));
                });
            }
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

    /// Adds the bytes `read` of a column of `len` committed bytes to `taken` (per block) and
    /// calls `full(block)` for each block all of whose bytes have now been taken.
    fn take(
        taken: &mut HashMap<(usize, u32, u64), u64>,
        key: (usize, u32),
        read: Range<u64>,
        len: u64,
        mut full: impl FnMut(u64),
    ) {
        blocks_of(read, len, |block, bytes| take_block(taken, key, block, bytes, len, &mut full));
    }

    #[test]
    fn a_reply_of_interleaved_small_rows_sums_to_one_entry_per_block() {
        // Event-id order of two shards alternating row by row: 64-byte stretches, each
        // shard's column read from 100 bytes before the end of block 0 to 28 bytes into block 1.
        let len = 2 * B;
        let mut reply = Taken::default();
        let mut at = B - 100;
        while at < B + 28 {
            reply.add(0, 3, at..at + 64, len);
            reply.add(1, 3, at..at + 64, len);
            at += 64;
        }
        let mut blocks = reply.blocks.clone();
        blocks.sort();
        assert_eq!(blocks, [(0, 3, 0, len, 100), (0, 3, 1, len, 28), (1, 3, 0, len, 100), (1, 3, 1, len, 28)]);
        // Applied to the table, they fill what the same stretches one by one fill.
        let (mut summed, mut one_by_one) = (HashMap::new(), HashMap::new());
        let (mut full_a, mut full_b) = (Vec::new(), Vec::new());
        take(&mut summed, (0, 3), 0..B - 100, len, |b| full_a.push(b));
        take(&mut one_by_one, (0, 3), 0..B - 100, len, |b| full_b.push(b));
        for (s, col, block, len, bytes) in reply.blocks {
            take_block(&mut summed, (s, col), block, bytes, len, |b| full_a.push(b));
        }
        let mut at = B - 100;
        while at < B + 28 {
            take(&mut one_by_one, (0, 3), at..at + 64, len, |b| full_b.push(b));
            take(&mut one_by_one, (1, 3), at..at + 64, len, |b| full_b.push(b));
            at += 64;
        }
        assert_eq!((full_a, summed), (full_b, one_by_one));
    }

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
