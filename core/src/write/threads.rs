//! Threads mode's servers: one thread per shard, fed through a bounded channel (at most
//! `in_flight` batches wait per server, so a slow disk slows the clients instead of growing
//! a queue). Each appends and commits whole batches with the shard writer and returns the
//! emptied batch buffers to its pool for the clients to reuse. A large `events()` call skips
//! the batch: its borrowed columns come as a [`Borrowed`] job, written straight from the
//! caller's arrays while the caller waits (one copy, into the page cache).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::format::shard_dir_name;
use crate::model::batch::{Batch, BatchView};
use crate::model::schema::{FieldId, GroupId, StatsMap};
use crate::shard::writer::ShardWriter;
use crate::sync::{lock, read};
use crate::write::run_dir::RunConfig;
use crate::write::shared::Shared;

/// What a server thread receives.
pub(crate) enum ToServer {
    /// A client's full batch (its buffers come back through the pool).
    Batch(Batch),
    /// Columns borrowed from a blocked `Client::events` call.
    Borrowed(Borrowed),
}

/// An `events()` call's columns, borrowed: the caller blocks on `done` until the server has
/// written them, so the view outlives every use although its type says `'static`.
pub(crate) struct Borrowed {
    /// Only read before `done` is sent (or dropped unread with this job).
    view: BatchView<'static>,
    done: SyncSender<Result<()>>,
}

/// Hands `view` to the server behind `tx` and waits until it is appended and committed (or
/// the server failed): no copy of the columns on the way.
pub(crate) fn write_borrowed(tx: &SyncSender<ToServer>, view: BatchView<'_>) -> std::result::Result<Result<()>, ()> {
    let (done, wait) = sync_channel(1);
    // SAFETY: the lifetime is only widened for the trip to the server thread: this function
    // returns only after the server sent the job's result, or after the job was dropped
    // (server gone: the channel discards queued jobs, dropping `done`), and the server reads
    // the view only before sending its result. Either way no slice is read after return.
    let view = unsafe { std::mem::transmute::<BatchView<'_>, BatchView<'static>>(view) };
    tx.send(ToServer::Borrowed(Borrowed { view, done })).map_err(|_| ())?;
    wait.recv().map_err(|_| ())
}

/// A running server thread: its shard's close offset and statistics when it ends.
pub(crate) type ServerThread = JoinHandle<Result<(u64, StatsMap)>>;

/// Creates every shard and starts its server thread.
pub(crate) fn start(cfg: &RunConfig, shared: &Arc<Shared>) -> Result<(Vec<SyncSender<ToServer>>, Vec<ServerThread>)> {
    let mut senders = Vec::with_capacity(cfg.servers);
    let mut servers = Vec::with_capacity(cfg.servers);
    for i in 0..cfg.servers {
        let shard = ShardWriter::create_with(&cfg.dir.join(shard_dir_name(i)), i, cfg.sync, shared.faults.clone())?;
        let (tx, rx) = sync_channel::<ToServer>(cfg.in_flight);
        let sh = Arc::clone(shared);
        let handle = std::thread::Builder::new()
            .name(format!("smdfs-server-{i}"))
            .spawn(move || serve(rx, shard, &sh))
            .map_err(|e| Error::io(&cfg.dir, e))?;
        senders.push(tx);
        servers.push(handle);
    }
    Ok((senders, servers))
}

fn serve(rx: Receiver<ToServer>, mut shard: ShardWriter, shared: &Shared) -> Result<(u64, StatsMap)> {
    let idx = shard.index();
    let field_spec = |f: FieldId| read(&shared.registry).schema.fields[f as usize].clone();
    let group_spec = |g: GroupId| read(&shared.registry).schema.groups[g as usize].clone();
    while let Ok(job) = rx.recv() {
        match job {
            ToServer::Batch(mut batch) => {
                if let Err(e) = shard.append(&batch.view(), &field_spec, &group_spec) {
                    *lock(&shared.errors[idx]) = Some(e.to_string());
                    return Err(e);
                }
                batch.clear();
                let mut pool = lock(&shared.pools[idx]);
                if pool.len() < shared.pool_cap {
                    pool.push(batch);
                }
            }
            ToServer::Borrowed(Borrowed { view, done }) => {
                let r = shard.append(&view, &field_spec, &group_spec);
                drop(view);
                if let Err(e) = r {
                    *lock(&shared.errors[idx]) = Some(e.to_string());
                    let _ = done.send(Err(shared.server_error(idx)));
                    return Err(e);
                }
                // The caller waits for this; a failed send only means it is gone already.
                let _ = done.send(Ok(()));
            }
        }
    }
    shard.close().inspect_err(|e| *lock(&shared.errors[idx]) = Some(e.to_string()))
}

/// Waits for every server to close its shard: per shard the close offset, and the merged
/// statistics; the first server error otherwise.
pub(crate) fn join(servers: Vec<ServerThread>) -> Result<(Vec<u64>, StatsMap)> {
    let mut closes = Vec::with_capacity(servers.len());
    let mut stats = StatsMap::new();
    let mut first_err = None;
    for (i, h) in servers.into_iter().enumerate() {
        match h.join() {
            Ok(Ok((offset, s))) => {
                closes.push(offset);
                crate::model::schema::merge_stats(&mut stats, s);
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(Error::ServerFailed { shard: i, why: "server thread panicked".into() });
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok((closes, stats)),
    }
}
