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
/// The manifest's checksum member, the last one a writer puts in the file: the crc32c (8
/// lowercase hex digits) of every byte of the file before this text.
const CHECKSUM_SUFFIX_HEAD: &str = ",\n  \"crc32c\": \"";
/// The bytes after the checksum's hex digits: the end of the file.
const CHECKSUM_SUFFIX_TAIL: &str = "\"\n}\n";
/// Top-level keys of a manifest without a checksum (written before document revision 4).
const V1_KEYS: &[&str] = &["format", "version", "state", "shards", "schema", "summary", "stats", "index"];

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

    /// Checks that `data_hex` is lowercase hex of exactly the bytes the dtype and shape need
    /// (fixed kind), or of whole elements (ragged kinds), and that the path is valid.
    pub fn check(&self) -> std::result::Result<(), String> {
        let name = &self.path;
        crate::model::path::validate_path(name).map_err(|e| format!("summary value {name:?}: {e}"))?;
        let h = &self.data_hex;
        if !h.len().is_multiple_of(2) || !h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!("summary value {name:?}: data_hex is not lowercase hex bytes"));
        }
        let bytes = h.len() as u64 / 2;
        let es = self.dtype.size() as u64;
        match self.kind {
            Kind::Fixed => {
                let need = self
                    .shape
                    .iter()
                    .try_fold(es, |a, &d| a.checked_mul(d as u64))
                    .ok_or_else(|| format!("summary value {name:?}: shape {:?} overflows", self.shape))?;
                if bytes != need {
                    return Err(format!(
                        "summary value {name:?}: {} shape {:?} needs {need} bytes, data_hex holds {bytes}",
                        self.dtype.name(),
                        self.shape
                    ));
                }
                if self.dtype == Dtype::Bool && self.data().iter().any(|&b| b > 1) {
                    return Err(format!("summary value {name:?}: bool bytes must be 0 or 1"));
                }
            }
            _ => {
                if !self.shape.is_empty() || (self.kind != Kind::Ragged && self.dtype != Dtype::U8) {
                    return Err(format!("summary value {name:?}: a {:?} value must be u8 with shape []", self.kind));
                }
                if !bytes.is_multiple_of(es) {
                    return Err(format!(
                        "summary value {name:?}: {bytes} bytes are not whole {} elements",
                        self.dtype.name()
                    ));
                }
            }
        }
        Ok(())
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
    /// The index file's chunk checksums (document revision 5; absent before).
    #[serde(flatten)]
    pub chunks: ChunkCrcs,
}

/// Global offsets of a ragged field (`x_offsets`), precomputed at `done()`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RaggedIndexInfo {
    /// Field path.
    pub field: String,
    /// Offsets file, relative to the run directory.
    pub file: String,
    /// The offsets file's chunk checksums (document revision 5; absent before).
    #[serde(flatten)]
    pub chunks: ChunkCrcs,
}

/// Chunk size of the index files' checksums that `done()` writes: 1 MiB (a first read of a
/// chunk checks at most 1 MiB, ~0.1 ms).
pub const CHUNK_BYTES: u64 = 1 << 20;

/// The crc32c of each fixed-size chunk of an index or offsets file (document revision 5):
/// chunk `k` is the file's bytes `[k·chunk_bytes, min((k+1)·chunk_bytes, len))`, header
/// included. Both members are absent in manifests written before revision 5 (the reader then
/// checks the whole index at open); a reader checks a chunk the first time it serves a word of
/// it, so opening a run costs O(chunks), not O(rows).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkCrcs {
    /// Bytes per chunk (the last chunk may be shorter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_bytes: Option<u64>,
    /// crc32c of each chunk, in file order: `ceil(file length / chunk_bytes)` entries.
    #[serde(default, rename = "chunk_crc32c", skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<Vec<u32>>,
}

impl ChunkCrcs {
    /// The checksums of the file at `path`, in chunks of [`CHUNK_BYTES`].
    pub fn of_file(path: &Path) -> Result<ChunkCrcs> {
        Ok(ChunkCrcs { chunk_bytes: Some(CHUNK_BYTES), crc32c: Some(ChunkCrcs::of_chunks(path, 0, 1)?) })
    }

    /// The crc32c of chunks `first`, `first + step`, … (of [`CHUNK_BYTES`]) of the file at
    /// `path`, to its end: one chunk in memory at a time (an index file is 8 bytes per row),
    /// so ranks that split the chunks between them each read only their share.
    pub fn of_chunks(path: &Path, first: u64, step: u64) -> Result<Vec<u32>> {
        use std::os::unix::fs::FileExt;
        let f = fs::File::open(path).at(path)?;
        let len = f.metadata().at(path)?.len();
        let mut buf = vec![0u8; CHUNK_BYTES as usize];
        let mut crcs = Vec::new();
        let mut k = first;
        while k * CHUNK_BYTES < len {
            let n = (len - k * CHUNK_BYTES).min(CHUNK_BYTES) as usize;
            f.read_exact_at(&mut buf[..n], k * CHUNK_BYTES).at(path)?;
            crcs.push(crc32c::crc32c(&buf[..n]));
            k += step.max(1);
        }
        Ok(crcs)
    }

    /// The checksums of `bytes` in chunks of `chunk_bytes`.
    pub fn of_bytes(bytes: &[u8], chunk_bytes: u64) -> ChunkCrcs {
        let crcs = bytes.chunks(chunk_bytes.max(1) as usize).map(crc32c::crc32c).collect();
        ChunkCrcs { chunk_bytes: Some(chunk_bytes), crc32c: Some(crcs) }
    }

    /// `None` when the manifest has no checksums (written before revision 5), else the chunk
    /// size and the list if they fit a file of `len` bytes, or why not (damage: the reader
    /// treats the file as it treats an index that fails its checks).
    pub fn for_len(&self, len: u64) -> Option<std::result::Result<(u64, &[u32]), String>> {
        match (self.chunk_bytes, self.crc32c.as_deref()) {
            (None, None) => None,
            (Some(b), Some(c)) => Some(if !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&b) || b % 8 != 0 {
                Err(format!("chunk_bytes {b} is not a multiple of 8 in {MIN_CHUNK_BYTES}..={MAX_CHUNK_BYTES}"))
            } else if c.len() as u64 != len.div_ceil(b) {
                Err(format!(
                    "{} chunk checksums for a file of {len} bytes in chunks of {b} (expected {})",
                    c.len(),
                    len.div_ceil(b)
                ))
            } else {
                Ok((b, c))
            }),
            _ => Some(Err("chunk_bytes and chunk_crc32c must both be present or both absent".into())),
        }
    }
}

/// Smallest chunk size a reader accepts.
pub const MIN_CHUNK_BYTES: u64 = 4096;
/// Largest chunk size a reader accepts.
pub const MAX_CHUNK_BYTES: u64 = 1 << 30;

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
        let body = check_sum(&path, &bytes)?;
        let m: Manifest = serde_json::from_slice(&body).map_err(|e| Error::Corrupt {
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
        let corrupt = |why: String| Error::Corrupt { path: path.clone(), offset: 0, why };
        m.schema.check().map_err(|e| corrupt(format!("schema: {e}")))?;
        let mut seen = std::collections::HashSet::new();
        for s in &m.summary {
            s.check().map_err(corrupt)?;
            if !seen.insert(&s.path) {
                return Err(corrupt(format!("summary value {:?} appears twice", s.path)));
            }
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

    /// The manifest file's bytes: pretty-printed JSON whose last member is the `crc32c` of
    /// every byte before it.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let json = serde_json::to_vec_pretty(self).map_err(Error::encode("the manifest"))?;
        Ok(seal(&json))
    }

    /// Replaces the manifest atomically (write temp, fsync, rename, fsync directory).
    pub fn store(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(".manifest.json.tmp");
        let json = self.to_bytes()?;
        let mut f = File::create(&tmp).at(&tmp)?;
        f.write_all(&json).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        let path = dir.join(MANIFEST_FILE);
        fs::rename(&tmp, &path).at(&path)?;
        sync_dir(dir)
    }
}

/// Adds the checksum member to pretty-printed manifest JSON (which ends with `\n}`), or
/// replaces the one it has: the crc32c covers every byte before `,\n  "crc32c"`. Tools that
/// edit a manifest on purpose (tests, repair) reseal it with this.
pub fn seal(json: &[u8]) -> Vec<u8> {
    let mut body = match find_suffix(json) {
        Some(at) => json[..at].to_vec(),
        None => {
            let mut b = json.to_vec();
            while b.last().is_some_and(|c| c.is_ascii_whitespace()) {
                b.pop();
            }
            if b.last() == Some(&b'}') {
                b.pop();
            }
            while b.last().is_some_and(|c| c.is_ascii_whitespace()) {
                b.pop();
            }
            b
        }
    };
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(format!("{CHECKSUM_SUFFIX_HEAD}{crc:08x}{CHECKSUM_SUFFIX_TAIL}").as_bytes());
    body
}

/// Where the checksum member starts, if the file ends with one in the writer's layout.
fn find_suffix(bytes: &[u8]) -> Option<usize> {
    let tail = bytes.len().checked_sub(CHECKSUM_SUFFIX_HEAD.len() + 8 + CHECKSUM_SUFFIX_TAIL.len())?;
    (bytes[tail..].starts_with(CHECKSUM_SUFFIX_HEAD.as_bytes()) && bytes.ends_with(CHECKSUM_SUFFIX_TAIL.as_bytes()))
        .then_some(tail)
}

/// Checks the manifest's checksum and returns the JSON to decode (the file without its
/// checksum member, closed again). A manifest without one (written before document revision
/// 4) is accepted if it has only the keys such writers wrote: a damaged `crc32c` key is
/// then an unknown key, not a missing checksum.
fn check_sum<'a>(path: &Path, bytes: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>> {
    let corrupt = |offset: usize, why: String| Error::Corrupt { path: path.into(), offset: offset as u64, why };
    if let Some(at) = find_suffix(bytes) {
        let hex = &bytes[at + CHECKSUM_SUFFIX_HEAD.len()..at + CHECKSUM_SUFFIX_HEAD.len() + 8];
        let stored = std::str::from_utf8(hex)
            .ok()
            .filter(|h| h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| corrupt(at, "the crc32c member is not 8 lowercase hex digits".into()))?;
        let actual = crc32c::crc32c(&bytes[..at]);
        if stored != actual {
            return Err(corrupt(
                0,
                format!("checksum mismatch: the file's crc32c is {actual:08x}, its crc32c member says {stored:08x} (the manifest was damaged or edited)"),
            ));
        }
        let mut body = bytes[..at].to_vec();
        body.extend_from_slice(b"\n}");
        return Ok(std::borrow::Cow::Owned(body));
    }
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| corrupt(e.column(), e.to_string()))?;
    let obj = v.as_object().ok_or_else(|| corrupt(0, "the manifest is not a JSON object".into()))?;
    if obj.contains_key("crc32c") {
        return Err(corrupt(0, "the crc32c member is not the file's last, as writers put it".into()));
    }
    if let Some(k) = obj.keys().find(|k| !V1_KEYS.contains(&k.as_str())) {
        return Err(corrupt(0, format!("unknown key {k:?} in a manifest without a checksum")));
    }
    Ok(std::borrow::Cow::Borrowed(bytes))
}

/// fsyncs a directory so renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_manifest_round_trips_and_any_flipped_byte_fails_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::new(3);
        m.store(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), m);
        let bytes = std::fs::read(dir.path().join(MANIFEST_FILE)).unwrap();
        assert_eq!(seal(&bytes), bytes, "resealing a sealed manifest changes nothing");
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x20;
            std::fs::write(dir.path().join(MANIFEST_FILE), &b).unwrap();
            assert!(Manifest::load(dir.path()).is_err(), "byte {i} flipped is accepted");
        }
    }

    #[test]
    fn summary_bytes_must_match_dtype_and_shape() {
        let v = |dtype, shape: &[usize], hex: &str| SummaryValue {
            path: "n".into(),
            kind: Kind::Fixed,
            dtype,
            shape: shape.to_vec(),
            data_hex: hex.into(),
        };
        v(Dtype::U64, &[], "a086010000000000").check().unwrap();
        v(Dtype::U16, &[2], "01000200").check().unwrap();
        for (s, why) in [
            (v(Dtype::U64, &[], "zz"), "not lowercase hex"),
            (v(Dtype::U64, &[], "a0"), "needs 8 bytes"),
            (v(Dtype::U64, &[], "A086010000000000"), "not lowercase hex"),
            (v(Dtype::U8, &[usize::MAX, 3], "00"), "overflows"),
            (v(Dtype::Bool, &[], "02"), "0 or 1"),
        ] {
            let e = s.check().unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
