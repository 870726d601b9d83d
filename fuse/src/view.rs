//! The View: an immutable snapshot of a run as a tree of directories and files, each file a
//! sorted list of extents — skeleton bytes, literal bytes, or a dataset's bytes gathered from
//! the shards in event-id order. [`View::read_into`] is the whole read path; it is tested
//! without mounting.
//!
//! `run.h5` is a real HDF5 file: its metadata comes from a skeleton libhdf5 writes (see
//! `smdfs::h5::skeleton`), and every byte inside a dataset's extent is served from the run.
//! `arrays/<path>.npy` serve the same dataset bytes behind an `.npy` header. Layout:
//! `/timestamp`, `/<path>` per aligned field, `/<G>/timestamp` + `/<G>/<path>` for a named
//! aligned group, `/<P>` + `/<P>_timestamp` for an unaligned field, ragged `x` as `/x` (flat
//! values) + `/x_len` + `/x_offsets`, `/_present/<path>` for aligned fields with missing
//! rows, `/summary/<name>`. `run.zarr/` shows the same datasets as a Zarr v3 hierarchy whose
//! chunk files are extents of the same dataset bytes (see [`zarr`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use memmap2::Mmap;
use smdfs::h5::layout::{self, DatasetLayout, Source};
use smdfs::h5::skeleton::build_skeleton;
use smdfs::Run;

use crate::error::ViewError;
use smdfs::format::npy;

mod arrival;
mod zarr;

/// Inode number (root is [`ROOT_INO`]).
pub type Ino = u64;
/// The root directory's inode.
pub const ROOT_INO: Ino = 1;

/// File or directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Dir,
    /// A regular, read-only file.
    File,
}

/// Attributes of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode.
    pub ino: Ino,
    /// File or directory.
    pub kind: FileKind,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time (the snapshot's).
    pub mtime: SystemTime,
    /// Link count.
    pub nlink: u32,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode.
    pub ino: Ino,
    /// File or directory.
    pub kind: FileKind,
    /// Name.
    pub name: String,
}

/// The order of rows in the view's datasets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// Event-id order through the global index (the default).
    #[default]
    EventId,
    /// Arrival order: each shard's rows as committed, shard after shard; no gather.
    Arrival,
}

impl std::str::FromStr for Order {
    type Err = String;

    fn from_str(s: &str) -> Result<Order, String> {
        match s {
            "event-id" | "id" => Ok(Order::EventId),
            "arrival" => Ok(Order::Arrival),
            _ => Err(format!("unknown order {s:?}: expected `event-id` or `arrival`")),
        }
    }
}

/// How to build a view.
#[derive(Clone, Debug)]
pub struct ViewOptions {
    /// Name of the HDF5 file (default `run.h5`).
    pub h5_name: String,
    /// Name of the Zarr v3 directory (default `run.zarr`; empty: none).
    pub zarr_name: String,
    /// Row order of every dataset.
    pub order: Order,
}

impl Default for ViewOptions {
    fn default() -> Self {
        ViewOptions { h5_name: "run.h5".into(), zarr_name: "run.zarr".into(), order: Order::EventId }
    }
}

/// A dataset of the view: its layout and where libhdf5 placed its bytes in the skeleton.
#[derive(Clone, Debug)]
struct Dataset {
    layout: DatasetLayout,
    offset: u64,
    size: u64,
    /// Its bytes in arrival order (`Order::Arrival` only).
    arrival: Option<Vec<arrival::Seg>>,
}

/// A piece of a file.
#[derive(Clone, Debug)]
enum Piece {
    /// Bytes of the skeleton starting at this offset.
    Skeleton(u64),
    /// Literal bytes.
    Literal(Arc<[u8]>),
    /// Bytes of dataset `usize` starting at this byte offset within it.
    Data(usize, u64),
}

#[derive(Clone, Debug)]
struct Extent {
    start: u64,
    len: u64,
    piece: Piece,
}

enum Node {
    Dir { children: BTreeMap<String, Ino> },
    File { size: u64, extents: Vec<Extent> },
}

/// An immutable snapshot of a run's view.
pub struct View {
    run: Run,
    datasets: Vec<Dataset>,
    nodes: Vec<Node>,
    skeleton: Option<Mmap>,
    mtime: SystemTime,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View").field("run", &self.run.dir()).field("nodes", &self.nodes.len()).finish()
    }
}

impl View {
    /// Opens the run in `dir` and builds its view: O(datasets), independent of events.
    pub fn open(dir: &Path, opts: &ViewOptions) -> Result<View, ViewError> {
        let run = Run::open(dir)?;
        View::from_run(run, opts)
    }

    /// Builds the view of an opened run.
    pub fn from_run(run: Run, opts: &ViewOptions) -> Result<View, ViewError> {
        if opts.h5_name.is_empty() || opts.h5_name.contains('/') || opts.h5_name == "arrays" {
            return Err(ViewError::Layout(format!("invalid HDF5 file name {:?}", opts.h5_name)));
        }
        if opts.zarr_name.contains('/') || ["arrays", opts.h5_name.as_str()].contains(&opts.zarr_name.as_str()) {
            return Err(ViewError::Layout(format!("invalid Zarr directory name {:?}", opts.zarr_name)));
        }
        let mtime = std::fs::metadata(run.dir().join(smdfs::format::manifest::MANIFEST_FILE))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let layouts = layout::plan(&run);
        let plans: Vec<_> = layouts.iter().map(DatasetLayout::skeleton_plan).collect();
        let tmp = tempfile::Builder::new()
            .prefix("smdfs-skeleton-")
            .suffix(".h5")
            .tempfile()
            .map_err(|e| ViewError::Io { what: "creating the HDF5 skeleton file".into(), source: e })?;
        let root_attrs = layout::root_attrs(&run);
        let skel = build_skeleton(tmp.path(), &plans, &layout::dimensions(&layouts), &root_attrs)?;
        let file = std::fs::File::open(tmp.path())
            .map_err(|e| ViewError::Io { what: format!("opening {}", tmp.path().display()), source: e })?;
        // SAFETY: the skeleton is our private, unlinked temporary file; nobody modifies it.
        let skeleton = if file.metadata().map(|m| m.len()).unwrap_or(0) > 0 {
            Some(
                unsafe { Mmap::map(&file) }
                    .map_err(|e| ViewError::Io { what: "mapping the skeleton".into(), source: e })?,
            )
        } else {
            None
        };
        drop(tmp);
        let datasets: Vec<Dataset> = layouts
            .into_iter()
            .zip(&skel.datasets)
            .map(|(layout, e)| {
                let arrival = match opts.order {
                    Order::EventId => None,
                    Order::Arrival => Some(arrival::segments(&run, &layout)?),
                };
                Ok(Dataset { layout, offset: e.offset, size: e.size, arrival })
            })
            .collect::<Result<_, ViewError>>()?;
        let mut view = View { run, datasets, nodes: vec![Node::Dir { children: BTreeMap::new() }], skeleton, mtime };

        // run.h5: dataset extents served from the run, skeleton bytes between them.
        let mut served: Vec<(u64, u64, usize)> = view
            .datasets
            .iter()
            .enumerate()
            // Literal datasets (summary) were written into the skeleton by libhdf5.
            .filter(|(_, d)| d.size > 0 && !matches!(d.layout.source, Source::Literal(_)))
            .map(|(i, d)| (d.offset, d.size, i))
            .collect();
        served.sort_unstable();
        let mut extents = Vec::new();
        let mut pos = 0u64;
        for (off, size, i) in served {
            if off > pos {
                extents.push(Extent { start: pos, len: off - pos, piece: Piece::Skeleton(pos) });
            }
            extents.push(Extent { start: off, len: size, piece: Piece::Data(i, 0) });
            pos = off + size;
        }
        if skel.file_size > pos {
            extents.push(Extent { start: pos, len: skel.file_size - pos, piece: Piece::Skeleton(pos) });
        }
        view.add_file(ROOT_INO, &opts.h5_name, skel.file_size.max(pos), extents)?;

        // arrays/<path>.npy
        let arrays = view.add_dir(ROOT_INO, "arrays")?;
        for i in 0..view.datasets.len() {
            let d = &view.datasets[i];
            if !d.layout.npy {
                continue;
            }
            let header: Arc<[u8]> = npy::header(d.layout.dtype.numpy_descr(), &d.layout.shape).into();
            let (hl, size) = (header.len() as u64, d.size);
            let mut ext = vec![Extent { start: 0, len: hl, piece: Piece::Literal(header) }];
            if size > 0 {
                ext.push(Extent { start: hl, len: size, piece: Piece::Data(i, 0) });
            }
            let path = d.layout.path.clone();
            let (dirs, name) = match path.rsplit_once('/') {
                Some((a, b)) => (a.to_string(), b.to_string()),
                None => (String::new(), path.clone()),
            };
            let mut parent = arrays;
            for seg in dirs.split('/').filter(|s| !s.is_empty()) {
                parent = view.add_dir(parent, seg)?;
            }
            view.add_file(parent, &format!("{name}.npy"), hl + size, ext)?;
        }
        if !opts.zarr_name.is_empty() {
            zarr::add(&mut view, &opts.zarr_name)?;
        }
        Ok(view)
    }

    fn add_dir(&mut self, parent: Ino, name: &str) -> Result<Ino, ViewError> {
        if let Node::Dir { children } = &self.nodes[(parent - 1) as usize] {
            if let Some(&ino) = children.get(name) {
                return match self.nodes[(ino - 1) as usize] {
                    Node::Dir { .. } => Ok(ino),
                    Node::File { .. } => {
                        Err(ViewError::Layout(format!("view name {name:?} is both a file and a directory")))
                    }
                };
            }
        }
        self.nodes.push(Node::Dir { children: BTreeMap::new() });
        let ino = self.nodes.len() as Ino;
        self.link(parent, name, ino)?;
        Ok(ino)
    }

    fn add_file(&mut self, parent: Ino, name: &str, size: u64, extents: Vec<Extent>) -> Result<Ino, ViewError> {
        self.nodes.push(Node::File { size, extents });
        let ino = self.nodes.len() as Ino;
        self.link(parent, name, ino)?;
        Ok(ino)
    }

    fn link(&mut self, parent: Ino, name: &str, ino: Ino) -> Result<(), ViewError> {
        match &mut self.nodes[(parent - 1) as usize] {
            Node::Dir { children } => {
                if children.insert(name.to_string(), ino).is_some() {
                    return Err(ViewError::Layout(format!("two view entries named {name:?}")));
                }
                Ok(())
            }
            Node::File { .. } => Err(ViewError::NotADirectory(parent)),
        }
    }

    fn node(&self, ino: Ino) -> Result<&Node, ViewError> {
        ino.checked_sub(1)
            .and_then(|i| self.nodes.get(i as usize))
            .ok_or_else(|| ViewError::NotFound(format!("inode {ino}")))
    }

    /// The run this view shows.
    pub fn run(&self) -> &Run {
        &self.run
    }

    /// Attributes of an inode.
    pub fn attr(&self, ino: Ino) -> Result<Attr, ViewError> {
        Ok(match self.node(ino)? {
            Node::Dir { children } => {
                let subdirs =
                    children.values().filter(|&&c| matches!(self.nodes[(c - 1) as usize], Node::Dir { .. })).count();
                Attr { ino, kind: FileKind::Dir, size: 0, mtime: self.mtime, nlink: 2 + subdirs as u32 }
            }
            Node::File { size, .. } => Attr { ino, kind: FileKind::File, size: *size, mtime: self.mtime, nlink: 1 },
        })
    }

    /// Looks a name up in a directory.
    pub fn lookup(&self, parent: Ino, name: &str) -> Result<Attr, ViewError> {
        match self.node(parent)? {
            Node::Dir { children } => match children.get(name) {
                Some(&ino) => self.attr(ino),
                None => Err(ViewError::NotFound(name.into())),
            },
            Node::File { .. } => Err(ViewError::NotADirectory(parent)),
        }
    }

    /// A directory's entries (without `.` and `..`), in name order.
    pub fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>, ViewError> {
        match self.node(ino)? {
            Node::Dir { children } => Ok(children
                .iter()
                .map(|(name, &c)| DirEntry {
                    ino: c,
                    kind: if matches!(self.nodes[(c - 1) as usize], Node::Dir { .. }) {
                        FileKind::Dir
                    } else {
                        FileKind::File
                    },
                    name: name.clone(),
                })
                .collect()),
            Node::File { .. } => Err(ViewError::NotADirectory(ino)),
        }
    }

    /// Every file of the view with its size, by path, in name order.
    pub fn files(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut stack = vec![(ROOT_INO, String::new())];
        while let Some((ino, prefix)) = stack.pop() {
            if let Ok(entries) = self.readdir(ino) {
                for e in entries.into_iter().rev() {
                    let path = if prefix.is_empty() { e.name.clone() } else { format!("{prefix}/{}", e.name) };
                    match e.kind {
                        FileKind::Dir => stack.push((e.ino, path)),
                        FileKind::File => out.push((path, self.attr(e.ino).map_or(0, |a| a.size))),
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Looks a `/`-separated path up from the root (`""` is the root).
    pub fn resolve(&self, path: &str) -> Result<Attr, ViewError> {
        let mut a = self.attr(ROOT_INO)?;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            a = self.lookup(a.ino, seg)?;
        }
        Ok(a)
    }

    /// Reads up to `buf.len()` bytes at `offset` into `buf`; returns how many (0 at EOF).
    pub fn read_into(&self, ino: Ino, offset: u64, buf: &mut [u8]) -> Result<usize, ViewError> {
        let Node::File { size, extents } = self.node(ino)? else { return Err(ViewError::IsADirectory(ino)) };
        if offset >= *size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(size - offset) as usize;
        let buf = &mut buf[..n];
        let mut k = extents.partition_point(|e| e.start + e.len <= offset);
        let mut done = 0usize;
        while done < n {
            let Some(e) = extents.get(k) else {
                buf[done..].fill(0);
                break;
            };
            let at = offset + done as u64;
            if at < e.start {
                let gap = ((e.start - at) as usize).min(n - done);
                buf[done..done + gap].fill(0);
                done += gap;
                continue;
            }
            let within = at - e.start;
            let take = ((e.len - within) as usize).min(n - done);
            let out = &mut buf[done..done + take];
            match &e.piece {
                Piece::Skeleton(base) => self.read_skeleton(base + within, out),
                Piece::Literal(b) => out.copy_from_slice(&b[within as usize..within as usize + take]),
                Piece::Data(i, base) => self.read_dataset(*i, base + within, out)?,
            }
            done += take;
            k += 1;
        }
        Ok(n)
    }

    fn read_skeleton(&self, at: u64, out: &mut [u8]) {
        let sk = self.skeleton.as_deref().unwrap_or(&[]);
        let a = (at as usize).min(sk.len());
        let b = (a + out.len()).min(sk.len());
        out[..b - a].copy_from_slice(&sk[a..b]);
        out[b - a..].fill(0);
    }

    /// Bytes `at..at + out.len()` of dataset `i`.
    fn read_dataset(&self, i: usize, at: u64, out: &mut [u8]) -> Result<(), ViewError> {
        let d = &self.datasets[i];
        match &d.arrival {
            Some(segs) => arrival::read(&self.run, segs, at, out),
            None => Ok(d.layout.read(&self.run, at, out)?),
        }
    }

    /// Bytes `offset..offset + len` of file `ino` as one slice of memory the view already
    /// holds (the skeleton, a literal, or a stretch of one shard column), when one piece
    /// holds them all: a read the mount answers without copying. `None`: use
    /// [`View::read_into`].
    pub fn slice(&self, ino: Ino, offset: u64, len: usize) -> Option<&[u8]> {
        let Ok(Node::File { size, extents }) = self.node(ino) else { return None };
        let len = len.min(usize::try_from(size.checked_sub(offset)?).ok()?);
        let end = offset + len as u64;
        if len == 0 {
            return None;
        }
        let e = extents.get(extents.partition_point(|e| e.start + e.len <= offset))?;
        if offset < e.start || end > e.start + e.len {
            return None;
        }
        let within = offset - e.start;
        match &e.piece {
            Piece::Skeleton(base) => {
                let a = usize::try_from(base + within).ok()?;
                self.skeleton.as_deref()?.get(a..a + len)
            }
            Piece::Literal(b) => b.get(within as usize..within as usize + len),
            Piece::Data(i, base) => self.dataset_slice(*i, base + within, len),
        }
    }

    /// Bytes `at..at + len` of dataset `i` when one shard column holds them in order.
    fn dataset_slice(&self, i: usize, at: u64, len: usize) -> Option<&[u8]> {
        let d = &self.datasets[i];
        if let Some(segs) = &d.arrival {
            return arrival::slice(&self.run, segs, at, len);
        }
        let Source::Gather { group, columns, row_bytes, .. } = &d.layout.source else { return None };
        let rb = *row_bytes as u64;
        let (first, last) = (at / rb, (at + len as u64).div_ceil(rb));
        let mut one = None;
        let mut pieces = 0;
        self.run.groups()[*group].index.for_each_segment(first, last, |loc, _| {
            pieces += 1;
            one = Some(loc);
        });
        let loc = one.filter(|_| pieces == 1)?;
        let col = columns.get(loc.shard).copied().flatten()?;
        let a = usize::try_from(loc.row * rb + at % rb).ok()?;
        self.run.shards().get(loc.shard)?.bytes(col).get(a..a + len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smdfs::demo;

    fn whole(v: &View, path: &str) -> Vec<u8> {
        let a = v.resolve(path).unwrap();
        let mut buf = vec![0u8; a.size as usize];
        assert_eq!(v.read_into(a.ino, 0, &mut buf).unwrap(), buf.len());
        buf
    }

    fn npy_body<'a>(file: &'a [u8], descr: &str, shape: &str) -> &'a [u8] {
        let hl = u16::from_le_bytes([file[8], file[9]]) as usize + 10;
        let h = String::from_utf8_lossy(&file[..hl]);
        assert!(h.contains(descr) && h.contains(shape), "{h}");
        &file[hl..]
    }

    fn demo_view(n: u64, servers: usize, clients: usize) -> (tempfile::TempDir, View) {
        let dir = tempfile::tempdir().unwrap();
        demo::write_demo(dir.path(), n, servers, clients, false).unwrap();
        let v = View::open(dir.path(), &ViewOptions::default()).unwrap();
        (dir, v)
    }

    #[test]
    fn npy_files_hold_the_demo_in_event_id_order() {
        let (_d, v) = demo_view(1234, 3, 4);
        let n = 1234u64;
        let ts = whole(&v, "arrays/timestamp.npy");
        for (i, c) in npy_body(&ts, "<u8", "(1234,)").chunks_exact(8).enumerate() {
            assert_eq!(u64::from_le_bytes(c.try_into().unwrap()), demo::id(i as u64));
        }
        let img = whole(&v, "arrays/det/image.npy");
        let body = npy_body(&img, "<u2", "(1234, 4, 8)");
        for i in 0..n as usize {
            let row: Vec<u16> =
                body[i * 64..(i + 1) * 64].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            assert_eq!(row, demo::image(i as u64));
        }
        let maybe = whole(&v, "arrays/maybe.npy");
        let pres = whole(&v, "arrays/_present/maybe.npy");
        let (mb, pb) = (npy_body(&maybe, "<f4", "(1234,)"), npy_body(&pres, "|b1", "(1234,)"));
        for i in 0..n {
            let x = f32::from_le_bytes(mb[i as usize * 4..i as usize * 4 + 4].try_into().unwrap());
            match demo::maybe(i) {
                Some(m) => assert_eq!((x, pb[i as usize]), (m, 1)),
                None => assert!(x.is_nan() && pb[i as usize] == 0),
            }
        }
        let tag = whole(&v, "arrays/tag.npy");
        let offs = whole(&v, "arrays/tag_offsets.npy");
        let (tb, ob) = (npy_body(&tag, "|u1", ""), npy_body(&offs, "<u8", "(1235,)"));
        let o: Vec<u64> = ob.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        for i in 0..n as usize {
            assert_eq!(&tb[o[i] as usize..o[i + 1] as usize], demo::tag(i as u64).as_bytes());
        }
        let hits_ts = whole(&v, "arrays/unaligned_hits_timestamp.npy");
        let hb = npy_body(&hits_ts, "<u8", "(247,)");
        assert_eq!(u64::from_le_bytes(hb[8..16].try_into().unwrap()), demo::id(5));
        assert!(v.resolve("arrays/summary").is_err());
    }

    #[test]
    fn reads_at_any_offset_and_length_equal_the_whole_file() {
        let (_d, v) = demo_view(777, 2, 3);
        let mut rng = smdfs::read::shuffle::SplitMix::new(11);
        for path in ["run.h5", "arrays/det/image.npy", "arrays/tag.npy", "arrays/tag_offsets.npy", "arrays/count.npy"] {
            let full = whole(&v, path);
            let ino = v.resolve(path).unwrap().ino;
            for _ in 0..300 {
                let off = rng.below(full.len() as u64 + 10);
                let len = rng.below(70_000) as usize;
                let mut buf = vec![0xAAu8; len];
                let got = v.read_into(ino, off, &mut buf).unwrap();
                let want = &full[(off as usize).min(full.len())..(off as usize + len).min(full.len())];
                assert_eq!(&buf[..got], want, "{path} at {off}+{len}");
            }
        }
    }

    #[test]
    fn run_h5_read_back_through_libhdf5_holds_the_demo() {
        let (_d, v) = demo_view(500, 3, 2);
        let out = tempfile::tempdir().unwrap();
        let copy = out.path().join("copy.h5");
        std::fs::write(&copy, whole(&v, "run.h5")).unwrap();
        let f = hdf5::File::open(&copy).unwrap();
        let ts: Vec<u64> = f.dataset("timestamp").unwrap().read_raw().unwrap();
        assert_eq!(ts, (0..500).map(demo::id).collect::<Vec<_>>());
        let e: Vec<f64> = f.dataset("energy").unwrap().read_raw().unwrap();
        assert_eq!(e, (0..500).map(demo::energy).collect::<Vec<_>>());
        let img = f.dataset("det/image").unwrap();
        assert_eq!(img.shape(), vec![500, 4, 8]);
        let iv: Vec<u16> = img.read_raw().unwrap();
        assert_eq!(&iv[32 * 499..], &demo::image(499));
        let c: Vec<i64> = f.dataset("count").unwrap().read_raw().unwrap();
        assert_eq!(c[7], -7);
        let pres: Vec<bool> = f.dataset("_present/maybe").unwrap().read_raw().unwrap();
        assert_eq!(pres.iter().filter(|&&p| p).count(), 250);
        let hits: Vec<u32> = f.dataset("unaligned_hits").unwrap().read_raw().unwrap();
        assert_eq!(hits, (0..500).step_by(5).map(|i| i as u32).collect::<Vec<_>>());
        let n: u64 = f.dataset("summary/n_events").unwrap().read_scalar().unwrap();
        assert_eq!(n, 500);
        let len: Vec<u64> = f.dataset("tag_len").unwrap().read_raw().unwrap();
        assert_eq!(len[123], 6);
    }

    #[test]
    fn units_given_to_the_builder_become_an_hdf5_attribute() {
        let dir = tempfile::tempdir().unwrap();
        let smd = smdfs::SmallData::builder(dir.path()).servers(1).units("energy", "eV").build().unwrap();
        let mut c = smd.client();
        c.event(1, smdfs::fields! { "energy" => 1.5, "n" => 2u8 }).unwrap();
        drop(c);
        smd.done().unwrap();
        let v = View::open(dir.path(), &ViewOptions::default()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let copy = out.path().join("copy.h5");
        std::fs::write(&copy, whole(&v, "run.h5")).unwrap();
        let f = hdf5::File::open(&copy).unwrap();
        let u: hdf5::types::VarLenUnicode = f.dataset("energy").unwrap().attr("units").unwrap().read_scalar().unwrap();
        assert_eq!(u.as_str(), "eV");
        assert!(f.dataset("n").unwrap().attr("units").is_err());
    }

    fn text(v: &View, path: &str) -> String {
        String::from_utf8(whole(v, path)).unwrap()
    }

    #[test]
    fn zarr_chunk_files_are_the_dataset_bytes_padded_to_whole_chunks() {
        let (_d, v) = demo_view(1234, 3, 4);
        let root = text(&v, "run.zarr/zarr.json");
        assert!(root.contains("\"consolidated_metadata\"") && root.contains("\"det/image\""), "{root}");
        // (path, npy dtype, row bytes, shape after the event axis)
        for (path, descr, rb, rest) in
            [("det/image", "<u2", 64u64, ", 4, 8"), ("energy", "<f8", 8, ""), ("_present/maybe", "|b1", 1, "")]
        {
            let meta = text(&v, &format!("run.zarr/{path}/zarr.json"));
            let rows = smdfs::h5::zarr::chunk_rows(1234, rb);
            let chunk_shape: String = format!("{rows}{rest}").split(", ").collect::<Vec<_>>().join(",\n        ");
            assert!(meta.contains(&chunk_shape), "{path}: {meta}");
            assert!(meta.contains("\"name\": \"bytes\"") && meta.contains("\"endian\": \"little\""), "{meta}");
            assert!(!meta.contains("gzip"), "{meta}");
            let npy = whole(&v, &format!("arrays/{path}.npy"));
            let body = npy_body(&npy, descr, "");
            let mut joined = Vec::new();
            for i in 0..1234u64.div_ceil(rows) {
                let key = if rest.is_empty() { format!("c/{i}") } else { format!("c/{i}/0/0") };
                let file = whole(&v, &format!("run.zarr/{path}/{key}"));
                assert_eq!(file.len() as u64, rows * rb, "{path} chunk {i}");
                joined.extend_from_slice(&file);
            }
            assert_eq!(&joined[..body.len()], body, "{path}");
            assert!(joined[body.len()..].iter().all(|&b| b == 0), "{path}: padding");
        }
        let image = text(&v, "run.zarr/det/image/zarr.json");
        assert!(image.contains("\"fill_value\": 65535") && !image.contains("_FillValue"), "{image}");
        let dims = "\"dimension_names\": [\n    \"timestamp\",\n    \"image_dim1\",\n    \"image_dim2\"\n  ]";
        assert!(image.contains(dims), "{image}");
        let maybe = text(&v, "run.zarr/maybe/zarr.json");
        assert!(
            maybe.contains("\"fill_value\": \"NaN\"") && maybe.contains("\"_FillValue\": \"AAAAAAAA+H8=\""),
            "{maybe}"
        );
        assert!(maybe.contains("\"ancillary_variables\": \"/_present/maybe\""), "{maybe}");
        assert!(text(&v, "run.zarr/summary/n_events/zarr.json").contains("\"shape\": []"));
        assert_eq!(whole(&v, "run.zarr/summary/n_events/c"), 1234u64.to_le_bytes());
    }

    #[test]
    fn large_arrays_are_chunked_along_the_event_axis_near_eight_mebibytes() {
        let (_d, v) = demo_view(300_000, 2, 2);
        let names: Vec<String> =
            v.readdir(v.resolve("run.zarr/det/image/c").unwrap().ino).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["0", "1", "2"]); // 131 072 rows of 64 bytes each
        let last = v.resolve("run.zarr/det/image/c/2/0/0").unwrap();
        assert_eq!(last.size, 8 << 20);
        let mut buf = vec![0u8; 64];
        v.read_into(last.ino, (300_000 - 2 * 131_072 - 1) * 64, &mut buf).unwrap();
        let want: Vec<u8> = demo::image(299_999).iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(buf, want);
        assert_eq!(v.resolve("run.zarr/energy/c/0").unwrap().size, 300_000 * 8);
    }

    #[test]
    fn unknown_paths_and_directory_reads_are_errors() {
        let (_d, v) = demo_view(10, 1, 1);
        assert_eq!(v.resolve("nope").unwrap_err().to_errno(), libc::ENOENT);
        assert_eq!(v.read_into(ROOT_INO, 0, &mut [0u8; 4]).unwrap_err().to_errno(), libc::EISDIR);
        assert_eq!(v.readdir(v.resolve("run.h5").unwrap().ino).unwrap_err().to_errno(), libc::ENOTDIR);
        let names: Vec<String> = v.readdir(ROOT_INO).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["arrays", "run.h5", "run.zarr"]);
        let files = v.files();
        assert!(files.iter().any(|(p, s)| p == "arrays/det/image.npy" && *s == 128 + 10 * 64));
        assert!(files.iter().any(|(p, _)| p == "run.h5"));
    }
}
