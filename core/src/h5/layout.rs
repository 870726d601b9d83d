//! The run's dataset layout: the one description of which datasets a run shows, at which
//! HDF5 paths, with which dtype, shape, fill, attributes and byte source. The view's
//! `run.h5` and `.npy` files, and `smdfs export`, are both built from [`plan`], so the mounted
//! file and the exported file cannot drift apart. Layout (readers' code depends on it):
//! `timestamp`, `<path>` per aligned field, `<G>/timestamp` + `<G>/<path>` for a named
//! aligned group, `<P>` + `<P>_timestamp` for an unaligned field, ragged `x` as `x` (flat
//! values) + `x_len` + `x_offsets` (rows + 1), `_present/<path>` for aligned fields with
//! missing rows, `summary/<name>`.
//!
//! Conventions (netCDF-4/CF, so xarray, netCDF-C, kerchunk and zarr readers agree): every
//! group's event-id column is a dimension scale (`timestamp`, `<G>/timestamp`,
//! `<P>_timestamp`) attached to axis 0 of each dataset of the group (fields, masks, `x_len`);
//! every other axis `k` of a dataset `<path>` is the dimension `<path>_dim<k>` (the flat ragged
//! values' axis 0 included), a dimension without a variable. Each field's HDF5 fill property is
//! the manifest's fill; a `_FillValue` attribute — what readers take as "missing" — is set only
//! where rows can be missing (an aligned fixed field with missing rows), and such a field names
//! its mask in `ancillary_variables`; masks carry `flag_values`/`flag_meanings`.

use crate::error::{Error, Result};
use crate::h5::skeleton::{text_dataset, AttrValue, DatasetPlan, Dimension};
use crate::model::dtype::Dtype;
use crate::model::value::Kind;
use crate::read::run::Run;

/// Where a dataset's bytes come from.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Source {
    /// Fixed-width rows of one column per shard, gathered through a group's index.
    Gather {
        /// Index of the group in [`Run::groups`].
        group: usize,
        /// Per shard: the column (`None` reads as `fill`).
        columns: Vec<Option<u32>>,
        /// Bytes per row.
        row_bytes: usize,
        /// One row of fill bytes.
        fill: Vec<u8>,
    },
    /// A ragged field's global offsets (u64, rows + 1).
    Offsets {
        /// Index of the field in [`Run::fields`].
        field: usize,
    },
    /// A ragged field's flat values.
    RaggedValues {
        /// Index of the field in [`Run::fields`].
        field: usize,
        /// Bytes per element.
        elem: usize,
    },
    /// Literal bytes (summary values).
    Literal(Vec<u8>),
}

/// One dataset of the layout.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetLayout {
    /// Path in the HDF5 file, without the leading `/` (`det/image`).
    pub path: String,
    /// Element type.
    pub dtype: Dtype,
    /// Full shape.
    pub shape: Vec<u64>,
    /// Where its bytes come from.
    pub source: Source,
    /// Whether the view serves it as `arrays/<path>.npy` too.
    pub npy: bool,
    /// One element's fill value (the HDF5 fill value property).
    pub fill: Option<Vec<u8>>,
    /// Attributes.
    pub attrs: Vec<(String, AttrValue)>,
    /// Per axis, the absolute path of its dimension scale (`/timestamp`, `/det/image_dim1`);
    /// empty for scalars. The dimension's name is the path's last segment.
    pub dims: Vec<String>,
    /// Whether this dataset is a dimension scale itself (an event-id column).
    pub scale: bool,
}

impl DatasetLayout {
    /// Bytes of the whole dataset.
    pub fn byte_size(&self) -> u64 {
        self.shape.iter().product::<u64>() * self.dtype.size() as u64
    }

    /// Bytes of one row (first dimension), for chunking and streaming.
    pub fn row_bytes(&self) -> u64 {
        self.shape.iter().skip(1).product::<u64>() * self.dtype.size() as u64
    }

    /// The dimension names of its axes (the scales' last path segments), as xarray and a Zarr
    /// array's `dimension_names` show them.
    pub fn dim_names(&self) -> Vec<String> {
        self.dims.iter().map(|d| d.rsplit('/').next().unwrap_or(d).to_string()).collect()
    }

    /// The skeleton plan of this dataset (literal data included, other bytes left as holes).
    pub fn skeleton_plan(&self) -> DatasetPlan {
        DatasetPlan {
            dims: self.dims.clone(),
            scale: self.scale,
            path: format!("/{}", self.path),
            dtype: self.dtype,
            shape: self.shape.clone(),
            fill: self.fill.clone(),
            data: match &self.source {
                Source::Literal(b) => Some(b.clone()),
                _ => None,
            },
            attrs: self.attrs.clone(),
        }
    }
}

fn gather(group: usize, columns: Vec<Option<u32>>, row_bytes: usize, fill: Vec<u8>) -> Source {
    Source::Gather { group, columns, row_bytes, fill }
}

fn dataset(path: String, dtype: Dtype, shape: Vec<u64>, source: Source) -> DatasetLayout {
    let dims = (0..shape.len()).map(|k| format!("/{path}_dim{k}")).collect();
    DatasetLayout { path, dtype, shape, source, npy: true, fill: None, attrs: vec![], dims, scale: false }
}

fn text(s: impl Into<String>) -> AttrValue {
    AttrValue::Str(s.into())
}

/// The dimensions without a variable that `plan`'s datasets name (every dimension that is not
/// a scale dataset of the plan), with their lengths, in first use order.
pub fn dimensions(plan: &[DatasetLayout]) -> Vec<Dimension> {
    let scales: std::collections::HashSet<String> =
        plan.iter().filter(|d| d.scale).map(|d| format!("/{}", d.path)).collect();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for d in plan {
        for (dim, &len) in d.dims.iter().zip(&d.shape) {
            if !scales.contains(dim) && seen.insert(dim.clone()) {
                out.push(Dimension { path: dim.clone(), len });
            }
        }
    }
    out
}

/// The run's datasets, in HDF5 order.
pub fn plan(run: &Run) -> Vec<DatasetLayout> {
    let mut ds = Vec::new();
    let groups = run.groups();
    // Event-id columns: the run's, each named aligned group's, each unaligned field's.
    for (gi, g) in groups.iter().enumerate() {
        let path = if g.spec.name.is_empty() {
            "timestamp".to_string()
        } else if g.spec.aligned {
            format!("{}/timestamp", g.spec.name)
        } else {
            format!("{}_timestamp", g.spec.name)
        };
        let mut d =
            dataset(path, Dtype::U64, vec![g.index.len()], gather(gi, run.id_columns(gi).to_vec(), 8, vec![0; 8]));
        d.dims = vec![format!("/{}", d.path)];
        d.scale = true;
        d.attrs.push(("long_name".into(), text("event id")));
        d.attrs.push(("description".into(), text("event ids, ascending")));
        ds.push(d);
    }
    // The event axis of each group: the scale of its id column.
    let axis = |gi: usize| -> String {
        let g = &groups[gi].spec;
        if g.name.is_empty() {
            "/timestamp".to_string()
        } else if g.aligned {
            format!("/{}/timestamp", g.name)
        } else {
            format!("/{}_timestamp", g.name)
        }
    };
    for (fi, f) in run.fields().iter().enumerate() {
        let g = &groups[f.group];
        let rows = g.index.len();
        let base = if g.spec.aligned && !g.spec.name.is_empty() {
            format!("{}/{}", g.spec.name, f.spec.path)
        } else {
            f.spec.path.clone()
        };
        let mut attrs = vec![
            ("dtype".into(), AttrValue::Str(f.spec.dtype.name().into())),
            ("kind".into(), AttrValue::Str(format!("{:?}", f.spec.kind).to_lowercase())),
            ("aligned".into(), AttrValue::I64(i64::from(g.spec.aligned))),
            ("missing".into(), AttrValue::U64(f.missing)),
        ];
        if let Some(u) = &f.spec.units {
            attrs.push(("units".into(), AttrValue::Str(u.clone())));
        }
        for (name, value) in &f.spec.attrs {
            attrs.push((name.clone(), AttrValue::Str(value.clone())));
        }
        // Only rows that can be missing get a `_FillValue` (readers mask values equal to it).
        let can_miss = g.spec.aligned && f.missing > 0;
        if can_miss && f.spec.kind == Kind::Fixed {
            attrs.push(("_FillValue".into(), AttrValue::Typed(f.spec.dtype, f.spec.fill.clone())));
        }
        if can_miss {
            attrs.push(("ancillary_variables".into(), text(format!("/_present/{base}"))));
        }
        if let Some(st) = run.stats().get(&f.spec.path) {
            attrs.push(("count".into(), AttrValue::U64(st.count)));
            if st.count > 0 {
                attrs.push(("min".into(), AttrValue::F64(st.min)));
                attrs.push(("max".into(), AttrValue::F64(st.max)));
                attrs.push(("mean".into(), AttrValue::F64(st.mean())));
            }
        }
        if f.spec.kind == Kind::Fixed {
            let mut shape = vec![rows];
            shape.extend(f.spec.shape.iter().map(|&d| d as u64));
            let cols = f.columns.iter().map(|c| c.data).collect();
            let src = gather(f.group, cols, f.spec.row_bytes(), f.spec.fill.repeat(f.spec.elements_per_row()));
            let mut d = dataset(base.clone(), f.spec.dtype, shape, src);
            d.fill = Some(f.spec.fill.clone());
            d.attrs = attrs;
            d.dims[0] = axis(f.group);
            ds.push(d);
        } else {
            let elems = f.offsets.as_ref().map_or(0, |o| o.elements());
            attrs.push((
                "ragged".into(),
                AttrValue::Str(format!("row i is {base}[{base}_offsets[i]:{base}_offsets[i+1]]")),
            ));
            let src = Source::RaggedValues { field: fi, elem: f.spec.dtype.size() };
            let mut d = dataset(base.clone(), f.spec.dtype, vec![elems], src);
            d.fill = Some(f.spec.fill.clone());
            d.attrs = attrs;
            ds.push(d);
            let cols = f.columns.iter().map(|c| c.len).collect();
            let mut len = dataset(format!("{base}_len"), Dtype::U64, vec![rows], gather(f.group, cols, 8, vec![0; 8]));
            len.dims[0] = axis(f.group);
            len.attrs = vec![
                ("long_name".into(), text(format!("elements of {base} in each row"))),
                // CF's contiguous ragged array: this count variable runs along the values' axis.
                ("sample_dimension".into(), text(format!("{}_dim0", base.rsplit('/').next().unwrap_or(&base)))),
            ];
            ds.push(len);
            let mut offs =
                dataset(format!("{base}_offsets"), Dtype::U64, vec![rows + 1], Source::Offsets { field: fi });
            offs.attrs = vec![(
                "long_name".into(),
                text(format!("row i of {base} is {base}[{base}_offsets[i]:{base}_offsets[i+1]] (rows + 1 entries)")),
            )];
            ds.push(offs);
        }
        if can_miss {
            let cols = f.columns.iter().map(|c| c.present).collect();
            let mut m = dataset(format!("_present/{base}"), Dtype::Bool, vec![rows], gather(f.group, cols, 1, vec![0]));
            m.dims[0] = axis(f.group);
            m.attrs = vec![
                ("long_name".into(), text(format!("whether {base} is present in the event"))),
                ("flag_values".into(), AttrValue::Array(Dtype::Bool, vec![0, 1])),
                ("flag_meanings".into(), text("missing present")),
                ("missing".into(), AttrValue::U64(f.missing)),
            ];
            ds.push(m);
        }
    }
    for s in run.summary() {
        let path = format!("summary/{}", s.path);
        let (dtype, shape) = match s.kind {
            Kind::Fixed => (s.dtype, s.shape.iter().map(|&d| d as u64).collect()),
            _ => {
                let p = text_dataset(&format!("/{path}"), &String::from_utf8_lossy(&s.data()));
                (p.dtype, p.shape)
            }
        };
        let mut d = dataset(path, dtype, shape, Source::Literal(s.data()));
        d.npy = false;
        d.attrs.insert(0, ("long_name".into(), text(format!("summary value {}", s.path))));
        if s.kind == Kind::Str {
            d.attrs.push(("encoding".into(), text("utf-8")));
        }
        ds.push(d);
    }
    ds
}

/// Attributes of the file's root group.
pub fn root_attrs(run: &Run) -> Vec<(String, AttrValue)> {
    vec![
        ("smdfs_format_version".to_string(), AttrValue::U64(u64::from(crate::format::FORMAT_VERSION))),
        ("events".to_string(), AttrValue::U64(run.len())),
        ("state".to_string(), AttrValue::Str(run.state().to_string())),
    ]
}

impl DatasetLayout {
    /// Bytes `at..at + out.len()` of this dataset of `run` (see [`plan`]): gathered in event-id order, fill
    /// where an event lacks the field. Partial rows at either end are handled; whole rows
    /// are gathered straight into `out`.
    pub fn read(&self, run: &Run, at: u64, out: &mut [u8]) -> Result<()> {
        let short = || Error::Usage(format!("dataset /{} read past its committed data", self.path));
        match &self.source {
            Source::Gather { group, columns, row_bytes, fill } => {
                if out.is_empty() {
                    return Ok(());
                }
                let g = run.gatherer(*group, columns, *row_bytes, fill)?;
                let rb = *row_bytes as u64;
                let (mut at, mut out) = (at, out);
                while !out.is_empty() {
                    let row = at / rb;
                    let skip = (at % rb) as usize;
                    if skip == 0 && out.len() >= *row_bytes {
                        let whole = out.len() / *row_bytes * *row_bytes;
                        g.rows(row, &mut out[..whole])?;
                        at += whole as u64;
                        out = &mut out[whole..];
                    } else {
                        let mut tmp = vec![0u8; *row_bytes];
                        g.row(row, &mut tmp)?;
                        let take = (*row_bytes - skip).min(out.len());
                        out[..take].copy_from_slice(&tmp[skip..skip + take]);
                        at += take as u64;
                        out = &mut out[take..];
                    }
                }
                Ok(())
            }
            Source::Offsets { field } => {
                // Only the entries the read covers (the table may be in shared chunks, or
                // checked chunk by chunk as served).
                let offs = run.fields()[*field].offsets.as_ref();
                if !offs.is_some_and(|o| o.read_bytes(at, out)) {
                    return Err(short());
                }
                Ok(())
            }
            Source::RaggedValues { field, elem } => {
                let f = &run.fields()[*field];
                let Some(map) = f.offsets.as_ref() else { return Err(short()) };
                // Offsets by binary search and by row, never the whole table (it may be in
                // shared chunks, or checked chunk by chunk as served).
                let off = |row: usize| map.at(row).unwrap_or(0);
                let reader = run.field(&f.spec.path)?;
                let es = *elem as u64;
                let (a, b) = (at, at + out.len() as u64);
                if map.is_empty() || map.elements().saturating_mul(es) < b {
                    return Err(short());
                }
                // The row whose values start last at or before byte `x`.
                let row_at = |x: u64| map.partition_point(|o| o.saturating_mul(es) <= x).saturating_sub(1);
                // A row cut by the read's start or end, checked against the offsets.
                let cut_row = |row: usize| -> Result<&[u8]> {
                    let vals = reader.ragged_row(row as u64)?;
                    let want = map.at(row + 1).map(|e| e.saturating_sub(off(row)).saturating_mul(es));
                    if want != Some(vals.len() as u64) {
                        return Err(Error::Usage(format!(
                            "dataset /{}: row {row} disagrees with its offsets",
                            self.path
                        )));
                    }
                    Ok(vals)
                };
                let (mut row, mut pos) = (row_at(a), 0usize);
                if off(row) * es < a {
                    let from = (a - off(row) * es) as usize;
                    let vals = cut_row(row)?;
                    let take = (vals.len() - from).min(out.len());
                    out[..take].copy_from_slice(&vals[from..from + take]);
                    pos = take;
                    row += 1;
                }
                if pos < out.len() {
                    // Whole rows in one batched read, then the head of a row cut by the end.
                    let last = row_at(b);
                    let whole = ((off(last) - off(row)) * es) as usize;
                    reader.read_ragged(row as u64, last as u64, &mut out[pos..pos + whole])?;
                    pos += whole;
                    if pos < out.len() {
                        let take = out.len() - pos;
                        out[pos..].copy_from_slice(&cut_row(last)?[..take]);
                    }
                }
                Ok(())
            }
            Source::Literal(b) => {
                let a = at as usize;
                out.copy_from_slice(b.get(a..a + out.len()).ok_or_else(short)?);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte window of the demo's ragged `tag` values (starts and ends inside rows, on
    /// row boundaries, across shards, empty) reads as the same window of the rows' values
    /// concatenated one by one.
    #[test]
    fn ragged_values_read_right_in_any_byte_window() {
        let dir = tempfile::tempdir().unwrap();
        crate::demo::write_demo(&dir.path().join("r"), 2000, 2, 3, false).unwrap();
        let run = Run::open(dir.path().join("r")).unwrap();
        let d = plan(&run).into_iter().find(|d| d.path == "tag").expect("the demo's tag values");
        assert!(matches!(d.source, Source::RaggedValues { .. }));
        let f = run.field("tag").unwrap();
        let want: Vec<u8> = (0..f.rows()).flat_map(|i| f.ragged_row(i).unwrap().to_vec()).collect();
        assert!(want.len() > 10_000);
        let mut got = vec![0u8; want.len()];
        d.read(&run, 0, &mut got).unwrap();
        assert!(got == want, "the whole dataset");
        let mut x = 0x9e3779b97f4a7c15u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = x % want.len() as u64;
            let len = (x >> 32) % 200.min(want.len() as u64 - at + 1);
            let mut out = vec![0u8; len as usize];
            d.read(&run, at, &mut out).unwrap();
            assert_eq!(out, want[at as usize..(at + len) as usize], "bytes {at}..+{len}");
        }
        assert!(d.read(&run, want.len() as u64 - 1, &mut [0u8; 2]).is_err(), "a read past the end");
    }
}
