//! A batch: the columnar buffer a client fills with events and hands whole to its server.
//!
//! Rows are per alignment group. Aligned fields are padded by the client to their group's
//! row count with the fill value (presence byte 0), so the server can append every column
//! of the batch with one write. Batches are recycled through a per-server pool, so their
//! buffers are touched once and reused (first touch of fresh memory is slow here).
//!
//! The shard writer reads a `BatchView`: the same columns as little-endian byte slices,
//! borrowed from a `Batch` (threads mode) or straight from a received MPI message (MPI
//! mode, `crate::write::mpi`), so neither mode copies column bytes on the server side.

use crate::model::schema::{FieldId, GroupId};

/// One group's rows in a batch.
#[derive(Debug, Default)]
pub(crate) struct GroupRows {
    pub(crate) group: GroupId,
    pub(crate) ids: Vec<u64>,
}

/// One field's rows in a batch.
#[derive(Debug, Default)]
pub(crate) struct FieldRows {
    pub(crate) field: FieldId,
    /// Index into `Batch::groups`.
    pub(crate) group_slot: usize,
    /// Fixed rows, or a ragged field's flat values.
    pub(crate) data: Vec<u8>,
    /// Aligned fields: 1 per present row, 0 per filled row.
    pub(crate) present: Vec<u8>,
    /// Ragged fields: element count per row.
    pub(crate) lens: Vec<u64>,
    /// Rows written so far (present or filled).
    pub(crate) rows: usize,
}

/// A client's batch of events.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) groups: Vec<GroupRows>,
    pub(crate) fields: Vec<FieldRows>,
    pub(crate) events: usize,
    pub(crate) bytes: usize,
    /// Emptied field buffers of earlier batches, reused by [`Batch::add_field`] (fresh
    /// memory is slow to touch here: a reused buffer is written at memory speed).
    spare_fields: Vec<FieldRows>,
    /// Emptied id buffers, reused by [`Batch::add_group`].
    spare_groups: Vec<GroupRows>,
}

impl Batch {
    /// Empties the batch, keeping its buffers (and their capacity) for the next one.
    pub(crate) fn clear(&mut self) {
        for mut g in self.groups.drain(..) {
            g.ids.clear();
            self.spare_groups.push(g);
        }
        for mut f in self.fields.drain(..) {
            f.data.clear();
            f.present.clear();
            f.lens.clear();
            f.rows = 0;
            self.spare_fields.push(f);
        }
        self.events = 0;
        self.bytes = 0;
    }

    /// Adds an empty row set for `group`; returns its slot.
    pub(crate) fn add_group(&mut self, group: GroupId) -> usize {
        let k = self.spare_groups.iter().position(|g| g.group == group);
        let mut g = match k {
            Some(k) => self.spare_groups.swap_remove(k),
            None => self.spare_groups.pop().unwrap_or_default(),
        };
        g.group = group;
        self.groups.push(g);
        self.groups.len() - 1
    }

    /// Adds an empty column for `field` (rows in group slot `group_slot`); returns its slot.
    /// The buffer last used by the same field is reused where there is one, so each field
    /// keeps a buffer of its own size.
    pub(crate) fn add_field(&mut self, field: FieldId, group_slot: usize) -> usize {
        let k = self.spare_fields.iter().position(|f| f.field == field);
        let mut f = match k {
            Some(k) => self.spare_fields.swap_remove(k),
            None => self.spare_fields.pop().unwrap_or_default(),
        };
        f.field = field;
        f.group_slot = group_slot;
        self.fields.push(f);
        self.fields.len() - 1
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events == 0
    }
}

impl Batch {
    /// The batch's columns as byte slices, for the shard writer.
    pub(crate) fn view(&self) -> BatchView<'_> {
        BatchView {
            groups: self
                .groups
                .iter()
                .map(|g| GroupView { group: g.group, ids: bytemuck::cast_slice(&g.ids) })
                .collect(),
            fields: self
                .fields
                .iter()
                .map(|f| FieldView {
                    field: f.field,
                    group_slot: f.group_slot,
                    data: &f.data,
                    present: &f.present,
                    lens: bytemuck::cast_slice(&f.lens),
                    rows: f.rows,
                })
                .collect(),
        }
    }
}

/// One group's rows as the shard writer reads them.
#[derive(Debug)]
pub(crate) struct GroupView<'a> {
    pub(crate) group: GroupId,
    /// Event ids, u64 little-endian (8 bytes per row).
    pub(crate) ids: &'a [u8],
}

impl GroupView<'_> {
    /// Rows of the group in the batch.
    pub(crate) fn rows(&self) -> usize {
        self.ids.len() / 8
    }
}

/// One field's rows as the shard writer reads them; see [`FieldRows`].
#[derive(Debug)]
pub(crate) struct FieldView<'a> {
    pub(crate) field: FieldId,
    /// Index into `BatchView::groups`.
    pub(crate) group_slot: usize,
    pub(crate) data: &'a [u8],
    pub(crate) present: &'a [u8],
    /// Ragged fields: element count per row, u64 little-endian.
    pub(crate) lens: &'a [u8],
    pub(crate) rows: usize,
}

/// A batch's columns as byte slices. Invariant (the producer's): every aligned field has one
/// row per row of its group, and ragged lengths add up to the data's elements.
#[derive(Debug, Default)]
pub(crate) struct BatchView<'a> {
    pub(crate) groups: Vec<GroupView<'a>>,
    pub(crate) fields: Vec<FieldView<'a>>,
}
