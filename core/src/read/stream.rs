//! [`Prefetch`]: a field's blocks read ahead on a background thread, at most `depth`
//! waiting, their buffers recycled: bounded memory however long the run.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fork::Threads;
use crate::read::field::Block;
use crate::read::run::Run;

/// Reads a field's blocks ahead on a background thread; at most `depth` blocks wait.
/// Give blocks back with [`Prefetch::recycle`] to reuse their memory.
pub struct Prefetch {
    rx: Receiver<Result<Block>>,
    back: SyncSender<Block>,
    /// The reading thread (absent in a forked child: every call there is `Error::Forked`).
    thread: Threads,
}

impl Prefetch {
    /// Starts prefetching `field` of `run` in blocks of `block_rows`, `depth` blocks ahead.
    pub fn new(run: Arc<Run>, field: &str, block_rows: u64, depth: usize) -> Result<Prefetch> {
        run.field(field)?;
        let (tx, rx) = sync_channel::<Result<Block>>(depth.max(1));
        let (back, back_rx) = sync_channel::<Block>(depth.max(1) + 1);
        let field = field.to_string();
        let block_rows = block_rows.max(1);
        let mut thread = Threads::new("prefetching reader");
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
            .map_err(|e| Error::thread("prefetch", format!("cannot start: {e}")))?;
        thread.push(handle);
        Ok(Prefetch { rx, back, thread })
    }

    /// Returns a block's buffers for reuse.
    pub fn recycle(&self, block: Block) {
        let _ = self.back.try_send(block);
    }
}

impl Iterator for Prefetch {
    type Item = Result<Block>;
    fn next(&mut self) -> Option<Result<Block>> {
        if let Err(e) = self.thread.check() {
            return Some(Err(e));
        }
        self.rx.recv().ok()
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Drain so the reader thread is never blocked on a full queue, then join it.
        while self.rx.try_recv().is_ok() {}
        let (_tx, rx) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, rx));
        self.thread.join_all();
    }
}
