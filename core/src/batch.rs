//! A batch: the columnar buffer a client fills with events and hands whole to its server.
//!
//! Rows are per alignment group. Aligned fields are padded by the client to their group's
//! row count with the fill value (presence byte 0), so the server can append every column
//! of the batch with one write. Batches are recycled through a per-server pool, so their
//! buffers are touched once and reused (first touch of fresh memory is slow here).

use crate::schema::{FieldId, GroupId};

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
}

impl Batch {
    /// Empties the batch, keeping its buffers' capacity.
    pub(crate) fn clear(&mut self) {
        self.groups.clear();
        self.fields.clear();
        self.events = 0;
        self.bytes = 0;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events == 0
    }
}
