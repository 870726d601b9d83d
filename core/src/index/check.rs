//! Checking a loaded group index against the shards it maps into: every location names an
//! existing shard row, every shard row appears exactly once, and (runs encoding) run starts
//! are cumulative and the runs cover exactly `rows`. O(index words); a reader runs it when it
//! opens a stored index that has no chunk checksums (manifests before revision 5; with them,
//! `checked.rs` guards every served word instead), and `verify` on every stored index, so a
//! damaged index is never served (it is rebuilt from the shards).

use super::{unpack, GroupIndex, Loc};

impl GroupIndex {
    /// Checks that this index is a permutation of the shards' rows (`shard_rows[s]` rows in
    /// shard `s`), returning what is wrong with the first bad entry: its global row and why.
    pub fn check_covers(&self, shard_rows: &[u64]) -> Result<(), (u64, String)> {
        let me = self.serve(0, self.rows);
        if !std::ptr::eq(me, self) {
            return me.check_covers(shard_rows);
        }
        let total: u64 = shard_rows.iter().sum();
        if self.rows != total {
            return Err((0, format!("index has {} rows, the shards hold {total}", self.rows)));
        }
        let w = self.words.get();
        if self.runs {
            let mut start = 0u64;
            for (k, run) in w.chunks_exact(3).enumerate() {
                if run[0] != start || run[2] == 0 {
                    return Err((
                        start,
                        format!("run {k} starts at {} with length {}, expected start {start}", run[0], run[2]),
                    ));
                }
                start = start.saturating_add(run[2]);
            }
            if start != self.rows {
                return Err((start.min(self.rows), format!("runs cover {start} rows, the index has {}", self.rows)));
            }
        }
        // Fast paths that only say yes; on any doubt the exact walk below finds and names the
        // first bad entry.
        let fine = if self.runs { runs_tile(w, shard_rows) } else { self.dense_is_permutation(shard_rows) };
        if fine {
            return Ok(());
        }
        let mut seen: Vec<Vec<u64>> = shard_rows.iter().map(|&n| vec![0u64; n.div_ceil(64) as usize]).collect();
        let mut mark = |pos: u64, l: Loc| -> Result<(), (u64, String)> {
            let rows = shard_rows.get(l.shard).copied().unwrap_or(0);
            if l.row >= rows {
                return Err((pos, format!("row {pos} names shard {} row {}, which does not exist", l.shard, l.row)));
            }
            let (word, bit) = (&mut seen[l.shard][(l.row / 64) as usize], 1u64 << (l.row % 64));
            if *word & bit != 0 {
                return Err((pos, format!("shard {} row {} appears twice", l.shard, l.row)));
            }
            *word |= bit;
            Ok(())
        };
        if self.runs {
            for run in w.chunks_exact(3) {
                let first = unpack(run[1]);
                for k in 0..run[2] {
                    mark(run[0] + k, Loc { shard: first.shard, row: first.row.saturating_add(k) })?;
                }
            }
        } else {
            let mut pos = 0u64;
            for piece in self.words.pieces(0, self.rows as usize) {
                for &e in piece {
                    mark(pos, unpack(e))?;
                    pos += 1;
                }
            }
        }
        Ok(())
    }
}

impl GroupIndex {
    /// True if this dense index names every shard row exactly once (one flat bitmap over all
    /// shards' rows, branch-light: the open-time check of a stored index).
    fn dense_is_permutation(&self, shard_rows: &[u64]) -> bool {
        let mut base = Vec::with_capacity(shard_rows.len());
        let mut total = 0u64;
        for &n in shard_rows {
            base.push(total);
            total = match total.checked_add(n) {
                Some(t) => t,
                None => return false,
            };
        }
        let Ok(words) = usize::try_from(total.div_ceil(64)) else { return false };
        let mut seen = vec![0u64; words];
        let mut clash = 0u64;
        for piece in self.words.pieces(0, self.rows as usize) {
            for &e in piece {
                let l = unpack(e);
                let (Some(&rows), Some(&b)) = (shard_rows.get(l.shard), base.get(l.shard)) else { return false };
                if l.row >= rows {
                    return false;
                }
                let bit = b + l.row;
                let w = &mut seen[(bit / 64) as usize];
                let m = 1u64 << (bit % 64);
                clash |= *w & m;
                *w |= m;
            }
        }
        clash == 0
    }
}

/// True if the runs `(start, first location, length)` tile every shard's rows exactly: per
/// shard, sorted by first row, each run starts where the previous ended and the last ends at
/// the shard's row count. O(runs log runs), not O(rows).
fn runs_tile(w: &[u64], shard_rows: &[u64]) -> bool {
    let mut spans: Vec<(usize, u64, u64)> = Vec::with_capacity(w.len() / 3);
    for run in w.chunks_exact(3) {
        let l = unpack(run[1]);
        spans.push((l.shard, l.row, run[2]));
    }
    spans.sort_unstable();
    let mut next = vec![0u64; shard_rows.len()];
    for (shard, row, len) in spans {
        match next.get_mut(shard) {
            Some(n) if *n == row => *n = row.saturating_add(len),
            _ => return false,
        }
    }
    next == shard_rows
}

#[cfg(test)]
mod tests {
    use super::super::{pack, Words};
    use super::*;

    fn dense(words: Vec<u64>) -> GroupIndex {
        GroupIndex { rows: words.len() as u64, runs: false, words: Words::Owned(words) }
    }

    #[test]
    fn an_index_must_name_every_shard_row_exactly_once() {
        let good = dense(vec![pack(0, 0), pack(1, 0), pack(0, 1)]);
        good.check_covers(&[2, 1]).unwrap();
        assert!(good.check_covers(&[2, 2]).unwrap_err().1.contains("shards hold 4"));
        let twice = dense(vec![pack(0, 0), pack(1, 0), pack(0, 0)]);
        assert_eq!(twice.check_covers(&[2, 1]).unwrap_err().0, 2);
        let outside = dense(vec![pack(0, 0), pack(3, 0), pack(0, 1)]);
        assert!(outside.check_covers(&[2, 1]).unwrap_err().1.contains("does not exist"));
        let runs = |w: Vec<u64>, rows| GroupIndex { rows, runs: true, words: Words::Owned(w) };
        runs(vec![0, pack(0, 0), 2, 2, pack(1, 0), 1], 3).check_covers(&[2, 1]).unwrap();
        assert!(runs(vec![0, pack(0, 0), 2, 1, pack(1, 0), 1], 3).check_covers(&[2, 1]).is_err());
        assert!(runs(vec![0, pack(0, 0), 3], 3).check_covers(&[2, 1]).is_err());
    }
}
