//! Named slices: one plain `.npy` array whose row ranges carry names, written at given row
//! positions from many threads or processes, read back as zero-copy slices by name.
//!
//! The data file is an ordinary `.npy` (format 1.0, or 2.0 when the header needs it): a
//! header padded so the data starts at a multiple of 64 bytes, then the whole C-order array,
//! sized to its full length at creation (sparse until written). `np.load(path,
//! mmap_mode='r')` reads it as it is. Writers `pwrite` rows at `header + row * row_bytes`, so
//! any number of them — threads sharing one [`SlicesWriter`], or processes that each
//! [`SlicesWriter::open`] the file — write disjoint ranges with no lock and no coordination.
//!
//! Names live beside the data in `<file>.names` (e.g. `x.npy.names`): JSON lines
//! `{"name":"a","start":0,"end":10}` (rows `start..end`), appended with one `O_APPEND`
//! write per entry *after* the entry's rows are written, so concurrent writers never
//! interleave an entry and a reader that sees a name sees its rows. A later entry for the
//! same name replaces the earlier range (the name keeps its first place); a torn last line
//! (a writer killed mid-append) is ignored. [`Slices`] maps the `.npy` read-only and serves
//! `x["name"]` as a `&[T]` into the map.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::model::dtype::{Dtype, Element};

/// Suffix of the names sidecar: `x.npy` keeps its names in `x.npy.names`.
pub const NAMES_SUFFIX: &str = ".names";

/// The first bytes of every `.npy` file. Headers are written by [`crate::format::npy::header`], which
/// pads them so the data starts at a multiple of 64 (a map of the file is aligned for every
/// element type).
const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";

/// What a `.npy` header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: Dtype,
    /// Full shape (rows first).
    pub shape: Vec<usize>,
    /// Byte offset of the data in the file.
    pub data_offset: u64,
}

impl NpyHeader {
    /// Rows (the first dimension).
    pub fn rows(&self) -> u64 {
        self.shape.first().map_or(0, |&r| r as u64)
    }

    /// Shape of one row (every dimension after the first).
    pub fn row_shape(&self) -> &[usize] {
        self.shape.get(1..).unwrap_or(&[])
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.row_shape().iter().product::<usize>() * self.dtype.size()
    }

    /// The header's bytes: magic, version, length, the dict padded with spaces and `\n` so
    /// the data starts at a multiple of 64.
    fn encode(dtype: Dtype, shape: &[usize]) -> Vec<u8> {
        let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        crate::format::npy::header(dtype.numpy_descr(), &shape)
    }

    /// Parses a `.npy` header from the first bytes of a file (C order, little-endian).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<NpyHeader> {
        let bad = |offset: u64, why: &str| Error::Corrupt { path: path.into(), offset, why: why.into() };
        if bytes.len() < 10 || &bytes[..6] != NPY_MAGIC {
            return Err(bad(0, "not a .npy file (no \\x93NUMPY magic)"));
        }
        let (hlen, prefix) = match bytes[6] {
            1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
            2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
            v => return Err(bad(6, &format!(".npy version {v} is not supported"))),
        };
        let dict = bytes.get(prefix..prefix + hlen).ok_or_else(|| bad(prefix as u64, "header is truncated"))?;
        let dict = std::str::from_utf8(dict).map_err(|_| bad(prefix as u64, "header is not text"))?;
        let value_of = |key: &str| -> Result<&str> {
            let at = dict.find(&format!("'{key}'")).ok_or_else(|| bad(prefix as u64, &format!("no '{key}' key")))?;
            let rest = &dict[at + key.len() + 2..];
            let colon = rest.find(':').ok_or_else(|| bad(prefix as u64, &format!("'{key}' has no value")))?;
            Ok(rest[colon + 1..].trim_start())
        };
        let descr = value_of("descr")?;
        let descr = descr
            .strip_prefix('\'')
            .and_then(|d| d.split('\'').next())
            .ok_or_else(|| bad(prefix as u64, "'descr' is not a quoted string"))?;
        let dtype = parse_descr(descr)
            .ok_or_else(|| bad(prefix as u64, &format!("dtype {descr:?} is not a little-endian bool/int/float")))?;
        let shape_text = value_of("shape")?;
        let inner = shape_text
            .strip_prefix('(')
            .and_then(|s| s.split(')').next())
            .ok_or_else(|| bad(prefix as u64, "'shape' is not a tuple"))?;
        let shape = inner
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_end_matches('L').parse::<usize>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| bad(prefix as u64, &format!("'shape' {inner:?} is not a tuple of integers")))?;
        let fortran = value_of("fortran_order")?.starts_with("True");
        if fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
            return Err(bad(prefix as u64, "Fortran-order arrays are not supported (rows must be contiguous)"));
        }
        Ok(NpyHeader { dtype, shape, data_offset: (prefix + hlen) as u64 })
    }

    /// Reads the header of the `.npy` file at `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<NpyHeader> {
        let path = path.as_ref();
        let mut f = File::open(path).at(path)?;
        let mut buf = vec![0u8; 4096];
        let mut n = 0;
        loop {
            let k = f.read(&mut buf[n..]).at(path)?;
            n += k;
            if k == 0 || n == buf.len() {
                break;
            }
        }
        buf.truncate(n);
        match NpyHeader::parse(path, &buf) {
            Err(Error::Corrupt { why, .. }) if why == "header is truncated" && n == 4096 => {
                // A header longer than 4 KiB (format 2.0): read it whole.
                let all = std::fs::read(path).at(path)?;
                NpyHeader::parse(path, &all)
            }
            r => r,
        }
    }
}

fn parse_descr(d: &str) -> Option<Dtype> {
    let (order, code) = d.split_at_checked(1)?;
    if !matches!(order, "<" | "|" | "=") {
        return None;
    }
    Dtype::ALL.into_iter().find(|t| &t.numpy_descr()[1..] == code)
}

/// One line of the names sidecar.
#[derive(Serialize, Deserialize)]
struct NameEntry<'a> {
    name: std::borrow::Cow<'a, str>,
    start: u64,
    end: u64,
}

fn names_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(NAMES_SUFFIX);
    PathBuf::from(p)
}

/// Writes rows of a named-slices `.npy` at given positions. `Sync`: share one writer among
/// threads (`&self` methods); other processes [`open`](SlicesWriter::open) the same file.
#[derive(Debug)]
pub struct SlicesWriter {
    path: PathBuf,
    file: File,
    names_path: PathBuf,
    names: File,
    header: NpyHeader,
}

impl SlicesWriter {
    /// Creates `path` as a `.npy` of `rows` rows of shape `row_shape` of `T`, sized to its full
    /// length (sparse), with an empty names sidecar. An existing file is replaced by a new
    /// one (readers that mapped the old file keep reading it).
    pub fn create<T: Element>(path: impl AsRef<Path>, row_shape: &[usize], rows: u64) -> Result<SlicesWriter> {
        SlicesWriter::create_dtype(path, T::DTYPE, row_shape, rows)
    }

    /// [`create`](SlicesWriter::create) with the element type given at run time.
    pub fn create_dtype(path: impl AsRef<Path>, dtype: Dtype, row_shape: &[usize], rows: u64) -> Result<SlicesWriter> {
        let path = path.as_ref();
        let row_bytes = row_shape.iter().try_fold(dtype.size(), |a, &d| a.checked_mul(d));
        let total = row_bytes.and_then(|rb| (rb as u64).checked_mul(rows));
        let (Some(row_bytes), Some(total)) = (row_bytes, total) else {
            return Err(Error::Usage(format!("{}: {rows} rows of {row_shape:?} {dtype} overflow", path.display())));
        };
        if row_bytes == 0 {
            return Err(Error::Usage(format!("{}: rows of shape {row_shape:?} hold no elements", path.display())));
        }
        let mut shape = vec![usize::try_from(rows).map_err(|_| Error::Usage(format!("{rows} rows overflow usize")))?];
        shape.extend_from_slice(row_shape);
        let head = NpyHeader::encode(dtype, &shape);
        let names_path = names_path(path);
        for p in [path, names_path.as_path()] {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(p, e)),
                _ => {}
            }
        }
        // The sidecar first: a reader that finds the .npy finds its (empty) names too.
        let names = OpenOptions::new().append(true).create_new(true).open(&names_path).at(&names_path)?;
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path).at(path)?;
        file.write_all_at(&head, 0).at(path)?;
        file.set_len(head.len() as u64 + total).at(path)?;
        let header = NpyHeader { dtype, shape, data_offset: head.len() as u64 };
        Ok(SlicesWriter { path: path.into(), file, names_path, names, header })
    }

    /// Opens an existing named-slices `.npy` for writing more rows and names (another
    /// process's writer, say). Its shape and dtype come from the header.
    pub fn open(path: impl AsRef<Path>) -> Result<SlicesWriter> {
        let path = path.as_ref();
        let header = NpyHeader::read(path)?;
        let file = OpenOptions::new().read(true).write(true).open(path).at(path)?;
        let names_path = names_path(path);
        let names = OpenOptions::new().append(true).create(true).open(&names_path).at(&names_path)?;
        Ok(SlicesWriter { path: path.into(), file, names_path, names, header })
    }

    /// The `.npy` file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The array's header (dtype, full shape, data offset).
    pub fn header(&self) -> &NpyHeader {
        &self.header
    }

    /// Total rows.
    pub fn rows(&self) -> u64 {
        self.header.rows()
    }

    /// Writes whole rows starting at row `start` (`data` in C order, a multiple of one row's
    /// elements). Returns the rows written.
    pub fn write_rows<T: Element>(&self, start: u64, data: &[T]) -> Result<Range<u64>> {
        if T::DTYPE != self.header.dtype {
            return Err(Error::Usage(format!(
                "{}: holds {}, not {}",
                self.path.display(),
                self.header.dtype,
                T::DTYPE
            )));
        }
        self.write_bytes(start, T::as_bytes(data))
    }

    /// [`write_rows`](SlicesWriter::write_rows) from raw little-endian element bytes.
    pub fn write_bytes(&self, start: u64, bytes: &[u8]) -> Result<Range<u64>> {
        let rb = self.header.row_bytes();
        if !bytes.len().is_multiple_of(rb) {
            return Err(Error::Usage(format!(
                "{}: {} bytes are not whole rows of {rb} bytes",
                self.path.display(),
                bytes.len()
            )));
        }
        let n = (bytes.len() / rb) as u64;
        let end = start.checked_add(n).filter(|&e| e <= self.rows());
        let Some(end) = end else {
            return Err(Error::OutOfRange { what: "row", index: start.saturating_add(n), len: self.rows() });
        };
        let offset = self.header.data_offset + start * rb as u64;
        self.file.write_all_at(bytes, offset).at(&self.path)?;
        Ok(start..end)
    }

    /// Names rows `rows` (already written, or to be written by someone else). Appends one
    /// line to the sidecar with a single `O_APPEND` write.
    pub fn name(&self, name: &str, rows: Range<u64>) -> Result<()> {
        if name.is_empty() {
            return Err(Error::Usage("a slice name must not be empty".into()));
        }
        if rows.start > rows.end || rows.end > self.rows() {
            return Err(Error::OutOfRange { what: "row", index: rows.end.max(rows.start), len: self.rows() });
        }
        let entry = NameEntry { name: name.into(), start: rows.start, end: rows.end };
        let mut line = serde_json::to_vec(&entry).map_err(Error::encode("a slice name entry"))?;
        line.push(b'\n');
        (&self.names).write_all(&line).at(&self.names_path)
    }

    /// Writes `data` at row `start` and names those rows `name`.
    pub fn write<T: Element>(&self, name: &str, start: u64, data: &[T]) -> Result<Range<u64>> {
        if name.is_empty() {
            return Err(Error::Usage("a slice name must not be empty".into()));
        }
        let rows = self.write_rows(start, data)?;
        self.name(name, rows.clone())?;
        Ok(rows)
    }

    /// Flushes data and names to the disk (fdatasync): they survive power loss, not only the
    /// process's death (which loses nothing written either way).
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().at(&self.path)?;
        self.names.sync_data().at(&self.names_path)
    }
}

/// A named-slices `.npy` mapped read-only: `x["name"]` is a zero-copy `&[T]` of the name's
/// rows (C order, `rows * row_len()` elements).
pub struct Slices<T> {
    path: PathBuf,
    map: Mmap,
    header: NpyHeader,
    names: Vec<(String, Range<u64>)>,
    by_name: HashMap<String, usize>,
    _t: PhantomData<T>,
}

impl<T: Element + bytemuck::Pod> Slices<T> {
    /// Maps `path` and reads its names sidecar (none if the sidecar is missing).
    pub fn open(path: impl AsRef<Path>) -> Result<Slices<T>> {
        let path = path.as_ref();
        let file = File::open(path).at(path)?;
        // SAFETY: the map is read-only; writers only ever write rows in place (never
        // truncate), so the mapped length stays valid while the map lives.
        let map = unsafe { Mmap::map(&file) }.at(path)?;
        let header = NpyHeader::parse(path, &map)?;
        if header.dtype != T::DTYPE {
            return Err(Error::Usage(format!("{}: holds {}, not {}", path.display(), header.dtype, T::DTYPE)));
        }
        if header.shape.is_empty() {
            return Err(Error::Usage(format!("{}: a 0-d array has no rows", path.display())));
        }
        let need = (header.rows() as u128) * header.row_bytes() as u128 + u128::from(header.data_offset);
        if (map.len() as u128) < need || !(header.data_offset as usize).is_multiple_of(std::mem::align_of::<T>()) {
            return Err(Error::Corrupt {
                path: path.into(),
                offset: map.len() as u64,
                why: format!("file is shorter than its shape {:?} needs ({need} bytes)", header.shape),
            });
        }
        let mut s = Slices { path: path.into(), map, header, names: vec![], by_name: HashMap::new(), _t: PhantomData };
        s.reload_names()?;
        Ok(s)
    }

    /// Re-reads the names sidecar (names other writers added since open).
    pub fn reload_names(&mut self) -> Result<()> {
        let np = names_path(&self.path);
        let text = match std::fs::read(&np) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => return Err(Error::io(np, e)),
        };
        self.names.clear();
        self.by_name.clear();
        let mut offset = 0usize;
        // Only lines ending in '\n' are complete; a torn tail is ignored.
        while let Some(nl) = text[offset..].iter().position(|&b| b == b'\n') {
            let line = &text[offset..offset + nl];
            let at = offset as u64;
            offset += nl + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let e: NameEntry<'_> = serde_json::from_slice(line).map_err(|e| Error::Corrupt {
                path: np.clone(),
                offset: at,
                why: format!("bad name entry: {e}"),
            })?;
            if e.start > e.end || e.end > self.header.rows() {
                return Err(Error::Corrupt {
                    path: np.clone(),
                    offset: at,
                    why: format!("name {:?} rows {}..{} outside 0..{}", e.name, e.start, e.end, self.header.rows()),
                });
            }
            match self.by_name.get(e.name.as_ref()) {
                Some(&i) => self.names[i].1 = e.start..e.end,
                None => {
                    self.by_name.insert(e.name.to_string(), self.names.len());
                    self.names.push((e.name.into_owned(), e.start..e.end));
                }
            }
        }
        Ok(())
    }

    /// The `.npy` file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The array's header.
    pub fn header(&self) -> &NpyHeader {
        &self.header
    }

    /// Total rows of the array.
    pub fn rows(&self) -> u64 {
        self.header.rows()
    }

    /// Shape of one row.
    pub fn row_shape(&self) -> &[usize] {
        self.header.row_shape()
    }

    /// Elements per row.
    pub fn row_len(&self) -> usize {
        self.header.row_shape().iter().product()
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True if no rows are named.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The whole array, zero-copy.
    pub fn as_slice(&self) -> &[T] {
        self.rows_slice(0..self.rows()).unwrap_or(&[])
    }

    /// Rows `rows` of the array, zero-copy.
    pub fn rows_slice(&self, rows: Range<u64>) -> Result<&[T]> {
        if rows.start > rows.end || rows.end > self.rows() {
            return Err(Error::OutOfRange { what: "row", index: rows.end.max(rows.start), len: self.rows() });
        }
        let rb = self.header.row_bytes() as u64;
        let a = (self.header.data_offset + rows.start * rb) as usize;
        let b = (self.header.data_offset + rows.end * rb) as usize;
        // Bounds and alignment were checked at open.
        Ok(bytemuck::cast_slice(&self.map[a..b]))
    }

    /// The rows named `name`, zero-copy; `None` if no such name.
    pub fn get(&self, name: &str) -> Option<&[T]> {
        let r = self.range(name)?;
        self.rows_slice(r).ok()
    }

    /// The rows named `name`, or an error naming it.
    pub fn slice(&self, name: &str) -> Result<&[T]> {
        self.get(name).ok_or_else(|| Error::NotFound { what: "slice name", name: name.into() })
    }

    /// The row range of `name`.
    pub fn range(&self, name: &str) -> Option<Range<u64>> {
        self.by_name.get(name).map(|&i| self.names[i].1.clone())
    }

    /// Names in the order they were first written.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.names.iter().map(|(n, _)| n.as_str())
    }

    /// `(name, rows)` pairs in name order, zero-copy.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[T])> + '_ {
        self.names.iter().map(|(n, r)| (n.as_str(), self.rows_slice(r.clone()).unwrap_or(&[])))
    }

    /// The rows named `name` as an n-d view (`[rows, row_shape...]`), zero-copy.
    #[cfg(feature = "ndarray")]
    pub fn view(&self, name: &str) -> Result<ndarray::ArrayViewD<'_, T>> {
        let r = self.range(name).ok_or_else(|| Error::NotFound { what: "slice name", name: name.into() })?;
        let mut shape = vec![(r.end - r.start) as usize];
        shape.extend_from_slice(self.row_shape());
        let data = self.rows_slice(r)?;
        ndarray::ArrayViewD::from_shape(shape, data).map_err(|e| Error::Usage(format!("slice {name:?}: {e}")))
    }
}

impl<T: Element + bytemuck::Pod> std::ops::Index<&str> for Slices<T> {
    type Output = [T];

    /// `x["name"]`: the name's rows. Panics if there is no such name (use
    /// [`Slices::get`] to ask).
    fn index(&self, name: &str) -> &[T] {
        match self.get(name) {
            Some(s) => s,
            None => panic!("no slice named {name:?} in {}", self.path.display()),
        }
    }
}

impl<T> std::fmt::Debug for Slices<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slices")
            .field("path", &self.path)
            .field("header", &self.header)
            .field("names", &self.names.len())
            .finish()
    }
}

#[cfg(test)]
mod tests;
