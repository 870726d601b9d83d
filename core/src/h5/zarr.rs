//! The run as a Zarr v3 hierarchy, built from the same [`layout::plan`] as `run.h5`: one
//! array per dataset (same path, dtype, shape, fill and attributes), a group per HDF5 group,
//! `dimension_names` equal to the HDF5 dimension scales' names, and the whole hierarchy's
//! metadata consolidated inline in the root `zarr.json` (zarr-python's format), so one read
//! opens it.
//!
//! Chunks run along the event axis: [`chunk_rows`] rows per chunk (about [`CHUNK_TARGET`]
//! bytes, at least one row; the other axes whole). A chunk's bytes are the dataset's bytes of
//! those rows, little-endian C order (the `bytes` codec); the last chunk of an array is padded
//! to the full chunk shape (Zarr's regular grid stores edge chunks whole; the padding is never
//! read as data). The view serves chunks uncompressed from the dataset's own byte source (no
//! copy); [`export`] writes them gzip-compressed (a codec zarr-python reads by default) as real
//! files, written under `DIR.partial` and renamed into place when complete.
//!
//! Fill values follow the HDF5 file: `fill_value` is the field's manifest fill (0 or false for
//! ids, lengths, offsets and masks); a `_FillValue` attribute (xarray's encoding: integers as
//! numbers, floats as base64 of a little-endian f64) only where rows can be missing, so xarray
//! masks nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value as Json};

use crate::error::{Error, Result};
use crate::h5::layout::{self, DatasetLayout, Source};
use crate::h5::skeleton::AttrValue;
use crate::model::dtype::Dtype;
use crate::read::run::Run;

/// Bytes a chunk aims at (whole rows; one row when a row is larger).
pub const CHUNK_TARGET: u64 = 8 << 20;

/// How chunks are encoded after the `bytes` codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Codec {
    /// Raw little-endian bytes (the mounted view).
    Raw,
    /// gzip at this level (0..=9), after the `bytes` codec.
    Gzip(u32),
}

/// One array of the hierarchy.
#[derive(Clone, Debug)]
pub struct ZarrArray {
    /// Index of its dataset in the plan.
    pub dataset: usize,
    /// Path in the hierarchy (the HDF5 path without `/`).
    pub path: String,
    /// Rows per chunk (0-d arrays: 1).
    pub chunk_rows: u64,
    /// Number of chunks (0-d arrays: 1; arrays without rows: 0).
    pub chunks: u64,
    /// Bytes of one whole (uncompressed) chunk.
    pub chunk_bytes: u64,
}

impl ZarrArray {
    /// The key of chunk `i` below the array (`c/i/0/0` for a 3-d array, `c` for a 0-d one).
    pub fn chunk_key(&self, rank: usize, i: u64) -> String {
        if rank == 0 {
            return "c".into();
        }
        let mut k = format!("c/{i}");
        for _ in 1..rank {
            k.push_str("/0");
        }
        k
    }

    /// The dataset bytes chunk `i` holds: `(byte offset in the dataset, length)`; the chunk
    /// is padded after them to [`ZarrArray::chunk_bytes`].
    pub fn chunk_range(&self, d: &DatasetLayout, i: u64) -> (u64, u64) {
        if d.shape.is_empty() {
            return (0, d.byte_size());
        }
        let rb = d.row_bytes();
        let first = i * self.chunk_rows;
        let rows = self.chunk_rows.min(d.shape[0].saturating_sub(first));
        (first * rb, rows * rb)
    }
}

/// The Zarr hierarchy of a run.
#[derive(Clone, Debug)]
pub struct ZarrTree {
    /// Group paths (`""` is the root), parents before children.
    pub groups: Vec<String>,
    /// The arrays, in plan order.
    pub arrays: Vec<ZarrArray>,
    /// Each node's own metadata by path (`""` is the root, without its consolidated part).
    nodes: BTreeMap<String, Json>,
}

/// Rows per chunk of an array with `rows` rows of `row_bytes` bytes.
pub fn chunk_rows(rows: u64, row_bytes: u64) -> u64 {
    (CHUNK_TARGET / row_bytes.max(1)).clamp(1, rows.max(1))
}

/// The Zarr v3 `data_type` of a [`Dtype`] (numpy's names).
pub fn data_type(dtype: Dtype) -> &'static str {
    dtype.numpy_name()
}

/// A float as Zarr v3 JSON (non-finite values as the strings the spec names).
fn float(x: f64) -> Json {
    if x.is_nan() {
        json!("NaN")
    } else if x == f64::INFINITY {
        json!("Infinity")
    } else if x == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(x)
    }
}

/// One little-endian element as JSON.
fn element(dtype: Dtype, b: &[u8]) -> Json {
    let a = |n: usize| -> [u8; 8] {
        let mut x = [0u8; 8];
        x[..n].copy_from_slice(&b[..n]);
        x
    };
    match dtype {
        Dtype::Bool => json!(b[0] != 0),
        Dtype::I8 => json!(b[0] as i8),
        Dtype::I16 => json!(i16::from_le_bytes([b[0], b[1]])),
        Dtype::I32 => json!(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        Dtype::I64 => json!(i64::from_le_bytes(a(8))),
        Dtype::U8 | Dtype::U16 | Dtype::U32 | Dtype::U64 => json!(u64::from_le_bytes(a(dtype.size()))),
        Dtype::F32 => float(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        Dtype::F64 => float(f64::from_le_bytes(a(8))),
    }
}

/// Standard base64 with padding (xarray stores float `_FillValue`s of Zarr v3 arrays so).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An attribute as JSON; `_FillValue` in xarray's Zarr v3 encoding.
fn attr(name: &str, v: &AttrValue) -> Json {
    match v {
        AttrValue::I64(x) => json!(x),
        AttrValue::U64(x) => json!(x),
        AttrValue::F64(x) => float(*x),
        AttrValue::Str(s) => json!(s),
        AttrValue::Typed(dtype, b) if name == "_FillValue" && matches!(dtype, Dtype::F32 | Dtype::F64) => {
            let x = match dtype {
                Dtype::F32 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                _ => f64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])),
            };
            json!(base64(&x.to_le_bytes()))
        }
        AttrValue::Typed(dtype, b) => element(*dtype, b),
        AttrValue::Array(dtype, b) => Json::Array(b.chunks_exact(dtype.size()).map(|e| element(*dtype, e)).collect()),
    }
}

fn attrs(list: &[(String, AttrValue)]) -> Json {
    Json::Object(list.iter().map(|(k, v)| (k.clone(), attr(k, v))).collect::<Map<_, _>>())
}

fn group_json(attributes: Json) -> Json {
    json!({ "zarr_format": 3, "node_type": "group", "attributes": attributes })
}

impl ZarrTree {
    /// The hierarchy of `run` whose datasets are `plan` (from [`layout::plan`]).
    pub fn new(run: &Run, plan: &[DatasetLayout], codec: Codec) -> ZarrTree {
        let mut nodes = BTreeMap::new();
        let mut groups = vec![String::new()];
        nodes.insert(String::new(), group_json(attrs(&layout::root_attrs(run))));
        let mut arrays = Vec::with_capacity(plan.len());
        for (i, d) in plan.iter().enumerate() {
            let mut parent = String::new();
            if let Some((dirs, _)) = d.path.rsplit_once('/') {
                for seg in dirs.split('/') {
                    parent = if parent.is_empty() { seg.to_string() } else { format!("{parent}/{seg}") };
                    if !nodes.contains_key(&parent) {
                        nodes.insert(parent.clone(), group_json(json!({})));
                        groups.push(parent.clone());
                    }
                }
            }
            let rows = d.shape.first().copied();
            let (chunk_rows, chunks) = match rows {
                None => (1, 1),
                Some(r) => {
                    let cr = chunk_rows(r, d.row_bytes());
                    (cr, r.div_ceil(cr))
                }
            };
            let mut chunk_shape = d.shape.clone();
            if let Some(c) = chunk_shape.first_mut() {
                *c = chunk_rows;
            }
            let chunk_bytes = chunk_shape.iter().product::<u64>() * d.dtype.size() as u64;
            let fill = d.fill.as_deref().map_or_else(|| element(d.dtype, &[0u8; 8]), |f| element(d.dtype, f));
            let mut codecs = vec![json!({ "name": "bytes", "configuration": { "endian": "little" } })];
            if let Codec::Gzip(level) = codec {
                codecs.push(json!({ "name": "gzip", "configuration": { "level": level } }));
            }
            let meta = json!({
                "zarr_format": 3,
                "node_type": "array",
                "shape": d.shape,
                "data_type": data_type(d.dtype),
                "chunk_grid": { "name": "regular", "configuration": { "chunk_shape": chunk_shape } },
                "chunk_key_encoding": { "name": "default", "configuration": { "separator": "/" } },
                "fill_value": fill,
                "codecs": codecs,
                "attributes": attrs(&d.attrs),
                "dimension_names": d.dim_names(),
            });
            nodes.insert(d.path.clone(), meta);
            arrays.push(ZarrArray { dataset: i, path: d.path.clone(), chunk_rows, chunks, chunk_bytes });
        }
        ZarrTree { groups, arrays, nodes }
    }

    /// The `zarr.json` of the node at `path` (`""` is the root, which carries the whole
    /// hierarchy's consolidated metadata); `None` if there is no such node.
    pub fn zarr_json(&self, path: &str) -> Option<Vec<u8>> {
        let mut node = self.nodes.get(path)?.clone();
        if path.is_empty() {
            let all: Map<String, Json> =
                self.nodes.iter().filter(|(k, _)| !k.is_empty()).map(|(k, v)| (k.clone(), v.clone())).collect();
            node["consolidated_metadata"] = json!({ "kind": "inline", "must_understand": false, "metadata": all });
        }
        serde_json::to_vec_pretty(&node).ok()
    }
}

/// How [`export`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZarrExportOptions {
    /// gzip level, 0..=9.
    pub gzip_level: u32,
    /// Replace a file or directory already at the destination.
    pub overwrite: bool,
}

impl Default for ZarrExportOptions {
    fn default() -> Self {
        ZarrExportOptions { gzip_level: 4, overwrite: false }
    }
}

/// What [`export`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZarrExportReport {
    /// The directory written.
    pub path: PathBuf,
    /// Arrays written.
    pub arrays: usize,
    /// Chunk files written.
    pub chunks: u64,
    /// Raw (uncompressed) data bytes.
    pub data_bytes: u64,
    /// Bytes of the chunk files (compressed).
    pub stored_bytes: u64,
}

/// Writes `run` as a Zarr v3 directory tree at `out` (gzip-compressed chunks, consolidated
/// metadata), calling `progress(done, total)` with data bytes. The tree is written as
/// `OUT.partial` and renamed into place when complete. Errors: [`Error::Usage`] when `out`
/// exists and `overwrite` is off or the level is above 9, [`Error::Io`] naming the file.
pub fn export(
    run: &Run,
    out: impl AsRef<Path>,
    opts: &ZarrExportOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ZarrExportReport> {
    let out = out.as_ref();
    if opts.gzip_level > 9 {
        return Err(Error::Usage(format!("gzip level {} is not in 0..=9", opts.gzip_level)));
    }
    if out.symlink_metadata().is_ok() && !opts.overwrite {
        return Err(Error::Usage(format!("{} already exists (use --force to replace it)", out.display())));
    }
    let plan = layout::plan(run);
    let tree = ZarrTree::new(run, &plan, Codec::Gzip(opts.gzip_level));
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let r = write_tree(run, &plan, &tree, &partial, opts.gzip_level, progress);
    let (chunks, stored_bytes) = match r {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    match std::fs::symlink_metadata(out) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(out).map_err(|e| Error::io(out, e))?,
        Ok(_) => std::fs::remove_file(out).map_err(|e| Error::io(out, e))?,
        Err(_) => {}
    }
    std::fs::rename(&partial, out).map_err(|e| Error::io(out, e))?;
    let data_bytes = plan.iter().map(DatasetLayout::byte_size).sum();
    Ok(ZarrExportReport { path: out.to_path_buf(), arrays: tree.arrays.len(), chunks, data_bytes, stored_bytes })
}

fn write_tree(
    run: &Run,
    plan: &[DatasetLayout],
    tree: &ZarrTree,
    dir: &Path,
    level: u32,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(u64, u64)> {
    let _ = std::fs::remove_dir_all(dir);
    let put = |path: &Path, bytes: &[u8]| -> Result<()> {
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
        }
        std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
    };
    for g in &tree.groups {
        put(&dir.join(g).join("zarr.json"), &tree.zarr_json(g).unwrap_or_default())?;
    }
    let total: u64 = plan.iter().map(DatasetLayout::byte_size).sum();
    let (mut done, mut files, mut stored) = (0u64, 0u64, 0u64);
    progress(0, total);
    let mut buf = Vec::new();
    for a in &tree.arrays {
        let d = &plan[a.dataset];
        let adir = dir.join(&a.path);
        put(&adir.join("zarr.json"), &tree.zarr_json(&a.path).unwrap_or_default())?;
        for i in 0..a.chunks {
            let (at, len) = a.chunk_range(d, i);
            buf.clear();
            buf.resize(a.chunk_bytes as usize, 0);
            match &d.source {
                Source::Literal(b) => buf[..len as usize].copy_from_slice(&b[at as usize..(at + len) as usize]),
                _ => d.read(run, at, &mut buf[..len as usize])?,
            }
            let z = gzip(&buf, level).ok_or_else(|| Error::Usage(format!("zlib failed compressing {}", a.path)))?;
            put(&adir.join(a.chunk_key(d.shape.len(), i)), &z)?;
            files += 1;
            stored += z.len() as u64;
            done += len;
            progress(done, total);
        }
    }
    Ok((files, stored))
}

#[link(name = "z")]
extern "C" {
    fn compressBound(source_len: std::ffi::c_ulong) -> std::ffi::c_ulong;
    fn compress2(
        dest: *mut u8,
        dest_len: *mut std::ffi::c_ulong,
        source: *const u8,
        source_len: std::ffi::c_ulong,
        level: std::ffi::c_int,
    ) -> std::ffi::c_int;
    fn crc32(crc: std::ffi::c_ulong, buf: *const u8, len: std::ffi::c_uint) -> std::ffi::c_ulong;
}

/// `data` as one gzip member (RFC 1952), compressed by the system zlib: zlib's stream minus
/// its 2-byte header and Adler-32 trailer is the raw deflate data gzip wraps. `None` if zlib
/// fails or `data` is 4 GiB or more (chunks are far smaller).
pub fn gzip(data: &[u8], level: u32) -> Option<Vec<u8>> {
    let n = u32::try_from(data.len()).ok()?;
    // SAFETY: pure function of its argument.
    let bound = unsafe { compressBound(std::ffi::c_ulong::from(n)) };
    let mut z = vec![0u8; bound as usize];
    let mut zlen = bound;
    // SAFETY: `z` holds `zlen` writable bytes and `data` `n` readable ones; zlib writes at most
    // `zlen` bytes and stores the length written in `zlen`.
    let rc = unsafe { compress2(z.as_mut_ptr(), &mut zlen, data.as_ptr(), std::ffi::c_ulong::from(n), level as i32) };
    if rc != 0 || zlen < 6 {
        return None;
    }
    // SAFETY: `data` holds `n` readable bytes.
    let crc = unsafe { crc32(0, data.as_ptr(), n) } as u32;
    let deflate = &z[2..zlen as usize - 4];
    let mut out = Vec::with_capacity(deflate.len() + 18);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    out.extend_from_slice(deflate);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&f64::NAN.to_le_bytes()), "AAAAAAAA+H8=");
    }

    #[test]
    fn chunks_hold_whole_rows_near_the_target() {
        assert_eq!(chunk_rows(1 << 30, 8), 1 << 20);
        assert_eq!(chunk_rows(10, 8), 10);
        assert_eq!(chunk_rows(0, 8), 1);
        assert_eq!(chunk_rows(5, 64 << 20), 1);
    }

    #[test]
    fn a_gzip_member_has_its_header_crc_and_length() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let z = gzip(&data, 6).unwrap();
        assert_eq!(&z[..3], &[0x1f, 0x8b, 8]);
        assert!(z.len() < data.len() / 4);
        assert_eq!(u32::from_le_bytes(z[z.len() - 4..].try_into().unwrap()), data.len() as u32);
    }
}
