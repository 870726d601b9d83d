//! The run manifest (`manifest.json`): schema, shards, state, summary, statistics and the
//! global index's files.
//!
//! The manifest is replaced atomically: written to a temporary file, fsynced, renamed over
//! the old one, and the directory fsynced, so a reader sees the old or the new manifest,
//! never a mix. A manifest that says `writing` while no process holds the writer lock
//! (`super::lock`) is a *crashed* run.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::format::FORMAT_VERSION;
use crate::model::dtype::Dtype;
use crate::model::schema::{Schema, StatsMap};
use crate::model::value::{Kind, Value};

/// File name of the manifest in a run directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Directory of the global index files.
pub const INDEX_DIR: &str = "index";
/// Value of the manifest's `format` key.
pub const MANIFEST_FORMAT: &str = "smdfs-run";

/// Lifecycle state of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// A live writer holds the run.
    Writing,
    /// `done()` finished: shards closed, global index written.
    Complete,
    /// The writer went away without `done()`; the committed prefix is readable.
    Crashed,
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunState::Writing => "writing",
            RunState::Complete => "complete",
            RunState::Crashed => "crashed",
        })
    }
}

/// A value saved once per run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryValue {
    /// Name (a field path).
    pub path: String,
    /// Kind of value.
    pub kind: Kind,
    /// Element type.
    pub dtype: Dtype,
    /// Shape (fixed kind).
    pub shape: Vec<usize>,
    /// Little-endian bytes, hex encoded (exact for NaN and 64-bit integers).
    pub data_hex: String,
}

impl SummaryValue {
    /// Captures a value.
    pub fn new(path: &str, v: &Value<'_>) -> SummaryValue {
        let data_hex = v.data().iter().map(|b| format!("{b:02x}")).collect();
        SummaryValue { path: path.into(), kind: v.kind(), dtype: v.dtype(), shape: v.shape().to_vec(), data_hex }
    }

    /// The value's bytes.
    pub fn data(&self) -> Vec<u8> {
        (0..self.data_hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(self.data_hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect()
    }

    /// The value as f64 (first element), for display.
    pub fn as_f64(&self) -> Option<f64> {
        let d = self.data();
        (self.kind == Kind::Fixed && d.len() >= self.dtype.size()).then(|| self.dtype.to_f64(&d))
    }
}

/// Where the global index of one group is and what it covers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupIndexInfo {
    /// Group name.
    pub group: String,
    /// Index file, relative to the run directory.
    pub file: String,
    /// Total rows.
    pub rows: u64,
    /// Rows of this group in each shard when the index was built.
    pub shard_rows: Vec<u64>,
    /// Number of rows whose event id equals the previous row's.
    pub duplicates: u64,
    /// Up to 16 of the duplicated event ids.
    pub duplicate_ids: Vec<u64>,
}

/// Global offsets of a ragged field (`x_offsets`), precomputed at `done()`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RaggedIndexInfo {
    /// Field path.
    pub field: String,
    /// Offsets file, relative to the run directory.
    pub file: String,
}

/// The global index written at `done()`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexManifest {
    /// One entry per group.
    pub groups: Vec<GroupIndexInfo>,
    /// One entry per ragged field.
    pub ragged: Vec<RaggedIndexInfo>,
    /// Byte offset of each shard's close record in its log.
    pub close_offsets: Vec<u64>,
    /// Per aligned field: rows where the event lacked it (so opening never scans masks).
    #[serde(default)]
    pub missing: std::collections::BTreeMap<String, u64>,
}

/// The run manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `smdfs-run`.
    pub format: String,
    /// Format version (same as the shards').
    pub version: u32,
    /// Writing or complete (crashed is derived by readers).
    pub state: RunState,
    /// Number of shards (`shard-00000` …).
    pub shards: usize,
    /// The schema (complete once the run is complete; shards' logs are the source while writing).
    pub schema: Schema,
    /// Summary values.
    pub summary: Vec<SummaryValue>,
    /// Per-field statistics of numeric scalars.
    pub stats: StatsMap,
    /// The global index (complete runs).
    pub index: Option<IndexManifest>,
}

impl Manifest {
    /// A fresh manifest for a run being written.
    pub fn new(shards: usize) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            version: FORMAT_VERSION,
            state: RunState::Writing,
            shards,
            schema: Schema::new(),
            summary: vec![],
            stats: StatsMap::new(),
            index: None,
        }
    }

    /// Reads and checks a run's manifest.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match crate::format::file::read_regular(&path, crate::format::file::MANIFEST_LIMIT) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotARun { path: dir.into(), why: format!("no {MANIFEST_FILE}") })
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            path: path.clone(),
            offset: e.column() as u64,
            why: e.to_string(),
        })?;
        if m.format != MANIFEST_FORMAT {
            return Err(Error::NotARun { path: dir.into(), why: format!("manifest format is {:?}", m.format) });
        }
        if m.version != FORMAT_VERSION {
            return Err(Error::Version { path, found: m.version, supported: FORMAT_VERSION });
        }
        if m.shards > 1 << 16 {
            return Err(Error::Corrupt { path, offset: 0, why: format!("{} shards is more than 65536", m.shards) });
        }
        if let Some(ix) = &m.index {
            let names = ix.groups.iter().map(|g| &g.file).chain(ix.ragged.iter().map(|r| &r.file));
            if let Some(bad) = names.into_iter().find(|f| !crate::format::file::is_plain_in(f, INDEX_DIR)) {
                return Err(Error::Corrupt {
                    path,
                    offset: 0,
                    why: format!("index file {bad:?} is not a plain file name inside {INDEX_DIR}/"),
                });
            }
        }
        Ok(m)
    }

    /// Replaces the manifest atomically (write temp, fsync, rename, fsync directory).
    pub fn store(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(".manifest.json.tmp");
        let json = serde_json::to_vec_pretty(self).map_err(Error::encode("the manifest"))?;
        let mut f = File::create(&tmp).at(&tmp)?;
        f.write_all(&json).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        let path = dir.join(MANIFEST_FILE);
        fs::rename(&tmp, &path).at(&path)?;
        sync_dir(dir)
    }
}

/// fsyncs a directory so renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}
