//! What a complete run must be before a reader serves it as complete: its manifest (the one
//! source of truth the writer sealed at `done()`) agrees with the shards' own checksummed
//! schema and close records, and its stored index covers exactly the shards' rows.
//!
//! The policy (docs/ARCHITECTURE.md, "Damaged complete runs"): damage to what holds data —
//! a shard directory or log missing, a close record absent or torn, shard directories the
//! manifest does not count, a schema that disagrees with the shards — is refused by every
//! command. Damage to what is derived from the shards — an index file missing, truncated,
//! swapped or naming rows that do not exist, `shard_rows`/`rows` that disagree, a close
//! offset that misses its record — is worked around: the reader rebuilds that part from the
//! intact shards as for a crashed run and says so in `Run::warnings`; `verify` reports it
//! as damage. A complete run is never served smaller than its shards.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::manifest::{ChunkCrcs, GroupIndexInfo, Manifest, MANIFEST_FILE};
use crate::format::{shard_dir_name, LOG_FILE};
use crate::index::{build_group, GroupIndex};
use crate::model::schema::FieldSpec;
use crate::shard::reader::Shard;

fn corrupt(path: impl Into<std::path::PathBuf>, why: String) -> Error {
    Error::Corrupt { path: path.into(), offset: 0, why }
}

/// Refuses a complete run whose shards are not all there and closed, or whose manifest
/// counts other shards than the directory holds. Returns warnings for close records found
/// by replay instead of at the manifest's offset.
pub(crate) fn check_shards(dir: &Path, m: &Manifest, shards: &[Shard]) -> Result<Vec<String>> {
    let manifest = dir.join(MANIFEST_FILE);
    let offsets = m.index.as_ref().map_or(0, |x| x.close_offsets.len());
    if offsets != m.shards {
        return Err(corrupt(manifest, format!("{} shards but {offsets} close offsets", m.shards)));
    }
    let extra = dir.join(shard_dir_name(m.shards));
    if extra.symlink_metadata().is_ok() {
        return Err(corrupt(
            manifest,
            format!("the manifest counts {} shards but {} exists too", m.shards, extra.display()),
        ));
    }
    let mut warnings = Vec::new();
    for s in shards {
        let log = s.dir.join(LOG_FILE);
        if !s.has_log {
            return Err(corrupt(log, "missing: a complete run must have every shard's log".into()));
        }
        if !s.closed {
            return Err(corrupt(
                log,
                "has no valid close record: a complete run's log ends with one (the log is truncated or damaged)"
                    .into(),
            ));
        }
        if !s.close_at_offset {
            warnings.push(format!(
                "shard {}: the close record is not at the manifest's close offset; read by replaying the log",
                s.index
            ));
        }
    }
    Ok(warnings)
}

/// The first attribute in which two specs of one field differ, with both values.
fn spec_diff(a: &FieldSpec, b: &FieldSpec) -> Option<(&'static str, String, String)> {
    let d = |what, x: String, y: String| (x != y).then_some((what, x, y));
    d("kind", format!("{:?}", a.kind).to_lowercase(), format!("{:?}", b.kind).to_lowercase())
        .or_else(|| d("dtype", a.dtype.name().into(), b.dtype.name().into()))
        .or_else(|| d("shape", format!("{:?}", a.shape), format!("{:?}", b.shape)))
        .or_else(|| d("group", format!("{:?}", a.group), format!("{:?}", b.group)))
        .or_else(|| d("fill", format!("{:?}", a.fill), format!("{:?}", b.fill)))
        .or_else(|| d("units", format!("{:?}", a.units), format!("{:?}", b.units)))
        .or_else(|| d("attrs", format!("{:?}", a.attrs), format!("{:?}", b.attrs)))
}

/// Refuses a complete run whose manifest schema disagrees with the schema records of its
/// shards (checksummed in their logs): every shard field and group must be in the manifest
/// as the shard defines it.
pub(crate) fn check_schema(dir: &Path, m: &Manifest, shards: &[Shard]) -> Result<()> {
    let manifest = dir.join(MANIFEST_FILE);
    for s in shards {
        let rec = format!("{}/{LOG_FILE}", shard_dir_name(s.index));
        for f in &s.fields {
            let Some((_, mine)) = m.schema.field(&f.path) else {
                return Err(corrupt(manifest, format!("field {:?} of {rec} is not in the manifest's schema", f.path)));
            };
            if let Some((what, a, b)) = spec_diff(mine, f) {
                return Err(corrupt(
                    manifest,
                    format!("field {:?}: the manifest says {what} {a}, the schema record in {rec} says {b}", f.path),
                ));
            }
        }
        for g in &s.groups {
            match m.schema.group(&g.name) {
                Some((_, mine)) if mine.aligned == g.aligned => {}
                Some((_, mine)) => {
                    return Err(corrupt(
                        manifest,
                        format!(
                            "group {:?}: the manifest says aligned {}, the schema record in {rec} says {}",
                            g.name, mine.aligned, g.aligned
                        ),
                    ))
                }
                None => {
                    return Err(corrupt(
                        manifest,
                        format!("group {:?} of {rec} is not in the manifest's schema", g.name),
                    ))
                }
            }
        }
    }
    // A manifest field that no shard holds is legitimate: the writer registers a field at
    // first sight, even in an event it then rejects. It reads as missing in every row.
    Ok(())
}

/// The stored index of one group if it covers exactly the shards' rows, else why not (the
/// reader then rebuilds it from the shards and warns). With chunk checksums (document
/// revision 5) the words are checked chunk by chunk as they are served, and a chunk that
/// fails switches the index to one rebuilt from the shards, with a warning in `late`; without
/// them (revision ≤ 4) the whole index is checked now, O(index words).
pub(crate) fn stored_index(
    dir: &Path,
    entry: Option<&GroupIndexInfo>,
    group: &str,
    shards: &Arc<Vec<Shard>>,
    late: &Arc<Mutex<Vec<String>>>,
) -> std::result::Result<GroupIndex, String> {
    let Some(e) = entry else { return Err(format!("the manifest has no index entry for group {group:?}")) };
    let rows: Vec<u64> = shards.iter().map(|s| s.group_rows(group)).collect();
    if e.shard_rows != rows {
        return Err(format!(
            "group {group:?}: the manifest's shard_rows {:?} disagree with the shards' {rows:?}",
            e.shard_rows
        ));
    }
    if e.rows != rows.iter().sum::<u64>() {
        return Err(format!(
            "group {group:?}: the manifest says {} rows, the shards hold {}",
            e.rows,
            rows.iter().sum::<u64>()
        ));
    }
    if e.chunks != ChunkCrcs::default() {
        let (sh, g, sink) = (Arc::clone(shards), group.to_string(), Arc::clone(late));
        let name = group.to_string();
        let idx = GroupIndex::load_checked(
            &dir.join(&e.file),
            &e.chunks,
            move || build_group(&sh, &g).0,
            move |why| {
                crate::sync::lock(&sink)
                    .push(format!("group {name:?}: {why}; indexed from the shards instead (run `smdfs verify`)"))
            },
        )
        .map_err(|x| format!("group {group:?}: {x}"))?;
        if idx.len() != e.rows {
            return Err(format!("group {group:?}: {} has {} rows, the manifest says {}", e.file, idx.len(), e.rows));
        }
        return Ok(idx);
    }
    let idx = GroupIndex::load(&dir.join(&e.file)).map_err(|x| format!("group {group:?}: {x}"))?;
    idx.check_covers(&rows).map_err(|(_, why)| format!("group {group:?}: {}: {why}", e.file))?;
    Ok(idx)
}
