//! Mount ownership: a mount is identified by the kernel's mount id of its root, taken right
//! after mounting (`statx` with `STATX_MNT_ID_UNIQUE`, never reused since Linux 6.8; the
//! plain, reusable `STATX_MNT_ID` on older kernels), and a server unmounts a path only while
//! that id is still what is mounted there. Without it, a server that was stopped (SIGSTOP,
//! a slow exit) while its mount was unmounted and the path mounted again would, when it
//! resumes and ends, unmount the newer mount by path (fuser's own unmount does that).
//! `statx` runs with `AT_STATX_DONT_SYNC`, so asking never waits on a stopped or dead server.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The id of the mount whose root is at `path`, without asking its file system's server.
pub(crate) fn mount_id(path: &Path) -> Option<u64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statx fills the zeroed buffer; `c` is NUL-terminated.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let flags = libc::AT_STATX_DONT_SYNC | libc::AT_SYMLINK_NOFOLLOW;
    let mask = libc::STATX_MNT_ID_UNIQUE | libc::STATX_MNT_ID;
    if unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), flags, mask, &mut st) } != 0 {
        return None;
    }
    (st.stx_mask & (libc::STATX_MNT_ID_UNIQUE | libc::STATX_MNT_ID) != 0).then_some(st.stx_mnt_id)
}

/// Whether the mount at `path` is still the one with id `id`.
pub(crate) fn still_ours(path: &Path, id: Option<u64>) -> bool {
    id.is_some() && mount_id(path) == id
}
