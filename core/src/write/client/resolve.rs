//! How a [`Client`] resolves a field to its cached [`Meta`]: by name (a per-position guess,
//! then a hash lookup, registering at first sight) or by typed handle (by id, with an
//! identity check that the handle belongs to this run). The registry's lock is taken once per
//! client per field, never per event.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::handle::Resolved;
use crate::model::schema::FieldId;
use crate::model::value::{Kind, Value};
use crate::write::client::{Client, Meta, NONE};

impl Client {
    /// Adds a meta for field `id` (its spec read from the registry once).
    fn add_meta(&mut self, id: FieldId) -> usize {
        let (spec, group, aligned) = {
            let reg = crate::sync::read(&self.shared.registry);
            let spec = reg.schema.fields[id as usize].clone();
            let gid = reg.group_id(&spec.group);
            let aligned = reg.schema.groups[gid as usize].aligned;
            (spec, gid, aligned)
        };
        let fill_row = if spec.kind == Kind::Fixed { spec.fill.repeat(spec.elements_per_row()) } else { vec![] };
        let row_bytes = spec.row_bytes();
        self.metas.push(Meta { spec, id, group, aligned, row_bytes, fill_row, stamp: 0, handle_path: None });
        self.slots.push(None);
        let mi = self.metas.len() - 1;
        if self.by_id.len() <= id as usize {
            self.by_id.resize(id as usize + 1, NONE);
        }
        self.by_id[id as usize] = mi as u32;
        let g = group as usize;
        if self.gslots.len() <= g {
            self.gslots.resize(g + 1, NONE);
            self.gstamp.resize(g + 1, 0);
        }
        mi
    }

    /// The meta of a field given by name (registered at first sight, checked after).
    pub(crate) fn meta_by_path(&mut self, path: &str, v: &Value<'_>) -> Result<usize> {
        let hit = self.cache.get(path).copied();
        self.meta_checked(path, v, hit)
    }

    /// [`Client::meta_by_path`] for the `k`-th field of an event: events tend to name their
    /// fields in the same order, so the field at position `k` last time is tried first (one
    /// short compare instead of hashing the path).
    #[inline]
    pub(super) fn meta_at(&mut self, k: usize, path: &str, v: &Value<'_>) -> Result<usize> {
        let guess = self.predict.get(k).copied().filter(|&mi| self.metas[mi].spec.path == path);
        let hit = guess.or_else(|| self.cache.get(path).copied());
        let mi = self.meta_checked(path, v, hit)?;
        if k >= self.predict.len() {
            self.predict.resize(k + 1, mi);
        }
        self.predict[k] = mi;
        Ok(mi)
    }

    #[inline]
    fn meta_checked(&mut self, path: &str, v: &Value<'_>, hit: Option<usize>) -> Result<usize> {
        if let Some(mi) = hit {
            let s = &self.metas[mi].spec;
            if v.kind() != s.kind || v.dtype() != s.dtype || (s.kind == Kind::Fixed && !same(v.shape(), &s.shape)) {
                s.check(v)?;
            }
            return Ok(mi);
        }
        let id = self.shared.registry_mut()?.resolve(path, v)?;
        let mi = match self.by_id.get(id as usize) {
            Some(&m) if m != NONE => m as usize,
            _ => self.add_meta(id),
        };
        self.cache.insert(path.into(), mi);
        Ok(mi)
    }

    /// The meta of a field given by a handle.
    #[inline]
    pub(super) fn meta_by_handle(&mut self, r: &Resolved) -> Result<usize> {
        let mi = match self.by_id.get(r.id as usize) {
            Some(&m) if m != NONE => m as usize,
            _ => {
                if crate::sync::read(&self.shared.registry).schema.fields.get(r.id as usize).map(|f| f.path.as_str())
                    != Some(&*r.path)
                {
                    return Err(foreign(r));
                }
                self.add_meta(r.id)
            }
        };
        let m = &mut self.metas[mi];
        match &m.handle_path {
            Some(p) if Arc::ptr_eq(p, &r.path) => {}
            _ if *m.spec.path != *r.path => return Err(foreign(r)),
            _ => m.handle_path = Some(Arc::clone(&r.path)),
        }
        Ok(mi)
    }
}

/// A handle of another run, or of a field the run does not know under that id.
fn foreign(r: &Resolved) -> Error {
    Error::Usage(format!("field handle {:?} belongs to another run", r.path))
}

/// Shapes equal (an inline loop: a `memcmp` call costs more than these few words).
#[inline]
fn same(a: &[usize], b: &[usize]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}
