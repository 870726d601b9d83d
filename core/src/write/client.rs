//! [`Client`]: one worker's handle. It validates each event against the schema (resolving a
//! field through the shared registry once, then from its own tables), appends it to its
//! columnar batch (aligned fields padded with fill), and hands full batches to its server —
//! a channel to a server thread, or an MPI send to a server rank.
//!
//! Three ways in, one batch: `event(id, fields!{…})` (fields by name), `begin(id).set(&h,
//! v)….write()` (typed handles resolved once: no name lookup, no allocation per event) and
//! `events(ids, columns)` (whole arrays, see `write/columns_in.rs`). Per event the client
//! touches only tables indexed by field and group id. An event is atomic: a rejected value
//! rolls back what the event had appended, so the batch is as it was before it.
//!
//! This file owns the client's tables, the batch they fill and its hand-over; `resolve`
//! finds a field's cached meta, `row` holds the two per-event entry points.

mod resolve;
mod row;

pub use row::EventRow;

use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::model::batch::{Batch, BatchView, FieldRows};
use crate::model::dtype::Element;
use crate::model::handle;
use crate::model::reduce::{contribute, Reducible, Reductions};
use crate::model::schema::{FieldId, FieldSpec, GroupId, RUN_GROUP_ID};
use crate::model::value::Value;
use crate::sync::lock;
use crate::write::shared::Shared;
use crate::write::threads::{self, ToServer};

/// Marks an empty entry of an id-indexed table.
pub(crate) const NONE: u32 = u32::MAX;

/// What a client caches about a field it has resolved.
pub(crate) struct Meta {
    pub(crate) spec: FieldSpec,
    pub(crate) id: FieldId,
    pub(crate) group: GroupId,
    pub(crate) aligned: bool,
    pub(crate) row_bytes: usize,
    pub(crate) fill_row: Vec<u8>,
    /// The stamp of the event that last set the field (a field given twice is an error).
    stamp: u64,
    /// The path of the handle last used with this field (identity check without a compare).
    handle_path: Option<Arc<str>>,
}

/// Where a client's batches go.
pub(crate) enum Sink {
    Thread(SyncSender<ToServer>),
    #[cfg(feature = "mpi")]
    Mpi(Box<crate::write::mpi::client::Sender>),
    /// An MPI server rank's handle: no events (the reason).
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    Refuse(String),
}

/// One worker's handle: validates events, batches them, hands batches to its server.
/// `Send`, not `Sync`: give each thread its own (`for_each_init(|| smd.client(), …)`).
pub struct Client {
    pub(crate) shared: Arc<Shared>,
    server: usize,
    sink: Sink,
    pub(crate) batch: Batch,
    cache: FxHashMap<Box<str>, usize>,
    /// FieldId → index into `metas` (or NONE).
    by_id: Vec<u32>,
    pub(crate) metas: Vec<Meta>,
    /// Per meta: its slot in the current batch's fields.
    pub(crate) slots: Vec<Option<usize>>,
    /// Per GroupId: its slot in the current batch's groups (or NONE).
    gslots: Vec<u32>,
    /// Per GroupId: the stamp of the event that last added a row to it.
    gstamp: Vec<u64>,
    /// Incremented per event.
    stamp: u64,
    /// The open event's appended values: (meta, bytes).
    row_sets: Vec<(usize, usize)>,
    /// The open event's group slots.
    row_groups: Vec<usize>,
    /// Per field position in `event`'s list: the meta seen there last time.
    predict: Vec<usize>,
    reductions: Reductions,
    finished: bool,
}

impl Client {
    pub(crate) fn new(shared: Arc<Shared>, server: usize, sink: Sink, finished: bool) -> Client {
        Client {
            shared,
            server,
            sink,
            batch: Batch::default(),
            cache: FxHashMap::default(),
            by_id: vec![],
            metas: vec![],
            slots: vec![],
            gslots: vec![],
            gstamp: vec![],
            stamp: 0,
            row_sets: vec![],
            row_groups: vec![],
            predict: vec![],
            reductions: Reductions::new(),
            finished,
        }
    }

    /// The server (shard) this client sends to.
    pub fn server(&self) -> usize {
        self.server
    }

    /// A handle to scalar field `path` of element type `T` (see [`Client::begin`]).
    pub fn scalar<T: Element>(&self, path: &str) -> Result<handle::Scalar<T>> {
        self.shared.scalar(path)
    }

    /// A handle to fixed-shape array field `path` of `T` with per-event shape `shape`.
    pub fn array<T: Element>(&self, path: &str, shape: &[usize]) -> Result<handle::Array<T>> {
        self.shared.array(path, shape)
    }

    /// A handle to ragged (varying-length 1-D) field `path` of `T`.
    pub fn ragged<T: Element>(&self, path: &str) -> Result<handle::Ragged<T>> {
        self.shared.ragged(path)
    }

    /// A handle to bytes field `path`.
    pub fn bytes(&self, path: &str) -> Result<handle::Bytes> {
        self.shared.bytes(path)
    }

    /// A handle to text field `path`.
    pub fn text(&self, path: &str) -> Result<handle::Text> {
        self.shared.text(path)
    }

    fn refuse(&self) -> Error {
        Error::Usage(match &self.sink {
            Sink::Refuse(why) => why.clone(),
            _ => "event() on a finished client".into(),
        })
    }

    /// The batch slot of group `g`, created on first use in this batch.
    pub(crate) fn group_slot(&mut self, g: GroupId) -> usize {
        let s = self.gslots[g as usize];
        if s != NONE {
            return s as usize;
        }
        let s = self.batch.add_group(g);
        self.gslots[g as usize] = s as u32;
        s
    }

    /// The batch slot of field meta `mi` (in group slot `gslot`), created on first use.
    pub(crate) fn field_slot(&mut self, mi: usize, gslot: usize) -> usize {
        if let Some(s) = self.slots[mi] {
            return s;
        }
        let s = self.batch.add_field(self.metas[mi].id, gslot);
        self.slots[mi] = Some(s);
        s
    }

    /// Appends one present value of meta `mi` to the open event (`elems`: element count).
    #[inline]
    fn put(&mut self, mi: usize, id: u64, data: &[u8], elems: usize) {
        let g = self.metas[mi].group;
        let gslot = self.group_slot(g);
        if self.gstamp[g as usize] != self.stamp {
            self.gstamp[g as usize] = self.stamp;
            self.batch.groups[gslot].ids.push(id);
            self.row_groups.push(gslot);
        }
        let row = self.batch.groups[gslot].ids.len() - 1;
        let fslot = self.field_slot(mi, gslot);
        let m = &self.metas[mi];
        let fr = &mut self.batch.fields[fslot];
        pad(fr, m, row);
        fr.data.extend_from_slice(data);
        if m.aligned {
            fr.present.push(1);
        }
        if m.spec.kind.is_ragged() {
            fr.lens.push(elems as u64);
        }
        fr.rows += 1;
        self.batch.bytes += data.len();
        self.row_sets.push((mi, data.len()));
    }

    /// Opens an event: values are appended as they are set.
    fn open(&mut self) -> Result<()> {
        self.shared.origin.check()?;
        if self.finished {
            return Err(self.refuse());
        }
        self.stamp += 1;
        self.row_sets.clear();
        self.row_groups.clear();
        Ok(())
    }

    /// Takes back everything the open event appended.
    fn rollback(&mut self) {
        for &(mi, nb) in &self.row_sets {
            let m = &self.metas[mi];
            let fr = &mut self.batch.fields[self.slots[mi].expect("a set field has a slot")];
            fr.data.truncate(fr.data.len() - nb);
            if m.aligned {
                fr.present.pop();
            }
            if m.spec.kind.is_ragged() {
                fr.lens.pop();
            }
            fr.rows -= 1;
            self.batch.bytes -= nb;
        }
        for &gs in &self.row_groups {
            self.batch.groups[gs].ids.pop();
        }
        self.row_sets.clear();
        self.row_groups.clear();
    }

    /// Closes the open event: an event with no fields is a row of the run group (every
    /// aligned field filled); full batches are handed over.
    fn close(&mut self, id: u64) -> Result<()> {
        if self.row_groups.is_empty() {
            self.ensure_run_group();
            let gslot = self.group_slot(RUN_GROUP_ID);
            self.batch.groups[gslot].ids.push(id);
        }
        self.batch.events += 1;
        if self.batch.events >= self.shared.batch_events || self.batch.bytes >= self.shared.batch_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Puts a field the run has not seen yet into the named alignment group `group`, as
    /// [`Builder::aligned_group`](crate::Builder::aligned_group) does before the run starts
    /// (for writers that name an event's group with the event). A field already seen must
    /// already be in `group`.
    pub fn aligned_group(&mut self, group: &str, path: &str) -> Result<()> {
        self.shared.registry_mut()?.assign_group(path, group)
    }

    /// Sets the fill value (a scalar of the field's dtype) of a field the run has not seen
    /// yet, as [`Builder::fill`](crate::Builder::fill) does before the run starts (for writers
    /// that learn the field's dtype only from its first value). A field already seen must
    /// already have it.
    pub fn fill(&mut self, path: &str, value: &Value<'_>) -> Result<()> {
        self.shared.registry_mut()?.set_fill(path, value.data().to_vec())
    }

    /// Contributes a value to the named reduction (read with `smd.sum/min/max(name)` after
    /// the client is finished or dropped).
    pub fn reduce<T: Reducible>(&mut self, name: &str, value: T) -> Result<()> {
        contribute(&mut self.reductions, name, value.to_num())
    }

    /// Hands the current batch to the server (blocks while the server's queue is full, or
    /// in MPI mode while `max_batches_in_flight` sends are unfinished).
    pub fn flush(&mut self) -> Result<()> {
        self.shared.origin.check()?;
        if self.batch.is_empty() {
            return Ok(());
        }
        // Aligned fields absent from the batch's last events are filled up to the group.
        self.seal();
        for s in &mut self.slots {
            *s = None;
        }
        for s in &mut self.gslots {
            *s = NONE;
        }
        match &mut self.sink {
            Sink::Thread(tx) => {
                let fresh = lock(&self.shared.pools[self.server]).pop().unwrap_or_default();
                let full = std::mem::replace(&mut self.batch, fresh);
                tx.send(ToServer::Batch(full)).map_err(|_| self.shared.server_error(self.server))
            }
            #[cfg(feature = "mpi")]
            Sink::Mpi(sender) => {
                // The sender takes the full batch (its columns are the message) and leaves an
                // emptied one, or appends it to this rank's own shard.
                let r = sender.send(&mut self.batch, &self.shared.registry);
                self.batch.clear();
                r
            }
            Sink::Refuse(why) => Err(Error::Usage(why.clone())),
        }
    }

    /// Whether [`Client::write_borrowed`] can take columns: threads mode, or an MPI rank
    /// that writes its own shard.
    pub(crate) fn writes_borrowed(&self) -> bool {
        match &self.sink {
            Sink::Thread(_) => true,
            #[cfg(feature = "mpi")]
            Sink::Mpi(sender) => sender.is_local(),
            Sink::Refuse(_) => false,
        }
    }

    /// Appends and commits `view` (columns borrowed from the caller) after the batch so far,
    /// and returns once it is written: the columns are copied once, by the write into the
    /// page cache (on the server thread, or on this thread into this rank's own shard).
    pub(crate) fn write_borrowed(&mut self, view: BatchView<'_>) -> Result<()> {
        self.flush()?;
        let refused = || Error::Usage("borrowed columns go to a thread server or this rank's own shard only".into());
        match &mut self.sink {
            Sink::Thread(tx) => {
                threads::write_borrowed(tx, view).unwrap_or_else(|()| Err(self.shared.server_error(self.server)))
            }
            #[cfg(feature = "mpi")]
            Sink::Mpi(sender) => sender.append_borrowed(&view, &self.shared.registry).unwrap_or_else(|| Err(refused())),
            Sink::Refuse(_) => Err(refused()),
        }
    }

    fn seal(&mut self) {
        for (mi, slot) in self.slots.iter().enumerate() {
            if let Some(s) = *slot {
                let fr = &mut self.batch.fields[s];
                let rows = self.batch.groups[fr.group_slot].ids.len();
                pad(fr, &self.metas[mi], rows);
            }
        }
    }

    /// Flushes and merges this client's reductions into the run's. Called by `drop` too,
    /// where errors are kept for `done()`.
    pub fn finish(mut self) -> Result<()> {
        self.finish_inner()
    }

    fn finish_inner(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        // In a forked child nothing of the writer may run (no server, no MPI to wait on).
        self.shared.origin.check()?;
        let r = self.flush();
        // MPI mode: a send buffer must outlive its send.
        #[cfg(feature = "mpi")]
        let r = match &mut self.sink {
            Sink::Mpi(sender) => r.and(sender.wait_all()),
            _ => r,
        };
        let mut merged = Ok(());
        {
            let mut all = lock(&self.shared.reductions);
            for (name, acc) in std::mem::take(&mut self.reductions) {
                let r = match all.get_mut(&name) {
                    Some(a) => a.merge(&name, &acc),
                    None => {
                        all.insert(name, acc);
                        Ok(())
                    }
                };
                if merged.is_ok() {
                    merged = r;
                }
            }
        }
        self.shared.live_clients.fetch_sub(1, Ordering::AcqRel);
        r.and(merged)
    }

    /// True once the client accepts no more events.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    /// The error for events given to a finished client.
    pub(crate) fn refused(&self) -> Error {
        self.refuse()
    }

    /// Makes sure the run group has table entries (an event with no fields lands there).
    pub(crate) fn ensure_run_group(&mut self) {
        if self.gslots.is_empty() {
            self.gslots.push(NONE);
            self.gstamp.push(0);
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // A forked child's copy: nothing to hand over, and no error slot to lock.
        if self.shared.origin.forked() {
            return;
        }
        if let Err(e) = self.finish_inner() {
            self.shared.set_server_error(self.server, format!("client flush on drop failed: {e}"));
        }
    }
}

/// Pads an aligned field's rows with fill up to `row` (rows of events that lacked it).
pub(crate) fn pad(fr: &mut FieldRows, m: &Meta, row: usize) {
    if !m.aligned || fr.rows >= row {
        return;
    }
    let missing = row - fr.rows;
    if m.spec.kind.is_ragged() {
        fr.lens.extend(std::iter::repeat_n(0u64, missing));
    } else if m.fill_row.len() == 1 {
        fr.data.resize(fr.data.len() + missing, m.fill_row[0]);
    } else {
        for _ in 0..missing {
            fr.data.extend_from_slice(&m.fill_row);
        }
    }
    fr.present.extend(std::iter::repeat_n(0u8, missing));
    fr.rows = row;
}
