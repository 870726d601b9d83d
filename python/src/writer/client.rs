//! One Python writer handle's state: the crate's [`smdfs::Client`], the pending event (the
//! fields of the current event id, merged over `event()` calls with the same id and emitted
//! when the id changes, at `flush()` and at `done()`), and this handle's view of the schema
//! (so a value that disagrees with its field fails in the call that gave it).
//!
//! Invariant: a call that raises leaves the pending event as it was before the call; an
//! emitted event that the crate rejects is dropped whole, and what was written stays
//! readable. The crate batches and flushes only when told (`flush` under a released GIL):
//! the builder's own thresholds are set out of reach, so `event()` never blocks with the GIL
//! held.

use smdfs::sync::lock;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyDict;
use rustc_hash::FxHashMap;
use smdfs::{Dtype, Field, Value};

use super::convert::{Arena, Item, Kind2, Sig};
use crate::errors::{to_py, SchemaError};

/// What every handle of a run shares.
pub(crate) struct Common {
    /// Python callables called with each event's dict (plus `timestamp`).
    pub(crate) callbacks: Vec<Py<PyAny>>,
    /// Fields declared ragged.
    pub(crate) ragged: HashSet<String>,
    /// Fill values by path, as given (converted to the field's dtype at first sight).
    pub(crate) fills: HashMap<String, Py<PyAny>>,
    /// Signatures by path, over every handle of this process.
    pub(crate) sigs: Mutex<HashMap<String, (Sig, Option<String>)>>,
    /// Events per batch handed to a server.
    pub(crate) batch_events: usize,
    /// Bytes after which a batch is handed over early.
    pub(crate) batch_bytes: usize,
}

/// A handle's state (see the module doc).
pub(crate) struct State {
    pub(crate) client: Option<smdfs::Client>,
    pub(crate) common: Arc<Common>,
    ts: Option<u64>,
    /// True once a call for `ts` succeeded (a pending id whose calls all failed is no event).
    live: bool,
    arena: Arena,
    /// Callbacks only: the pending event as Python saw it.
    py_event: Option<Py<PyDict>>,
    /// Field → (signature, group) this handle has checked.
    known: FxHashMap<String, (Sig, Option<String>)>,
    events: usize,
    bytes: usize,
}

/// Bytes of an event above which it is handed to the crate with the GIL released.
const BIG_EVENT: usize = 1 << 18;

/// The crate's value for an arena item.
fn value<'a>(it: &Item, bytes: &'a [u8]) -> Value<'a> {
    let data = &bytes[it.start..it.end];
    let dtype = it.dtype.unwrap_or(Dtype::U8);
    match it.kind {
        Kind2::Scalar => {
            let mut bits = [0u8; 8];
            bits[..data.len()].copy_from_slice(data);
            Value::Scalar { dtype, bits }
        }
        Kind2::Array => Value::Array { dtype, shape: it.shape.clone(), data: Cow::Borrowed(data) },
        Kind2::Ragged => Value::Ragged { dtype, data: Cow::Borrowed(data) },
        Kind2::Bytes => Value::Bytes(Cow::Borrowed(data)),
        Kind2::Str => Value::Str(Cow::Borrowed(std::str::from_utf8(data).unwrap_or_default())),
    }
}

impl State {
    pub(crate) fn new(client: smdfs::Client, common: Arc<Common>) -> State {
        State {
            client: Some(client),
            common,
            ts: None,
            live: false,
            arena: Arena::default(),
            py_event: None,
            known: FxHashMap::default(),
            events: 0,
            bytes: 0,
        }
    }

    fn client(&mut self) -> PyResult<&mut smdfs::Client> {
        self.client.as_mut().ok_or_else(|| crate::errors::Error::new_err("this writer handle is closed (done())"))
    }

    /// `event(ts, *dicts, align_group=None, **fields)`.
    pub(crate) fn event(
        &mut self,
        py: Python<'_>,
        ts: u64,
        dicts: &[Bound<'_, PyAny>],
        fields: Option<&Bound<'_, PyDict>>,
        align_group: Option<&str>,
    ) -> PyResult<()> {
        self.client()?;
        if self.ts != Some(ts) {
            self.emit(py)?;
            self.ts = Some(ts);
        }
        let (n0, b0) = (self.arena.n, self.arena.bytes.len());
        let r = self.add_all(dicts, fields, align_group);
        if let Err(e) = r {
            self.arena.truncate(n0, b0);
            return Err(e);
        }
        self.live = true;
        if !self.common.callbacks.is_empty() {
            let d = match &self.py_event {
                Some(d) => d.bind(py).clone(),
                None => {
                    let d = PyDict::new(py);
                    self.py_event = Some(d.clone().unbind());
                    d
                }
            };
            for x in dicts {
                d.update(x.cast::<pyo3::types::PyMapping>()?)?;
            }
            if let Some(f) = fields {
                d.update(f.as_mapping())?;
            }
        }
        Ok(())
    }

    fn add_all(
        &mut self,
        dicts: &[Bound<'_, PyAny>],
        fields: Option<&Bound<'_, PyDict>>,
        align_group: Option<&str>,
    ) -> PyResult<()> {
        let n0 = self.arena.n;
        let ragged = &self.common.ragged;
        for d in dicts {
            if !d.is_instance_of::<PyDict>() {
                return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "event(): positional arguments after the id must be dicts of fields, got {}",
                    super::convert::type_name(d)
                )));
            }
            self.arena.add("", d, ragged)?;
        }
        if let Some(f) = fields {
            self.arena.add("", f.as_any(), ragged)?;
        }
        for i in n0..self.arena.n {
            self.check(i, align_group)?;
        }
        Ok(())
    }

    /// Checks new item `i` against the schema and the pending event's other fields.
    fn check(&mut self, i: usize, group: Option<&str>) -> PyResult<()> {
        let it = &self.arena.items[i];
        if let Some(prev) = self.arena.items[..i].iter().position(|p| p.path == it.path) {
            let _ = prev;
            return Err(SchemaError::new_err(format!(
                "field {:?}: given twice for event {} (each field once per event id)",
                it.path,
                self.ts.unwrap_or_default()
            )));
        }
        let sig = Sig::of(it);
        if let Some((known, g)) = self.known.get(it.path.as_str()) {
            return check_sig(&it.path, known, g.as_deref(), &sig, group);
        }
        // First sight on this handle: agree with the process, then tell the crate.
        let path = it.path.clone();
        {
            let mut sigs = lock(&self.common.sigs);
            if let Some((known, g)) = sigs.get(&path) {
                check_sig(&path, known, g.as_deref(), &sig, group)?;
            } else {
                smdfs::model::path::validate_path(&path).map_err(to_py)?;
                let client = self.client.as_mut().expect("checked by event()");
                if let Some(g) = group {
                    client.aligned_group(g, &path).map_err(to_py)?;
                }
                if let Some(f) = self.common.fills.get(&path) {
                    let fill = Python::attach(|py| fill_value(py, &path, f.bind(py), sig.dtype))?;
                    client.fill(&path, &fill).map_err(to_py)?;
                }
                sigs.insert(path.clone(), (sig.clone(), group.map(str::to_string)));
            }
        }
        self.known.insert(path, (sig, group.map(str::to_string)));
        Ok(())
    }

    /// Hands the pending event (if any) to the crate and calls the callbacks.
    pub(crate) fn emit(&mut self, py: Python<'_>) -> PyResult<()> {
        let Some(ts) = self.ts.take() else { return Ok(()) };
        if !std::mem::take(&mut self.live) {
            self.arena.clear();
            self.py_event = None;
            return Ok(());
        }
        if let Some(d) = self.py_event.take() {
            let d = d.bind(py);
            d.set_item("timestamp", ts)?;
            for cb in &self.common.callbacks {
                cb.bind(py).call1((d,))?;
            }
        }
        let bytes = self.arena.bytes.len();
        let r = {
            let (arena, client) = (&self.arena, self.client.as_mut().expect("checked by event()"));
            let mut send = || {
                let fields: Vec<Field<'_>> =
                    arena.used().iter().map(|it| (it.path.as_str(), value(it, &arena.bytes))).collect();
                client.event(ts, &fields)
            };
            if bytes > BIG_EVENT {
                py.detach(send)
            } else {
                send()
            }
        };
        self.arena.clear();
        r.map_err(to_py)?;
        self.events += 1;
        self.bytes += bytes;
        if self.events >= self.common.batch_events || self.bytes >= self.common.batch_bytes {
            self.flush_batch(py)?;
        }
        Ok(())
    }

    /// Hands the batch to the server, with the GIL released (may wait on back-pressure).
    fn flush_batch(&mut self, py: Python<'_>) -> PyResult<()> {
        self.events = 0;
        self.bytes = 0;
        let client = self.client()?;
        py.detach(|| client.flush()).map_err(to_py)
    }

    /// Emits the pending event and hands the batch over.
    pub(crate) fn flush(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.client.is_none() {
            return Ok(());
        }
        self.emit(py)?;
        self.flush_batch(py)
    }

    /// Flushes and finishes the handle (merging its state into the run's).
    pub(crate) fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        let r = self.flush(py);
        if let Some(c) = self.client.take() {
            let f = py.detach(|| c.finish()).map_err(to_py);
            return r.and(f);
        }
        r
    }

    /// Writes whole columns: row `i` of every column is one event with id `ts[i]`.
    /// `cols`: (path, item template, bytes of all rows, bytes per row) for fixed columns,
    /// or (path, per-row items in `rows_arena`) for ragged ones.
    pub(crate) fn batch(&mut self, py: Python<'_>, ts: &[u64], cols: &[Column<'_>]) -> PyResult<()> {
        self.client()?;
        self.emit(py)?;
        // Check each column's signature once, as a first event would.
        for c in cols {
            let it = c.template();
            self.arena.clear();
            self.arena.items.truncate(0);
            self.arena.items.push(it.clone());
            self.arena.n = 1;
            self.check(0, None)?;
        }
        self.arena.clear();
        // Whole columns for the crate's batch API where every column has one (no per-row
        // work); the per-row path otherwise.
        let whole: Option<Vec<Whole>> = cols.iter().map(Column::whole).collect();
        let mut done = 0usize;
        while done < ts.len() {
            let room = self.common.batch_events.saturating_sub(self.events).max(1);
            let end = (done + room).min(ts.len());
            let client = self.client.as_mut().expect("checked above");
            if let Some(whole) = &whole {
                let (r, bytes) = py.detach(|| {
                    let mut bytes = 0usize;
                    let sub: Vec<smdfs::Column<'_>> =
                        cols.iter().zip(whole).map(|(c, w)| c.chunk(w, done, end, &mut bytes)).collect();
                    (client.events(&ts[done..end], &sub), bytes)
                });
                r.map_err(|e| {
                    let e = to_py(e);
                    PyErr::from_type(e.get_type(py), format!("event_batch: {}", e.value(py)))
                })?;
                self.events += end - done;
                self.bytes += bytes;
                done = end;
                if self.events >= self.common.batch_events || self.bytes >= self.common.batch_bytes {
                    self.flush_batch(py)?;
                }
                continue;
            }
            let (r, bytes) = py.detach(|| {
                let mut bytes = 0usize;
                let mut fields: Vec<Field<'_>> = Vec::with_capacity(cols.len());
                for (row, &id) in ts.iter().enumerate().take(end).skip(done) {
                    fields.clear();
                    for c in cols.iter().filter(|c| c.present(row)) {
                        let v = c.row(row);
                        bytes += v.data().len();
                        fields.push((c.path(), v));
                    }
                    if let Err(e) = client.event(id, &fields) {
                        return (Err((row, e)), bytes);
                    }
                }
                (Ok(()), bytes)
            });
            if let Err((row, e)) = r {
                return Err(with_row(to_py(e), row, py));
            }
            self.events += end - done;
            self.bytes += bytes;
            done = end;
            if self.events >= self.common.batch_events || self.bytes >= self.common.batch_bytes {
                self.flush_batch(py)?;
            }
        }
        Ok(())
    }
}

fn with_row(e: PyErr, row: usize, py: Python<'_>) -> PyErr {
    let msg = format!("event_batch row {row}: {}", e.value(py));
    let t = e.get_type(py);
    PyErr::from_type(t, msg)
}

/// A column's presence and offsets for the crate's batch API (see [`Column::whole`]).
pub(crate) struct Whole {
    present: Option<Vec<bool>>,
    offsets: Vec<u64>,
}

/// One column of `event_batch`.
pub(crate) enum Column<'a> {
    /// Fixed rows: `data` holds all rows, `row_bytes` each.
    Fixed { item: Item, data: &'a [u8], row_bytes: usize, mask: Option<Vec<u8>> },
    /// Per-row values (ragged, bytes, text, or arrays not in native byte order): items into
    /// `bytes`; `mask` true where the event lacks the field.
    Rows { items: Vec<Item>, bytes: Vec<u8>, mask: Option<Vec<u8>> },
}

// SAFETY-free note: `Column` holds plain bytes; it is `Send`, so the row loop runs with the
// GIL released.
impl Column<'_> {
    fn template(&self) -> &Item {
        match self {
            Column::Fixed { item, .. } => item,
            Column::Rows { items, .. } => &items[0],
        }
    }

    /// False where a masked column has no value (the event lacks the field).
    fn present(&self, row: usize) -> bool {
        match self {
            Column::Fixed { mask: Some(m), .. } | Column::Rows { mask: Some(m), .. } => m[row] == 0,
            _ => true,
        }
    }

    fn path(&self) -> &str {
        &self.template().path
    }

    /// What the crate's batch API needs beyond the bytes: presence per row (numpy masks are
    /// true where a value is missing) and, for per-row values, offsets into one buffer
    /// (`None` when the rows are not laid out one after another).
    fn whole(&self) -> Option<Whole> {
        match self {
            Column::Fixed { mask, .. } => {
                Some(Whole { present: mask.as_ref().map(|m| m.iter().map(|&x| x == 0).collect()), offsets: vec![] })
            }
            Column::Rows { items, mask, .. } => {
                if !items[0].kind.kind().is_ragged() {
                    return None;
                }
                let es = items[0].dtype.unwrap_or(Dtype::U8).size();
                let mut offsets = Vec::with_capacity(items.len() + 1);
                offsets.push((items[0].start / es) as u64);
                for (k, it) in items.iter().enumerate() {
                    let next_ok = items.get(k + 1).is_none_or(|n| n.start == it.end);
                    if !next_ok || it.start % es != 0 || it.end % es != 0 {
                        return None;
                    }
                    offsets.push((it.end / es) as u64);
                }
                Some(Whole { present: mask.as_ref().map(|m| m.iter().map(|&x| x == 0).collect()), offsets })
            }
        }
    }

    /// Rows `a..b` as a crate column (adds their bytes to `bytes`).
    fn chunk<'s>(&'s self, w: &'s Whole, a: usize, b: usize, bytes: &mut usize) -> smdfs::Column<'s> {
        let path = self.path();
        let col = match self {
            Column::Fixed { item, data, row_bytes, .. } => {
                *bytes += (b - a) * row_bytes;
                let dtype = item.dtype.unwrap_or(Dtype::U8);
                smdfs::Column::raw(path, dtype, &item.shape[..], &data[a * row_bytes..b * row_bytes])
            }
            Column::Rows { items, bytes: values, .. } => {
                let it = &items[0];
                let dtype = it.dtype.unwrap_or(Dtype::U8);
                let kind = it.kind.kind();
                let offsets = &w.offsets[a..=b];
                *bytes += (offsets[b - a] - offsets[0]) as usize * dtype.size();
                smdfs::Column::raw_var(path, kind, dtype, values, offsets)
            }
        };
        match &w.present {
            Some(p) => col.present(&p[a..b]),
            None => col,
        }
    }

    fn row(&self, row: usize) -> Value<'_> {
        match self {
            Column::Fixed { item, data, row_bytes, .. } => {
                let mut it = item.clone();
                it.start = row * row_bytes;
                it.end = it.start + row_bytes;
                value(&it, data)
            }
            Column::Rows { items, bytes, .. } => value(&items[row], bytes),
        }
    }
}

fn check_sig(path: &str, known: &Sig, kg: Option<&str>, sig: &Sig, group: Option<&str>) -> PyResult<()> {
    if known != sig {
        return Err(SchemaError::new_err(format!(
            "field {path:?}: expected {}, got {}",
            known.describe(),
            sig.describe()
        )));
    }
    if group.is_some() && kg != group {
        return Err(SchemaError::new_err(format!(
            "field {path:?}: expected alignment group {:?}, got {:?}",
            kg.unwrap_or(""),
            group.unwrap_or("")
        )));
    }
    Ok(())
}

/// A fill value as a scalar of the field's dtype (exactly representable, or an error).
fn fill_value(py: Python<'_>, path: &str, v: &Bound<'_, PyAny>, dtype: Dtype) -> PyResult<Value<'static>> {
    let np = py.import("numpy")?;
    // numpy spells its boolean scalar type `bool_`.
    let name = if dtype == Dtype::Bool { "bool_" } else { dtype.numpy_name() };
    let bad = |why: String| {
        SchemaError::new_err(format!("fill value for field {path:?}: {v} is not a {dtype} value ({why})"))
    };
    let arr = np
        .call_method1("asarray", (v,))
        .and_then(|a| a.call_method1("astype", (np.getattr(name)?,)))
        .map_err(|e| bad(e.to_string()))?;
    // Exactly representable: converting back gives the same number (NaN allowed for floats).
    let same: bool = np
        .call_method1("array_equal", (&arr, np.call_method1("asarray", (v,))?, dtype.is_float()))
        .and_then(|b| b.extract())
        .unwrap_or(false);
    if !same || arr.getattr("ndim")?.extract::<usize>()? != 0 {
        return Err(bad("it does not convert exactly".into()));
    }
    let bytes: Vec<u8> = arr.call_method0("tobytes")?.extract()?;
    let mut bits = [0u8; 8];
    bits[..bytes.len()].copy_from_slice(&bytes);
    Ok(Value::Scalar { dtype, bits })
}
