//! The read path: bytes `offset..offset + len` of a view file, stitched from its extents
//! (skeleton, literal, dataset bytes through the global index or the arrival segments; gaps
//! read as zeros), and [`View::slice`], the same bytes as one borrowed slice when a single
//! piece holds them (the mount's zero-copy replies).

use smdfs::h5::layout::Source;

use super::{arrival, Ino, Node, Piece, View};
use crate::error::ViewError;

impl View {
    /// Reads up to `buf.len()` bytes at `offset` into `buf`; returns how many (0 at EOF).
    pub fn read_into(&self, ino: Ino, offset: u64, buf: &mut [u8]) -> Result<usize, ViewError> {
        let Node::File { size, extents } = self.node(ino)? else { return Err(ViewError::IsADirectory(ino)) };
        if offset >= *size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(size - offset) as usize;
        let buf = &mut buf[..n];
        let mut k = extents.partition_point(|e| e.start + e.len <= offset);
        let mut done = 0usize;
        while done < n {
            let Some(e) = extents.get(k) else {
                buf[done..].fill(0);
                break;
            };
            let at = offset + done as u64;
            if at < e.start {
                let gap = ((e.start - at) as usize).min(n - done);
                buf[done..done + gap].fill(0);
                done += gap;
                continue;
            }
            let within = at - e.start;
            let take = ((e.len - within) as usize).min(n - done);
            let out = &mut buf[done..done + take];
            match &e.piece {
                Piece::Skeleton(base) => self.read_skeleton(base + within, out),
                Piece::Literal(b) => out.copy_from_slice(&b[within as usize..within as usize + take]),
                Piece::Data(i, base) => self.read_dataset(*i, base + within, out)?,
            }
            done += take;
            k += 1;
        }
        Ok(n)
    }

    fn read_skeleton(&self, at: u64, out: &mut [u8]) {
        let sk = self.skeleton.as_deref().unwrap_or(&[]);
        let a = (at as usize).min(sk.len());
        let b = (a + out.len()).min(sk.len());
        out[..b - a].copy_from_slice(&sk[a..b]);
        out[b - a..].fill(0);
    }

    /// Bytes `at..at + out.len()` of dataset `i`.
    fn read_dataset(&self, i: usize, at: u64, out: &mut [u8]) -> Result<(), ViewError> {
        let d = &self.datasets[i];
        match &d.arrival {
            Some(segs) => arrival::read(&self.run, segs, at, out),
            None => Ok(d.layout.read(&self.run, at, out)?),
        }
    }

    /// Bytes `offset..offset + len` of file `ino` as one slice of memory the view already
    /// holds (the skeleton, a literal, or a stretch of one shard column), when one piece
    /// holds them all: a read the mount answers without copying. `None`: use
    /// [`View::read_into`].
    pub fn slice(&self, ino: Ino, offset: u64, len: usize) -> Option<&[u8]> {
        let Ok(Node::File { size, extents }) = self.node(ino) else { return None };
        let len = len.min(usize::try_from(size.checked_sub(offset)?).ok()?);
        let end = offset + len as u64;
        if len == 0 {
            return None;
        }
        let e = extents.get(extents.partition_point(|e| e.start + e.len <= offset))?;
        if offset < e.start || end > e.start + e.len {
            return None;
        }
        let within = offset - e.start;
        match &e.piece {
            Piece::Skeleton(base) => {
                let a = usize::try_from(base + within).ok()?;
                self.skeleton.as_deref()?.get(a..a + len)
            }
            Piece::Literal(b) => b.get(within as usize..within as usize + len),
            Piece::Data(i, base) => self.dataset_slice(*i, base + within, len),
        }
    }

    /// Bytes `at..at + len` of dataset `i` when one shard column holds them in order.
    fn dataset_slice(&self, i: usize, at: u64, len: usize) -> Option<&[u8]> {
        let d = &self.datasets[i];
        if let Some(segs) = &d.arrival {
            return arrival::slice(&self.run, segs, at, len);
        }
        let Source::Gather { group, columns, row_bytes, .. } = &d.layout.source else { return None };
        let rb = *row_bytes as u64;
        let (first, last) = (at / rb, (at + len as u64).div_ceil(rb));
        let mut one = None;
        let mut pieces = 0;
        self.run.groups()[*group].index.for_each_segment(first, last, |loc, _| {
            pieces += 1;
            one = Some(loc);
        });
        let loc = one.filter(|_| pieces == 1)?;
        let col = columns.get(loc.shard).copied().flatten()?;
        let a = usize::try_from(loc.row * rb + at % rb).ok()?;
        self.run.shards().get(loc.shard)?.bytes(col).get(a..a + len)
    }
}
