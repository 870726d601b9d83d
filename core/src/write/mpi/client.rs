//! A client handle's way to its shard, two routes:
//!
//! - *To a server rank*: each full batch is sent as one MPI message with `MPI_Issend`
//!   straight from the batch's own column buffers (a gathered send, see `wire::Gathered`:
//!   only a small header is encoded, no column byte is copied). The sender takes the full
//!   batch and hands the client an emptied one from its free list, so the client goes on
//!   filling while the send is in flight. At most `cap` sends are in flight per handle; a
//!   handle with a full ring waits for its oldest send (back-pressure: a synchronous-mode
//!   send completes only once the server has matched it, so nothing queues unboundedly at
//!   the server either).
//! - *To this rank's own shard* (one shard per rank, see `local`): the batch is appended and
//!   committed in place by the calling thread; its bytes never cross MPI.
//!
//! Invariant: a batch stays in the ring, untouched, until its request has completed; on
//! drop the handle waits for its sends (or, if MPI fails, leaks the batches rather than free
//! memory MPI may still read).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::error::Result;
use crate::model::batch::{Batch, BatchView};
use crate::model::schema::Registry;
use crate::write::mpi::comm::{Comm, Request, TAG_BATCH};
use crate::write::mpi::local::LocalShard;
use crate::write::mpi::wire::{Gathered, WireNames};

/// A batch in flight: the batch (its columns are the message), its header, the request.
type InFlight = (Batch, Gathered, Request);

/// Sends one client handle's batches to one server rank.
pub(crate) struct Sender {
    route: Route,
}

enum Route {
    Rank(Box<ToRank>),
    Local(Arc<LocalShard>),
}

struct ToRank {
    comm: Comm,
    dest: usize,
    /// Batches this rank has sent to `dest`, over all its handles (the server checks the
    /// count at the end).
    sent: Arc<AtomicU64>,
    ring: VecDeque<InFlight>,
    free: Vec<(Batch, Gathered)>,
    cap: usize,
    names: WireNames,
}

impl Sender {
    /// A sender to server rank `dest`.
    pub(crate) fn new(comm: Comm, dest: usize, sent: Arc<AtomicU64>, cap: usize) -> Sender {
        let to = ToRank {
            comm,
            dest,
            sent,
            ring: VecDeque::new(),
            free: vec![],
            cap: cap.max(1),
            names: WireNames::default(),
        };
        Sender { route: Route::Rank(Box::new(to)) }
    }

    /// A sender that appends to this rank's own shard.
    pub(crate) fn local(shard: Arc<LocalShard>) -> Sender {
        Sender { route: Route::Local(shard) }
    }

    /// Hands `batch` on. To a server rank: takes the batch (leaving an emptied one in its
    /// place) and starts sending it, first waiting for the oldest send if `cap` are in
    /// flight. To the local shard: appends and commits it (the caller clears it).
    pub(crate) fn send(&mut self, batch: &mut Batch, registry: &RwLock<Registry>) -> Result<()> {
        match &mut self.route {
            Route::Local(shard) => shard.append(batch, registry),
            Route::Rank(to) => to.send(batch, registry),
        }
    }

    /// Whether this handle appends to this rank's own shard (and so can take borrowed
    /// columns, see [`Sender::append_borrowed`]).
    pub(crate) fn is_local(&self) -> bool {
        matches!(self.route, Route::Local(_))
    }

    /// To the local shard: appends and commits `view` straight from the caller's columns.
    /// `None` for a handle that sends to a server rank.
    pub(crate) fn append_borrowed(&mut self, view: &BatchView<'_>, registry: &RwLock<Registry>) -> Option<Result<()>> {
        match &self.route {
            Route::Local(shard) => Some(shard.append_view(view, registry)),
            Route::Rank(_) => None,
        }
    }

    /// Waits until every send of this handle has completed.
    pub(crate) fn wait_all(&mut self) -> Result<()> {
        match &mut self.route {
            Route::Local(_) => Ok(()),
            Route::Rank(to) => to.wait_all(),
        }
    }
}

impl ToRank {
    fn send(&mut self, batch: &mut Batch, registry: &RwLock<Registry>) -> Result<()> {
        if !self.names.covers(batch) {
            let reg = crate::sync::read(registry);
            self.names.learn(batch, &reg.schema)?;
        }
        self.reap()?;
        while self.ring.len() >= self.cap {
            self.complete_oldest()?;
        }
        let (mut empty, mut msg) = self.free.pop().unwrap_or_default();
        empty.clear();
        let full = std::mem::replace(batch, empty);
        msg.lay_out(&full, &self.names);
        // SAFETY: the blocks point into `full` and `msg`, which move into the ring below (a
        // Vec's heap buffer does not move with it) and stay untouched until the request
        // has completed (`reap`, `complete_oldest`, or leaked on drop if MPI fails).
        let req = unsafe { self.comm.isend_gather(msg.blocks(), self.dest, TAG_BATCH) }?;
        self.sent.fetch_add(1, Ordering::AcqRel);
        self.ring.push_back((full, msg, req));
        Ok(())
    }

    /// Recycles the batches of sends that have completed, oldest first.
    fn reap(&mut self) -> Result<()> {
        while let Some((_, _, req)) = self.ring.front_mut() {
            if !req.test()? {
                break;
            }
            let (b, m, _) = self.ring.pop_front().expect("front exists");
            self.free.push((b, m));
        }
        Ok(())
    }

    fn complete_oldest(&mut self) -> Result<()> {
        if let Some((_, _, req)) = self.ring.front_mut() {
            req.wait()?;
            let (b, m, _) = self.ring.pop_front().expect("front exists");
            self.free.push((b, m));
        }
        Ok(())
    }

    fn wait_all(&mut self) -> Result<()> {
        while !self.ring.is_empty() {
            self.complete_oldest()?;
        }
        Ok(())
    }
}

impl Drop for ToRank {
    fn drop(&mut self) {
        if self.wait_all().is_err() {
            // MPI failed: it may still read these buffers, so never free them.
            for inflight in self.ring.drain(..) {
                std::mem::forget(inflight);
            }
        }
    }
}
