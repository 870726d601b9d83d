//! What a recorder keeps per key: the values recorded under it (one array when every value
//! has one dtype and shape, else a list), how keys map to field paths, and how a key's
//! series is read back from a run (mixed-type values stored as tagged bytes).

use std::borrow::Cow;

use super::*;
use crate::error::{Error, Result};
use crate::model::dtype::{Dtype, Element};
use crate::model::path::validate_path;
use crate::model::value::{Kind, Value};
use crate::read::run::Run;

/// All values recorded under one key, in id order.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    /// The values' ids (0, 1, 2, … for a key recorded by one recorder).
    pub ids: Vec<u64>,
    /// The values.
    pub values: Values,
}

/// The values of a key: one stacked array when they agree, else a list.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// Every value is a scalar or array of one dtype and shape `s`: one `Value::Array` of
    /// shape `[n, s...]` (C order).
    Array(Value<'static>),
    /// Values of differing dtype or shape, or of varying-length kinds (bytes, text, ragged).
    List(Vec<Value<'static>>),
}

impl Recorded {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The stacked array, if the values agree.
    pub fn as_array(&self) -> Option<&Value<'static>> {
        match &self.values {
            Values::Array(v) => Some(v),
            Values::List(_) => None,
        }
    }

    /// The values one by one (an array is split into its rows).
    pub fn to_list(&self) -> Vec<Value<'static>> {
        match &self.values {
            Values::List(l) => l.clone(),
            Values::Array(Value::Array { dtype, shape, data }) => {
                let row = shape[1..].to_vec();
                let rb = row.iter().product::<usize>() * dtype.size();
                (0..self.len()).map(|i| owned_value(Kind::Fixed, *dtype, &row, &data[i * rb..(i + 1) * rb])).collect()
            }
            Values::Array(v) => vec![v.clone()],
        }
    }

    /// Every element of the stacked array as `T` (flattened, C order). An error if the
    /// values do not form one array of `T`.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        match &self.values {
            Values::Array(Value::Array { dtype, data, .. }) if *dtype == T::DTYPE => Ok(T::from_bytes(data)),
            Values::Array(v) => Err(Error::Usage(format!("values are {}, not {}", v.describe(), T::DTYPE))),
            Values::List(_) => Err(Error::Usage("values differ in dtype or shape: use to_list()".into())),
        }
    }
}

/// The (kind, dtype, shape) a key's main field was fixed to.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Spec {
    kind: Kind,
    dtype: Dtype,
    shape: Vec<usize>,
}

impl Spec {
    pub(super) fn of(v: &Value<'_>) -> Spec {
        Spec { kind: v.kind(), dtype: v.dtype(), shape: v.shape().to_vec() }
    }
}

/// One key's values as rows of its main field plus its mixed rows, before stacking.
#[derive(Default)]
pub(super) struct Series {
    spec: Option<Spec>,
    main_ids: Vec<u64>,
    /// Fixed kind: the rows' bytes back to back.
    main_fixed: Vec<u8>,
    /// Varying kinds: one value per row.
    main_var: Vec<Value<'static>>,
    mixed: Vec<(u64, Value<'static>)>,
}

impl Series {
    pub(super) fn push(&mut self, id: u64, v: &Value<'_>) {
        let spec = self.spec.get_or_insert_with(|| Spec::of(v));
        if *spec != Spec::of(v) {
            self.mixed.push((id, v.clone().into_owned()));
        } else if spec.kind == Kind::Fixed {
            self.main_ids.push(id);
            self.main_fixed.extend_from_slice(v.data());
        } else {
            self.main_ids.push(id);
            self.main_var.push(v.clone().into_owned());
        }
    }

    /// Stacks the values: an array when there are no mixed rows and the kind is fixed.
    pub(super) fn assemble(&self) -> Recorded {
        let Some(spec) = &self.spec else { return Recorded { ids: vec![], values: Values::List(vec![]) } };
        if self.mixed.is_empty() && spec.kind == Kind::Fixed {
            let mut shape = vec![self.main_ids.len()];
            shape.extend_from_slice(&spec.shape);
            let data = Cow::Owned(self.main_fixed.clone());
            return Recorded {
                ids: self.main_ids.clone(),
                values: Values::Array(Value::Array { dtype: spec.dtype, shape, data }),
            };
        }
        let rb = spec.shape.iter().product::<usize>() * spec.dtype.size();
        let main = self.main_ids.iter().enumerate().map(|(k, &id)| {
            let v = if spec.kind == Kind::Fixed {
                owned_value(Kind::Fixed, spec.dtype, &spec.shape, &self.main_fixed[k * rb..(k + 1) * rb])
            } else {
                self.main_var[k].clone()
            };
            (id, v)
        });
        let mut all: Vec<(u64, Value<'static>)> = main.chain(self.mixed.iter().cloned()).collect();
        all.sort_by_key(|(id, _)| *id);
        let (ids, values) = all.into_iter().unzip();
        Recorded { ids, values: Values::List(values) }
    }
}

/// A view of a value that borrows its data (no copy of an owned array).
pub(super) fn borrowed<'a>(v: &'a Value<'_>) -> Value<'a> {
    match v {
        Value::Scalar { dtype, bits } => Value::Scalar { dtype: *dtype, bits: *bits },
        Value::Array { dtype, shape, data } => {
            Value::Array { dtype: *dtype, shape: shape.clone(), data: Cow::Borrowed(data) }
        }
        Value::Ragged { dtype, data } => Value::Ragged { dtype: *dtype, data: Cow::Borrowed(data) },
        Value::Bytes(b) => Value::Bytes(Cow::Borrowed(b)),
        Value::Str(t) => Value::Str(Cow::Borrowed(t)),
    }
}

/// Builds a value of a kind from its bytes.
pub(super) fn owned_value(kind: Kind, dtype: Dtype, shape: &[usize], data: &[u8]) -> Value<'static> {
    match kind {
        Kind::Fixed if shape.is_empty() => {
            let mut bits = [0u8; 8];
            bits[..data.len().min(8)].copy_from_slice(&data[..data.len().min(8)]);
            Value::Scalar { dtype, bits }
        }
        Kind::Fixed => Value::Array { dtype, shape: shape.to_vec(), data: Cow::Owned(data.to_vec()) },
        Kind::Ragged => Value::Ragged { dtype, data: Cow::Owned(data.to_vec()) },
        Kind::Str => Value::Str(Cow::Owned(String::from_utf8_lossy(data).into_owned())),
        _ => Value::Bytes(Cow::Owned(data.to_vec())),
    }
}

/// A mixed row: kind, dtype, ndim (one byte each), ndim u64 dims, then the value's bytes.
pub(super) fn encode_mixed(v: &Value<'_>) -> Vec<u8> {
    let kind = match v.kind() {
        Kind::Fixed => 0u8,
        Kind::Ragged => 1,
        Kind::Bytes => 2,
        _ => 3,
    };
    let dt = Dtype::ALL.iter().position(|d| *d == v.dtype()).unwrap_or(0) as u8;
    let mut out = vec![kind, dt, v.shape().len() as u8];
    for d in v.shape() {
        out.extend_from_slice(&(*d as u64).to_le_bytes());
    }
    out.extend_from_slice(v.data());
    out
}

pub(super) fn decode_mixed(b: &[u8]) -> Option<Value<'static>> {
    let (&[kind, dt, ndim], rest) = b.split_first_chunk::<3>()?;
    let dtype = *Dtype::ALL.get(usize::from(dt))?;
    let dims_len = usize::from(ndim) * 8;
    let shape: Vec<usize> = rest
        .get(..dims_len)?
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as usize)
        .collect();
    let data = &rest[dims_len..];
    let kind = match kind {
        0 => Kind::Fixed,
        1 => Kind::Ragged,
        2 => Kind::Bytes,
        3 => Kind::Str,
        _ => return None,
    };
    Some(owned_value(kind, dtype, &shape, data))
}

/// The store field of a key (`a/b` → `a/unaligned_b`).
pub(super) fn field_of(key: &str) -> String {
    match key.rsplit_once('/') {
        Some((dir, last)) => format!("{dir}/{FIELD_PREFIX}{last}"),
        None => format!("{FIELD_PREFIX}{key}"),
    }
}

/// The key of a store field and whether it is the key's mixed field.
pub(super) fn key_of(field: &str) -> Option<(String, bool)> {
    let (dir, last) = match field.rsplit_once('/') {
        Some((d, l)) => (Some(d), l),
        None => (None, field),
    };
    let last = last.strip_prefix(FIELD_PREFIX)?;
    let (last, mixed) = match last.strip_suffix(MIXED_SUFFIX) {
        Some(l) => (l, true),
        None => (last, false),
    };
    if last.is_empty() {
        return None;
    }
    Some((dir.map_or_else(|| last.to_string(), |d| format!("{d}/{last}")), mixed))
}

pub(super) fn validate_key(key: &str) -> Result<()> {
    validate_path(key)?;
    if key.contains('#') {
        return Err(Error::BadPath {
            path: key.escape_debug().to_string(),
            why: "'#' is reserved in recorder keys".into(),
        });
    }
    validate_path(&field_of(key))
}

pub(super) fn field_rows(run: &Run, i: usize) -> u64 {
    let g = run.fields()[i].group;
    run.groups()[g].index.len()
}

/// Reads one key's main and mixed fields from a run.
pub(super) fn read_series(run: &Run, main: Option<usize>, mixed: Option<usize>) -> Result<Series> {
    let mut s = Series::default();
    let ids_of = |path: &str, n: u64| -> Result<Vec<u64>> {
        let mut ids = vec![0u64; n as usize];
        run.read_ids(path, 0, &mut ids)?;
        Ok(ids)
    };
    if let Some(m) = main {
        let spec = &run.fields()[m].spec;
        let f = run.field(&spec.path)?;
        s.spec = Some(Spec { kind: spec.kind, dtype: spec.dtype, shape: spec.shape.clone() });
        s.main_ids = ids_of(&spec.group, f.rows())?;
        if spec.kind == Kind::Fixed {
            s.main_fixed = vec![0u8; f.rows() as usize * f.row_bytes()];
            f.read_rows(0, &mut s.main_fixed)?;
        } else {
            s.main_var = (0..f.rows())
                .map(|i| f.ragged_row(i).map(|b| owned_value(spec.kind, spec.dtype, &[], b)))
                .collect::<Result<_>>()?;
        }
    }
    if let Some(m) = mixed {
        let spec = &run.fields()[m].spec;
        let f = run.field(&spec.path)?;
        let ids = ids_of(&spec.group, f.rows())?;
        for (i, id) in ids.into_iter().enumerate() {
            let b = f.ragged_row(i as u64)?;
            let v = decode_mixed(b).ok_or_else(|| Error::Corrupt {
                path: run.dir().to_path_buf(),
                offset: 0,
                why: format!("field {:?} row {i} is not a recorded value", spec.path),
            })?;
            if s.spec.is_none() {
                s.spec = Some(Spec::of(&v));
            }
            s.mixed.push((id, v));
        }
    }
    Ok(s)
}
