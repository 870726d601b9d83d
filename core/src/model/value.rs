//! Values an event carries: scalars, fixed-shape n-d arrays, ragged 1-D arrays, bytes and
//! text; the [`fields!`](crate::fields) macro that builds an event's field list.
//!
//! A `Value` borrows its data where it can (`&[T]`, ndarray views), so handing an image to
//! `event` copies it once, into the client's batch buffer.

use std::borrow::Cow;

use crate::model::dtype::{Dtype, Element};
use serde::{Deserialize, Serialize};

/// How a field's values are shaped across events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Kind {
    /// Same shape every event (scalars included: shape `[]`).
    Fixed,
    /// A 1-D array whose length varies per event.
    Ragged,
    /// Raw bytes of varying length.
    Bytes,
    /// UTF-8 text of varying length.
    Str,
}

impl Kind {
    /// True for the kinds stored as values + lengths + offsets.
    pub const fn is_ragged(self) -> bool {
        !matches!(self, Kind::Fixed)
    }
}

/// One value of one field of one event.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Value<'a> {
    /// A scalar: its little-endian bytes in the first `dtype.size()` bytes of `bits`.
    Scalar {
        /// Element type.
        dtype: Dtype,
        /// Little-endian bytes, zero padded.
        bits: [u8; 8],
    },
    /// A fixed-shape n-d array in C order.
    Array {
        /// Element type.
        dtype: Dtype,
        /// Dimensions (C order).
        shape: Vec<usize>,
        /// Little-endian element bytes.
        data: Cow<'a, [u8]>,
    },
    /// A 1-D array whose length may differ between events.
    Ragged {
        /// Element type.
        dtype: Dtype,
        /// Little-endian element bytes.
        data: Cow<'a, [u8]>,
    },
    /// Bytes of varying length.
    Bytes(Cow<'a, [u8]>),
    /// Text of varying length.
    Str(Cow<'a, str>),
}

impl<'a> Value<'a> {
    /// A fixed-shape array from a flat C-order slice and its shape.
    pub fn array<T: Element>(data: &'a [T], shape: &[usize]) -> Value<'a> {
        Value::Array { dtype: T::DTYPE, shape: shape.to_vec(), data: Cow::Borrowed(T::as_bytes(data)) }
    }

    /// A ragged (varying-length) 1-D array.
    pub fn ragged<T: Element>(data: &'a [T]) -> Value<'a> {
        Value::Ragged { dtype: T::DTYPE, data: Cow::Borrowed(T::as_bytes(data)) }
    }

    /// Raw bytes of varying length.
    pub fn bytes(data: &'a [u8]) -> Value<'a> {
        Value::Bytes(Cow::Borrowed(data))
    }

    /// The element type (u8 for bytes and text).
    pub fn dtype(&self) -> Dtype {
        match self {
            Value::Scalar { dtype, .. } | Value::Array { dtype, .. } | Value::Ragged { dtype, .. } => *dtype,
            Value::Bytes(_) | Value::Str(_) => Dtype::U8,
        }
    }

    /// The kind of value.
    pub fn kind(&self) -> Kind {
        match self {
            Value::Scalar { .. } | Value::Array { .. } => Kind::Fixed,
            Value::Ragged { .. } => Kind::Ragged,
            Value::Bytes(_) => Kind::Bytes,
            Value::Str(_) => Kind::Str,
        }
    }

    /// Per-event shape (empty for scalars and all varying kinds).
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::Array { shape, .. } => shape,
            _ => &[],
        }
    }

    /// The stored bytes.
    pub fn data(&self) -> &[u8] {
        match self {
            Value::Scalar { dtype, bits } => &bits[..dtype.size()],
            Value::Array { data, .. } | Value::Ragged { data, .. } | Value::Bytes(data) => data,
            Value::Str(s) => s.as_bytes(),
        }
    }

    /// A short description for error messages: `f64 scalar`, `u16 array [4, 8]`, `ragged f32`.
    pub fn describe(&self) -> String {
        describe(self.kind(), self.dtype(), self.shape())
    }

    /// Converts into an owned value.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Scalar { dtype, bits } => Value::Scalar { dtype, bits },
            Value::Array { dtype, shape, data } => Value::Array { dtype, shape, data: Cow::Owned(data.into_owned()) },
            Value::Ragged { dtype, data } => Value::Ragged { dtype, data: Cow::Owned(data.into_owned()) },
            Value::Bytes(b) => Value::Bytes(Cow::Owned(b.into_owned())),
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
        }
    }
}

/// Describes a kind/dtype/shape triple the way error messages print it.
pub fn describe(kind: Kind, dtype: Dtype, shape: &[usize]) -> String {
    match kind {
        Kind::Fixed if shape.is_empty() => format!("{dtype} scalar"),
        Kind::Fixed => format!("{dtype} array {shape:?}"),
        Kind::Ragged => format!("ragged {dtype} array"),
        Kind::Bytes => "bytes".to_string(),
        Kind::Str => "str".to_string(),
    }
}

macro_rules! scalar_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Value<'static> {
            fn from(v: $t) -> Self {
                let mut bits = [0u8; 8];
                let b = <$t as Element>::as_bytes(std::slice::from_ref(&v));
                bits[..b.len()].copy_from_slice(b);
                Value::Scalar { dtype: <$t as Element>::DTYPE, bits }
            }
        }
        impl<'a> From<&'a [$t]> for Value<'a> {
            fn from(v: &'a [$t]) -> Self { Value::array(v, &[v.len()]) }
        }
        impl<'a, const N: usize> From<&'a [$t; N]> for Value<'a> {
            fn from(v: &'a [$t; N]) -> Self { Value::array(&v[..], &[N]) }
        }
        impl<'a> From<&'a Vec<$t>> for Value<'a> {
            fn from(v: &'a Vec<$t>) -> Self { Value::array(&v[..], &[v.len()]) }
        }
        impl From<Vec<$t>> for Value<'static> {
            fn from(v: Vec<$t>) -> Self {
                let n = v.len();
                Value::Array { dtype: <$t as Element>::DTYPE, shape: vec![n],
                    data: Cow::Owned(<$t as Element>::as_bytes(&v).to_vec()) }
            }
        }
    )*};
}
scalar_from!(bool, i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Str(Cow::Borrowed(v))
    }
}
impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Str(Cow::Borrowed(v.as_str()))
    }
}
impl From<String> for Value<'static> {
    fn from(v: String) -> Self {
        Value::Str(Cow::Owned(v))
    }
}

#[cfg(feature = "ndarray")]
mod nd {
    use super::*;
    use ndarray::{ArrayBase, Data, Dimension};

    impl<'a, S, D> From<&'a ArrayBase<S, D>> for Value<'a>
    where
        S: Data,
        S::Elem: Element,
        D: Dimension,
    {
        fn from(a: &'a ArrayBase<S, D>) -> Self {
            let shape = a.shape().to_vec();
            match a.as_slice() {
                Some(s) => Value::Array { dtype: S::Elem::DTYPE, shape, data: Cow::Borrowed(S::Elem::as_bytes(s)) },
                None => {
                    let v: Vec<S::Elem> = a.iter().copied().collect();
                    Value::Array { dtype: S::Elem::DTYPE, shape, data: Cow::Owned(S::Elem::as_bytes(&v).to_vec()) }
                }
            }
        }
    }

    impl<'a, A: Element, D: Dimension> From<ndarray::ArrayView<'a, A, D>> for Value<'a> {
        fn from(a: ndarray::ArrayView<'a, A, D>) -> Self {
            let shape = a.shape().to_vec();
            match a.to_slice() {
                Some(s) => Value::Array { dtype: A::DTYPE, shape, data: Cow::Borrowed(A::as_bytes(s)) },
                None => {
                    let v: Vec<A> = a.iter().copied().collect();
                    Value::Array { dtype: A::DTYPE, shape, data: Cow::Owned(A::as_bytes(&v).to_vec()) }
                }
            }
        }
    }
}

/// One named value of an event.
pub type Field<'a> = (&'a str, Value<'a>);

/// Builds an event's field list: `fields! { "energy" => 1.5, "det/image" => img.view() }`.
///
/// Expands to an array of `(&str, Value)` pairs; nothing is allocated for scalars.
#[macro_export]
macro_rules! fields {
    ($($k:expr => $v:expr),* $(,)?) => {
        [$(($k, $crate::Value::from($v))),*]
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_keep_dtype_shape_and_bytes() {
        let v = Value::from(1.5f64);
        assert_eq!(v.describe(), "f64 scalar");
        assert_eq!(v.data(), &1.5f64.to_le_bytes());
        let img = [1u16, 2, 3, 4, 5, 6];
        let a = Value::array(&img, &[2, 3]);
        assert_eq!(a.describe(), "u16 array [2, 3]");
        assert_eq!(a.data().len(), 12);
        assert_eq!(Value::from("evt1").kind(), Kind::Str);
        assert_eq!(Value::ragged(&[1.0f32, 2.0]).describe(), "ragged f32 array");
        let f = fields! { "a" => 1u8, "b" => "x" };
        assert_eq!(f.len(), 2);
    }

    #[cfg(feature = "ndarray")]
    #[test]
    fn ndarray_views_convert_in_c_order() {
        let a = ndarray::Array2::from_shape_fn((2, 3), |(r, c)| (r * 3 + c) as u16);
        let v = Value::from(a.view());
        assert_eq!(v.shape(), &[2, 3]);
        let t = a.t();
        let vt = Value::from(t);
        assert_eq!(vt.shape(), &[3, 2]);
        assert_eq!(u16::from_bytes(vt.data()), vec![0, 3, 1, 4, 2, 5]);
    }
}
