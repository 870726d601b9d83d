//! Typed field handles: a field resolved once (path looked up, kind, dtype and shape fixed in
//! the schema), then written by id with no name lookup, no `Value` and no allocation per
//! event. The handle's type fixes what a value must be (`Scalar<f64>` takes an `f64`,
//! `Array<u16>` a `&[u16]` of the shape's element count), so only an array's length is
//! checked at run time.
//!
//! A handle is made by `SmallData::{scalar, array, ragged, bytes, text}` (or the same methods
//! of a `Client`) and used with `client.begin(id).set(&h, v)…write()`. Resolving a handle
//! counts as the field's first sight: it fixes the field in the run's schema even if no event
//! carries it.

use std::borrow::Cow;
use std::marker::PhantomData;

use crate::model::dtype::Element;
use crate::model::schema::FieldId;
use crate::model::value::Value;

/// What every handle knows: the field's id in the run's schema and its path (for errors).
#[derive(Clone, Debug)]
pub struct Resolved {
    pub(crate) id: FieldId,
    pub(crate) path: std::sync::Arc<str>,
}

macro_rules! handle {
    ($(#[$m:meta])* $name:ident $(<$t:ident>)?) => {
        $(#[$m])*
        #[derive(Clone, Debug)]
        pub struct $name$(<$t>)? {
            pub(crate) r: Resolved,
            $(pub(crate) _t: PhantomData<fn() -> $t>,)?
        }
        impl$(<$t>)? $name$(<$t>)? {
            /// The field's path.
            pub fn path(&self) -> &str {
                &self.r.path
            }
        }
    };
}

handle!(
    /// A scalar field of element type `T`.
    Scalar<T>
);
/// A fixed-shape n-d array field of element type `T` (values: C-order `&[T]` with the
/// shape's element count).
#[derive(Clone, Debug)]
pub struct Array<T> {
    pub(crate) r: Resolved,
    pub(crate) _t: PhantomData<fn() -> T>,
    /// Elements per event.
    pub(crate) elements: usize,
}

impl<T> Array<T> {
    /// The field's path.
    pub fn path(&self) -> &str {
        &self.r.path
    }
}
handle!(
    /// A ragged field: a 1-D array of `T` whose length varies per event.
    Ragged<T>
);
handle!(
    /// A field of raw bytes of varying length.
    Bytes
);
handle!(
    /// A field of UTF-8 text of varying length.
    Text
);

impl<T> Scalar<T> {
    pub(crate) fn new(r: Resolved) -> Self {
        Scalar { r, _t: PhantomData }
    }
}
impl<T> Array<T> {
    pub(crate) fn new(r: Resolved, elements: usize) -> Self {
        Array { r, _t: PhantomData, elements }
    }
}
impl<T> Ragged<T> {
    pub(crate) fn new(r: Resolved) -> Self {
        Ragged { r, _t: PhantomData }
    }
}
impl Bytes {
    pub(crate) fn new(r: Resolved) -> Self {
        Bytes { r }
    }
}
impl Text {
    pub(crate) fn new(r: Resolved) -> Self {
        Text { r }
    }
}

/// The prototype value a handle registers its field with (kind, dtype, shape; no data
/// beyond what the registry's checks need).
pub(crate) fn prototype_scalar<T: Element>() -> Value<'static> {
    Value::Scalar { dtype: T::DTYPE, bits: [0; 8] }
}

/// See [`prototype_scalar`].
pub(crate) fn prototype_array<T: Element>(shape: &[usize]) -> Option<Value<'static>> {
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    let bytes = n.checked_mul(T::DTYPE.size())?;
    Some(Value::Array { dtype: T::DTYPE, shape: shape.to_vec(), data: Cow::Owned(vec![0; bytes]) })
}

/// See [`prototype_scalar`].
pub(crate) fn prototype_ragged<T: Element>() -> Value<'static> {
    Value::Ragged { dtype: T::DTYPE, data: Cow::Borrowed(&[]) }
}

/// A handle that can be given a value of type `V` (see the handle types).
pub trait Put<V> {
    /// The resolved field.
    #[doc(hidden)]
    fn resolved(&self) -> &Resolved;
    /// Calls `f` with the value's stored bytes and its element count.
    #[doc(hidden)]
    fn with_bytes<R>(&self, v: V, f: impl FnOnce(&[u8], usize) -> R) -> R;
    /// Elements a value must have (arrays); `None` where any length goes.
    #[doc(hidden)]
    fn expected(&self) -> Option<usize>;
}

/// Implements [`Put`] for one (value type, handle) pair: `|v| (bytes, elements)` turns the
/// value into its stored bytes; `checked` handles expect their `elements` per value.
macro_rules! put {
    ([$($g:tt)*] $v:ty => $h:ty, |$x:ident| ($bytes:expr, $n:expr) $(, $checked:ident)?) => {
        impl<$($g)*> Put<$v> for $h {
            fn resolved(&self) -> &Resolved {
                &self.r
            }
            #[inline]
            fn with_bytes<R>(&self, $x: $v, f: impl FnOnce(&[u8], usize) -> R) -> R {
                f($bytes, $n)
            }
            fn expected(&self) -> Option<usize> {
                put!(@expected self $(, $checked)?)
            }
        }
    };
    (@expected $s:ident) => { None };
    (@expected $s:ident, checked) => { Some($s.elements) };
}

put!([T: Element] T => Scalar<T>, |v| (T::as_bytes(std::slice::from_ref(&v)), 1));
put!(['a, T: Element] &'a [T] => Array<T>, |v| (T::as_bytes(v), v.len()), checked);
put!(['a, T: Element, const N: usize] &'a [T; N] => Array<T>, |v| (T::as_bytes(&v[..]), N), checked);
put!(['a, T: Element] &'a [T] => Ragged<T>, |v| (T::as_bytes(v), v.len()));
put!(['a] &'a [u8] => Bytes, |v| (v, v.len()));
put!(['a] &'a str => Text, |v| (v.as_bytes(), v.len()));
