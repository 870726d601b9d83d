//! Ragged fields' global offsets: element offsets (`rows + 1`) in index order, computed
//! from the shards' per-row lengths, or memory-mapped from `index/` where `done()` stored them.
//! A live refresh extends the previous snapshot's offsets ([`extend_offsets`]) in chunks of
//! the group index's chunk size shared between snapshots, as `extend.rs` does for the index:
//! the kept full chunks are the old snapshot's (no copy), so a refresh costs O(new rows +
//! interleaved tail + one chunk), not O(rows). A flat copy is made only if a reader asks for
//! the whole table as one slice ([`OffsetsMap::get`]).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use memmap2::Mmap;

use super::build::index_header;
use super::*;
use crate::format::Role;
use crate::shard::reader::Shard;

/// Global element offsets of a ragged field (`rows + 1` entries) in index order.
pub fn ragged_offsets(shards: &[Shard], index: &GroupIndex, group: &str, field: &str) -> Vec<u64> {
    let lens: Vec<&[u64]> =
        shards.iter().map(|s| s.column(group, Some(field), Role::Len).map_or(&[][..], |c| s.u64s(c))).collect();
    let mut out = Vec::with_capacity(index.len() as usize + 1);
    let mut acc = 0u64;
    out.push(0);
    index.for_each_segment(0, index.len(), |loc, n| {
        let l = lens.get(loc.shard).copied().unwrap_or(&[]);
        for r in loc.row..loc.row + n {
            acc = acc.saturating_add(l.get(r as usize).copied().unwrap_or(0));
            out.push(acc);
        }
    });
    out
}

/// Loads a ragged offsets file.
pub fn load_offsets(path: &Path, rows: u64) -> Result<OffsetsMap> {
    let file = crate::format::file::open_regular(path).at(path)?;
    // SAFETY: offsets files are written once at done() and never modified.
    let map = unsafe { Mmap::map(&file) }.at(path)?;
    check_header(path, &map, rows)?;
    Ok(OffsetsMap::Mapped(map))
}

/// Loads a ragged offsets file whose chunk checksums the manifest records (`sums`; without
/// them it is [`load_offsets`]): header and size are checked now, the offsets the first time
/// they are served (all of them for [`OffsetsMap::get`], the last chunk for
/// [`OffsetsMap::elements`]). If a chunk fails, the map serves what `rebuild` computes from
/// the shards instead, after telling `warn` why. `Err` for a wrong header, size or checksum
/// list: damage found at open.
pub fn load_offsets_checked(
    path: &Path,
    rows: u64,
    sums: &crate::format::manifest::ChunkCrcs,
    rebuild: impl Fn() -> Vec<u64> + Send + Sync + 'static,
    warn: impl Fn(String) + Send + Sync + 'static,
) -> Result<OffsetsMap> {
    let file = crate::format::file::open_regular(path).at(path)?;
    // SAFETY: offsets files are written once at done() and never modified.
    let map = unsafe { Mmap::map(&file) }.at(path)?;
    check_header(path, &map, rows)?;
    match super::checked::Checked::new(path, map, sums) {
        Err(why) => Err(Error::Corrupt { path: path.into(), offset: 0, why }),
        Ok(None) => load_offsets(path, rows),
        Ok(Some(file)) => {
            let lazy = super::checked::Lazy { file, fallback: super::checked::Fallback::new(rebuild, warn) };
            Ok(OffsetsMap::Checked(CheckedOffsets(Box::new(lazy))))
        }
    }
}

fn check_header(path: &Path, map: &[u8], rows: u64) -> Result<()> {
    let header_ok = map.len() >= INDEX_HEADER_LEN
        && &map[..8] == OFFSETS_MAGIC
        && map[8..INDEX_HEADER_LEN] == index_header(OFFSETS_MAGIC, KIND_DENSE, rows, rows + 1)[8..];
    if !header_ok || map.len() as u64 != INDEX_HEADER_LEN as u64 + 8 * (rows + 1) {
        return Err(Error::Corrupt { path: path.into(), offset: 0, why: format!("expected offsets for {rows} rows") });
    }
    Ok(())
}

/// A mapped offsets file served through its chunk checksums (see [`load_offsets_checked`]).
#[derive(Debug)]
pub struct CheckedOffsets(Box<super::checked::Lazy<Vec<u64>>>);

impl CheckedOffsets {
    /// Offsets of bytes `a..b` of the file, or the recomputed ones when a chunk failed.
    fn serve(&self, a: u64, b: u64) -> &[u64] {
        match self.0.instead(a, b) {
            Some(v) => v,
            None => bytemuck::try_cast_slice(&self.0.file.bytes()[INDEX_HEADER_LEN..]).unwrap_or(&[]),
        }
    }
}

/// Global offsets of a ragged field, owned or mapped.
#[derive(Debug)]
pub enum OffsetsMap {
    /// Computed at open.
    Owned(Vec<u64>),
    /// Mapped from `index/`.
    Mapped(Mmap),
    /// Mapped from `index/` and checked chunk by chunk as served (document revision 5).
    Checked(CheckedOffsets),
    /// Extended by a live refresh: chunks shared with earlier snapshots.
    Chunked(ChunkedOffsets),
}

/// Offsets in chunks of the group index's chunk size (the last may be shorter), shared
/// between the snapshots of a growing run; flattened once, on first need of one slice.
#[derive(Debug)]
pub struct ChunkedOffsets {
    chunks: Vec<Arc<Vec<u64>>>,
    flat: OnceLock<Vec<u64>>,
}

impl ChunkedOffsets {
    /// The shared chunks (for tests that check what snapshots share).
    pub fn chunks(&self) -> &[Arc<Vec<u64>>] {
        &self.chunks
    }

    fn at(&self, i: usize) -> Option<u64> {
        self.chunks.get(i / CHUNK_WORDS).and_then(|c| c.get(i % CHUNK_WORDS)).copied()
    }
}

/// The offsets of a ragged field over `index`, whose first `kept` rows are those `old` (the
/// previous snapshot's offsets) covers in the same order: `old`'s entries `0..=kept` kept —
/// its full chunks shared, not copied —, the rest summed from the shards' lengths. `None`
/// when `old` is too short for `kept`.
pub fn extend_offsets(
    old: &OffsetsMap,
    kept: u64,
    shards: &[Shard],
    index: &GroupIndex,
    group: &str,
    field: &str,
) -> Option<OffsetsMap> {
    let k = usize::try_from(kept).ok()?;
    let mut acc = old.at(k)?;
    let mut out = super::extend::Chunks::new();
    match old {
        OffsetsMap::Chunked(c) => {
            // Chunks that end at or before entry k are full and unchanged.
            let full = (k + 1) / CHUNK_WORDS;
            for ch in &c.chunks[..full] {
                out.share(ch);
            }
            if let Some(ch) = c.chunks.get(full) {
                out.extend_from_slice(&ch[..(k + 1) % CHUNK_WORDS]);
            }
        }
        o => out.extend_from_slice(o.get().get(..=k)?),
    }
    let lens: Vec<&[u64]> =
        shards.iter().map(|s| s.column(group, Some(field), Role::Len).map_or(&[][..], |c| s.u64s(c))).collect();
    index.for_each_segment(kept, index.len(), |loc, n| {
        let l = lens.get(loc.shard).copied().unwrap_or(&[]);
        for r in loc.row..loc.row + n {
            acc = acc.saturating_add(l.get(r as usize).copied().unwrap_or(0));
            out.push(acc);
        }
    });
    Some(OffsetsMap::Chunked(ChunkedOffsets { chunks: out.finish(), flat: OnceLock::new() }))
}

impl OffsetsMap {
    /// The `rows + 1` offsets.
    pub fn get(&self) -> &[u64] {
        match self {
            OffsetsMap::Owned(v) => v,
            OffsetsMap::Mapped(m) => bytemuck::try_cast_slice(&m[INDEX_HEADER_LEN..]).unwrap_or(&[]),
            OffsetsMap::Checked(c) => c.serve(0, u64::MAX),
            OffsetsMap::Chunked(c) => {
                c.flat.get_or_init(|| c.chunks.iter().flat_map(|ch| ch.iter().copied()).collect())
            }
        }
    }

    /// Number of offsets (`rows + 1`).
    pub fn len(&self) -> usize {
        match self {
            OffsetsMap::Chunked(c) => c.chunks.iter().map(|ch| ch.len()).sum(),
            OffsetsMap::Checked(c) => match c.0.fallback.built() {
                Some(v) => v.len(),
                None => (c.0.file.bytes().len() - INDEX_HEADER_LEN) / 8,
            },
            o => o.get().len(),
        }
    }

    /// True if there are no offsets (never for a loaded field: a group of 0 rows has one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offsets `a..b` (clamped) as contiguous pieces, in order. Checks only the chunks of a
    /// checked file that hold them and never flattens chunked offsets, so a read costs what
    /// it reads, not the table.
    pub fn pieces(&self, a: usize, b: usize) -> Vec<&[u64]> {
        let clamp = |s: &'_ [u64]| -> usize { b.min(s.len()) };
        match self {
            OffsetsMap::Chunked(c) => {
                let mut out = Vec::new();
                let mut i = a;
                while i < b {
                    let Some(ch) = c.chunks.get(i / CHUNK_WORDS) else { break };
                    let (x, y) = (i % CHUNK_WORDS, ch.len().min(i % CHUNK_WORDS + (b - i)));
                    if x >= y {
                        break;
                    }
                    out.push(&ch[x..y]);
                    i += y - x;
                }
                out
            }
            OffsetsMap::Checked(c) => {
                let at = |e: usize| (INDEX_HEADER_LEN as u64).saturating_add((e as u64).saturating_mul(8));
                let s = c.serve(at(a), at(b));
                let e = clamp(s);
                vec![&s[a.min(e)..e]]
            }
            o => {
                let s = o.get();
                let e = clamp(s);
                vec![&s[a.min(e)..e]]
            }
        }
    }

    /// Offset `i` (see [`OffsetsMap::pieces`]).
    pub fn at(&self, i: usize) -> Option<u64> {
        match self {
            OffsetsMap::Chunked(c) => c.at(i),
            OffsetsMap::Checked(c) => {
                let at = (INDEX_HEADER_LEN as u64).saturating_add((i as u64).saturating_mul(8));
                c.serve(at, at.saturating_add(8)).get(i).copied()
            }
            o => o.get().get(i).copied(),
        }
    }

    /// The first `i` for which `below(offset i)` is false, the offsets ascending (binary
    /// search through [`OffsetsMap::at`]: a checked file checks only the chunks it probes).
    pub fn partition_point(&self, below: impl Fn(u64) -> bool) -> usize {
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.at(mid).is_some_and(&below) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Copies the table's little-endian bytes from byte `at` into `out` (the view's
    /// `x_offsets` dataset); false if they end before `out` is full.
    pub fn read_bytes(&self, at: u64, out: &mut [u8]) -> bool {
        let Ok(at) = usize::try_from(at) else { return false };
        let (first, end) = (at / 8, (at + out.len()).div_ceil(8));
        let mut skip = at % 8;
        let mut pos = 0;
        for p in self.pieces(first, end) {
            let bytes: &[u8] = bytemuck::cast_slice(p);
            let take = (bytes.len() - skip).min(out.len() - pos);
            out[pos..pos + take].copy_from_slice(&bytes[skip..skip + take]);
            pos += take;
            skip = 0;
        }
        pos == out.len()
    }

    /// The last offset: the field's total elements. Checks only the last chunk of a checked
    /// file, so the view's plan never reads a whole offsets file at open.
    pub fn elements(&self) -> u64 {
        match self {
            OffsetsMap::Checked(c) => {
                let len = c.0.file.bytes().len() as u64;
                c.serve(len.saturating_sub(8), len).last().copied().unwrap_or(0)
            }
            OffsetsMap::Chunked(c) => c.chunks.last().and_then(|ch| ch.last()).copied().unwrap_or(0),
            o => o.get().last().copied().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same table owned and in shared chunks (small in unit tests, so reads cross them).
    fn both(v: &[u64]) -> (OffsetsMap, OffsetsMap) {
        let mut c = super::super::extend::Chunks::new();
        c.extend_from_slice(v);
        let chunked = OffsetsMap::Chunked(ChunkedOffsets { chunks: c.finish(), flat: OnceLock::new() });
        (OffsetsMap::Owned(v.to_vec()), chunked)
    }

    #[test]
    fn chunked_offsets_read_like_one_table_without_flattening() {
        let v: Vec<u64> = (0..1000u64).map(|i| i * 3 + i / 7).collect();
        let (flat, chunked) = both(&v);
        let OffsetsMap::Chunked(c) = &chunked else { unreachable!() };
        assert!(c.chunks.len() > 10);
        for m in [&flat, &chunked] {
            assert_eq!((m.len(), m.elements()), (1000, *v.last().unwrap()));
            for (a, b) in [(0, 1000), (60, 70), (64, 128), (999, 1000), (990, 1200), (5, 5)] {
                let got: Vec<u64> = m.pieces(a, b).concat();
                assert_eq!(got, v[a..b.min(1000)], "{a}..{b}");
            }
            for x in [0, 1, 500, 2000, 3427, u64::MAX] {
                assert_eq!(m.partition_point(|o| o <= x), v.partition_point(|&o| o <= x), "{x}");
            }
            let bytes: &[u8] = bytemuck::cast_slice(&v);
            for (at, n) in [(0, 8000), (3, 17), (509, 1030), (7990, 10)] {
                let mut out = vec![0u8; n];
                assert!(m.read_bytes(at as u64, &mut out));
                assert_eq!(out, bytes[at..at + n], "bytes {at}+{n}");
            }
            assert!(!m.read_bytes(7995, &mut [0u8; 6]), "past the end");
        }
        assert!(c.flat.get().is_none(), "nothing above flattened the chunks");
        assert_eq!(chunked.get(), &v[..]);
    }
}
