//! The global index built in slices, one per process (MPI mode's `done()`): the event-id
//! range is cut at splitters drawn from samples of every shard's ids, each process merges
//! only the rows whose ids fall in its range — binary-searching every shard's sorted
//! stretches for the range's ends, then the same stable k-way merge as `build` — and writes
//! its slice of the index file at the slice's place. No process ever holds or merges more
//! than its share, so the merge's time and memory divide by the number of processes.
//!
//! Invariants: ranges are disjoint by id and cover all ids, so the concatenation of the
//! slices in range order is exactly the whole-run merge (ties keep shard, then row order,
//! because equal ids fall in one range); the runs encoding stays maximal because a run cut by
//! a slice boundary is joined again by [`join_runs`] before anything is written.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::build::index_header;
pub(crate) use super::build::stretches;
use super::*;

/// Up to `k` ids of a shard, evenly spread over its rows (any order: only their values
/// matter, as samples of the id distribution).
pub(crate) fn sample(ids: &[u64], k: usize) -> Vec<u64> {
    if ids.is_empty() || k == 0 {
        return vec![];
    }
    let k = k.min(ids.len());
    (0..k).map(|j| ids[j * ids.len() / k]).collect()
}

/// `parts − 1` ascending splitters from weighted samples `(id, rows it stands for)`:
/// range r is `[split[r − 1], split[r])` (the first from 0, the last to the end), each
/// holding about an equal share of the rows.
pub(crate) fn splitters(samples: &mut [(u64, u64)], parts: usize) -> Vec<u64> {
    samples.sort_unstable();
    let total: u64 = samples.iter().map(|s| s.1).sum();
    let mut out = Vec::with_capacity(parts.saturating_sub(1));
    let (mut acc, mut i) = (0u64, 0usize);
    for r in 1..parts {
        let want = (total as u128 * r as u128 / parts as u128) as u64;
        while i < samples.len() && acc + samples[i].1 <= want {
            acc += samples[i].1;
            i += 1;
        }
        let s = samples.get(i).map_or(u64::MAX, |s| s.0);
        // Ascending, and never 0 past the first (an empty range is fine; a backwards one not).
        out.push(s.max(out.last().copied().unwrap_or(0)));
    }
    out
}

/// One process's slice of a group's index: the rows whose ids fall in its range.
#[derive(Debug, Default)]
pub(crate) struct Slice {
    /// Dense words (`shard << 48 | row`), in event-id order.
    pub(crate) dense: Vec<u64>,
    /// Maximal runs of consecutive rows of one shard in `dense` (counted, not stored: the
    /// runs words are made from `dense` only if the runs encoding is chosen).
    pub(crate) runs: u64,
    /// Rows in the first run.
    pub(crate) first_run: u64,
    /// Rows whose id repeats the previous row's (within the slice: ids never repeat across).
    pub(crate) duplicates: u64,
    /// Up to 16 duplicated ids.
    pub(crate) duplicate_ids: Vec<u64>,
}

/// Merges the rows of every shard whose ids are in `lo..hi` (`hi = None`: to the end), in
/// stable event-id order (ties: shard, then row). `stretches[s]` are shard `s`'s sorted
/// stretches ([`stretches`]).
pub(crate) fn merge_range(ids: &[&[u64]], stretches: &[Vec<(u64, u64)>], lo: u64, hi: Option<u64>) -> Slice {
    let mut heap = BinaryHeap::new();
    let mut rows = 0u64;
    for (s, (ts, st)) in ids.iter().zip(stretches).enumerate() {
        for &(a, b) in st {
            let run = &ts[a as usize..b as usize];
            let from = a + run.partition_point(|&x| x < lo) as u64;
            let to = a + hi.map_or(run.len(), |h| run.partition_point(|&x| x < h)) as u64;
            if from < to {
                heap.push(Reverse((ts[from as usize], s, from, to)));
                rows += to - from;
            }
        }
    }
    // Sized once: growing would copy, and fresh memory is slow to touch.
    let mut out = Slice { dense: Vec::with_capacity(rows as usize), ..Slice::default() };
    let mut last = None;
    while let Some(Reverse((id, s, pos, end))) = heap.pop() {
        let e = pack(s, pos);
        match out.dense.last() {
            Some(&p) if p + 1 == e => {
                if out.runs == 1 {
                    out.first_run += 1;
                }
            }
            _ => {
                out.runs += 1;
                if out.runs == 1 {
                    out.first_run = 1;
                }
            }
        }
        out.dense.push(e);
        if last == Some(id) {
            out.duplicates += 1;
            if out.duplicate_ids.len() < 16 && out.duplicate_ids.last() != Some(&id) {
                out.duplicate_ids.push(id);
            }
        }
        last = Some(id);
        if pos + 1 < end {
            heap.push(Reverse((ids[s][pos as usize + 1], s, pos + 1, end)));
        }
    }
    out
}

/// What every process tells the others about its slice, to place it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SliceInfo {
    pub(crate) rows: u64,
    pub(crate) runs: u64,
    /// First and last dense words (meaningless when `rows` is 0).
    pub(crate) first: u64,
    pub(crate) last: u64,
    /// Length of the slice's first run.
    pub(crate) first_run: u64,
}

impl SliceInfo {
    pub(crate) fn of(s: &Slice) -> SliceInfo {
        SliceInfo {
            rows: s.dense.len() as u64,
            runs: s.runs,
            first: s.dense.first().copied().unwrap_or(0),
            last: s.dense.last().copied().unwrap_or(0),
            first_run: s.first_run,
        }
    }
}

/// Where each slice goes once runs cut at slice boundaries are joined again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Placement {
    /// Global row of each slice's first row.
    pub(crate) row: Vec<u64>,
    /// Run number of each slice's first written run.
    pub(crate) run: Vec<u64>,
    /// Whether a slice's first run continues the previous slice's last run (then it is not
    /// written; the run it continues grows instead).
    pub(crate) skip_first: Vec<bool>,
    /// Rows to add to each slice's last written run (the runs that continue it).
    pub(crate) grow_last: Vec<u64>,
    /// Totals over all slices: rows, maximal runs.
    pub(crate) rows: u64,
    pub(crate) runs: u64,
}

/// Places every slice (the same answer on every process, from every slice's info).
pub(crate) fn join_runs(infos: &[SliceInfo]) -> Placement {
    let n = infos.len();
    let mut p = Placement {
        row: vec![0; n],
        run: vec![0; n],
        skip_first: vec![false; n],
        grow_last: vec![0; n],
        ..Placement::default()
    };
    // The slice holding the open run (the last run written so far) and its last word.
    let mut open: Option<(usize, u64)> = None;
    for (r, i) in infos.iter().enumerate() {
        p.row[r] = p.rows;
        p.run[r] = p.runs;
        if i.rows == 0 {
            continue;
        }
        let joins = matches!(open, Some((_, last)) if last + 1 == i.first);
        let mut written = i.runs;
        if joins {
            let (owner, _) = open.expect("checked");
            p.skip_first[r] = true;
            p.grow_last[owner] += i.first_run;
            written -= 1;
        }
        p.rows += i.rows;
        p.runs += written;
        // The open run: this slice's last, unless its only run joined the one before.
        if written > 0 {
            open = Some((r, i.last));
        } else if let Some((owner, _)) = open {
            open = Some((owner, i.last));
        }
    }
    p
}

/// Creates an index or offsets file of `words` words with its header, to be filled in place
/// by [`write_words_at`] (sized now, so every process writes into the same file).
pub(crate) fn create_file(path: &Path, magic: &[u8; 8], kind: u32, rows: u64, words: u64) -> Result<()> {
    let f = File::create(path).at(path)?;
    f.write_all_at(&index_header(magic, kind, rows, words), 0).at(path)?;
    f.set_len(INDEX_HEADER_LEN as u64 + 8 * words).at(path)?;
    Ok(())
}

/// Writes `words` at word `at` of a file [`create_file`] made, and makes them durable.
pub(crate) fn write_words_at(path: &Path, at: u64, words: &[u64]) -> Result<()> {
    if words.is_empty() {
        return Ok(());
    }
    let f = OpenOptions::new().write(true).open(path).at(path)?;
    f.write_all_at(bytemuck::cast_slice(words), INDEX_HEADER_LEN as u64 + 8 * at).at(path)?;
    f.sync_data().at(path)
}

/// A slice's words as they go into the file: dense as they are; runs with starts made
/// global, the first run dropped if it joined the previous slice's, the last grown.
pub(crate) fn placed_runs(s: &Slice, row: u64, skip_first: bool, grow_last: u64) -> Vec<u64> {
    let mut w: Vec<u64> = Vec::with_capacity(3 * s.runs as usize);
    for (i, &e) in s.dense.iter().enumerate() {
        let n = w.len();
        if n >= 3 && w[n - 2] + w[n - 1] == e {
            w[n - 1] += 1;
        } else {
            w.extend_from_slice(&[row + i as u64, e, 1]);
        }
    }
    if skip_first {
        w.drain(..3.min(w.len()));
    }
    if let Some(len) = w.last_mut() {
        *len += grow_last;
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole-run merge, through the slices of `parts` ranges, as (dense, runs, dups).
    fn by_slices(ids: &[&[u64]], parts: usize) -> (Vec<u64>, Vec<u64>, u64) {
        let st: Vec<_> = ids.iter().map(|t| stretches(t).unwrap()).collect();
        let mut samples: Vec<(u64, u64)> = ids
            .iter()
            .flat_map(|t| {
                let s = sample(t, 5);
                let w = t.len() as u64 / s.len().max(1) as u64;
                s.into_iter().map(move |x| (x, w.max(1)))
            })
            .collect();
        let split = splitters(&mut samples, parts);
        let slices: Vec<Slice> = (0..parts)
            .map(|r| {
                let lo = if r == 0 { 0 } else { split[r - 1] };
                merge_range(ids, &st, lo, split.get(r).copied())
            })
            .collect();
        let infos: Vec<SliceInfo> = slices.iter().map(SliceInfo::of).collect();
        let p = join_runs(&infos);
        let (mut dense, mut runs, mut dups) = (vec![], vec![], 0);
        for (r, s) in slices.iter().enumerate() {
            assert_eq!(p.row[r], dense.len() as u64);
            assert_eq!(p.run[r], runs.len() as u64 / 3);
            dense.extend_from_slice(&s.dense);
            let mut w = placed_runs(s, p.row[r], p.skip_first[r], 0);
            if p.grow_last[r] > 0 {
                let n = w.len();
                w[n - 1] += p.grow_last[r];
            }
            runs.extend_from_slice(&w);
            dups += s.duplicates;
        }
        assert_eq!(p.rows, dense.len() as u64);
        assert_eq!(p.runs, runs.len() as u64 / 3);
        (dense, runs, dups)
    }

    fn whole(ids: &[&[u64]]) -> (Vec<u64>, Vec<u64>, u64) {
        let shards_ids: Vec<&[u64]> = ids.to_vec();
        let mut dense = vec![];
        let (dups, _) = super::super::build::merge_for_tests(&shards_ids, |e| dense.push(e));
        let mut runs: Vec<u64> = vec![];
        for (i, &e) in dense.iter().enumerate() {
            let n = runs.len();
            if n >= 3 && runs[n - 2] + runs[n - 1] == e {
                runs[n - 1] += 1;
            } else {
                runs.extend_from_slice(&[i as u64, e, 1]);
            }
        }
        (dense, runs, dups)
    }

    #[test]
    fn slices_in_range_order_are_the_whole_merge_with_maximal_runs() {
        // Round-robin over 3 shards (runs of 1), blocks (long runs cut by splitters),
        // duplicates, an empty shard, and batches restarting (several stretches).
        let rr: Vec<Vec<u64>> =
            (0..3).map(|k| (0..300u64).filter(|i| i % 3 == k).map(|i| 1000 + 3 * i).collect()).collect();
        let blocks: Vec<Vec<u64>> = vec![(0..500).collect(), (500..900).collect(), vec![]];
        let dup: Vec<Vec<u64>> = vec![vec![1, 2, 2, 5, 9, 0, 3, 3], vec![2, 3, 3, 7], vec![5, 5, 5]];
        for case in [rr, blocks, dup] {
            let ids: Vec<&[u64]> = case.iter().map(Vec::as_slice).collect();
            let want = whole(&ids);
            for parts in [1, 2, 3, 4, 7, 16] {
                assert_eq!(by_slices(&ids, parts), want, "{parts} parts");
            }
        }
    }

    #[test]
    fn slices_written_in_place_load_as_one_index() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("g.idx");
        let a: Vec<u64> = (0..5).map(|r| pack(0, r)).collect();
        let b: Vec<u64> = (0..3).map(|r| pack(1, r)).collect();
        create_file(&path, INDEX_MAGIC, KIND_DENSE, 8, 8).unwrap();
        // Written out of order, as ranks do.
        write_words_at(&path, 5, &b).unwrap();
        write_words_at(&path, 0, &a).unwrap();
        let g = GroupIndex::load(&path).unwrap();
        assert_eq!(g.locate(4), Some(Loc { shard: 0, row: 4 }));
        assert_eq!(g.locate(5), Some(Loc { shard: 1, row: 0 }));
        assert_eq!(g.locate(7), Some(Loc { shard: 1, row: 2 }));
    }

    #[test]
    fn a_run_spanning_several_slices_is_written_once() {
        let infos = [
            SliceInfo { rows: 4, runs: 2, first: pack(1, 0), last: pack(0, 10), first_run: 1 },
            SliceInfo { rows: 3, runs: 1, first: pack(0, 11), last: pack(0, 13), first_run: 3 },
            SliceInfo::default(),
            SliceInfo { rows: 2, runs: 2, first: pack(0, 14), last: pack(1, 5), first_run: 1 },
        ];
        let p = join_runs(&infos);
        assert_eq!(p.skip_first, vec![false, true, false, true]);
        assert_eq!(p.grow_last, vec![4, 0, 0, 0]);
        assert_eq!((p.rows, p.runs), (9, 3));
        assert_eq!(p.run, vec![0, 2, 2, 2]);
    }
}
