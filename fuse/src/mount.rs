//! The thin `fuser` adapter: mounts a [`Live`] view read-only and answers kernel requests with it.
//!
//! Every op has one shape — ask the view, convert its `Attr`/`DirEntry`, reply, or reply
//! `to_errno()` — and every write-ish op replies EROFS. No fuser type reaches the view. A file
//! inode's bytes never change (see [`crate::live`]), so files open with `FOPEN_KEEP_CACHE`
//! (repeat reads come from the kernel page cache) and their attributes are cached for the
//! full TTL; while the run may still change, names and directories get a TTL of at most
//! [`LIVE_TTL`] and no `FOPEN_CACHE_DIR`, and each snapshot swap invalidates the names and
//! directories it changed through fuser's notifier. [`mount`] returns once the mount answers,
//! with large reads set up (`max_read` and the bdi read-ahead at 1 MiB); the mount point's
//! checks and [`unmount`] live in the `point` submodule.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, KernelConfig, LockOwner,
    MountOption, Notifier, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, SessionACL,
};

use crate::error::ViewError;
use crate::live::{Changed, Live, Watcher};
use crate::stats::{Op, StatsSnapshot, StatsWriter};
use crate::view::{Attr, FileKind, Ino, View, ROOT_INO};

mod owner;
mod point;

use point::check_mountpoint;
pub use point::{detach, unmount};

/// Largest read request and read-ahead we ask for (DESIGN "Platform facts": 1 MiB requests).
const MAX_READ: u32 = 1 << 20;
/// Block size reported by `stat`, so `cp` and friends copy in 1 MiB chunks.
const BLKSIZE: u32 = 1 << 20;
/// Longest TTL of names and directory attributes while the run may still change: the
/// fallback should a snapshot swap's invalidation not reach the kernel.
pub const LIVE_TTL: Duration = Duration::from_secs(1);
/// How often `MountOptions::stats_file` is checked for changed counters.
const STATS_EVERY: Duration = Duration::from_millis(100);

/// How to mount a view.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Let other users read the mount (`allow_other`; needs root or `user_allow_other`).
    pub allow_other: bool,
    /// FUSE worker threads serving requests.
    pub threads: usize,
    /// How long the kernel may cache attributes and names that cannot change (file
    /// attributes always; everything once the run is complete).
    pub ttl: Duration,
    /// How often a run still being written is checked for new commits.
    pub refresh: Duration,
    /// Where to keep the request counters (see [`crate::stats`]); rewritten when they change.
    pub stats_file: Option<PathBuf>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            threads: 2,
            ttl: Duration::from_secs(10),
            refresh: Duration::from_millis(250),
            stats_file: None,
        }
    }
}

/// The `fuser::Filesystem` over a live view.
struct Fs {
    live: Arc<Live>,
    ttl: Duration,
    uid: u32,
    gid: u32,
}

fn errno(e: &ViewError) -> Errno {
    Errno::from_i32(e.to_errno())
}

fn kind(k: FileKind) -> FileType {
    match k {
        FileKind::Dir => FileType::Directory,
        FileKind::File => FileType::RegularFile,
    }
}

impl Fs {
    /// TTL of names and directory attributes: short while they may still change. Taken
    /// before asking the view, so an answer from the last live snapshot never gets the
    /// long TTL of the final one.
    fn changing_ttl(&self) -> Duration {
        if self.live.is_final() {
            self.ttl
        } else {
            self.ttl.min(LIVE_TTL)
        }
    }

    /// TTL of an inode's attributes: a file's never change.
    fn attr_ttl(&self, a: &Attr, changing: Duration) -> Duration {
        match a.kind {
            FileKind::File => self.ttl,
            FileKind::Dir => changing,
        }
    }

    fn count(&self, op: Op) {
        self.live.stats().count(op)
    }

    fn file_attr(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: a.mtime,
            mtime: a.mtime,
            ctime: a.mtime,
            crtime: a.mtime,
            kind: kind(a.kind),
            perm: match a.kind {
                FileKind::Dir => 0o555,
                FileKind::File => 0o444,
            },
            nlink: a.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        }
    }
}

/// Where `readdir` puts entries: fuser's reply, or a test's bounded list.
trait DirReplier {
    /// Adds one entry; `next` is the offset that resumes after it. True when full.
    fn add(&mut self, ino: Ino, next: u64, kind: FileKind, name: &str) -> bool;
}

impl DirReplier for ReplyDirectory {
    fn add(&mut self, ino: Ino, next: u64, k: FileKind, name: &str) -> bool {
        ReplyDirectory::add(self, INodeNo(ino), next, kind(k), name)
    }
}

/// Lists `.`, `..` and `entries` from position `offset` (0 = start) until `r` is full. Entry
/// `k` of that sequence carries offset `k + 1`, which is where the next call resumes.
fn fill_dir(dir: Ino, entries: &[crate::DirEntry], offset: u64, r: &mut impl DirReplier) {
    // The view does not track parents; the kernel ignores `..`'s inode anyway.
    let dots = [(dir, ".".to_string()), (ROOT_INO, "..".to_string())];
    let all = dots
        .iter()
        .map(|(i, n)| (*i, FileKind::Dir, n.as_str()))
        .chain(entries.iter().map(|e| (e.ino, e.kind, e.name.as_str())));
    for (k, (ino, kind, name)) in all.enumerate().skip(offset as usize) {
        if r.add(ino, k as u64 + 1, kind, name) {
            break;
        }
    }
}

thread_local! {
    /// Each FUSE thread's read buffer, reused: first touch of fresh memory is slow here.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Replies EROFS to a write-ish op: the view is read-only.
macro_rules! read_only {
    ($reply:ident) => {
        $reply.error(errno(&ViewError::ReadOnly))
    };
}

impl Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // The kernel caps read-ahead at what it offered (128 KiB here); take the most it allows.
        if let Err(max) = config.set_max_readahead(MAX_READ) {
            let _ = config.set_max_readahead(max);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.count(Op::Lookup);
        let Some(name) = name.to_str() else { return reply.error(Errno::ENOENT) };
        let entry_ttl = self.changing_ttl();
        match self.live.lookup(parent.0, name) {
            Ok(a) => {
                let attr_ttl = self.attr_ttl(&a, entry_ttl);
                reply.entry_with_ttls(&attr_ttl, &entry_ttl, &self.file_attr(&a), fuser::Generation(0))
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.count(Op::Forget);
        self.live.forget(ino.0, nlookup)
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.count(Op::Getattr);
        let changing = self.changing_ttl();
        match self.live.attr(ino.0) {
            Ok(a) => reply.attr(&self.attr_ttl(&a, changing), &self.file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.count(Op::Open);
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return read_only!(reply);
        }
        match self.live.attr(ino.0) {
            Ok(Attr { kind: FileKind::File, .. }) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Ok(_) => reply.error(errno(&ViewError::IsADirectory(ino.0))),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.count(Op::Read);
        let (view, vino) = match self.live.file(ino.0) {
            Ok(f) => f,
            Err(e) => return reply.error(errno(&e)),
        };
        // Zero-copy: a request one piece holds (one stretch of a shard column, the skeleton)
        // is sent straight from the map.
        if let Some(bytes) = view.slice(vino, offset, size as usize) {
            self.live.stats().read(bytes.len() as u64);
            return reply.data(bytes);
        }
        READ_BUF.with_borrow_mut(|buf| {
            if buf.len() < size as usize {
                buf.resize(size as usize, 0);
            }
            match view.read_into(vino, offset, &mut buf[..size as usize]) {
                Ok(n) => {
                    self.live.stats().read(n as u64);
                    reply.data(&buf[..n])
                }
                Err(e) => reply.error(errno(&e)),
            }
        })
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.count(Op::Opendir);
        // A listing may be cached by the kernel only once it cannot change.
        let flags = if self.live.is_final() { FopenFlags::FOPEN_CACHE_DIR } else { FopenFlags::empty() };
        match self.live.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), flags),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        self.count(Op::Readdir);
        match self.live.listing(ino.0, fh.0) {
            Ok(entries) => {
                fill_dir(ino.0, &entries, offset, &mut reply);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.count(Op::Other);
        self.live.releasedir(fh.0);
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.count(Op::Other);
        reply.statfs(0, 0, 0, 0, 0, BLKSIZE, 255, BLKSIZE)
    }

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        read_only!(reply)
    }

    fn mknod(&self, _: &Request, _: INodeNo, _: &OsStr, _: u32, _: u32, _: u32, reply: ReplyEntry) {
        read_only!(reply)
    }

    fn mkdir(&self, _: &Request, _: INodeNo, _: &OsStr, _: u32, _: u32, reply: ReplyEntry) {
        read_only!(reply)
    }

    fn unlink(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        read_only!(reply)
    }

    fn rmdir(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        read_only!(reply)
    }

    fn symlink(&self, _: &Request, _: INodeNo, _: &OsStr, _: &Path, reply: ReplyEntry) {
        read_only!(reply)
    }

    fn rename(
        &self,
        _: &Request,
        _: INodeNo,
        _: &OsStr,
        _: INodeNo,
        _: &OsStr,
        _: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        read_only!(reply)
    }

    fn link(&self, _: &Request, _: INodeNo, _: INodeNo, _: &OsStr, reply: ReplyEntry) {
        read_only!(reply)
    }

    fn write(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: u64,
        _: &[u8],
        _: fuser::WriteFlags,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        read_only!(reply)
    }

    fn create(&self, _: &Request, _: INodeNo, _: &OsStr, _: u32, _: u32, _: i32, reply: ReplyCreate) {
        read_only!(reply)
    }

    fn setxattr(&self, _: &Request, _: INodeNo, _: &OsStr, _: &[u8], _: i32, _: u32, reply: ReplyEmpty) {
        read_only!(reply)
    }

    fn removexattr(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        read_only!(reply)
    }

    fn fallocate(&self, _: &Request, _: INodeNo, _: FileHandle, _: u64, _: u64, _: i32, reply: ReplyEmpty) {
        read_only!(reply)
    }
}

/// A live mount served by background threads. Dropping it unmounts (when nothing uses it),
/// but only while the mount at its path is still this one (see `owner`).
pub struct Mounted {
    /// fuser's session; its own drop unmounts by path, so it is dropped only while the
    /// mount is still ours and otherwise leaked (its `/dev/fuse` descriptor with it).
    session: Option<std::mem::ManuallyDrop<fuser::BackgroundSession>>,
    mountpoint: PathBuf,
    /// The kernel's id of this mount (`owner::mount_id`), taken once it answered.
    id: Option<u64>,
    live: Arc<Live>,
    /// Follows a run still being written; `None` once nothing can change.
    watcher: Option<Watcher>,
    /// Keeps `MountOptions::stats_file` current.
    stats_writer: Option<StatsWriter>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if owner::still_ours(&self.mountpoint, self.id) {
                drop(std::mem::ManuallyDrop::into_inner(s));
            }
        }
    }
}

impl Mounted {
    /// The mount point (absolute).
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The view being served.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// The kernel's id of this mount (a unique mount id on Linux ≥ 6.8), if it could be read.
    pub fn id(&self) -> Option<u64> {
        self.id
    }

    /// The mount's request and refresh counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.live.stats().snapshot()
    }

    /// Blocks until the file system is unmounted (by [`unmount`], `umount` or `fusermount3 -u`).
    /// The session's end never unmounts a newer mount at the same path: fuser's by-path
    /// unmount runs only if the mount there is still this one.
    pub fn join(mut self) -> Result<(), ViewError> {
        let what = format!("serving {}", self.mountpoint.display());
        let s = self.session.take().expect("a Mounted holds its session until join or unmount");
        // SAFETY: the guard is moved out exactly once and `s` (ManuallyDrop) is then either
        // leaked or has its guard forgotten below, so it is never dropped twice.
        let guard = unsafe { std::ptr::read(&s.guard) };
        let served = guard
            .join()
            .map_err(|_| std::io::Error::other("the FUSE session thread panicked"))
            .and_then(|r| r)
            .map_err(|source| ViewError::Io { what, source });
        drop(self.watcher.take());
        drop(self.stats_writer.take());
        // The session thread has ended: the mount is gone, or (the thread failed) dead. Only a
        // dead mount that is still ours is detached; fuser's state is leaked, never dropped
        // (its drop would unmount by path, and the guard was moved out of it).
        if owner::still_ours(&self.mountpoint, self.id) {
            let _ = point::detach(&self.mountpoint);
        }
        served
    }

    /// Unmounts (fails with EBUSY while a process uses the mount) and waits for the threads;
    /// a mount at the path that is no longer this one is left alone.
    pub fn unmount(mut self) -> Result<(), ViewError> {
        let what = format!("unmounting {}", self.mountpoint.display());
        drop(self.watcher.take());
        drop(self.stats_writer.take());
        if !owner::still_ours(&self.mountpoint, self.id) {
            return self.join();
        }
        let s = self.session.take().expect("a Mounted holds its session until join or unmount");
        std::mem::ManuallyDrop::into_inner(s).umount_and_join().map_err(|source| ViewError::Io { what, source })
    }

    /// Unmounts this mount from another thread (a signal handler's), only while the mount at
    /// its path is still this one: a stop signal never takes down a newer mount.
    pub fn unmounter(&self) -> Unmounter {
        Unmounter { mountpoint: self.mountpoint.clone(), id: self.id }
    }
}

/// Unmounts one [`Mounted`] by path, checking first that it is still the one mounted there.
#[derive(Clone, Debug)]
pub struct Unmounter {
    mountpoint: PathBuf,
    id: Option<u64>,
}

impl Unmounter {
    /// Unmounts cleanly, or (busy) lazily; does nothing if the mount there is not ours.
    pub fn unmount(&self) -> Result<(), ViewError> {
        if !owner::still_ours(&self.mountpoint, self.id) {
            return Ok(());
        }
        point::unmount(&self.mountpoint).or_else(|_| point::detach(&self.mountpoint))
    }
}

/// Tells the kernel what a snapshot swap changed. Best effort: names and directories also
/// expire after [`LIVE_TTL`].
fn invalidate(notifier: &Notifier, changed: &Changed) {
    for (parent, name) in &changed.entries {
        let _ = notifier.inval_entry(INodeNo(*parent), OsStr::new(name));
    }
    for &dir in &changed.dirs {
        let _ = notifier.inval_inode(INodeNo(dir), 0, 0);
    }
}

/// Mounts `view` at `mountpoint` and returns once the mount answers requests. The view is
/// served as it is; [`mount_live`] follows a run still being written.
pub fn mount(view: View, mountpoint: &Path, opts: &MountOptions) -> Result<Mounted, ViewError> {
    mount_live(Live::fixed(view), mountpoint, opts)
}

/// Mounts `live` at `mountpoint` and returns once the mount answers requests. Until its run
/// is complete, a background thread refreshes it every `opts.refresh`.
pub fn mount_live(live: Live, mountpoint: &Path, opts: &MountOptions) -> Result<Mounted, ViewError> {
    let mountpoint = check_mountpoint(mountpoint)?;
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let live = Arc::new(live);
    let fs = Fs { live: Arc::clone(&live), ttl: opts.ttl, uid, gid };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("smdfs".into()),
        MountOption::CUSTOM("subtype=smdfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        MountOption::CUSTOM(format!("max_read={MAX_READ}")),
    ];
    config.acl = if opts.allow_other { SessionACL::All } else { SessionACL::Owner };
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let failed = |source: std::io::Error| ViewError::Mount { path: mountpoint.clone(), source };
    let session = fuser::Session::new(fs, &mountpoint, &config).map_err(failed)?.spawn().map_err(failed)?;
    let watcher = if live.is_final() {
        None
    } else {
        let notifier = session.notifier();
        let what = "starting the refresh thread".to_string();
        let w = live.watch(opts.refresh, move |changed| invalidate(&notifier, changed));
        Some(w.map_err(|source| ViewError::Io { what, source })?)
    };
    let stats_writer =
        match &opts.stats_file {
            Some(path) => Some(StatsWriter::start(Arc::clone(live.stats()), path, STATS_EVERY).map_err(|source| {
                ViewError::Io { what: format!("writing the counters to {}", path.display()), source }
            })?),
            None => None,
        };
    let mut mounted = Mounted {
        session: Some(std::mem::ManuallyDrop::new(session)),
        mountpoint,
        id: None,
        live,
        watcher,
        stats_writer,
    };
    // Mounted synchronously by `Session::new`: the id is read without asking the server.
    mounted.id = owner::mount_id(&mounted.mountpoint);
    // The stat goes through the running session: once it answers, the mount is visible.
    let md = std::fs::metadata(&mounted.mountpoint)
        .map_err(|source| ViewError::Io { what: format!("stat {}", mounted.mountpoint.display()), source })?;
    raise_read_ahead(md.dev());
    Ok(mounted)
}

/// Mounts `view` at `mountpoint` and serves it until it is unmounted.
pub fn mount_foreground(view: View, mountpoint: &Path, opts: &MountOptions) -> Result<(), ViewError> {
    mount(view, mountpoint, opts)?.join()
}

/// Best effort: the kernel's FUSE read-ahead is capped at 128 KiB unless the mount's bdi says
/// more (DESIGN "Platform facts"); 1 MiB read-ahead turns sequential reads into 1 MiB requests.
fn raise_read_ahead(dev: u64) {
    let path = format!("/sys/class/bdi/{}:{}/read_ahead_kb", libc::major(dev), libc::minor(dev));
    let _ = std::fs::write(path, format!("{}", MAX_READ / 1024));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DirEntry;

    /// Takes at most `room` entries per call, like a kernel buffer that fills up.
    struct Bounded {
        room: usize,
        got: Vec<(u64, String)>,
    }

    impl DirReplier for Bounded {
        fn add(&mut self, _ino: Ino, next: u64, _kind: FileKind, name: &str) -> bool {
            if self.got.len() == self.room {
                return true;
            }
            self.got.push((next, name.to_string()));
            false
        }
    }

    #[test]
    fn readdir_resumes_at_the_offset_of_the_last_entry_it_returned() {
        let entries: Vec<DirEntry> =
            (0..7).map(|i| DirEntry { ino: 10 + i, kind: FileKind::File, name: format!("f{i}") }).collect();
        for room in 1..=10 {
            let (mut offset, mut names) = (0, Vec::new());
            loop {
                let mut r = Bounded { room, got: Vec::new() };
                fill_dir(5, &entries, offset, &mut r);
                let Some(&(last, _)) = r.got.last() else { break };
                offset = last;
                names.extend(r.got.into_iter().map(|(_, n)| n));
            }
            let want: Vec<String> =
                [".", ".."].iter().map(|s| s.to_string()).chain(entries.iter().map(|e| e.name.clone())).collect();
            assert_eq!(names, want, "room {room}");
        }
    }
}
