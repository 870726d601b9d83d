//! The batched gather: fixed-width rows of a group copied, in event-id order, out of one
//! column per shard through the group's index. A [`Gather`] looks each shard's bytes up once
//! and then serves row ranges, single rows and shard locations. Dense (round-robin) indexes,
//! where every row is its own stretch, copy small rows as fixed-size moves; run-length indexes
//! copy one stretch of consecutive rows at a time. A shard without the column reads as fill;
//! a location past a shard's committed rows is damage, an error, never fill (it would be a
//! wrong value served as right).

use super::{bad_loc, check_range, Run};
use crate::error::{Error, Result};
use crate::index::{GroupIndex, Loc};

/// Gathers one fixed-width column of a group (see the module paragraph). Cheap to make, `Sync`
/// (threads may share one), borrows the run.
#[derive(Debug)]
pub struct Gather<'r> {
    run: &'r Run,
    index: &'r GroupIndex,
    /// Per shard: the column's committed bytes (`None` where the shard lacks the column).
    bases: Vec<Option<&'r [u8]>>,
    /// Per shard: the group's committed rows.
    shard_rows: &'r [u64],
    row_bytes: usize,
    fill: &'r [u8],
}

impl Run {
    /// A gatherer of `group`'s rows from one fixed-width column per shard (`columns[shard]`,
    /// `None` where a shard lacks it, which reads as `fill`), rows of `row_bytes` (> 0).
    pub fn gatherer<'r>(
        &'r self,
        group: usize,
        columns: &[Option<u32>],
        row_bytes: usize,
        fill: &'r [u8],
    ) -> Result<Gather<'r>> {
        let g = self.groups.get(group).ok_or_else(|| Error::Usage(format!("no group number {group}")))?;
        if row_bytes == 0 || fill.len() != row_bytes {
            return Err(Error::Usage(format!("gather in rows of {row_bytes} bytes with {} fill bytes", fill.len())));
        }
        let bases = (0..self.shards.len())
            .map(|s| {
                let (shard, c) = self.column_of(columns, s)?;
                let b = shard.bytes(c);
                let committed = (g.shard_rows[s] as usize).saturating_mul(row_bytes);
                Some(b.get(..committed).unwrap_or(b))
            })
            .collect();
        Ok(Gather { run: self, index: &g.index, bases, shard_rows: &g.shard_rows, row_bytes, fill })
    }

    /// Gathers rows `start..start + out.len() / row_bytes` of a group (see [`Run::gatherer`]).
    pub fn gather(
        &self,
        group: usize,
        columns: &[Option<u32>],
        row_bytes: usize,
        fill: &[u8],
        start: u64,
        out: &mut [u8],
    ) -> Result<()> {
        self.gatherer(group, columns, row_bytes, fill)?.rows(start, out)
    }
}

impl Gather<'_> {
    /// Rows of the group.
    pub fn len(&self) -> u64 {
        self.index.len()
    }

    /// True if the group has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// Rows `start..start + out.len() / row_bytes` into `out` (whole rows).
    pub fn rows(&self, start: u64, out: &mut [u8]) -> Result<()> {
        let rb = self.row_bytes;
        if !out.len().is_multiple_of(rb) {
            return Err(Error::Usage(format!("gather of {} bytes in rows of {rb}", out.len())));
        }
        let n = (out.len() / rb) as u64;
        check_range(start, n, self.len())?;
        if let Some(words) = self.index.dense_range(start, start + n) {
            return match rb {
                1 => self.dense::<1>(words, out),
                2 => self.dense::<2>(words, out),
                4 => self.dense::<4>(words, out),
                8 => self.dense::<8>(words, out),
                16 => self.dense::<16>(words, out),
                32 => self.dense::<32>(words, out),
                64 => self.dense::<64>(words, out),
                _ => words
                    .iter()
                    .zip(out.chunks_exact_mut(rb))
                    .try_for_each(|(w, dst)| self.at(GroupIndex::unpack(*w), dst)),
            };
        }
        let mut pos = 0usize;
        let mut bad = None;
        self.index.for_each_segment(start, start + n, |loc, k| {
            let len = k as usize * rb;
            let dst = &mut out[pos..pos + len];
            pos += len;
            if let Err(l) = self.stretch(loc, k, dst) {
                bad.get_or_insert(l);
            }
        });
        // An index that covers fewer rows than it claims leaves the rest unwritten: damage too.
        if pos != out.len() {
            bad.get_or_insert(
                self.index.locate(start + (pos / rb) as u64).unwrap_or(Loc { shard: usize::MAX, row: 0 }),
            );
        }
        bad.map_or(Ok(()), |l| Err(self.bad(l)))
    }

    /// Row `i` of the group into `dst` (one row).
    pub fn row(&self, i: u64, dst: &mut [u8]) -> Result<()> {
        let loc = self.index.locate(i).ok_or(Error::OutOfRange { what: "row", index: i, len: self.len() })?;
        self.at(loc, dst)
    }

    /// The row at a shard location into `dst` (one row).
    pub fn at(&self, loc: Loc, dst: &mut [u8]) -> Result<()> {
        self.stretch(loc, 1, dst).map_err(|l| self.bad(l))
    }

    /// The error for a location that is not committed data.
    fn bad(&self, loc: Loc) -> Error {
        bad_loc(self.run, loc, self.row_bytes)
    }

    /// `k` consecutive rows of one shard from `loc` into `dst`; the location on damage.
    #[inline(always)]
    fn stretch(&self, loc: Loc, k: u64, dst: &mut [u8]) -> std::result::Result<(), Loc> {
        let rb = self.row_bytes;
        match self.bases.get(loc.shard) {
            Some(Some(b)) => {
                let from = (loc.row as usize).wrapping_mul(rb);
                match b.get(from..from.wrapping_add(dst.len())) {
                    Some(src) => copy(dst, src),
                    None => return Err(loc),
                }
            }
            Some(None) if loc.row.saturating_add(k) <= self.shard_rows[loc.shard] => {
                dst.chunks_exact_mut(rb).for_each(|r| r.copy_from_slice(self.fill))
            }
            _ => return Err(loc),
        }
        Ok(())
    }

    /// The dense-index gather: one word per row, rows of a compile-time size `RB`, so each
    /// row is a fixed-size move.
    fn dense<const RB: usize>(&self, words: &[u64], out: &mut [u8]) -> Result<()> {
        for (w, dst) in words.iter().zip(out.chunks_exact_mut(RB)) {
            let l = GroupIndex::unpack(*w);
            match self.bases.get(l.shard) {
                Some(Some(b)) => {
                    let from = (l.row as usize).wrapping_mul(RB);
                    let src: &[u8; RB] = b
                        .get(from..from.wrapping_add(RB))
                        .and_then(|s| s.try_into().ok())
                        .ok_or_else(|| self.bad(l))?;
                    dst.copy_from_slice(src);
                }
                _ => self.stretch(l, 1, dst).map_err(|l| self.bad(l))?,
            }
        }
        Ok(())
    }
}

/// Copies `src` into `dst` (same length); the small row sizes of scalar columns become single
/// moves instead of `memcpy` calls.
#[inline(always)]
fn copy(dst: &mut [u8], src: &[u8]) {
    match (dst.len(), src.len()) {
        (8, 8) => dst[..8].copy_from_slice(&src[..8]),
        (4, 4) => dst[..4].copy_from_slice(&src[..4]),
        (2, 2) => dst[..2].copy_from_slice(&src[..2]),
        (1, 1) => dst[0] = src[0],
        _ => dst.copy_from_slice(src),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1000-event demo run (2 shards) and its `energy` field's group and per-shard columns.
    fn demo() -> (tempfile::TempDir, Run) {
        let dir = tempfile::tempdir().unwrap();
        crate::demo::write_demo(&dir.path().join("r"), 1000, 2, 3, false).unwrap();
        let run = Run::open(dir.path().join("r")).unwrap();
        (dir, run)
    }

    fn energy(run: &Run) -> (usize, Vec<Option<u32>>) {
        let f = run.fields.iter().find(|f| f.spec.path == "energy").unwrap();
        (f.group, f.columns.iter().map(|c| c.data).collect())
    }

    fn values(b: &[u8]) -> Vec<f64> {
        b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn ranges_rows_and_locations_read_the_demo_values() {
        let (_d, run) = demo();
        let (g, cols) = energy(&run);
        let fill = 0f64.to_le_bytes();
        let gather = run.gatherer(g, &cols, 8, &fill).unwrap();
        let mut out = vec![0u8; 8 * 1000];
        gather.rows(0, &mut out).unwrap();
        assert_eq!(values(&out), (0..1000).map(crate::demo::energy).collect::<Vec<_>>());
        let mut one = [0u8; 8];
        gather.row(777, &mut one).unwrap();
        assert_eq!(values(&one), [crate::demo::energy(777)]);
        assert!(matches!(gather.rows(999, &mut [0u8; 16]), Err(Error::OutOfRange { .. })));
        assert!(matches!(gather.rows(0, &mut [0u8; 12]), Err(Error::Usage(_))));
    }

    #[test]
    fn a_location_past_a_shards_rows_is_an_error_and_a_missing_column_reads_as_fill() {
        let (_d, mut run) = demo();
        let (g, cols) = energy(&run);
        let fill = (-1f64).to_le_bytes();
        // Shard 1 without the column: its committed rows read as fill.
        let mut out = vec![0u8; 8 * 1000];
        run.gatherer(g, &[cols[0], None], 8, &fill).unwrap().rows(0, &mut out).unwrap();
        let v = values(&out);
        assert!(v.contains(&-1.0) && v.contains(&crate::demo::energy(0)), "{:?}", &v[..8]);
        // Shard 1 now claims half its rows: the index names rows past them, with or without
        // the column, in the dense paths (the run-length ones: the next test).
        run.groups[g].shard_rows[1] /= 2;
        for cols in [cols.clone(), vec![cols[0], None]] {
            let gather = run.gatherer(g, &cols, 8, &fill).unwrap();
            let e = gather.rows(0, &mut out).unwrap_err();
            assert!(e.to_string().contains("shard 1") && e.to_string().contains("smdfs verify"), "{e}");
            let bad = (0..1000).rev().find(|&i| gather.row(i, &mut [0u8; 8]).is_err()).expect("a row past shard 1");
            assert!(gather.row(bad, &mut [0u8; 8]).is_err());
        }
    }

    /// Two clients (one per shard) writing alternate blocks of 100 consecutive ids: a
    /// run-length index, read through the stretch path.
    #[test]
    fn a_run_length_index_gathers_stretches_and_fills_and_errs_per_stretch() {
        let dir = tempfile::tempdir().unwrap();
        let smd = crate::SmallData::builder(dir.path().join("r")).servers(2).batch_events(100).build().unwrap();
        let mut c = [smd.client(), smd.client()];
        for i in 0..5000u64 {
            c[(i / 100 % 2) as usize].event(i, [("x", crate::Value::from(i as f64))]).unwrap();
        }
        for c in c {
            c.finish().unwrap();
        }
        smd.done().unwrap();
        let mut run = Run::open(dir.path().join("r")).unwrap();
        let f = run.fields.iter().find(|f| f.spec.path == "x").unwrap();
        let (g, cols): (usize, Vec<Option<u32>>) = (f.group, f.columns.iter().map(|c| c.data).collect());
        assert!(run.groups[g].index.is_runs(), "the test needs a run-length index");
        let fill = (-1f64).to_le_bytes();
        let mut out = vec![0u8; 8 * 5000];
        run.gatherer(g, &cols, 8, &fill).unwrap().rows(0, &mut out).unwrap();
        assert_eq!(values(&out), (0..5000).map(|i| i as f64).collect::<Vec<_>>());
        let mut part = vec![0u8; 8 * 250];
        run.gatherer(g, &cols, 8, &fill).unwrap().rows(1234, &mut part).unwrap();
        assert_eq!(values(&part), (1234..1484).map(|i| i as f64).collect::<Vec<_>>());
        run.gatherer(g, &[cols[0], None], 8, &fill).unwrap().rows(0, &mut out).unwrap();
        let v = values(&out);
        let filled = v.iter().filter(|&&x| x == -1.0).count();
        assert!((2000..=3000).contains(&filled), "one shard's stretches read as fill: {filled}");
        assert!(v.iter().enumerate().all(|(i, &x)| x == -1.0 || x == i as f64));
        run.groups[g].shard_rows[1] /= 2;
        for cols in [cols.clone(), vec![cols[0], None]] {
            let e = run.gatherer(g, &cols, 8, &fill).unwrap().rows(0, &mut out).unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }) && e.to_string().contains("shard 1"), "{e}");
        }
    }
}
