//! Building the global index: each shard's event ids (already sorted in stretches, one per
//! client batch) k-way merged into event-id order, stable so duplicates keep arrival order;
//! encoded dense or as runs, whichever the rule in `docs/FORMAT.md` picks; written to
//! `index/` at `done()`, or kept in memory for a run without one (crashed, still writing).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use rayon::prelude::*;

use super::*;
use crate::format::manifest::{ChunkCrcs, GroupIndexInfo, IndexManifest, Manifest, RaggedIndexInfo, INDEX_DIR};
use crate::format::Role;
use crate::shard::reader::Shard;

/// Sorted stretches `[start, end)` of a shard's id column (rows in ascending id order), or
/// `None` when the ids are too unsorted for stretches (more than the merge takes).
pub(crate) fn stretches(ids: &[u64]) -> Option<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut start = 0usize;
    for i in 1..ids.len() {
        if ids[i] < ids[i - 1] {
            out.push((start as u64, i as u64));
            start = i;
            if out.len() > MAX_STRETCHES {
                return None;
            }
        }
    }
    if !ids.is_empty() {
        out.push((start as u64, ids.len() as u64));
    }
    Some(out)
}

/// Merges one group's rows into stable event-id order (ties: shard, then row), calling
/// `emit(packed_entry)` per row. Each shard's event ids are mostly sorted already (every
/// client batch is), so the merge runs a heap over those sorted stretches and needs memory
/// only per stretch; a shard with too many stretches (ids in random order) gets a sorted
/// permutation instead. Returns the duplicate count and the first duplicated ids.
fn merge_group(ids: &[&[u64]], mut emit: impl FnMut(u64)) -> (u64, Vec<u64>) {
    // Per shard: sorted stretches [start, end) of rows, or a full sort order.
    type Plan = std::result::Result<Vec<(u64, u64)>, Vec<u64>>;
    let plans: Vec<Plan> = ids
        .par_iter()
        .map(|ts| {
            stretches(ts).ok_or_else(|| {
                let mut p: Vec<u64> = (0..ts.len() as u64).collect();
                p.par_sort_by_key(|&r| ts[r as usize]);
                p
            })
        })
        .collect();
    // Heap items: (id, shard, position, end); a position is a row (stretches) or an index
    // into the permutation, so equal ids pop in shard, then row order.
    let mut heap = BinaryHeap::new();
    for (s, plan) in plans.iter().enumerate() {
        match plan {
            Ok(st) => {
                for &(a, b) in st {
                    heap.push(Reverse((ids[s][a as usize], s, a, b)));
                }
            }
            Err(p) => {
                if let Some(&r) = p.first() {
                    heap.push(Reverse((ids[s][r as usize], s, 0, p.len() as u64)));
                }
            }
        }
    }
    let row_of = |s: usize, pos: u64| match &plans[s] {
        Ok(_) => pos,
        Err(p) => p[pos as usize],
    };
    let (mut dups, mut dup_ids, mut last) = (0u64, Vec::new(), None);
    while let Some(Reverse((id, s, pos, end))) = heap.pop() {
        emit(pack(s, row_of(s, pos)));
        if last == Some(id) {
            dups += 1;
            if dup_ids.len() < 16 && dup_ids.last() != Some(&id) {
                dup_ids.push(id);
            }
        }
        last = Some(id);
        if pos + 1 < end {
            heap.push(Reverse((ids[s][row_of(s, pos + 1) as usize], s, pos + 1, end)));
        }
    }
    (dups, dup_ids)
}

/// The runs encoding is kept when runs average at least this many rows.
const MIN_AVG_RUN: u64 = 16;

/// Collects merged entries: always dense (through `dense`), and runs while they stay few.
struct IndexSink<W> {
    dense: W,
    runs: Option<Vec<u64>>,
    rows: u64,
    max_runs: u64,
}

impl<W: FnMut(u64)> IndexSink<W> {
    fn new(dense: W, total: u64) -> Self {
        IndexSink { dense, runs: Some(Vec::new()), rows: 0, max_runs: total / MIN_AVG_RUN }
    }

    fn push(&mut self, e: u64) {
        (self.dense)(e);
        if let Some(r) = self.runs.as_mut() {
            let n = r.len();
            if n >= 3 && r[n - 2] + r[n - 1] == e {
                r[n - 1] += 1;
            } else if (n / 3) as u64 >= self.max_runs {
                self.runs = None;
            } else {
                r.extend_from_slice(&[self.rows, e, 1]);
            }
        }
        self.rows += 1;
    }
}

pub(crate) fn shard_ids<'a>(shards: &'a [Shard], group: &str) -> Vec<&'a [u64]> {
    shards.iter().map(|s| s.column(group, None, Role::Ts).map_or(&[][..], |c| s.u64s(c))).collect()
}

/// The whole-run merge, for tests of the sliced one.
#[cfg(test)]
pub(super) fn merge_for_tests(ids: &[&[u64]], emit: impl FnMut(u64)) -> (u64, Vec<u64>) {
    merge_group(ids, emit)
}

#[cfg(test)]
fn to_runs(dense: &[u64]) -> Vec<u64> {
    let mut sink = IndexSink::new(|_| {}, dense.len() as u64 * MIN_AVG_RUN);
    for &e in dense {
        sink.push(e);
    }
    sink.runs.expect("runs kept")
}

/// Builds one group's index in memory (runs without a stored index), choosing the smaller
/// encoding. Returns it with the duplicate count and the first duplicated ids.
pub fn build_group(shards: &[Shard], group: &str) -> (GroupIndex, u64, Vec<u64>) {
    let ids = shard_ids(shards, group);
    let total: u64 = ids.iter().map(|t| t.len() as u64).sum();
    let mut dense = Vec::with_capacity(total as usize);
    let mut sink = IndexSink::new(|e| dense.push(e), total);
    let (dups, dup_ids) = merge_group(&ids, |e| sink.push(e));
    let runs = sink.runs.take();
    drop(sink);
    let idx = match runs {
        Some(r) => GroupIndex { rows: total, runs: true, words: Words::Owned(r) },
        None => GroupIndex { rows: total, runs: false, words: Words::Owned(dense) },
    };
    (idx, dups, dup_ids)
}

pub(crate) fn index_header(magic: &[u8; 8], kind: u32, rows: u64, words: u64) -> [u8; INDEX_HEADER_LEN] {
    let mut h = [0u8; INDEX_HEADER_LEN];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&kind.to_le_bytes());
    h[16..24].copy_from_slice(&rows.to_le_bytes());
    h[24..32].copy_from_slice(&words.to_le_bytes());
    h
}

fn write_words(path: &Path, magic: &[u8; 8], kind: u32, rows: u64, words: &[u64]) -> Result<()> {
    let f = File::create(path).at(path)?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    w.write_all(&index_header(magic, kind, rows, words.len() as u64)).at(path)?;
    w.write_all(bytemuck::cast_slice(words)).at(path)?;
    let f = w.into_inner().map_err(|e| Error::io(path, e.into_error()))?;
    f.sync_all().at(path)
}

/// Merges one group and streams its dense index to `path` without holding it in memory;
/// the runs encoding replaces it when runs are long.
fn store_group(path: &Path, shards: &[Shard], group: &str) -> Result<(u64, u64, Vec<u64>)> {
    let ids = shard_ids(shards, group);
    let total: u64 = ids.iter().map(|t| t.len() as u64).sum();
    let f = File::create(path).at(path)?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut err = w.write_all(&index_header(INDEX_MAGIC, KIND_DENSE, total, total)).err();
    let mut sink = IndexSink::new(
        |e: u64| {
            if err.is_none() {
                err = w.write_all(&e.to_le_bytes()).err();
            }
        },
        total,
    );
    let (dups, dup_ids) = merge_group(&ids, |e| sink.push(e));
    let runs = sink.runs.take();
    drop(sink);
    if let Some(e) = err {
        return Err(Error::io(path, e));
    }
    match runs {
        Some(r) => {
            drop(w);
            write_words(path, INDEX_MAGIC, KIND_RUNS, total, &r)?;
        }
        None => {
            let f = w.into_inner().map_err(|e| Error::io(path, e.into_error()))?;
            f.sync_all().at(path)?;
        }
    }
    Ok((total, dups, dup_ids))
}

/// Per group, what building the index found.
#[derive(Clone, Debug)]
pub struct IndexReport {
    /// Group name (`""` is the run).
    pub group: String,
    /// Rows.
    pub rows: u64,
    /// Rows whose event id repeats the previous row's.
    pub duplicates: u64,
    /// Up to 16 duplicated ids.
    pub duplicate_ids: Vec<u64>,
}

/// Builds and stores the global index of a closed run (called by `done()`).
pub(crate) fn build_global_index(
    dir: &Path,
    m: &Manifest,
    close_offsets: Vec<u64>,
) -> Result<(IndexManifest, Vec<IndexReport>)> {
    let shards: Vec<Shard> = (0..m.shards)
        .into_par_iter()
        .map(|i| Shard::load(dir, i, close_offsets.get(i).copied()))
        .collect::<Result<_>>()?;
    let idx_dir = dir.join(INDEX_DIR);
    std::fs::create_dir_all(&idx_dir).at(&idx_dir)?;
    let mut groups = Vec::new();
    let mut reports = Vec::new();
    let mut loaded = Vec::new();
    for (gi, g) in m.schema.groups.iter().enumerate() {
        let file = format!("{INDEX_DIR}/g{gi:05}.idx");
        let (rows, dups, dup_ids) = store_group(&dir.join(&file), &shards, &g.name)?;
        loaded.push(GroupIndex::load(&dir.join(&file))?);
        groups.push(GroupIndexInfo {
            group: g.name.clone(),
            chunks: ChunkCrcs::of_file(&dir.join(&file))?,
            file,
            rows,
            shard_rows: shards.iter().map(|s| s.group_rows(&g.name)).collect(),
            duplicates: dups,
            duplicate_ids: dup_ids.clone(),
        });
        reports.push(IndexReport { group: g.name.clone(), rows, duplicates: dups, duplicate_ids: dup_ids });
    }
    let mut ragged = Vec::new();
    for (fi, f) in m.schema.fields.iter().enumerate().filter(|(_, f)| f.kind.is_ragged()) {
        let Some(gi) = m.schema.groups.iter().position(|g| g.name == f.group) else { continue };
        let offs = ragged_offsets(&shards, &loaded[gi], &f.group, &f.path);
        let file = format!("{INDEX_DIR}/f{fi:05}.off");
        write_words(&dir.join(&file), OFFSETS_MAGIC, KIND_DENSE, loaded[gi].rows, &offs)?;
        let chunks = ChunkCrcs::of_file(&dir.join(&file))?;
        ragged.push(RaggedIndexInfo { field: f.path.clone(), file, chunks });
    }
    let mut missing = std::collections::BTreeMap::new();
    for f in &m.schema.fields {
        let aligned = m.schema.groups.iter().find(|g| g.name == f.group).is_some_and(|g| g.aligned);
        if aligned {
            missing.insert(f.path.clone(), count_missing(&shards, &f.group, &f.path));
        }
    }
    crate::format::manifest::sync_dir(&idx_dir)?;
    Ok((IndexManifest { groups, ragged, close_offsets, missing }, reports))
}

/// Rows of an aligned field whose events lacked it, over all shards (a shard without the
/// field's columns lacks it in every row of the group).
pub fn count_missing(shards: &[Shard], group: &str, field: &str) -> u64 {
    shards
        .iter()
        .map(|s| match s.column(group, Some(field), Role::Present) {
            Some(p) => s.bytes(p).iter().filter(|&&b| b == 0).count() as u64,
            None => s.group_rows(group),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_stable_and_counts_duplicates() {
        let a = [5u64, 1, 3];
        let b = [2u64, 3, 9];
        let mut d = Vec::new();
        let (dups, ids) = merge_group(&[&a, &b], |e| d.push(e));
        let locs: Vec<_> = d.iter().map(|&e| unpack(e)).map(|l| (l.shard, l.row)).collect();
        assert_eq!(locs, vec![(0, 1), (1, 0), (0, 2), (1, 1), (0, 0), (1, 2)]);
        assert_eq!((dups, ids), (1, vec![3]));
    }

    #[test]
    fn ids_in_random_order_merge_through_a_permutation_like_sorted_stretches() {
        // Far more descents than MAX_STRETCHES: the permutation path.
        let mut rng = crate::read::shuffle::SplitMix::new(3);
        let a: Vec<u64> = (0..300_000).map(|_| rng.below(1_000_000)).collect();
        let b: Vec<u64> = (0..1000).collect();
        let mut d = Vec::new();
        merge_group(&[&a, &b], |e| d.push(e));
        let idv: Vec<u64> = d
            .iter()
            .map(|&e| unpack(e))
            .map(|l| if l.shard == 0 { a[l.row as usize] } else { b[l.row as usize] })
            .collect();
        assert_eq!(idv.len(), 301_000);
        assert!(idv.windows(2).all(|w| w[0] <= w[1]));
        // Stability: equal ids keep shard, then row order.
        for w in d.windows(2) {
            let (x, y) = (unpack(w[0]), unpack(w[1]));
            let (ix, iy) = (
                if x.shard == 0 { a[x.row as usize] } else { b[x.row as usize] },
                if y.shard == 0 { a[y.row as usize] } else { b[y.row as usize] },
            );
            if ix == iy {
                assert!((x.shard, x.row) < (y.shard, y.row));
            }
        }
    }

    #[test]
    fn runs_and_dense_encodings_locate_and_segment_alike() {
        let dense: Vec<u64> = vec![pack(0, 0), pack(0, 1), pack(0, 2), pack(1, 0), pack(0, 3), pack(1, 1), pack(1, 2)];
        let d = GroupIndex { rows: 7, runs: false, words: Words::Owned(dense.clone()) };
        let r = GroupIndex { rows: 7, runs: true, words: Words::Owned(to_runs(&dense)) };
        for i in 0..7 {
            assert_eq!(d.locate(i), r.locate(i));
        }
        for s in 0..7 {
            for e in s..=7 {
                let (mut a, mut b) = (vec![], vec![]);
                d.for_each_segment(s, e, |l, n| a.push((l, n)));
                r.for_each_segment(s, e, |l, n| b.push((l, n)));
                assert_eq!(a, b, "{s}..{e}");
                assert_eq!(a.iter().map(|x| x.1).sum::<u64>(), e - s);
            }
        }
    }
}
