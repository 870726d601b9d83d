//! Mounting: [`mount`] and [`mount_live`] start a read-only FUSE session over a [`Live`]
//! view and return a [`Mounted`] once the mount answers, with large reads set up
//! (`max_read` and the bdi read-ahead at 1 MiB), a refresh thread for a run still being
//! written (each snapshot swap invalidates the names and directories it changed through
//! fuser's notifier) and, if asked, the counters file.
//!
//! The rest is one concept per submodule: `fs` is the thin `fuser::Filesystem` adapter
//! (every op asks the view and replies; caching policy and TTLs), `cache` drops the shard
//! pages a reply was copied from (drop-behind), `dir` lists a directory
//! from an offset, `mounted` owns a running mount and its unmounting, `point` checks mount
//! points and unmounts by path, `owner` tells whether the mount at a path is still ours.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, INodeNo, MountOption, Notifier, SessionACL};

use crate::error::ViewError;
use crate::live::{Changed, Live};
use crate::stats::StatsWriter;
use crate::view::View;

mod cache;
mod dir;
mod fs;
mod mounted;
mod owner;
mod point;
#[cfg(test)]
mod tests;

pub use cache::DropBehind;
use cache::ShardCache;
use fs::Fs;
pub use mounted::{Mounted, Unmounter};
use point::check_mountpoint;
pub use point::{detach, unmount};

/// Largest read request and read-ahead we ask for (DESIGN "Platform facts": 1 MiB requests).
const MAX_READ: u32 = 1 << 20;
/// Read-ahead of the mount (the bdi's `read_ahead_kb`): how far ahead of a sequential
/// reader the kernel asks, in requests of up to [`MAX_READ`] — several requests in flight.
const READ_AHEAD: u32 = 8 << 20;
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
    /// When shard pages copied into a reply are dropped from the page cache (the reply's
    /// bytes stay in the view file's cache): see [`DropBehind`].
    pub drop_behind: DropBehind,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            threads: 2,
            ttl: Duration::from_secs(10),
            refresh: Duration::from_millis(250),
            stats_file: None,
            drop_behind: DropBehind::Auto,
        }
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
    let cache = ShardCache::new(opts.drop_behind);
    let fs = Fs { live: Arc::clone(&live), ttl: opts.ttl, uid, gid, cache };
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
    let stats_writer = match &opts.stats_file {
        Some(path) => {
            let of = Arc::clone(&live);
            let warnings = move || of.current().run().warnings();
            Some(StatsWriter::start(Arc::clone(live.stats()), warnings, path, STATS_EVERY).map_err(|source| {
                ViewError::Io { what: format!("writing the counters to {}", path.display()), source }
            })?)
        }
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
/// more (DESIGN "Platform facts"); a larger read-ahead turns sequential reads into
/// [`MAX_READ`] requests, several in flight.
fn raise_read_ahead(dev: u64) {
    let path = format!("/sys/class/bdi/{}:{}/read_ahead_kb", libc::major(dev), libc::minor(dev));
    let _ = std::fs::write(path, format!("{}", READ_AHEAD / 1024));
}
