//! Checking a loaded group index against the shards it maps into: every location names an
//! existing shard row, every shard row appears exactly once, and (runs encoding) run starts
//! are cumulative and the runs cover exactly `rows`. O(index words); a reader runs it when it
//! opens a stored index, so a damaged index is never served (it is rebuilt from the shards).

use super::{unpack, GroupIndex, Loc};

impl GroupIndex {
    /// Checks that this index is a permutation of the shards' rows (`shard_rows[s]` rows in
    /// shard `s`), returning what is wrong with the first bad entry: its global row and why.
    pub fn check_covers(&self, shard_rows: &[u64]) -> Result<(), (u64, String)> {
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
