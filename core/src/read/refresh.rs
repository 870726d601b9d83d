//! Reopening a run that is still being written, reusing the previous snapshot's work: a live
//! view refreshes every fraction of a second, and rebuilding every group index (a heap merge
//! of every row), every ragged offsets table and every missing-row count from scratch costs
//! time ∝ the whole run. [`Run::reopen`] opens the run as [`Run::open`] does, but for a group
//! the previous snapshot indexed it keeps the index rows below the smallest new key and
//! merges only the rest (`index::extend_group`), keeps the ragged offsets of those rows, and
//! counts missing values only in new rows. Extended group indexes and ragged offsets keep
//! their words in chunks shared with the snapshot they extend (`index/extend.rs`,
//! `index/offsets.rs`), so a refresh copies at most one chunk of either. The result equals a fresh open (the index is the
//! rows sorted by event id, shard, row either way); snapshots stay independent (the previous
//! one is only read). The shards' logs are read only from where the previous snapshot's
//! replay ended (`Shard::load_after`). [`Run::merged_rows`] and [`Run::log_bytes_read`] say
//! how many rows an open merged and how many log bytes it read.

use std::collections::HashMap;

use super::{FieldColumns, Run};
use crate::error::Result;
use crate::index::{build_group, extend_group, extend_offsets, ragged_offsets, GroupIndex, OffsetsMap};
use crate::model::schema::FieldSpec;
use crate::shard::reader::Shard;

impl Run {
    /// Opens this run again as it is now, reusing this snapshot's index work for the rows it
    /// already indexed (see the module docs); equal to a fresh [`Run::open`].
    pub fn reopen(&self) -> Result<Run> {
        Run::open_after(&self.dir, Some(self))
    }

    /// Bytes of the shards' commit logs read when this snapshot was opened: every log whole
    /// when opened fresh, after [`Run::reopen`] only what the logs gained since the previous
    /// snapshot (`Shard::load_after`); a complete run's close records only.
    pub fn log_bytes_read(&self) -> u64 {
        self.shards.iter().map(|s| s.log_bytes_read).sum()
    }

    /// Rows merged into group indexes when this snapshot was opened: every row of a run
    /// without a stored index when opened fresh, after [`Run::reopen`] only the new rows and
    /// the old ones they interleave with; 0 for a complete run (its index is mapped).
    pub fn merged_rows(&self) -> u64 {
        self.merged
    }
}

/// What an open reuses from the previous snapshot, and what it merged.
pub(super) struct Reuse<'p> {
    prev: Option<&'p Run>,
    /// Per group name: leading index rows kept from the previous snapshot.
    kept: HashMap<String, u64>,
    /// Rows merged into group indexes.
    pub(super) merged: u64,
}

impl<'p> Reuse<'p> {
    pub(super) fn new(prev: Option<&'p Run>) -> Reuse<'p> {
        Reuse { prev, kept: HashMap::new(), merged: 0 }
    }

    /// Group `name`'s index over `shards`: the previous snapshot's extended, else built.
    pub(super) fn group(&mut self, shards: &[Shard], name: &str) -> (GroupIndex, u64, Vec<u64>) {
        if let Some(p) = self.prev {
            if let Some(pg) = p.groups.iter().find(|g| g.spec.name == name) {
                let old_rows: Vec<u64> = p.shards.iter().map(|s| s.group_rows(name)).collect();
                if let Some(e) = extend_group(&pg.index, &old_rows, pg.duplicates, &pg.duplicate_ids, shards, name) {
                    self.merged += e.merged;
                    self.kept.insert(name.to_string(), e.kept);
                    return (e.index, e.duplicates, e.duplicate_ids);
                }
            }
        }
        let built = build_group(shards, name);
        self.merged += built.0.len();
        built
    }

    /// Ragged `field`'s global offsets over `index`: the previous snapshot's for the rows its
    /// index kept (their full chunks shared, not copied: `index::extend_offsets`), the rest
    /// summed from the shards' lengths.
    pub(super) fn offsets(&self, shards: &[Shard], index: &GroupIndex, group: &str, field: &str) -> OffsetsMap {
        let old = self.prev.and_then(|p| p.fields.iter().find(|f| f.spec.path == field && f.spec.group == group));
        if let (Some(old), Some(&kept)) = (old.and_then(|f| f.offsets.as_ref()), self.kept.get(group)) {
            if let Some(o) = extend_offsets(old, kept, shards, index, group, field) {
                return o;
            }
        }
        OffsetsMap::Owned(ragged_offsets(shards, index, group, field))
    }

    /// Rows of aligned field `f` that lack it: the previous snapshot's count plus the new
    /// rows' when every shard's columns of `f` are as they were, else counted in full.
    pub(super) fn missing(&self, shards: &[Shard], columns: &[FieldColumns], f: &FieldSpec) -> u64 {
        let count = |s: &Shard, c: &FieldColumns, from: u64| match c.present {
            Some(p) => s.bytes(p).get(from as usize..).unwrap_or(&[]).iter().filter(|&&b| b == 0).count() as u64,
            None => s.group_rows(&f.group).saturating_sub(from),
        };
        let old = self.prev.and_then(|p| {
            let pf = p.fields.iter().find(|o| o.spec.path == f.path && o.spec.group == f.group)?;
            let same = pf.columns.len() == columns.len()
                && p.shards.len() == shards.len()
                && pf.columns.iter().zip(columns).all(|(a, b)| a.present.is_some() == b.present.is_some());
            same.then(|| (pf.missing, p.shards.iter().map(|s| s.group_rows(&f.group)).collect::<Vec<_>>()))
        });
        match old {
            Some((missing, rows)) => {
                missing + shards.iter().zip(columns).zip(rows).map(|((s, c), from)| count(s, c, from)).sum::<u64>()
            }
            None => shards.iter().zip(columns).map(|(s, c)| count(s, c, 0)).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::read::run::Run;
    use crate::{Client, SmallData, Value};

    fn event(c: &mut Client, id: u64) {
        let tag = format!("t{id}");
        let mut f: Vec<(&str, Value<'_>)> = vec![("x", Value::from(id as f64)), ("tag", Value::from(tag.as_str()))];
        if id.is_multiple_of(3) {
            f.push(("maybe", Value::from(id as f32)));
        }
        if id.is_multiple_of(7) {
            f.push(("unaligned_u", Value::from(id as u32)));
        }
        c.event(id, f).unwrap();
    }

    /// Waits until the servers committed `rows` rows of the run group.
    fn open_with(dir: &std::path::Path, rows: u64) -> Run {
        for _ in 0..2000 {
            let r = Run::open(dir).unwrap();
            if r.len() == rows {
                return r;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("the run never reached {rows} rows");
    }

    fn locs(r: &Run, g: usize) -> Vec<(usize, u64, u64)> {
        let mut v = Vec::new();
        let idx = &r.groups()[g].index;
        idx.for_each_segment(0, idx.len(), |l, n| v.push((l.shard, l.row, n)));
        v
    }

    fn assert_same(a: &Run, b: &Run) {
        assert_eq!(a.groups().len(), b.groups().len());
        for g in 0..a.groups().len() {
            let (la, lb) = (locs(a, g), locs(b, g));
            assert!(la == lb, "group {g}: the indexes differ ({} and {} segments)", la.len(), lb.len());
            assert_eq!(a.groups()[g].duplicates, b.groups()[g].duplicates, "group {g} duplicates");
        }
        for (sa, sb) in a.shards().iter().zip(b.shards()) {
            assert_eq!((&sa.lens, sa.columns.len(), sa.torn_bytes), (&sb.lens, sb.columns.len(), sb.torn_bytes));
            assert_eq!((sa.groups.len(), sa.fields.len(), sa.closed), (sb.groups.len(), sb.fields.len(), sb.closed));
        }
        for (fa, fb) in a.fields().iter().zip(b.fields()) {
            assert_eq!(fa.missing, fb.missing, "{}", fa.spec.path);
            assert_eq!(fa.offsets.as_ref().map(|o| o.get().to_vec()), fb.offsets.as_ref().map(|o| o.get().to_vec()));
        }
    }

    #[test]
    fn a_shard_log_continued_from_any_cut_equals_it_replayed_whole() {
        use crate::shard::reader::Shard;
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        crate::demo::write_demo(dir.path(), 3000, 1, 2, false).unwrap();
        let log_path = dir.path().join(crate::format::shard_dir_name(0)).join(crate::format::LOG_FILE);
        let log = std::fs::read(&log_path).unwrap();
        let n = log.len();
        // Cuts inside the header, mid-frame (torn tails) and at the end.
        for (a, b) in [(5, n / 3), (n / 3, n / 3 + 1), (n / 3 + 1, 2 * n / 3 + 7), (2 * n / 3 + 7, n), (n, n)] {
            let f = std::fs::OpenOptions::new().write(true).open(&log_path).unwrap();
            f.set_len(a as u64).unwrap();
            f.sync_all().unwrap();
            let first = Shard::load(dir.path(), 0, None);
            let mut f = std::fs::OpenOptions::new().append(true).open(&log_path).unwrap();
            f.write_all(&log[a..b]).unwrap();
            let whole = Shard::load(dir.path(), 0, None).unwrap();
            let Ok(first) = first else {
                assert!(a < crate::format::LOG_HEADER_LEN, "only a cut header fails to load");
                continue;
            };
            let next = Shard::load_after(dir.path(), 0, None, Some(&first)).unwrap();
            let key = |s: &Shard| (s.lens.clone(), s.columns.len(), s.fields.len(), s.torn_bytes, s.closed);
            assert_eq!(key(&next), key(&whole), "cut at {a}, then {b}");
            assert_eq!(next.log_bytes_read, (b as u64).min(n as u64) - (a as u64 - first.torn_bytes), "cut {a}..{b}");
        }
    }

    #[test]
    fn a_reopened_snapshot_equals_a_fresh_open_and_merges_only_the_new_and_interleaved_rows() {
        let dir = tempfile::tempdir().unwrap();
        let smd = SmallData::builder(dir.path()).servers(3).batch_events(50).build().unwrap();
        let mut clients: Vec<Client> = (0..4).map(|_| smd.client()).collect();
        let mut rows = 0u64;
        let mut prev: Option<Run> = None;
        let mut chunked = 0;
        for round in 0..6u64 {
            // Each client writes its own ids; client 3 lags (earlier ids arrive later), and
            // round 2 repeats an id (a duplicate).
            for (k, c) in clients.iter_mut().enumerate() {
                let base = if k == 3 && round > 0 { (round - 1) * 1000 } else { round * 1000 };
                for j in 0..200u64 {
                    event(c, base + j * 4 + k as u64);
                }
                if round == 2 && k == 0 {
                    event(c, base);
                    rows += 1;
                }
                c.flush().unwrap();
                rows += 200;
            }
            let fresh = open_with(dir.path(), rows);
            if let Some(p) = &prev {
                let again = p.reopen().unwrap();
                assert_same(&again, &fresh);
                // Extended dense indexes keep their words in shared chunks (small in tests).
                let idx = &again.groups()[0].index;
                chunked += u32::from(!idx.is_runs() && idx.dense_words().is_none());
                assert!(again.merged_rows() < fresh.merged_rows(), "round {round}: merged {}", again.merged_rows());
                assert!(again.merged_rows() >= rows - p.len(), "every new row is merged");
                // The logs are read from where the previous replay ended: every new byte, once.
                let (now, before, read) = (fresh.log_bytes_read(), p.log_bytes_read(), again.log_bytes_read());
                assert!(read > 0 && read < now && read + before >= now, "round {round}: {read} of {now} ({before})");
            }
            prev = Some(fresh);
        }
        assert!(prev.unwrap().groups()[0].duplicates >= 1);
        assert!(chunked >= 4, "the reopened indexes were chunked {chunked} times");
        drop(clients);
        smd.done().unwrap();
    }

    /// Every row's `tag` read through `r` (one by one, and as one ragged range) is `t{id}`.
    fn tags_right(r: &Run) {
        let mut ids = vec![0u64; r.len() as usize];
        r.read_ids("", 0, &mut ids).unwrap();
        let tag = r.field("tag").unwrap();
        let want: Vec<String> = ids.iter().map(|id| format!("t{id}")).collect();
        for (i, w) in want.iter().enumerate() {
            assert_eq!(tag.ragged_row(i as u64).unwrap(), w.as_bytes(), "row {i}");
        }
        let mut out = vec![0u8; want.iter().map(String::len).sum()];
        tag.read_ragged(0, r.len(), &mut out).unwrap();
        assert_eq!(out, want.concat().as_bytes());
    }

    #[test]
    fn reopened_snapshots_share_the_ragged_offsets_chunks_of_the_kept_rows_and_read_right() {
        use crate::index::OffsetsMap;
        let dir = tempfile::tempdir().unwrap();
        let smd = SmallData::builder(dir.path()).servers(2).batch_events(40).build().unwrap();
        let mut c = smd.client();
        let mut snaps: Vec<Run> = Vec::new();
        for round in 0..5u64 {
            for j in 0..300u64 {
                event(&mut c, round * 1000 + j);
            }
            c.flush().unwrap();
            let rows = 300 * (round + 1);
            let next = match snaps.last() {
                None => open_with(dir.path(), rows),
                Some(p) => (0..2000)
                    .find_map(|_| {
                        let r = p.reopen().unwrap();
                        (r.len() == rows).then_some(r).or_else(|| {
                            std::thread::sleep(std::time::Duration::from_millis(5));
                            None
                        })
                    })
                    .expect("the run reaches its rows"),
            };
            snaps.push(next);
        }
        fn tag(r: &Run) -> Option<&OffsetsMap> {
            r.fields().iter().find(|f| f.spec.path == "tag").and_then(|f| f.offsets.as_ref())
        }
        let mut shared_total = 0;
        for w in snaps.windows(2).skip(1) {
            let (Some(OffsetsMap::Chunked(old)), Some(OffsetsMap::Chunked(new))) = (tag(&w[0]), tag(&w[1])) else {
                panic!("reopened snapshots keep ragged offsets in chunks");
            };
            let shared = old.chunks().iter().zip(new.chunks()).take_while(|(a, b)| Arc::ptr_eq(a, b)).count();
            // Only the chunks the interleaved tail (a lagging server's batch) reaches are new.
            assert!(
                shared + 3 >= old.chunks().len() && shared >= 1,
                "{shared} of {} chunks shared",
                old.chunks().len()
            );
            assert!(
                new.chunks()[shared..].iter().all(|c| !old.chunks().iter().any(|o| Arc::ptr_eq(o, c))),
                "the rest is new"
            );
            shared_total += shared;
        }
        assert!(shared_total >= 10, "{shared_total}");
        // Every snapshot, old ones included, reads right after newer ones were made.
        for r in &snaps {
            tags_right(r);
        }
        drop(c);
        smd.done().unwrap();
    }
}
