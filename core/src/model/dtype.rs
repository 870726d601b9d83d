//! Element types of stored values and their on-disk conventions.
//!
//! Every element is stored little-endian (the crate refuses to build on big-endian hosts, so
//! native bytes *are* the on-disk bytes and columns can be memory-mapped as typed slices).
//! This module also owns the per-type default fill values: NaN for floats, −99999 for
//! i32/i64, the type's minimum for i8/i16, its maximum for unsigned types, `false` for bool.

use serde::{Deserialize, Serialize};

#[cfg(not(target_endian = "little"))]
compile_error!("smdfs stores native little-endian bytes; big-endian hosts are not supported");

/// The element type of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Dtype {
    /// Boolean, one byte (0 or 1).
    Bool,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    /// IEEE 754 single precision.
    F32,
    /// IEEE 754 double precision.
    F64,
}

impl Dtype {
    /// All element types, in a fixed order.
    pub const ALL: [Dtype; 11] = [
        Dtype::Bool,
        Dtype::I8,
        Dtype::I16,
        Dtype::I32,
        Dtype::I64,
        Dtype::U8,
        Dtype::U16,
        Dtype::U32,
        Dtype::U64,
        Dtype::F32,
        Dtype::F64,
    ];

    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::I8 | Dtype::U8 => 1,
            Dtype::I16 | Dtype::U16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
        }
    }

    /// Short lowercase name (`"f64"`, `"u16"`, `"bool"`).
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "bool",
            Dtype::I8 => "i8",
            Dtype::I16 => "i16",
            Dtype::I32 => "i32",
            Dtype::I64 => "i64",
            Dtype::U8 => "u8",
            Dtype::U16 => "u16",
            Dtype::U32 => "u32",
            Dtype::U64 => "u64",
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
        }
    }

    /// Parses a name produced by [`Dtype::name`].
    pub fn from_name(s: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.name() == s)
    }

    /// The numpy `descr` string (`"<f8"`, `"|u1"`, `"|b1"`).
    pub const fn numpy_descr(self) -> &'static str {
        match self {
            Dtype::Bool => "|b1",
            Dtype::I8 => "|i1",
            Dtype::I16 => "<i2",
            Dtype::I32 => "<i4",
            Dtype::I64 => "<i8",
            Dtype::U8 => "|u1",
            Dtype::U16 => "<u2",
            Dtype::U32 => "<u4",
            Dtype::U64 => "<u8",
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
        }
    }

    /// True for f32 and f64.
    pub const fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64)
    }

    /// The default fill value's little-endian bytes (`size()` of them).
    pub fn default_fill(self) -> Vec<u8> {
        match self {
            Dtype::Bool => vec![0],
            Dtype::I8 => i8::MIN.to_le_bytes().to_vec(),
            Dtype::I16 => i16::MIN.to_le_bytes().to_vec(),
            Dtype::I32 => (-99999i32).to_le_bytes().to_vec(),
            Dtype::I64 => (-99999i64).to_le_bytes().to_vec(),
            Dtype::U8 => u8::MAX.to_le_bytes().to_vec(),
            Dtype::U16 => u16::MAX.to_le_bytes().to_vec(),
            Dtype::U32 => u32::MAX.to_le_bytes().to_vec(),
            Dtype::U64 => u64::MAX.to_le_bytes().to_vec(),
            Dtype::F32 => f32::NAN.to_le_bytes().to_vec(),
            Dtype::F64 => f64::NAN.to_le_bytes().to_vec(),
        }
    }

    /// numpy's name of the type (`"bool"`, `"int8"`, …, `"float64"`), which is also Zarr v3's
    /// `data_type`.
    pub fn numpy_name(self) -> &'static str {
        match self {
            Dtype::Bool => "bool",
            Dtype::I8 => "int8",
            Dtype::I16 => "int16",
            Dtype::I32 => "int32",
            Dtype::I64 => "int64",
            Dtype::U8 => "uint8",
            Dtype::U16 => "uint16",
            Dtype::U32 => "uint32",
            Dtype::U64 => "uint64",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }

    /// Interprets one element's little-endian bytes as f64 (for statistics and display).
    pub fn to_f64(self, b: &[u8]) -> f64 {
        fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
            let mut a = [0u8; N];
            a.copy_from_slice(&b[..N]);
            a
        }
        match self {
            Dtype::Bool => f64::from(u8::from(b[0] != 0)),
            Dtype::I8 => f64::from(b[0] as i8),
            Dtype::I16 => f64::from(i16::from_le_bytes(arr(b))),
            Dtype::I32 => f64::from(i32::from_le_bytes(arr(b))),
            Dtype::I64 => i64::from_le_bytes(arr(b)) as f64,
            Dtype::U8 => f64::from(b[0]),
            Dtype::U16 => f64::from(u16::from_le_bytes(arr(b))),
            Dtype::U32 => f64::from(u32::from_le_bytes(arr(b))),
            Dtype::U64 => u64::from_le_bytes(arr(b)) as f64,
            Dtype::F32 => f64::from(f32::from_le_bytes(arr(b))),
            Dtype::F64 => f64::from_le_bytes(arr(b)),
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust type that can be stored as an element. Implemented for `bool`, the integer types
/// and `f32`/`f64`.
pub trait Element: Copy + Send + Sync + 'static {
    /// The stored type.
    const DTYPE: Dtype;
    /// The element's bytes as stored (little-endian; bool as 0/1).
    fn as_bytes(s: &[Self]) -> &[u8];
    /// Reads elements from stored bytes (length a multiple of the element size).
    fn from_bytes(b: &[u8]) -> Vec<Self>;
}

macro_rules! pod_element {
    ($($t:ty => $d:ident),*) => {$(
        impl Element for $t {
            const DTYPE: Dtype = Dtype::$d;
            fn as_bytes(s: &[Self]) -> &[u8] { bytemuck::cast_slice(s) }
            fn from_bytes(b: &[u8]) -> Vec<Self> { bytemuck::pod_collect_to_vec(b) }
        }
    )*};
}
pod_element!(i8 => I8, i16 => I16, i32 => I32, i64 => I64, u8 => U8, u16 => U16, u32 => U32,
    u64 => U64, f32 => F32, f64 => F64);

impl Element for bool {
    const DTYPE: Dtype = Dtype::Bool;
    fn as_bytes(s: &[Self]) -> &[u8] {
        // SAFETY: bool is one byte holding 0 or 1; viewing it as u8 is always valid.
        unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), s.len()) }
    }
    fn from_bytes(b: &[u8]) -> Vec<Self> {
        b.iter().map(|&x| x != 0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_values_follow_the_convention_and_fit_the_type() {
        assert!(Dtype::F64.to_f64(&Dtype::F64.default_fill()).is_nan());
        assert!(Dtype::F32.to_f64(&Dtype::F32.default_fill()).is_nan());
        assert_eq!(Dtype::I32.to_f64(&Dtype::I32.default_fill()), -99999.0);
        assert_eq!(Dtype::I64.to_f64(&Dtype::I64.default_fill()), -99999.0);
        assert_eq!(Dtype::I8.to_f64(&Dtype::I8.default_fill()), -128.0);
        assert_eq!(Dtype::U16.to_f64(&Dtype::U16.default_fill()), 65535.0);
        for d in Dtype::ALL {
            assert_eq!(d.default_fill().len(), d.size(), "{d}");
            assert_eq!(Dtype::from_name(d.name()), Some(d));
        }
    }
}
