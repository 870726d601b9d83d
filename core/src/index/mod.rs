//! The global index: for each alignment group, the run's rows in event-id order, each
//! mapped to (shard, row).
//!
//! Two encodings, whichever is smaller, both memory-mappable arrays of u64:
//! *dense* — one word per row, `shard << 48 | row`; *runs* — three words per run of
//! consecutive rows from one shard: `global_start, shard << 48 | row_start, len`.
//! Round-robin dealing (runs of length 1) costs 8 bytes per event; one client per server
//! costs 24 bytes per shard. Built at `done()` by sorting each shard's event ids (rayon,
//! stable: duplicates keep arrival order) and k-way merging; built the same way in memory
//! when a run has no index on disk (crashed or still writing).

use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{Error, IoContext, Result};
use crate::format::FORMAT_VERSION;

mod build;
mod check;
mod checked;
mod extend;
mod offsets;
// Used by MPI mode's `done()` (every rank builds a slice).
#[cfg(any(feature = "mpi", test))]
pub(crate) mod slice;

pub(crate) use build::build_global_index;
#[cfg(feature = "mpi")]
pub(crate) use build::shard_ids;
pub use build::{build_group, count_missing, IndexReport};
pub use checked::check_file_chunks;
pub use extend::{extend_group, Extended};
pub use offsets::{
    extend_offsets, load_offsets, load_offsets_checked, ragged_offsets, CheckedOffsets, ChunkedOffsets, OffsetsMap,
};

/// Magic of a group index file.
pub const INDEX_MAGIC: &[u8; 8] = b"SMDFSIDX";
/// Magic of a ragged offsets file.
pub const OFFSETS_MAGIC: &[u8; 8] = b"SMDFSOFF";
/// Header bytes of index and offsets files: magic, version u32, kind u32, rows u64, words u64.
pub const INDEX_HEADER_LEN: usize = 32;
/// Kind code: dense encoding.
pub const KIND_DENSE: u32 = 1;
/// Kind code: runs encoding.
pub const KIND_RUNS: u32 = 2;
const SHARD_SHIFT: u32 = 48;
const ROW_MASK: u64 = (1 << SHARD_SHIFT) - 1;

/// A location: row `row` of shard `shard`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Loc {
    /// Shard index.
    pub shard: usize,
    /// Row within the shard's group.
    pub row: u64,
}

/// Dense words per chunk of a chunked index (8 MiB; small in unit tests, so they cross chunks).
#[cfg(not(test))]
const CHUNK_WORDS: usize = 1 << 20;
#[cfg(test)]
const CHUNK_WORDS: usize = 64;

/// u64 words, owned or mapped from an index file, or (dense only) in shared chunks.
#[derive(Debug)]
enum Words {
    Owned(Vec<u64>),
    Mapped(Mmap),
    /// Dense words in chunks of [`CHUNK_WORDS`] (the last may be shorter), shared between the
    /// snapshots of a growing run: an extended index reuses every full chunk below the rows
    /// it keeps (`extend.rs`), so a refresh copies at most one chunk of the old index.
    Chunked(Vec<Arc<Vec<u64>>>),
    /// Mapped from an index file whose chunks are checked as they are served
    /// (`checked.rs`): use only through [`GroupIndex::serve`].
    Checked(Box<checked::Lazy<GroupIndex>>),
}

impl Words {
    /// The words as one slice (empty for chunked words: use [`Words::pieces`]).
    fn get(&self) -> &[u64] {
        match self {
            Words::Owned(v) => v,
            Words::Mapped(m) => bytemuck::try_cast_slice(&m[INDEX_HEADER_LEN..]).unwrap_or(&[]),
            Words::Checked(l) => bytemuck::try_cast_slice(&l.file.bytes()[INDEX_HEADER_LEN..]).unwrap_or(&[]),
            Words::Chunked(_) => &[],
        }
    }

    /// Word `i`.
    fn word(&self, i: usize) -> Option<u64> {
        match self {
            Words::Chunked(c) => c.get(i / CHUNK_WORDS).and_then(|c| c.get(i % CHUNK_WORDS)).copied(),
            w => w.get().get(i).copied(),
        }
    }

    /// Words `start..end` (clamped) as contiguous pieces, in order.
    fn pieces(&self, start: usize, end: usize) -> Vec<&[u64]> {
        match self {
            Words::Chunked(chunks) => {
                let mut out = Vec::new();
                let mut i = start;
                while i < end {
                    let Some(c) = chunks.get(i / CHUNK_WORDS) else { break };
                    let a = i % CHUNK_WORDS;
                    let b = c.len().min(a + (end - i));
                    if a >= b {
                        break;
                    }
                    out.push(&c[a..b]);
                    i += b - a;
                }
                out
            }
            w => {
                let all = w.get();
                let end = end.min(all.len());
                vec![&all[start.min(end)..end]]
            }
        }
    }
}

/// One group's global index.
#[derive(Debug)]
pub struct GroupIndex {
    rows: u64,
    runs: bool,
    words: Words,
}

impl GroupIndex {
    /// Number of rows.
    pub fn len(&self) -> u64 {
        self.rows
    }

    /// True if the group has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The index that serves words for rows `start..end`: this one, once the chunks of its
    /// file that hold them check (every chunk for the runs encoding, whose lookups search
    /// the whole file), or the one rebuilt from the shards when a chunk failed.
    fn serve(&self, start: u64, end: u64) -> &GroupIndex {
        let Words::Checked(l) = &self.words else { return self };
        let (a, b) = if self.runs {
            (0, u64::MAX)
        } else {
            let at = |r: u64| (INDEX_HEADER_LEN as u64).saturating_add(r.saturating_mul(8));
            (at(start), at(end))
        };
        l.instead(a, b).unwrap_or(self)
    }

    /// Number of runs (rows for the dense encoding).
    pub fn entries(&self) -> u64 {
        let me = self.serve(0, 0);
        if !std::ptr::eq(me, self) {
            return me.entries();
        }
        if self.runs {
            self.words.get().len() as u64 / 3
        } else {
            self.rows
        }
    }

    /// True for the runs encoding.
    pub fn is_runs(&self) -> bool {
        self.serve(0, 0).runs
    }

    /// The dense encoding's words (one per row, `shard << 48 | row`; decode with
    /// [`GroupIndex::unpack`]), for gathers that walk rows in a tight loop; `None` for runs
    /// and for an index extended by a live refresh (its words are in shared chunks).
    pub fn dense_words(&self) -> Option<&[u64]> {
        let me = self.serve(0, self.rows);
        if !std::ptr::eq(me, self) {
            return me.dense_words();
        }
        (!self.runs && !matches!(self.words, Words::Chunked(_))).then(|| self.words.get())
    }

    /// The dense encoding's words for global rows `start..end` as one slice, when they are
    /// in one piece (always for a built or mapped index; within one chunk for an extended
    /// one); `None` for runs, a range past the end, or one that crosses chunks.
    pub fn dense_range(&self, start: u64, end: u64) -> Option<&[u64]> {
        if start > end || end > self.rows {
            return None;
        }
        let me = self.serve(start, end);
        if !std::ptr::eq(me, self) {
            return me.dense_range(start, end);
        }
        if self.runs {
            return None;
        }
        match self.words.pieces(start as usize, end as usize).as_slice() {
            [one] if one.len() as u64 == end - start => Some(one),
            [] if start == end => Some(&[]),
            _ => None,
        }
    }

    /// Decodes one dense word into its location.
    #[inline]
    pub fn unpack(word: u64) -> Loc {
        unpack(word)
    }

    /// Where global row `i` lives.
    pub fn locate(&self, i: u64) -> Option<Loc> {
        if i >= self.rows {
            return None;
        }
        let me = self.serve(i, i + 1);
        if !std::ptr::eq(me, self) {
            return me.locate(i);
        }
        if !self.runs {
            return self.words.word(i as usize).map(unpack);
        }
        let w = self.words.get();
        let k = self.run_of(i)?;
        let l = unpack(w[3 * k + 1]);
        Some(Loc { shard: l.shard, row: l.row.saturating_add(i.saturating_sub(w[3 * k])) })
    }

    fn run_of(&self, i: u64) -> Option<usize> {
        let w = self.words.get();
        let n = w.len() / 3;
        // Last run whose start <= i.
        let (mut lo, mut hi) = (0usize, n);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if w[3 * mid] <= i {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        (n > 0).then_some(lo)
    }

    /// Calls `f(loc, n)` for each maximal stretch of global rows `start..end` that are
    /// consecutive rows of one shard, in order. This is the batched gather.
    pub fn for_each_segment(&self, start: u64, end: u64, mut f: impl FnMut(Loc, u64)) {
        let end = end.min(self.rows);
        if start >= end {
            return;
        }
        let me = self.serve(start, end);
        if !std::ptr::eq(me, self) {
            return me.for_each_segment(start, end, f);
        }
        let w = self.words.get();
        if self.runs {
            let Some(mut k) = self.run_of(start) else { return };
            let mut i = start;
            while i < end && 3 * k + 2 < w.len() {
                let (gs, l, len) = (w[3 * k], unpack(w[3 * k + 1]), w[3 * k + 2]);
                // Saturating: a damaged runs file must end the walk, not wrap or spin.
                let off = i.saturating_sub(gs);
                let n = len.saturating_sub(off).min(end - i);
                if n == 0 {
                    break;
                }
                f(Loc { shard: l.shard, row: l.row + off }, n);
                i += n;
                k += 1;
            }
        } else {
            // Stretches continue across pieces (chunks), so they are maximal either way.
            let mut open: Option<(u64, u64)> = None;
            for s in self.words.pieces(start as usize, end as usize) {
                let mut j = 0;
                while j < s.len() {
                    let first = s[j];
                    let mut n = 1;
                    while j + n < s.len() && s[j + n] == first + n as u64 {
                        n += 1;
                    }
                    open = match open {
                        Some((e, m)) if e + m == first => Some((e, m + n as u64)),
                        Some((e, m)) => {
                            f(unpack(e), m);
                            Some((first, n as u64))
                        }
                        None => Some((first, n as u64)),
                    };
                    j += n;
                }
            }
            if let Some((e, m)) = open {
                f(unpack(e), m);
            }
        }
    }

    /// Loads an index file, checking its header and size.
    pub fn load(path: &Path) -> Result<GroupIndex> {
        let file = crate::format::file::open_regular(path).at(path)?;
        // SAFETY: index files are written once at done() and never modified.
        let map = unsafe { Mmap::map(&file) }.at(path)?;
        GroupIndex::from_map(path, map)
    }

    /// Loads an index file whose chunk checksums the manifest records (`sums`; without them
    /// it is [`GroupIndex::load`]): its header and size are checked now, its words chunk by
    /// chunk as they are served. From the first chunk that fails, the index serves what
    /// `rebuild` builds from the shards instead, after telling `warn` why. `Err` when the
    /// header, the size or the checksum list is wrong: damage found at open.
    pub fn load_checked(
        path: &Path,
        sums: &crate::format::manifest::ChunkCrcs,
        rebuild: impl Fn() -> GroupIndex + Send + Sync + 'static,
        warn: impl Fn(String) + Send + Sync + 'static,
    ) -> Result<GroupIndex> {
        let file = crate::format::file::open_regular(path).at(path)?;
        // SAFETY: index files are written once at done() and never modified.
        let map = unsafe { Mmap::map(&file) }.at(path)?;
        let Some(header) = map.get(..INDEX_HEADER_LEN).map(<[u8]>::to_vec) else {
            return Err(Error::Corrupt { path: path.into(), offset: 0, why: "not an smdfs index file".into() });
        };
        let checked = checked::Checked::new(path, map, sums).map_err(|why| Error::Corrupt {
            path: path.into(),
            offset: 0,
            why,
        })?;
        let Some(checked) = checked else { return GroupIndex::load(path) };
        // The header decides how the words read; it is served (checked) before any word.
        let plain = GroupIndex::from_header(path, &header, checked.bytes().len())?;
        let lazy = checked::Lazy { file: checked, fallback: checked::Fallback::new(rebuild, warn) };
        Ok(GroupIndex { words: Words::Checked(Box::new(lazy)), ..plain })
    }

    fn from_map(path: &Path, map: Mmap) -> Result<GroupIndex> {
        let idx = GroupIndex::from_header(path, map.get(..INDEX_HEADER_LEN).unwrap_or(&map), map.len())?;
        Ok(GroupIndex { words: Words::Mapped(map), ..idx })
    }

    /// An index of the kind and rows a file's header gives (its words empty), checking the
    /// header against the file's length.
    fn from_header(path: &Path, map: &[u8], file_len: usize) -> Result<GroupIndex> {
        let bad = |why: String| Error::Corrupt { path: path.into(), offset: 0, why };
        if map.len() < INDEX_HEADER_LEN || &map[..8] != INDEX_MAGIC {
            return Err(bad("not an smdfs index file".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(map[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(map[o..o + 8].try_into().expect("8 bytes"));
        if u32_at(8) != FORMAT_VERSION {
            return Err(Error::Version { path: path.into(), found: u32_at(8), supported: FORMAT_VERSION });
        }
        let (kind, rows, words) = (u32_at(12), u64_at(16), u64_at(24));
        let want_words = match kind {
            KIND_DENSE => rows,
            KIND_RUNS if words % 3 == 0 => words,
            _ => return Err(bad(format!("unknown index kind {kind}"))),
        };
        if words != want_words || Some((file_len - INDEX_HEADER_LEN) as u64) != words.checked_mul(8) {
            return Err(bad(format!("header says {words} words, file has {file_len} bytes")));
        }
        Ok(GroupIndex { rows, runs: kind == KIND_RUNS, words: Words::Owned(Vec::new()) })
    }
}

pub(crate) fn pack(shard: usize, row: u64) -> u64 {
    ((shard as u64) << SHARD_SHIFT) | row
}

pub(crate) fn unpack(e: u64) -> Loc {
    Loc { shard: (e >> SHARD_SHIFT) as usize, row: e & ROW_MASK }
}

/// Most sorted stretches the streaming merge takes per shard before it sorts a permutation.
const MAX_STRETCHES: usize = 1 << 16;
