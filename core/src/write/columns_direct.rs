//! The batch API's copy-free path (threads mode, and MPI ranks that write their own shard):
//! a large `Client::events` call with no presence masks is not copied into the client's
//! batch. Its columns, still borrowed from the caller, go to the shard writer as one batch
//! view (ids once per group, a fixed column's bytes as given, a ragged column's value run as
//! given) and the call returns once they are appended and committed, so the bytes are
//! copied once, by the write into the page cache. The shard writer treats the view like any batch: aligned fields the call
//! lacks are filled, statistics and checksums are the same, the commit follows the data.

use crate::error::Result;
use crate::model::batch::{BatchView, FieldView, GroupView};
use crate::model::columns::{Cells, Column};
use crate::write::client::Client;

/// Calls at least this large (bytes of values) skip the batch; smaller ones are cheaper to
/// copy than to commit on their own.
pub(crate) const DIRECT_MIN_BYTES: usize = 256 << 10;

impl Client {
    /// Whether a validated call of `total` value bytes takes the copy-free path.
    pub(crate) fn direct_fits(&self, columns: &[Column<'_>], total: usize) -> bool {
        total >= DIRECT_MIN_BYTES
            && !columns.is_empty()
            && columns.iter().all(|c| c.present.is_none())
            && self.writes_borrowed()
    }

    /// Writes a validated call (`metas[k]`: column k's meta; every column has every row)
    /// straight from the caller's arrays.
    pub(crate) fn events_direct(&mut self, ids: &[u64], columns: &[Column<'_>], metas: &[usize]) -> Result<()> {
        let n = ids.len();
        let ones = vec![1u8; n];
        let lens: Vec<Vec<u64>> = columns
            .iter()
            .map(|c| match &c.cells {
                Cells::Var { offsets, .. } => offsets[..=n].windows(2).map(|w| w[1] - w[0]).collect(),
                Cells::Fixed { .. } => Vec::new(),
            })
            .collect();
        let mut view = BatchView::default();
        for (k, col) in columns.iter().enumerate() {
            let m = &self.metas[metas[k]];
            let group_slot = match view.groups.iter().position(|g| g.group == m.group) {
                Some(s) => s,
                None => {
                    view.groups.push(GroupView { group: m.group, ids: bytemuck::cast_slice(ids) });
                    view.groups.len() - 1
                }
            };
            let data = match &col.cells {
                Cells::Fixed { bytes, .. } => &bytes[..n * m.row_bytes],
                Cells::Var { dtype, values, offsets, .. } => {
                    let es = dtype.size();
                    &values[offsets[0] as usize * es..offsets[n] as usize * es]
                }
            };
            view.fields.push(FieldView {
                field: m.id,
                group_slot,
                data,
                present: if m.aligned { &ones } else { &[] },
                lens: bytemuck::cast_slice(&lens[k]),
                rows: n,
            });
        }
        self.write_borrowed(view)
    }
}
