//! [`Client`]: one worker's handle. It validates each event against the schema (resolving a
//! field through the shared registry once, then from its own cache), appends it to its
//! columnar batch (aligned fields padded with fill), and hands full batches to its server —
//! a channel to a server thread, or an MPI send to a server rank.

use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::model::batch::{Batch, FieldRows, GroupRows};
use crate::model::reduce::{contribute, Reducible, Reductions};
use crate::model::schema::{FieldId, FieldSpec, GroupId};
use crate::model::value::{Field, Kind, Value};
use crate::sync::{lock, write};
use crate::write::shared::Shared;

/// What a client caches about a field it has resolved.
struct Meta {
    spec: FieldSpec,
    id: FieldId,
    group: GroupId,
    aligned: bool,
    row_bytes: usize,
    fill_row: Vec<u8>,
}

/// Where a client's batches go.
pub(crate) enum Sink {
    Thread(SyncSender<Batch>),
    #[cfg(feature = "mpi")]
    Mpi(Box<crate::write::mpi::client::Sender>),
    /// An MPI server rank's handle: no events (the reason).
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    Refuse(String),
}

/// One worker's handle: validates events, batches them, hands batches to its server.
/// `Send`, not `Sync`: give each thread its own (`for_each_init(|| smd.client(), …)`).
pub struct Client {
    shared: Arc<Shared>,
    server: usize,
    sink: Sink,
    batch: Batch,
    cache: FxHashMap<Box<str>, usize>,
    metas: Vec<Meta>,
    /// Per meta: its slot in the current batch's fields.
    slots: Vec<Option<usize>>,
    resolved: Vec<usize>,
    touched: Vec<(GroupId, usize)>,
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
            metas: vec![],
            slots: vec![],
            resolved: vec![],
            touched: vec![],
            reductions: Reductions::new(),
            finished,
        }
    }

    /// The server (shard) this client sends to.
    pub fn server(&self) -> usize {
        self.server
    }

    fn resolve_slow(&mut self, path: &str, v: &Value<'_>) -> Result<usize> {
        let (spec, id, group, aligned) = {
            let mut reg = write(&self.shared.registry);
            let id = reg.resolve(path, v)?;
            let spec = reg.schema.fields[id as usize].clone();
            let gid = reg.group_id(&spec.group);
            let aligned = reg.schema.groups[gid as usize].aligned;
            (spec, id, gid, aligned)
        };
        let fill_row = if spec.kind == Kind::Fixed { spec.fill.repeat(spec.elements_per_row()) } else { vec![] };
        let row_bytes = spec.row_bytes();
        self.metas.push(Meta { spec, id, group, aligned, row_bytes, fill_row });
        self.slots.push(None);
        let mi = self.metas.len() - 1;
        self.cache.insert(path.into(), mi);
        Ok(mi)
    }

    /// Records one event. Every field is checked before anything is written, so a rejected
    /// event leaves the batch as it was.
    pub fn event<'v, F: AsRef<[Field<'v>]>>(&mut self, id: u64, fields: F) -> Result<()> {
        let fields = fields.as_ref();
        if self.finished {
            return Err(Error::Usage(match &self.sink {
                Sink::Refuse(why) => why.clone(),
                _ => "event() on a finished client".into(),
            }));
        }
        self.resolved.clear();
        for (path, v) in fields {
            let mi = match self.cache.get(*path) {
                Some(&mi) => {
                    self.metas[mi].spec.check(v)?;
                    mi
                }
                None => self.resolve_slow(path, v)?,
            };
            let m = &self.metas[mi];
            if m.spec.kind == Kind::Fixed && v.data().len() != m.row_bytes {
                return Err(Error::BadValue {
                    field: (*path).into(),
                    why: format!("{} needs {} bytes, data has {}", m.spec.describe(), m.row_bytes, v.data().len()),
                });
            }
            if self.resolved.contains(&mi) {
                return Err(Error::BadValue { field: (*path).into(), why: "given twice in one event".into() });
            }
            self.resolved.push(mi);
        }
        for cb in &self.shared.callbacks {
            cb(id, fields);
        }
        // Each group the event touches gets one row; an event with no fields is a row of
        // the run group (every aligned field filled).
        self.touched.clear();
        let run_group = [crate::model::schema::RUN_GROUP_ID];
        let groups: &[GroupId] = if self.resolved.is_empty() { &run_group } else { &[] };
        for g in groups.iter().copied().chain(self.resolved.iter().map(|&mi| self.metas[mi].group)) {
            if !self.touched.iter().any(|&(t, _)| t == g) {
                let slot = match self.batch.groups.iter().position(|r| r.group == g) {
                    Some(s) => s,
                    None => {
                        self.batch.groups.push(GroupRows { group: g, ids: Vec::new() });
                        self.batch.groups.len() - 1
                    }
                };
                self.batch.groups[slot].ids.push(id);
                self.touched.push((g, slot));
            }
        }
        for (k, &mi) in self.resolved.iter().enumerate() {
            let v = &fields[k].1;
            let m = &self.metas[mi];
            let gslot = self.touched.iter().find(|&&(t, _)| t == m.group).map(|&(_, s)| s).expect("group touched");
            let row = self.batch.groups[gslot].ids.len() - 1;
            let fslot = match self.slots[mi] {
                Some(s) => s,
                None => {
                    self.batch.fields.push(FieldRows { field: m.id, group_slot: gslot, ..Default::default() });
                    let s = self.batch.fields.len() - 1;
                    self.slots[mi] = Some(s);
                    s
                }
            };
            let fr = &mut self.batch.fields[fslot];
            pad(fr, m, row);
            let data = v.data();
            fr.data.extend_from_slice(data);
            if m.aligned {
                fr.present.push(1);
            }
            if m.spec.kind.is_ragged() {
                fr.lens.push((data.len() / m.spec.dtype.size()) as u64);
            }
            fr.rows += 1;
            self.batch.bytes += data.len();
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
        write(&self.shared.registry).assign_group(path, group)
    }

    /// Sets the fill value (a scalar of the field's dtype) of a field the run has not seen
    /// yet, as [`Builder::fill`](crate::Builder::fill) does before the run starts (for writers
    /// that learn the field's dtype only from its first value). A field already seen must
    /// already have it.
    pub fn fill(&mut self, path: &str, value: &Value<'_>) -> Result<()> {
        write(&self.shared.registry).set_fill(path, value.data().to_vec())
    }

    /// Contributes a value to the named reduction (read with `smd.sum/min/max(name)` after
    /// the client is finished or dropped).
    pub fn reduce<T: Reducible>(&mut self, name: &str, value: T) -> Result<()> {
        contribute(&mut self.reductions, name, value.to_num())
    }

    /// Hands the current batch to the server (blocks while the server's queue is full, or
    /// in MPI mode while `max_batches_in_flight` sends are unfinished).
    pub fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        // Aligned fields absent from the batch's last events are filled up to the group.
        self.seal();
        for s in &mut self.slots {
            *s = None;
        }
        match &mut self.sink {
            Sink::Thread(tx) => {
                let fresh = lock(&self.shared.pools[self.server]).pop().unwrap_or_default();
                let full = std::mem::replace(&mut self.batch, fresh);
                tx.send(full).map_err(|_| self.shared.server_error(self.server))
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
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Err(e) = self.finish_inner() {
            self.shared.set_server_error(self.server, format!("client flush on drop failed: {e}"));
        }
    }
}

/// Pads an aligned field's rows with fill up to `row` (rows of events that lacked it).
fn pad(fr: &mut FieldRows, m: &Meta, row: usize) {
    if !m.aligned || fr.rows >= row {
        return;
    }
    let missing = row - fr.rows;
    if m.spec.kind.is_ragged() {
        fr.lens.extend(std::iter::repeat_n(0u64, missing));
    } else {
        for _ in 0..missing {
            fr.data.extend_from_slice(&m.fill_row);
        }
    }
    fr.present.extend(std::iter::repeat_n(0u8, missing));
    fr.rows = row;
}
