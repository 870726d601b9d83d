//! MPI mode: the same writer program across `mpirun` ranks (feature `mpi`), and the helpers
//! that hand each client its share of an event range (always available).
//!
//! Under an MPI launcher with P > 1 ranks, [`Builder::build`](crate::Builder::build) splits
//! the ranks: the last S ranks are servers (server `k` = rank `P − S + k` writes shard `k`),
//! ranks `0..P − S` are clients (client index = rank). A client rank's [`Client`](crate::Client)
//! handles batch events exactly as in threads mode and send each batch as one MPI message to
//! their server with a synchronous-mode non-blocking send (`MPI_Issend`, complete only once
//! the server has taken it), at most `max_batches_in_flight` per handle: back-pressure. A
//! server rank receives from any client on a background thread, maps the sender's field ids
//! to its own (each rank has its own schema registry; see `wire`) and appends and commits
//! with the same shard writer as threads mode, on a second thread. Reductions are
//! all-gathers of every rank's accumulators; `done()` is collective (see `node`).
//!
//! Failure never hangs the job: an error before or during `done()` reaches every rank as an
//! error; a rank that leaves the run without `done()` fails the job when it exits; a server
//! that cannot write a batch (a schema conflict between ranks, a full disk) aborts the job
//! with its message. The committed prefix of every shard stays readable (a crashed run).

use std::iter::StepBy;
use std::ops::Range;

#[cfg(feature = "mpi")]
pub(crate) mod client;
#[cfg(feature = "mpi")]
pub(crate) mod comm;
#[cfg(feature = "mpi")]
pub(crate) mod node;
#[cfg(feature = "mpi")]
mod server;
#[cfg(feature = "mpi")]
pub(crate) mod wire;

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
