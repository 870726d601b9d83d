//! Sync mode's committer thread: it makes batches durable and commits them while the shard
//! writer goes on writing the next batches' columns, so device flushes overlap the copying
//! instead of stalling it, and one flush covers every batch that queued up meanwhile (group
//! commit).
//!
//! A round takes every queued job, then does exactly the old inline tail of a synced append,
//! in the same order: fdatasync every column those batches appended to, write their commit
//! frames (in log order, at the offsets the writer reserved), fdatasync the log. So a commit
//! reaches the log only after the data it names is durable; columns may meanwhile hold more
//! (later batches' bytes) past the committed lengths, which readers ignore. The writer
//! reserves log offsets in submission order and waits for the queue to empty before it writes
//! any other frame, so frames land in log order. The queue is bounded (back-pressure).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::shard::io::ShardFile;

/// Jobs that may wait for the committer before the writer blocks.
const QUEUE: usize = 8;

/// One batch to make durable and commit.
pub(crate) struct Job {
    /// The columns the batch appended to.
    pub(crate) columns: Vec<Arc<ShardFile>>,
    pub(crate) log: Arc<ShardFile>,
    /// The encoded commit frame and its log offset.
    pub(crate) frame: Vec<u8>,
    pub(crate) at: u64,
}

/// The committer thread of one shard.
pub(crate) struct Syncer {
    tx: Option<SyncSender<Job>>,
    /// Per round: how many jobs it committed, or the error that stopped the committer.
    rx: Receiver<Result<usize>>,
    outstanding: usize,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the thread for shard `index`.
    pub(crate) fn start(index: usize) -> Result<Syncer> {
        let (tx, jobs) = sync_channel::<Job>(QUEUE);
        let (done, rx) = sync_channel::<Result<usize>>(QUEUE + 1);
        let thread = std::thread::Builder::new()
            .name(format!("smdfs-sync-{index}"))
            .spawn(move || serve(&jobs, &done))
            .map_err(|e| Error::thread("shard committer", e))?;
        Ok(Syncer { tx: Some(tx), rx, outstanding: 0, thread: Some(thread) })
    }

    /// Queues a job (blocks while the queue is full). An error of an earlier round is
    /// returned here at the latest.
    pub(crate) fn submit(&mut self, job: Job) -> Result<()> {
        while let Ok(r) = self.rx.try_recv() {
            self.outstanding -= r?;
        }
        let tx = self.tx.as_ref().expect("sender lives until drop");
        if tx.send(job).is_err() {
            // The committer stopped: its error is in the result channel.
            return self.wait();
        }
        self.outstanding += 1;
        Ok(())
    }

    /// Waits until every queued job is committed: `Ok`, or the committer's error.
    pub(crate) fn wait(&mut self) -> Result<()> {
        while self.outstanding > 0 {
            match self.rx.recv() {
                Ok(r) => self.outstanding -= r?,
                Err(_) => return Err(Error::thread("shard committer", "stopped")),
            }
        }
        Ok(())
    }
}

fn serve(jobs: &Receiver<Job>, done: &SyncSender<Result<usize>>) {
    while let Ok(first) = jobs.recv() {
        let mut round = vec![first];
        while round.len() < QUEUE {
            match jobs.try_recv() {
                Ok(j) => round.push(j),
                Err(_) => break,
            }
        }
        let r = commit(&round).map(|()| round.len());
        let failed = r.is_err();
        if done.send(r).is_err() || failed {
            return;
        }
    }
}

/// One round: the union of the jobs' columns fdatasynced, their frames written, the log
/// fdatasynced.
fn commit(round: &[Job]) -> Result<()> {
    let mut synced: Vec<*const ShardFile> = Vec::new();
    for c in round.iter().flat_map(|j| &j.columns) {
        if !synced.contains(&Arc::as_ptr(c)) {
            synced.push(Arc::as_ptr(c));
            c.sync_data()?;
        }
    }
    for j in round {
        j.log.write_all_at(&j.frame, j.at)?;
    }
    round[0].log.sync_data()
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
