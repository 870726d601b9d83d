//! Mount points: whether a directory can take a mount (exists, is a directory, is empty,
//! nothing is mounted on it), what `/proc/self/mountinfo` says is mounted where, and clean or
//! lazy unmounting. Paths are made absolute without resolving their last component, because
//! `stat` on a dead FUSE mount (its server gone) fails with ENOTCONN and must still be
//! reported, and unmounted.

use std::ffi::CString;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::ViewError;

/// `path` canonical, or, when its last component cannot be resolved (a dead FUSE mount fails
/// `stat`; a missing directory), its canonical parent joined with that last component.
fn absolute(path: &Path) -> Result<PathBuf, ViewError> {
    if let Ok(p) = path.canonicalize() {
        return Ok(p);
    }
    let io = |source| ViewError::Io { what: format!("resolving {}", path.display()), source };
    let abs = std::path::absolute(path).map_err(io)?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => Ok(parent.canonicalize().map_err(io)?.join(name)),
        _ => Ok(abs),
    }
}

/// The `/proc/self/mountinfo` entry mounted at `path`, if any: (fs type, source).
fn mount_entry(path: &Path) -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().rev().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let point = left.split(' ').nth(4)?;
        let mut r = right.split(' ');
        let (fstype, source) = (r.next()?, r.next()?);
        (unescape(point) == path.as_os_str().as_bytes()).then(|| (fstype.to_string(), unescape_str(source)))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).filter(|o| b[i] == b'\\' && o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(o) => {
                out.push(o.iter().fold(0u8, |v, c| v.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

fn unescape_str(s: &str) -> String {
    String::from_utf8_lossy(&unescape(s)).into_owned()
}

/// Whether `e` says the FUSE server behind a mount is gone (ECONNABORTED on recent kernels).
fn is_dead(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED))
}

/// Checks that `path` can take a mount: an existing, empty directory nothing is mounted on.
/// Returns it absolute.
pub(super) fn check_mountpoint(path: &Path) -> Result<PathBuf, ViewError> {
    let shown = path.display();
    let err = |why: &str| Err(ViewError::MountPoint { path: path.to_path_buf(), why: why.to_string() });
    let abs = absolute(path).or_else(|_| err("does not exist"))?;
    let dead = || err(&format!("is a dead FUSE mount (its server exited); run `smdfs umount {shown}` first"));
    let md = match std::fs::metadata(&abs) {
        Ok(md) => md,
        Err(e) if e.kind() == ErrorKind::NotFound => return err("does not exist"),
        Err(e) if is_dead(&e) => return dead(),
        Err(e) => return err(&format!("cannot be read: {e}")),
    };
    if !md.is_dir() {
        return err("is not a directory");
    }
    let listing = std::fs::read_dir(&abs);
    if let Some((fstype, source)) = mount_entry(&abs) {
        // The kernel may answer `stat` from cached attributes after the server died; opening
        // the directory always asks the server.
        if listing.as_ref().is_err_and(is_dead) {
            return dead();
        }
        return err(&format!("is busy: {source} ({fstype}) is already mounted there"));
    }
    let mut entries = listing
        .map_err(|e| ViewError::MountPoint { path: path.to_path_buf(), why: format!("cannot be listed: {e}") })?;
    if entries.next().is_some() {
        return err("is not empty");
    }
    Ok(abs)
}

/// Unmounts the smdfs (or other FUSE) mount at `mountpoint` cleanly: fails with a clear
/// message when it is not mounted or still in use.
pub fn unmount(mountpoint: &Path) -> Result<(), ViewError> {
    unmount_with(mountpoint, false)
}

/// Detaches the FUSE mount at `mountpoint` now (a lazy unmount): processes using it keep
/// their open files until they close them, and the server exits after that.
pub fn detach(mountpoint: &Path) -> Result<(), ViewError> {
    unmount_with(mountpoint, true)
}

fn unmount_with(mountpoint: &Path, lazy: bool) -> Result<(), ViewError> {
    let abs = absolute(mountpoint)?;
    let shown = mountpoint.display();
    let fail = |why: String| ViewError::Unmount { path: mountpoint.to_path_buf(), why };
    let Some((fstype, _)) = mount_entry(&abs) else {
        return Err(fail("it is not mounted".into()));
    };
    if fstype != "fuse" && !fstype.starts_with("fuse.") {
        return Err(fail(format!("it is a {fstype} mount, not a FUSE mount; not unmounting it")));
    }
    let path = CString::new(abs.as_os_str().as_bytes()).map_err(|_| fail("NUL in path".into()))?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: `path` is a valid NUL-terminated string.
    if unsafe { libc::umount2(path.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        // Not root: the setuid helper may unmount what this user mounted.
        Some(libc::EPERM) => {
            let mut cmd = Command::new("fusermount3");
            cmd.arg("-u").arg("-q");
            if lazy {
                cmd.arg("-z");
            }
            let out = cmd
                .arg("--")
                .arg(&abs)
                .output()
                .map_err(|e| fail(format!("not permitted, and fusermount3 failed to run: {e}")))?;
            if out.status.success() {
                return Ok(());
            }
            let why = String::from_utf8_lossy(&out.stderr);
            Err(fail(why.trim().to_string()))
        }
        Some(libc::EBUSY) => Err(fail(format!(
            "it is busy (a process has a file open or its working directory there; `fuser -vm {shown}` lists them)"
        ))),
        _ => Err(fail(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/tmp/a\040b\134c"), b"/tmp/a b\\c");
        assert_eq!(unescape(r"/plain\x"), b"/plain\\x");
    }

    #[test]
    fn mount_points_that_cannot_take_a_mount_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let msg = |p: &Path| check_mountpoint(p).unwrap_err().to_string();
        assert!(msg(&dir.path().join("missing")).contains("does not exist"));
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(msg(&file).contains("is not a directory"));
        assert!(msg(dir.path()).contains("is not empty"));
        assert!(msg(Path::new("/proc")).contains("is busy"));
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert_eq!(check_mountpoint(&empty).unwrap(), empty.canonicalize().unwrap());
        assert!(unmount(&empty).unwrap_err().to_string().contains("is not mounted"));
        assert!(unmount(Path::new("/proc")).unwrap_err().to_string().contains("not a FUSE mount"));
    }
}
