//! A batch as one MPI message (client rank → server rank), and the server's decoding of it
//! into a [`BatchView`] that borrows the message's bytes.
//!
//! Every rank has its own schema registry, so a field's id differs between ranks. Each
//! message therefore names its groups (name, aligned) and carries each field's spec (JSON):
//! a server maps `(client rank, client's id)` to its own ids the first time it sees a pair,
//! merging the spec into its schema (a conflict with what another rank sent is an error),
//! and skips the spec bytes afterwards. Messages live only in memory; nothing here is on
//! disk, so `docs/FORMAT.md` is unaffected. All integers little-endian:
//!
//! ```text
//! "SMDB" u32 version=1  u64 events
//! u32 groups  { u32 id  u8 aligned  u32 len  name  u64 rows  ids[rows × u64] }
//! u32 fields  { u32 id  u32 group_slot  u32 len  spec-json  u64 rows
//!               u64 len data  u64 len present  u64 len lens(u64 each) }
//! ```
//!
//! Decoding checks every length against the spec (fixed rows × row bytes, one presence byte
//! per row of an aligned group, ragged lengths adding up to the data), so a malformed message
//! is an error, never a shard with misaligned columns.

use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::model::batch::{Batch, BatchView, FieldView, GroupView};
use crate::model::schema::{FieldId, FieldSpec, GroupId, GroupSpec, Schema};
use crate::model::value::Kind;

const MAGIC: &[u8; 4] = b"SMDB";
const VERSION: u32 = 1;

/// What a client rank knows about one of its fields or groups, ready to put on the wire.
#[derive(Debug, Default)]
pub(crate) struct WireNames {
    /// Spec JSON by the rank's field id.
    pub(crate) fields: Vec<Option<Box<[u8]>>>,
    /// (name, aligned) by the rank's group id.
    pub(crate) groups: Vec<Option<(Box<str>, bool)>>,
}

impl WireNames {
    /// True if every field and group of the batch is known.
    pub(crate) fn covers(&self, batch: &Batch) -> bool {
        batch.fields.iter().all(|f| self.fields.get(f.field as usize).is_some_and(Option::is_some))
            && batch.groups.iter().all(|g| self.groups.get(g.group as usize).is_some_and(Option::is_some))
    }

    /// Learns the batch's fields and groups from the rank's schema.
    pub(crate) fn learn(&mut self, batch: &Batch, schema: &Schema) -> Result<()> {
        for f in &batch.fields {
            let i = f.field as usize;
            if self.fields.len() <= i {
                self.fields.resize(i + 1, None);
            }
            if self.fields[i].is_none() {
                let json = serde_json::to_vec(&schema.fields[i]).map_err(Error::encode("a field spec for the wire"))?;
                self.fields[i] = Some(json.into());
            }
        }
        for g in &batch.groups {
            let i = g.group as usize;
            if self.groups.len() <= i {
                self.groups.resize(i + 1, None);
            }
            let spec = &schema.groups[i];
            self.groups[i].get_or_insert_with(|| (spec.name.as_str().into(), spec.aligned));
        }
        Ok(())
    }
}

#[cfg(test)]
fn put_u32(out: &mut Vec<u8>, x: u32) {
    out.extend_from_slice(&x.to_le_bytes());
}

#[cfg(test)]
fn put_u64(out: &mut Vec<u8>, x: u64) {
    out.extend_from_slice(&x.to_le_bytes());
}

#[cfg(test)]
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Encodes `batch` into `out` (cleared first; its capacity is reused). `names` must cover
/// the batch ([`WireNames::covers`]). The reference for [`Gathered`], which sends the same
/// bytes without copying the columns.
#[cfg(test)]
pub(crate) fn encode(batch: &Batch, names: &WireNames, out: &mut Vec<u8>) {
    out.clear();
    let mut size = 20;
    for g in &batch.groups {
        size += 21 + g.ids.len() * 8 + names.groups[g.group as usize].as_ref().map_or(0, |(n, _)| n.len());
    }
    for f in &batch.fields {
        size += 44 + f.data.len() + f.present.len() + f.lens.len() * 8;
        size += names.fields[f.field as usize].as_ref().map_or(0, |s| s.len());
    }
    out.reserve(size);
    out.extend_from_slice(MAGIC);
    put_u32(out, VERSION);
    put_u64(out, batch.events as u64);
    put_u32(out, batch.groups.len() as u32);
    for g in &batch.groups {
        let (name, aligned) = names.groups[g.group as usize].as_ref().expect("names cover the batch");
        put_u32(out, g.group);
        out.push(u8::from(*aligned));
        put_u32(out, name.len() as u32);
        out.extend_from_slice(name.as_bytes());
        put_u64(out, g.ids.len() as u64);
        for id in &g.ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
    put_u32(out, batch.fields.len() as u32);
    for f in &batch.fields {
        let spec = names.fields[f.field as usize].as_ref().expect("names cover the batch");
        put_u32(out, f.field);
        put_u32(out, f.group_slot as u32);
        put_u32(out, spec.len() as u32);
        out.extend_from_slice(spec);
        put_u64(out, f.rows as u64);
        put_bytes(out, &f.data);
        put_bytes(out, &f.present);
        put_u64(out, f.lens.len() as u64 * 8);
        for l in &f.lens {
            out.extend_from_slice(&l.to_le_bytes());
        }
    }
}

/// Where one block of a message lies: in the header buffer (offset) or in a batch column.
#[derive(Clone, Copy, Debug)]
enum Block {
    Head { at: usize, len: usize },
    Column { ptr: *const u8, len: usize },
}

/// A batch message laid out for a gathered send: the small parts (magic, counts, names,
/// lengths) in one header buffer, the column bytes left where the batch holds them. The
/// concatenation of its blocks is exactly what [`encode`] produces (the server decodes it
/// with the same [`Decoder`]), but no column byte is copied. Reused from message to message.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    head: Vec<u8>,
    blocks: Vec<Block>,
    out: Vec<(*const u8, usize)>,
}

// SAFETY: the raw pointers name bytes of the batch this message was laid out from, which
// travels with it (see client::Sender); nothing reads them from another thread.
unsafe impl Send for Gathered {}

impl Gathered {
    /// Appends a small part to the header, extending the last header block.
    fn small(&mut self, bytes: &[u8]) {
        let at = self.head.len();
        self.head.extend_from_slice(bytes);
        match self.blocks.last_mut() {
            Some(Block::Head { len, .. }) => *len += bytes.len(),
            _ => self.blocks.push(Block::Head { at, len: bytes.len() }),
        }
    }

    fn column(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.blocks.push(Block::Column { ptr: bytes.as_ptr(), len: bytes.len() });
        }
    }

    /// u64 words as little-endian bytes: in place on a little-endian host, else copied.
    fn words(&mut self, words: &[u64]) {
        if cfg!(target_endian = "little") {
            self.column(bytemuck::cast_slice(words));
        } else {
            for w in words {
                self.small(&w.to_le_bytes());
            }
        }
    }

    /// Lays `batch` out (replacing the last layout). `names` must cover the batch. The
    /// blocks point into `batch`: it must stay alive and unchanged while they are in use.
    pub(crate) fn lay_out(&mut self, batch: &Batch, names: &WireNames) {
        self.head.clear();
        self.blocks.clear();
        self.small(MAGIC);
        self.small(&VERSION.to_le_bytes());
        self.small(&(batch.events as u64).to_le_bytes());
        self.small(&(batch.groups.len() as u32).to_le_bytes());
        for g in &batch.groups {
            let (name, aligned) = names.groups[g.group as usize].as_ref().expect("names cover the batch");
            self.small(&g.group.to_le_bytes());
            self.small(&[u8::from(*aligned)]);
            self.small(&(name.len() as u32).to_le_bytes());
            self.small(name.as_bytes());
            self.small(&(g.ids.len() as u64).to_le_bytes());
            self.words(&g.ids);
        }
        self.small(&(batch.fields.len() as u32).to_le_bytes());
        for f in &batch.fields {
            let spec = names.fields[f.field as usize].as_ref().expect("names cover the batch");
            self.small(&f.field.to_le_bytes());
            self.small(&(f.group_slot as u32).to_le_bytes());
            self.small(&(spec.len() as u32).to_le_bytes());
            self.small(spec);
            self.small(&(f.rows as u64).to_le_bytes());
            self.small(&(f.data.len() as u64).to_le_bytes());
            self.column(&f.data);
            self.small(&(f.present.len() as u64).to_le_bytes());
            self.column(&f.present);
            self.small(&(f.lens.len() as u64 * 8).to_le_bytes());
            self.words(&f.lens);
        }
    }

    /// The message's blocks as (pointer, length), in order (valid until the next layout).
    pub(crate) fn blocks(&mut self) -> &[(*const u8, usize)] {
        self.out.clear();
        for b in &self.blocks {
            self.out.push(match *b {
                Block::Head { at, len } => (self.head[at..].as_ptr(), len),
                Block::Column { ptr, len } => (ptr, len),
            });
        }
        &self.out
    }
}

/// Reads a message front to back.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| self.bad("truncated"))?;
        let b = &self.buf[self.at..end];
        self.at = end;
        Ok(b)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn len(&mut self) -> Result<usize> {
        usize::try_from(self.u64()?).map_err(|_| self.bad("length overflows"))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    fn bad(&self, why: &str) -> Error {
        Error::Mpi { rank: None, why: format!("malformed batch message at byte {}: {why}", self.at) }
    }
}

/// One client rank's ids, mapped to the server's.
#[derive(Debug, Default)]
struct SourceMap {
    fields: FxHashMap<u32, FieldId>,
    groups: FxHashMap<u32, GroupId>,
}

/// A server's decoder: its own schema, merged from what every client rank sent.
#[derive(Debug)]
pub(crate) struct Decoder {
    pub(crate) schema: Schema,
    sources: Vec<SourceMap>,
}

impl Decoder {
    pub(crate) fn new(sources: usize) -> Decoder {
        Decoder { schema: Schema::new(), sources: (0..sources).map(|_| SourceMap::default()).collect() }
    }

    /// Decodes a message from client rank `src` into a view with the server's ids.
    pub(crate) fn decode<'a>(&mut self, src: usize, buf: &'a [u8]) -> Result<BatchView<'a>> {
        let mut c = Cursor { buf, at: 0 };
        if c.take(4)? != MAGIC || c.u32()? != VERSION {
            return Err(c.bad("not a version-1 smdfs batch"));
        }
        let _events = c.u64()?;
        let ngroups = c.u32()? as usize;
        let mut groups = Vec::with_capacity(ngroups.min(1024));
        let mut group_names = Vec::with_capacity(ngroups.min(1024));
        for _ in 0..ngroups {
            let id = c.u32()?;
            let aligned = c.u8()? != 0;
            let n = c.u32()? as usize;
            let name = std::str::from_utf8(c.take(n)?).map_err(|_| c.bad("group name is not UTF-8"))?;
            let rows = c.len()?;
            let ids = c.take(rows.checked_mul(8).ok_or_else(|| c.bad("row count overflows"))?)?;
            groups.push(GroupView { group: id, ids });
            group_names.push((name, aligned));
        }
        let nfields = c.u32()? as usize;
        let mut fields = Vec::with_capacity(nfields.min(1024));
        let mut specs = Vec::with_capacity(nfields.min(1024));
        for _ in 0..nfields {
            let id = c.u32()?;
            let group_slot = c.u32()? as usize;
            let n = c.u32()? as usize;
            let spec = c.take(n)?;
            let rows = c.len()?;
            let data = c.bytes()?;
            let present = c.bytes()?;
            let lens = c.bytes()?;
            if group_slot >= groups.len() {
                return Err(c.bad("field names a group the message lacks"));
            }
            fields.push(FieldView { field: id, group_slot, data, present, lens, rows });
            specs.push(spec);
        }
        let map = self.sources.get_mut(src).ok_or_else(|| c.bad("sender is not a client rank"))?;
        // Fields first: a new field brings its group into the schema.
        for (f, spec) in fields.iter_mut().zip(specs) {
            let sid = match map.fields.get(&f.field) {
                Some(&s) => s,
                None => {
                    let spec: FieldSpec =
                        serde_json::from_slice(spec).map_err(|e| c.bad(&format!("field spec: {e}")))?;
                    let (gname, aligned) = group_names[f.group_slot];
                    if spec.group != gname {
                        return Err(
                            c.bad(&format!("field {:?} is in group {:?}, not {gname:?}", spec.path, spec.group))
                        );
                    }
                    let s = self.schema.merge_field(&spec, aligned)?;
                    map.fields.insert(f.field, s);
                    s
                }
            };
            f.field = sid;
        }
        for (g, (name, aligned)) in groups.iter_mut().zip(group_names) {
            let sid = match map.groups.get(&g.group) {
                Some(&s) => s,
                None => {
                    let s = match self.schema.group(name) {
                        Some((s, spec)) if spec.aligned == aligned => s,
                        Some(_) => {
                            return Err(Error::SchemaMismatch {
                                field: name.into(),
                                expected: "the group's alignment seen first".into(),
                                given: format!("aligned = {aligned}"),
                            })
                        }
                        None => {
                            self.schema.groups.push(GroupSpec { name: name.into(), aligned });
                            (self.schema.groups.len() - 1) as GroupId
                        }
                    };
                    map.groups.insert(g.group, s);
                    s
                }
            };
            g.group = sid;
        }
        for f in &fields {
            check_field(&self.schema, f, &groups[f.group_slot]).map_err(|why| c.bad(&why))?;
        }
        Ok(BatchView { groups, fields })
    }
}

/// Checks that a field's columns have the lengths its spec and group imply.
fn check_field(schema: &Schema, f: &FieldView<'_>, g: &GroupView<'_>) -> std::result::Result<(), String> {
    let spec = &schema.fields[f.field as usize];
    let aligned = schema.groups[g.group as usize].aligned;
    let path = &spec.path;
    if spec.group != schema.groups[g.group as usize].name {
        return Err(format!("field {path:?} sent in another group's rows"));
    }
    if f.rows != g.rows() {
        return Err(format!("field {path:?} has {} rows, its group {}", f.rows, g.rows()));
    }
    if f.present.len() != if aligned { f.rows } else { 0 } {
        return Err(format!("field {path:?} has {} presence bytes for {} rows", f.present.len(), f.rows));
    }
    if spec.kind == Kind::Fixed {
        if f.data.len() != f.rows * spec.row_bytes() || !f.lens.is_empty() {
            return Err(format!(
                "field {path:?}: {} data bytes for {} rows of {}",
                f.data.len(),
                f.rows,
                spec.describe()
            ));
        }
    } else {
        if f.lens.len() != f.rows * 8 {
            return Err(format!("field {path:?}: {} length bytes for {} rows", f.lens.len(), f.rows));
        }
        let elements: u64 = f.lens.chunks_exact(8).map(|l| u64::from_le_bytes(l.try_into().expect("8 bytes"))).sum();
        if Some(f.data.len() as u64) != elements.checked_mul(spec.dtype.size() as u64) {
            return Err(format!("field {path:?}: {} data bytes for {elements} ragged elements", f.data.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::batch::{FieldRows, GroupRows};
    use crate::model::schema::Registry;
    use crate::model::value::Value;

    fn registry() -> Registry {
        Registry::new(Default::default(), Default::default(), Default::default())
    }

    fn one_field_batch(reg: &mut Registry, path: &str, v: Value<'_>) -> Batch {
        let id = reg.resolve(path, &v).unwrap();
        let g = reg.group_id(&reg.schema.fields[id as usize].group);
        let aligned = reg.schema.groups[g as usize].aligned;
        let mut b = Batch::default();
        b.groups.push(GroupRows { group: g, ids: vec![7, 9] });
        let mut data = v.data().to_vec();
        data.extend_from_slice(v.data());
        let present = if aligned { vec![1, 1] } else { vec![] };
        b.fields.push(FieldRows { field: id, group_slot: 0, data, present, lens: vec![], rows: 2 });
        b.events = 2;
        b
    }

    #[test]
    fn a_batch_round_trips_with_ids_mapped_to_the_servers_schema() {
        // Rank A sees "b" first, rank B sees "a" first: their ids differ, the server's agree.
        let (mut ra, mut rb) = (registry(), registry());
        ra.resolve("b", &Value::from(1u8)).unwrap();
        let ba = one_field_batch(&mut ra, "a", Value::from(2.5f64));
        let bb = one_field_batch(&mut rb, "a", Value::from(4.0f64));
        assert_ne!(ba.fields[0].field, bb.fields[0].field);
        let mut dec = Decoder::new(2);
        for (src, (b, reg)) in [(&ba, &ra), (&bb, &rb)].into_iter().enumerate() {
            let mut names = WireNames::default();
            names.learn(b, &reg.schema).unwrap();
            let mut msg = Vec::new();
            encode(b, &names, &mut msg);
            let v = dec.decode(src, &msg).unwrap();
            assert_eq!(v.fields[0].field, 0);
            assert_eq!(v.groups[0].rows(), 2);
            assert_eq!(v.fields[0].data, &b.fields[0].data[..]);
        }
        assert_eq!(dec.schema.fields.len(), 1);
    }

    #[test]
    fn a_gathered_message_is_byte_for_byte_the_encoded_one_and_points_into_the_batch() {
        let mut r = registry();
        let mut b = one_field_batch(&mut r, "a", Value::from(2.5f64));
        // A ragged field too: lengths travel as words.
        let id = r.resolve("t", &Value::bytes(b"xy")).unwrap();
        b.fields.push(FieldRows {
            field: id,
            group_slot: 0,
            data: b"xyxyz".to_vec(),
            present: vec![1, 1],
            lens: vec![2, 3],
            rows: 2,
        });
        let mut names = WireNames::default();
        names.learn(&b, &r.schema).unwrap();
        let mut want = Vec::new();
        encode(&b, &names, &mut want);
        let mut g = Gathered::default();
        g.lay_out(&b, &names);
        let blocks = g.blocks().to_vec();
        // SAFETY: the blocks point into `g` and `b`, both alive and unchanged here.
        let got: Vec<u8> =
            blocks.iter().flat_map(|&(p, n)| unsafe { std::slice::from_raw_parts(p, n) }.to_vec()).collect();
        assert_eq!(got, want);
        assert!(blocks.iter().any(|&(p, _)| p == b.fields[0].data.as_ptr()), "column bytes are not copied");
        let v = Decoder::new(1).decode(0, &got).unwrap();
        assert_eq!(v.fields[1].data, b"xyxyz");
    }

    #[test]
    fn a_field_whose_dtype_differs_between_ranks_is_an_error_naming_it() {
        let (mut ra, mut rb) = (registry(), registry());
        let ba = one_field_batch(&mut ra, "x", Value::from(1.0f64));
        let bb = one_field_batch(&mut rb, "x", Value::from(1.0f32));
        let mut dec = Decoder::new(2);
        for (src, (b, reg)) in [(&ba, &ra), (&bb, &rb)].into_iter().enumerate() {
            let mut names = WireNames::default();
            names.learn(b, &reg.schema).unwrap();
            let mut msg = Vec::new();
            encode(b, &names, &mut msg);
            let r = dec.decode(src, &msg);
            if src == 0 {
                r.unwrap();
            } else {
                let e = r.unwrap_err().to_string();
                assert!(e.contains("\"x\"") && e.contains("f64") && e.contains("f32"), "{e}");
            }
        }
    }

    #[test]
    fn truncated_or_inconsistent_messages_are_rejected() {
        let mut r = registry();
        let b = one_field_batch(&mut r, "a", Value::from(1u16));
        let mut names = WireNames::default();
        names.learn(&b, &r.schema).unwrap();
        let mut msg = Vec::new();
        encode(&b, &names, &mut msg);
        for cut in [0, 3, 10, msg.len() - 1] {
            assert!(Decoder::new(1).decode(0, &msg[..cut]).is_err(), "cut at {cut}");
        }
        // One data byte too few for two u16 rows: the lengths no longer agree.
        let mut bad = b;
        bad.fields[0].data.pop();
        let mut msg = Vec::new();
        encode(&bad, &names, &mut msg);
        let e = Decoder::new(1).decode(0, &msg).unwrap_err().to_string();
        assert!(e.contains("data bytes"), "{e}");
    }
}
