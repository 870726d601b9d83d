//! The arrival-order view (`smdfs mount --order arrival`): every dataset is its shards'
//! columns concatenated — shard 0's rows as they were committed, then shard 1's, … — so no
//! row goes through the global index and no gather happens. A dataset becomes a short list
//! of [`Seg`]ments built once per snapshot (O(datasets × shards)), each a contiguous byte
//! range of one shard column, a fill run, or owned bytes; reading is a binary search and one
//! copy per segment touched, and a read inside one column segment is a single slice of the
//! shard's map.
//!
//! Rows keep their dataset's length and dtype, so the skeleton, the `.npy` headers and the
//! Zarr tree are the event-id view's; only the order differs (`/timestamp` is then not
//! sorted). Ragged fields: values are each shard's value column up to the elements its rows
//! name, offsets the running sum of the shards' lengths (computed at open: O(rows) for
//! ragged fields only). A shard whose ragged offsets do not follow its lengths is refused.

use std::sync::Arc;

use smdfs::h5::layout::{DatasetLayout, Source};
use smdfs::Run;

use crate::error::ViewError;

/// Where a segment's bytes come from.
#[derive(Clone, Debug)]
enum Src {
    /// Bytes `at..` of column `col` of shard `shard`.
    Column { shard: usize, col: u32, at: u64 },
    /// A row's fill, repeated (the segment starts at a row boundary).
    Fill(Arc<[u8]>),
    /// Bytes held here (computed offsets, literal datasets).
    Owned(Arc<[u8]>),
}

/// A contiguous piece of a dataset in arrival order.
#[derive(Clone, Debug)]
pub(super) struct Seg {
    start: u64,
    len: u64,
    from: Src,
}

/// The segments of `layout`'s dataset in arrival order.
pub(super) fn segments(run: &Run, layout: &DatasetLayout) -> Result<Vec<Seg>, ViewError> {
    let mut segs = Vec::new();
    let mut pos = 0u64;
    let mut push = |len: u64, from: Src| {
        if len > 0 {
            segs.push(Seg { start: pos, len, from });
            pos += len;
        }
    };
    match &layout.source {
        Source::Gather { group, columns, row_bytes, fill } => {
            let name = &run.groups()[*group].spec.name;
            let fill: Arc<[u8]> = fill.clone().into();
            for (s, shard) in run.shards().iter().enumerate() {
                let len = shard.group_rows(name) * *row_bytes as u64;
                match columns.get(s).copied().flatten() {
                    Some(col) => push(len, Src::Column { shard: s, col, at: 0 }),
                    None => push(len, Src::Fill(Arc::clone(&fill))),
                }
            }
        }
        Source::RaggedValues { field, elem } => {
            let f = &run.fields()[*field];
            for (s, shard) in run.shards().iter().enumerate() {
                let c = f.columns.get(s).copied().unwrap_or_default();
                let (Some(d), Some(l), Some(o)) = (c.data, c.len, c.offs) else { continue };
                let (lens, offs) = (shard.u64s(l), shard.u64s(o));
                let mut elems = 0u64;
                for (r, (&n, &off)) in lens.iter().zip(offs).enumerate() {
                    if off != elems {
                        return Err(ViewError::Layout(format!(
                            "shard {s}: ragged field {:?} row {r} starts at element {off}, not {elems}: \
                             it cannot be shown in arrival order",
                            f.spec.path
                        )));
                    }
                    elems += n;
                }
                push(elems * *elem as u64, Src::Column { shard: s, col: d, at: 0 });
            }
        }
        Source::Offsets { field } => {
            let f = &run.fields()[*field];
            let mut offsets = vec![0u64];
            for (s, shard) in run.shards().iter().enumerate() {
                let c = f.columns.get(s).copied().unwrap_or_default();
                let rows = shard.group_rows(&f.spec.group) as usize;
                let lens = c.len.map_or(&[][..], |l| shard.u64s(l));
                let mut last = offsets.last().copied().unwrap_or(0);
                for r in 0..rows {
                    last += lens.get(r).copied().unwrap_or(0);
                    offsets.push(last);
                }
            }
            push(offsets.len() as u64 * 8, Src::Owned(bytemuck_u64s(&offsets).into()));
        }
        Source::Literal(b) => push(b.len() as u64, Src::Owned(b.clone().into())),
        _ => {
            return Err(ViewError::Layout(format!("dataset /{} cannot be shown in arrival order", layout.path)));
        }
    }
    if pos != layout.byte_size() {
        return Err(ViewError::Layout(format!(
            "dataset /{} has {pos} bytes in arrival order but {} in event-id order",
            layout.path,
            layout.byte_size()
        )));
    }
    Ok(segs)
}

fn bytemuck_u64s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Bytes `at..at + out.len()` of the dataset whose segments are `segs`.
pub(super) fn read(run: &Run, segs: &[Seg], at: u64, out: &mut [u8]) -> Result<(), ViewError> {
    let mut k = segs.partition_point(|s| s.start + s.len <= at);
    let mut done = 0usize;
    while done < out.len() {
        let pos = at + done as u64;
        let Some(seg) = segs.get(k).filter(|s| s.start <= pos) else {
            return Err(ViewError::Layout(format!("arrival-order read at byte {pos} past the dataset")));
        };
        let within = pos - seg.start;
        let take = ((seg.len - within) as usize).min(out.len() - done);
        let dst = &mut out[done..done + take];
        match &seg.from {
            Src::Column { shard, col, at: base } => {
                let bytes = run.shards()[*shard].bytes(*col);
                let a = (base + within) as usize;
                let src = bytes.get(a..a + take).ok_or_else(|| {
                    ViewError::Layout(format!("shard {shard} column {col} is shorter than its committed rows"))
                })?;
                dst.copy_from_slice(src);
            }
            Src::Fill(row) => {
                for (i, b) in dst.iter_mut().enumerate() {
                    *b = row[((within + i as u64) % row.len() as u64) as usize];
                }
            }
            Src::Owned(b) => dst.copy_from_slice(&b[within as usize..within as usize + take]),
        }
        done += take;
        k += 1;
    }
    Ok(())
}

/// The shard map slice that holds all of `at..at + len` of the dataset, when one column
/// segment does: what a reply can be sent from without a copy.
pub(super) fn slice<'r>(run: &'r Run, segs: &[Seg], at: u64, len: usize) -> Option<&'r [u8]> {
    let seg = segs.get(segs.partition_point(|s| s.start + s.len <= at))?;
    let Src::Column { shard, col, at: base } = &seg.from else { return None };
    if at < seg.start || at + len as u64 > seg.start + seg.len {
        return None;
    }
    let a = (base + at - seg.start) as usize;
    run.shards()[*shard].bytes(*col).get(a..a + len)
}

/// Calls `f(shard, column, bytes)` for each column segment that bytes `at..at + len` of the
/// dataset whose segments are `segs` read, with the column bytes read from it.
pub(super) fn column_ranges(segs: &[Seg], at: u64, len: u64, mut f: impl FnMut(usize, u32, std::ops::Range<u64>)) {
    let end = at + len;
    let mut k = segs.partition_point(|s| s.start + s.len <= at);
    while let Some(seg) = segs.get(k).filter(|s| s.start < end) {
        k += 1;
        if let Src::Column { shard, col, at: base } = &seg.from {
            let (a, b) = (at.max(seg.start), end.min(seg.start + seg.len));
            f(*shard, *col, base + (a - seg.start)..base + (b - seg.start));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::view::{Order, View, ViewOptions};
    use smdfs::demo;
    use smdfs::format::Role;

    fn whole(v: &View, path: &str) -> Vec<u8> {
        let a = v.resolve(path).unwrap();
        let mut buf = vec![0u8; a.size as usize];
        assert_eq!(v.read_into(a.ino, 0, &mut buf).unwrap(), buf.len());
        buf
    }

    fn body(npy: &[u8]) -> &[u8] {
        &npy[u16::from_le_bytes([npy[8], npy[9]]) as usize + 10..]
    }

    fn arrival(dir: &std::path::Path) -> View {
        View::open(dir, &ViewOptions { order: Order::Arrival, ..Default::default() }).unwrap()
    }

    #[test]
    fn arrival_order_files_are_the_shard_columns_concatenated() {
        let dir = tempfile::tempdir().unwrap();
        demo::write_demo(dir.path(), 2000, 3, 4, false).unwrap();
        let v = arrival(dir.path());
        let run = v.run();
        let cat = |group: &str, field: Option<&str>, role| -> Vec<u8> {
            run.shards()
                .iter()
                .flat_map(|s| s.column(group, field, role).map_or(&[][..], |c| s.bytes(c)))
                .copied()
                .collect()
        };
        let run_group = run.groups()[0].spec.name.clone();
        assert_eq!(body(&whole(&v, "arrays/timestamp.npy")), cat(&run_group, None, Role::Ts));
        assert_eq!(body(&whole(&v, "arrays/det/image.npy")), cat(&run_group, Some("det/image"), Role::Data));
        assert_eq!(body(&whole(&v, "arrays/energy.npy")), cat(&run_group, Some("energy"), Role::Data));
        // Ragged: row r's values are the text of the event whose id is row r's timestamp.
        let ts: Vec<u64> = body(&whole(&v, "arrays/timestamp.npy"))
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_ne!(ts.windows(2).filter(|w| w[0] > w[1]).count(), 0, "arrival order is not id order");
        let offs: Vec<u64> = body(&whole(&v, "arrays/tag_offsets.npy"))
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let tag = whole(&v, "arrays/tag.npy");
        let tag = body(&tag);
        for (r, id) in ts.iter().enumerate() {
            let i = (id - 1000) / 3;
            assert_eq!(&tag[offs[r] as usize..offs[r + 1] as usize], demo::tag(i).as_bytes(), "row {r}");
        }
    }

    #[test]
    fn slices_equal_reads_in_both_orders() {
        let dir = tempfile::tempdir().unwrap();
        demo::write_demo(dir.path(), 3000, 2, 1, false).unwrap();
        let mut rng = smdfs::read::shuffle::SplitMix::new(5);
        for v in [arrival(dir.path()), View::open(dir.path(), &ViewOptions::default()).unwrap()] {
            let mut sliced = 0;
            for path in ["run.h5", "arrays/det/image.npy", "arrays/tag.npy", "arrays/energy.npy"] {
                let a = v.resolve(path).unwrap();
                let full = whole(&v, path);
                for _ in 0..300 {
                    let off = rng.below(a.size);
                    let len = 1 + rng.below(9000) as usize;
                    if let Some(s) = v.slice(a.ino, off, len) {
                        sliced += 1;
                        let end = (off as usize + len).min(full.len());
                        assert_eq!(s, &full[off as usize..end], "{path} at {off}+{len}");
                    }
                }
            }
            assert!(sliced > 100, "{sliced} reads answered from one piece");
        }
    }
}
