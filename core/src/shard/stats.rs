//! A shard's field statistics: min, max, sum and count over every element of every present
//! row, NaN excluded, taken while a batch's column is still in cache. Integers sum exactly in
//! a wide integer; floats in eight branch-free lanes the compiler vectorizes (AVX2 where the
//! CPU has it).

use crate::model::dtype::Dtype;
use crate::model::schema::{FieldSpec, Stats};

/// Adds the present rows of a batch to a field's statistics: every element of every present
/// row (scalars and n-d arrays alike), NaN excluded. One typed pass per row, so the cost is
/// a few instructions per element, not a decode each.
pub(crate) fn add_stats(st: &mut Stats, spec: &FieldSpec, data: &[u8], present: &[u8]) {
    if !present.contains(&0) {
        // Every row present: one pass over the whole column (min, max, sum and count
        // combine the same way row by row or at once).
        st.merge(&row_stats(spec.dtype, data));
        return;
    }
    let row_bytes = spec.row_bytes().max(1);
    for (r, row) in data.chunks_exact(row_bytes).enumerate() {
        if present.get(r).copied().unwrap_or(1) != 0 {
            st.merge(&row_stats(spec.dtype, row));
        }
    }
}

/// Statistics of one row of little-endian elements of `dtype` (with AVX2 where the CPU has
/// it: the same code, compiled for wider vectors).
pub(crate) fn row_stats(dtype: Dtype, row: &[u8]) -> Stats {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { row_stats_avx2(dtype, row) };
    }
    row_stats_portable(dtype, row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_stats_avx2(dtype: Dtype, row: &[u8]) -> Stats {
    row_stats_portable(dtype, row)
}

#[inline(always)]
fn row_stats_portable(dtype: Dtype, row: &[u8]) -> Stats {
    // Integer sums accumulate in a wide integer (exact), not f64. On a little-endian host an
    // aligned column is read as typed elements in place, in passes the compiler vectorizes.
    macro_rules! ints {
        ($t:ty, $acc:ty) => {{
            let size = std::mem::size_of::<$t>();
            let n = (row.len() / size) as u64;
            if n == 0 {
                return Stats::default();
            }
            let typed: Option<&[$t]> =
                if cfg!(target_endian = "little") { bytemuck::try_cast_slice(row).ok() } else { None };
            let (lo, hi, sum) = match typed {
                Some(v) => {
                    let lo = v.iter().copied().min().unwrap_or(<$t>::MAX);
                    let hi = v.iter().copied().max().unwrap_or(<$t>::MIN);
                    // Narrow types sum in blocks small enough for a 32-bit accumulator
                    // (twice the lanes of a 64-bit one), then widen.
                    let sum: $acc = if size <= 2 {
                        v.chunks(1 << 15).map(|b| b.iter().map(|&x| x as i32).sum::<i32>() as $acc).sum()
                    } else {
                        v.iter().map(|&x| x as $acc).sum()
                    };
                    (lo, hi, sum)
                }
                None => {
                    let (mut lo, mut hi, mut sum) = (<$t>::MAX, <$t>::MIN, 0 as $acc);
                    for c in row.chunks_exact(size) {
                        let v = <$t>::from_le_bytes(c.try_into().expect("element size"));
                        lo = lo.min(v);
                        hi = hi.max(v);
                        sum += v as $acc;
                    }
                    (lo, hi, sum)
                }
            };
            Stats { count: n, min: lo as f64, max: hi as f64, sum: sum as f64 }
        }};
    }
    // Floats: NaN is skipped (not counted); eight independent lanes of min, max, sum and NaN
    // count (branch-free, so the compiler vectorizes them), combined at the end.
    macro_rules! floats {
        ($t:ty) => {{
            const LANES: usize = 8;
            let size = std::mem::size_of::<$t>();
            let (mut lo, mut hi) = ([f64::INFINITY; LANES], [f64::NEG_INFINITY; LANES]);
            let (mut sum, mut nan) = ([0f64; LANES], [0u64; LANES]);
            let mut blocks = row.chunks_exact(size * LANES);
            for c in &mut blocks {
                for k in 0..LANES {
                    let v =
                        f64::from(<$t>::from_le_bytes(c[k * size..(k + 1) * size].try_into().expect("element size")));
                    let is_nan = v.is_nan();
                    nan[k] += u64::from(is_nan);
                    sum[k] += if is_nan { 0.0 } else { v };
                    // A NaN compares false and keeps the lane (the shape of `minpd`/`maxpd`).
                    lo[k] = if v < lo[k] { v } else { lo[k] };
                    hi[k] = if v > hi[k] { v } else { hi[k] };
                }
            }
            let whole = (row.len() / (size * LANES) * LANES) as u64;
            let mut st = Stats {
                count: whole - nan.iter().sum::<u64>(),
                min: lo.iter().copied().fold(f64::INFINITY, f64::min),
                max: hi.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                sum: sum.iter().sum(),
            };
            for c in blocks.remainder().chunks_exact(size) {
                let v = f64::from(<$t>::from_le_bytes(c.try_into().expect("element size")));
                if !v.is_nan() {
                    st.add(v);
                }
            }
            st
        }};
    }
    match dtype {
        Dtype::Bool => {
            let ones = row.iter().filter(|&&b| b != 0).count() as u64;
            let n = row.len() as u64;
            if n == 0 {
                return Stats::default();
            }
            Stats {
                count: n,
                min: if ones == n { 1.0 } else { 0.0 },
                max: if ones > 0 { 1.0 } else { 0.0 },
                sum: ones as f64,
            }
        }
        Dtype::I8 => ints!(i8, i64),
        Dtype::I16 => ints!(i16, i64),
        Dtype::I32 => ints!(i32, i64),
        Dtype::I64 => ints!(i64, i128),
        Dtype::U8 => ints!(u8, u64),
        Dtype::U16 => ints!(u16, u64),
        Dtype::U32 => ints!(u32, u64),
        Dtype::U64 => ints!(u64, u128),
        Dtype::F32 => floats!(f32),
        Dtype::F64 => floats!(f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain definition: NaN skipped, the rest counted, min, max and summed in order.
    fn reference(vals: &[f64]) -> Stats {
        let mut st = Stats::default();
        for &v in vals.iter().filter(|v| !v.is_nan()) {
            st.add(v);
        }
        st
    }

    #[test]
    fn float_statistics_skip_nan_and_match_the_plain_definition_at_every_length() {
        for n in [0usize, 1, 7, 8, 9, 17, 64, 1001] {
            let vals: Vec<f64> = (0..n)
                .map(|i| match i % 11 {
                    3 => f64::NAN,
                    5 => -(i as f64) * 0.25,
                    _ => i as f64 * 0.5,
                })
                .collect();
            let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
            let (got, want) = (row_stats(Dtype::F64, &bytes), reference(&vals));
            assert_eq!((got.count, got.min, got.max, got.sum), (want.count, want.min, want.max, want.sum), "f64 n={n}");
            let bytes32: Vec<u8> = vals.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
            let vals32: Vec<f64> = vals.iter().map(|&v| f64::from(v as f32)).collect();
            let (got, want) = (row_stats(Dtype::F32, &bytes32), reference(&vals32));
            assert_eq!((got.count, got.min, got.max, got.sum), (want.count, want.min, want.max, want.sum), "f32 n={n}");
        }
        let all_nan: Vec<u8> = [f32::NAN; 9].iter().flat_map(|v| v.to_le_bytes()).collect();
        let st = row_stats(Dtype::F32, &all_nan);
        assert_eq!((st.count, st.min, st.max, st.sum), (0, f64::INFINITY, f64::NEG_INFINITY, 0.0));
        let inf: Vec<u8> = [1.0f64, f64::INFINITY, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(row_stats(Dtype::F64, &inf).max, f64::INFINITY);
    }

    /// The plain definition for integers: exact sums in i128, element by element.
    fn int_reference<T: Copy + Into<i128>>(vals: &[T]) -> (u64, f64, f64, f64) {
        let w: Vec<i128> = vals.iter().map(|&v| v.into()).collect();
        let lo = w.iter().copied().min().unwrap_or(0);
        let hi = w.iter().copied().max().unwrap_or(0);
        (vals.len() as u64, lo as f64, hi as f64, w.iter().sum::<i128>() as f64)
    }

    #[test]
    fn integer_statistics_match_the_plain_definition_at_extremes_and_every_length() {
        // Lengths around the lane count and the block size, values at the types' extremes
        // (the narrow lanes' sums must not overflow on a block of maxima).
        for n in [1usize, 15, 16, 17, 1000, 32_767, 32_768, 32_769, 70_001] {
            let pick = |i: usize| i.wrapping_mul(2_654_435_761) % 7;
            let u16s: Vec<u16> = (0..n).map(|i| if pick(i) < 5 { u16::MAX } else { (i % 65_536) as u16 }).collect();
            let i16s: Vec<i16> = (0..n)
                .map(|i| match pick(i) {
                    0..=2 => i16::MIN,
                    3..=4 => i16::MAX,
                    _ => i as i16,
                })
                .collect();
            let u8s: Vec<u8> = (0..n).map(|i| if pick(i) < 6 { u8::MAX } else { i as u8 }).collect();
            let i8s: Vec<i8> = (0..n).map(|i| if pick(i) < 4 { i8::MIN } else { i as i8 }).collect();
            let u32s: Vec<u32> = (0..n).map(|i| if pick(i) < 5 { u32::MAX } else { i as u32 }).collect();
            let i32s: Vec<i32> = (0..n).map(|i| if pick(i) < 3 { i32::MIN } else { i32::MAX - i as i32 }).collect();
            let i64s: Vec<i64> = (0..n).map(|i| if pick(i) < 3 { -(1 << 40) } else { (i as i64) << 20 }).collect();
            let u64s: Vec<u64> = (0..n).map(|i| if pick(i) < 2 { u64::MAX } else { i as u64 }).collect();
            macro_rules! check {
                ($v:expr, $d:expr) => {{
                    let bytes: Vec<u8> = $v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    let got = row_stats($d, &bytes);
                    assert_eq!((got.count, got.min, got.max, got.sum), int_reference(&$v), "{:?} n={n}", $d);
                }};
            }
            check!(u16s, Dtype::U16);
            check!(i16s, Dtype::I16);
            check!(u8s, Dtype::U8);
            check!(i8s, Dtype::I8);
            check!(u32s, Dtype::U32);
            check!(i32s, Dtype::I32);
            check!(i64s, Dtype::I64);
            check!(u64s, Dtype::U64);
        }
    }
}
