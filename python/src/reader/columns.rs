//! Fixed-width columns of a run and the byte-level reads over them: contiguous row ranges
//! (the crate's batched gather), arbitrary row lists, zero-copy spans and ragged rows.
//!
//! A [`Column`] is one dataset of the run's layout that has one fixed-width row per event of
//! its group: a group's event ids, a fixed field's values, an aligned field's presence bytes
//! or a ragged field's lengths. Everything here is plain Rust on `&Run` (no Python), so the
//! adapters can call it with the GIL released; large reads are split across threads.

use smdfs::{Error, Gather, Kind, Loc, Result, Run};

/// Which per-row column of a field or group to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// A group's event ids (u64).
    Ts,
    /// A fixed field's values.
    Data,
    /// An aligned field's presence (u8: 1 present, 0 filled); unaligned fields read as 1.
    Present,
    /// A ragged field's per-row element counts (u64).
    Len,
}

impl Role {
    /// Parses the adapter's role names.
    pub(crate) fn parse(s: &str) -> Result<Role> {
        Ok(match s {
            "ts" => Role::Ts,
            "data" => Role::Data,
            "present" => Role::Present,
            "len" => Role::Len,
            _ => return Err(Error::Usage(format!("unknown column role {s:?} (ts, data, present, len)"))),
        })
    }
}

/// One fixed-width column: a group's rows, each `row_bytes` wide, from one column per shard
/// (`None` where a shard lacks it, which reads as `fill`).
#[derive(Clone, Debug)]
pub(crate) struct Column {
    /// Index of the group in [`Run::groups`].
    pub(crate) group: usize,
    /// Per shard: the column id.
    pub(crate) columns: Vec<Option<u32>>,
    /// Bytes per row (may be 0 for arrays with a zero-length axis).
    pub(crate) row_bytes: usize,
    /// One row of fill bytes.
    pub(crate) fill: Vec<u8>,
}

/// Index of a group by name.
pub(crate) fn group_index(run: &Run, name: &str) -> Result<usize> {
    run.groups()
        .iter()
        .position(|g| g.spec.name == name)
        .ok_or_else(|| Error::NotFound { what: "group", name: name.into() })
}

impl Column {
    /// The column `role` of `target` (a group name for [`Role::Ts`], a field path otherwise).
    pub(crate) fn resolve(run: &Run, target: &str, role: Role) -> Result<Column> {
        if role == Role::Ts {
            let group = group_index(run, target)?;
            return Ok(Column { group, columns: run.id_columns(group).to_vec(), row_bytes: 8, fill: vec![0; 8] });
        }
        let f = run.field(target)?;
        let data = f.data();
        let aligned = run.groups()[data.group].spec.aligned;
        let (columns, row_bytes, fill): (Vec<Option<u32>>, usize, Vec<u8>) = match role {
            Role::Ts | Role::Data => {
                if f.spec().kind != Kind::Fixed {
                    return Err(Error::Usage(format!(
                        "field {target:?} is {}: read it as ragged rows",
                        f.spec().describe()
                    )));
                }
                (
                    data.columns.iter().map(|c| c.data).collect(),
                    f.row_bytes(),
                    f.spec().fill.repeat(f.spec().elements_per_row()),
                )
            }
            // Unaligned fields are present in every row of their own group.
            Role::Present if aligned => (data.columns.iter().map(|c| c.present).collect(), 1, vec![0]),
            Role::Present => (vec![None; data.columns.len()], 1, vec![1]),
            Role::Len => {
                if !f.spec().kind.is_ragged() {
                    return Err(Error::Usage(format!("field {target:?} is not ragged: it has no lengths")));
                }
                (data.columns.iter().map(|c| c.len).collect(), 8, vec![0; 8])
            }
        };
        Ok(Column { group: data.group, columns, row_bytes, fill })
    }

    /// Rows of the column (its group's).
    pub(crate) fn rows(&self, run: &Run) -> u64 {
        run.groups()[self.group].index.len()
    }

    /// The committed bytes of rows `start..start + n` when they are one stretch of one
    /// shard's column: what a zero-copy view may borrow. `None` otherwise (several shards,
    /// or rows that read as fill).
    pub(crate) fn contiguous<'r>(&self, run: &'r Run, start: u64, n: u64) -> Option<&'r [u8]> {
        let mut segs: Vec<(Loc, u64)> = Vec::with_capacity(2);
        run.groups()[self.group].index.for_each_segment(start, start + n, |l, k| {
            if segs.len() < 2 {
                segs.push((l, k));
            }
        });
        let [(loc, k)] = segs[..] else { return None };
        if k != n {
            return None;
        }
        let c = self.columns.get(loc.shard).copied().flatten()?;
        let bytes = run.shards().get(loc.shard)?.bytes(c);
        let from = usize::try_from(loc.row).ok()?.checked_mul(self.row_bytes)?;
        bytes.get(from..from.checked_add(usize::try_from(n).ok()?.checked_mul(self.row_bytes)?)?)
    }

    /// The core's gatherer of this column (rows of at least one byte).
    fn gatherer<'r>(&'r self, run: &'r Run) -> Result<Gather<'r>> {
        run.gatherer(self.group, &self.columns, self.row_bytes, &self.fill)
    }

    /// Rows `start..start + out.len() / row_bytes` in event-id order into `out`, split
    /// across threads when large.
    pub(crate) fn read(&self, run: &Run, start: u64, out: &mut [u8]) -> Result<()> {
        let rb = self.row_bytes;
        if rb == 0 || out.is_empty() {
            return Ok(());
        }
        let n = (out.len() / rb) as u64;
        let len = self.rows(run);
        if !out.len().is_multiple_of(rb) || start.checked_add(n).is_none_or(|e| e > len) {
            return Err(Error::OutOfRange { what: "row", index: start.saturating_add(n), len });
        }
        let g = self.gatherer(run)?;
        par_chunks(out, rb, |first, piece| g.rows(start + first, piece))
    }

    /// The rows listed in `rows` (any order, repeats allowed) into `out`, split across
    /// threads when large. Stretches of consecutive rows are gathered as one.
    pub(crate) fn take(&self, run: &Run, rows: &[u64], out: &mut [u8]) -> Result<()> {
        let rb = self.row_bytes;
        let len = self.rows(run);
        if let Some(&bad) = rows.iter().find(|&&r| r >= len) {
            return Err(Error::OutOfRange { what: "row", index: bad, len });
        }
        if rb == 0 || rows.is_empty() {
            return Ok(());
        }
        if out.len() != rows.len() * rb {
            return Err(Error::Usage(format!("{} rows of {rb} bytes do not fill {} bytes", rows.len(), out.len())));
        }
        let g = self.gatherer(run)?;
        par_chunks(out, rb, |first, piece| {
            let rows = &rows[first as usize..first as usize + piece.len() / rb];
            let mut k = 0;
            while k < rows.len() {
                let mut n = 1;
                while k + n < rows.len() && rows[k + n] == rows[k] + n as u64 {
                    n += 1;
                }
                let dst = &mut piece[k * rb..(k + n) * rb];
                if n > 1 {
                    g.rows(rows[k], dst)?;
                } else {
                    g.row(rows[k], dst)?;
                }
                k += n;
            }
            Ok(())
        })
    }

    /// The rows at shard locations `locs`, in that order (for shard-wise batches).
    pub(crate) fn read_locs(&self, run: &Run, locs: &[Loc]) -> Result<Vec<u8>> {
        let mut out = vec![0; locs.len() * self.row_bytes];
        if self.row_bytes > 0 {
            let g = self.gatherer(run)?;
            for (&l, dst) in locs.iter().zip(out.chunks_exact_mut(self.row_bytes)) {
                g.at(l, dst)?;
            }
        }
        Ok(out)
    }

    /// Each shard's committed rows of the column, zero-copy, in shard (arrival) order.
    pub(crate) fn shard_spans<'r>(&self, run: &'r Run) -> Vec<&'r [u8]> {
        let name = &run.groups()[self.group].spec.name;
        run.shards()
            .iter()
            .zip(&self.columns)
            .map(|(s, c)| {
                let rows = s.group_rows(name) as usize;
                c.map_or(&[][..], |c| s.bytes(c).get(..rows * self.row_bytes).unwrap_or(&[]))
            })
            .collect()
    }
}

/// Bytes below which a read stays on the calling thread (thread start-up costs more).
const PAR_MIN_BYTES: usize = 1 << 20;

/// Calls `f(first_row, piece)` on pieces of `out` (whole rows of `row_bytes`), on up to one
/// thread per core when `out` is large, and returns the first error.
fn par_chunks<F>(out: &mut [u8], row_bytes: usize, f: F) -> Result<()>
where
    F: Fn(u64, &mut [u8]) -> Result<()> + Sync,
{
    let rows = out.len() / row_bytes;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(out.len() / PAR_MIN_BYTES).max(1);
    if threads == 1 {
        return f(0, out);
    }
    let per = rows.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(per * row_bytes)
            .enumerate()
            .map(|(k, piece)| {
                let f = &f;
                s.spawn(move || f((k * per) as u64, piece))
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|_| Err(Error::Usage("read thread panicked".into()))))
    })
}

/// Ragged rows `start..end` of `field`: their element bytes concatenated into `out` (see
/// `FieldReader::read_ragged`).
pub(crate) fn ragged_read(run: &Run, field: &str, start: u64, end: u64, out: &mut [u8]) -> Result<()> {
    run.field(field)?.read_ragged(start, end, out)
}

/// Ragged rows listed in `rows`: their element bytes concatenated, and per row its element
/// count.
pub(crate) fn ragged_take(run: &Run, field: &str, rows: &[u64]) -> Result<(Vec<u8>, Vec<u64>)> {
    let f = run.field(field)?;
    let es = f.spec().dtype.size();
    let mut vals = Vec::new();
    let mut lens = Vec::with_capacity(rows.len());
    for &r in rows {
        let v = f.ragged_row(r)?;
        vals.extend_from_slice(v);
        lens.push((v.len() / es.max(1)) as u64);
    }
    Ok((vals, lens))
}
