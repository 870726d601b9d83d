//! Named reductions over values contributed by clients: sum, min, max and count.
//!
//! Each client accumulates locally (no lock per contribution) and merges its accumulators
//! into the run's when it finishes; integers are summed exactly (i128), floats as f64.

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
}
