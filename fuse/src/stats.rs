//! The daemon's own request counters: how many requests of each kind the kernel sent, how
//! many bytes the daemon served, and what live refreshes cost (how many, how long, how many
//! shard log bytes each read, how many index rows each merged). Counters are relaxed atomics bumped on the request
//! path — no lock, no allocation — and read as a consistent-enough [`StatsSnapshot`].
//!
//! Benchmarks divide [`StatsSnapshot::requests`] by the mebibytes a reader read to get
//! requests per MiB (0 when the kernel's page cache answered everything); `smdfs mount
//! --stats FILE` has a background thread write [`StatsSnapshot::render`] to FILE (replaced
//! atomically) whenever a counter changed, so tests read the counters of a daemon.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::background::Background;

/// Kinds of request the daemon counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `LOOKUP`.
    Lookup,
    /// `GETATTR`.
    Getattr,
    /// `OPEN`.
    Open,
    /// `READ`.
    Read,
    /// `OPENDIR`.
    Opendir,
    /// `READDIR`.
    Readdir,
    /// `FORGET` / `BATCH_FORGET` entries.
    Forget,
    /// Everything else counted (statfs, releasedir).
    Other,
}

impl Op {
    /// Every op, in the order they are printed.
    pub const ALL: [Op; 8] =
        [Op::Lookup, Op::Getattr, Op::Open, Op::Read, Op::Opendir, Op::Readdir, Op::Forget, Op::Other];

    /// The name printed for this op.
    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Getattr => "getattr",
            Op::Open => "open",
            Op::Read => "read",
            Op::Opendir => "opendir",
            Op::Readdir => "readdir",
            Op::Forget => "forget",
            Op::Other => "other",
        }
    }
}

/// Live counters of one mount.
#[derive(Debug, Default)]
pub struct Stats {
    ops: [AtomicU64; Op::ALL.len()],
    read_bytes: AtomicU64,
    refreshes: AtomicU64,
    refresh_nanos: AtomicU64,
    refresh_log_bytes: AtomicU64,
    last_refresh_log_bytes: AtomicU64,
    refresh_rows_merged: AtomicU64,
    last_refresh_rows_merged: AtomicU64,
    last_refresh_rows: AtomicU64,
}

impl Stats {
    /// Counts one request of kind `op`.
    pub fn count(&self, op: Op) {
        self.ops[op as usize].fetch_add(1, Relaxed);
    }

    /// Counts bytes a read request returned.
    pub fn read(&self, bytes: u64) {
        self.read_bytes.fetch_add(bytes, Relaxed);
    }

    /// Counts one refresh that built a new snapshot: how long it took, how many shard log
    /// bytes it read, how many index rows it merged and how many rows the snapshot has.
    pub fn refreshed(&self, took: Duration, log_bytes: u64, merged: u64, rows: u64) {
        self.refresh_rows_merged.fetch_add(merged, Relaxed);
        self.last_refresh_rows_merged.store(merged, Relaxed);
        self.last_refresh_rows.store(rows, Relaxed);
        self.refreshes.fetch_add(1, Relaxed);
        self.refresh_nanos.fetch_add(took.as_nanos() as u64, Relaxed);
        self.refresh_log_bytes.fetch_add(log_bytes, Relaxed);
        self.last_refresh_log_bytes.store(log_bytes, Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            ops: Op::ALL.map(|op| (op, self.ops[op as usize].load(Relaxed))),
            read_bytes: self.read_bytes.load(Relaxed),
            refreshes: self.refreshes.load(Relaxed),
            refresh_nanos: self.refresh_nanos.load(Relaxed),
            refresh_log_bytes: self.refresh_log_bytes.load(Relaxed),
            last_refresh_log_bytes: self.last_refresh_log_bytes.load(Relaxed),
            refresh_rows_merged: self.refresh_rows_merged.load(Relaxed),
            last_refresh_rows_merged: self.last_refresh_rows_merged.load(Relaxed),
            last_refresh_rows: self.last_refresh_rows.load(Relaxed),
        }
    }
}

/// The counters of a mount at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Requests by kind.
    pub ops: [(Op, u64); Op::ALL.len()],
    /// Bytes the daemon returned to read requests.
    pub read_bytes: u64,
    /// Refreshes that built a new snapshot.
    pub refreshes: u64,
    /// Time spent in those refreshes, in nanoseconds.
    pub refresh_nanos: u64,
    /// Shard log bytes those refreshes read.
    pub refresh_log_bytes: u64,
    /// Shard log bytes the last refresh read.
    pub last_refresh_log_bytes: u64,
    /// Index rows those refreshes merged (a refresh that reuses the previous snapshot's
    /// index merges only new rows and the old rows they interleave with).
    pub refresh_rows_merged: u64,
    /// Index rows the last refresh merged.
    pub last_refresh_rows_merged: u64,
    /// Rows (of the run's main group) of the last refresh's snapshot.
    pub last_refresh_rows: u64,
}

impl StatsSnapshot {
    /// Requests of kind `op`.
    pub fn get(&self, op: Op) -> u64 {
        self.ops[op as usize].1
    }

    /// Every request counted.
    pub fn requests(&self) -> u64 {
        self.ops.iter().map(|(_, n)| n).sum()
    }

    /// The counters since `earlier` (the same mount's snapshot taken before).
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        StatsSnapshot {
            ops: Op::ALL.map(|op| (op, d(self.get(op), earlier.get(op)))),
            read_bytes: d(self.read_bytes, earlier.read_bytes),
            refreshes: d(self.refreshes, earlier.refreshes),
            refresh_nanos: d(self.refresh_nanos, earlier.refresh_nanos),
            refresh_log_bytes: d(self.refresh_log_bytes, earlier.refresh_log_bytes),
            last_refresh_log_bytes: self.last_refresh_log_bytes,
            refresh_rows_merged: d(self.refresh_rows_merged, earlier.refresh_rows_merged),
            last_refresh_rows_merged: self.last_refresh_rows_merged,
            last_refresh_rows: self.last_refresh_rows,
        }
    }

    /// `name value` lines, one counter a line (`op.read 12`, `read_bytes 12582912`, ...).
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (op, n) in &self.ops {
            s.push_str(&format!("op.{} {n}\n", op.name()));
        }
        for (k, v) in [
            ("requests", self.requests()),
            ("read_bytes", self.read_bytes),
            ("refreshes", self.refreshes),
            ("refresh_nanos", self.refresh_nanos),
            ("refresh_log_bytes", self.refresh_log_bytes),
            ("last_refresh_log_bytes", self.last_refresh_log_bytes),
            ("refresh_rows_merged", self.refresh_rows_merged),
            ("last_refresh_rows_merged", self.last_refresh_rows_merged),
            ("last_refresh_rows", self.last_refresh_rows),
        ] {
            s.push_str(&format!("{k} {v}\n"));
        }
        s
    }

    /// Parses what [`StatsSnapshot::render`] wrote into `(name, value)` pairs.
    pub fn parse(text: &str) -> Vec<(String, u64)> {
        text.lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect()
    }
}

/// Writes a mount's counters to a file whenever they change (checked every `every`), and
/// once more when dropped; after them, one `warning TEXT` line per warning of the run the
/// mount serves — among them damage found only when a read first touched it (a stored
/// index chunk failing its checksum), which a detached daemon has no terminal to print on.
#[derive(Debug)]
pub struct StatsWriter {
    _thread: Background,
}

/// Replaces `path` with `text` atomically (a reader never sees half a file).
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The stats file: the counters, then a `warning TEXT` line per warning (on one line each).
fn render_file(counters: &StatsSnapshot, warnings: &[String]) -> String {
    let mut s = counters.render();
    for w in warnings {
        s.push_str("warning ");
        s.push_str(&w.replace('\n', " "));
        s.push('\n');
    }
    s
}

impl StatsWriter {
    /// Starts writing `stats` and what `warnings` returns to `path` (written once right away,
    /// so a bad path fails here).
    pub fn start(
        stats: Arc<Stats>,
        warnings: impl Fn() -> Vec<String> + Send + 'static,
        path: &Path,
        every: Duration,
    ) -> std::io::Result<StatsWriter> {
        let path = path.to_path_buf();
        let mut last = (stats.snapshot(), warnings());
        write_atomic(&path, &render_file(&last.0, &last.1))?;
        let thread = Background::spawn("smdfs-stats", move |stop| loop {
            let stopped = stop.sleep(every);
            let now = (stats.snapshot(), warnings());
            if now != last || stopped {
                // Best effort: the counters are diagnostics, never a reason to stop serving.
                let _ = write_atomic(&path, &render_file(&now.0, &now.1));
                last = now;
            }
            if stopped {
                return;
            }
        })?;
        Ok(StatsWriter { _thread: thread })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_counters_parse_back_and_differences_subtract() {
        let s = Stats::default();
        let before = s.snapshot();
        s.count(Op::Read);
        s.count(Op::Read);
        s.count(Op::Getattr);
        s.read(4096);
        s.refreshed(Duration::from_millis(3), 100, 7, 70);
        let d = s.snapshot().since(&before);
        assert_eq!((d.get(Op::Read), d.requests(), d.read_bytes, d.refresh_log_bytes), (2, 3, 4096, 100));
        let parsed = StatsSnapshot::parse(&d.render());
        assert!(parsed.contains(&("op.read".to_string(), 2)));
        assert!(parsed.contains(&("requests".to_string(), 3)));
        assert!(parsed.contains(&("last_refresh_log_bytes".to_string(), 100)));
    }

    #[test]
    fn the_writer_rewrites_the_file_when_counters_or_warnings_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats");
        let s = Arc::new(Stats::default());
        let warnings = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let w = {
            let warnings = Arc::clone(&warnings);
            let every = Duration::from_millis(10);
            StatsWriter::start(Arc::clone(&s), move || warnings.lock().unwrap().clone(), &path, every).unwrap()
        };
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("op.read 0") && !text.contains("warning"), "{text}");
        // A warning alone (no counter moved) is written within a few periods.
        warnings.lock().unwrap().push("index/g00000.idx: chunk 1\nfails its crc32c".into());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&path).unwrap().contains("warning") {
            assert!(std::time::Instant::now() < deadline, "the warning never reached the file");
            std::thread::sleep(Duration::from_millis(5));
        }
        s.count(Op::Read);
        drop(w);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("op.read 1"), "{text}");
        assert!(text.lines().any(|l| l == "warning index/g00000.idx: chunk 1 fails its crc32c"), "{text}");
        // Warning lines are not counters.
        assert!(StatsSnapshot::parse(&text).iter().all(|(k, _)| k != "warning"));
    }
}
