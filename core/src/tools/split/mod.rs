//! Split records: a sequence of byte records (or arrays) dealt round-robin over N bin files
//! with one index, read back by index or bin by bin as zero-copy slices of memory maps.
//!
//! Layout of a split directory (all integers little-endian):
//!
//! ```text
//! bin-00000.dat … bin-{N-1}.dat   record i lives in bin i % N, as the (i / N)-th record;
//!                                 each record starts at the previous record's end rounded
//!                                 up to `align` (zero padding between)
//! split.idx   0  magic "SMDSPLIT"          8 bytes
//!             8  version = 1               u32
//!            12  align (power of two)      u32
//!            16  records                   u64
//!            24  splits (N)                u64
//!            32  crc32c of bytes 0..32     u32
//!            36  zero padding to 64
//!            64  ends[records]             u64 each: end offset of record i in its bin
//! ```
//!
//! Record i spans `align_up(ends[i - N])..ends[i]` of its bin (`0..ends[i]` for i < N), so a
//! lookup is two loads from the mapped index and no syscall. The index is written last, to a
//! temporary name renamed into place: a directory without `split.idx` holds no records yet,
//! and a reader never sees a half-written index. Ranges are checked at each access, so a
//! damaged index yields an error, never bytes from outside a bin.
//!
//! Iteration is bin-wise (one bin's records are near each other on disk): with a seed, bins
//! come in a shuffled order and records in a shuffled order within each bin, the order
//! depending only on the seed. [`SplitLoader::prefetch`] and [`SplitLoader::prefetch_map`]
//! run the loading (page faults, or a user decode function) for the next bins on background
//! threads, at most `depth` bins ahead of the consumer.

mod loader;
mod pipeline;
mod writer;

pub use loader::{Binwise, PrefetchMap, Prefetched, SplitLoader};
pub use writer::{write_split, write_split_arrays, SplitWriter};

/// Name of the index file in a split directory.
pub const INDEX_FILE: &str = "split.idx";
const MAGIC: &[u8; 8] = b"SMDSPLIT";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 64;
const HEADER_CRC_AT: usize = 32;
const MAX_ALIGN: usize = 4096;

/// File name of bin `b`.
pub fn bin_file_name(b: usize) -> String {
    format!("bin-{b:05}.dat")
}

fn align_up(x: u64, align: u64) -> u64 {
    x.next_multiple_of(align)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_in_every_order() {
        let dir = tempfile::tempdir().unwrap();
        let recs: Vec<Vec<u8>> = (0..103u32).map(|i| vec![i as u8; (i % 7) as usize]).collect();
        assert_eq!(write_split(dir.path(), &recs, 5).unwrap(), 103);
        let l = SplitLoader::open(dir.path()).unwrap();
        assert_eq!(l.len(), 103);
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(l.get(i as u64).unwrap(), &r[..]);
        }
        assert!(l.get(103).is_err());
        let a: Vec<u64> = l.iter_binwise(Some(3)).map(|r| r.unwrap().0).collect();
        let b: Vec<u64> = l.prefetch(Some(3), 3, 2).unwrap().map(|r| r.unwrap().0).collect();
        assert_eq!(a, b);
        assert_eq!(a, l.order(Some(3)));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..103).collect::<Vec<_>>());
        let lens: Vec<usize> = l.prefetch_map(Some(3), 2, 1, |_, r| r.len()).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(lens, a.iter().map(|&i| recs[i as usize].len()).collect::<Vec<_>>());
        assert!(SplitWriter::create(dir.path(), 5).is_err(), "a second writer must not clobber");
    }
}
