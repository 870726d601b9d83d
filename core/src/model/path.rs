//! Field path validation: `/`-separated names that become HDF5 groups and view directories.
//!
//! A path is accepted only if it cannot escape or alias: no empty path, no leading or
//! trailing `/`, no empty, `.` or `..` segment, no NUL or control characters, and no segment
//! that collides with names the view reserves (`_present`, `summary` at top level).

use crate::error::{Error, Result};

/// Maximum length of a field path in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// Checks a field path, returning an error that names it and the rule it breaks.
pub fn validate_path(path: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::BadPath { path: path.escape_debug().to_string(), why: why.to_string() });
    if path.is_empty() {
        return bad("empty path");
    }
    if path.len() > MAX_PATH_LEN {
        return bad("longer than 1024 bytes");
    }
    if path.starts_with('/') {
        return bad("absolute path (starts with '/')");
    }
    for seg in path.split('/') {
        if seg.is_empty() {
            return bad("empty segment ('//' or trailing '/')");
        }
        if seg == "." || seg == ".." {
            return bad("'.' or '..' segment");
        }
        if seg.chars().any(|c| c == '\0' || c.is_control()) {
            return bad("NUL or control character");
        }
    }
    let first = path.split('/').next().unwrap_or_default();
    if matches!(first, "_present" | "summary" | "timestamp") && path != "timestamp" {
        return bad("'_present', 'summary' and 'timestamp' are reserved top-level names");
    }
    if path == "timestamp" {
        return bad("'timestamp' is the reserved event-id column");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_empty_paths_are_rejected() {
        for p in ["", "/abs", "a//b", "a/", "..", "a/../b", "./a", "a\0b", "timestamp", "_present/x", "summary/n"] {
            assert!(validate_path(p).is_err(), "{p:?} accepted");
        }
        for p in ["energy", "det/image", "unaligned_hits", "a.b/c-d_e", "timestamps"] {
            validate_path(p).unwrap();
        }
    }
}
