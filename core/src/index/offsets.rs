//! Ragged fields' global offsets: element offsets (`rows + 1`) in index order, computed
//! from the shards' per-row lengths, or memory-mapped from `index/` where `done()` stored them.

use std::path::Path;

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
    let header_ok = map.len() >= INDEX_HEADER_LEN
        && &map[..8] == OFFSETS_MAGIC
        && map[8..INDEX_HEADER_LEN] == index_header(OFFSETS_MAGIC, KIND_DENSE, rows, rows + 1)[8..];
    if !header_ok || map.len() as u64 != INDEX_HEADER_LEN as u64 + 8 * (rows + 1) {
        return Err(Error::Corrupt { path: path.into(), offset: 0, why: format!("expected offsets for {rows} rows") });
    }
    Ok(OffsetsMap::Mapped(map))
}

/// Global offsets of a ragged field, owned or mapped.
#[derive(Debug)]
pub enum OffsetsMap {
    /// Computed at open.
    Owned(Vec<u64>),
    /// Mapped from `index/`.
    Mapped(Mmap),
}

impl OffsetsMap {
    /// The `rows + 1` offsets.
    pub fn get(&self) -> &[u64] {
        match self {
            OffsetsMap::Owned(v) => v,
            OffsetsMap::Mapped(m) => bytemuck::try_cast_slice(&m[INDEX_HEADER_LEN..]).unwrap_or(&[]),
        }
    }
}
