//! A server's side of one shard: creates columns as fields first arrive, appends each batch
//! column by column (positioned writes of at most 256 KiB, each checksummed while still in
//! cache), then commits it with one commit-log frame.
//!
//! Write order is data, (optionally fdatasync data), commit frame, (optionally fdatasync
//! log). With `sync` on, the tail from "fdatasync data" on runs on the shard's committer
//! thread (`shard/syncer.rs`), in the same order, while the next batches' columns are
//! written; one of its rounds commits every batch queued meanwhile. A process killed at any instant leaves every committed byte intact, because bytes a
//! commit names were written before the commit; a power loss is covered when `sync` is on.
//! After any I/O error the writer refuses further batches: appending after a torn frame
//! would hide later commits from readers.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::error::{Error, IoContext, Result};
use crate::format::{
    column_file_name, encode_commit, encode_frame, encode_log_header, CloseRecord, ColumnDef, CommitEntry, Role,
    SchemaRecord, LOG_FILE, REC_CLOSE, REC_SCHEMA,
};
use crate::model::batch::BatchView;
use crate::model::schema::{FieldId, FieldSpec, GroupId, GroupSpec, Stats, StatsMap};
use crate::model::value::Kind;
use crate::shard::io::{sync_dir, Faults, ShardFile};
use crate::shard::stats::{add_stats, row_stats};
use crate::shard::syncer::{Job, Syncer};

struct Column {
    file: Arc<ShardFile>,
    len: u64,
    /// Bytes before this offset have been handed to writeback (a multiple of
    /// [`WRITEBACK_UNIT`]).
    written_back: u64,
}

/// Writeback is started in whole units of this size: a column's partial tail is left dirty
/// until later batches complete the unit, so a small column (ids, a scalar, presence bytes)
/// is not sent to the device again and again for the same partly filled page, and no write
/// waits for a page that is under writeback. Close fsyncs the rest.
const WRITEBACK_UNIT: u64 = 256 << 10;

struct ShardGroup {
    spec: GroupSpec,
    ts: u32,
    rows: u64,
    fields: Vec<FieldId>,
}

struct ShardField {
    spec: FieldSpec,
    data: u32,
    present: Option<u32>,
    len: Option<u32>,
    offs: Option<u32>,
    /// Ragged: elements written so far (the next row's offset).
    elements: u64,
    /// One whole row of fill bytes (fixed kind).
    fill_row: Vec<u8>,
    stats: Option<Stats>,
}

/// The bytes one batch appends to one column.
enum Pending<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
    /// A field's data column with every row present: its statistics are taken chunk by
    /// chunk as it is written (see [`WRITE_CHUNK`]).
    Stats(&'a [u8], FieldId),
}

impl Pending<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Pending::Borrowed(b) | Pending::Stats(b, _) => b,
            Pending::Owned(v) => v,
        }
    }
}

/// A column's bytes are written in pieces of this size, each checksummed (and its
/// statistics taken) right after its write, while it is still in the CPU cache: the batch
/// is read from memory once instead of three times (write, crc32c, statistics).
const WRITE_CHUNK: usize = 256 << 10;

/// Writer of one shard directory.
pub(crate) struct ShardWriter {
    index: usize,
    dir: PathBuf,
    log: Arc<ShardFile>,
    log_len: u64,
    columns: Vec<Column>,
    defs: Vec<ColumnDef>,
    groups: FxHashMap<GroupId, ShardGroup>,
    fields: FxHashMap<FieldId, ShardField>,
    sync: bool,
    failed: bool,
    frame: Vec<u8>,
    payload: Vec<u8>,
    faults: Option<Arc<Faults>>,
    /// Sync mode: the thread that makes batch k durable while batch k+1 is written.
    syncer: Option<Syncer>,
}

impl ShardWriter {
    /// Creates the shard directory and its log.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn create(dir: &Path, index: usize, sync: bool) -> Result<ShardWriter> {
        ShardWriter::create_with(dir, index, sync, None)
    }

    /// [`ShardWriter::create`] with a fault-injection hook (tests; `None` in production).
    pub(crate) fn create_with(
        dir: &Path,
        index: usize,
        sync: bool,
        faults: Option<Arc<Faults>>,
    ) -> Result<ShardWriter> {
        fs::create_dir_all(dir).at(dir)?;
        let log = Arc::new(ShardFile::create(&dir.join(LOG_FILE), faults.as_ref())?);
        let header = encode_log_header(index as u32);
        log.write_all_at(&header, 0)?;
        if sync {
            log.sync_all()?;
            sync_dir(dir, faults.as_ref())?;
        }
        Ok(ShardWriter {
            index,
            dir: dir.into(),
            log,
            log_len: header.len() as u64,
            columns: vec![],
            defs: vec![],
            groups: FxHashMap::default(),
            fields: FxHashMap::default(),
            sync,
            failed: false,
            frame: vec![],
            payload: vec![],
            faults,
            syncer: if sync { Some(Syncer::start(index)?) } else { None },
        })
    }

    /// The shard's index.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    fn new_column(&mut self, group: &str, field: Option<&str>, role: Role, rec: &mut SchemaRecord) -> Result<u32> {
        let id = self.columns.len() as u32;
        let path = self.dir.join(column_file_name(id));
        let file = Arc::new(ShardFile::create(&path, self.faults.as_ref())?);
        let def = ColumnDef { id, group: group.into(), field: field.map(Into::into), role };
        rec.columns.push(def.clone());
        self.defs.push(def);
        self.columns.push(Column { file, len: 0, written_back: 0 });
        Ok(id)
    }

    /// Waits until the committer has no job in flight (its error, if it failed).
    fn drain(&mut self) -> Result<()> {
        match self.syncer.as_mut() {
            Some(s) => s.wait(),
            None => Ok(()),
        }
    }

    fn write_frame(&mut self) -> Result<()> {
        // Frames land in log order: the committer's frame first.
        self.drain()?;
        self.check_payload()?;
        self.frame.clear();
        encode_frame(&self.payload, &mut self.frame);
        self.log.write_all_at(&self.frame, self.log_len)?;
        self.log_len += self.frame.len() as u64;
        Ok(())
    }

    fn check_payload(&self) -> Result<()> {
        if self.payload.len() > crate::format::MAX_FRAME_PAYLOAD as usize {
            return Err(Error::Usage(format!(
                "shard {}: a log record of {} bytes exceeds the format's {} byte limit",
                self.index,
                self.payload.len(),
                crate::format::MAX_FRAME_PAYLOAD
            )));
        }
        Ok(())
    }

    /// Appends and commits one batch. `lookup` gives the spec of a field and of a group the
    /// shard has not seen yet.
    pub(crate) fn append(
        &mut self,
        batch: &BatchView<'_>,
        field_spec: &dyn Fn(FieldId) -> FieldSpec,
        group_spec: &dyn Fn(GroupId) -> GroupSpec,
    ) -> Result<()> {
        if self.failed {
            return Err(Error::ServerFailed { shard: self.index, why: "an earlier write failed".into() });
        }
        let r = self.append_inner(batch, field_spec, group_spec);
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn append_inner(
        &mut self,
        batch: &BatchView<'_>,
        field_spec: &dyn Fn(FieldId) -> FieldSpec,
        group_spec: &dyn Fn(GroupId) -> GroupSpec,
    ) -> Result<()> {
        // 1. Schema additions: new groups, new fields (backfilled for rows already written).
        let mut rec = SchemaRecord::default();
        let mut pending: Vec<(u32, Pending<'_>)> = Vec::new();
        for g in &batch.groups {
            if !self.groups.contains_key(&g.group) {
                let spec = group_spec(g.group);
                let ts = self.new_column(&spec.name, None, Role::Ts, &mut rec)?;
                rec.groups.push(spec.clone());
                self.groups.insert(g.group, ShardGroup { spec, ts, rows: 0, fields: vec![] });
            }
        }
        for f in &batch.fields {
            if self.fields.contains_key(&f.field) {
                continue;
            }
            let spec = field_spec(f.field);
            let gid = batch.groups[f.group_slot].group;
            let (aligned, rows) = {
                let g = &self.groups[&gid];
                (g.spec.aligned, g.rows)
            };
            let (group, path) = (spec.group.clone(), spec.path.clone());
            let data = self.new_column(&group, Some(&path), Role::Data, &mut rec)?;
            let present =
                if aligned { Some(self.new_column(&group, Some(&path), Role::Present, &mut rec)?) } else { None };
            let (len, offs) = if spec.kind.is_ragged() {
                (
                    Some(self.new_column(&group, Some(&path), Role::Len, &mut rec)?),
                    Some(self.new_column(&group, Some(&path), Role::Offs, &mut rec)?),
                )
            } else {
                (None, None)
            };
            let fill_row = if spec.kind == Kind::Fixed { spec.fill.repeat(spec.elements_per_row()) } else { vec![] };
            let numeric = spec.kind == Kind::Fixed;
            let sf = ShardField {
                spec: spec.clone(),
                data,
                present,
                len,
                offs,
                elements: 0,
                fill_row,
                stats: numeric.then(Stats::default),
            };
            if rows > 0 {
                // Rows this shard wrote before the field existed: fill, absent.
                for (col, bytes) in fill_columns(&sf, rows as usize) {
                    pending.push((col, Pending::Owned(bytes)));
                }
            }
            rec.fields.push(spec);
            self.fields.insert(f.field, sf);
            self.groups.get_mut(&gid).expect("group created above").fields.push(f.field);
        }
        if !rec.columns.is_empty() {
            if self.sync {
                // New column files must be durable before a commit names them.
                sync_dir(&self.dir, self.faults.as_ref())?;
            }
            self.payload.clear();
            self.payload.push(REC_SCHEMA);
            serde_json::to_writer(&mut self.payload, &rec).map_err(Error::encode("a schema record"))?;
            self.write_frame()?;
        }

        // 2. The batch's rows, group by group; aligned fields the batch lacks are filled.
        let mut by_field: FxHashMap<FieldId, usize> = FxHashMap::default();
        for (i, f) in batch.fields.iter().enumerate() {
            by_field.insert(f.field, i);
        }
        for g in &batch.groups {
            let n = g.rows();
            let sg = &self.groups[&g.group];
            pending.push((sg.ts, Pending::Borrowed(g.ids)));
            for fid in sg.fields.clone() {
                let sf = self.fields.get_mut(&fid).expect("field registered");
                match by_field.get(&fid) {
                    Some(&i) => {
                        let fr = &batch.fields[i];
                        debug_assert_eq!(fr.rows, n, "client pads aligned fields to the group's rows");
                        let all_present = !fr.present.contains(&0);
                        match sf.stats.as_mut() {
                            Some(_) if all_present => pending.push((sf.data, Pending::Stats(fr.data, fid))),
                            Some(st) => {
                                add_stats(st, &sf.spec, fr.data, fr.present);
                                pending.push((sf.data, Pending::Borrowed(fr.data)));
                            }
                            None => pending.push((sf.data, Pending::Borrowed(fr.data))),
                        }
                        if let Some(p) = sf.present {
                            pending.push((p, Pending::Borrowed(fr.present)));
                        }
                        if let (Some(l), Some(o)) = (sf.len, sf.offs) {
                            let mut offs = Vec::with_capacity(n * 8);
                            for len in fr.lens.chunks_exact(8) {
                                offs.extend_from_slice(&sf.elements.to_le_bytes());
                                sf.elements += u64::from_le_bytes(len.try_into().expect("8-byte chunk"));
                            }
                            pending.push((l, Pending::Borrowed(fr.lens)));
                            pending.push((o, Pending::Owned(offs)));
                        }
                    }
                    None => {
                        for (col, bytes) in fill_columns(sf, n) {
                            pending.push((col, Pending::Owned(bytes)));
                        }
                    }
                }
            }
            self.groups.get_mut(&g.group).expect("group exists").rows += n as u64;
        }

        // 3. Each column written at its end in pieces of WRITE_CHUNK (each checksummed and its
        //    statistics taken while in cache), then the commit record.
        let mut merged: FxHashMap<u32, Vec<u8>> = FxHashMap::default();
        let mut order: Vec<u32> = Vec::new();
        let mut single: FxHashMap<u32, usize> = FxHashMap::default();
        for (i, (col, _)) in pending.iter().enumerate() {
            if single.insert(*col, i).is_some() {
                merged.entry(*col).or_default();
            } else {
                order.push(*col);
            }
        }
        // Columns touched twice (backfill + batch) are concatenated into one write.
        if !merged.is_empty() {
            for (col, p) in &pending {
                if let Some(buf) = merged.get_mut(col) {
                    buf.extend_from_slice(p.bytes());
                    if let Pending::Stats(b, fid) = p {
                        // Concatenated with backfill: the batch's own rows, taken whole.
                        let sf = self.fields.get_mut(fid).expect("field registered");
                        if let Some(st) = sf.stats.as_mut() {
                            st.merge(&row_stats(sf.spec.dtype, b));
                        }
                    }
                }
            }
        }
        let mut entries = Vec::with_capacity(order.len());
        for col in order {
            let (bytes, stats_of): (&[u8], _) = match merged.get(&col) {
                Some(b) => (b, None),
                None => match &pending[single[&col]].1 {
                    Pending::Stats(b, fid) => (b, Some(*fid)),
                    p => (p.bytes(), None),
                },
            };
            let mut stats = stats_of.and_then(|fid| self.fields.get_mut(&fid)).and_then(|f| {
                let dtype = f.spec.dtype;
                f.stats.as_mut().map(|st| (st, dtype))
            });
            let c = &mut self.columns[col as usize];
            let mut crc = 0u32;
            let mut at = c.len;
            for piece in bytes.chunks(WRITE_CHUNK) {
                c.file.write_all_at(piece, at)?;
                crc = crc32c::crc32c_append(crc, piece);
                if let Some((st, dtype)) = stats.as_mut() {
                    // Whole elements: WRITE_CHUNK is a multiple of every element size.
                    st.merge(&row_stats(*dtype, piece));
                }
                at += piece.len() as u64;
            }
            // Start writeback of the column's whole units now: the device works while the run
            // goes on, so the fsyncs of commits (sync mode) or of close (always) find little
            // left to do. A hint only; durability still comes from those fsyncs.
            c.len += bytes.len() as u64;
            let whole = c.len - c.len % WRITEBACK_UNIT;
            if whole > c.written_back {
                c.file.start_writeback(c.written_back, whole - c.written_back);
                c.written_back = whole;
            }
            entries.push(CommitEntry { column: col, len: c.len, crc });
        }
        if self.syncer.is_some() {
            // The batch's sync and commit go to the committer (a frame at the next offset).
            let job = self.commit_job(&entries)?;
            if let Some(s) = self.syncer.as_mut() {
                return s.submit(job);
            }
        }
        if self.sync {
            for e in &entries {
                let c = &self.columns[e.column as usize];
                c.file.sync_data()?;
            }
        }
        self.payload.clear();
        encode_commit(&entries, &mut self.payload);
        self.write_frame()?;
        if self.sync {
            self.log.sync_data()?;
        }
        Ok(())
    }

    /// The committer's job for a batch's commit entries: its frame at the next log offset
    /// (reserved here, so frames keep batch order).
    fn commit_job(&mut self, entries: &[CommitEntry]) -> Result<Job> {
        self.payload.clear();
        encode_commit(entries, &mut self.payload);
        self.check_payload()?;
        let mut frame = Vec::with_capacity(self.payload.len() + 16);
        encode_frame(&self.payload, &mut frame);
        let at = self.log_len;
        self.log_len += frame.len() as u64;
        let columns = entries.iter().map(|e| Arc::clone(&self.columns[e.column as usize].file)).collect();
        Ok(Job { columns, log: Arc::clone(&self.log), frame, at })
    }

    /// Writes the close record, fsyncs everything, and returns the record's log offset and
    /// the shard's statistics.
    pub(crate) fn close(mut self) -> Result<(u64, StatsMap)> {
        if self.failed {
            return Err(Error::ServerFailed { shard: self.index, why: "an earlier write failed".into() });
        }
        self.drain()?;
        let mut stats = StatsMap::new();
        for f in self.fields.values() {
            if let Some(s) = f.stats {
                stats.insert(f.spec.path.clone(), s);
            }
        }
        for c in &self.columns {
            c.file.sync_all()?;
        }
        let rec = CloseRecord {
            stats: stats.clone(),
            columns: self.defs.clone(),
            lens: self.columns.iter().map(|c| c.len).collect(),
            groups: self.groups.values().map(|g| g.spec.clone()).collect(),
            fields: self.fields.values().map(|f| f.spec.clone()).collect(),
        };
        self.payload.clear();
        self.payload.push(REC_CLOSE);
        serde_json::to_writer(&mut self.payload, &rec).map_err(Error::encode("a close record"))?;
        let offset = self.log_len;
        self.write_frame()?;
        self.log.sync_all()?;
        sync_dir(&self.dir, self.faults.as_ref())?;
        Ok((offset, stats))
    }
}

/// Fill bytes for `n` absent rows of a field, per column.
fn fill_columns(f: &ShardField, n: usize) -> Vec<(u32, Vec<u8>)> {
    let mut v = Vec::with_capacity(4);
    if f.spec.kind == Kind::Fixed {
        v.push((f.data, f.fill_row.repeat(n)));
    }
    if let Some(p) = f.present {
        v.push((p, vec![0u8; n]));
    }
    if let (Some(l), Some(o)) = (f.len, f.offs) {
        v.push((l, vec![0u8; n * 8]));
        v.push((o, f.elements.to_le_bytes().repeat(n)));
    }
    v
}
