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

use crate::error::{Error, Result};
use crate::model::dtype::Element;
use crate::model::value::{Kind, Value};
use crate::read::run::Run;
use crate::write::client::Client;
use crate::write::smalldata::SmallData;

mod series;

use series::*;
pub use series::{Recorded, Values};

const FIELD_PREFIX: &str = "unaligned_";
const MIXED_SUFFIX: &str = "#mixed";

/// A user sink: called with `(key, id, value)` for every recorded value.
pub type RecordCallback = Box<dyn FnMut(&str, u64, &Value<'_>) + Send>;

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
