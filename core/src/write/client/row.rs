//! The two per-event ways into a [`Client`]: `event(id, fields!{…})` (values by name) and
//! `begin(id).set(&h, v)….write()` ([`EventRow`], typed handles resolved once). Both append
//! straight into the batch and take the whole event back on any error.

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::model::handle::Put;
use crate::model::value::{Field, Kind, Value};
use crate::write::client::Client;

impl Client {
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
