//! A serializable description of a run: what `smdfs info` prints, available to library users.

use serde::Serialize;

use crate::format::manifest::RunState;
use crate::model::dtype::Dtype;
use crate::model::value::Kind;
use crate::read::run::Run;

/// One dataset of a run, as the view will show it.
#[derive(Clone, Debug, Serialize)]
pub struct DatasetInfo {
    /// Field path.
    pub path: String,
    /// Element type.
    pub dtype: Dtype,
    /// Fixed, ragged, bytes or str.
    pub kind: Kind,
    /// Per-event shape.
    pub event_shape: Vec<usize>,
    /// Dataset shape: rows then the event shape (ragged kinds: rows).
    pub shape: Vec<u64>,
    /// Rows (events of the field's group).
    pub rows: u64,
    /// Alignment group (`""` is the run).
    pub group: String,
    /// False for unaligned fields.
    pub aligned: bool,
    /// Rows where the event lacked the field.
    pub missing: u64,
    /// Shards holding the field.
    pub shards: usize,
    /// Ragged kinds: total elements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elements: Option<u64>,
}

/// One group.
#[derive(Clone, Debug, Serialize)]
pub struct GroupInfo {
    /// Name (`""` is the run).
    pub name: String,
    /// Aligned group or an unaligned field's own.
    pub aligned: bool,
    /// Rows.
    pub rows: u64,
    /// Rows whose event id repeats the previous row's.
    pub duplicates: u64,
    /// Some of the duplicated ids.
    pub duplicate_ids: Vec<u64>,
}

/// One summary value.
#[derive(Clone, Debug, Serialize)]
pub struct SummaryInfo {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Numeric scalars: the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Text values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Everything `smdfs info` reports.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    /// The run directory.
    pub dir: String,
    /// Writing, complete or crashed.
    pub state: RunState,
    /// Events (rows of the run group).
    pub events: u64,
    /// Shards.
    pub shards: usize,
    /// Torn bytes ignored at the end of shard logs.
    pub torn_bytes: u64,
    /// Groups.
    pub groups: Vec<GroupInfo>,
    /// Datasets.
    pub datasets: Vec<DatasetInfo>,
    /// Summary values.
    pub summary: Vec<SummaryInfo>,
    /// Statistics of numeric scalar fields.
    pub stats: crate::model::schema::StatsMap,
    /// Problems the reader worked around (shards disagreeing on a field).
    pub warnings: Vec<String>,
}

impl RunInfo {
    /// Describes a run.
    pub fn of(run: &Run) -> RunInfo {
        let datasets = run
            .fields()
            .iter()
            .map(|f| {
                let g = &run.groups()[f.group];
                let rows = g.index.len();
                let mut shape = vec![rows];
                if f.spec.kind == Kind::Fixed {
                    shape.extend(f.spec.shape.iter().map(|&d| d as u64));
                }
                DatasetInfo {
                    path: f.spec.path.clone(),
                    dtype: f.spec.dtype,
                    kind: f.spec.kind,
                    event_shape: f.spec.shape.clone(),
                    shape,
                    rows,
                    group: f.spec.group.clone(),
                    aligned: g.spec.aligned,
                    missing: f.missing,
                    shards: f.columns.iter().filter(|c| c.data.is_some()).count(),
                    elements: f.offsets.as_ref().map(|o| o.elements()),
                }
            })
            .collect();
        let groups = run
            .groups()
            .iter()
            .map(|g| GroupInfo {
                name: g.spec.name.clone(),
                aligned: g.spec.aligned,
                rows: g.index.len(),
                duplicates: g.duplicates,
                duplicate_ids: g.duplicate_ids.clone(),
            })
            .collect();
        let summary = run
            .summary()
            .iter()
            .map(|s| SummaryInfo {
                name: s.path.clone(),
                dtype: s.dtype,
                shape: s.shape.clone(),
                value: s.shape.is_empty().then(|| s.as_f64()).flatten(),
                text: matches!(s.kind, Kind::Str | Kind::Bytes)
                    .then(|| String::from_utf8_lossy(&s.data()).into_owned()),
            })
            .collect();
        RunInfo {
            dir: run.dir().display().to_string(),
            state: run.state(),
            events: run.len(),
            shards: run.shards().len(),
            torn_bytes: run.shards().iter().map(|s| s.torn_bytes).sum(),
            groups,
            datasets,
            summary,
            stats: run.stats().clone(),
            warnings: run.warnings().to_vec(),
        }
    }
}
