//! The thin `fuser` adapter over a [`Live`] view. Every op has one shape — ask the view,
//! convert its `Attr`/`DirEntry`, reply, or reply `to_errno()` — and every write-ish op
//! replies EROFS. No fuser type reaches the view.
//!
//! Caching: a file inode's bytes never change (see [`crate::live`]), so files open with
//! `FOPEN_KEEP_CACHE` (repeat reads come from the kernel page cache) and their attributes
//! are cached for the full TTL; while the run may still change, names and directories get
//! a TTL of at most [`LIVE_TTL`] and no `FOPEN_CACHE_DIR`. Reads that one piece of the view
//! holds are answered from the map without a copy.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, KernelConfig, LockOwner, OpenAccMode,
    OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request,
};

use super::cache::ShardCache;
use super::dir::{fill_dir, DirReplier};
use super::{BLKSIZE, LIVE_TTL, MAX_READ};
use crate::error::ViewError;
use crate::live::Live;
use crate::stats::Op;
use crate::view::{Attr, FileKind, Ino};

/// The `fuser::Filesystem` over a live view.
pub(super) struct Fs {
    pub(super) live: Arc<Live>,
    pub(super) ttl: Duration,
    pub(super) uid: u32,
    pub(super) gid: u32,
    /// The page cache behind the shards.
    pub(super) cache: ShardCache,
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

impl DirReplier for ReplyDirectory {
    fn add(&mut self, ino: Ino, next: u64, k: FileKind, name: &str) -> bool {
        ReplyDirectory::add(self, INodeNo(ino), next, kind(k), name)
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
        let n = if let Some(bytes) = view.slice(vino, offset, size as usize) {
            self.live.stats().read(bytes.len() as u64);
            let n = bytes.len();
            reply.data(bytes);
            n
        } else {
            READ_BUF.with_borrow_mut(|buf| {
                if buf.len() < size as usize {
                    buf.resize(size as usize, 0);
                }
                match view.read_into(vino, offset, &mut buf[..size as usize]) {
                    Ok(n) => {
                        self.live.stats().read(n as u64);
                        reply.data(&buf[..n]);
                        n
                    }
                    Err(e) => {
                        reply.error(errno(&e));
                        0
                    }
                }
            })
        };
        // The reply's bytes are in the view's page cache now.
        self.cache.after_read(&view, vino, offset, n as u64);
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
