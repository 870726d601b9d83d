//! `Registry`: the writer's shared copy of the schema (threads mode, and each MPI rank's own):
//! the first event that shows a field registers its kind, dtype, shape, group and fill value;
//! every later event is checked against it. Clients cache what they resolved, so the
//! registry's lock is taken once per client per field, never per event.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::{Error, Result};
use crate::model::path::validate_path;
use crate::model::schema::{FieldId, FieldSpec, GroupId, Schema, RUN_GROUP};
use crate::model::value::Value;

/// The writer's shared schema: first sight registers, later sights are checked.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub(crate) schema: Schema,
    by_path: HashMap<String, FieldId>,
    unaligned: HashSet<String>,
    named_groups: HashMap<String, String>,
    fills: HashMap<String, Vec<u8>>,
    units: HashMap<String, String>,
    attrs: HashMap<String, BTreeMap<String, String>>,
}

impl Registry {
    /// Sets fields' text attributes by path (applied when each field is first seen).
    pub(crate) fn with_attrs(mut self, attrs: HashMap<String, BTreeMap<String, String>>) -> Registry {
        self.attrs = attrs;
        self
    }

    /// Sets fields' units by path (applied when each field is first seen).
    pub(crate) fn with_units(mut self, units: HashMap<String, String>) -> Registry {
        self.units = units;
        self
    }

    pub(crate) fn new(
        unaligned: HashSet<String>,
        named_groups: HashMap<String, String>,
        fills: HashMap<String, Vec<u8>>,
    ) -> Registry {
        Registry {
            schema: Schema::new(),
            by_path: HashMap::new(),
            unaligned,
            named_groups,
            fills,
            units: HashMap::new(),
            attrs: HashMap::new(),
        }
    }

    /// The group a new field at `path` belongs to, and whether that group is aligned.
    fn group_for(&self, path: &str) -> (String, bool) {
        let last = path.rsplit('/').next().unwrap_or(path);
        if self.unaligned.contains(path) || last.starts_with("unaligned_") {
            (path.to_string(), false)
        } else if let Some(g) = self.named_groups.get(path) {
            (g.clone(), true)
        } else {
            (RUN_GROUP.to_string(), true)
        }
    }

    /// Resolves a field by path for a value: registers it at first sight, checks it after.
    pub(crate) fn resolve(&mut self, path: &str, v: &Value<'_>) -> Result<FieldId> {
        if let Some(&id) = self.by_path.get(path) {
            self.schema.fields[id as usize].check(v)?;
            return Ok(id);
        }
        validate_path(path)?;
        if let Value::Array { shape, data, dtype } = v {
            let n: usize = shape.iter().product();
            if n * dtype.size() != data.len() {
                return Err(Error::BadValue {
                    field: path.into(),
                    why: format!(
                        "shape {shape:?} needs {} bytes of {dtype}, data has {}",
                        n * dtype.size(),
                        data.len()
                    ),
                });
            }
        }
        let (group, aligned) = self.group_for(path);
        let fill = match self.fills.get(path) {
            Some(f) if f.len() == v.dtype().size() => f.clone(),
            Some(f) => {
                return Err(Error::BadValue {
                    field: path.into(),
                    why: format!("fill value has {} bytes, {} needs {}", f.len(), v.dtype(), v.dtype().size()),
                })
            }
            None => v.dtype().default_fill(),
        };
        let spec = FieldSpec {
            path: path.into(),
            kind: v.kind(),
            dtype: v.dtype(),
            shape: v.shape().to_vec(),
            group,
            fill,
            units: self.units.get(path).cloned(),
            attrs: self.attrs.get(path).cloned().unwrap_or_default(),
        };
        let id = self.schema.merge_field(&spec, aligned)?;
        self.by_path.insert(path.into(), id);
        Ok(id)
    }

    /// Puts a field not seen yet into the named aligned group `group` (a writer's
    /// `align_group` given with an event, after the run started). A field already seen
    /// must already be in that group.
    pub(crate) fn assign_group(&mut self, path: &str, group: &str) -> Result<()> {
        let current = match self.by_path.get(path) {
            Some(&id) => Some(self.schema.fields[id as usize].group.as_str()),
            None => self.named_groups.get(path).map(String::as_str),
        };
        match current {
            Some(g) if g == group => Ok(()),
            Some(g) => Err(Error::SchemaMismatch {
                field: path.into(),
                expected: format!("alignment group {g:?}"),
                given: format!("alignment group {group:?}"),
            }),
            None => {
                validate_path(path)?;
                validate_path(group)?;
                self.named_groups.insert(path.into(), group.into());
                Ok(())
            }
        }
    }

    /// Sets the fill value (one element's little-endian bytes) of a field not seen yet; a
    /// field already seen must already have it.
    pub(crate) fn set_fill(&mut self, path: &str, fill: Vec<u8>) -> Result<()> {
        if let Some(&id) = self.by_path.get(path) {
            if self.schema.fields[id as usize].fill != fill {
                return Err(Error::BadValue {
                    field: path.into(),
                    why: "a different fill value was given after the field was first written".into(),
                });
            }
            return Ok(());
        }
        validate_path(path)?;
        self.fills.insert(path.into(), fill);
        Ok(())
    }

    pub(crate) fn group_id(&self, name: &str) -> GroupId {
        self.schema.group(name).map(|(i, _)| i).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registry {
        Registry::new(HashSet::new(), HashMap::new(), HashMap::new())
    }

    #[test]
    fn groups_and_fills_given_at_run_time_apply_to_fields_not_seen_yet() {
        let mut r = reg();
        r.assign_group("motor", "scan").unwrap();
        r.set_fill("gain", 7i32.to_le_bytes().to_vec()).unwrap();
        let m = r.resolve("motor", &Value::from(1.0f64)).unwrap();
        let g = r.resolve("gain", &Value::from(1i32)).unwrap();
        assert_eq!(r.schema.fields[m as usize].group, "scan");
        assert_eq!(r.schema.fields[g as usize].fill, 7i32.to_le_bytes());
        r.assign_group("motor", "scan").unwrap();
        let e = r.assign_group("motor", "other").unwrap_err().to_string();
        assert!(e.contains("motor") && e.contains("scan") && e.contains("other"), "{e}");
        assert!(r.set_fill("gain", 8i32.to_le_bytes().to_vec()).is_err());
        r.resolve("energy", &Value::from(1.0f64)).unwrap();
        assert!(r.assign_group("energy", "scan").is_err());
    }

    #[test]
    fn second_sight_with_other_dtype_is_rejected_naming_field_expected_and_given() {
        let mut r = reg();
        r.resolve("energy", &Value::from(1.0f64)).unwrap();
        let e = r.resolve("energy", &Value::from(1.0f32)).unwrap_err().to_string();
        assert!(e.contains("energy") && e.contains("f64 scalar") && e.contains("f32 scalar"), "{e}");
    }

    #[test]
    fn unaligned_prefix_makes_its_own_group() {
        let mut r = reg();
        let id = r.resolve("unaligned_hits", &Value::from(1u32)).unwrap();
        let f = &r.schema.fields[id as usize];
        assert_eq!(f.group, "unaligned_hits");
        assert!(!r.schema.group("unaligned_hits").unwrap().1.aligned);
    }

    #[test]
    fn dataset_and_group_with_the_same_name_collide() {
        let mut r = reg();
        r.resolve("a", &Value::from(1u8)).unwrap();
        assert!(r.resolve("a/b", &Value::from(1u8)).is_err());
        r.resolve("x", &Value::from("s")).unwrap();
        assert!(r.resolve("x_len", &Value::from(1u8)).is_err());
    }
}
