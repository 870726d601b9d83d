//! Batched reads of ragged fields: a range of rows' values concatenated in event-id order, one
//! copy per stretch of consecutive rows of one shard (their values lie back to back there),
//! every stretch checked against the run's global offsets, so a shard that disagrees with the
//! index is an error naming the field and row, never wrong bytes.

use super::run::FieldReader;
use crate::error::{Error, Result};
use crate::index::{GroupIndex, Loc};

/// One shard's columns of a ragged field: values, element offsets, element counts.
type RaggedShard<'r> = (&'r [u8], &'r [u64], &'r [u64]);

impl FieldReader<'_> {
    /// Ragged rows `start..end`: their element bytes concatenated into `out`, whose length
    /// must be what the global offsets give those rows. Consecutive rows of one shard hold
    /// consecutive values there, so each stretch of the index is one copy.
    pub fn read_ragged(&self, start: u64, end: u64, out: &mut [u8]) -> Result<()> {
        let (f, run, field) = (self, self.run, &self.f.spec.path);
        let map = f.f.offsets.as_ref().ok_or_else(|| Error::Usage(format!("field {field:?} is not ragged")))?;
        let es = f.spec().dtype.size() as u64;
        if end < start || end > f.rows() || map.len() as u64 != f.rows() + 1 {
            return Err(Error::OutOfRange { what: "row", index: end, len: f.rows() });
        }
        // Only the offsets of rows `start..=end` (the table may be in shared chunks, or
        // checked chunk by chunk as served: a read costs its rows, not the table).
        let window: Vec<u64> = map.pieces(start as usize, end as usize + 1).concat();
        let off = |row: u64| window[(row - start) as usize];
        // Offsets never decrease, so every one up to `end` times `es` fits when the last does.
        let (Some(base), Some(top)) = (off(start).checked_mul(es), off(end).checked_mul(es)) else {
            return Err(Error::Corrupt {
                path: run.dir().to_path_buf(),
                offset: end,
                why: format!("ragged field {field:?}: offsets past 2^64 bytes"),
            });
        };
        let need = top - base;
        if out.len() as u64 != need {
            return Err(Error::Usage(format!("ragged rows {start}..{end} of {field:?} need {need} bytes")));
        }
        let data = f.data();
        let corrupt = |row: u64| Error::Corrupt {
            path: run.dir().to_path_buf(),
            offset: row,
            why: format!("ragged field {field:?} row {row}: the shard's values disagree with the run's offsets"),
        };
        let index = &run.groups()[data.group].index;
        if let Some(words) = index.dense_range(start, end) {
            // Round-robin runs: one row per index word. Per shard, its (values, offsets, lengths)
            // looked up once; each row's span checked against the run's offsets.
            let cols: Vec<Option<RaggedShard<'_>>> = run
                .shards()
                .iter()
                .zip(&data.columns)
                .map(|(s, c)| Some((s.bytes(c.data?), s.u64s(c.offs?), s.u64s(c.len?))))
                .collect();
            let mut pos = 0usize;
            for (k, w) in words.iter().enumerate() {
                let l = GroupIndex::unpack(*w);
                let want = ((window[k + 1] - window[k]) * es) as usize;
                if want == 0 {
                    continue;
                }
                let r = l.row as usize;
                let src = cols.get(l.shard).copied().flatten().and_then(|(d, o, n)| {
                    let a = o.get(r)?.checked_mul(es)? as usize;
                    (n.get(r)?.checked_mul(es)? == want as u64).then(|| d.get(a..a.checked_add(want)?)).flatten()
                });
                match (src, out.get_mut(pos..pos + want)) {
                    (Some(v), Some(dst)) => dst.copy_from_slice(v),
                    _ => return Err(corrupt(start + k as u64)),
                }
                pos += want;
            }
            return Ok(());
        }
        let mut err = None;
        let mut row = start;
        index.for_each_segment(start, end, |loc, k| {
            if err.is_some() {
                return;
            }
            let (a, b) = ((off(row) * es - base) as usize, (off(row + k) * es - base) as usize);
            let src = (|| {
                let c = data.columns.get(loc.shard)?;
                let s = run.shards().get(loc.shard)?;
                let (d, o, l) = (c.data?, c.offs?, c.len?);
                let (so, sl) = (s.u64s(o), s.u64s(l));
                let last = loc.row as usize + k as usize - 1;
                let first = *so.get(loc.row as usize)?;
                // The stretch's values must be one span of the shard (no gaps between rows).
                if so.get(last)?.checked_add(*sl.get(last)?)?.checked_sub(first)?.checked_mul(es)? != (b - a) as u64 {
                    return None;
                }
                let from = first.checked_mul(es)? as usize;
                s.bytes(d).get(from..from.checked_add(b - a)?)
            })();
            match src {
                Some(v) => out[a..b].copy_from_slice(v),
                None if a == b => {}
                None => {
                    // Row by row, which checks every row against the offsets.
                    let mut p = a;
                    for i in 0..k {
                        match f.ragged_at(Loc { shard: loc.shard, row: loc.row + i }) {
                            Ok(v) if p + v.len() <= b => {
                                out[p..p + v.len()].copy_from_slice(v);
                                p += v.len();
                            }
                            Ok(_) => p = usize::MAX,
                            Err(e) => {
                                err = Some(e);
                                return;
                            }
                        }
                        if p == usize::MAX {
                            break;
                        }
                    }
                    if p != b {
                        err = Some(corrupt(row));
                    }
                }
            }
            row += k;
        });
        match err {
            Some(e) => Err(e),
            None if row == end => Ok(()),
            None => Err(corrupt(row)),
        }
    }
}
