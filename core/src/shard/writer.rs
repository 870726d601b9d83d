//! A server's side of one shard: creates columns as fields first arrive, appends each batch
//! with one positioned write per column, then commits it with one commit-log frame.
//!
//! Write order is data, (optionally fdatasync data), commit frame, (optionally fdatasync
//! log). A process killed at any instant leaves every committed byte intact, because bytes a
//! commit names were written before the commit; a power loss is covered when `sync` is on.
//! After any I/O error the writer refuses further batches: appending after a torn frame
//! would hide later commits from readers.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;

use crate::error::{Error, IoContext, Result};
use crate::format::{
    column_file_name, encode_commit, encode_frame, encode_log_header, CloseRecord, ColumnDef, CommitEntry, Role,
    SchemaRecord, LOG_FILE, REC_CLOSE, REC_SCHEMA,
};
use crate::model::batch::BatchView;
use crate::model::dtype::Dtype;
use crate::model::schema::{FieldId, FieldSpec, GroupId, GroupSpec, Stats, StatsMap};
use crate::model::value::Kind;

struct Column {
    file: File,
    path: PathBuf,
    len: u64,
}

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
}

/// Writer of one shard directory.
pub(crate) struct ShardWriter {
    index: usize,
    dir: PathBuf,
    log: File,
    log_path: PathBuf,
    log_len: u64,
    columns: Vec<Column>,
    defs: Vec<ColumnDef>,
    groups: FxHashMap<GroupId, ShardGroup>,
    fields: FxHashMap<FieldId, ShardField>,
    sync: bool,
    failed: bool,
    frame: Vec<u8>,
    payload: Vec<u8>,
}

impl ShardWriter {
    /// Creates the shard directory and its log.
    pub(crate) fn create(dir: &Path, index: usize, sync: bool) -> Result<ShardWriter> {
        fs::create_dir_all(dir).at(dir)?;
        let log_path = dir.join(LOG_FILE);
        let log =
            OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&log_path).at(&log_path)?;
        let header = encode_log_header(index as u32);
        log.write_all_at(&header, 0).at(&log_path)?;
        if sync {
            log.sync_all().at(&log_path)?;
            crate::format::manifest::sync_dir(dir)?;
        }
        Ok(ShardWriter {
            index,
            dir: dir.into(),
            log,
            log_path,
            log_len: header.len() as u64,
            columns: vec![],
            defs: vec![],
            groups: FxHashMap::default(),
            fields: FxHashMap::default(),
            sync,
            failed: false,
            frame: vec![],
            payload: vec![],
        })
    }

    /// The shard's index.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    fn new_column(&mut self, group: &str, field: Option<&str>, role: Role, rec: &mut SchemaRecord) -> Result<u32> {
        let id = self.columns.len() as u32;
        let path = self.dir.join(column_file_name(id));
        let file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).at(&path)?;
        let def = ColumnDef { id, group: group.into(), field: field.map(Into::into), role };
        rec.columns.push(def.clone());
        self.defs.push(def);
        self.columns.push(Column { file, path, len: 0 });
        Ok(id)
    }

    fn write_frame(&mut self) -> Result<()> {
        if self.payload.len() > crate::format::MAX_FRAME_PAYLOAD as usize {
            return Err(Error::Usage(format!(
                "shard {}: a log record of {} bytes exceeds the format's {} byte limit",
                self.index,
                self.payload.len(),
                crate::format::MAX_FRAME_PAYLOAD
            )));
        }
        self.frame.clear();
        encode_frame(&self.payload, &mut self.frame);
        self.log.write_all_at(&self.frame, self.log_len).at(&self.log_path)?;
        self.log_len += self.frame.len() as u64;
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
                crate::format::manifest::sync_dir(&self.dir)?;
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
                        pending.push((sf.data, Pending::Borrowed(fr.data)));
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
                        if let Some(st) = sf.stats.as_mut() {
                            add_stats(st, &sf.spec, fr.data, fr.present);
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

        // 3. One positioned write per column, then the commit record.
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
                    buf.extend_from_slice(match p {
                        Pending::Borrowed(b) => b,
                        Pending::Owned(v) => v,
                    });
                }
            }
        }
        let mut entries = Vec::with_capacity(order.len());
        for col in order {
            let bytes: &[u8] = match merged.get(&col) {
                Some(b) => b,
                None => match &pending[single[&col]].1 {
                    Pending::Borrowed(b) => b,
                    Pending::Owned(v) => v,
                },
            };
            let c = &mut self.columns[col as usize];
            c.file.write_all_at(bytes, c.len).at(&c.path)?;
            if !self.sync {
                // Start write-back now (asynchronously), so close()'s fsync finds little
                // dirty data left: the device works while clients compute.
                use std::os::fd::AsRawFd;
                // SAFETY: a valid fd and a range just written; the call only starts write-back.
                unsafe {
                    libc::sync_file_range(
                        c.file.as_raw_fd(),
                        c.len as libc::off64_t,
                        bytes.len() as libc::off64_t,
                        libc::SYNC_FILE_RANGE_WRITE,
                    )
                };
            }
            c.len += bytes.len() as u64;
            entries.push(CommitEntry { column: col, len: c.len, crc: crc32c::crc32c(bytes) });
        }
        if self.sync {
            for e in &entries {
                let c = &self.columns[e.column as usize];
                c.file.sync_data().at(&c.path)?;
            }
        }
        self.payload.clear();
        encode_commit(&entries, &mut self.payload);
        self.write_frame()?;
        if self.sync {
            self.log.sync_data().at(&self.log_path)?;
        }
        Ok(())
    }

    /// Writes the close record, fsyncs everything, and returns the record's log offset and
    /// the shard's statistics.
    pub(crate) fn close(mut self) -> Result<(u64, StatsMap)> {
        if self.failed {
            return Err(Error::ServerFailed { shard: self.index, why: "an earlier write failed".into() });
        }
        let mut stats = StatsMap::new();
        for f in self.fields.values() {
            if let Some(s) = f.stats {
                stats.insert(f.spec.path.clone(), s);
            }
        }
        for c in &self.columns {
            c.file.sync_all().at(&c.path)?;
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
        self.log.sync_all().at(&self.log_path)?;
        crate::format::manifest::sync_dir(&self.dir)?;
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

/// Adds the present rows of a batch to a field's statistics: every element of every present
/// row (scalars and n-d arrays alike), NaN excluded. One typed pass per row, so the cost is
/// a few instructions per element, not a decode each.
fn add_stats(st: &mut Stats, spec: &FieldSpec, data: &[u8], present: &[u8]) {
    let row_bytes = spec.row_bytes().max(1);
    for (r, row) in data.chunks_exact(row_bytes).enumerate() {
        if present.get(r).copied().unwrap_or(1) != 0 {
            st.merge(&row_stats(spec.dtype, row));
        }
    }
}

/// Statistics of one row of little-endian elements of `dtype`.
fn row_stats(dtype: Dtype, row: &[u8]) -> Stats {
    macro_rules! ints {
        ($t:ty) => {{
            let (mut lo, mut hi, mut sum, mut n) = (<$t>::MAX, <$t>::MIN, 0f64, 0u64);
            for c in row.chunks_exact(std::mem::size_of::<$t>()) {
                let v = <$t>::from_le_bytes(c.try_into().expect("element size"));
                lo = lo.min(v);
                hi = hi.max(v);
                sum += v as f64;
                n += 1;
            }
            if n == 0 {
                return Stats::default();
            }
            Stats { count: n, min: lo as f64, max: hi as f64, sum }
        }};
    }
    macro_rules! floats {
        ($t:ty) => {{
            let mut st = Stats::default();
            for c in row.chunks_exact(std::mem::size_of::<$t>()) {
                let v = f64::from(<$t>::from_le_bytes(c.try_into().expect("element size")));
                if !v.is_nan() {
                    st.add(v);
                }
            }
            st
        }};
    }
    match dtype {
        Dtype::Bool => {
            let ones = row.iter().filter(|&&b| b != 0).count() as u64;
            let n = row.len() as u64;
            if n == 0 {
                return Stats::default();
            }
            Stats {
                count: n,
                min: if ones == n { 1.0 } else { 0.0 },
                max: if ones > 0 { 1.0 } else { 0.0 },
                sum: ones as f64,
            }
        }
        Dtype::I8 => ints!(i8),
        Dtype::I16 => ints!(i16),
        Dtype::I32 => ints!(i32),
        Dtype::I64 => ints!(i64),
        Dtype::U8 => ints!(u8),
        Dtype::U16 => ints!(u16),
        Dtype::U32 => ints!(u32),
        Dtype::U64 => ints!(u64),
        Dtype::F32 => floats!(f32),
        Dtype::F64 => floats!(f64),
    }
}
