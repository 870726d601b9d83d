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

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::model::batch::{Batch, FieldRows};
use crate::model::dtype::Element;
use crate::model::handle::{self, Put, Resolved};
use crate::model::reduce::{contribute, Reducible, Reductions};
use crate::model::schema::{FieldId, FieldSpec, GroupId, RUN_GROUP_ID};
use crate::model::value::{Field, Kind, Value};
use crate::sync::{lock, write};
use crate::write::shared::Shared;

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

    /// Adds a meta for field `id` (its spec read from the registry once).
    fn add_meta(&mut self, id: FieldId) -> usize {
        let (spec, group, aligned) = {
            let reg = crate::sync::read(&self.shared.registry);
            let spec = reg.schema.fields[id as usize].clone();
            let gid = reg.group_id(&spec.group);
            let aligned = reg.schema.groups[gid as usize].aligned;
            (spec, gid, aligned)
        };
        let fill_row = if spec.kind == Kind::Fixed { spec.fill.repeat(spec.elements_per_row()) } else { vec![] };
        let row_bytes = spec.row_bytes();
        self.metas.push(Meta { spec, id, group, aligned, row_bytes, fill_row, stamp: 0, handle_path: None });
        self.slots.push(None);
        let mi = self.metas.len() - 1;
        if self.by_id.len() <= id as usize {
            self.by_id.resize(id as usize + 1, NONE);
        }
        self.by_id[id as usize] = mi as u32;
        let g = group as usize;
        if self.gslots.len() <= g {
            self.gslots.resize(g + 1, NONE);
            self.gstamp.resize(g + 1, 0);
        }
        mi
    }

    /// The meta of a field given by name (registered at first sight, checked after).
    pub(crate) fn meta_by_path(&mut self, path: &str, v: &Value<'_>) -> Result<usize> {
        let hit = self.cache.get(path).copied();
        self.meta_checked(path, v, hit)
    }

    /// [`Client::meta_by_path`] for the `k`-th field of an event: events tend to name their
    /// fields in the same order, so the field at position `k` last time is tried first (one
    /// short compare instead of hashing the path).
    #[inline]
    fn meta_at(&mut self, k: usize, path: &str, v: &Value<'_>) -> Result<usize> {
        let guess = self.predict.get(k).copied().filter(|&mi| self.metas[mi].spec.path == path);
        let hit = guess.or_else(|| self.cache.get(path).copied());
        let mi = self.meta_checked(path, v, hit)?;
        if k >= self.predict.len() {
            self.predict.resize(k + 1, mi);
        }
        self.predict[k] = mi;
        Ok(mi)
    }

    #[inline]
    fn meta_checked(&mut self, path: &str, v: &Value<'_>, hit: Option<usize>) -> Result<usize> {
        if let Some(mi) = hit {
            let s = &self.metas[mi].spec;
            if v.kind() != s.kind || v.dtype() != s.dtype || (s.kind == Kind::Fixed && !same(v.shape(), &s.shape)) {
                s.check(v)?;
            }
            return Ok(mi);
        }
        let id = write(&self.shared.registry).resolve(path, v)?;
        let mi = match self.by_id.get(id as usize) {
            Some(&m) if m != NONE => m as usize,
            _ => self.add_meta(id),
        };
        self.cache.insert(path.into(), mi);
        Ok(mi)
    }

    /// The meta of a field given by a handle.
    #[inline]
    fn meta_by_handle(&mut self, r: &Resolved) -> Result<usize> {
        let mi = match self.by_id.get(r.id as usize) {
            Some(&m) if m != NONE => m as usize,
            _ => {
                if crate::sync::read(&self.shared.registry).schema.fields.get(r.id as usize).map(|f| f.path.as_str())
                    != Some(&*r.path)
                {
                    return Err(foreign(r));
                }
                self.add_meta(r.id)
            }
        };
        let m = &mut self.metas[mi];
        match &m.handle_path {
            Some(p) if Arc::ptr_eq(p, &r.path) => {}
            _ if *m.spec.path != *r.path => return Err(foreign(r)),
            _ => m.handle_path = Some(Arc::clone(&r.path)),
        }
        Ok(mi)
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
            let gslot = {
                if self.gslots.is_empty() {
                    self.gslots.push(NONE);
                    self.gstamp.push(0);
                }
                self.group_slot(RUN_GROUP_ID)
            };
            self.batch.groups[gslot].ids.push(id);
        }
        self.batch.events += 1;
        if self.batch.events >= self.shared.batch_events || self.batch.bytes >= self.shared.batch_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Records one event. Every field is checked; a rejected event leaves the batch as it was.
    pub fn event<'v, F: AsRef<[Field<'v>]>>(&mut self, id: u64, fields: F) -> Result<()> {
        let fields = fields.as_ref();
        self.open()?;
        for (k, (path, v)) in fields.iter().enumerate() {
            if let Err(e) = self.put_value(k, path, v, id) {
                self.rollback();
                return Err(e);
            }
        }
        for cb in &self.shared.callbacks {
            cb(id, fields);
        }
        self.close(id)
    }

    fn put_value(&mut self, k: usize, path: &str, v: &Value<'_>, id: u64) -> Result<()> {
        let mi = self.meta_at(k, path, v)?;
        let m = &self.metas[mi];
        let data = v.data();
        if m.spec.kind == Kind::Fixed && data.len() != m.row_bytes {
            return Err(Error::BadValue {
                field: path.into(),
                why: format!("{} needs {} bytes, data has {}", m.spec.describe(), m.row_bytes, data.len()),
            });
        }
        if m.stamp == self.stamp {
            return Err(Error::BadValue { field: path.into(), why: "given twice in one event".into() });
        }
        let elems = data.len() / m.spec.dtype.size();
        self.metas[mi].stamp = self.stamp;
        self.put(mi, id, data, elems);
        Ok(())
    }

    /// Starts event `id` for values given by handle: `c.begin(id).set(&energy, 1.5).set(&img,
    /// &pixels[..]).write()?`. Values go straight into the batch (one copy); the event counts
    /// once [`EventRow::write`] returns `Ok`. An error in any `set` (wrong array length, a
    /// field set twice, a handle of another run) is returned by `write`, and the event is
    /// taken back whole, as is an `EventRow` dropped without `write`.
    pub fn begin(&mut self, id: u64) -> EventRow<'_> {
        let err = self.open().err();
        EventRow { c: self, id, err, open: true }
    }

    fn put_handle<V, H: Put<V>>(&mut self, h: &H, v: V, id: u64) -> Result<()> {
        let r = h.resolved();
        let mi = self.meta_by_handle(r)?;
        if self.metas[mi].stamp == self.stamp {
            return Err(Error::BadValue { field: r.path.to_string(), why: "set twice in one event".into() });
        }
        let want = h.expected();
        h.with_bytes(v, |data, n| {
            if let Some(w) = want {
                if n != w {
                    let s = &self.metas[mi].spec;
                    return Err(Error::BadValue {
                        field: r.path.to_string(),
                        why: format!("{} needs {w} elements, got {n}", s.describe()),
                    });
                }
            }
            self.metas[mi].stamp = self.stamp;
            self.put(mi, id, data, n);
            Ok(())
        })
    }

    /// Calls the callbacks with the open event's values, read back from the batch.
    fn callbacks_from_batch(&self, id: u64) {
        let fields: Vec<Field<'_>> = self
            .row_sets
            .iter()
            .map(|&(mi, nb)| {
                let m = &self.metas[mi];
                let fr = &self.batch.fields[self.slots[mi].expect("a set field has a slot")];
                let data = &fr.data[fr.data.len() - nb..];
                let v = match m.spec.kind {
                    Kind::Fixed if m.spec.shape.is_empty() => {
                        let mut bits = [0u8; 8];
                        bits[..data.len()].copy_from_slice(data);
                        Value::Scalar { dtype: m.spec.dtype, bits }
                    }
                    Kind::Fixed => {
                        Value::Array { dtype: m.spec.dtype, shape: m.spec.shape.clone(), data: Cow::Borrowed(data) }
                    }
                    Kind::Ragged => Value::Ragged { dtype: m.spec.dtype, data: Cow::Borrowed(data) },
                    Kind::Bytes => Value::Bytes(Cow::Borrowed(data)),
                    Kind::Str => Value::Str(String::from_utf8_lossy(data)),
                };
                (m.spec.path.as_str(), v)
            })
            .collect();
        for cb in &self.shared.callbacks {
            cb(id, &fields);
        }
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
        for s in &mut self.gslots {
            *s = NONE;
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
        if let Err(e) = self.finish_inner() {
            self.shared.set_server_error(self.server, format!("client flush on drop failed: {e}"));
        }
    }
}

/// One event being written by handle (see [`Client::begin`]).
#[must_use = "an event counts only once write() returns Ok"]
pub struct EventRow<'c> {
    c: &'c mut Client,
    id: u64,
    err: Option<Error>,
    open: bool,
}

impl EventRow<'_> {
    /// Sets a field's value: a scalar handle takes a `T`, an array handle a `&[T]` of its
    /// shape's element count, a ragged handle any `&[T]`, bytes `&[u8]`, text `&str`.
    #[inline]
    pub fn set<V, H: Put<V>>(mut self, h: &H, v: V) -> Self {
        if self.err.is_none() {
            if let Err(e) = self.c.put_handle(h, v, self.id) {
                self.err = Some(e);
            }
        }
        self
    }

    /// Ends the event: `Ok` once it is in the batch (handed to the server when full); the
    /// first error of any `set` otherwise, with the event taken back.
    pub fn write(mut self) -> Result<()> {
        self.open = false;
        if let Some(e) = self.err.take() {
            self.c.rollback();
            return Err(e);
        }
        if !self.c.shared.callbacks.is_empty() {
            self.c.callbacks_from_batch(self.id);
        }
        self.c.close(self.id)
    }
}

impl Drop for EventRow<'_> {
    fn drop(&mut self) {
        if self.open && !self.c.finished {
            self.c.rollback();
        }
    }
}

/// A handle of another run, or of a field the run does not know under that id.
fn foreign(r: &Resolved) -> Error {
    Error::Usage(format!("field handle {:?} belongs to another run", r.path))
}

/// Shapes equal (an inline loop: a `memcmp` call costs more than these few words).
#[inline]
fn same(a: &[usize], b: &[usize]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
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
