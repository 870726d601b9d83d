//! [`FieldReader`]: one field's rows in event-id order — row and bulk reads (gathered per
//! stretch of consecutive rows), ragged rows as zero-copy slices, zero-copy shard slices,
//! and blocks streamed across rayon's threads. Fill where an event lacked the field.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::index::Loc;
use crate::model::dtype::{Dtype, Element};
use crate::model::schema::FieldSpec;
use crate::model::value::Kind;
use crate::read::run::{bad_loc, check_range, FieldData, FieldReader, Run};

/// A block of consecutive rows (event-id order).
#[derive(Debug, Default)]
pub struct Block {
    /// First row.
    pub start: u64,
    /// Rows in the block.
    pub rows: u64,
    /// Fixed fields: the rows' bytes. Ragged kinds: the rows' values, concatenated.
    pub data: Vec<u8>,
    /// Ragged kinds: `rows + 1` byte offsets into `data`; empty for fixed fields.
    pub offsets: Vec<u64>,
}

impl<'r> FieldReader<'r> {
    /// The field's spec.
    pub fn spec(&self) -> &'r FieldSpec {
        &self.f.spec
    }

    /// Everything known about the field.
    pub fn data(&self) -> &'r FieldData {
        self.f
    }

    /// Rows (the group's).
    pub fn rows(&self) -> u64 {
        self.g.index.len()
    }

    /// Bytes of one row (fixed fields).
    pub fn row_bytes(&self) -> usize {
        self.f.spec.row_bytes()
    }

    fn fixed(&self) -> Result<()> {
        if self.f.spec.kind != Kind::Fixed {
            return Err(Error::Usage(format!(
                "field {:?} is {}, not fixed-shape",
                self.f.spec.path,
                self.f.spec.describe()
            )));
        }
        Ok(())
    }

    /// Copies rows `start..start + out.len() / row_bytes` into `out` (fill where absent).
    pub fn read_rows(&self, start: u64, out: &mut [u8]) -> Result<()> {
        self.fixed()?;
        let rb = self.row_bytes();
        if rb == 0 || !out.len().is_multiple_of(rb) {
            return Err(Error::Usage(format!("buffer of {} bytes is not whole rows of {rb} bytes", out.len())));
        }
        let n = (out.len() / rb) as u64;
        check_range(start, n, self.rows())?;
        let fill = self.f.spec.fill.repeat(self.f.spec.elements_per_row());
        let cols: Vec<Option<u32>> = self.f.columns.iter().map(|c| c.data).collect();
        self.run.gather(self.f.group, &cols, rb, &fill, start, out)
    }

    /// Reads presence bytes (1 present, 0 absent) for rows `start..start + out.len()`.
    pub fn read_present(&self, start: u64, out: &mut [u8]) -> Result<()> {
        let cols: Vec<Option<u32>> = self.f.columns.iter().map(|c| c.present).collect();
        // Unaligned fields are present in every row of their group; aligned fields are absent
        // where a shard lacks the column.
        let fill = [u8::from(!self.g.spec.aligned)];
        let cols = if self.g.spec.aligned { cols } else { vec![None; cols.len()] };
        self.run.gather(self.f.group, &cols, 1, &fill, start, out)
    }

    /// The whole field as a vector of `T` (fixed fields; `T` must match the dtype).
    pub fn read_all<T: Element>(&self) -> Result<Vec<T>> {
        self.check_type::<T>()?;
        let mut buf = vec![0u8; self.rows() as usize * self.row_bytes()];
        self.read_rows(0, &mut buf)?;
        Ok(T::from_bytes(&buf))
    }

    fn check_type<T: Element>(&self) -> Result<()> {
        if T::DTYPE != self.f.spec.dtype {
            return Err(Error::SchemaMismatch {
                field: self.f.spec.path.clone(),
                expected: self.f.spec.dtype.to_string(),
                given: format!("read as {}", T::DTYPE),
            });
        }
        Ok(())
    }

    /// One row's elements (fixed: the row; ragged kinds: the row's values).
    pub fn row<T: Element>(&self, i: u64) -> Result<Vec<T>> {
        self.check_type::<T>()?;
        if self.f.spec.kind == Kind::Fixed {
            let mut buf = vec![0u8; self.row_bytes()];
            self.read_rows(i, &mut buf)?;
            Ok(T::from_bytes(&buf))
        } else {
            Ok(T::from_bytes(self.ragged_row(i)?))
        }
    }

    /// Where global row `i` lives.
    pub fn locate(&self, i: u64) -> Result<Loc> {
        self.g.index.locate(i).ok_or(Error::OutOfRange { what: "row", index: i, len: self.rows() })
    }

    /// A ragged row's bytes, zero-copy from the shard's map (empty where absent).
    pub fn ragged_row(&self, i: u64) -> Result<&'r [u8]> {
        self.ragged_at(self.locate(i)?)
    }

    /// A ragged value at a shard location, zero-copy.
    pub fn ragged_at(&self, loc: Loc) -> Result<&'r [u8]> {
        if !self.f.spec.kind.is_ragged() {
            return Err(Error::Usage(format!("field {:?} is not ragged", self.f.spec.path)));
        }
        let bad = || bad_loc(self.run, loc, 8);
        let committed = self.g.shard_rows.get(loc.shard).is_some_and(|&rows| loc.row < rows);
        let (Some(&c), Some(shard), true) =
            (self.f.columns.get(loc.shard), self.run.shards().get(loc.shard), committed)
        else {
            return Err(bad());
        };
        let (Some(d), Some(l), Some(o)) = (c.data, c.len, c.offs) else { return Ok(&[]) };
        let r = loc.row as usize;
        let (Some(&len), Some(&off)) = (shard.u64s(l).get(r), shard.u64s(o).get(r)) else { return Err(bad()) };
        let es = self.f.spec.dtype.size() as u64;
        let (a, b) = (off.saturating_mul(es), off.saturating_add(len).saturating_mul(es));
        shard.bytes(d).get(a as usize..b as usize).ok_or_else(|| Error::Corrupt {
            path: shard.dir.clone(),
            offset: a,
            why: format!("ragged field {:?} row {r} points past its committed values", self.f.spec.path),
        })
    }

    /// A fixed row at a shard location (fill where the shard lacks the field; a location
    /// past the shard's committed rows is an error). Looks at that one shard only.
    pub fn read_at(&self, loc: Loc, out: &mut [u8]) -> Result<()> {
        self.fixed()?;
        let rb = self.row_bytes();
        if out.len() != rb {
            return Err(Error::Usage(format!("a row of {:?} is {rb} bytes, not {}", self.f.spec.path, out.len())));
        }
        let bad = || bad_loc(self.run, loc, rb);
        if self.g.shard_rows.get(loc.shard).is_none_or(|&rows| loc.row >= rows) {
            return Err(bad());
        }
        match self.f.columns[loc.shard].data.zip(self.run.shards().get(loc.shard)) {
            Some((c, shard)) => {
                let from = (loc.row as usize).checked_mul(rb).ok_or_else(bad)?;
                out.copy_from_slice(shard.bytes(c).get(from..from + rb).ok_or_else(bad)?);
            }
            None => {
                let fill = &self.f.spec.fill;
                out.chunks_exact_mut(fill.len()).for_each(|e| e.copy_from_slice(fill));
            }
        }
        Ok(())
    }

    /// Global element offsets (`rows + 1`) of a ragged field.
    pub fn offsets(&self) -> Option<&'r [u64]> {
        self.f.offsets.as_ref().map(|o| o.get())
    }

    /// Each shard's committed rows of this field, zero-copy, in shard (arrival) order.
    pub fn shard_slices<T: Element + bytemuck::Pod>(&self) -> Result<Vec<&'r [T]>> {
        self.check_type::<T>()?;
        self.fixed()?;
        Ok(self
            .f
            .columns
            .iter()
            .zip(self.run.shards())
            .map(|(c, s)| c.data.map_or(&[][..], |d| bytemuck::try_cast_slice(s.bytes(d)).unwrap_or(&[])))
            .collect())
    }

    /// The whole field as one zero-copy slice in event-id order, when its rows are one
    /// contiguous stretch of one shard (one server, or events that arrived in order).
    pub fn as_slice<T: Element + bytemuck::Pod>(&self) -> Result<Option<&'r [T]>> {
        self.check_type::<T>()?;
        self.fixed()?;
        let mut segs = Vec::new();
        self.g.index.for_each_segment(0, self.rows(), |l, n| {
            if segs.len() < 2 {
                segs.push((l, n))
            }
        });
        if self.rows() == 0 {
            return Ok(Some(&[]));
        }
        let [(loc, n)] = segs[..] else { return Ok(None) };
        let Some(d) = self.f.columns.get(loc.shard).and_then(|c| c.data) else { return Ok(None) };
        let rb = self.row_bytes();
        let bytes = self.run.shards()[loc.shard].bytes(d).get(loc.row as usize * rb..(loc.row + n) as usize * rb);
        Ok(bytes.and_then(|b| bytemuck::try_cast_slice(b).ok()))
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.f.spec.dtype
    }

    /// The run.
    pub fn run(&self) -> &'r Run {
        self.run
    }

    /// Reads rows `start..start + rows` into `block` (reusing its buffers).
    pub fn read_block(&self, start: u64, rows: u64, block: &mut Block) -> Result<()> {
        block.start = start;
        block.rows = rows;
        block.offsets.clear();
        if self.spec().kind.is_ragged() {
            block.data.clear();
            block.offsets.push(0);
            for i in start..start + rows {
                block.data.extend_from_slice(self.ragged_row(i)?);
                block.offsets.push(block.data.len() as u64);
            }
            Ok(())
        } else {
            block.data.resize(rows as usize * self.row_bytes(), 0);
            self.read_rows(start, &mut block.data)
        }
    }

    /// Streams the field in blocks of `block_rows` across rayon's threads, calling `f` with
    /// each block as it is read (unordered). Each thread reuses one buffer.
    pub fn par_for_each_block<F>(&self, block_rows: u64, f: F) -> Result<()>
    where
        F: Fn(&Block) + Sync + Send,
    {
        let block_rows = block_rows.max(1);
        let n = self.rows().div_ceil(block_rows);
        (0..n).into_par_iter().try_for_each_init(Block::default, |b, k| {
            let start = k * block_rows;
            self.read_block(start, block_rows.min(self.rows() - start), b)?;
            f(b);
            Ok(())
        })
    }
}
