//! Stored index and offsets files checked chunk by chunk as they are served (document
//! revision 5). `done()` records the crc32c of every fixed-size chunk of each file in the
//! sealed manifest (`format::manifest::ChunkCrcs`); a reader maps the file and checks a chunk
//! the first time it serves a word of it (and the header's chunk, 0, before any word), so
//! opening a complete run costs O(chunks), not O(rows). Invariant: no word of a chunk that
//! was not checked is ever served. A chunk that fails makes the reader build what the file
//! holds from the shards instead ([`Fallback`]: the group's index rebuilt, or the offsets
//! recomputed — exactly what an intact file holds, so serving switches over transparently),
//! once, with a warning naming the file and the chunk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use memmap2::Mmap;

use crate::format::manifest::ChunkCrcs;

const UNCHECKED: u8 = 0;
const GOOD: u8 = 1;
const BAD: u8 = 2;

/// A mapped file and its chunk checksums, each chunk checked at most once.
pub(crate) struct Checked {
    path: PathBuf,
    map: Mmap,
    chunk: u64,
    crcs: Vec<u32>,
    state: Box<[AtomicU8]>,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked").field("path", &self.path).field("chunks", &self.crcs.len()).finish()
    }
}

impl Checked {
    /// The mapped file `map` of `path` checked against `sums`; `Ok(None)` when the manifest
    /// has no checksums (revision ≤ 4), `Err` when they do not fit the file.
    pub(crate) fn new(path: &Path, map: Mmap, sums: &ChunkCrcs) -> Result<Option<Checked>, String> {
        let Some(fit) = sums.for_len(map.len() as u64) else { return Ok(None) };
        let (chunk, crcs) = fit?;
        let state = crcs.iter().map(|_| AtomicU8::new(UNCHECKED)).collect();
        Ok(Some(Checked { path: path.into(), map, chunk, crcs: crcs.to_vec(), state }))
    }

    /// The whole file (words may be served only after [`Checked::check`] passed for them).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Checks the chunks holding bytes `a..b` (clamped to the file) and chunk 0 (the
    /// header); `Err` names the first chunk that fails.
    pub(crate) fn check(&self, a: u64, b: u64) -> Result<(), String> {
        let len = self.map.len() as u64;
        let (a, b) = (a.min(len), b.min(len));
        let last = (b.max(a + 1) - 1) / self.chunk;
        let mut k = a / self.chunk;
        self.check_chunk(0)?;
        while k <= last && (k as usize) < self.crcs.len() {
            self.check_chunk(k)?;
            k += 1;
        }
        Ok(())
    }

    /// Checks every chunk.
    fn check_all(&self) -> Result<(), String> {
        self.check(0, u64::MAX)
    }

    fn check_chunk(&self, k: u64) -> Result<(), String> {
        let i = k as usize;
        let (a, b) = (k * self.chunk, ((k + 1) * self.chunk).min(self.map.len() as u64));
        let bad = || {
            format!("{}: chunk {k} (bytes {a}..{b}) fails the crc32c the manifest records for it", self.path.display())
        };
        match self.state[i].load(Ordering::Acquire) {
            GOOD => return Ok(()),
            BAD => return Err(bad()),
            _ => {}
        }
        // Two threads may check one chunk at once: both compute the same verdict.
        let good = crc32c::crc32c(&self.map[a as usize..b as usize]) == self.crcs[i];
        self.state[i].store(if good { GOOD } else { BAD }, Ordering::Release);
        if good {
            Ok(())
        } else {
            Err(bad())
        }
    }
}

/// Checks every chunk of the stored file at `path` against `sums` (what `smdfs verify`
/// does): `Ok` when they match or the manifest records none (revision ≤ 4), else what is
/// wrong — a checksum list that does not fit the file, or the first chunk that fails.
pub fn check_file_chunks(path: &Path, sums: &ChunkCrcs) -> Result<(), String> {
    if *sums == ChunkCrcs::default() {
        return Ok(());
    }
    let file = crate::format::file::open_regular(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: index files are written once at done() and never modified.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| format!("{}: {e}", path.display()))?;
    match Checked::new(path, map, sums) {
        Ok(Some(c)) => c.check_all(),
        Ok(None) => Ok(()),
        Err(why) => Err(format!("{}: {why}", path.display())),
    }
}

/// What a reader serves instead of a stored file whose chunk failed: built from the shards
/// on first need, once; the warning is given once, when it is built.
pub(crate) struct Fallback<T> {
    rebuild: Box<dyn Fn() -> T + Send + Sync>,
    warn: Box<dyn Fn(String) + Send + Sync>,
    built: OnceLock<T>,
}

impl<T> std::fmt::Debug for Fallback<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallback").field("built", &self.built.get().is_some()).finish()
    }
}

impl<T> Fallback<T> {
    /// A fallback that builds with `rebuild` and reports `why` the stored file failed to `warn`.
    pub(crate) fn new(
        rebuild: impl Fn() -> T + Send + Sync + 'static,
        warn: impl Fn(String) + Send + Sync + 'static,
    ) -> Fallback<T> {
        Fallback { rebuild: Box::new(rebuild), warn: Box::new(warn), built: OnceLock::new() }
    }

    /// The rebuilt value, if a failure already asked for it.
    pub(crate) fn built(&self) -> Option<&T> {
        self.built.get()
    }

    /// The rebuilt value, building it (and warning with `why`) the first time.
    pub(crate) fn get(&self, why: String) -> &T {
        self.built.get_or_init(|| {
            (self.warn)(why);
            (self.rebuild)()
        })
    }
}

/// A stored file served through its checksums: the file while its chunks check, the
/// fallback from the first failure on.
#[derive(Debug)]
pub(crate) struct Lazy<T> {
    pub(crate) file: Checked,
    pub(crate) fallback: Fallback<T>,
}

impl<T> Lazy<T> {
    /// `None` if bytes `a..b` of the file may be served (their chunks check and nothing
    /// failed before), else the value built from the shards.
    pub(crate) fn instead(&self, a: u64, b: u64) -> Option<&T> {
        if let Some(t) = self.fallback.built() {
            return Some(t);
        }
        self.file.check(a, b).err().map(|why| self.fallback.get(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};

    fn mapped(bytes: &[u8]) -> (tempfile::NamedTempFile, Mmap) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        // SAFETY: a private temporary file nobody else writes.
        let map = unsafe { Mmap::map(f.as_file()) }.unwrap();
        (f, map)
    }

    #[test]
    fn a_flipped_byte_fails_only_its_chunk_and_the_fallback_is_built_once_with_one_warning() {
        let bytes: Vec<u8> = (0..40_000u32).map(|i| (i * 7) as u8).collect();
        let sums = ChunkCrcs::of_bytes(&bytes, 4096);
        let mut bad = bytes.clone();
        bad[20_000] ^= 1; // chunk 4
        let (f, map) = mapped(&bad);
        let file = Checked::new(f.path(), map, &sums).unwrap().unwrap();
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let builds = Arc::new(AtomicUsize::new(0));
        let (w, b) = (warnings.clone(), builds.clone());
        let lazy = Lazy {
            file,
            fallback: Fallback::new(move || b.fetch_add(1, Ordering::SeqCst), move |why| w.lock().unwrap().push(why)),
        };
        assert!(lazy.instead(0, 16_384).is_none(), "chunks 0..4 are intact");
        assert!(lazy.instead(24_576, 40_000).is_none(), "chunks 6.. are intact");
        assert_eq!(lazy.instead(20_000, 20_001), Some(&0));
        assert_eq!(lazy.instead(0, 8), Some(&0), "after a failure everything is served rebuilt");
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        let w = warnings.lock().unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("chunk 4 (bytes 16384..20480)") && w[0].contains(&f.path().display().to_string()));
    }

    #[test]
    fn checksums_that_do_not_fit_the_file_are_refused_and_absent_ones_mean_unchecked() {
        let bytes = vec![5u8; 10_000];
        let (f, map) = mapped(&bytes);
        let mut sums = ChunkCrcs::of_bytes(&bytes, 4096);
        sums.crc32c.as_mut().unwrap().pop();
        assert!(Checked::new(f.path(), map, &sums).unwrap_err().contains("2 chunk checksums"));
        let (f, map) = mapped(&bytes);
        assert!(Checked::new(f.path(), map, &ChunkCrcs::default()).unwrap().is_none());
        let (f, map) = mapped(&bytes);
        let half = ChunkCrcs { chunk_bytes: Some(4096), crc32c: None };
        assert!(Checked::new(f.path(), map, &half).unwrap_err().contains("both"));
        let (f, map) = mapped(&bytes);
        let odd = ChunkCrcs::of_bytes(&bytes, 4100);
        assert!(Checked::new(f.path(), map, &odd).unwrap_err().contains("multiple of 8"));
    }
}
