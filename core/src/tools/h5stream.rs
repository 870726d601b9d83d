//! Parallel streaming and asynchronous random-access reads of any HDF5 file's datasets —
//! files smdfs did not write included.
//!
//! libhdf5 here is built without thread safety: every call serializes under the `hdf5`
//! crate's lock, so threads calling libhdf5 gain nothing. Parallelism is taken where it is
//! real: a *contiguous* dataset whose storage is allocated has one byte offset
//! (`H5Dget_offset`, asked once at open), and its rows are read with plain `pread` from many
//! threads, with no libhdf5 call in the hot path. Chunked (possibly compressed), compact or
//! unallocated datasets are read through libhdf5 (hyperslab reads, serialized by the lock):
//! correct for any layout, parallel only in the caller's processing. Every read returns the
//! file's raw element bytes in C order (for numeric types the file's byte order, in practice
//! little-endian); variable-length types are refused, since they have no fixed-size rows.
//!
//! [`H5File::stream`] yields blocks of rows unordered (as they complete) or in order, into
//! pooled buffers ([`BlockStream::recycle`]); workers never run more than a bounded number of
//! blocks ahead of the consumer. [`H5File::requests`] serves asynchronous random-access
//! requests ([`Requests::request`], [`Requests::request_into`]) on a fixed set of threads;
//! [`Request::wait`] blocks, [`Request::poll`] does not.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};

use hdf5::types::TypeDescriptor;

use crate::error::{Error, Result};
use crate::fork::{Origin, Threads};
use crate::h5::ffi;

/// How a dataset's rows are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Contiguous storage at this byte offset of the file: parallel `pread`.
    Pread {
        /// Byte offset of element 0.
        offset: u64,
    },
    /// Through libhdf5 (chunked, compact, unallocated): serialized hyperslab reads.
    Library,
}

/// A dataset opened for streaming: its shape, row size and how it is read.
#[derive(Debug)]
pub struct DatasetInfo {
    /// Path in the file (as given).
    pub name: String,
    /// Shape; a scalar dataset reads as one row (`[]`).
    pub shape: Vec<u64>,
    /// Bytes per element in the file.
    pub elem_size: usize,
    /// How rows are read.
    pub access: Access,
    ds: hdf5::Dataset,
}

impl DatasetInfo {
    /// Rows (first dimension; 1 for a scalar).
    pub fn rows(&self) -> u64 {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Bytes per row (all dimensions after the first, times the element size).
    pub fn row_bytes(&self) -> usize {
        self.shape.iter().skip(1).product::<u64>() as usize * self.elem_size
    }
}

/// An HDF5 file opened for parallel reads: one libhdf5 handle plus one plain file descriptor.
pub struct H5File {
    path: PathBuf,
    fd: std::fs::File,
    h5: hdf5::File,
    datasets: Mutex<HashMap<String, Arc<DatasetInfo>>>,
}

impl std::fmt::Debug for H5File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H5File").field("path", &self.path).finish_non_exhaustive()
    }
}

fn h5fail(path: &Path, what: &str, why: impl std::fmt::Display) -> Error {
    ffi::fail(path, what, why)
}

impl H5File {
    /// Opens `path` read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<Arc<H5File>> {
        let path = path.as_ref().to_path_buf();
        let fd = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let h5 = hdf5::sync::sync(|| hdf5::File::open(&path)).map_err(|e| h5fail(&path, "open", e))?;
        Ok(Arc::new(H5File { path, fd, h5, datasets: Mutex::new(HashMap::new()) }))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (once; later calls share it) the dataset `name` and finds how to read it.
    /// [`Error::NotFound`] when there is none; [`Error::Usage`] for variable-length types.
    pub fn dataset(&self, name: &str) -> Result<Arc<DatasetInfo>> {
        let mut map = self.datasets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = map.get(name) {
            return Ok(d.clone());
        }
        let info = hdf5::sync::sync(|| -> Result<DatasetInfo> {
            if !self.h5.link_exists(name) {
                return Err(Error::NotFound { what: "dataset", name: name.to_string() });
            }
            let ds = self.h5.dataset(name).map_err(|e| h5fail(&self.path, name, e))?;
            let dtype = ds.dtype().map_err(|e| h5fail(&self.path, name, e))?;
            match dtype.to_descriptor() {
                Ok(TypeDescriptor::VarLenArray(_) | TypeDescriptor::VarLenAscii | TypeDescriptor::VarLenUnicode) => {
                    return Err(Error::Usage(format!(
                        "{}: {name}: variable-length types have no fixed-size rows",
                        self.path.display()
                    )))
                }
                Ok(_) => {}
                Err(e) => return Err(h5fail(&self.path, name, e)),
            }
            let shape: Vec<u64> = ds.shape().iter().map(|&d| d as u64).collect();
            let elem_size = dtype.size();
            let access = match (ds.layout(), ds.offset()) {
                (hdf5::dataset::Layout::Contiguous, Some(offset)) => Access::Pread { offset },
                _ => Access::Library,
            };
            Ok(DatasetInfo { name: name.to_string(), shape, elem_size, access, ds })
        })?;
        let info = Arc::new(info);
        map.insert(name.to_string(), info.clone());
        Ok(info)
    }

    /// Reads rows `rows` of `d` into `out` (exactly `rows.len() * row_bytes` bytes).
    pub fn read_rows(&self, d: &DatasetInfo, rows: Range<u64>, out: &mut [u8]) -> Result<()> {
        if rows.start > rows.end || rows.end > d.rows() {
            return Err(Error::OutOfRange { what: "row", index: rows.end, len: d.rows() });
        }
        let n = rows.end - rows.start;
        let want = n as usize * d.row_bytes();
        if out.len() != want {
            return Err(Error::Usage(format!("{}: buffer of {} bytes for {want} bytes of rows", d.name, out.len())));
        }
        if want == 0 {
            return Ok(());
        }
        match d.access {
            Access::Pread { offset } => self
                .fd
                .read_exact_at(out, offset + rows.start * d.row_bytes() as u64)
                .map_err(|e| Error::io(&self.path, e)),
            Access::Library => self.read_library(d, rows.start, n, out),
        }
    }

    /// A hyperslab read through libhdf5 with the file's own type as memory type (no conversion).
    fn read_library(&self, d: &DatasetInfo, row: u64, rows: u64, out: &mut [u8]) -> Result<()> {
        let mtype = d.ds.dtype().map_err(ffi::h5err(&self.path, &d.name))?;
        if ffi::transfer_rows(d.ds.id(), mtype.id(), &d.shape, row, rows, ffi::Rows::Read(out)) {
            Ok(())
        } else {
            Err(ffi::fail(&self.path, &d.name, format!("libhdf5 cannot read rows {row}..{}", row + rows)))
        }
    }

    /// Streams `dataset` in blocks of rows across `opts.threads` threads.
    pub fn stream(self: &Arc<Self>, dataset: &str, opts: &StreamOptions) -> Result<BlockStream> {
        let d = self.dataset(dataset)?;
        let block_rows = opts.block_rows.max(1);
        let blocks = d.rows().div_ceil(block_rows);
        let threads = opts.threads.max(1);
        let window = opts.depth.max(threads) as u64;
        let shared = Arc::new(StreamShared {
            next: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            delivered: Mutex::new(0),
            moved: Condvar::new(),
            pool: Mutex::new(Vec::new()),
        });
        let (tx, rx) = sync_channel::<Result<RowBlock>>(window as usize);
        let mut handles = Threads::new("HDF5 stream");
        for t in 0..threads {
            let (file, d, shared, tx) = (self.clone(), d.clone(), shared.clone(), tx.clone());
            let ordered = opts.ordered;
            let h = std::thread::Builder::new()
                .name(format!("smdfs-h5stream-{t}"))
                .spawn(move || loop {
                    let k = shared.next.fetch_add(1, Ordering::Relaxed);
                    if k >= blocks || shared.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if ordered {
                        // Never run more than `window` blocks ahead of the consumer.
                        let mut del = shared.delivered.lock().unwrap_or_else(|e| e.into_inner());
                        while k >= *del + window && !shared.stop.load(Ordering::Relaxed) {
                            del = shared.moved.wait(del).unwrap_or_else(|e| e.into_inner());
                        }
                    }
                    let start = k * block_rows;
                    let rows = block_rows.min(d.rows() - start);
                    let mut data = shared.pool.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
                    data.resize(rows as usize * d.row_bytes(), 0);
                    let r = file.read_rows(&d, start..start + rows, &mut data);
                    let stop = r.is_err();
                    if tx.send(r.map(|()| RowBlock { index: k, start, rows, data })).is_err() || stop {
                        shared.stop.store(true, Ordering::Relaxed);
                        return;
                    }
                })
                .map_err(|e| Error::thread("HDF5 stream", format!("cannot start: {e}")))?;
            handles.push(h);
        }
        Ok(BlockStream {
            rx: Some(rx),
            shared,
            threads: handles,
            ordered: opts.ordered,
            pending: BTreeMap::new(),
            expect: 0,
            blocks,
            info: d,
        })
    }

    /// Starts `threads` request threads serving asynchronous reads of this file.
    pub fn requests(self: &Arc<Self>, threads: usize) -> Result<Requests> {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let pool = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Threads::new("HDF5 request queue");
        for t in 0..threads.max(1) {
            let (file, rx) = (self.clone(), rx.clone());
            let h = std::thread::Builder::new()
                .name(format!("smdfs-h5req-{t}"))
                .spawn(move || loop {
                    let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                        Ok(j) => j,
                        Err(_) => return,
                    };
                    let Job { info, rows, mut buf, reply } = job;
                    let r = file.read_rows(&info, rows, &mut buf).map(|()| buf);
                    let _ = reply.send(r);
                })
                .map_err(|e| Error::thread("HDF5 request", format!("cannot start: {e}")))?;
            handles.push(h);
        }
        Ok(Requests { file: self.clone(), tx: Some(tx), threads: handles, pool })
    }
}

/// Options of [`H5File::stream`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamOptions {
    /// Rows per block (default 4096).
    pub block_rows: u64,
    /// Reader threads (default 2).
    pub threads: usize,
    /// Yield blocks in row order (default: as they complete).
    pub ordered: bool,
    /// Blocks that may be read ahead of the consumer (at least `threads`; default 8).
    pub depth: usize,
}

impl Default for StreamOptions {
    fn default() -> StreamOptions {
        StreamOptions { block_rows: 4096, threads: 2, ordered: false, depth: 8 }
    }
}

/// A block of consecutive rows: the file's raw element bytes, C order.
#[derive(Debug, Default)]
pub struct RowBlock {
    /// Block number (`start / block_rows`).
    pub index: u64,
    /// First row.
    pub start: u64,
    /// Rows in the block.
    pub rows: u64,
    /// `rows * row_bytes` bytes.
    pub data: Vec<u8>,
}

struct StreamShared {
    next: AtomicU64,
    stop: AtomicBool,
    delivered: Mutex<u64>,
    moved: Condvar,
    pool: Mutex<Vec<Vec<u8>>>,
}

/// The blocks of one dataset, from [`H5File::stream`]; an iterator of `Result<RowBlock>`.
/// Dropping it stops the threads.
pub struct BlockStream {
    rx: Option<Receiver<Result<RowBlock>>>,
    shared: Arc<StreamShared>,
    /// The workers (absent in a forked child: every call there is `Error::Forked`).
    threads: Threads,
    ordered: bool,
    pending: BTreeMap<u64, RowBlock>,
    expect: u64,
    blocks: u64,
    info: Arc<DatasetInfo>,
}

impl BlockStream {
    /// Gives a block's buffer back to the pool, so later blocks reuse its memory.
    pub fn recycle(&self, block: RowBlock) {
        // In a forked child a worker may have held the pool's lock at the fork.
        if self.threads.origin().forked() {
            return;
        }
        let mut pool = self.shared.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < self.threads.len() * 2 + 8 {
            pool.push(block.data);
        }
    }

    /// The dataset streamed.
    pub fn dataset(&self) -> &DatasetInfo {
        &self.info
    }
}

impl Iterator for BlockStream {
    type Item = Result<RowBlock>;

    fn next(&mut self) -> Option<Result<RowBlock>> {
        if self.expect >= self.blocks {
            return None;
        }
        if let Err(e) = self.threads.check() {
            return Some(Err(e));
        }
        let rx = self.rx.as_ref()?;
        if !self.ordered {
            let r = rx.recv().ok()?;
            self.expect += 1;
            return Some(r);
        }
        loop {
            if let Some(b) = self.pending.remove(&self.expect) {
                self.expect += 1;
                *self.shared.delivered.lock().unwrap_or_else(|e| e.into_inner()) = self.expect;
                self.shared.moved.notify_all();
                return Some(Ok(b));
            }
            match rx.recv().ok()? {
                Ok(b) => {
                    self.pending.insert(b.index, b);
                }
                Err(e) => {
                    self.expect = self.blocks;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl Drop for BlockStream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.moved.notify_all();
        drop(self.rx.take()); // a worker blocked on a full queue gets an error and exits
        self.threads.join_all();
    }
}

struct Job {
    info: Arc<DatasetInfo>,
    rows: Range<u64>,
    buf: Vec<u8>,
    reply: Sender<Result<Vec<u8>>>,
}

/// Asynchronous random-access reads of one file, from [`H5File::requests`]. Dropping it
/// finishes the queued requests and joins the threads.
pub struct Requests {
    file: Arc<H5File>,
    tx: Option<Sender<Job>>,
    /// The workers (absent in a forked child: every call there is `Error::Forked`).
    threads: Threads,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Requests {
    /// Requests rows `rows` of `dataset` into a pooled buffer.
    pub fn request(&self, dataset: &str, rows: Range<u64>) -> Result<Request> {
        self.threads.check()?;
        let buf = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
        self.request_into(dataset, rows, buf)
    }

    /// Requests rows `rows` of `dataset` into `buf` (resized to fit; its allocation is reused).
    /// Range and dataset errors are returned here, before anything is queued.
    pub fn request_into(&self, dataset: &str, rows: Range<u64>, mut buf: Vec<u8>) -> Result<Request> {
        self.threads.check()?;
        let info = self.file.dataset(dataset)?;
        if rows.start > rows.end || rows.end > info.rows() {
            return Err(Error::OutOfRange { what: "row", index: rows.end, len: info.rows() });
        }
        buf.resize((rows.end - rows.start) as usize * info.row_bytes(), 0);
        let (reply, rx) = channel();
        let tx = self.tx.as_ref().ok_or_else(|| Error::Usage("request queue closed".into()))?;
        tx.send(Job { info, rows, buf, reply }).map_err(|_| Error::thread("HDF5 request", "stopped"))?;
        Ok(Request { rx, origin: *self.threads.origin() })
    }

    /// Gives a buffer back to the pool used by [`Requests::request`].
    pub fn recycle(&self, buf: Vec<u8>) {
        // In a forked child a worker may have held the pool's lock at the fork.
        if self.threads.origin().forked() {
            return;
        }
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 64 {
            pool.push(buf);
        }
    }
}

impl Drop for Requests {
    fn drop(&mut self) {
        drop(self.tx.take());
        self.threads.join_all();
    }
}

/// One pending read: [`Request::wait`] blocks for its bytes, [`Request::poll`] does not.
#[derive(Debug)]
pub struct Request {
    rx: Receiver<Result<Vec<u8>>>,
    /// Where the workers that answer it run.
    origin: Origin,
}

impl Request {
    /// Blocks until the rows are read; returns the buffer holding exactly them.
    pub fn wait(self) -> Result<Vec<u8>> {
        self.origin.check()?;
        self.rx.recv().map_err(|_| Error::thread("HDF5 request", "stopped"))?
    }

    /// The rows if they are read, `None` if not yet (then poll again or wait).
    pub fn poll(&mut self) -> Option<Result<Vec<u8>>> {
        if let Err(e) = self.origin.check() {
            return Some(Err(e));
        }
        match self.rx.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(Error::thread("HDF5 request", "stopped"))),
        }
    }
}
