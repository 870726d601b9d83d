//! `smdfs export`: one standalone, plain HDF5 file with exactly the view's `run.h5` layout.
//!
//! The datasets, dtypes, shapes, fill values and attributes come from [`layout::plan`] and
//! [`layout::root_attrs`], the same description the view serves, so an exported file and a
//! mounted `run.h5` cannot drift apart; the bytes come from [`DatasetLayout::read`](crate::h5::layout::DatasetLayout::read) in event-id
//! order. Unlike the view's skeleton, every non-empty, non-scalar dataset is *chunked* (whole
//! rows per chunk) and optionally compressed: gzip (deflate, with the shuffle filter) is in every
//! libhdf5; LZF is an h5py plugin that Debian's libhdf5 lacks, so asking for it fails with
//! [`Error::Usage`] before the file is touched (no silent fallback). Empty datasets are
//! contiguous (HDF5 refuses chunks larger than a fixed extent of 0) and scalars are contiguous.
//!
//! Invariants: memory stays bounded (a reader thread gathers blocks of whole chunks, at most
//! two blocks in flight, buffers recycled); every libhdf5 call runs on the calling thread under
//! the `hdf5` crate's lock; the file is written as `FILE.partial` and renamed into place only
//! when complete, so a failed export never leaves a file that looks finished. The default file
//! format bounds are kept, so HDF5 1.10 tools (h5dump) read the result.

use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

use hdf5::Datatype;

use crate::error::{Error, Result};
use crate::h5::ffi;
use crate::h5::layout::{self, DatasetLayout, Source};
use crate::h5::skeleton::{descriptor, write_attrs, write_dimensions, AttrValue};
use crate::read::run::Run;

/// Compression of the exported datasets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// No filter (fastest; the file is as large as the data).
    #[default]
    None,
    /// gzip (HDF5 deflate) at level 0..=9, after the byte-shuffle filter.
    Gzip(u8),
    /// LZF (h5py's filter 32000): only where the linked libhdf5 has it registered; Debian's
    /// does not, and then the export fails with [`Error::Usage`].
    Lzf,
}

impl std::str::FromStr for Compression {
    type Err = Error;

    /// Parses `none`, `gzip` (level 4, h5py's default), `gzip=N` (0..=9) or `lzf`.
    fn from_str(s: &str) -> Result<Compression> {
        let bad = || Error::Usage(format!("compression {s:?}: expected none, gzip, gzip=0..9 or lzf"));
        match s.split_once('=') {
            None if s == "none" => Ok(Compression::None),
            None if s == "gzip" => Ok(Compression::Gzip(4)),
            None if s == "lzf" => Ok(Compression::Lzf),
            Some(("gzip", level)) => match level.parse::<u8>() {
                Ok(l) if l <= 9 => Ok(Compression::Gzip(l)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Gzip(l) => write!(f, "gzip={l}"),
            Compression::Lzf => f.write_str("lzf"),
        }
    }
}

/// How to export.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Filter applied to every chunked dataset.
    pub compression: Compression,
    /// Rows per chunk; `None` picks about 1 MiB of rows per chunk (at least one row).
    pub chunk_rows: Option<u64>,
}

/// What [`export`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportReport {
    /// The file written.
    pub path: PathBuf,
    /// Datasets written.
    pub datasets: usize,
    /// Raw (uncompressed) data bytes written.
    pub data_bytes: u64,
    /// Size of the file on disk.
    pub file_size: u64,
}

/// Rows per chunk of a dataset with `rows` rows of `row_bytes` bytes.
/// The default spreads rows evenly over as few ~1 MiB chunks as hold them, so the last chunk
/// (allocated whole) wastes little.
fn chunk_rows(opts: &ExportOptions, rows: u64, row_bytes: u64) -> u64 {
    let rows = rows.max(1);
    match opts.chunk_rows {
        Some(n) => n.clamp(1, rows),
        None => {
            let target = ((1 << 20) / row_bytes.max(1)).clamp(1, rows);
            rows.div_ceil(rows.div_ceil(target))
        }
    }
}

/// Whether a dataset is chunked in the export (non-scalar with at least one byte).
fn chunked(d: &DatasetLayout) -> bool {
    !d.shape.is_empty() && d.byte_size() > 0
}

/// A block of rows gathered by the reader thread.
struct Piece {
    dataset: usize,
    row: u64,
    rows: u64,
    data: Vec<u8>,
}

/// Writes `run` as one standalone HDF5 file at `path` (replacing a file there), calling
/// `progress(done, total)` with data bytes after each block.
///
/// Errors: [`Error::Usage`] for an unavailable filter, a zero `chunk_rows` or a libhdf5
/// failure (naming the file and dataset), [`Error::Io`] for the file system, and any error of
/// [`DatasetLayout::read`](crate::h5::layout::DatasetLayout::read) (a run whose shards changed underneath).
pub fn export(
    run: &Run,
    path: impl AsRef<Path>,
    opts: &ExportOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ExportReport> {
    let path = path.as_ref();
    if opts.chunk_rows == Some(0) {
        return Err(Error::Usage("--chunk-rows must be at least 1".into()));
    }
    if opts.compression == Compression::Lzf && !hdf5::filters::lzf_available() {
        return Err(Error::Usage(
            "lzf: this libhdf5 has no LZF filter (it is an h5py plugin); use --compression gzip".into(),
        ));
    }
    if let Compression::Gzip(_) = opts.compression {
        if !hdf5::filters::deflate_available() {
            return Err(Error::Usage("gzip: this libhdf5 was built without deflate".into()));
        }
    }
    let plans = layout::plan(run);
    let root = layout::root_attrs(run);
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let r = write(run, &partial, &plans, &root, opts, progress);
    if let Err(e) = r {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, path).map_err(|e| Error::io(path, e))?;
    let file_size = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    let data_bytes = plans.iter().map(DatasetLayout::byte_size).sum();
    Ok(ExportReport { path: path.to_path_buf(), datasets: plans.len(), data_bytes, file_size })
}

/// Creates the file, then streams every dataset's blocks from a reader thread.
fn write(
    run: &Run,
    path: &Path,
    plans: &[DatasetLayout],
    root: &[(String, AttrValue)],
    opts: &ExportOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let file = hdf5::sync::sync(|| hdf5::File::create(path)).map_err(ffi::h5err(path, "create"))?;
    write_attrs("export", path, "/", &file, root)?;
    let mut sets = Vec::with_capacity(plans.len());
    for d in plans {
        sets.push(create(path, &file, d, opts)?);
    }
    let skel: Vec<_> = plans.iter().map(DatasetLayout::skeleton_plan).collect();
    write_dimensions("export", path, &file, &skel, &layout::dimensions(plans))?;
    let total: u64 = plans.iter().map(DatasetLayout::byte_size).sum();
    progress(0, total);
    // Blocks: whole chunks, about 8 MiB each.
    let blocks: Vec<(usize, u64, u64)> = plans
        .iter()
        .enumerate()
        .filter(|(_, d)| chunked(d) && !matches!(d.source, Source::Literal(_)))
        .flat_map(|(i, d)| {
            let rows = d.shape[0];
            let cr = chunk_rows(opts, rows, d.row_bytes());
            let per = cr * ((8 << 20) / (cr * d.row_bytes()).max(1)).max(1);
            (0..rows.div_ceil(per)).map(move |k| (i, k * per, per.min(rows - k * per)))
        })
        .collect();
    let mut done = 0u64;
    // Literal datasets (summary values) are small: write them whole.
    for (d, ds) in plans.iter().zip(&sets) {
        if let Source::Literal(bytes) = &d.source {
            if d.byte_size() > 0 {
                write_rows(path, d, ds, 0, d.shape.first().copied().unwrap_or(1), bytes)?;
                done += d.byte_size();
            }
        }
    }
    std::thread::scope(|s| -> Result<()> {
        let (tx, rx) = sync_channel::<Result<Piece>>(2);
        let (back, back_rx) = sync_channel::<Vec<u8>>(4);
        let blocks = &blocks;
        s.spawn(move || {
            for &(dataset, row, rows) in blocks {
                let d = &plans[dataset];
                let mut data = back_rx.try_recv().unwrap_or_default();
                data.resize((rows * d.row_bytes()) as usize, 0);
                let r = d.read(run, row * d.row_bytes(), &mut data);
                let stop = r.is_err();
                if tx.send(r.map(|()| Piece { dataset, row, rows, data })).is_err() || stop {
                    return;
                }
            }
        });
        for piece in rx {
            let p = piece?;
            let d = &plans[p.dataset];
            write_rows(path, d, &sets[p.dataset], p.row, p.rows, &p.data)?;
            done += p.data.len() as u64;
            progress(done, total);
            let _ = back.try_send(p.data);
        }
        Ok(())
    })?;
    drop(sets);
    hdf5::sync::sync(|| file.close()).map_err(ffi::h5err(path, "close"))?;
    progress(total, total);
    Ok(())
}

/// Creates one dataset (chunked and filtered where it has rows) with its fill and attributes.
fn create(path: &Path, file: &hdf5::File, d: &DatasetLayout, opts: &ExportOptions) -> Result<hdf5::Dataset> {
    let name = format!("/{}", d.path);
    let err = || ffi::h5err(path, &name);
    hdf5::sync::sync(|| -> Result<hdf5::Dataset> {
        let dtype = Datatype::from_descriptor(&descriptor(d.dtype)).map_err(err())?;
        let dcpl = hdf5::plist::DatasetCreate::build().obj_track_times(false).finish().map_err(err())?;
        if let Some(fill) = &d.fill {
            if fill.len() != d.dtype.size() {
                return Err(Error::BadValue { field: d.path.clone(), why: "fill value of the wrong size".into() });
            }
            if !ffi::set_fill_value(&dcpl, &dtype, fill) {
                return Err(ffi::fail(path, &name, "cannot set the fill value"));
            }
        }
        let shape: Vec<usize> = d.shape.iter().map(|&x| x as usize).collect();
        let mut b = file.new_dataset_builder().set_dcpl(&dcpl);
        if chunked(d) {
            let mut chunk = shape.clone();
            chunk[0] = chunk_rows(opts, d.shape[0], d.row_bytes()) as usize;
            b = b.chunk(chunk);
            b = match opts.compression {
                Compression::None => b,
                Compression::Gzip(level) => b.shuffle().deflate(level),
                Compression::Lzf => b.set_filters(&[hdf5::filters::Filter::user(32000, &[])]),
            };
        } else {
            b = b.no_chunk();
        }
        let ds = b.empty_as(&dtype).shape(shape).create(name.as_str()).map_err(err())?;
        write_attrs("export", path, &name, &ds, &d.attrs)?;
        Ok(ds)
    })
}

/// Writes rows `row..row + rows` of `d` (whole rows of raw little-endian bytes).
fn write_rows(path: &Path, d: &DatasetLayout, ds: &hdf5::Dataset, row: u64, rows: u64, data: &[u8]) -> Result<()> {
    let dtype = Datatype::from_descriptor(&descriptor(d.dtype)).map_err(ffi::h5err(path, &d.path))?;
    if ffi::transfer_rows(ds.id(), dtype.id(), &d.shape, row, rows, ffi::Rows::Write(data)) {
        Ok(())
    } else {
        Err(ffi::fail(path, &d.path, format!("cannot write rows {row}..{} ({} bytes given)", row + rows, data.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_names_parse_and_bad_ones_are_usage_errors() {
        assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
        assert_eq!("gzip".parse::<Compression>().unwrap(), Compression::Gzip(4));
        assert_eq!("gzip=9".parse::<Compression>().unwrap(), Compression::Gzip(9));
        assert_eq!("lzf".parse::<Compression>().unwrap(), Compression::Lzf);
        for bad in ["gzip=10", "gzip=", "zstd", "", "lzf=1"] {
            assert!(matches!(bad.parse::<Compression>(), Err(Error::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn chunks_hold_about_a_mebibyte_of_whole_rows() {
        let o = ExportOptions::default();
        assert_eq!(chunk_rows(&o, 1 << 30, 8), 1 << 17);
        assert_eq!(chunk_rows(&o, 10, 8), 10);
        assert_eq!(chunk_rows(&o, (1 << 17) + 2, 8), (1 << 16) + 1);
        assert_eq!(chunk_rows(&o, 5, 4 << 20), 1);
        assert_eq!(chunk_rows(&ExportOptions { chunk_rows: Some(7), ..o }, 100, 8), 7);
    }
}
