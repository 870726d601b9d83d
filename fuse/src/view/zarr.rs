//! The view's `run.zarr/`: the run's Zarr v3 hierarchy ([`smdfs::h5::zarr`]) as files of the
//! [`View`] — each node's `zarr.json` as literal bytes (the root's with the consolidated
//! metadata), each chunk file as an extent of its dataset's bytes (the same source `run.h5`
//! serves; no copy), padded with zeros to a whole chunk at an array's end.

use std::sync::Arc;

use smdfs::h5::zarr::{Codec, ZarrTree};

use super::{Extent, Piece, View, ROOT_INO};
use crate::error::ViewError;
use smdfs::h5::layout::{DatasetLayout, Source};

/// Adds the directory `name` holding the Zarr hierarchy of the view's datasets.
pub(super) fn add(view: &mut View, name: &str) -> Result<(), ViewError> {
    let plan: Vec<DatasetLayout> = view.datasets.iter().map(|d| d.layout.clone()).collect();
    let tree = ZarrTree::new(&view.run, &plan, Codec::Raw);
    let top = view.add_dir(ROOT_INO, name)?;
    for g in &tree.groups {
        let dir = dir_of(view, top, g)?;
        let json = tree.zarr_json(g).ok_or_else(|| ViewError::Layout(format!("no Zarr group {g:?}")))?;
        literal(view, dir, "zarr.json", json)?;
    }
    for a in &tree.arrays {
        let d = &plan[a.dataset];
        let dir = dir_of(view, top, &a.path)?;
        let json = tree.zarr_json(&a.path).ok_or_else(|| ViewError::Layout(format!("no Zarr array {:?}", a.path)))?;
        literal(view, dir, "zarr.json", json)?;
        for i in 0..a.chunks {
            let (at, len) = a.chunk_range(d, i);
            let key = a.chunk_key(d.shape.len(), i);
            let (dirs, file) = key.rsplit_once('/').unwrap_or(("", key.as_str()));
            let mut parent = dir;
            for seg in dirs.split('/').filter(|s| !s.is_empty()) {
                parent = view.add_dir(parent, seg)?;
            }
            let piece = match &d.source {
                Source::Literal(b) => Piece::Literal(Arc::from(&b[at as usize..(at + len) as usize])),
                _ => Piece::Data(a.dataset, at),
            };
            // Bytes past `len` (the padding of an edge chunk) read as zeros.
            let extents = if len > 0 { vec![Extent { start: 0, len, piece }] } else { vec![] };
            view.add_file(parent, file, a.chunk_bytes, extents)?;
        }
    }
    Ok(())
}

/// The directory of node `path` below `top`, created with its parents.
fn dir_of(view: &mut View, top: u64, path: &str) -> Result<u64, ViewError> {
    let mut dir = top;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        dir = view.add_dir(dir, seg)?;
    }
    Ok(dir)
}

fn literal(view: &mut View, dir: u64, name: &str, bytes: Vec<u8>) -> Result<(), ViewError> {
    let len = bytes.len() as u64;
    let extents = vec![Extent { start: 0, len, piece: Piece::Literal(bytes.into()) }];
    view.add_file(dir, name, len, extents)?;
    Ok(())
}
