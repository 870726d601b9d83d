//! Sync mode's committer thread: it makes one batch durable and commits it while the shard
//! writer already writes the next batch's columns, so the device's flush of batch k overlaps
//! the copy of batch k+1 instead of stalling it.
//!
//! A job is exactly the old inline tail of a synced append, in the same order: fdatasync
//! every column the batch appended to, then write the batch's commit frame at its reserved
//! log offset, then fdatasync the log. So a commit still reaches the log only after the data
//! it names is durable; the columns may meanwhile hold more (the next batch's bytes), past
//! the committed lengths, which readers ignore. At most one job is in flight: the writer
//! waits for job k before handing over job k+1 and before writing any other log frame, so
//! frames land in log order.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::shard::io::ShardFile;

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
    rx: Receiver<Result<()>>,
    busy: bool,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the thread for shard `index`.
    pub(crate) fn start(index: usize) -> Result<Syncer> {
        let (tx, jobs) = sync_channel::<Job>(1);
        let (done, rx) = sync_channel::<Result<()>>(1);
        let thread = std::thread::Builder::new()
            .name(format!("smdfs-sync-{index}"))
            .spawn(move || {
                for job in jobs {
                    if done.send(run(&job)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::thread("shard committer", e))?;
        Ok(Syncer { tx: Some(tx), rx, busy: false, thread: Some(thread) })
    }

    /// Hands over a job; the previous one must have been waited for.
    pub(crate) fn submit(&mut self, job: Job) -> Result<()> {
        debug_assert!(!self.busy, "one job in flight");
        let tx = self.tx.as_ref().expect("sender lives until drop");
        tx.send(job).map_err(|_| Error::thread("shard committer", "stopped"))?;
        self.busy = true;
        Ok(())
    }

    /// Waits for the job in flight (if any): its error, or `Ok` once its commit is durable.
    pub(crate) fn wait(&mut self) -> Result<()> {
        if !self.busy {
            return Ok(());
        }
        self.busy = false;
        self.rx.recv().map_err(|_| Error::thread("shard committer", "stopped"))?
    }
}

fn run(job: &Job) -> Result<()> {
    for c in &job.columns {
        c.sync_data()?;
    }
    job.log.write_all_at(&job.frame, job.at)?;
    job.log.sync_data()
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
