//! Each writing process's share of an event range: contiguous [`block`]s or a
//! [`round_robin`] deal. Pure arithmetic, available with or without MPI.

use std::iter::StepBy;
use std::ops::Range;

/// Part `k` of `parts` near-equal contiguous blocks of `range` (the first `len % parts`
/// blocks are one longer). Empty when `k >= parts`.
///
/// ```
/// assert_eq!(smdfs::block(0..10, 3, 0), 0..4);
/// assert_eq!(smdfs::block(0..10, 3, 2), 7..10);
/// ```
pub fn block(range: Range<u64>, parts: usize, k: usize) -> Range<u64> {
    if k >= parts || range.is_empty() {
        return range.start..range.start;
    }
    let (parts, k) = (parts as u64, k as u64);
    let len = range.end - range.start;
    let (base, extra) = (len / parts, len % parts);
    let start = range.start + k * base + k.min(extra);
    start..start + base + u64::from(k < extra)
}

/// Part `k` of `parts` of `range` dealt round-robin: `start + k, start + k + parts, …`.
/// Empty when `k >= parts`.
///
/// ```
/// let mine: Vec<u64> = smdfs::round_robin(0..10, 3, 1).collect();
/// assert_eq!(mine, [1, 4, 7]);
/// ```
pub fn round_robin(range: Range<u64>, parts: usize, k: usize) -> StepBy<Range<u64>> {
    if k >= parts {
        return (range.start..range.start).step_by(1);
    }
    let start = range.start.saturating_add(k as u64).min(range.end);
    (start..range.end).step_by(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_round_robin_shares_cover_the_range_once() {
        for (range, parts) in [(0..10u64, 3usize), (5..6, 4), (0..0, 2), (100..1000, 7)] {
            let mut seen: Vec<u64> = (0..parts).flat_map(|k| block(range.clone(), parts, k)).collect();
            assert_eq!(seen, range.clone().collect::<Vec<_>>());
            seen = (0..parts).flat_map(|k| round_robin(range.clone(), parts, k)).collect();
            seen.sort_unstable();
            assert_eq!(seen, range.clone().collect::<Vec<_>>());
            let lens: Vec<u64> = (0..parts).map(|k| block(range.clone(), parts, k).count() as u64).collect();
            assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
        }
        assert!(block(0..10, 2, 5).is_empty());
        assert_eq!(round_robin(0..10, 0, 0).count(), 0);
    }
}
