//! Reading one shard: what its commit log commits, and memory maps of its columns cut at the
//! committed lengths. Nothing past a committed length is ever exposed.
//!
//! A complete run names each shard's close record, so loading reads one frame; otherwise the
//! log is replayed from the start and stops at the first torn or corrupt frame — or, given an
//! earlier load of the shard ([`Shard::load_after`]), continued from where that replay ended.
//!
//! A reader that streams through a column may drop what it has read from the page cache:
//! [`Shard::release`] drops the clean pages of a committed range that only this process
//! maps (a server that copied them elsewhere — the mount's own page cache — need not keep
//! them twice). It never changes a byte the map shows: a released page is read again on its
//! next touch.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapOptions};

use crate::error::{Error, IoContext, Result};
use crate::format::file::{check_dir, open_regular};
use crate::format::{
    check_log_header, column_file_name, decode_commit, CloseRecord, ColumnDef, FrameIter, Role, SchemaRecord,
    FRAME_OVERHEAD, LOG_FILE, LOG_HEADER_LEN, MAX_FRAME_PAYLOAD, REC_CLOSE, REC_COMMIT, REC_SCHEMA,
};
use crate::model::schema::{FieldSpec, GroupSpec, StatsMap};
use crate::model::value::Kind;

/// What replaying a shard's log found.
#[derive(Clone, Debug, Default)]
pub struct LogReplay {
    /// Column definitions, by id.
    pub columns: Vec<ColumnDef>,
    /// Committed length of each column, by id.
    pub lens: Vec<u64>,
    /// Whether any commit has named each column (a column defined by a schema record whose
    /// batch never committed does not exist yet).
    pub committed: Vec<bool>,
    /// Groups the shard defines.
    pub groups: Vec<GroupSpec>,
    /// Fields the shard defines.
    pub fields: Vec<FieldSpec>,
    /// Number of commit records.
    pub commits: u64,
    /// Bytes of the log that are valid frames (header included).
    pub valid_len: u64,
    /// Bytes after the last valid frame (a torn tail, ignored).
    pub torn_bytes: u64,
    /// Why the log ended early, if it did with bytes left.
    pub torn_reason: Option<String>,
    /// The close record, if the shard was closed cleanly.
    pub close: Option<CloseRecord>,
    /// Per commit: (column, start, end, crc) of the bytes it appended; kept for `verify`.
    pub segments: Vec<(u32, u64, u64, u32)>,
}

/// Replays a log image. `keep_segments` records every commit's byte ranges (for verify).
pub fn replay_log(path: &Path, log: &[u8], keep_segments: bool) -> Result<LogReplay> {
    check_log_header(log).map_err(|why| Error::Corrupt { path: path.into(), offset: 0, why })?;
    Ok(replay_frames(LogReplay::default(), log, 0, keep_segments))
}

/// Continues the replay `r` over `buf`: a log header followed by log bytes that start at
/// byte `shift + LOG_HEADER_LEN` of the log (`shift` 0: the whole log). The replay is a fold
/// over frames that stops at the first bad one, so continuing from the end of the last valid
/// frame of an append-only log gives what replaying the whole log gives.
fn replay_frames(mut r: LogReplay, buf: &[u8], shift: u64, keep_segments: bool) -> LogReplay {
    r.torn_bytes = 0;
    r.torn_reason = None;
    let mut frames = FrameIter::new(buf);
    let mut stop: Option<String> = None;
    for frame in frames.by_ref() {
        let (kind, body) = (frame.payload[0], &frame.payload[1..]);
        let ok = match kind {
            REC_SCHEMA => match serde_json::from_slice::<SchemaRecord>(body) {
                Ok(rec) => {
                    // All or nothing: a record whose column ids do not continue the log's
                    // ends the log without being applied.
                    let good = rec.columns.iter().enumerate().all(|(k, c)| c.id as usize == r.columns.len() + k);
                    if good {
                        r.lens.extend(std::iter::repeat_n(0, rec.columns.len()));
                        r.committed.extend(std::iter::repeat_n(false, rec.columns.len()));
                        r.columns.extend(rec.columns);
                        r.groups.extend(rec.groups);
                        r.fields.extend(rec.fields);
                    }
                    good
                }
                Err(_) => false,
            },
            REC_COMMIT => match decode_commit(body) {
                Some(entries) => {
                    let valid = entries
                        .iter()
                        .all(|e| (e.column as usize) < r.lens.len() && e.len >= r.lens[e.column as usize]);
                    if valid {
                        for e in entries {
                            let start = r.lens[e.column as usize];
                            if keep_segments {
                                r.segments.push((e.column, start, e.len, e.crc));
                            }
                            r.lens[e.column as usize] = e.len;
                            r.committed[e.column as usize] = true;
                        }
                        r.commits += 1;
                    }
                    valid
                }
                None => false,
            },
            REC_CLOSE => match serde_json::from_slice::<CloseRecord>(body) {
                Ok(c) => {
                    r.close = Some(c);
                    true
                }
                Err(_) => false,
            },
            _ => false,
        };
        if !ok {
            let at = shift + frame.offset;
            stop = Some(format!("undecodable record (type {kind}) at byte {at}"));
            r.valid_len = at;
            break;
        }
    }
    if stop.is_none() {
        r.valid_len = shift + frames.valid_end();
    }
    r.torn_bytes = shift + buf.len() as u64 - r.valid_len;
    if r.torn_bytes > 0 {
        r.torn_reason = Some(stop.unwrap_or_else(|| format!("torn or corrupt frame at byte {}", r.valid_len)));
    }
    r
}

/// Where a replay of a shard's log ended: the log file (device, inode) and the replay's state
/// at its last valid frame, from which the next load of the shard continues.
#[derive(Clone, Debug)]
struct ReplayPoint {
    log: LogId,
    state: LogReplay,
}

/// Reads the log at `path` from where `prev` ended and continues its replay: `None` when the
/// log is another file now, or shorter, or its header is not a log's (a full replay then
/// decides). Returns the replay, the log bytes read and the new point.
fn replay_after(path: &Path, prev: &ReplayPoint) -> Option<(LogReplay, u64, ReplayPoint)> {
    use std::os::unix::fs::MetadataExt;
    let f = open_regular(path).ok()?;
    let md = f.metadata().ok()?;
    let from = prev.state.valid_len;
    if (md.dev(), md.ino()) != prev.log || md.len() < from || from < LOG_HEADER_LEN as u64 {
        return None;
    }
    let mut buf = vec![0u8; LOG_HEADER_LEN + usize::try_from(md.len() - from).ok()?];
    f.read_exact_at(&mut buf[..LOG_HEADER_LEN], 0).ok()?;
    f.read_exact_at(&mut buf[LOG_HEADER_LEN..], from).ok()?;
    check_log_header(&buf).ok()?;
    let r = replay_frames(prev.state.clone(), &buf, from - LOG_HEADER_LEN as u64, false);
    let point = ReplayPoint { log: prev.log, state: r.clone() };
    Some((r, (buf.len() - LOG_HEADER_LEN) as u64, point))
}

/// Reads only the close record at `offset` (complete runs): O(1) in the run's size.
fn read_close(path: &Path, offset: u64) -> Result<Option<CloseRecord>> {
    let f = match open_regular(path) {
        // No log: replay finds none either, and says so.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        r => r.at(path)?,
    };
    let mut header = [0u8; LOG_HEADER_LEN];
    match f.read_exact_at(&mut header, 0) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            return Err(Error::Corrupt {
                path: path.into(),
                offset: size,
                why: format!("the log holds {size} bytes, less than its {LOG_HEADER_LEN}-byte header"),
            });
        }
        r => r.at(path)?,
    }
    check_log_header(&header).map_err(|why| Error::Corrupt { path: path.into(), offset: 0, why })?;
    let mut head = [0u8; 8];
    if f.read_exact_at(&mut head, offset).is_err() {
        return Ok(None);
    }
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    if len > MAX_FRAME_PAYLOAD {
        return Ok(None);
    }
    let mut frame = vec![0u8; len as usize + FRAME_OVERHEAD];
    if f.read_exact_at(&mut frame, offset).is_err() {
        return Ok(None);
    }
    let mut image = header.to_vec();
    image.extend_from_slice(&frame);
    let Some(fr) = FrameIter::new(&image).next() else { return Ok(None) };
    if fr.payload[0] != REC_CLOSE {
        return Ok(None);
    }
    Ok(serde_json::from_slice(&fr.payload[1..]).ok())
}

/// The largest page-cache folio a column file's pages are held in (a huge page on x86-64):
/// [`Shard::release`] of ranges aligned to it drops every page inside them.
pub const RELEASE_BLOCK: u64 = 2 << 20;

/// The page size (4 KiB where it cannot be read).
fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// A log file's identity: (device, inode).
type LogId = (u64, u64);

/// The whole log at `path` and its file's identity; `None` when there is no log.
fn read_log(path: &Path) -> Result<Option<(Vec<u8>, LogId)>> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut f = match open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let md = f.metadata().at(path)?;
    let mut log = Vec::with_capacity(md.len() as usize);
    f.read_to_end(&mut log).at(path)?;
    Ok(Some((log, (md.dev(), md.ino()))))
}

/// A loaded shard: committed column lengths and read-only maps of the committed bytes.
#[derive(Debug)]
pub struct Shard {
    /// Shard index.
    pub index: usize,
    /// Shard directory.
    pub dir: PathBuf,
    /// Columns by id.
    pub columns: Vec<ColumnDef>,
    /// Committed lengths by column id.
    pub lens: Vec<u64>,
    /// Groups the shard defines.
    pub groups: Vec<GroupSpec>,
    /// Fields the shard defines.
    pub fields: Vec<FieldSpec>,
    /// Statistics from the close record (closed shards).
    pub stats: Option<StatsMap>,
    /// Torn bytes at the log's end (0 when loaded from a close record).
    pub torn_bytes: u64,
    /// Whether the shard has a log at all (a server that never started has none).
    pub has_log: bool,
    /// Whether a close record was found (at the given offset, or by replay).
    pub closed: bool,
    /// Whether the close record was read at the offset the manifest gives.
    pub close_at_offset: bool,
    /// Bytes of the commit log this load read: the whole log when replayed from its start,
    /// only what was appended since when continued from an earlier load ([`Shard::load_after`]).
    pub log_bytes_read: u64,
    maps: Vec<Option<Mmap>>,
    /// Where the replay ended (shards loaded by replaying their log).
    replayed: Option<ReplayPoint>,
}

impl Shard {
    /// Loads shard `index` of the run in `run_dir`; `close_offset` (complete runs) lets it
    /// read the close record instead of replaying the log.
    pub fn load(run_dir: &Path, index: usize, close_offset: Option<u64>) -> Result<Shard> {
        Shard::load_after(run_dir, index, close_offset, None)
    }

    /// As [`Shard::load`], but a log `prev` (an earlier load of the same shard) replayed is
    /// read only from where that replay ended: a shard still being written costs what was
    /// appended since, not its whole log. Equal to [`Shard::load`] (the log is append-only;
    /// a log that is another file now, or shorter, is replayed from its start).
    pub fn load_after(run_dir: &Path, index: usize, close_offset: Option<u64>, prev: Option<&Shard>) -> Result<Shard> {
        let dir = run_dir.join(crate::format::shard_dir_name(index));
        match check_dir(&dir) {
            // A shard whose server never started has no directory yet (checked below).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            r => r.at(&dir)?,
        }
        let log_path = dir.join(LOG_FILE);
        let mut from_close = None;
        if let Some(off) = close_offset {
            from_close = read_close(&log_path, off)?;
        }
        let mut has_log = true;
        let mut closed = false;
        let mut close_at_offset = false;
        let mut log_bytes_read = 0;
        let mut replayed = None;
        let (columns, lens, groups, fields, stats, torn) = match from_close {
            Some(c)
                if c.columns.len() == c.lens.len() && c.columns.iter().enumerate().all(|(k, d)| d.id as usize == k) =>
            {
                closed = true;
                close_at_offset = true;
                (c.columns, c.lens, c.groups, c.fields, Some(c.stats), 0)
            }
            _ => {
                let resumed = prev.and_then(|p| p.replayed.as_ref()).and_then(|p| replay_after(&log_path, p));
                let r = match resumed {
                    Some((r, read, point)) => {
                        log_bytes_read = read;
                        replayed = Some(point);
                        Some(r)
                    }
                    None => match read_log(&log_path)? {
                        Some((log, id)) if !log.is_empty() => {
                            let r = replay_log(&log_path, &log, false)?;
                            log_bytes_read = log.len() as u64;
                            replayed = Some(ReplayPoint { log: id, state: r.clone() });
                            Some(r)
                        }
                        Some(_) => None,
                        // A shard whose server never started holds nothing yet.
                        None => {
                            has_log = false;
                            None
                        }
                    },
                };
                if let Some(r) = r {
                    // Only columns some commit named exist; fields and groups without a
                    // committed column were announced by a batch that never committed.
                    let columns: Vec<ColumnDef> =
                        r.columns.into_iter().filter(|c| r.committed[c.id as usize]).collect();
                    let fields = r
                        .fields
                        .into_iter()
                        .filter(|f| columns.iter().any(|c| c.field.as_deref() == Some(&f.path)))
                        .collect();
                    let groups = r
                        .groups
                        .into_iter()
                        .filter(|g| columns.iter().any(|c| c.role == Role::Ts && c.group == g.name))
                        .collect();
                    closed = r.close.is_some();
                    (columns, r.lens, groups, fields, r.close.map(|c| c.stats), r.torn_bytes)
                } else {
                    (vec![], vec![], vec![], vec![], None, 0)
                }
            }
        };
        let mut maps: Vec<Option<Mmap>> = (0..lens.len()).map(|_| None).collect();
        for c in &columns {
            let len = lens[c.id as usize];
            let path = dir.join(column_file_name(c.id));
            if len == 0 {
                continue;
            }
            let file = open_regular(&path).at(&path)?;
            let size = file.metadata().at(&path)?.len();
            if size < len {
                return Err(Error::Corrupt {
                    path,
                    offset: size,
                    why: format!("commit log commits {len} bytes but the file has {size}"),
                });
            }
            let len_usize = usize::try_from(len).map_err(|_| Error::Corrupt {
                path: path.clone(),
                offset: 0,
                why: "column too large".into(),
            })?;
            // SAFETY: the mapped prefix is committed and append-only: no writer modifies it.
            let map = unsafe { MmapOptions::new().len(len_usize).map(&file) }.at(&path)?;
            maps[c.id as usize] = Some(map);
        }
        let shard = Shard {
            index,
            dir,
            columns,
            lens,
            groups,
            fields,
            stats,
            torn_bytes: torn,
            has_log,
            closed,
            close_at_offset,
            log_bytes_read,
            maps,
            replayed,
        };
        shard.check_row_counts()?;
        Ok(shard)
    }

    /// Every column of a group must hold exactly the group's committed rows.
    fn check_row_counts(&self) -> Result<()> {
        for g in &self.groups {
            let rows = self.group_rows(&g.name);
            for c in self.columns.iter().filter(|c| c.group == g.name) {
                let need = match (c.role.fixed_row_bytes(), &c.field) {
                    (Some(b), _) => Some(rows * b as u64),
                    (None, Some(f)) => self
                        .fields
                        .iter()
                        .find(|s| &s.path == f)
                        .filter(|s| s.kind == Kind::Fixed)
                        .map(|s| rows * s.row_bytes() as u64),
                    (None, None) => None,
                };
                if let Some(need) = need {
                    if self.lens[c.id as usize] != need {
                        return Err(Error::Corrupt {
                            path: self.dir.join(column_file_name(c.id)),
                            offset: self.lens[c.id as usize],
                            why: format!(
                                "column holds {} bytes, group {:?} has {rows} rows needing {need}",
                                self.lens[c.id as usize], g.name
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The column holding `role` of `field` (or the group's event ids for `Role::Ts`).
    pub fn column(&self, group: &str, field: Option<&str>, role: Role) -> Option<u32> {
        self.columns.iter().find(|c| c.group == group && c.field.as_deref() == field && c.role == role).map(|c| c.id)
    }

    /// The committed bytes of a column.
    pub fn bytes(&self, column: u32) -> &[u8] {
        self.maps.get(column as usize).and_then(|m| m.as_deref()).unwrap_or(&[])
    }

    /// Drops from the page cache the pages of a column that lie wholly inside bytes `range`
    /// of its committed bytes (the last page of the column counts as whole): this process's
    /// map lets go of them (`MADV_DONTNEED`, which on a shared file map keeps the file's
    /// bytes) and the kernel drops those no process maps and the writer has written back
    /// (`POSIX_FADV_DONTNEED`); a page another process maps, or a dirty one, stays. The map
    /// still shows the same bytes: a dropped page is read from the file again on its next
    /// touch. The page cache holds files in folios of up to [`RELEASE_BLOCK`] bytes (aligned
    /// to their size) and a folio only partly inside the range stays: release whole,
    /// aligned blocks of that size. Best effort: errors are ignored.
    pub fn release(&self, column: u32, range: std::ops::Range<u64>) {
        let Some(map) = self.maps.get(column as usize).and_then(|m| m.as_ref()) else { return };
        let page = page_size();
        let len = map.len() as u64;
        let start = range.start.div_ceil(page) * page;
        let end = if range.end >= len { len.div_ceil(page) * page } else { range.end / page * page };
        if start >= end || start >= len {
            return;
        }
        // SAFETY: `start` is page aligned inside the map (maps start on a page) and `end` at
        // most the map's length rounded up to a page, which the mapping covers. On a shared
        // file mapping MADV_DONTNEED only unmaps: the next touch maps the file's page again,
        // with the same (committed, never rewritten) bytes, so slices borrowed from the map
        // stay valid and unchanged.
        unsafe {
            libc::madvise(
                map.as_ptr().add(start as usize) as *mut libc::c_void,
                (end - start) as usize,
                libc::MADV_DONTNEED,
            );
        }
        // The map's descriptor was closed after mapping; opening the file again costs a few
        // microseconds per released block.
        if let Ok(f) = open_regular(&self.dir.join(column_file_name(column))) {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid descriptor; fadvise only advises.
            unsafe {
                libc::posix_fadvise(f.as_raw_fd(), start as i64, (end - start) as i64, libc::POSIX_FADV_DONTNEED)
            };
        }
    }

    /// A u64 column (event ids, lengths, offsets) as a slice.
    pub fn u64s(&self, column: u32) -> &[u64] {
        // Maps are page aligned and committed lengths of u64 columns are multiples of 8.
        bytemuck::try_cast_slice(self.bytes(column)).unwrap_or(&[])
    }

    /// Committed rows of a group in this shard.
    pub fn group_rows(&self, group: &str) -> u64 {
        self.column(group, None, Role::Ts).map_or(0, |c| self.lens[c as usize] / 8)
    }
}
