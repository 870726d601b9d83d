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

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use memmap2::{Advice, Mmap};

use crate::dtype::Element;
use crate::error::{Error, IoContext, Result};
use crate::reader::{shuffle, SplitMix};

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

/// Writes records into `splits` bins. Call [`SplitWriter::finish`] to publish the index;
/// until then the directory holds no readable records.
pub struct SplitWriter {
    dir: PathBuf,
    bins: Vec<BufWriter<File>>,
    pos: Vec<u64>,
    index: BufWriter<File>,
    tmp_index: PathBuf,
    records: u64,
    align: u64,
    sync: bool,
}

impl SplitWriter {
    /// Starts writing byte records into `splits` bins under `dir` (created if missing). Fails
    /// if `dir` already holds split records.
    pub fn create(dir: impl AsRef<Path>, splits: usize) -> Result<SplitWriter> {
        SplitWriter::create_aligned(dir, splits, 1)
    }

    /// Like [`create`](SplitWriter::create), with every record starting at a multiple of
    /// `align` bytes (a power of two up to 4096) in its bin, so arrays of elements up to that
    /// size read back as zero-copy typed slices.
    pub fn create_aligned(dir: impl AsRef<Path>, splits: usize, align: usize) -> Result<SplitWriter> {
        let dir = dir.as_ref().to_path_buf();
        if splits == 0 || splits > 1 << 20 {
            return Err(Error::Usage(format!("splits must be 1..=1048576, got {splits}")));
        }
        if !align.is_power_of_two() || align > MAX_ALIGN {
            return Err(Error::Usage(format!("align must be a power of two up to {MAX_ALIGN}, got {align}")));
        }
        std::fs::create_dir_all(&dir).at(&dir)?;
        if dir.join(INDEX_FILE).exists() {
            return Err(Error::Usage(format!(
                "{} already holds split records; remove it or choose another directory",
                dir.display()
            )));
        }
        // Bounded buffer memory however many bins: 16 MiB in all, 8 KiB..1 MiB per bin.
        let cap = ((16usize << 20) / splits).clamp(8 << 10, 1 << 20);
        let bins = (0..splits)
            .map(|b| {
                let p = dir.join(bin_file_name(b));
                File::create(&p).at(&p).map(|f| BufWriter::with_capacity(cap, f))
            })
            .collect::<Result<Vec<_>>>()?;
        let tmp_index = dir.join(format!("{INDEX_FILE}.tmp"));
        let mut index = BufWriter::with_capacity(1 << 20, File::create(&tmp_index).at(&tmp_index)?);
        index.write_all(&[0u8; HEADER_LEN]).at(&tmp_index)?;
        Ok(SplitWriter {
            dir,
            bins,
            pos: vec![0; splits],
            index,
            tmp_index,
            records: 0,
            align: align as u64,
            sync: false,
        })
    }

    /// fdatasync bins and index at [`finish`](SplitWriter::finish) (survives power loss).
    /// Default off.
    pub fn sync(mut self, on: bool) -> SplitWriter {
        self.sync = on;
        self
    }

    /// Records written so far.
    pub fn len(&self) -> u64 {
        self.records
    }

    /// True before the first record.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Appends one record; returns its index.
    pub fn push(&mut self, record: &[u8]) -> Result<u64> {
        let n = self.bins.len() as u64;
        let b = (self.records % n) as usize;
        let path = || self.dir.join(bin_file_name(b));
        let start = align_up(self.pos[b], self.align);
        let pad = (start - self.pos[b]) as usize;
        if pad > 0 {
            self.bins[b].write_all(&[0u8; MAX_ALIGN][..pad]).map_err(|e| Error::io(path(), e))?;
        }
        self.bins[b].write_all(record).map_err(|e| Error::io(path(), e))?;
        self.pos[b] = start + record.len() as u64;
        self.index.write_all(&self.pos[b].to_le_bytes()).at(&self.tmp_index)?;
        self.records += 1;
        Ok(self.records - 1)
    }

    /// Appends an array as one record (its elements' little-endian bytes); returns its index.
    /// The writer's alignment must be a multiple of the element size
    /// ([`create_aligned`](SplitWriter::create_aligned)) so it reads back zero-copy.
    pub fn push_array<T: Element>(&mut self, a: &[T]) -> Result<u64> {
        if !self.align.is_multiple_of(T::DTYPE.size() as u64) {
            return Err(Error::Usage(format!(
                "records are aligned to {} bytes, {} needs {}: create the writer with create_aligned",
                self.align,
                T::DTYPE,
                T::DTYPE.size()
            )));
        }
        self.push(T::as_bytes(a))
    }

    /// Flushes the bins, writes the index header and renames the index into place. Returns
    /// the number of records.
    pub fn finish(mut self) -> Result<u64> {
        for (b, w) in self.bins.iter_mut().enumerate() {
            let p = self.dir.join(bin_file_name(b));
            w.flush().at(&p)?;
            if self.sync {
                w.get_ref().sync_data().at(&p)?;
            }
        }
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(self.align as u32).to_le_bytes());
        h[16..24].copy_from_slice(&self.records.to_le_bytes());
        h[24..32].copy_from_slice(&(self.bins.len() as u64).to_le_bytes());
        let crc = crc32c::crc32c(&h[..HEADER_CRC_AT]);
        h[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        self.index.flush().at(&self.tmp_index)?;
        let f = self.index.get_ref();
        std::os::unix::fs::FileExt::write_all_at(f, &h, 0).at(&self.tmp_index)?;
        if self.sync {
            f.sync_data().at(&self.tmp_index)?;
        }
        let idx = self.dir.join(INDEX_FILE);
        std::fs::rename(&self.tmp_index, &idx).at(&idx)?;
        if self.sync {
            File::open(&self.dir).and_then(|d| d.sync_all()).at(&self.dir)?;
        }
        Ok(self.records)
    }
}

/// Writes `records` into `splits` bins under `dir`; returns how many.
pub fn write_split<I, R>(dir: impl AsRef<Path>, records: I, splits: usize) -> Result<u64>
where
    I: IntoIterator<Item = R>,
    R: AsRef<[u8]>,
{
    let mut w = SplitWriter::create(dir, splits)?;
    for r in records {
        w.push(r.as_ref())?;
    }
    w.finish()
}

/// Writes arrays of `T` as records (aligned for zero-copy reads with
/// [`SplitLoader::get_array`]); returns how many.
pub fn write_split_arrays<T, I, R>(dir: impl AsRef<Path>, arrays: I, splits: usize) -> Result<u64>
where
    T: Element,
    I: IntoIterator<Item = R>,
    R: AsRef<[T]>,
{
    let mut w = SplitWriter::create_aligned(dir, splits, T::DTYPE.size())?;
    for a in arrays {
        w.push_array(a.as_ref())?;
    }
    w.finish()
}

struct Inner {
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
        let work = |inner: &Inner, b: usize, rows: Vec<u64>| -> Result<Vec<u64>> {
            inner.load_bin(b);
            Ok(rows)
        };
        let pipe = Pipeline::start(Arc::clone(&self.inner), self.bin_order(seed), seed, threads, depth, work)?;
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
        let work = move |inner: &Inner, _b: usize, rows: Vec<u64>| -> Result<Vec<T>> {
            rows.into_iter().map(|i| inner.get(i).map(|r| f(i, r))).collect()
        };
        let pipe = Pipeline::start(Arc::clone(&self.inner), self.bin_order(seed), seed, threads, depth, work)?;
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

struct PipeState<X> {
    /// Next position in the bin order a worker claims.
    next: usize,
    /// Bins the consumer has taken.
    consumed: usize,
    done: BTreeMap<usize, Result<Vec<X>>>,
}

struct PipeShared<X> {
    state: Mutex<PipeState<X>>,
    ready: Condvar,
    space: Condvar,
    stop: AtomicBool,
}

/// Background workers that process bins in a fixed order, at most `depth` bins ahead of the
/// consumer, and hand results back in that order whatever order they finish in.
struct Pipeline<X> {
    shared: Arc<PipeShared<X>>,
    bins: usize,
    handles: Vec<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<X: Send + 'static> Pipeline<X> {
    fn start<W>(
        inner: Arc<Inner>,
        order: Vec<usize>,
        seed: Option<u64>,
        threads: usize,
        depth: usize,
        work: W,
    ) -> Result<Self>
    where
        W: Fn(&Inner, usize, Vec<u64>) -> Result<Vec<X>> + Send + Sync + 'static,
    {
        let shared = Arc::new(PipeShared {
            state: Mutex::new(PipeState { next: 0, consumed: 0, done: BTreeMap::new() }),
            ready: Condvar::new(),
            space: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let bins = order.len();
        let order = Arc::new(order);
        let work = Arc::new(work);
        let depth = depth.max(1);
        let mut pipe = Pipeline { shared, bins, handles: Vec::new() };
        for t in 0..threads.max(1) {
            let (sh, inner, order, work) =
                (Arc::clone(&pipe.shared), Arc::clone(&inner), Arc::clone(&order), Arc::clone(&work));
            let h = std::thread::Builder::new()
                .name(format!("smdfs-split-{t}"))
                .spawn(move || loop {
                    let s = {
                        let mut st = lock(&sh.state);
                        while !sh.stop.load(Ordering::Acquire)
                            && st.next < order.len()
                            && st.next >= st.consumed + depth
                        {
                            st = sh.space.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
                        }
                        if sh.stop.load(Ordering::Acquire) || st.next >= order.len() {
                            return;
                        }
                        st.next += 1;
                        st.next - 1
                    };
                    let b = order[s];
                    let rows = inner.bin_order(b, seed);
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&inner, b, rows)))
                        .unwrap_or_else(|_| Err(Error::Usage(format!("prefetch worker panicked on bin {b}"))));
                    lock(&sh.state).done.insert(s, r);
                    sh.ready.notify_all();
                })
                .map_err(|e| Error::Usage(format!("cannot start prefetch thread: {e}")))?;
            pipe.handles.push(h);
        }
        Ok(pipe)
    }
}

impl<X> Pipeline<X> {
    /// The next bin's result in order; `None` after the last.
    fn next_bin(&mut self) -> Option<Result<Vec<X>>> {
        let mut st = lock(&self.shared.state);
        if st.consumed >= self.bins {
            return None;
        }
        loop {
            let c = st.consumed;
            if let Some(r) = st.done.remove(&c) {
                st.consumed += 1;
                drop(st);
                self.shared.space.notify_all();
                return Some(r);
            }
            st = self.shared.ready.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl<X> Drop for Pipeline<X> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            let _st = lock(&self.shared.state);
            self.shared.space.notify_all();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
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
