//! Columns for the batch API (`Client::events(ids, columns)`): one field's values for every
//! event of a call as whole arrays — fixed rows as one C-order slice, ragged rows as values
//! plus offsets — with an optional presence mask for events that lack the field.
//!
//! A column borrows the caller's arrays; `Client::events` validates every column once per
//! call (kind, dtype, shape, lengths, offsets) before anything is written, then copies each
//! column's bytes into the batch in one piece (absent rows of fixed fields get the fill).

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::model::dtype::{Dtype, Element};
use crate::model::value::{describe, Kind};

/// The values of one column.
#[derive(Clone, Debug)]
pub(crate) enum Cells<'a> {
    /// Every row the same shape: `rows * prod(shape) * dtype.size()` bytes, C order.
    Fixed { dtype: Dtype, shape: Cow<'a, [usize]>, bytes: &'a [u8] },
    /// Varying length (ragged, bytes, text): row `i` is elements `offsets[i]..offsets[i+1]`
    /// of `values`.
    Var { kind: Kind, dtype: Dtype, values: &'a [u8], offsets: &'a [u64] },
}

/// One field's values for every event of a batch call.
#[derive(Clone, Debug)]
pub struct Column<'a> {
    pub(crate) path: &'a str,
    pub(crate) cells: Cells<'a>,
    pub(crate) present: Option<&'a [bool]>,
}

impl<'a> Column<'a> {
    /// A scalar per event: `values[i]` is event `i`'s.
    pub fn scalar<T: Element>(path: &'a str, values: &'a [T]) -> Column<'a> {
        Column::raw(path, T::DTYPE, &[], T::as_bytes(values))
    }

    /// A fixed-shape array per event: `values` holds the events' arrays one after another,
    /// each `row_shape` in C order (`values.len() = events × prod(row_shape)`).
    pub fn array<T: Element>(path: &'a str, values: &'a [T], row_shape: &'a [usize]) -> Column<'a> {
        Column::raw(path, T::DTYPE, row_shape, T::as_bytes(values))
    }

    /// Fixed rows given as little-endian bytes (e.g. a numpy array's buffer): `dtype`, the
    /// per-event shape (`[]` for scalars), `rows × prod(row_shape) × dtype.size()` bytes.
    pub fn raw(path: &'a str, dtype: Dtype, row_shape: impl Into<Cow<'a, [usize]>>, bytes: &'a [u8]) -> Column<'a> {
        Column { path, cells: Cells::Fixed { dtype, shape: row_shape.into(), bytes }, present: None }
    }

    /// A ragged 1-D array per event: event `i`'s elements are `values[offsets[i]..offsets[i+1]]`
    /// (`offsets.len() = events + 1`, non-decreasing).
    pub fn ragged<T: Element>(path: &'a str, values: &'a [T], offsets: &'a [u64]) -> Column<'a> {
        Column::raw_var(path, Kind::Ragged, T::DTYPE, T::as_bytes(values), offsets)
    }

    /// Bytes of varying length per event, as values + offsets (see [`Column::ragged`]).
    pub fn bytes(path: &'a str, values: &'a [u8], offsets: &'a [u64]) -> Column<'a> {
        Column::raw_var(path, Kind::Bytes, Dtype::U8, values, offsets)
    }

    /// Text per event, as one string + byte offsets (each offset on a character boundary).
    pub fn text(path: &'a str, values: &'a str, offsets: &'a [u64]) -> Column<'a> {
        Column::raw_var(path, Kind::Str, Dtype::U8, values.as_bytes(), offsets)
    }

    /// Varying-length rows given as bytes: `kind` is ragged, bytes or str; offsets count
    /// elements of `dtype`. Text must be UTF-8 (checked).
    pub fn raw_var(path: &'a str, kind: Kind, dtype: Dtype, values: &'a [u8], offsets: &'a [u64]) -> Column<'a> {
        Column { path, cells: Cells::Var { kind, dtype, values, offsets }, present: None }
    }

    /// Marks which events carry the field (`present[i]`); events without it get the fill
    /// (aligned fields) or no row (unaligned fields). A varying-length row of an absent event
    /// must be empty.
    pub fn present(mut self, present: &'a [bool]) -> Column<'a> {
        self.present = Some(present);
        self
    }

    /// The field's path.
    pub fn path(&self) -> &str {
        self.path
    }

    pub(crate) fn kind(&self) -> Kind {
        match &self.cells {
            Cells::Fixed { .. } => Kind::Fixed,
            Cells::Var { kind, .. } => *kind,
        }
    }

    pub(crate) fn dtype(&self) -> Dtype {
        match &self.cells {
            Cells::Fixed { dtype, .. } | Cells::Var { dtype, .. } => *dtype,
        }
    }

    pub(crate) fn shape(&self) -> &[usize] {
        match &self.cells {
            Cells::Fixed { shape, .. } => shape,
            Cells::Var { .. } => &[],
        }
    }

    /// `f64 scalar`, `u16 array [4, 8]`, … as error messages print it.
    pub(crate) fn describe(&self) -> String {
        describe(self.kind(), self.dtype(), self.shape())
    }

    /// Checks the column's own lengths for `rows` events: data length, offsets (count,
    /// order, bound, character boundaries), presence mask. Errors name the field.
    pub(crate) fn check_rows(&self, rows: usize) -> Result<()> {
        let bad = |why: String| Err(Error::BadValue { field: self.path.into(), why });
        if let Some(p) = self.present {
            if p.len() != rows {
                return bad(format!("presence mask has {} entries, expected one per event ({rows})", p.len()));
            }
        }
        match &self.cells {
            Cells::Fixed { dtype, shape, bytes } => {
                let per_row = shape.iter().try_fold(dtype.size(), |a, &d| a.checked_mul(d));
                let want = per_row.and_then(|r| r.checked_mul(rows));
                if want != Some(bytes.len()) {
                    return bad(format!(
                        "{} per event × {rows} events needs {} bytes, data has {}",
                        self.describe(),
                        want.map_or_else(|| "too many".to_string(), |w| w.to_string()),
                        bytes.len()
                    ));
                }
            }
            Cells::Var { kind, dtype, values, offsets } => {
                if *kind == Kind::Fixed {
                    return bad("a varying-length column needs kind ragged, bytes or str, not fixed".into());
                }
                if offsets.len() != rows + 1 {
                    return bad(format!("expected {} offsets (events + 1), got {}", rows + 1, offsets.len()));
                }
                if let Some(k) = offsets.windows(2).position(|w| w[1] < w[0]) {
                    return bad(format!("offsets decrease at event {k} ({} then {})", offsets[k], offsets[k + 1]));
                }
                let elems = (values.len() / dtype.size()) as u64;
                if values.len() % dtype.size() != 0 || offsets[rows] > elems {
                    return bad(format!("last offset {} exceeds the {elems} {} elements given", offsets[rows], dtype));
                }
                if let Some(p) = self.present {
                    if let Some(k) = (0..rows).find(|&k| !p[k] && offsets[k + 1] != offsets[k]) {
                        return bad(format!(
                            "event {k} is marked absent but has {} elements",
                            offsets[k + 1] - offsets[k]
                        ));
                    }
                }
                if *kind == Kind::Str {
                    let s = std::str::from_utf8(&values[offsets[0] as usize..offsets[rows] as usize]).map_err(|e| {
                        Error::BadValue { field: self.path.into(), why: format!("text is not UTF-8: {e}") }
                    })?;
                    let base = offsets[0];
                    if let Some(k) = offsets.iter().position(|&o| !s.is_char_boundary((o - base) as usize)) {
                        return bad(format!("offset {k} ({}) is inside a UTF-8 character", offsets[k]));
                    }
                }
            }
        }
        Ok(())
    }
}
