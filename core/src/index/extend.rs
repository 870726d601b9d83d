//! Extending a group's in-memory index with rows the shards committed since it was built,
//! for live views that refresh as a run grows. The global index is the group's rows sorted
//! by the total order (event id, shard, row) — exactly what `build_group`'s stable k-way
//! merge emits — so an extension equals a fresh build: the old index's rows below the
//! smallest new key are kept as they are (copied, or re-emitted run by run), and only the old
//! rows above it (the tail that a lagging shard's earlier ids reach into) are merged again
//! with the new rows. Cost: O(new rows · log + tail) for the merge plus one copy of the kept
//! prefix (dense) or of its runs, instead of a heap merge of every row. A dense index stays
//! dense (a fresh build might pick runs once new rows came in long runs; both read alike).

use rayon::prelude::*;

use super::*;
use crate::format::Role;
use crate::shard::reader::Shard;

/// What [`extend_group`] built.
#[derive(Debug)]
pub struct Extended {
    /// The group's index over every committed row.
    pub index: GroupIndex,
    /// Rows whose event id repeats the previous row's.
    pub duplicates: u64,
    /// Up to 16 duplicated ids.
    pub duplicate_ids: Vec<u64>,
    /// Leading rows kept from the old index (their order and locations are unchanged).
    pub kept: u64,
    /// Rows merged: the old tail plus every new row.
    pub merged: u64,
}

/// The runs encoding is kept when runs average at least this many rows (as `build_group`).
const MIN_AVG_RUN: u64 = 16;

/// Extends `old` — the index of group `group` when shard `s` held `old_rows[s]` of its rows,
/// with `old_dups` duplicates and `old_dup_ids` — to the rows `shards` hold now. `None` when
/// the shards do not extend what `old` indexed (fewer shards or rows than before): build
/// from scratch then.
pub fn extend_group(
    old: &GroupIndex,
    old_rows: &[u64],
    old_dups: u64,
    old_dup_ids: &[u64],
    shards: &[Shard],
    group: &str,
) -> Option<Extended> {
    let ids: Vec<&[u64]> =
        shards.iter().map(|s| s.column(group, None, Role::Ts).map_or(&[][..], |c| s.u64s(c))).collect();
    if old_rows.len() != shards.len()
        || old_rows.iter().zip(&ids).any(|(&o, t)| o > t.len() as u64)
        || old.len() != old_rows.iter().sum::<u64>()
    {
        return None;
    }
    let key = |l: Loc| (ids[l.shard][l.row as usize], l.shard, l.row);
    // New rows, sorted by key (each shard's are mostly sorted already).
    let mut new: Vec<(u64, usize, u64)> = ids
        .iter()
        .enumerate()
        .flat_map(|(s, t)| (old_rows[s]..t.len() as u64).map(move |r| (t[r as usize], s, r)))
        .collect();
    new.par_sort_unstable();
    let total = old.len() + new.len() as u64;
    // Old rows with a key below the smallest new key keep their place.
    let kept = match new.first() {
        None => old.len(),
        Some(&first) => partition_point(old.len(), |i| old.locate(i).is_some_and(|l| key(l) < first)),
    };
    let mut out = Sink::new(total);
    if let Some(dense) = old.dense_words() {
        // A dense index stays dense: its kept rows are one copy, not a scan for runs.
        out.runs = None;
        out.dense.extend_from_slice(&dense[..kept as usize]);
        out.rows = kept;
    } else {
        old.for_each_segment(0, kept, |l, n| out.push_segment(l, n));
    }
    // The tail: old rows from `kept` on, merged with the new rows.
    let mut tail = Vec::with_capacity((old.len() - kept) as usize);
    old.for_each_segment(kept, old.len(), |l, n| tail.extend((l.row..l.row + n).map(|r| key(Loc { row: r, ..l }))));
    let (mut a, mut b) = (tail.iter().peekable(), new.iter().peekable());
    let mut last = kept.checked_sub(1).and_then(|i| old.locate(i)).map(|l| ids[l.shard][l.row as usize]);
    let (mut tail_dups_old, mut prev_old) = (0u64, last);
    for k in &tail {
        tail_dups_old += u64::from(prev_old == Some(k.0));
        prev_old = Some(k.0);
    }
    let (mut dups_new, mut dup_ids) = (0u64, old_dup_ids.to_vec());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x <= y => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, _) => b.next(),
        };
        let Some(&(id, s, r)) = next else { break };
        out.push_segment(Loc { shard: s, row: r }, 1);
        if last == Some(id) {
            dups_new += 1;
            if dup_ids.len() < 16 && !dup_ids.contains(&id) {
                dup_ids.push(id);
            }
        }
        last = Some(id);
    }
    Some(Extended {
        index: out.finish(),
        duplicates: (old_dups + dups_new).saturating_sub(tail_dups_old),
        duplicate_ids: dup_ids,
        kept,
        merged: total - kept,
    })
}

/// The first `i` in `0..n` for which `below(i)` is false (`below` is true then false).
fn partition_point(n: u64, below: impl Fn(u64) -> bool) -> u64 {
    let (mut lo, mut hi) = (0u64, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Asks for transparent huge pages under `v`'s spare capacity: first touch of fresh memory
/// costs a fault per 4 KiB page (slow in VMs), and an index of 10^8 rows is 800 MB. A hint:
/// ignored where THP is off.
fn huge_pages(v: &Vec<u64>) {
    let bytes = v.capacity() * 8;
    if bytes >= 4 << 20 {
        // SAFETY: the range is `v`'s own allocation; the hint changes no contents.
        unsafe { libc::madvise(v.as_ptr() as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE) };
    }
}

/// Collects the extended index: always dense, and runs while they stay few.
struct Sink {
    dense: Vec<u64>,
    runs: Option<Vec<u64>>,
    rows: u64,
    max_runs: u64,
}

impl Sink {
    fn new(total: u64) -> Sink {
        let dense = Vec::with_capacity(total as usize);
        huge_pages(&dense);
        Sink { dense, runs: Some(Vec::new()), rows: 0, max_runs: total / MIN_AVG_RUN }
    }

    /// Rows `l.row..l.row + n` of shard `l.shard`, next in order.
    fn push_segment(&mut self, l: Loc, n: u64) {
        let e = pack(l.shard, l.row);
        self.dense.extend(e..e + n);
        if let Some(r) = self.runs.as_mut() {
            let k = r.len();
            if k >= 3 && r[k - 2] + r[k - 1] == e {
                r[k - 1] += n;
            } else if (k / 3) as u64 >= self.max_runs {
                self.runs = None;
            } else {
                r.extend_from_slice(&[self.rows, e, n]);
            }
        }
        self.rows += n;
    }

    fn finish(self) -> GroupIndex {
        match self.runs {
            Some(r) => GroupIndex { rows: self.rows, runs: true, words: Words::Owned(r) },
            None => GroupIndex { rows: self.rows, runs: false, words: Words::Owned(self.dense) },
        }
    }
}
