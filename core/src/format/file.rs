//! Opening a run's files as a reader must: a run is read from what lies inside its
//! directory, so a file is opened without following a symbolic link (`O_NOFOLLOW`) and
//! without blocking (`O_NONBLOCK`, so a FIFO or device never hangs the open), and only a
//! regular file is accepted; whole files are read with a size limit; a name the manifest
//! gives is a plain name inside `index/`, never a path. Errors are I/O errors (kind
//! `InvalidInput` or `InvalidData`) that callers wrap with the path.

use std::fs::File;
use std::io::{Error as IoError, ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The most bytes [`read_regular`] reads of a manifest.
pub const MANIFEST_LIMIT: u64 = 256 << 20;

/// Opens `path` read-only if it is a regular file (not a symbolic link, FIFO, socket or
/// device), without following a link and without blocking.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => IoError::new(
                ErrorKind::InvalidInput,
                "is a symbolic link; a run is read only from files inside its directory",
            ),
            _ => e,
        })?;
    let t = f.metadata()?.file_type();
    if !t.is_file() {
        let what = if t.is_fifo() {
            "a FIFO"
        } else if t.is_dir() {
            "a directory"
        } else if t.is_block_device() || t.is_char_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(IoError::new(ErrorKind::InvalidInput, format!("is {what}, not a regular file")));
    }
    Ok(f)
}

/// Reads a whole regular file of at most `limit` bytes (see [`open_regular`]).
pub fn read_regular(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let f = open_regular(path)?;
    let size = f.metadata()?.len();
    if size > limit {
        return Err(IoError::new(ErrorKind::InvalidData, format!("holds {size} bytes, more than the {limit} allowed")));
    }
    let mut out = Vec::with_capacity(size as usize);
    f.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(IoError::new(ErrorKind::InvalidData, format!("grew past the {limit} bytes allowed while read")));
    }
    Ok(out)
}

/// Checks that `path` is a directory itself, not a symbolic link to one elsewhere.
pub fn check_dir(path: &Path) -> std::io::Result<()> {
    let t = std::fs::symlink_metadata(path)?.file_type();
    if t.is_symlink() {
        return Err(IoError::new(
            ErrorKind::InvalidInput,
            "is a symbolic link; a run is read only from directories inside it",
        ));
    }
    if !t.is_dir() {
        return Err(IoError::new(ErrorKind::InvalidInput, "is not a directory"));
    }
    Ok(())
}

/// Whether `name` (as the manifest gives it) is `<dir>/<plain file name>`: one component
/// inside `dir`, no separator, not `.` or `..`, no NUL.
pub fn is_plain_in(name: &str, dir: &str) -> bool {
    name.strip_prefix(dir)
        .and_then(|r| r.strip_prefix('/'))
        .is_some_and(|f| !f.is_empty() && f != "." && f != ".." && !f.contains('/') && !f.contains('\0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_fifos_and_devices_are_refused_and_regular_files_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"abc").unwrap();
        assert_eq!(read_regular(&file, 3).unwrap(), b"abc");
        assert_eq!(read_regular(&file, u64::MAX).unwrap(), b"abc", "no limit at all");
        assert!(read_regular(&file, 2).unwrap_err().to_string().contains("more than the 2"));
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(open_regular(&link).unwrap_err().to_string().contains("symbolic link"));
        let fifo = dir.path().join("p");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(open_regular(&fifo).unwrap_err().to_string().contains("FIFO"));
        assert!(open_regular(Path::new("/dev/zero")).unwrap_err().to_string().contains("device"));
        assert!(open_regular(dir.path()).is_err());
        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).unwrap();
        check_dir(&sub).unwrap();
        std::os::unix::fs::symlink(&sub, dir.path().join("dl")).unwrap();
        assert!(check_dir(&dir.path().join("dl")).unwrap_err().to_string().contains("symbolic link"));
    }

    #[test]
    fn manifest_names_must_be_plain_names_inside_their_folder() {
        assert!(is_plain_in("index/g00000.idx", "index"));
        for bad in
            ["/etc/passwd", "../../other/index/g00000.idx", "index/../x", "index/a/b", "index/", "index/..", "g0.idx"]
        {
            assert!(!is_plain_in(bad, "index"), "{bad}");
        }
    }
}
