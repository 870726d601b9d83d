//! The batch API: [`Client::events`] takes whole columns for many events at once.
//!
//! A call is validated once — every column's lengths, offsets and mask, its kind, dtype and
//! shape against the schema, no field twice — before anything is written, so a rejected call
//! leaves the batch (and everything written before) as it was. Then the rows go into the
//! batch in chunks that respect the batch limits: per chunk and column one copy of the bytes
//! (fill written only over absent rows), and per group one copy of the event ids. Ids may be
//! in any order (the index sorts). An event's row in an aligned group exists where any of the
//! call's columns of that group is present, and an event with no value at all is a row of the
//! run group (both as with `event`), so masks are consulted only when every column of a group
//! has one. Large calls without masks skip the batch in threads mode (`columns_direct`).

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::model::columns::{Cells, Column};
use crate::model::schema::{GroupId, RUN_GROUP_ID};
use crate::model::value::{Field, Kind, Value};
use crate::write::client::{pad, Client};

/// One group's rows in a call: every event, or the listed ones (sorted).
struct GroupSel {
    group: GroupId,
    rows: Option<Vec<usize>>,
}

impl GroupSel {
    /// The selected rows within `a..b`.
    fn within(&self, a: usize, b: usize) -> Option<&[usize]> {
        self.rows.as_deref().map(|r| {
            let lo = r.partition_point(|&i| i < a);
            let hi = r.partition_point(|&i| i < b);
            &r[lo..hi]
        })
    }
}

impl Client {
    /// Records `ids.len()` events from whole columns: `columns[k]` holds field k's value for
    /// every event (see [`Column`]). Validated once per call: a column of the wrong dtype,
    /// shape, kind or length is an error naming the field and what was expected, and nothing
    /// of the call is written (everything written before stays). Events are copied into the
    /// batch per column, not per row; a call larger than a batch is handed over in pieces.
    pub fn events(&mut self, ids: &[u64], columns: &[Column<'_>]) -> Result<()> {
        self.shared.origin.check()?;
        if self.is_finished() {
            return Err(self.refused());
        }
        let n = ids.len();
        if n == 0 {
            return Ok(());
        }
        let mut metas = Vec::with_capacity(columns.len());
        for (k, col) in columns.iter().enumerate() {
            col.check_rows(n)?;
            if columns[..k].iter().any(|c| c.path == col.path) {
                return Err(Error::BadValue { field: col.path.into(), why: "given twice in one call".into() });
            }
            let proto = prototype(col);
            let mi = self.meta_by_path(col.path, &proto)?;
            metas.push(mi);
        }
        let groups = self.select_groups(columns, &metas, n);
        if !self.shared.callbacks.is_empty() {
            call_back(self, ids, columns);
        }
        let total: usize = columns.iter().map(|c| used_bytes(c, n)).sum();
        if self.direct_fits(columns, total) {
            return self.events_direct(ids, columns, &metas);
        }
        let per_row = (total / n).max(1);
        let mut a = 0;
        while a < n {
            let room_events = self.shared.batch_events.saturating_sub(self.batch.events).max(1);
            let room_rows = (self.shared.batch_bytes.saturating_sub(self.batch.bytes) / per_row).max(1);
            let b = n.min(a + room_events.min(room_rows));
            self.append_chunk(ids, columns, &metas, &groups, a, b);
            self.batch.events += b - a;
            if self.batch.events >= self.shared.batch_events || self.batch.bytes >= self.shared.batch_bytes {
                self.flush()?;
            }
            a = b;
        }
        Ok(())
    }

    /// Each group the call touches, with the rows that belong to it.
    fn select_groups(&mut self, columns: &[Column<'_>], metas: &[usize], n: usize) -> Vec<GroupSel> {
        let mut out: Vec<GroupSel> = Vec::new();
        if columns.is_empty() {
            self.ensure_run_group();
            out.push(GroupSel { group: RUN_GROUP_ID, rows: None });
            return out;
        }
        for &mi in metas {
            let g = self.metas[mi].group;
            if out.iter().any(|s| s.group == g) {
                continue;
            }
            let masks: Vec<Option<&[bool]>> =
                metas.iter().zip(columns).filter(|(&m, _)| self.metas[m].group == g).map(|(_, c)| c.present).collect();
            let rows = if masks.iter().any(Option::is_none) {
                None
            } else {
                let any = |i: usize| masks.iter().any(|m| m.is_some_and(|m| m[i]));
                if (0..n).all(any) {
                    None
                } else {
                    Some((0..n).filter(|&i| any(i)).collect())
                }
            };
            out.push(GroupSel { group: g, rows });
        }
        // An event with no value at all is a row of the run group (as `event(id, [])` is).
        if columns.iter().all(|c| c.present.is_some()) {
            let empty: Vec<usize> =
                (0..n).filter(|&i| columns.iter().all(|c| c.present.is_some_and(|p| !p[i]))).collect();
            if !empty.is_empty() {
                self.ensure_run_group();
                match out.iter_mut().find(|s| s.group == RUN_GROUP_ID) {
                    Some(GroupSel { rows: Some(rows), .. }) => {
                        rows.extend(empty);
                        rows.sort_unstable();
                    }
                    Some(GroupSel { rows: None, .. }) => {}
                    None => out.push(GroupSel { group: RUN_GROUP_ID, rows: Some(empty) }),
                }
            }
        }
        out
    }

    fn append_chunk(
        &mut self,
        ids: &[u64],
        columns: &[Column<'_>],
        metas: &[usize],
        groups: &[GroupSel],
        a: usize,
        b: usize,
    ) {
        // Group rows first; remember each group's rows before the chunk (for padding).
        let mut before = Vec::with_capacity(groups.len());
        for sel in groups {
            let gslot = self.group_slot(sel.group);
            let g = &mut self.batch.groups[gslot].ids;
            before.push((sel.group, gslot, g.len()));
            match sel.within(a, b) {
                None => g.extend_from_slice(&ids[a..b]),
                Some(rows) => g.extend(rows.iter().map(|&i| ids[i])),
            }
        }
        for (col, &mi) in columns.iter().zip(metas) {
            let group = self.metas[mi].group;
            let &(_, gslot, rows_before) = before.iter().find(|(g, _, _)| *g == group).expect("group selected");
            let sel = groups.iter().find(|s| s.group == group).expect("group selected").within(a, b);
            let fslot = self.field_slot(mi, gslot);
            let m = &self.metas[mi];
            let fr = &mut self.batch.fields[fslot];
            pad(fr, m, rows_before);
            let start = fr.data.len();
            let kept = sel.map_or(b - a, <[usize]>::len);
            let mask = col.present;
            let is_present = |i: usize| mask.is_none_or(|p| p[i]);
            match &col.cells {
                Cells::Fixed { bytes, .. } => {
                    let rb = m.row_bytes;
                    match sel {
                        None => {
                            fr.data.extend_from_slice(&bytes[a * rb..b * rb]);
                            if mask.is_some() {
                                for i in (a..b).filter(|&i| !is_present(i)) {
                                    let at = start + (i - a) * rb;
                                    fr.data[at..at + rb].copy_from_slice(&m.fill_row);
                                }
                            }
                        }
                        Some(rows) => {
                            fr.data.reserve(rows.len() * rb);
                            for &i in rows {
                                if is_present(i) {
                                    fr.data.extend_from_slice(&bytes[i * rb..(i + 1) * rb]);
                                } else {
                                    fr.data.extend_from_slice(&m.fill_row);
                                }
                            }
                        }
                    }
                }
                Cells::Var { dtype, values, offsets, .. } => {
                    // Absent rows are empty, so the kept rows' values are one contiguous run.
                    let es = dtype.size();
                    fr.data.extend_from_slice(&values[offsets[a] as usize * es..offsets[b] as usize * es]);
                    match sel {
                        None => fr.lens.extend(offsets[a..=b].windows(2).map(|w| w[1] - w[0])),
                        Some(rows) => fr.lens.extend(rows.iter().map(|&i| offsets[i + 1] - offsets[i])),
                    }
                }
            }
            if m.aligned {
                match (sel, mask) {
                    (_, None) => fr.present.resize(fr.present.len() + kept, 1),
                    (None, Some(p)) => fr.present.extend(p[a..b].iter().map(|&x| u8::from(x))),
                    (Some(rows), Some(p)) => fr.present.extend(rows.iter().map(|&i| u8::from(p[i]))),
                }
            }
            fr.rows += kept;
            self.batch.bytes += fr.data.len() - start;
        }
    }
}

/// Bytes a checked column of `n` rows holds.
fn used_bytes(c: &Column<'_>, n: usize) -> usize {
    match &c.cells {
        Cells::Fixed { bytes, .. } => bytes.len(),
        Cells::Var { dtype, offsets, .. } => (offsets[n] - offsets[0]) as usize * dtype.size(),
    }
}

/// A value standing for the column's kind, dtype and shape (to resolve or check the field).
fn prototype<'a>(c: &'a Column<'_>) -> Value<'a> {
    match &c.cells {
        Cells::Fixed { dtype, shape, bytes } if shape.is_empty() => {
            let mut bits = [0u8; 8];
            bits[..dtype.size()].copy_from_slice(&bytes[..dtype.size()]);
            Value::Scalar { dtype: *dtype, bits }
        }
        Cells::Fixed { dtype, shape, bytes } => {
            let rb = shape.iter().product::<usize>() * dtype.size();
            Value::Array { dtype: *dtype, shape: shape.to_vec(), data: Cow::Borrowed(&bytes[..rb]) }
        }
        Cells::Var { kind: Kind::Bytes, .. } => Value::Bytes(Cow::Borrowed(&[])),
        Cells::Var { kind: Kind::Str, .. } => Value::Str(Cow::Borrowed("")),
        Cells::Var { dtype, .. } => Value::Ragged { dtype: *dtype, data: Cow::Borrowed(&[]) },
    }
}

/// Calls the run's callbacks once per event of a batch call, with its present values.
fn call_back(c: &Client, ids: &[u64], columns: &[Column<'_>]) {
    for (i, &id) in ids.iter().enumerate() {
        let fields: Vec<Field<'_>> = columns
            .iter()
            .filter(|col| col.present.is_none_or(|p| p[i]))
            .map(|col| (col.path, row_value(col, i)))
            .collect();
        for cb in &c.shared.callbacks {
            cb(id, &fields);
        }
    }
}

/// Row `i` of a column as a value.
fn row_value<'a>(c: &'a Column<'_>, i: usize) -> Value<'a> {
    match &c.cells {
        Cells::Fixed { dtype, shape, bytes } => {
            let rb = shape.iter().product::<usize>() * dtype.size();
            let row = &bytes[i * rb..(i + 1) * rb];
            if shape.is_empty() {
                let mut bits = [0u8; 8];
                bits[..rb].copy_from_slice(row);
                Value::Scalar { dtype: *dtype, bits }
            } else {
                Value::Array { dtype: *dtype, shape: shape.to_vec(), data: Cow::Borrowed(row) }
            }
        }
        Cells::Var { kind, dtype, values, offsets } => {
            let es = dtype.size();
            let row = &values[offsets[i] as usize * es..offsets[i + 1] as usize * es];
            match kind {
                Kind::Bytes => Value::Bytes(Cow::Borrowed(row)),
                Kind::Str => Value::Str(String::from_utf8_lossy(row)),
                _ => Value::Ragged { dtype: *dtype, data: Cow::Borrowed(row) },
            }
        }
    }
}
