//! The live view: a run that may still be written, served as a series of immutable [`View`]
//! snapshots behind inode numbers the kernel may cache. [`Live`] owns the current snapshot
//! and the inode table the FUSE adapter answers with; it knows nothing of FUSE.
//!
//! Invariants:
//! - A directory keeps one inode for the life of the mount (the path → inode map only grows),
//!   so the kernel's cached lookups of directories stay valid as fields and files appear.
//! - A file inode is bound to one snapshot: its size and bytes never change. After a swap a
//!   file's next lookup gets a new inode — like a file replaced by `rename` — while a process
//!   that opened or memory-mapped the old one keeps reading the snapshot it opened. The
//!   kernel page cache is per inode and shared by every handle on it, so a per-handle
//!   snapshot alone would let a handle opened on an older snapshot see pages another handle
//!   filled from a newer one (rows move when a lagging shard commits earlier ids); one
//!   snapshot per inode rules that out and lets every file keep `FOPEN_KEEP_CACHE` and long
//!   attribute TTLs. Only names (and directory attributes and listings) change, so only
//!   they need short TTLs while the run is live, plus the invalidations [`Changed`] lists.
//! - A superseded file inode lives until the kernel forgets it (its lookup count reaches 0);
//!   its snapshot is dropped with the last inode and handle that use it. Inode numbers are
//!   never reused.
//!
//! [`Live::refresh`] detects change cheaply — the sizes of the shard logs (every commit and
//! close appends to one), the manifest's identity (replaced at `done()`) and whether a writer
//! holds the run — and only then builds a new [`View`], without holding the table lock, and
//! swaps it in. The new snapshot's run is the current one's `Run::reopen`: index rows the
//! current snapshot already merged are kept, so a refresh merges only new rows (and the old
//! ones they interleave with), not the whole run. [`Live::watch`] refreshes on a background
//! thread until the run is complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use smdfs::sync::lock;
use std::time::{Duration, Instant, SystemTime};

use smdfs::format::manifest::Manifest;
use smdfs::read::watch::RunSignature as Signature;
use smdfs::RunState;

use crate::background::Background;
use crate::error::ViewError;
use crate::stats::Stats;
use crate::view::{Attr, DirEntry, FileKind, Ino, View, ViewOptions, ROOT_INO};

/// A run shown through snapshots that follow its commits, with stable directory inodes and
/// one immutable snapshot per file inode.
pub struct Live {
    /// Where new snapshots come from; `None` for a fixed view.
    source: Option<Source>,
    table: RwLock<Table>,
    /// Directory listings taken at `opendir`, by handle: one directory stream reads one
    /// listing, so entries that appear meanwhile never make its offsets repeat an entry.
    listings: Mutex<HashMap<u64, Arc<[DirEntry]>>>,
    next_handle: AtomicU64,
    /// Request and refresh counters of whatever serves this view.
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.read();
        f.debug_struct("Live").field("view", &t.view).field("generation", &t.generation).finish()
    }
}

struct Source {
    dir: PathBuf,
    opts: ViewOptions,
    /// What the current snapshot was built from; `None` forces a rebuild. Held for a whole
    /// refresh, so refreshes never interleave and snapshots are installed in order.
    seen: Mutex<Option<Signature>>,
}

enum Node {
    /// A directory, resolved by path in the current snapshot.
    Dir { path: String },
    /// A file of one snapshot.
    File {
        view: Arc<View>,
        /// Its inode inside `view`.
        vino: Ino,
        /// The snapshot's mtime, if it overrides the view's.
        mtime: Option<SystemTime>,
        /// Lookups the kernel has not forgotten yet.
        lookups: u64,
    },
}

struct Table {
    view: Arc<View>,
    /// When the run last changed before `view` was built (`None`: the view's own mtime).
    mtime: Option<SystemTime>,
    generation: u64,
    /// Stable directory inodes by path (`""` is the root).
    dirs: HashMap<String, Ino>,
    nodes: HashMap<Ino, Node>,
    /// The current snapshot's file inodes handed out so far, by path.
    files: HashMap<String, Ino>,
    next: Ino,
}

/// `a` as the mount shows it: inode `ino`, and the snapshot's mtime if it has one.
fn stamp(a: Attr, ino: Ino, mtime: Option<SystemTime>) -> Attr {
    Attr { ino, mtime: mtime.unwrap_or(a.mtime), ..a }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

impl Table {
    fn new(view: View, mtime: Option<SystemTime>) -> Table {
        let root = Node::Dir { path: String::new() };
        Table {
            view: Arc::new(view),
            mtime,
            generation: 0,
            dirs: HashMap::from([(String::new(), ROOT_INO)]),
            nodes: HashMap::from([(ROOT_INO, root)]),
            files: HashMap::new(),
            next: ROOT_INO + 1,
        }
    }

    fn dir_path(&self, ino: Ino) -> Result<&str, ViewError> {
        match self.nodes.get(&ino) {
            Some(Node::Dir { path }) => Ok(path),
            Some(Node::File { .. }) => Err(ViewError::NotADirectory(ino)),
            None => Err(ViewError::NotFound(format!("inode {ino}"))),
        }
    }

    fn dir_ino(&mut self, path: &str) -> Ino {
        if let Some(&ino) = self.dirs.get(path) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.dirs.insert(path.to_string(), ino);
        self.nodes.insert(ino, Node::Dir { path: path.to_string() });
        ino
    }

    /// The current snapshot's inode for the file at `path` (view inode `vino`).
    fn file_ino(&mut self, path: &str, vino: Ino) -> Ino {
        if let Some(&ino) = self.files.get(path) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.files.insert(path.to_string(), ino);
        let node = Node::File { view: Arc::clone(&self.view), vino, mtime: self.mtime, lookups: 0 };
        self.nodes.insert(ino, node);
        ino
    }

    /// The mount's entry for view entry `e` of the directory at `dir`.
    fn entry(&mut self, dir: &str, e: DirEntry) -> DirEntry {
        let path = join(dir, &e.name);
        let ino = match e.kind {
            FileKind::Dir => self.dir_ino(&path),
            FileKind::File => self.file_ino(&path, e.ino),
        };
        DirEntry { ino, ..e }
    }
}

/// What a swap changed in the kernel's view of the mount: the caches to invalidate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// `(directory inode, name)` of every file the kernel may have looked up whose name now
    /// leads to a new inode.
    pub entries: Vec<(Ino, String)>,
    /// Every directory: listings, link counts and times may have changed.
    pub dirs: Vec<Ino>,
}

impl Live {
    /// Opens the run in `dir`; until the run is complete, [`Live::refresh`] follows its commits.
    pub fn open(dir: &Path, opts: &ViewOptions) -> Result<Live, ViewError> {
        // The signature is taken before the view is built: a commit that lands meanwhile
        // changes the next signature, so it is never missed.
        let shards = Manifest::load(dir)?.shards;
        let sig = Signature::read(dir, shards);
        let view = View::open(dir, opts)?;
        let mtime = sig.mtime();
        let source = Source { dir: dir.to_path_buf(), opts: opts.clone(), seen: Mutex::new(Some(sig)) };
        Ok(Live::new(Some(source), view, mtime))
    }

    /// A view that never changes (what [`crate::mount::mount`] serves).
    pub fn fixed(view: View) -> Live {
        Live::new(None, view, None)
    }

    fn new(source: Option<Source>, view: View, mtime: Option<SystemTime>) -> Live {
        let table = RwLock::new(Table::new(view, mtime));
        let stats = Arc::new(Stats::default());
        Live { source, table, listings: Mutex::new(HashMap::new()), next_handle: AtomicU64::new(1), stats }
    }

    /// The counters of this view: the mount's requests and the refreshes' cost.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        smdfs::sync::read(&self.table)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        smdfs::sync::write(&self.table)
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<View> {
        Arc::clone(&self.read().view)
    }

    /// How many snapshots replaced the first one.
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// File inodes of superseded snapshots the kernel still holds (open, mapped or cached);
    /// each keeps its snapshot alive.
    pub fn superseded_inodes(&self) -> usize {
        let t = self.read();
        t.nodes.values().filter(|n| matches!(n, Node::File { view, .. } if !Arc::ptr_eq(view, &t.view))).count()
    }

    /// True when nothing can change any more: a fixed view, or a complete run.
    pub fn is_final(&self) -> bool {
        self.source.is_none() || self.read().view.run().state() == RunState::Complete
    }

    /// Looks `name` up in directory `parent`, in the current snapshot. A file's lookup counts
    /// until [`Live::forget`] releases it.
    pub fn lookup(&self, parent: Ino, name: &str) -> Result<Attr, ViewError> {
        let mut t = self.write();
        let dir = t.dir_path(parent)?.to_string();
        let pv = t.view.resolve(&dir)?.ino;
        let a = t.view.lookup(pv, name)?;
        let path = join(&dir, name);
        let ino = match a.kind {
            FileKind::Dir => t.dir_ino(&path),
            FileKind::File => {
                let ino = t.file_ino(&path, a.ino);
                if let Some(Node::File { lookups, .. }) = t.nodes.get_mut(&ino) {
                    *lookups += 1;
                }
                ino
            }
        };
        Ok(stamp(a, ino, t.mtime))
    }

    /// The kernel dropped `n` lookups of `ino`. A superseded file is gone at zero.
    pub fn forget(&self, ino: Ino, n: u64) {
        let mut t = self.write();
        let Table { nodes, view, .. } = &mut *t;
        if let Some(Node::File { lookups, view: of, .. }) = nodes.get_mut(&ino) {
            *lookups = lookups.saturating_sub(n);
            // The current snapshot's files stay, so a finished run keeps one inode per file.
            if *lookups == 0 && !Arc::ptr_eq(of, view) {
                nodes.remove(&ino);
            }
        }
    }

    /// Attributes of `ino`: a directory's from the current snapshot, a file's from its own.
    pub fn attr(&self, ino: Ino) -> Result<Attr, ViewError> {
        let t = self.read();
        match t.nodes.get(&ino) {
            Some(Node::Dir { path }) => Ok(stamp(t.view.resolve(path)?, ino, t.mtime)),
            Some(Node::File { view, vino, mtime, .. }) => Ok(stamp(view.attr(*vino)?, ino, *mtime)),
            None => Err(ViewError::NotFound(format!("inode {ino}"))),
        }
    }

    /// A directory's entries (without `.` and `..`) in the current snapshot, in name order.
    pub fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>, ViewError> {
        let mut t = self.write();
        let dir = t.dir_path(ino)?.to_string();
        let entries = t.view.readdir(t.view.resolve(&dir)?.ino)?;
        Ok(entries.into_iter().map(|e| t.entry(&dir, e)).collect())
    }

    /// Opens directory `ino` for reading: takes its listing now and returns a handle (never 0)
    /// for [`Live::listing`]; [`Live::releasedir`] drops it.
    pub fn opendir(&self, ino: Ino) -> Result<u64, ViewError> {
        let entries: Arc<[DirEntry]> = self.readdir(ino)?.into();
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        lock(&self.listings).insert(fh, entries);
        Ok(fh)
    }

    /// The listing directory handle `fh` took, or a fresh one of `ino` for an unknown handle.
    pub fn listing(&self, ino: Ino, fh: u64) -> Result<Arc<[DirEntry]>, ViewError> {
        let taken = lock(&self.listings).get(&fh).cloned();
        match taken {
            Some(entries) => Ok(entries),
            None => Ok(self.readdir(ino)?.into()),
        }
    }

    /// Drops directory handle `fh`.
    pub fn releasedir(&self, fh: u64) {
        lock(&self.listings).remove(&fh);
    }

    /// Reads file `ino` from the snapshot it belongs to; see [`View::read_into`].
    pub fn read_into(&self, ino: Ino, offset: u64, buf: &mut [u8]) -> Result<usize, ViewError> {
        let (view, vino) = self.file(ino)?;
        view.read_into(vino, offset, buf)
    }

    /// The snapshot file `ino` belongs to, and its inode there.
    pub fn file(&self, ino: Ino) -> Result<(Arc<View>, Ino), ViewError> {
        match self.read().nodes.get(&ino) {
            Some(Node::File { view, vino, .. }) => Ok((Arc::clone(view), *vino)),
            Some(Node::Dir { .. }) => Err(ViewError::IsADirectory(ino)),
            None => Err(ViewError::NotFound(format!("inode {ino}"))),
        }
    }

    /// Builds a new snapshot if the run changed since the current one was built, and swaps
    /// it in. Returns what the kernel must forget, or `None` when nothing changed. On error
    /// the current snapshot stays and the next call tries again.
    pub fn refresh(&self) -> Result<Option<Changed>, ViewError> {
        let Some(src) = &self.source else { return Ok(None) };
        let mut seen = lock(&src.seen);
        let shards = self.current().run().manifest().shards;
        let sig = Signature::read(&src.dir, shards);
        if seen.as_ref() == Some(&sig) {
            return Ok(None);
        }
        *seen = None;
        let t = Instant::now();
        // The new snapshot reuses the current one's index work and continues its log
        // replays where they ended (`Run::reopen`).
        let run = self.current().run().reopen()?;
        let (merged, rows, log_bytes) = (run.merged_rows(), run.len(), run.log_bytes_read());
        let view = View::from_run(run, &src.opts)?;
        self.stats.refreshed(t.elapsed(), log_bytes, merged, rows);
        let mtime = sig.mtime();
        *seen = Some(sig);
        Ok(Some(self.install(view, mtime)))
    }

    fn install(&self, view: View, mtime: Option<SystemTime>) -> Changed {
        let view = Arc::new(view);
        let mut t = self.write();
        let t = &mut *t;
        let mut changed = Changed::default();
        for (path, ino) in t.files.drain() {
            match t.nodes.get(&ino) {
                // Never looked up: the kernel cannot use it, so it goes now.
                Some(Node::File { lookups: 0, .. }) => {
                    t.nodes.remove(&ino);
                }
                Some(_) => {
                    let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
                    if let Some(&parent) = t.dirs.get(dir) {
                        changed.entries.push((parent, name.to_string()));
                    }
                }
                None => {}
            }
        }
        changed.dirs = t.dirs.values().copied().collect();
        changed.dirs.sort_unstable();
        t.view = view;
        t.mtime = mtime;
        t.generation += 1;
        changed
    }

    /// Refreshes every `every` (4× that once the run has crashed, as only a new writer could
    /// change it) on a background thread, calling `on_change` after each swap, until the run
    /// is complete, this `Live` is dropped, or the returned [`Watcher`] is.
    pub fn watch(
        self: &Arc<Self>,
        every: Duration,
        mut on_change: impl FnMut(&Changed) + Send + 'static,
    ) -> std::io::Result<Watcher> {
        let weak: Weak<Live> = Arc::downgrade(self);
        let thread = Background::spawn("smdfs-live", move |stop| loop {
            let wait = {
                let Some(live) = weak.upgrade() else { return };
                if let Ok(Some(changed)) = live.refresh() {
                    on_change(&changed);
                }
                if live.is_final() {
                    return;
                }
                match live.current().run().state() {
                    RunState::Writing => every,
                    _ => every * 4,
                }
            };
            if stop.sleep(wait) {
                return;
            }
        })?;
        Ok(Watcher { thread })
    }
}

/// The background refresher of [`Live::watch`]; dropping it stops and joins the thread.
#[derive(Debug)]
pub struct Watcher {
    thread: Background,
}

impl Watcher {
    /// True once the refresher has ended by itself: the run is complete, or the view is gone.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

#[cfg(test)]
mod tests;
