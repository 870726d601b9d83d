//! Extending a group's in-memory index with rows the shards committed since it was built,
//! for live views that refresh as a run grows. The global index is the group's rows sorted
//! by the total order (event id, shard, row) — exactly what `build_group`'s stable k-way
//! merge emits — so an extension equals a fresh build: the old index's rows below the
//! smallest new key are kept as they are (shared, copied, or re-emitted run by run), and only
//! the old rows above it (the tail that a lagging shard's earlier ids reach into) are merged
//! again with the new rows. An extended dense index keeps its words in chunks shared with the
//! index it extended: its kept full chunks are the old snapshot's (no copy, no memory), so a
//! refresh costs O(new rows · log + tail + one chunk), not O(rows); a dense index built whole
//! (or mapped) is copied once, at the first extension. A dense index stays dense (a fresh
//! build might pick runs once new rows came in long runs; both read alike).

use std::sync::Arc;

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
    if let Words::Chunked(chunks) = &old.words {
        // A dense index stays dense: its full chunks below `kept` are shared, not copied.
        out.runs = None;
        let full = kept as usize / CHUNK_WORDS;
        for c in &chunks[..full] {
            out.dense.share(c);
        }
        if let Some(c) = chunks.get(full) {
            out.dense.extend_from_slice(&c[..kept as usize % CHUNK_WORDS]);
        }
        out.rows = kept;
    } else if let Some(dense) = old.dense_words() {
        // A dense index stays dense: its kept rows are one copy (into chunks the next
        // extension shares), not a scan for runs.
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
/// costs a fault per 4 KiB page (slow in VMs), and a chunk is 8 MiB. A hint: ignored where
/// THP is off.
fn huge_pages(v: &Vec<u64>) {
    let bytes = v.capacity() * 8;
    if bytes >= 4 << 20 {
        // SAFETY: the range is `v`'s own allocation; the hint changes no contents.
        unsafe { libc::madvise(v.as_ptr() as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE) };
    }
}

/// Dense words collected in chunks of [`CHUNK_WORDS`]; full chunks of an older index are
/// shared as they are.
pub(super) struct Chunks {
    done: Vec<Arc<Vec<u64>>>,
    cur: Vec<u64>,
}

impl Chunks {
    pub(super) fn new() -> Chunks {
        Chunks { done: Vec::new(), cur: Chunks::fresh() }
    }

    fn fresh() -> Vec<u64> {
        let v = Vec::with_capacity(CHUNK_WORDS);
        huge_pages(&v);
        v
    }

    /// Appends a full chunk of an older index (words so far must fill whole chunks).
    pub(super) fn share(&mut self, chunk: &Arc<Vec<u64>>) {
        debug_assert!(self.cur.is_empty() && chunk.len() == CHUNK_WORDS);
        self.done.push(Arc::clone(chunk));
    }

    /// Appends one word.
    pub(super) fn push(&mut self, w: u64) {
        self.cur.push(w);
        self.seal_if_full();
    }

    pub(super) fn extend_from_slice(&mut self, mut words: &[u64]) {
        while !words.is_empty() {
            let take = (CHUNK_WORDS - self.cur.len()).min(words.len());
            self.cur.extend_from_slice(&words[..take]);
            words = &words[take..];
            self.seal_if_full();
        }
    }

    /// Appends `e..e + n`.
    fn extend_run(&mut self, mut e: u64, mut n: u64) {
        while n > 0 {
            let take = ((CHUNK_WORDS - self.cur.len()) as u64).min(n);
            self.cur.extend(e..e + take);
            (e, n) = (e + take, n - take);
            self.seal_if_full();
        }
    }

    fn seal_if_full(&mut self) {
        if self.cur.len() == CHUNK_WORDS {
            self.done.push(Arc::new(std::mem::replace(&mut self.cur, Chunks::fresh())));
        }
    }

    pub(super) fn finish(mut self) -> Vec<Arc<Vec<u64>>> {
        if !self.cur.is_empty() {
            self.done.push(Arc::new(self.cur));
        }
        self.done
    }
}

/// Collects the extended index: always dense (in chunks), and runs while they stay few.
struct Sink {
    dense: Chunks,
    runs: Option<Vec<u64>>,
    rows: u64,
    max_runs: u64,
}

impl Sink {
    fn new(total: u64) -> Sink {
        Sink { dense: Chunks::new(), runs: Some(Vec::new()), rows: 0, max_runs: total / MIN_AVG_RUN }
    }

    /// Rows `l.row..l.row + n` of shard `l.shard`, next in order.
    fn push_segment(&mut self, l: Loc, n: u64) {
        let e = pack(l.shard, l.row);
        self.dense.extend_run(e, n);
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
            None => GroupIndex { rows: self.rows, runs: false, words: Words::Chunked(self.dense.finish()) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(idx: &GroupIndex) -> Vec<(Loc, u64)> {
        let mut v = Vec::new();
        idx.for_each_segment(0, idx.len(), |l, n| v.push((l, n)));
        v
    }

    #[test]
    fn a_chunked_index_reads_as_the_same_words_in_one_piece() {
        // Stretches of 1..=9 rows alternating between 3 shards: stretches cross chunk edges.
        let (mut words, mut rows) = (Vec::new(), [0u64; 3]);
        for k in 0..200u64 {
            let s = (k % 3) as usize;
            let n = 1 + k % 9;
            words.extend((rows[s]..rows[s] + n).map(|r| pack(s, r)));
            rows[s] += n;
        }
        let flat = GroupIndex { rows: words.len() as u64, runs: false, words: Words::Owned(words.clone()) };
        let mut c = Chunks::new();
        c.extend_from_slice(&words);
        let chunked = GroupIndex { rows: words.len() as u64, runs: false, words: Words::Chunked(c.finish()) };
        assert!(words.len() > 10 * CHUNK_WORDS);
        assert_eq!(segments(&chunked), segments(&flat));
        for i in (0..flat.len() + 3).step_by(7) {
            assert_eq!(chunked.locate(i), flat.locate(i), "row {i}");
            let (mut a, mut b) = (Vec::new(), Vec::new());
            chunked.for_each_segment(i, i + 150, |l, n| a.push((l, n)));
            flat.for_each_segment(i, i + 150, |l, n| b.push((l, n)));
            assert_eq!(a, b, "rows {i}..");
        }
        assert_eq!(chunked.check_covers(&rows), Ok(()));
        assert!(chunked.dense_words().is_none() && flat.dense_words().is_some());
        for (a, b) in [(0, 10), (60, 64), (64, 128), (100, 101), (60, 70), (0, flat.len())] {
            let whole = flat.dense_range(a, b).unwrap();
            match chunked.dense_range(a, b) {
                Some(w) => assert_eq!(w, whole, "{a}..{b}"),
                None => assert!(a / CHUNK_WORDS as u64 != (b - 1) / CHUNK_WORDS as u64, "{a}..{b} is in one chunk"),
            }
        }
        assert!(flat.dense_range(0, flat.len() + 1).is_none());
    }

    #[test]
    fn a_sink_given_the_kept_chunks_shares_them_and_appends_after_them() {
        let mut c = Chunks::new();
        c.extend_run(pack(0, 0), 10 * CHUNK_WORDS as u64 + 5);
        let chunks = c.finish();
        let old = GroupIndex { rows: 10 * CHUNK_WORDS as u64 + 5, runs: false, words: Words::Chunked(chunks.clone()) };
        let mut out = Sink::new(old.len() + 1);
        out.runs = None;
        let Words::Chunked(old_chunks) = &old.words else { unreachable!() };
        for ch in &old_chunks[..10] {
            out.dense.share(ch);
        }
        out.dense.extend_from_slice(&old_chunks[10][..5]);
        out.rows = old.len();
        out.push_segment(Loc { shard: 0, row: old.len() }, 1);
        let new = out.finish();
        let Words::Chunked(new_chunks) = &new.words else { panic!("not chunked") };
        assert!((0..10).all(|k| Arc::ptr_eq(&new_chunks[k], &chunks[k])), "full chunks are shared");
        assert_eq!(segments(&new), vec![(Loc { shard: 0, row: 0 }, old.len() + 1)]);
    }
}
