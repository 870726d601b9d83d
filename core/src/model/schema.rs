//! The run's schema: alignment groups and fields, fixed at first sight, their validation and
//! their merge over shards or ranks. The writer's shared copy that registers fields at first
//! sight is `registry`; per-field running statistics are `stats`.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::dtype::Dtype;
use crate::model::value::{describe, Kind, Value};

mod registry;
mod stats;

pub(crate) use registry::Registry;
pub use stats::{merge_stats, Stats, StatsMap};

/// Index of a field in the run's schema (order of first sight).
pub type FieldId = u32;
/// Index of an alignment group in the run's schema; 0 is the run's own group.
pub type GroupId = u32;

/// Id of the run's aligned group.
pub const RUN_GROUP_ID: GroupId = 0;
/// Name of the run's aligned group.
pub const RUN_GROUP: &str = "";

/// An alignment group: its own event-id column, one row per event that touched it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// `""` for the run, a group name, or an unaligned field's path.
    pub name: String,
    /// Aligned groups fill missing fields (and keep presence masks); an unaligned field's
    /// group has rows only where the field is present.
    pub aligned: bool,
}

/// A field: everything fixed at first sight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldSpec {
    /// `/`-separated path.
    pub path: String,
    /// Fixed shape, ragged array, bytes or text.
    pub kind: Kind,
    /// Element type (u8 for bytes and text).
    pub dtype: Dtype,
    /// Per-event shape (fixed kind only; empty for scalars).
    pub shape: Vec<usize>,
    /// Name of the field's alignment group.
    pub group: String,
    /// One element's fill value (little-endian), used where an aligned event lacks the field.
    pub fill: Vec<u8>,
    /// Physical units, if given; shown as the `units` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<String>,
    /// Other text attributes the writer gave (`long_name`, `description`, …), by name; shown
    /// as attributes of the field's dataset and array.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, String>,
}

/// The largest row of a fixed field a reader accepts (4 GiB): a shape beyond it (or one whose
/// product overflows) is damage, refused by every command.
pub const MAX_ROW_BYTES: u64 = 1 << 32;

/// Attribute names the view sets itself: a writer's attribute may not take one.
pub const RESERVED_ATTRS: &[&str] = &[
    "dtype",
    "kind",
    "aligned",
    "missing",
    "units",
    "count",
    "min",
    "max",
    "mean",
    "_FillValue",
    "ancillary_variables",
    "flag_values",
    "flag_meanings",
    "sample_dimension",
    "CLASS",
    "NAME",
    "DIMENSION_LIST",
    "REFERENCE_LIST",
];

/// Checks a writer-given attribute name: not empty, not one the view sets itself, and not a
/// netCDF/HDF5 internal (`_Netcdf4…`, `_nc…`).
pub fn check_attr_name(path: &str, name: &str) -> Result<()> {
    let why = if name.is_empty() {
        "an attribute name must not be empty".to_string()
    } else if RESERVED_ATTRS.contains(&name) || name.starts_with("_Netcdf4") || name.starts_with("_nc") {
        format!("attribute {name:?} is set by smdfs itself; choose another name")
    } else {
        return Ok(());
    };
    Err(Error::BadValue { field: path.into(), why })
}

impl FieldSpec {
    /// Elements per row for fixed fields (1 for scalars).
    pub fn elements_per_row(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes per row in the data column (fixed kind); element size for ragged kinds.
    pub fn row_bytes(&self) -> usize {
        match self.kind {
            Kind::Fixed => self.elements_per_row() * self.dtype.size(),
            _ => self.dtype.size(),
        }
    }

    /// Checks a spec read from a file: a valid path, a dtype the kind allows (`bytes` and
    /// `str` are u8), a shape only for fixed fields, a row of at most [`MAX_ROW_BYTES`]
    /// (no overflow), a fill of exactly one element, valid attribute names.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let p = &self.path;
        crate::model::path::validate_path(p).map_err(|e| e.to_string())?;
        if matches!(self.kind, Kind::Bytes | Kind::Str) && self.dtype != Dtype::U8 {
            return Err(format!(
                "field {p:?}: a {} field must have dtype u8, not {}",
                format!("{:?}", self.kind).to_lowercase(),
                self.dtype.name()
            ));
        }
        if self.kind != Kind::Fixed && !self.shape.is_empty() {
            return Err(format!(
                "field {p:?}: a {} field has no shape, got {:?}",
                format!("{:?}", self.kind).to_lowercase(),
                self.shape
            ));
        }
        let row = self.shape.iter().try_fold(self.dtype.size() as u64, |a, &d| a.checked_mul(d as u64));
        if row.is_none_or(|r| r > MAX_ROW_BYTES) {
            return Err(format!(
                "field {p:?}: shape {:?} of {} makes a row larger than {MAX_ROW_BYTES} bytes",
                self.shape,
                self.dtype.name()
            ));
        }
        if self.fill.len() != self.dtype.size() {
            return Err(format!(
                "field {p:?}: fill has {} bytes, one {} element has {}",
                self.fill.len(),
                self.dtype.name(),
                self.dtype.size()
            ));
        }
        if self.dtype == Dtype::Bool && self.fill.iter().any(|&b| b > 1) {
            return Err(format!("field {p:?}: a bool fill must be 0 or 1, not {:?}", self.fill));
        }
        for name in self.attrs.keys() {
            check_attr_name(p, name).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Human description (`u16 array [4, 8]`).
    pub fn describe(&self) -> String {
        describe(self.kind, self.dtype, &self.shape)
    }

    /// Checks a value against this spec.
    pub fn check(&self, v: &Value<'_>) -> Result<()> {
        if v.kind() != self.kind || v.dtype() != self.dtype || (self.kind == Kind::Fixed && v.shape() != self.shape) {
            return Err(Error::SchemaMismatch {
                field: self.path.clone(),
                expected: self.describe(),
                given: v.describe(),
            });
        }
        Ok(())
    }
}

/// A run's schema: groups and fields in order of first sight.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// Alignment groups; index 0 is the run group.
    pub groups: Vec<GroupSpec>,
    /// Fields.
    pub fields: Vec<FieldSpec>,
}

impl Schema {
    /// A schema with only the run group.
    pub fn new() -> Schema {
        Schema { groups: vec![GroupSpec { name: RUN_GROUP.into(), aligned: true }], fields: vec![] }
    }

    /// Looks a field up by path.
    pub fn field(&self, path: &str) -> Option<(FieldId, &FieldSpec)> {
        self.fields.iter().enumerate().find(|(_, f)| f.path == path).map(|(i, f)| (i as FieldId, f))
    }

    /// Looks a group up by name.
    pub fn group(&self, name: &str) -> Option<(GroupId, &GroupSpec)> {
        self.groups.iter().enumerate().find(|(_, g)| g.name == name).map(|(i, g)| (i as GroupId, g))
    }

    /// Adds a field (and its group if new), checking it against what exists.
    /// Returns the field's id; an existing identical field returns its id.
    pub fn merge_field(&mut self, spec: &FieldSpec, group_aligned: bool) -> Result<FieldId> {
        if let Some((id, f)) = self.field(&spec.path) {
            if f.kind != spec.kind || f.dtype != spec.dtype || f.shape != spec.shape || f.group != spec.group {
                return Err(Error::SchemaMismatch {
                    field: spec.path.clone(),
                    expected: format!("{} in group {:?}", f.describe(), f.group),
                    given: format!("{} in group {:?}", spec.describe(), spec.group),
                });
            }
            return Ok(id);
        }
        check_no_collision(self, &spec.path, spec.kind, !group_aligned)?;
        if self.group(&spec.group).is_none() {
            self.groups.push(GroupSpec { name: spec.group.clone(), aligned: group_aligned });
        }
        self.fields.push(spec.clone());
        Ok((self.fields.len() - 1) as FieldId)
    }

    /// Merges another shard's or rank's fields and groups into this schema (the first
    /// definition of a field wins). A field that disagrees with what exists is skipped and
    /// handed to `conflict` with the mismatch, which decides whether that is an error.
    pub fn merge_from(
        &mut self,
        fields: &[FieldSpec],
        groups: &[GroupSpec],
        mut conflict: impl FnMut(&FieldSpec, Error) -> Result<()>,
    ) -> Result<()> {
        for f in fields {
            let aligned = groups.iter().find(|g| g.name == f.group).is_none_or(|g| g.aligned);
            if let Err(e) = self.merge_field(f, aligned) {
                conflict(f, e)?;
            }
        }
        for g in groups {
            if self.group(&g.name).is_none() {
                self.groups.push(g.clone());
            }
        }
        Ok(())
    }

    /// Checks a schema read from a file (a manifest, a shard's records): every field valid
    /// ([`FieldSpec::validate`]) and in a listed group, no path or group twice, the run group
    /// first, no two fields whose view names collide. Returns what is wrong, naming the field.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.groups.first().is_none_or(|g| g.name != RUN_GROUP || !g.aligned) {
            return Err("the first group must be the run's aligned group \"\"".into());
        }
        let mut names = HashSet::new();
        for g in &self.groups {
            if !names.insert(g.name.as_str()) {
                return Err(format!("group {:?} appears twice", g.name));
            }
        }
        let mut seen = Schema { groups: self.groups.clone(), fields: Vec::new() };
        for f in &self.fields {
            f.validate()?;
            let g = self
                .groups
                .iter()
                .find(|g| g.name == f.group)
                .ok_or_else(|| format!("field {:?} names group {:?}, which is not listed", f.path, f.group))?;
            if !g.aligned && g.name != f.path {
                return Err(format!(
                    "field {:?} is in unaligned group {:?}, which only its namesake may be",
                    f.path, g.name
                ));
            }
            if seen.field(&f.path).is_some() {
                return Err(format!("field {:?} appears twice", f.path));
            }
            check_no_collision(&seen, &f.path, f.kind, !g.aligned).map_err(|e| e.to_string())?;
            seen.fields.push(f.clone());
        }
        Ok(())
    }

    /// Fields of one group, with their ids.
    pub fn fields_of<'a>(&'a self, group: &'a str) -> impl Iterator<Item = (FieldId, &'a FieldSpec)> + 'a {
        self.fields.iter().enumerate().filter(move |(_, f)| f.group == group).map(|(i, f)| (i as FieldId, f))
    }
}

/// The names a field occupies in the view, besides its own path.
fn derived_names(path: &str, kind: Kind, unaligned: bool) -> Vec<String> {
    let mut v = vec![path.to_string()];
    if kind.is_ragged() {
        v.push(format!("{path}_len"));
        v.push(format!("{path}_offsets"));
    }
    if unaligned {
        v.push(format!("{path}_timestamp"));
    }
    v
}

/// A new field must not make a dataset also a group (`a` and `a/b`) or take a name another
/// field derives (`x_len` beside ragged `x`).
fn check_no_collision(schema: &Schema, path: &str, kind: Kind, unaligned: bool) -> Result<()> {
    let mut taken: HashSet<String> = HashSet::new();
    for f in &schema.fields {
        let un = schema.group(&f.group).is_some_and(|(_, g)| !g.aligned);
        taken.extend(derived_names(&f.path, f.kind, un));
    }
    for name in derived_names(path, kind, unaligned) {
        let clash = taken
            .iter()
            .find(|t| **t == name || t.starts_with(&format!("{name}/")) || name.starts_with(&format!("{t}/")));
        if let Some(t) = clash {
            return Err(Error::BadPath {
                path: path.to_string(),
                why: format!("its view name {name:?} collides with {t:?} of an existing field"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str, kind: Kind, dtype: Dtype, shape: &[usize], fill: &[u8]) -> FieldSpec {
        FieldSpec {
            path: path.into(),
            kind,
            dtype,
            shape: shape.to_vec(),
            group: RUN_GROUP.into(),
            fill: fill.to_vec(),
            units: None,
            attrs: BTreeMap::new(),
        }
    }

    #[test]
    fn specs_read_from_files_are_validated_naming_the_field() {
        let ok = spec("det/image", Kind::Fixed, Dtype::U16, &[4, 8], &[255, 255]);
        ok.validate().unwrap();
        let bad = [
            (spec("det/image", Kind::Fixed, Dtype::U16, &[4, 8], &[255]), "fill has 1 bytes"),
            (spec("", Kind::Fixed, Dtype::U8, &[], &[255]), "empty path"),
            (spec("x", Kind::Fixed, Dtype::U8, &[65536, 65536, 65536, 65536], &[255]), "larger than"),
            (spec("x", Kind::Fixed, Dtype::U64, &[usize::MAX, 2], &[0; 8]), "larger than"),
            (spec("t", Kind::Str, Dtype::U16, &[], &[0, 0]), "dtype u8"),
            (spec("t", Kind::Ragged, Dtype::U16, &[3], &[0, 0]), "no shape"),
            (spec("b", Kind::Fixed, Dtype::Bool, &[], &[2]), "bool fill"),
        ];
        for (s, why) in bad {
            let e = s.validate().unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let mut schema = Schema::new();
        schema.fields = vec![ok.clone(), ok.clone()];
        assert!(schema.check().unwrap_err().contains("appears twice"));
        schema.fields = vec![FieldSpec { group: "nope".into(), ..ok.clone() }];
        assert!(schema.check().unwrap_err().contains("not listed"));
        schema.fields = vec![ok];
        schema.check().unwrap();
        schema.groups.insert(0, GroupSpec { name: "g".into(), aligned: true });
        assert!(schema.check().unwrap_err().contains("first group"));
    }
}
