//! Named reductions over values contributed by clients: sum, min, max and count.
//!
//! Each client accumulates locally (no lock per contribution) and merges its accumulators
//! into the run's when it finishes; integers are summed exactly (i128), floats as f64.
//! In MPI mode every rank's accumulators are all-gathered (`encode` / `decode`, a small
//! binary form: JSON has no NaN, infinities or i128) and merged in rank order, so every rank
//! reads the same value.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// A number as accumulated: integers exactly, floats as f64.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    /// Any integer type.
    Int(i128),
    /// f32 or f64.
    Float(f64),
}

/// Types that can be contributed to and read back from a reduction.
pub trait Reducible: Copy {
    /// Into the accumulator's number.
    fn to_num(self) -> Num;
    /// Back from a reduced number; `None` if it does not fit.
    fn from_num(n: Num) -> Option<Self>;
}

macro_rules! int_reducible {
    ($($t:ty),*) => {$(
        impl Reducible for $t {
            fn to_num(self) -> Num { Num::Int(self as i128) }
            fn from_num(n: Num) -> Option<Self> {
                match n { Num::Int(i) => <$t>::try_from(i).ok(), Num::Float(_) => None }
            }
        }
    )*};
}
int_reducible!(i8, i16, i32, i64, u8, u16, u32, u64, usize, isize);

impl Reducible for f64 {
    fn to_num(self) -> Num {
        Num::Float(self)
    }
    fn from_num(n: Num) -> Option<Self> {
        match n {
            Num::Float(f) => Some(f),
            Num::Int(i) => Some(i as f64),
        }
    }
}
impl Reducible for f32 {
    fn to_num(self) -> Num {
        Num::Float(f64::from(self))
    }
    fn from_num(n: Num) -> Option<Self> {
        f64::from_num(n).map(|f| f as f32)
    }
}

/// Sum, minimum, maximum and count of one named reduction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accumulator {
    /// Sum of contributions.
    pub sum: Num,
    /// Smallest contribution.
    pub min: Num,
    /// Largest contribution.
    pub max: Num,
    /// Number of contributions.
    pub count: u64,
}

impl Accumulator {
    /// An accumulator holding one contribution.
    pub fn of(n: Num) -> Accumulator {
        Accumulator { sum: n, min: n, max: n, count: 1 }
    }

    /// Folds another accumulator in; integer and float contributions do not mix.
    pub fn merge(&mut self, name: &str, o: &Accumulator) -> Result<()> {
        match (self.sum, o.sum) {
            (Num::Int(a), Num::Int(b)) => {
                self.sum = Num::Int(a + b);
                if let (Num::Int(x), Num::Int(y)) = (self.min, o.min) {
                    self.min = Num::Int(x.min(y));
                }
                if let (Num::Int(x), Num::Int(y)) = (self.max, o.max) {
                    self.max = Num::Int(x.max(y));
                }
            }
            (Num::Float(a), Num::Float(b)) => {
                self.sum = Num::Float(a + b);
                if let (Num::Float(x), Num::Float(y)) = (self.min, o.min) {
                    self.min = Num::Float(x.min(y));
                }
                if let (Num::Float(x), Num::Float(y)) = (self.max, o.max) {
                    self.max = Num::Float(x.max(y));
                }
            }
            _ => return Err(Error::Usage(format!("reduction {name:?} mixes integer and float contributions"))),
        }
        self.count += o.count;
        Ok(())
    }
}

/// Accumulators by name.
pub type Reductions = BTreeMap<String, Accumulator>;

/// Adds one contribution to a map of accumulators.
pub(crate) fn contribute(map: &mut Reductions, name: &str, n: Num) -> Result<()> {
    match map.get_mut(name) {
        Some(a) => a.merge(name, &Accumulator::of(n)),
        None => {
            map.insert(name.to_string(), Accumulator::of(n));
            Ok(())
        }
    }
}

/// Merges `other` into `all` (the same as every contribution arriving at `all`).
#[cfg_attr(not(feature = "mpi"), allow(dead_code))] // used by MPI mode
pub(crate) fn merge_all(all: &mut Reductions, other: Reductions) -> Result<()> {
    for (name, acc) in other {
        match all.get_mut(&name) {
            Some(a) => a.merge(&name, &acc)?,
            None => {
                all.insert(name, acc);
            }
        }
    }
    Ok(())
}

#[cfg_attr(not(feature = "mpi"), allow(dead_code))] // used by MPI mode
fn put_num(out: &mut Vec<u8>, n: Num) {
    match n {
        Num::Int(i) => {
            out.push(0);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Num::Float(f) => {
            out.push(1);
            out.extend_from_slice(&f.to_le_bytes());
        }
    }
}

/// Encodes accumulators: per name, `u32 len, name, 3 × (u8 kind, i128 | f64), u64 count`,
/// all little-endian.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))] // used by MPI mode
pub(crate) fn encode(map: &Reductions) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, a) in map {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        for n in [a.sum, a.min, a.max] {
            put_num(&mut out, n);
        }
        out.extend_from_slice(&a.count.to_le_bytes());
    }
    out
}

/// Decodes what [`encode`] wrote.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))] // used by MPI mode
pub(crate) fn decode(mut b: &[u8]) -> Result<Reductions> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
        if b.len() < n {
            return Err(Error::Mpi { rank: None, why: "truncated reductions message".into() });
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Ok(h)
    }
    fn num(b: &mut &[u8]) -> Result<Num> {
        Ok(match take(b, 1)?[0] {
            0 => Num::Int(i128::from_le_bytes(take(b, 16)?.try_into().expect("16 bytes"))),
            _ => Num::Float(f64::from_le_bytes(take(b, 8)?.try_into().expect("8 bytes"))),
        })
    }
    let mut map = Reductions::new();
    while !b.is_empty() {
        let n = u32::from_le_bytes(take(&mut b, 4)?.try_into().expect("4 bytes")) as usize;
        let name = String::from_utf8(take(&mut b, n)?.to_vec()).map_err(|_| Error::Mpi {
            rank: None,
            why: "reduction name in a reductions message is not UTF-8".into(),
        })?;
        let (sum, min, max) = (num(&mut b)?, num(&mut b)?, num(&mut b)?);
        let count = u64::from_le_bytes(take(&mut b, 8)?.try_into().expect("8 bytes"));
        map.insert(name, Accumulator { sum, min, max, count });
    }
    Ok(map)
}

/// Reads a reduced value back as `T`, naming the reduction in errors.
pub(crate) fn read_back<T: Reducible>(name: &str, n: Num) -> Result<T> {
    T::from_num(n).ok_or_else(|| {
        Error::Usage(format!(
            "reduction {name:?} holds {n:?}, which does not convert to {}",
            std::any::type_name::<T>()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_sum_exactly_and_floats_do_not_mix_with_them() {
        let mut m = Reductions::new();
        contribute(&mut m, "n", 3u64.to_num()).unwrap();
        contribute(&mut m, "n", u64::MAX.to_num()).unwrap();
        assert_eq!(m["n"].sum, Num::Int(3 + u64::MAX as i128));
        assert_eq!(read_back::<u64>("n", m["n"].max).unwrap(), u64::MAX);
        assert!(read_back::<u64>("n", m["n"].sum).is_err());
        assert!(contribute(&mut m, "n", 1.0f64.to_num()).is_err());
    }

    #[test]
    fn accumulators_survive_encoding_including_nan_infinities_and_i128() {
        let mut m = Reductions::new();
        contribute(&mut m, "big", Num::Int(i128::MIN + 1)).unwrap();
        contribute(&mut m, "f", Num::Float(f64::NEG_INFINITY)).unwrap();
        contribute(&mut m, "f", Num::Float(f64::NAN)).unwrap();
        let back = decode(&encode(&m)).unwrap();
        assert_eq!(back["big"], m["big"]);
        assert_eq!(back["f"].count, 2);
        assert_eq!(back["f"].min, Num::Float(f64::NEG_INFINITY));
        assert!(decode(&encode(&m)[..5]).is_err());
        let mut all = Reductions::new();
        merge_all(&mut all, back.clone()).unwrap();
        merge_all(&mut all, back).unwrap();
        assert_eq!(all["big"].count, 2);
    }
}
