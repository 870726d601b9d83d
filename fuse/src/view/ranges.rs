//! Which shard bytes a view range reads: [`View::shard_ranges`] names the stretches of
//! shard column bytes (by the shard's position in `Run::shards`) that a read of
//! `offset..offset + len` of a view file copies from. The mount uses it to drop shard pages
//! once they were copied into the view's own page cache; it never changes what a read
//! returns.
//!
//! Covered: fixed-width datasets in event-id order (walked through the index like the
//! gather, consecutive stretches of one shard merged) and every column segment of the
//! arrival order. Skeleton and literal bytes have no shard behind them; ragged values in event-id
//! order, ragged offsets and fill are not named (their bytes are small or computed).

use std::ops::Range;

use smdfs::h5::layout::Source;

use super::{arrival, Ino, Node, Piece, View};

impl View {
    /// Calls `f(shard, column, bytes)` (`shard` a position in `Run::shards`) for the shard
    /// column bytes that reading bytes `offset..offset + len` of file `ino` copies, exactly:
    /// one call per stretch of consecutive bytes of one column (rows a shard holds in order
    /// come out as one call).
    pub fn shard_ranges(&self, ino: Ino, offset: u64, len: u64, mut f: impl FnMut(usize, u32, Range<u64>)) {
        let Ok(Node::File { size, extents }) = self.node(ino) else { return };
        let end = offset.saturating_add(len).min(*size);
        let mut k = extents.partition_point(|e| e.start + e.len <= offset);
        while let Some(e) = extents.get(k).filter(|e| e.start < end) {
            k += 1;
            let (a, b) = (offset.max(e.start), end.min(e.start + e.len));
            let Piece::Data(i, base) = e.piece else { continue };
            if a < b {
                self.dataset_ranges(i, base + (a - e.start), b - a, &mut f);
            }
        }
    }

    /// [`View::shard_ranges`] for bytes `at..at + len` of dataset `i`.
    fn dataset_ranges(&self, i: usize, at: u64, len: u64, f: &mut impl FnMut(usize, u32, Range<u64>)) {
        let d = &self.datasets[i];
        let shards = self.run.shards();
        if let Some(segs) = &d.arrival {
            arrival::column_ranges(segs, at, len, &mut *f);
            return;
        }
        let Source::Gather { group, columns, row_bytes, .. } = &d.layout.source else { return };
        let Some(g) = self.run.groups().get(*group) else { return };
        let rb = *row_bytes as u64;
        if rb == 0 {
            return;
        }
        let end = at + len;
        // Per shard: the stretch of column bytes being extended, emitted when a segment
        // does not continue it (consecutive rows of one shard come out as one range).
        let mut open: Vec<Option<(u64, u64)>> = vec![None; shards.len()];
        let mut row = at / rb;
        g.index.for_each_segment(at / rb, end.div_ceil(rb), |loc, n| {
            // Dataset bytes of these rows, clipped to the range read.
            let (a, b) = ((row * rb).max(at), ((row + n) * rb).min(end));
            let (ca, cb) = (loc.row * rb + (a - row * rb), loc.row * rb + (b - row * rb));
            row += n;
            let (Some(o), Some(Some(col))) = (open.get_mut(loc.shard), columns.get(loc.shard)) else { return };
            match o {
                Some((_, e)) if *e == ca => *e = cb,
                _ => {
                    if let Some((x, y)) = o.replace((ca, cb)) {
                        f(loc.shard, *col, x..y);
                    }
                }
            }
        });
        for (s, o) in open.into_iter().enumerate() {
            if let (Some((a, b)), Some(Some(col))) = (o, columns.get(s)) {
                f(s, *col, a..b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::view::{Order, View, ViewOptions};
    use smdfs::demo;

    /// The named ranges are exact (round-robin over as many clients as shards: each shard's
    /// rows are consecutive) and hold the very rows a read returns, in both orders.
    #[test]
    fn named_ranges_hold_the_bytes_a_read_returns() {
        let dir = tempfile::tempdir().unwrap();
        demo::write_demo(dir.path(), 5000, 3, 3, false).unwrap();
        for order in [Order::EventId, Order::Arrival] {
            let v = View::open(dir.path(), &ViewOptions { order, ..Default::default() }).unwrap();
            let a = v.resolve("arrays/det/image.npy").unwrap();
            let mut head = [0u8; 10];
            v.read_into(a.ino, 0, &mut head).unwrap();
            let header = u16::from_le_bytes([head[8], head[9]]) as u64 + 10;
            for (off, len) in [(header + 64 * 700, 64 * 1500), (header + 64 * 9 + 10, 64 * 40 + 7), (0, 300)] {
                let mut got = vec![0u8; len as usize];
                v.read_into(a.ino, off, &mut got).unwrap();
                let mut from_shards = Vec::new();
                v.shard_ranges(a.ino, off, len, |s, col, r| {
                    from_shards.extend_from_slice(&v.run().shards()[s].bytes(col)[r.start as usize..r.end as usize]);
                });
                let data = (off + len).saturating_sub(off.max(header));
                assert_eq!(from_shards.len() as u64, data, "{order:?} {off}+{len}: the ranges are exact");
                if off >= header && (off - header).is_multiple_of(64) && len.is_multiple_of(64) {
                    let (mut x, mut y): (Vec<&[u8]>, Vec<&[u8]>) =
                        (got.chunks(64).collect(), from_shards.chunks(64).collect());
                    x.sort();
                    y.sort();
                    assert_eq!(x, y, "{order:?}: the same rows");
                }
            }
            // Skeleton bytes name no shard.
            let h5 = v.resolve("run.h5").unwrap();
            let mut calls = 0;
            v.shard_ranges(h5.ino, 0, 512, |_, _, _| calls += 1);
            assert_eq!(calls, 0);
        }
    }
}
