//! `check_integrity` for runs: what `smdfs verify` reports. Checks every commit's crc32c
//! against the bytes it committed, every committed length against the file sizes, the row
//! counts of every group's columns, the global index against the event-id columns (every
//! shard row exactly once, ids ascending), ragged offsets against the lengths, and the
//! manifest against the shards. It opens the run as every reader does, so whatever `info`,
//! `mount`, `export` or `Run::open` refuses is damage here, and so is what a reader of a
//! complete run works around (a re-indexed group); for a complete run it also checks that
//! replay reaches every close record, that every byte served lies inside checksummed
//! commits, and the manifest's duplicates, missing counts and statistics. Torn log tails
//! are reported but are not damage: a reader never returns them.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Result;
use crate::format::manifest::{Manifest, RunState};
use crate::format::{column_file_name, shard_dir_name, LOG_FILE};
use crate::index::{GroupIndex, Loc};
use crate::read::run::Run;
use crate::shard::reader::replay_log;

/// One problem found in committed data.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Problem {
    /// The file concerned.
    pub file: PathBuf,
    /// Byte offset (0 when the whole file is concerned).
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

/// What verify found in one shard.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ShardReport {
    /// Shard index.
    pub shard: usize,
    /// Committed rows of the run's aligned group.
    pub events: u64,
    /// Commit records.
    pub commits: u64,
    /// Committed bytes whose checksums were verified.
    pub bytes_checked: u64,
    /// Bytes after the last valid log frame (ignored by readers; not damage).
    pub torn_bytes: u64,
    /// Why the log ends early, when it does.
    pub torn_reason: Option<String>,
    /// True if the shard was closed cleanly.
    pub closed: bool,
}

/// The result of verifying a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Run directory.
    pub dir: PathBuf,
    /// Writing, complete or crashed (`None` if the manifest is unreadable).
    pub state: Option<RunState>,
    /// Events of the run group as the reader sees them.
    pub events: u64,
    /// Per shard.
    pub shards: Vec<ShardReport>,
    /// Problems in committed data (empty when sound).
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when the committed data is sound (torn tails allowed).
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }

    /// Total torn bytes over all shards.
    pub fn torn_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.torn_bytes).sum()
    }
}

/// Verifies the run in `dir`. `progress(done, total)` is called as committed bytes are
/// checked. Errors are returned only for problems verify itself cannot work around (the
/// directory is unreadable); damage is reported in [`VerifyReport::problems`].
pub fn verify(dir: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
    let mut rep = VerifyReport { dir: dir.into(), ..Default::default() };
    let manifest = match Manifest::load(dir) {
        Ok(m) => m,
        Err(e) => {
            rep.problems.push(Problem {
                file: dir.join(crate::format::manifest::MANIFEST_FILE),
                offset: 0,
                what: e.to_string(),
            });
            return Ok(rep);
        }
    };
    // Pass 1: every shard's log and the checksums of every committed byte.
    let mut replays = Vec::new();
    for i in 0..manifest.shards {
        let sdir = dir.join(shard_dir_name(i));
        let log_path = sdir.join(LOG_FILE);
        if let Err(e) = crate::format::file::check_dir(&sdir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                rep.problems.push(Problem { file: sdir, offset: 0, what: format!("shard directory {e}") });
                replays.push(None);
                continue;
            }
        }
        let log = match crate::format::file::read_regular(&log_path, u64::MAX) {
            Ok(l) => l,
            // A writer killed before it created this shard's log committed nothing to it;
            // only a complete run must have every log.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && manifest.state != RunState::Complete => {
                replays.push(None);
                continue;
            }
            Err(e) => {
                rep.problems.push(Problem { file: log_path, offset: 0, what: format!("cannot read: {e}") });
                replays.push(None);
                continue;
            }
        };
        match replay_log(&log_path, &log, true) {
            Ok(r) => replays.push(Some((sdir, r))),
            Err(e) => {
                rep.problems.push(Problem { file: log_path, offset: 0, what: e.to_string() });
                replays.push(None);
            }
        }
    }
    let total: u64 = replays.iter().flatten().flat_map(|(_, r)| r.segments.iter().map(|s| s.2 - s.1)).sum();
    let mut done = 0u64;
    for (i, rp) in replays.iter().enumerate() {
        let mut sr = ShardReport { shard: i, ..Default::default() };
        if let Some((sdir, r)) = rp {
            sr.commits = r.commits;
            sr.torn_bytes = r.torn_bytes;
            sr.torn_reason = r.torn_reason.clone();
            sr.closed = r.close.is_some();
            let mut files: Vec<Option<File>> = (0..r.columns.len()).map(|_| None).collect();
            let mut buf = Vec::new();
            for &(col, start, end, crc) in &r.segments {
                let path = sdir.join(column_file_name(col));
                if files[col as usize].is_none() {
                    match crate::format::file::open_regular(&path) {
                        Ok(f) => files[col as usize] = Some(f),
                        Err(e) => {
                            rep.problems.push(Problem { file: path, offset: 0, what: format!("cannot open: {e}") });
                            continue;
                        }
                    }
                }
                let f = files[col as usize].as_ref().expect("opened above");
                buf.resize((end - start) as usize, 0);
                match f.read_exact_at(&mut buf, start) {
                    Ok(()) if crc32c::crc32c(&buf) == crc => sr.bytes_checked += end - start,
                    Ok(()) => rep.problems.push(Problem {
                        file: path,
                        offset: start,
                        what: format!("{} committed bytes fail their checksum", end - start),
                    }),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                        rep.problems.push(Problem {
                            file: path,
                            offset: size,
                            what: format!("the log commits bytes {start}..{end} but the file holds {size}"),
                        })
                    }
                    Err(e) => rep.problems.push(Problem {
                        file: path,
                        offset: start,
                        what: format!("committed bytes {start}..{end} unreadable: {e}"),
                    }),
                }
                done += end - start;
                progress(done, total);
            }
        }
        rep.shards.push(sr);
    }
    // Pass 2: open as a reader does (row counts, schema agreement, index, offsets).
    let run = match Run::open(dir) {
        Ok(r) => r,
        Err(e) => {
            rep.problems.push(Problem {
                file: dir.into(),
                offset: 0,
                what: format!("the reader cannot open the run: {e}"),
            });
            return Ok(rep);
        }
    };
    rep.state = Some(run.state());
    rep.events = run.len();
    let mpath = dir.join(crate::format::manifest::MANIFEST_FILE);
    let complete = run.state() == RunState::Complete;
    if complete {
        // What the reader worked around in a complete run is damage all the same.
        for w in run.warnings() {
            rep.problems.push(Problem { file: mpath.clone(), offset: 0, what: w.clone() });
        }
        check_complete(&run, &replays, &mut rep.problems);
    } else if manifest.index.is_some() || manifest.state == RunState::Crashed {
        rep.problems.push(Problem {
            file: mpath.clone(),
            offset: 0,
            what: format!(
                "state {:?} with {} index: writers store only \"writing\" (no index) and \"complete\" (with one)",
                manifest.state.to_string(),
                if manifest.index.is_some() { "an" } else { "no" }
            ),
        });
    }
    for (sr, s) in rep.shards.iter_mut().zip(run.shards()) {
        sr.events = s.group_rows(crate::model::schema::RUN_GROUP);
    }
    if let Some(ix) = manifest.index.as_ref().filter(|_| run.state() == RunState::Complete) {
        for gi in &ix.groups {
            let path = dir.join(&gi.file);
            let shard_rows: Vec<u64> = run.shards().iter().map(|s| s.group_rows(&gi.group)).collect();
            if shard_rows != gi.shard_rows {
                rep.problems.push(Problem {
                    file: dir.join(crate::format::manifest::MANIFEST_FILE),
                    offset: 0,
                    what: format!(
                        "group {:?}: manifest says shard rows {:?}, shards hold {shard_rows:?}",
                        gi.group, gi.shard_rows
                    ),
                });
            }
            if let Err(what) = crate::index::check_file_chunks(&path, &gi.chunks) {
                rep.problems.push(Problem { file: path.clone(), offset: 0, what });
            }
            match GroupIndex::load(&path) {
                Ok(idx) => check_index(&run, &gi.group, &idx, &path, &mut rep.problems),
                Err(e) => rep.problems.push(Problem { file: path, offset: 0, what: e.to_string() }),
            }
        }
        for r in &ix.ragged {
            if let Err(what) = crate::index::check_file_chunks(&dir.join(&r.file), &r.chunks) {
                rep.problems.push(Problem { file: dir.join(&r.file), offset: 0, what });
            }
            check_offsets(&run, &r.field, &dir.join(&r.file), &mut rep.problems);
        }
    }
    Ok(rep)
}

/// A complete run: replay reaches every shard's close record, every byte the close
/// record commits lies inside checksummed commits, and the manifest's derived values
/// (duplicates, missing counts, statistics) are what the shards hold.
fn check_complete(
    run: &Run,
    replays: &[Option<(PathBuf, crate::shard::reader::LogReplay)>],
    problems: &mut Vec<Problem>,
) {
    let mpath = run.dir().join(crate::format::manifest::MANIFEST_FILE);
    for (s, rp) in run.shards().iter().zip(replays) {
        let Some((sdir, r)) = rp else { continue };
        let log = sdir.join(LOG_FILE);
        // Bytes after the close record are a torn tail like any other (never read); a close
        // record replay cannot reach means frames before it are damaged.
        if r.close.is_none() {
            problems.push(Problem {
                file: log.clone(),
                offset: r.valid_len,
                what: format!(
                    "a complete run's log ends with its close record, replay reaches none ({})",
                    r.torn_reason.as_deref().unwrap_or("the log ends early")
                ),
            });
        }
        // Checksummed extent of each column: commits append contiguously from 0.
        let mut covered = vec![0u64; r.columns.len()];
        for &(c, start, end, _) in &r.segments {
            if let Some(x) = covered.get_mut(c as usize) {
                if start <= *x {
                    *x = (*x).max(end);
                }
            }
        }
        for c in &s.columns {
            let served = s.lens.get(c.id as usize).copied().unwrap_or(0);
            let have = covered.get(c.id as usize).copied().unwrap_or(0);
            if served > have {
                problems.push(Problem {
                    file: sdir.join(column_file_name(c.id)),
                    offset: have,
                    what: format!("bytes {have}..{served} are served but no valid commit checksums them"),
                });
            }
        }
    }
    let Some(ix) = run.manifest().index.as_ref() else { return };
    for (gi, g) in run.groups().iter().enumerate() {
        let Some(e) = ix.groups.iter().find(|e| e.group == g.spec.name) else { continue };
        let (mut dups, mut ids, mut last) = (0u64, Vec::new(), None);
        g.index.for_each_segment(0, g.index.len(), |loc, n| {
            for k in 0..n {
                let id = run.id_at(gi, crate::index::Loc { shard: loc.shard, row: loc.row + k });
                if last == Some(id) {
                    dups += 1;
                    if ids.len() < 16 && ids.last() != Some(&id) {
                        ids.push(id);
                    }
                }
                last = Some(id);
            }
        });
        if dups != e.duplicates || ids != e.duplicate_ids {
            problems.push(Problem {
                file: mpath.clone(),
                offset: 0,
                what: format!(
                    "group {:?}: the manifest says {} duplicates {:?}, the index holds {dups} {ids:?}",
                    e.group, e.duplicates, e.duplicate_ids
                ),
            });
        }
    }
    for f in run.fields().iter().filter(|f| run.groups()[f.group].spec.aligned) {
        let count = crate::index::count_missing(run.shards(), &f.spec.group, &f.spec.path);
        let stored = ix.missing.get(&f.spec.path).copied();
        if stored != Some(count) {
            problems.push(Problem {
                file: mpath.clone(),
                offset: 0,
                what: format!(
                    "field {:?}: the manifest says {stored:?} rows missing, the shards hold {count}",
                    f.spec.path
                ),
            });
        }
    }
    if let Some(k) = ix.missing.keys().find(|k| !run.fields().iter().any(|f| &f.spec.path == *k)) {
        problems.push(Problem {
            file: mpath.clone(),
            offset: 0,
            what: format!("missing count for unknown field {k:?}"),
        });
    }
    let mut merged = crate::model::schema::StatsMap::new();
    for s in run.shards() {
        crate::model::schema::merge_stats(&mut merged, s.stats.clone().unwrap_or_default());
    }
    let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
    let stored = &run.manifest().stats;
    let keys: std::collections::BTreeSet<&String> = merged.keys().chain(stored.keys()).collect();
    for k in keys {
        let ok = match (stored.get(k), merged.get(k)) {
            (Some(a), Some(b)) => {
                a.count == b.count
                    && a.min.total_cmp(&b.min).is_eq()
                    && a.max.total_cmp(&b.max).is_eq()
                    && same(a.sum, b.sum)
            }
            _ => false,
        };
        if !ok {
            problems.push(Problem {
                file: mpath.clone(),
                offset: 0,
                what: format!(
                    "statistics of {k:?}: the manifest says {:?}, the shards' close records {:?}",
                    stored.get(k),
                    merged.get(k)
                ),
            });
        }
    }
}

/// Every shard row appears exactly once (the reader's own check, `check_covers`), and event
/// ids ascend.
fn check_index(run: &Run, group: &str, idx: &GroupIndex, path: &Path, problems: &mut Vec<Problem>) {
    let Some(gi) = run.groups().iter().position(|g| g.spec.name == group) else { return };
    let rows: Vec<u64> = run.shards().iter().map(|s| s.group_rows(group)).collect();
    let at = |row: u64| crate::index::INDEX_HEADER_LEN as u64 + 8 * row;
    if let Err((row, what)) = idx.check_covers(&rows) {
        problems.push(Problem { file: path.into(), offset: at(row), what });
        return;
    }
    let (mut last, mut pos, mut bad) = (0u64, 0u64, None);
    idx.for_each_segment(0, idx.len(), |loc, n| {
        for k in 0..n {
            let id = run.id_at(gi, Loc { shard: loc.shard, row: loc.row + k });
            if bad.is_none() && pos > 0 && id < last {
                bad = Some((pos, format!("event ids descend at row {pos} ({last} then {id})")));
            }
            last = id;
            pos += 1;
        }
    });
    if let Some((row, what)) = bad {
        problems.push(Problem { file: path.into(), offset: at(row), what });
    }
}

/// Stored ragged offsets equal the prefix sums of the rows' lengths.
fn check_offsets(run: &Run, field: &str, path: &Path, problems: &mut Vec<Problem>) {
    let Ok(f) = run.field(field) else { return };
    // The stored file itself (the reader silently recomputes offsets it cannot load).
    let stored = match crate::index::load_offsets(path, f.rows()) {
        Ok(o) => o,
        Err(e) => {
            problems.push(Problem { file: path.into(), offset: 0, what: e.to_string() });
            return;
        }
    };
    let offs = stored.get();
    let mut acc = 0u64;
    for i in 0..f.rows() {
        if offs.get(i as usize) != Some(&acc) {
            problems.push(Problem {
                file: path.into(),
                offset: 8 * i,
                what: format!("offset of row {i} is not {acc}"),
            });
            return;
        }
        let es = f.spec().dtype.size() as u64;
        acc += f.ragged_row(i).map_or(0, |r| r.len() as u64 / es);
    }
}
