//! Writing split records: records dealt round-robin over N bin files, each bin's records
//! aligned, and one index of (bin, offset, length) per record, written last.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::*;
use crate::error::{Error, IoContext, Result};
use crate::model::dtype::Element;

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
