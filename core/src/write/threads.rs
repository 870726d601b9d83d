//! Threads mode's servers: one thread per shard, fed through a bounded channel (at most
//! `in_flight` batches wait per server, so a slow disk slows the clients instead of growing
//! a queue). Each appends and commits whole batches with the shard writer and returns the
//! emptied batch buffers to its pool for the clients to reuse.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::format::shard_dir_name;
use crate::model::batch::Batch;
use crate::model::schema::{FieldId, GroupId, StatsMap};
use crate::shard::writer::ShardWriter;
use crate::sync::{lock, read};
use crate::write::run_dir::RunConfig;
use crate::write::shared::Shared;

/// A running server thread: its shard's close offset and statistics when it ends.
pub(crate) type ServerThread = JoinHandle<Result<(u64, StatsMap)>>;

/// Creates every shard and starts its server thread.
pub(crate) fn start(cfg: &RunConfig, shared: &Arc<Shared>) -> Result<(Vec<SyncSender<Batch>>, Vec<ServerThread>)> {
    let mut senders = Vec::with_capacity(cfg.servers);
    let mut servers = Vec::with_capacity(cfg.servers);
    for i in 0..cfg.servers {
        let shard = ShardWriter::create_with(&cfg.dir.join(shard_dir_name(i)), i, cfg.sync, shared.faults.clone())?;
        let (tx, rx) = sync_channel::<Batch>(cfg.in_flight);
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

fn serve(rx: Receiver<Batch>, mut shard: ShardWriter, shared: &Shared) -> Result<(u64, StatsMap)> {
    let idx = shard.index();
    let field_spec = |f: FieldId| read(&shared.registry).schema.fields[f as usize].clone();
    let group_spec = |g: GroupId| read(&shared.registry).schema.groups[g as usize].clone();
    while let Ok(mut batch) = rx.recv() {
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
