//! Directory listings by offset: `.`, `..`, then the view's entries, each carrying the
//! offset that resumes after it, written into a [`DirReplier`] until it is full — fuser's
//! reply in the mount, a bounded list in the tests (no kernel needed).

use crate::view::{DirEntry, FileKind, Ino, ROOT_INO};

/// Where `readdir` puts entries: fuser's reply, or a test's bounded list.
pub(super) trait DirReplier {
    /// Adds one entry; `next` is the offset that resumes after it. True when full.
    fn add(&mut self, ino: Ino, next: u64, kind: FileKind, name: &str) -> bool;
}

/// Lists `.`, `..` and `entries` from position `offset` (0 = start) until `r` is full. Entry
/// `k` of that sequence carries offset `k + 1`, which is where the next call resumes.
pub(super) fn fill_dir(dir: Ino, entries: &[DirEntry], offset: u64, r: &mut impl DirReplier) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
