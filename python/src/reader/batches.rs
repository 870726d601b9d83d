//! Batches for training loops: a background thread reads a group's rows in batches — in
//! event-id order, or shard by shard (optionally shuffled with a seed) — at most `depth`
//! batches ahead, so memory stays bounded and the consumer never waits on disk it could
//! have read already. Each batch holds, per requested column, its rows' bytes (ragged
//! fields: concatenated values plus per-row element counts).

use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};

use smdfs::fork::Threads;
use smdfs::{Error, Loc, Result, Run};

use super::columns::Column;

/// One requested column of a batch.
#[derive(Clone, Debug)]
pub(crate) enum Item {
    /// A fixed-width column (values, event ids, presence, lengths).
    Fixed(Column),
    /// A ragged field by path.
    Ragged(String),
}

/// Row order of the batches.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Order {
    /// Global rows in event-id order.
    EventId,
    /// Shard by shard; with a seed, shards in random order and rows shuffled within each.
    Shardwise(Option<u64>),
}

/// One batch: per item its bytes, and for ragged items the per-row element counts.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Per item: (bytes, element counts; empty for fixed items).
    pub(crate) parts: Vec<(Vec<u8>, Vec<u64>)>,
}

/// A running prefetch thread; dropping it stops the thread.
pub(crate) struct Batches {
    rx: Mutex<Option<Receiver<Result<Batch>>>>,
    /// The reading thread (absent in a forked child: every call there is `Error::Forked`).
    thread: Threads,
}

impl Batches {
    /// Starts reading `items` of group `group` in batches of `batch_rows`, `depth` ahead.
    pub(crate) fn start(
        run: Arc<Run>,
        group: usize,
        items: Vec<Item>,
        batch_rows: u64,
        order: Order,
        depth: usize,
    ) -> Result<Batches> {
        let (tx, rx) = sync_channel::<Result<Batch>>(depth.max(1));
        let batch_rows = batch_rows.max(1);
        let mut thread = Threads::new("batch reader");
        let handle = std::thread::Builder::new()
            .name("smdfs-batches".into())
            .spawn(move || {
                let send = |b: Result<Batch>| {
                    let stop = b.is_err();
                    tx.send(b).is_ok() && !stop
                };
                match order {
                    Order::EventId => {
                        let rows = run.groups()[group].index.len();
                        let mut start = 0;
                        while start < rows {
                            let n = batch_rows.min(rows - start);
                            if !send(read_range(&run, &items, start, n)) {
                                return;
                            }
                            start += n;
                        }
                    }
                    Order::Shardwise(seed) => {
                        let name = run.groups()[group].spec.name.clone();
                        let mut it = match run.shardwise(&name, seed) {
                            Ok(it) => it,
                            Err(e) => {
                                send(Err(e));
                                return;
                            }
                        };
                        let mut locs = Vec::with_capacity(batch_rows as usize);
                        loop {
                            locs.clear();
                            locs.extend(it.by_ref().take(batch_rows as usize));
                            if locs.is_empty() || !send(read_locs(&run, group, &items, &locs)) {
                                return;
                            }
                        }
                    }
                }
            })
            .map_err(|e| Error::Usage(format!("cannot start the batch thread: {e}")))?;
        thread.push(handle);
        Ok(Batches { rx: Mutex::new(Some(rx)), thread })
    }

    /// The next batch if one is ready now: `Ok(None)` at the end, `Err(())` when the
    /// caller must wait ([`Batches::next_batch`]).
    pub(crate) fn ready(&self) -> std::result::Result<Option<Result<Batch>>, ()> {
        if let Err(e) = self.thread.check() {
            return Ok(Some(Err(e)));
        }
        let rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        match rx.as_ref().map(|r| r.try_recv()) {
            None | Some(Err(TryRecvError::Disconnected)) => Ok(None),
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(TryRecvError::Empty)) => Err(()),
        }
    }

    /// The next batch (blocks until it is read); `None` at the end.
    pub(crate) fn next_batch(&self) -> Option<Result<Batch>> {
        if let Err(e) = self.thread.check() {
            return Some(Err(e));
        }
        // A poisoned lock only means another consumer panicked: the channel is still sound.
        let rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        rx.as_ref()?.recv().ok()
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        // Dropping the receiver makes the thread's next send fail, so it ends.
        drop(self.rx.get_mut().unwrap_or_else(|e| e.into_inner()).take());
        self.thread.join_all();
    }
}

/// Rows `start..start + n` in event-id order.
fn read_range(run: &Run, items: &[Item], start: u64, n: u64) -> Result<Batch> {
    let mut parts = Vec::with_capacity(items.len());
    for it in items {
        parts.push(match it {
            Item::Fixed(c) => {
                let mut b = vec![0u8; n as usize * c.row_bytes];
                c.read(run, start, &mut b)?;
                (b, Vec::new())
            }
            Item::Ragged(path) => {
                let f = run.field(path)?;
                let es = f.spec().dtype.size().max(1);
                let (mut vals, mut lens) = (Vec::new(), Vec::with_capacity(n as usize));
                for i in start..start + n {
                    let v = f.ragged_row(i)?;
                    vals.extend_from_slice(v);
                    lens.push((v.len() / es) as u64);
                }
                (vals, lens)
            }
        });
    }
    Ok(Batch { parts })
}

/// The rows at shard locations `locs` of group `group`.
fn read_locs(run: &Run, group: usize, items: &[Item], locs: &[Loc]) -> Result<Batch> {
    let mut parts = Vec::with_capacity(items.len());
    for it in items {
        parts.push(match it {
            Item::Fixed(c) => {
                debug_assert_eq!(c.group, group);
                (c.read_locs(run, locs)?, Vec::new())
            }
            Item::Ragged(path) => {
                let f = run.field(path)?;
                let es = f.spec().dtype.size().max(1);
                let (mut vals, mut lens) = (Vec::new(), Vec::with_capacity(locs.len()));
                for &l in locs {
                    let v = f.ragged_at(l)?;
                    vals.extend_from_slice(v);
                    lens.push((v.len() / es) as u64);
                }
                (vals, lens)
            }
        });
    }
    Ok(Batch { parts })
}
