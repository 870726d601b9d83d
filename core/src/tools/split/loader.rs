//! Reading split records: the index and bins memory-mapped, records as zero-copy slices by
//! number or bin by bin (optionally shuffled), and bins read ahead by a prefetch pipeline.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{Advice, Mmap};

use super::pipeline::Pipeline;
use super::*;
use crate::error::{Error, IoContext, Result};
use crate::model::dtype::Element;
use crate::read::shuffle::{shuffle, SplitMix};

pub(super) struct Inner {
    dir: PathBuf,
    index: Mmap,
    bins: Vec<Mmap>,
    records: u64,
    align: u64,
}

impl Inner {
    fn ends(&self) -> &[u64] {
        // Length and alignment (a page-aligned map, 64-byte header) checked at open.
        bytemuck::cast_slice(&self.index[HEADER_LEN..])
    }

    fn splits(&self) -> u64 {
        self.bins.len() as u64
    }

    fn get(&self, i: u64) -> Result<&[u8]> {
        if i >= self.records {
            return Err(Error::OutOfRange { what: "record", index: i, len: self.records });
        }
        let n = self.splits();
        let ends = self.ends();
        let end = ends[i as usize];
        let start = if i >= n { align_up(ends[(i - n) as usize], self.align) } else { 0 };
        let b = (i % n) as usize;
        self.bins[b].get(start as usize..end as usize).filter(|_| start <= end).ok_or_else(|| Error::Corrupt {
            path: self.dir.join(INDEX_FILE),
            offset: (HEADER_LEN as u64) + 8 * i,
            why: format!("record {i} spans {start}..{end}, outside bin {b} of {} bytes", self.bins[b].len()),
        })
    }

    fn bin_records(&self, b: usize) -> u64 {
        let (n, b) = (self.splits(), b as u64);
        if b >= n || b >= self.records {
            0
        } else {
            (self.records - b).div_ceil(n)
        }
    }

    /// The records of bin `b` in iteration order: in order, or shuffled by a generator that
    /// depends only on the seed and the bin.
    fn bin_order(&self, b: usize, seed: Option<u64>) -> Vec<u64> {
        let n = self.splits();
        let mut v: Vec<u64> = (0..self.bin_records(b)).map(|k| k * n + b as u64).collect();
        if let Some(s) = seed {
            let mut rng = SplitMix::new(s ^ (b as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
            shuffle(&mut v, &mut rng);
        }
        v
    }

    /// Faults in the pages of bin `b` (readahead hint, then one read per page).
    fn load_bin(&self, b: usize) {
        let m = &self.bins[b];
        if m.is_empty() {
            return;
        }
        let _ = m.advise_range(Advice::WillNeed, 0, m.len());
        let mut acc = 0u8;
        for p in (0..m.len()).step_by(4096) {
            // SAFETY: p < m.len(); a volatile read so the page fault is not optimized away.
            acc ^= unsafe { std::ptr::read_volatile(m.as_ptr().add(p)) };
        }
        std::hint::black_box(acc);
    }
}

/// Reads a split directory: `len()`, random access by index, bin-wise (shuffled) iteration
/// and prefetching iterators, all as zero-copy slices of memory maps. Cheap to clone.
#[derive(Clone)]
pub struct SplitLoader {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SplitLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitLoader")
            .field("dir", &self.inner.dir)
            .field("records", &self.inner.records)
            .field("splits", &self.inner.bins.len())
            .finish()
    }
}

impl SplitLoader {
    /// Opens the split directory `dir`: maps its index and bins. O(splits).
    pub fn open(dir: impl AsRef<Path>) -> Result<SplitLoader> {
        let dir = dir.as_ref().to_path_buf();
        let ip = dir.join(INDEX_FILE);
        let map = |p: &Path| -> Result<Mmap> {
            let f = File::open(p).at(p)?;
            // SAFETY: read-only map of a file the writer no longer changes (the index is
            // published by rename after the bins are complete).
            unsafe { Mmap::map(&f) }.at(p)
        };
        let index = map(&ip)?;
        let bad = |offset: u64, why: String| Error::Corrupt { path: ip.clone(), offset, why };
        if index.len() < HEADER_LEN || &index[..8] != MAGIC {
            return Err(bad(0, "not a split index (bad magic)".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes([index[o], index[o + 1], index[o + 2], index[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&index[o..o + 8]);
            u64::from_le_bytes(b)
        };
        if u32_at(HEADER_CRC_AT) != crc32c::crc32c(&index[..HEADER_CRC_AT]) {
            return Err(bad(HEADER_CRC_AT as u64, "header checksum mismatch".into()));
        }
        let version = u32_at(8);
        if version != VERSION {
            return Err(Error::Version { path: ip, found: version, supported: VERSION });
        }
        let (align, records, splits) = (u64::from(u32_at(12)), u64_at(16), u64_at(24));
        if !align.is_power_of_two() || splits == 0 || splits > 1 << 20 {
            return Err(bad(12, format!("bad align {align} or splits {splits}")));
        }
        let want = records.checked_mul(8).and_then(|b| b.checked_add(HEADER_LEN as u64));
        if want != Some(index.len() as u64) {
            return Err(bad(16, format!("{records} records need {want:?} bytes, index has {}", index.len())));
        }
        let bins = (0..splits as usize).map(|b| map(&dir.join(bin_file_name(b)))).collect::<Result<Vec<_>>>()?;
        Ok(SplitLoader { inner: Arc::new(Inner { dir, index, bins, records, align }) })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Number of records.
    pub fn len(&self) -> u64 {
        self.inner.records
    }

    /// True if there are no records.
    pub fn is_empty(&self) -> bool {
        self.inner.records == 0
    }

    /// Number of bins.
    pub fn splits(&self) -> usize {
        self.inner.bins.len()
    }

    /// Record `i`, zero-copy.
    pub fn get(&self, i: u64) -> Result<&[u8]> {
        self.inner.get(i)
    }

    /// Record `i` as a slice of `T`, zero-copy (written with [`write_split_arrays`] or an
    /// aligned writer).
    pub fn get_array<T: Element + bytemuck::Pod>(&self, i: u64) -> Result<&[T]> {
        let b = self.get(i)?;
        bytemuck::try_cast_slice(b)
            .map_err(|e| Error::Usage(format!("record {i} ({} bytes) is not a {} array: {e}", b.len(), T::DTYPE)))
    }

    /// The bin holding record `i`.
    pub fn bin_of(&self, i: u64) -> usize {
        (i % self.inner.splits()) as usize
    }

    /// Number of records in bin `b`.
    pub fn bin_records(&self, b: usize) -> u64 {
        self.inner.bin_records(b)
    }

    /// Bins in iteration order: `0..N`, or shuffled by `seed`.
    pub fn bin_order(&self, seed: Option<u64>) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.splits()).collect();
        if let Some(s) = seed {
            shuffle(&mut v, &mut SplitMix::new(s));
        }
        v
    }

    /// The records of bin `b` in iteration order: in order, or shuffled by `seed` (the order
    /// [`order`](SplitLoader::order) uses for that bin).
    pub fn records_of_bin(&self, b: usize, seed: Option<u64>) -> Vec<u64> {
        self.inner.bin_order(b, seed)
    }

    /// Record indices in iteration order: bin by bin; with a seed, bins and the records
    /// within each bin shuffled.
    pub fn order(&self, seed: Option<u64>) -> Vec<u64> {
        self.bin_order(seed).into_iter().flat_map(|b| self.inner.bin_order(b, seed)).collect()
    }

    /// Iterates `(index, record)` bin by bin on this thread (see [`order`](SplitLoader::order)).
    pub fn iter_binwise(&self, seed: Option<u64>) -> Binwise<'_> {
        Binwise { loader: self, bins: self.bin_order(seed).into_iter(), seed, cur: Vec::new().into_iter() }
    }

    /// Iterates `(index, record)` in the order of [`iter_binwise`](SplitLoader::iter_binwise)
    /// while `threads` background threads fault in the pages of the next bins, at most `depth`
    /// bins ahead of the consumer. Records are still zero-copy slices of the maps.
    pub fn prefetch(&self, seed: Option<u64>, threads: usize, depth: usize) -> Result<Prefetched<'_>> {
        let work = move |inner: &Inner, b: usize| -> Result<Vec<u64>> {
            let rows = inner.bin_order(b, seed);
            inner.load_bin(b);
            Ok(rows)
        };
        let pipe = Pipeline::start(Arc::clone(&self.inner), self.bin_order(seed), threads, depth, work)?;
        Ok(Prefetched { loader: self, pipe, cur: Vec::new().into_iter() })
    }

    /// Runs `f(index, record)` for every record on `threads` background threads, bin by bin,
    /// and yields the results in the order of [`iter_binwise`](SplitLoader::iter_binwise);
    /// at most `depth` bins of results wait. Use it to decode records off the consumer's
    /// thread. A panic in `f` ends the iteration with an error.
    pub fn prefetch_map<T, F>(&self, seed: Option<u64>, threads: usize, depth: usize, f: F) -> Result<PrefetchMap<T>>
    where
        T: Send + 'static,
        F: Fn(u64, &[u8]) -> T + Send + Sync + 'static,
    {
        let work = move |inner: &Inner, b: usize| -> Result<Vec<T>> {
            inner.bin_order(b, seed).into_iter().map(|i| inner.get(i).map(|r| f(i, r))).collect()
        };
        let pipe = Pipeline::start(Arc::clone(&self.inner), self.bin_order(seed), threads, depth, work)?;
        Ok(PrefetchMap { pipe, cur: Vec::new().into_iter() })
    }
}

/// Bin-wise iterator of `(index, record)`; see [`SplitLoader::iter_binwise`].
pub struct Binwise<'a> {
    loader: &'a SplitLoader,
    bins: std::vec::IntoIter<usize>,
    seed: Option<u64>,
    cur: std::vec::IntoIter<u64>,
}

impl<'a> Iterator for Binwise<'a> {
    type Item = Result<(u64, &'a [u8])>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(i) = self.cur.next() {
                return Some(self.loader.get(i).map(|r| (i, r)));
            }
            let b = self.bins.next()?;
            self.cur = self.loader.inner.bin_order(b, self.seed).into_iter();
        }
    }
}

/// Prefetching iterator of `(index, record)`; see [`SplitLoader::prefetch`].
pub struct Prefetched<'a> {
    loader: &'a SplitLoader,
    pipe: Pipeline<u64>,
    cur: std::vec::IntoIter<u64>,
}

impl<'a> Iterator for Prefetched<'a> {
    type Item = Result<(u64, &'a [u8])>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(i) = self.cur.next() {
                return Some(self.loader.get(i).map(|r| (i, r)));
            }
            match self.pipe.next_bin()? {
                Ok(v) => self.cur = v.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Prefetching iterator of decoded records; see [`SplitLoader::prefetch_map`].
pub struct PrefetchMap<T> {
    pipe: Pipeline<T>,
    cur: std::vec::IntoIter<T>,
}

impl<T> Iterator for PrefetchMap<T> {
    type Item = Result<T>;
    fn next(&mut self) -> Option<Result<T>> {
        loop {
            if let Some(x) = self.cur.next() {
                return Some(Ok(x));
            }
            match self.pipe.next_bin()? {
                Ok(v) => self.cur = v.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
