//! A client handle's way to its server rank: each batch is encoded into a send buffer and
//! sent with `MPI_Issend`; at most `cap` sends are in flight per handle, and a handle with a
//! full ring waits for its oldest send (back-pressure: a synchronous-mode send completes only
//! once the server has matched it, so nothing queues unboundedly at the server either).
//!
//! Invariant: a buffer stays in the ring, untouched, until its request has completed; on drop
//! the handle waits for its sends (or, if MPI fails, leaks the buffers rather than free
//! memory MPI may still read).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::error::Result;
use crate::model::batch::Batch;
use crate::model::schema::Registry;
use crate::write::mpi::comm::{Comm, Request, TAG_BATCH};
use crate::write::mpi::wire::{encode, WireNames};

/// Sends one client handle's batches to one server rank.
pub(crate) struct Sender {
    comm: Comm,
    dest: usize,
    /// Batches this rank has sent to `dest`, over all its handles (the server checks the
    /// count at the end).
    sent: Arc<AtomicU64>,
    ring: VecDeque<(Vec<u8>, Request)>,
    free: Vec<Vec<u8>>,
    cap: usize,
    names: WireNames,
}

impl Sender {
    pub(crate) fn new(comm: Comm, dest: usize, sent: Arc<AtomicU64>, cap: usize) -> Sender {
        Sender { comm, dest, sent, ring: VecDeque::new(), free: vec![], cap: cap.max(1), names: WireNames::default() }
    }

    /// Encodes and starts sending `batch`, first waiting for the oldest send if `cap` are in
    /// flight.
    pub(crate) fn send(&mut self, batch: &Batch, registry: &RwLock<Registry>) -> Result<()> {
        if !self.names.covers(batch) {
            let reg = crate::sync::read(registry);
            self.names.learn(batch, &reg.schema)?;
        }
        self.reap()?;
        while self.ring.len() >= self.cap {
            self.complete_oldest()?;
        }
        let mut buf = self.free.pop().unwrap_or_default();
        encode(batch, &self.names, &mut buf);
        let req = self.comm.isend(&buf, self.dest, TAG_BATCH)?;
        self.sent.fetch_add(1, Ordering::AcqRel);
        self.ring.push_back((buf, req));
        Ok(())
    }

    /// Recycles the buffers of sends that have completed, oldest first.
    fn reap(&mut self) -> Result<()> {
        while let Some((_, req)) = self.ring.front_mut() {
            if !req.test()? {
                break;
            }
            let (buf, _) = self.ring.pop_front().expect("front exists");
            self.free.push(buf);
        }
        Ok(())
    }

    fn complete_oldest(&mut self) -> Result<()> {
        if let Some((_, req)) = self.ring.front_mut() {
            req.wait()?;
            let (buf, _) = self.ring.pop_front().expect("front exists");
            self.free.push(buf);
        }
        Ok(())
    }

    /// Waits until every send of this handle has completed.
    pub(crate) fn wait_all(&mut self) -> Result<()> {
        while !self.ring.is_empty() {
            self.complete_oldest()?;
        }
        Ok(())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.wait_all().is_err() {
            // MPI failed: it may still read these buffers, so never free them.
            for (buf, _) in self.ring.drain(..) {
                std::mem::forget(buf);
            }
        }
    }
}
