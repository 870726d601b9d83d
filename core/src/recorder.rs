//! [`Recorder`]: `record(key, value)` appends a value to the list under a key; `get(key)`
//! returns them all — one array when every value has the same dtype and shape, else a list —
//! over several sinks at once: the shard store (an smdfs run, persistent), an in-memory store
//! (what `get` reads while recording) and user callbacks.
//!
//! Keys are `/`-separated paths (`train/loss`) without `#`. Each key has its own ids, counting
//! from 0. In the shard store every key is an *unaligned* field — its own group, whose event
//! ids are the key's ids — so the run's view shows it as an HDF5 dataset plus a
//! `_timestamp` dataset of ids. Key `a/b` is stored as field `a/unaligned_b` (the `unaligned_`
//! prefix is how a field becomes its own group without declaring it before the run starts);
//! its first value fixes that field's kind, dtype and shape. A later value that disagrees goes
//! to the key's *mixed* field `a/unaligned_b#mixed` (bytes, each row a self-describing
//! value), so nothing is refused and `get` merges both by id. [`Recorder::close`] finishes
//! the run; [`Recorder::open`] reads it back read-only, in this or any other process — also a
//! run whose recorder died without closing (its committed prefix).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::dtype::{Dtype, Element};
use crate::error::{Error, Result};
use crate::path::validate_path;
use crate::reader::Run;
use crate::value::{Kind, Value};
use crate::writer::{Client, SmallData};

const FIELD_PREFIX: &str = "unaligned_";
const MIXED_SUFFIX: &str = "#mixed";

/// A user sink: called with `(key, id, value)` for every recorded value.
pub type RecordCallback = Box<dyn FnMut(&str, u64, &Value<'_>) + Send>;

/// All values recorded under one key, in id order.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    /// The values' ids (0, 1, 2, … for a key recorded by one recorder).
    pub ids: Vec<u64>,
    /// The values.
    pub values: Values,
}

/// The values of a key: one stacked array when they agree, else a list.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// Every value is a scalar or array of one dtype and shape `s`: one `Value::Array` of
    /// shape `[n, s...]` (C order).
    Array(Value<'static>),
    /// Values of differing dtype or shape, or of varying-length kinds (bytes, text, ragged).
    List(Vec<Value<'static>>),
}

impl Recorded {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The stacked array, if the values agree.
    pub fn as_array(&self) -> Option<&Value<'static>> {
        match &self.values {
            Values::Array(v) => Some(v),
            Values::List(_) => None,
        }
    }

    /// The values one by one (an array is split into its rows).
    pub fn to_list(&self) -> Vec<Value<'static>> {
        match &self.values {
            Values::List(l) => l.clone(),
            Values::Array(Value::Array { dtype, shape, data }) => {
                let row = shape[1..].to_vec();
                let rb = row.iter().product::<usize>() * dtype.size();
                (0..self.len()).map(|i| owned_value(Kind::Fixed, *dtype, &row, &data[i * rb..(i + 1) * rb])).collect()
            }
            Values::Array(v) => vec![v.clone()],
        }
    }

    /// Every element of the stacked array as `T` (flattened, C order). An error if the
    /// values do not form one array of `T`.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        match &self.values {
            Values::Array(Value::Array { dtype, data, .. }) if *dtype == T::DTYPE => Ok(T::from_bytes(data)),
            Values::Array(v) => Err(Error::Usage(format!("values are {}, not {}", v.describe(), T::DTYPE))),
            Values::List(_) => Err(Error::Usage("values differ in dtype or shape: use to_list()".into())),
        }
    }
}

/// The (kind, dtype, shape) a key's main field was fixed to.
#[derive(Clone, Debug, PartialEq)]
struct Spec {
    kind: Kind,
    dtype: Dtype,
    shape: Vec<usize>,
}

impl Spec {
    fn of(v: &Value<'_>) -> Spec {
        Spec { kind: v.kind(), dtype: v.dtype(), shape: v.shape().to_vec() }
    }
}

/// One key's values as rows of its main field plus its mixed rows, before stacking.
#[derive(Default)]
struct Series {
    spec: Option<Spec>,
    main_ids: Vec<u64>,
    /// Fixed kind: the rows' bytes back to back.
    main_fixed: Vec<u8>,
    /// Varying kinds: one value per row.
    main_var: Vec<Value<'static>>,
    mixed: Vec<(u64, Value<'static>)>,
}

impl Series {
    fn push(&mut self, id: u64, v: &Value<'_>) {
        let spec = self.spec.get_or_insert_with(|| Spec::of(v));
        if *spec != Spec::of(v) {
            self.mixed.push((id, v.clone().into_owned()));
        } else if spec.kind == Kind::Fixed {
            self.main_ids.push(id);
            self.main_fixed.extend_from_slice(v.data());
        } else {
            self.main_ids.push(id);
            self.main_var.push(v.clone().into_owned());
        }
    }

    /// Stacks the values: an array when there are no mixed rows and the kind is fixed.
    fn assemble(&self) -> Recorded {
        let Some(spec) = &self.spec else { return Recorded { ids: vec![], values: Values::List(vec![]) } };
        if self.mixed.is_empty() && spec.kind == Kind::Fixed {
            let mut shape = vec![self.main_ids.len()];
            shape.extend_from_slice(&spec.shape);
            let data = Cow::Owned(self.main_fixed.clone());
            return Recorded {
                ids: self.main_ids.clone(),
                values: Values::Array(Value::Array { dtype: spec.dtype, shape, data }),
            };
        }
        let rb = spec.shape.iter().product::<usize>() * spec.dtype.size();
        let main = self.main_ids.iter().enumerate().map(|(k, &id)| {
            let v = if spec.kind == Kind::Fixed {
                owned_value(Kind::Fixed, spec.dtype, &spec.shape, &self.main_fixed[k * rb..(k + 1) * rb])
            } else {
                self.main_var[k].clone()
            };
            (id, v)
        });
        let mut all: Vec<(u64, Value<'static>)> = main.chain(self.mixed.iter().cloned()).collect();
        all.sort_by_key(|(id, _)| *id);
        let (ids, values) = all.into_iter().unzip();
        Recorded { ids, values: Values::List(values) }
    }
}

/// A view of a value that borrows its data (no copy of an owned array).
fn borrowed<'a>(v: &'a Value<'_>) -> Value<'a> {
    match v {
        Value::Scalar { dtype, bits } => Value::Scalar { dtype: *dtype, bits: *bits },
        Value::Array { dtype, shape, data } => {
            Value::Array { dtype: *dtype, shape: shape.clone(), data: Cow::Borrowed(data) }
        }
        Value::Ragged { dtype, data } => Value::Ragged { dtype: *dtype, data: Cow::Borrowed(data) },
        Value::Bytes(b) => Value::Bytes(Cow::Borrowed(b)),
        Value::Str(t) => Value::Str(Cow::Borrowed(t)),
    }
}

/// Builds a value of a kind from its bytes.
fn owned_value(kind: Kind, dtype: Dtype, shape: &[usize], data: &[u8]) -> Value<'static> {
    match kind {
        Kind::Fixed if shape.is_empty() => {
            let mut bits = [0u8; 8];
            bits[..data.len().min(8)].copy_from_slice(&data[..data.len().min(8)]);
            Value::Scalar { dtype, bits }
        }
        Kind::Fixed => Value::Array { dtype, shape: shape.to_vec(), data: Cow::Owned(data.to_vec()) },
        Kind::Ragged => Value::Ragged { dtype, data: Cow::Owned(data.to_vec()) },
        Kind::Str => Value::Str(Cow::Owned(String::from_utf8_lossy(data).into_owned())),
        _ => Value::Bytes(Cow::Owned(data.to_vec())),
    }
}

/// A mixed row: kind, dtype, ndim (one byte each), ndim u64 dims, then the value's bytes.
fn encode_mixed(v: &Value<'_>) -> Vec<u8> {
    let kind = match v.kind() {
        Kind::Fixed => 0u8,
        Kind::Ragged => 1,
        Kind::Bytes => 2,
        _ => 3,
    };
    let dt = Dtype::ALL.iter().position(|d| *d == v.dtype()).unwrap_or(0) as u8;
    let mut out = vec![kind, dt, v.shape().len() as u8];
    for d in v.shape() {
        out.extend_from_slice(&(*d as u64).to_le_bytes());
    }
    out.extend_from_slice(v.data());
    out
}

fn decode_mixed(b: &[u8]) -> Option<Value<'static>> {
    let (&[kind, dt, ndim], rest) = b.split_first_chunk::<3>()?;
    let dtype = *Dtype::ALL.get(usize::from(dt))?;
    let dims_len = usize::from(ndim) * 8;
    let shape: Vec<usize> = rest
        .get(..dims_len)?
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as usize)
        .collect();
    let data = &rest[dims_len..];
    let kind = match kind {
        0 => Kind::Fixed,
        1 => Kind::Ragged,
        2 => Kind::Bytes,
        3 => Kind::Str,
        _ => return None,
    };
    Some(owned_value(kind, dtype, &shape, data))
}

/// The store field of a key (`a/b` → `a/unaligned_b`).
fn field_of(key: &str) -> String {
    match key.rsplit_once('/') {
        Some((dir, last)) => format!("{dir}/{FIELD_PREFIX}{last}"),
        None => format!("{FIELD_PREFIX}{key}"),
    }
}

/// The key of a store field and whether it is the key's mixed field.
fn key_of(field: &str) -> Option<(String, bool)> {
    let (dir, last) = match field.rsplit_once('/') {
        Some((d, l)) => (Some(d), l),
        None => (None, field),
    };
    let last = last.strip_prefix(FIELD_PREFIX)?;
    let (last, mixed) = match last.strip_suffix(MIXED_SUFFIX) {
        Some(l) => (l, true),
        None => (last, false),
    };
    if last.is_empty() {
        return None;
    }
    Some((dir.map_or_else(|| last.to_string(), |d| format!("{d}/{last}")), mixed))
}

fn validate_key(key: &str) -> Result<()> {
    validate_path(key)?;
    if key.contains('#') {
        return Err(Error::BadPath {
            path: key.escape_debug().to_string(),
            why: "'#' is reserved in recorder keys".into(),
        });
    }
    validate_path(&field_of(key))
}

/// Per-key state while recording.
struct KeyState {
    next_id: u64,
    spec: Spec,
    field: String,
    mixed: String,
}

/// The shard store: an smdfs run and the one client that feeds it.
struct Store {
    client: Option<Client>,
    smd: Option<SmallData>,
}

struct Writing {
    keys: HashMap<String, KeyState>,
    store: Option<Store>,
    memory: Option<HashMap<String, Series>>,
    callbacks: Vec<RecordCallback>,
}

struct Reading {
    run: Run,
    /// Key → (main field index, mixed field index) in the run's fields.
    keys: BTreeMap<String, (Option<usize>, Option<usize>)>,
}

enum Mode {
    Writing(Box<Writing>),
    Reading(Box<Reading>),
    Closed,
}

/// Configures a [`Recorder`]'s sinks. See [`Recorder::builder`].
pub struct RecorderBuilder {
    dir: Option<std::path::PathBuf>,
    memory: bool,
    callbacks: Vec<RecordCallback>,
}

impl RecorderBuilder {
    /// Persists into an smdfs run in `dir` (the shard store).
    pub fn store(mut self, dir: impl AsRef<Path>) -> Self {
        self.dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Keeps every value in memory too, so [`Recorder::get`] works while recording.
    /// Default on.
    pub fn memory(mut self, on: bool) -> Self {
        self.memory = on;
        self
    }

    /// Calls `f(key, id, value)` for every recorded value.
    pub fn callback(mut self, f: impl FnMut(&str, u64, &Value<'_>) + Send + 'static) -> Self {
        self.callbacks.push(Box::new(f));
        self
    }

    /// Starts the recorder (creates the run if a store was given).
    pub fn build(self) -> Result<Recorder> {
        let store = match self.dir {
            Some(dir) => {
                let smd = SmallData::builder(dir).servers(1).batch_events(1024).build()?;
                Some(Store { client: Some(smd.client()), smd: Some(smd) })
            }
            None => None,
        };
        let memory = self.memory.then(HashMap::new);
        Ok(Recorder {
            mode: Mode::Writing(Box::new(Writing { keys: HashMap::new(), store, memory, callbacks: self.callbacks })),
        })
    }
}

/// Records values under keys into several sinks; reads them back by key.
pub struct Recorder {
    mode: Mode,
}

impl Recorder {
    /// A recorder with the shard store in `dir` (a new smdfs run) and the in-memory store.
    pub fn create(dir: impl AsRef<Path>) -> Result<Recorder> {
        Recorder::builder().store(dir).build()
    }

    /// A recorder with only the in-memory store.
    pub fn in_memory() -> Recorder {
        Recorder {
            mode: Mode::Writing(Box::new(Writing {
                keys: HashMap::new(),
                store: None,
                memory: Some(HashMap::new()),
                callbacks: vec![],
            })),
        }
    }

    /// Chooses sinks: `Recorder::builder().store(dir).memory(false).callback(f).build()`.
    pub fn builder() -> RecorderBuilder {
        RecorderBuilder { dir: None, memory: true, callbacks: vec![] }
    }

    /// Opens a recorder's run read-only (closed, still recording, or crashed: what was
    /// committed). `record` on it is an error.
    pub fn open(dir: impl AsRef<Path>) -> Result<Recorder> {
        let run = Run::open(dir)?;
        let mut keys: BTreeMap<String, (Option<usize>, Option<usize>)> = BTreeMap::new();
        for (i, f) in run.fields().iter().enumerate() {
            if let Some((key, mixed)) = key_of(&f.spec.path) {
                let e = keys.entry(key).or_default();
                if mixed {
                    e.1 = Some(i);
                } else {
                    e.0 = Some(i);
                }
            }
        }
        Ok(Recorder { mode: Mode::Reading(Box::new(Reading { run, keys })) })
    }

    /// Appends `value` to the list under `key`; returns its id (the key's count so far).
    /// Every sink gets it: the store first (a value it refuses reaches no other sink and
    /// takes no id), then memory, then callbacks.
    pub fn record<'v>(&mut self, key: &str, value: impl Into<Value<'v>>) -> Result<u64> {
        let value = value.into();
        let Mode::Writing(w) = &mut self.mode else {
            return Err(Error::Usage("record() on a recorder opened read-only or closed".into()));
        };
        if let Value::Array { shape, data, dtype } = &value {
            if shape.iter().product::<usize>() * dtype.size() != data.len() {
                return Err(Error::BadValue { field: key.into(), why: format!("data does not fill shape {shape:?}") });
            }
        }
        let is_new = !w.keys.contains_key(key);
        if is_new {
            validate_key(key)?;
            let field = field_of(key);
            let mixed = format!("{field}{MIXED_SUFFIX}");
            w.keys.insert(key.to_string(), KeyState { next_id: 0, spec: Spec::of(&value), field, mixed });
        }
        let Some(k) = w.keys.get_mut(key) else {
            return Err(Error::NotFound { what: "recorder key", name: key.into() });
        };
        let id = k.next_id;
        if let Some(c) = w.store.as_mut().and_then(|s| s.client.as_mut()) {
            let sent = if k.spec == Spec::of(&value) {
                c.event(id, [(k.field.as_str(), borrowed(&value))])
            } else {
                let enc = encode_mixed(&value);
                c.event(id, [(k.mixed.as_str(), Value::Bytes(Cow::Borrowed(&enc)))])
            };
            if let Err(e) = sent {
                if is_new {
                    w.keys.remove(key);
                }
                return Err(e);
            }
        }
        k.next_id += 1;
        if let Some(m) = w.memory.as_mut() {
            match m.get_mut(key) {
                Some(s) => s.push(id, &value),
                None => m.entry(key.to_string()).or_default().push(id, &value),
            }
        }
        for cb in &mut w.callbacks {
            cb(key, id, &value);
        }
        Ok(id)
    }

    /// All values under `key`, in id order.
    pub fn get(&self, key: &str) -> Result<Recorded> {
        match &self.mode {
            Mode::Writing(w) => match &w.memory {
                Some(m) => m
                    .get(key)
                    .map(Series::assemble)
                    .ok_or_else(|| Error::NotFound { what: "recorder key", name: key.into() }),
                None => Err(Error::Usage(
                    "this recorder keeps no in-memory store: close it and read with Recorder::open".into(),
                )),
            },
            Mode::Reading(r) => {
                let &(main, mixed) =
                    r.keys.get(key).ok_or_else(|| Error::NotFound { what: "recorder key", name: key.into() })?;
                Ok(read_series(&r.run, main, mixed)?.assemble())
            }
            Mode::Closed => Err(Error::Usage("get() on a closed recorder".into())),
        }
    }

    /// Every key equal to `prefix` or under `prefix/` (all keys for `""`) with its values.
    pub fn get_all(&self, prefix: &str) -> Result<BTreeMap<String, Recorded>> {
        self.keys()
            .into_iter()
            .filter(|k| prefix.is_empty() || k == prefix || k.strip_prefix(prefix).is_some_and(|r| r.starts_with('/')))
            .map(|k| self.get(&k).map(|v| (k, v)))
            .collect()
    }

    /// Keys recorded so far (memory store or opened run), sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = match &self.mode {
            Mode::Writing(w) => w.keys.keys().cloned().collect(),
            Mode::Reading(r) => r.keys.keys().cloned().collect(),
            Mode::Closed => vec![],
        };
        k.sort_unstable();
        k
    }

    /// The key's values as a zero-copy slice of the run's shard (an opened recorder whose key
    /// holds only values of one shape of `T`), flattened in id order; `None` otherwise.
    pub fn get_slice<T: Element + bytemuck::Pod>(&self, key: &str) -> Result<Option<&[T]>> {
        let Mode::Reading(r) = &self.mode else { return Ok(None) };
        let &(main, mixed) =
            r.keys.get(key).ok_or_else(|| Error::NotFound { what: "recorder key", name: key.into() })?;
        let Some(main) = main else { return Ok(None) };
        if mixed.is_some_and(|m| field_rows(&r.run, m) > 0) {
            return Ok(None);
        }
        let f = r.run.field(&r.run.fields()[main].spec.path)?;
        if f.dtype() != T::DTYPE || f.spec().kind != Kind::Fixed {
            return Ok(None);
        }
        f.as_slice::<T>()
    }

    /// Finishes every sink: the store's run is completed (shards closed, index written) and
    /// can be opened by [`Recorder::open`]. Dropping a recorder closes it too, ignoring errors.
    pub fn close(mut self) -> Result<()> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<()> {
        let mode = std::mem::replace(&mut self.mode, Mode::Closed);
        if let Mode::Writing(w) = mode {
            let Some(mut s) = w.store else { return Ok(()) };
            let finished = s.client.take().map_or(Ok(()), Client::finish);
            let done = s.smd.take().map_or(Ok(()), |smd| smd.done().map(|_| ()));
            finished.and(done)?;
        }
        Ok(())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.close_inner();
    }
}

fn field_rows(run: &Run, i: usize) -> u64 {
    let g = run.fields()[i].group;
    run.groups()[g].index.len()
}

/// Reads one key's main and mixed fields from a run.
fn read_series(run: &Run, main: Option<usize>, mixed: Option<usize>) -> Result<Series> {
    let mut s = Series::default();
    let ids_of = |path: &str, n: u64| -> Result<Vec<u64>> {
        let mut ids = vec![0u64; n as usize];
        run.read_ids(path, 0, &mut ids)?;
        Ok(ids)
    };
    if let Some(m) = main {
        let spec = &run.fields()[m].spec;
        let f = run.field(&spec.path)?;
        s.spec = Some(Spec { kind: spec.kind, dtype: spec.dtype, shape: spec.shape.clone() });
        s.main_ids = ids_of(&spec.group, f.rows())?;
        if spec.kind == Kind::Fixed {
            s.main_fixed = vec![0u8; f.rows() as usize * f.row_bytes()];
            f.read_rows(0, &mut s.main_fixed)?;
        } else {
            s.main_var = (0..f.rows())
                .map(|i| f.ragged_row(i).map(|b| owned_value(spec.kind, spec.dtype, &[], b)))
                .collect::<Result<_>>()?;
        }
    }
    if let Some(m) = mixed {
        let spec = &run.fields()[m].spec;
        let f = run.field(&spec.path)?;
        let ids = ids_of(&spec.group, f.rows())?;
        for (i, id) in ids.into_iter().enumerate() {
            let b = f.ragged_row(i as u64)?;
            let v = decode_mixed(b).ok_or_else(|| Error::Corrupt {
                path: run.dir().to_path_buf(),
                offset: 0,
                why: format!("field {:?} row {i} is not a recorded value", spec.path),
            })?;
            if s.spec.is_none() {
                s.spec = Some(Spec::of(&v));
            }
            s.mixed.push((id, v));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_field_names_map_both_ways() {
        for k in ["loss", "train/loss", "a/b/c.d", "unaligned_x"] {
            assert_eq!(key_of(&field_of(k)), Some((k.to_string(), false)));
            assert_eq!(key_of(&format!("{}{MIXED_SUFFIX}", field_of(k))), Some((k.to_string(), true)));
        }
        assert!(validate_key("a#b").is_err());
        assert!(validate_key("").is_err());
    }

    #[test]
    fn mixed_values_encode_and_decode() {
        let img = [1u16, 2, 3, 4, 5, 6];
        for v in [Value::from(2.5f64), Value::array(&img, &[2, 3]), Value::from("text"), Value::ragged(&[1.0f32, 2.0])]
        {
            assert_eq!(decode_mixed(&encode_mixed(&v)), Some(v.into_owned()));
        }
    }

    #[test]
    fn in_memory_values_stack_when_shapes_agree_else_list() {
        let mut r = Recorder::in_memory();
        for i in 0..4 {
            assert_eq!(r.record("loss", i as f32).unwrap(), i);
        }
        let got = r.get("loss").unwrap();
        assert_eq!(got.to_vec::<f32>().unwrap(), vec![0.0, 1.0, 2.0, 3.0]);
        r.record("w", &[1i32, 2][..]).unwrap();
        r.record("w", &[1i32, 2, 3][..]).unwrap();
        let w = r.get("w").unwrap();
        assert!(w.as_array().is_none());
        assert_eq!(w.to_list()[1].shape(), &[3]);
    }
}
