//! Bulk reads: rayon-parallel streaming over a field's rows in blocks, and a prefetching
//! iterator that reads blocks ahead on a background thread with bounded memory.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::reader::{FieldReader, Run};

/// A block of consecutive rows (event-id order).
#[derive(Debug, Default)]
pub struct Block {
    /// First row.
    pub start: u64,
    /// Rows in the block.
    pub rows: u64,
    /// Fixed fields: the rows' bytes. Ragged kinds: the rows' values, concatenated.
    pub data: Vec<u8>,
    /// Ragged kinds: `rows + 1` byte offsets into `data`; empty for fixed fields.
    pub offsets: Vec<u64>,
}

impl<'r> FieldReader<'r> {
    /// Reads rows `start..start + rows` into `block` (reusing its buffers).
    pub fn read_block(&self, start: u64, rows: u64, block: &mut Block) -> Result<()> {
        block.start = start;
        block.rows = rows;
        block.offsets.clear();
        if self.spec().kind.is_ragged() {
            block.data.clear();
            block.offsets.push(0);
            for i in start..start + rows {
                block.data.extend_from_slice(self.ragged_row(i)?);
                block.offsets.push(block.data.len() as u64);
            }
            Ok(())
        } else {
            block.data.resize(rows as usize * self.row_bytes(), 0);
            self.read_rows(start, &mut block.data)
        }
    }

    /// Streams the field in blocks of `block_rows` across rayon's threads, calling `f` with
    /// each block as it is read (unordered). Each thread reuses one buffer.
    pub fn par_for_each_block<F>(&self, block_rows: u64, f: F) -> Result<()>
    where
        F: Fn(&Block) + Sync + Send,
    {
        let block_rows = block_rows.max(1);
        let n = self.rows().div_ceil(block_rows);
        (0..n).into_par_iter().try_for_each_init(Block::default, |b, k| {
            let start = k * block_rows;
            self.read_block(start, block_rows.min(self.rows() - start), b)?;
            f(b);
            Ok(())
        })
    }
}

/// Reads a field's blocks ahead on a background thread; at most `depth` blocks wait.
/// Give blocks back with [`Prefetch::recycle`] to reuse their memory.
pub struct Prefetch {
    rx: Receiver<Result<Block>>,
    back: SyncSender<Block>,
    handle: Option<JoinHandle<()>>,
}

impl Prefetch {
    /// Starts prefetching `field` of `run` in blocks of `block_rows`, `depth` blocks ahead.
    pub fn new(run: Arc<Run>, field: &str, block_rows: u64, depth: usize) -> Result<Prefetch> {
        run.field(field)?;
        let (tx, rx) = sync_channel::<Result<Block>>(depth.max(1));
        let (back, back_rx) = sync_channel::<Block>(depth.max(1) + 1);
        let field = field.to_string();
        let block_rows = block_rows.max(1);
        let handle = std::thread::Builder::new()
            .name("smdfs-prefetch".into())
            .spawn(move || {
                let Ok(f) = run.field(&field) else { return };
                let mut start = 0;
                while start < f.rows() {
                    let mut b = back_rx.try_recv().unwrap_or_default();
                    let n = block_rows.min(f.rows() - start);
                    let r = f.read_block(start, n, &mut b).map(|()| b);
                    let stop = r.is_err();
                    if tx.send(r).is_err() || stop {
                        return;
                    }
                    start += n;
                }
            })
            .map_err(|e| Error::Usage(format!("cannot start prefetch thread: {e}")))?;
        Ok(Prefetch { rx, back, handle: Some(handle) })
    }

    /// Returns a block's buffers for reuse.
    pub fn recycle(&self, block: Block) {
        let _ = self.back.try_send(block);
    }
}

impl Iterator for Prefetch {
    type Item = Result<Block>;
    fn next(&mut self) -> Option<Result<Block>> {
        self.rx.recv().ok()
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Drain so the reader thread is never blocked on a full queue, then join it.
        while self.rx.try_recv().is_ok() {}
        let (_tx, rx) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
