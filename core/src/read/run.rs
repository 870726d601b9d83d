//! [`Run`]: a read-only snapshot of a run — complete, crashed or still being written — with
//! row access in event-id order, event-id lookup, zero-copy shard slices, shard-wise
//! (optionally shuffled) iteration, and per-field readers.
//!
//! Opening a complete run maps its index files and reads one close record per shard and
//! checks the manifest against the shards (`read/complete.rs`); each stored index or offsets
//! file is checked chunk by chunk against the manifest's checksums as it is served
//! (`index/checked.rs`), or, for a manifest without them (revision ≤ 4), against the shards'
//! rows at open (O(index words)): O(shards + datasets + chunks). A run without a usable
//! global index (crashed, writing, or a damaged index) is indexed at open; a chunk found
//! damaged later switches its group to an index built from the shards (`warnings` says so).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::lock::writer_alive;
use crate::format::manifest::{Manifest, RunState, SummaryValue};
use crate::format::Role;
use crate::index::{build_group, load_offsets, load_offsets_checked, ragged_offsets, GroupIndex, Loc, OffsetsMap};
use crate::model::schema::{FieldSpec, GroupSpec, Schema, StatsMap};
use crate::read::shuffle::ShardwiseIter;
use crate::shard::reader::Shard;

// Live refresh: `Run::reopen` reuses an earlier snapshot's index work (its own file).
#[path = "refresh.rs"]
mod refresh;

// The batched gather of fixed-width rows (its own file).
#[path = "gather.rs"]
pub mod gather;

/// One alignment group as read.
#[derive(Debug)]
pub struct GroupData {
    /// The group.
    pub spec: GroupSpec,
    /// Its rows in event-id order.
    pub index: GroupIndex,
    /// Rows whose id repeats the previous row's.
    pub duplicates: u64,
    /// Up to 16 duplicated ids.
    pub duplicate_ids: Vec<u64>,
    /// Per shard: the event-id column.
    ts: Vec<Option<u32>>,
    /// Per shard: the group's committed rows (what a location may name).
    pub(crate) shard_rows: Vec<u64>,
}

/// Per shard: the columns of one field.
#[derive(Clone, Copy, Debug, Default)]
pub struct FieldColumns {
    /// Values.
    pub data: Option<u32>,
    /// Presence bytes (aligned fields).
    pub present: Option<u32>,
    /// Ragged: element counts.
    pub len: Option<u32>,
    /// Ragged: element offsets.
    pub offs: Option<u32>,
}

/// One field as read.
#[derive(Debug)]
pub struct FieldData {
    /// The field.
    pub spec: FieldSpec,
    /// Index of its group in [`Run::groups`].
    pub group: usize,
    /// Per shard: its columns (all `None` where a shard never saw the field).
    pub columns: Vec<FieldColumns>,
    /// Ragged: global offsets (`rows + 1`).
    pub offsets: Option<OffsetsMap>,
    /// Rows where the event lacked the field (aligned fields).
    pub missing: u64,
}

/// A read-only snapshot of a run.
#[derive(Debug)]
pub struct Run {
    dir: PathBuf,
    state: RunState,
    manifest: Manifest,
    schema: Schema,
    /// Shared with the stored index's fallbacks, which rebuild from them (`index/checked.rs`).
    shards: Arc<Vec<Shard>>,
    groups: Vec<GroupData>,
    fields: Vec<FieldData>,
    stats: StatsMap,
    warnings: Vec<String>,
    /// Damage found after open: a stored index or offsets chunk that failed its checksum
    /// when first served.
    late_warnings: Arc<Mutex<Vec<String>>>,
    /// Rows the group indexes merged at open (fewer than all after `reopen`).
    merged: u64,
}

impl Run {
    /// Opens the run in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Run> {
        Run::open_after(dir.as_ref(), None)
    }

    /// Opens the run in `dir`; `prev`, an earlier snapshot of it, lends its index work.
    fn open_after(dir: &Path, prev: Option<&Run>) -> Result<Run> {
        let mut reuse = refresh::Reuse::new(prev);
        let dir = dir.to_path_buf();
        let manifest = Manifest::load(&dir)?;
        let state = match manifest.state {
            RunState::Complete => RunState::Complete,
            _ if writer_alive(&dir) => RunState::Writing,
            _ => RunState::Crashed,
        };
        let index = manifest.index.as_ref().filter(|_| state == RunState::Complete);
        let shards: Arc<Vec<Shard>> = Arc::new(
            (0..manifest.shards)
                .into_par_iter()
                .map(|i| {
                    let close = index.and_then(|x| x.close_offsets.get(i).copied());
                    Shard::load_after(&dir, i, close, prev.and_then(|p| p.shards.get(i)))
                })
                .collect::<Result<_>>()?,
        );
        let late_warnings = Arc::new(Mutex::new(Vec::new()));

        let mut warnings = Vec::new();
        let complete = state == RunState::Complete;
        for s in shards.iter() {
            if let Some(bad) = s.fields.iter().find_map(|f| f.validate().err()) {
                return Err(Error::Corrupt { path: s.dir.join(crate::format::LOG_FILE), offset: 0, why: bad });
            }
        }
        if complete {
            warnings.extend(crate::read::complete::check_shards(&dir, &manifest, &shards)?);
            crate::read::complete::check_schema(&dir, &manifest, &shards)?;
        }

        // The schema: the manifest's when complete, else the union of the shards'.
        let mut schema = if complete { manifest.schema.clone() } else { Schema::new() };
        // Shards that disagree on a field (a job whose ranks sent conflicting dtypes before it
        // failed) lose nothing else: the first definition wins, the other shards' rows of that
        // field read as missing, and the conflict is reported in `warnings()`.
        let mut excluded: std::collections::HashSet<(usize, String)> = std::collections::HashSet::new();
        for s in shards.iter() {
            schema.merge_from(&s.fields, &s.groups, |f, e| {
                warnings.push(format!("shard {}: {e}; its rows of {:?} read as missing", s.index, f.path));
                excluded.insert((s.index, f.path.clone()));
                Ok(())
            })?;
        }
        schema.check().map_err(|why| Error::Corrupt { path: dir.clone(), offset: 0, why: format!("schema: {why}") })?;

        // A stored index is used only if it covers exactly the shards' rows; otherwise the
        // group is indexed from the shards as for a crashed run (read/complete.rs).
        let mut rebuilt = Vec::with_capacity(schema.groups.len());
        let mut groups = Vec::with_capacity(schema.groups.len());
        for g in &schema.groups {
            let entry = index.and_then(|x| x.groups.iter().find(|i| i.group == g.name));
            let stored =
                index.map(|_| crate::read::complete::stored_index(&dir, entry, &g.name, &shards, &late_warnings));
            rebuilt.push(false);
            let (idx, duplicates, duplicate_ids) = match (stored, entry) {
                (Some(Ok(idx)), Some(e)) => (idx, e.duplicates, e.duplicate_ids.clone()),
                (stored, _) => {
                    if let Some(Err(why)) = stored {
                        warnings.push(format!("{why}; indexed from the shards instead (run `smdfs verify`)"));
                        rebuilt[groups.len()] = true;
                    }
                    reuse.group(&shards, &g.name)
                }
            };
            let ts = shards.iter().map(|s| s.column(&g.name, None, Role::Ts)).collect();
            let shard_rows = shards.iter().map(|s| s.group_rows(&g.name)).collect();
            groups.push(GroupData { spec: g.clone(), index: idx, duplicates, duplicate_ids, ts, shard_rows });
        }

        let mut fields = Vec::with_capacity(schema.fields.len());
        for f in &schema.fields {
            let gi = schema.groups.iter().position(|g| g.name == f.group).ok_or_else(|| Error::Corrupt {
                path: dir.clone(),
                offset: 0,
                why: format!("field {:?} names unknown group {:?}", f.path, f.group),
            })?;
            // The stored offsets and counts of a group indexed from the shards no longer apply.
            let index = index.filter(|_| !rebuilt[gi]);
            let columns: Vec<FieldColumns> = shards
                .iter()
                .map(|s| {
                    if excluded.contains(&(s.index, f.path.clone())) {
                        return FieldColumns::default();
                    }
                    let c = |r| s.column(&f.group, Some(&f.path), r);
                    FieldColumns {
                        data: c(Role::Data),
                        present: c(Role::Present),
                        len: c(Role::Len),
                        offs: c(Role::Offs),
                    }
                })
                .collect();
            let g = &groups[gi];
            let offsets = if f.kind.is_ragged() {
                let stored = index.and_then(|x| x.ragged.iter().find(|r| r.field == f.path));
                // A stored offsets file that does not match the index is recomputed.
                let total: u64 = shards
                    .iter()
                    .zip(&columns)
                    .map(|(s, c)| c.data.map_or(0, |d| s.bytes(d).len() as u64 / f.dtype.size() as u64))
                    .sum();
                let loaded = stored.and_then(|r| {
                    let path = dir.join(&r.file);
                    if r.chunks != Default::default() {
                        // Revision 5: checked chunk by chunk as served, recomputed from the
                        // shards if one fails (index/checked.rs).
                        let (sh, group, field, sink) =
                            (shards.clone(), f.group.clone(), f.path.clone(), late_warnings.clone());
                        let rebuild = move || ragged_offsets(&sh, &build_group(&sh, &group).0, &group, &field);
                        let path_s = f.path.clone();
                        let warn = move |why: String| {
                            crate::sync::lock(&sink)
                                .push(format!("field {path_s:?}: {why}; offsets recomputed from the shards"))
                        };
                        return load_offsets_checked(&path, g.index.len(), &r.chunks, rebuild, warn).ok();
                    }
                    let o = load_offsets(&path, g.index.len()).ok()?;
                    let v = o.get();
                    (v.first() == Some(&0) && v.last() == Some(&total) && v.windows(2).all(|w| w[0] <= w[1]))
                        .then_some(o)
                });
                if complete && loaded.is_none() {
                    warnings.push(format!("field {:?}: stored offsets unusable; recomputed from the shards", f.path));
                }
                Some(loaded.unwrap_or_else(|| reuse.offsets(&shards, &g.index, &f.group, &f.path)))
            } else {
                None
            };
            let stored_missing = index.and_then(|x| x.missing.get(&f.path)).copied();
            let missing = match (g.spec.aligned, stored_missing) {
                (false, _) => 0,
                (true, Some(m)) => m,
                (true, None) => reuse.missing(&shards, &columns, f),
            };
            fields.push(FieldData { spec: f.clone(), group: gi, columns, offsets, missing });
        }
        let stats = if complete { manifest.stats.clone() } else { StatsMap::new() };
        let merged = reuse.merged;
        Ok(Run { dir, state, manifest, schema, shards, groups, fields, stats, warnings, late_warnings, merged })
    }

    /// Problems the reader worked around (shards disagreeing on a field, a damaged stored
    /// index), for `info`: those found at open, then those found since, when a stored index
    /// or offsets chunk failed its checksum as it was first served.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.warnings.clone();
        w.extend(crate::sync::lock(&self.late_warnings).iter().cloned());
        w
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writing, complete or crashed.
    pub fn state(&self) -> RunState {
        self.state
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The manifest as read.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The loaded shards.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Groups, in schema order (index 0 is the run).
    pub fn groups(&self) -> &[GroupData] {
        &self.groups
    }

    /// Fields, in schema order.
    pub fn fields(&self) -> &[FieldData] {
        &self.fields
    }

    /// Summary values.
    pub fn summary(&self) -> &[SummaryValue] {
        &self.manifest.summary
    }

    /// A summary value by name.
    pub fn summary_value(&self, name: &str) -> Result<&SummaryValue> {
        self.manifest
            .summary
            .iter()
            .find(|s| s.path == name)
            .ok_or_else(|| Error::NotFound { what: "summary value", name: name.into() })
    }

    /// Statistics of numeric scalar fields (complete runs).
    pub fn stats(&self) -> &StatsMap {
        &self.stats
    }

    /// Number of events in the run's aligned group.
    pub fn len(&self) -> u64 {
        self.groups.first().map_or(0, |g| g.index.len())
    }

    /// True if the run has no events.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A group by name (`""` is the run, an unaligned field's group is its path).
    pub fn group(&self, name: &str) -> Result<&GroupData> {
        self.groups
            .iter()
            .find(|g| g.spec.name == name)
            .ok_or_else(|| Error::NotFound { what: "group", name: name.into() })
    }

    fn group_index(&self, name: &str) -> Result<usize> {
        self.groups
            .iter()
            .position(|g| g.spec.name == name)
            .ok_or_else(|| Error::NotFound { what: "group", name: name.into() })
    }

    /// The event id at a location of a group.
    pub fn id_at(&self, group: usize, loc: Loc) -> u64 {
        let g = &self.groups[group];
        self.column_of(&g.ts, loc.shard).and_then(|(s, c)| s.u64s(c).get(loc.row as usize).copied()).unwrap_or(0)
    }

    /// The shard and column id of `columns[shard]`, if both exist. Index entries come from
    /// files, so a damaged index may name a shard that does not exist: never index blindly.
    pub(crate) fn column_of<'a>(&'a self, columns: &[Option<u32>], shard: usize) -> Option<(&'a Shard, u32)> {
        Some((self.shards.get(shard)?, columns.get(shard).copied().flatten()?))
    }

    /// The event id of a group's global row.
    pub fn event_id(&self, group: &str, row: u64) -> Result<u64> {
        let gi = self.group_index(group)?;
        let g = &self.groups[gi];
        let loc = g.index.locate(row).ok_or(Error::OutOfRange { what: "row", index: row, len: g.index.len() })?;
        Ok(self.id_at(gi, loc))
    }

    /// A group's event ids in order into `out` (rows `start..start + out.len()`).
    pub fn read_ids(&self, group: &str, start: u64, out: &mut [u64]) -> Result<()> {
        let gi = self.group_index(group)?;
        let g = &self.groups[gi];
        check_range(start, out.len() as u64, g.index.len())?;
        let mut pos = 0usize;
        g.index.for_each_segment(start, start + out.len() as u64, |loc, n| {
            let ids = self.column_of(&g.ts, loc.shard).map_or(&[][..], |(s, c)| s.u64s(c));
            let n = n as usize;
            match ids.get(loc.row as usize..loc.row as usize + n) {
                Some(s) => out[pos..pos + n].copy_from_slice(s),
                None => out[pos..pos + n].fill(0),
            }
            pos += n;
        });
        Ok(())
    }

    /// Per shard: the event-id column of a group.
    pub fn id_columns(&self, group: usize) -> &[Option<u32>] {
        &self.groups[group].ts
    }

    /// The first global row of `group` whose event id is `id` (binary search).
    pub fn row_of(&self, group: &str, id: u64) -> Result<Option<u64>> {
        let gi = self.group_index(group)?;
        let g = &self.groups[gi];
        let (mut lo, mut hi) = (0u64, g.index.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let loc = g.index.locate(mid).expect("mid < len");
            if self.id_at(gi, loc) < id {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok((lo < g.index.len() && self.id_at(gi, g.index.locate(lo).expect("lo < len")) == id).then_some(lo))
    }

    /// A field reader by path.
    pub fn field(&self, path: &str) -> Result<FieldReader<'_>> {
        let i = self
            .fields
            .iter()
            .position(|f| f.spec.path == path)
            .ok_or_else(|| Error::NotFound { what: "field", name: path.into() })?;
        Ok(FieldReader { run: self, f: &self.fields[i], g: &self.groups[self.fields[i].group] })
    }

    /// The group's rows shard by shard (shards in order, rows in shard order), or, with a
    /// seed, shards in a random order and rows shuffled within each shard — the access
    /// pattern that keeps reads local while decorrelating samples.
    pub fn shardwise(&self, group: &str, seed: Option<u64>) -> Result<ShardwiseIter> {
        let gi = self.group_index(group)?;
        let order = self.shards.iter().map(|s| (s.index, s.group_rows(&self.groups[gi].spec.name))).collect();
        Ok(ShardwiseIter::new(order, seed))
    }
}

/// Damage: the index names a shard location (rows of `row_bytes`) that is not committed data.
pub(crate) fn bad_loc(run: &Run, loc: Loc, row_bytes: usize) -> Error {
    Error::Corrupt {
        path: run.shards.get(loc.shard).map_or_else(|| run.dir.clone(), |s| s.dir.clone()),
        offset: loc.row.saturating_mul(row_bytes as u64),
        why: format!(
            "the index names shard {} row {}, which is not committed data (run `smdfs verify`)",
            loc.shard, loc.row
        ),
    }
}

pub(crate) fn check_range(start: u64, n: u64, len: u64) -> Result<()> {
    if start.checked_add(n).is_none_or(|e| e > len) {
        return Err(Error::OutOfRange { what: "row", index: start.saturating_add(n), len });
    }
    Ok(())
}

/// Reads one field: rows in event-id order, fill where absent.
#[derive(Clone, Copy)]
pub struct FieldReader<'r> {
    pub(crate) run: &'r Run,
    pub(crate) f: &'r FieldData,
    pub(crate) g: &'r GroupData,
}
