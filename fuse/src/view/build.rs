//! Building a [`View`] from a run: the skeleton libhdf5 writes (mapped from an unlinked
//! temporary file), one [`Dataset`] per layout, then the files — `run.h5` as dataset extents
//! with skeleton bytes between them, `arrays/<path>.npy` as a header plus the dataset's
//! bytes, and the Zarr tree. O(datasets), independent of the number of events (except the
//! arrival order's ragged offsets, see `arrival`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use memmap2::Mmap;
use smdfs::format::npy;
use smdfs::h5::layout::{self, DatasetLayout, Source};
use smdfs::h5::skeleton::build_skeleton;
use smdfs::Run;

use super::{arrival, zarr, Dataset, Extent, Node, Order, Piece, View, ViewOptions, ROOT_INO};
use crate::error::ViewError;

impl View {
    /// Opens the run in `dir` and builds its view: O(datasets), independent of events.
    pub fn open(dir: &Path, opts: &ViewOptions) -> Result<View, ViewError> {
        let run = Run::open(dir)?;
        View::from_run(run, opts)
    }

    /// Builds the view of an opened run.
    pub fn from_run(run: Run, opts: &ViewOptions) -> Result<View, ViewError> {
        if opts.h5_name.is_empty() || opts.h5_name.contains('/') || opts.h5_name == "arrays" {
            return Err(ViewError::Layout(format!("invalid HDF5 file name {:?}", opts.h5_name)));
        }
        if opts.zarr_name.contains('/') || ["arrays", opts.h5_name.as_str()].contains(&opts.zarr_name.as_str()) {
            return Err(ViewError::Layout(format!("invalid Zarr directory name {:?}", opts.zarr_name)));
        }
        let mtime = std::fs::metadata(run.dir().join(smdfs::format::manifest::MANIFEST_FILE))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let layouts = layout::plan(&run);
        let plans: Vec<_> = layouts.iter().map(DatasetLayout::skeleton_plan).collect();
        let tmp = tempfile::Builder::new()
            .prefix("smdfs-skeleton-")
            .suffix(".h5")
            .tempfile()
            .map_err(|e| ViewError::Io { what: "creating the HDF5 skeleton file".into(), source: e })?;
        let root_attrs = layout::root_attrs(&run);
        let skel = build_skeleton(tmp.path(), &plans, &layout::dimensions(&layouts), &root_attrs)?;
        let file = std::fs::File::open(tmp.path())
            .map_err(|e| ViewError::Io { what: format!("opening {}", tmp.path().display()), source: e })?;
        // SAFETY: the skeleton is our private, unlinked temporary file; nobody modifies it.
        let skeleton = if file.metadata().map(|m| m.len()).unwrap_or(0) > 0 {
            Some(
                unsafe { Mmap::map(&file) }
                    .map_err(|e| ViewError::Io { what: "mapping the skeleton".into(), source: e })?,
            )
        } else {
            None
        };
        drop(tmp);
        let datasets: Vec<Dataset> = layouts
            .into_iter()
            .zip(&skel.datasets)
            .map(|(layout, e)| {
                let arrival = match opts.order {
                    Order::EventId => None,
                    Order::Arrival => Some(arrival::segments(&run, &layout)?),
                };
                Ok(Dataset { layout, offset: e.offset, size: e.size, arrival })
            })
            .collect::<Result<_, ViewError>>()?;
        let mut view = View { run, datasets, nodes: vec![Node::Dir { children: BTreeMap::new() }], skeleton, mtime };

        // run.h5: dataset extents served from the run, skeleton bytes between them.
        let mut served: Vec<(u64, u64, usize)> = view
            .datasets
            .iter()
            .enumerate()
            // Literal datasets (summary) were written into the skeleton by libhdf5.
            .filter(|(_, d)| d.size > 0 && !matches!(d.layout.source, Source::Literal(_)))
            .map(|(i, d)| (d.offset, d.size, i))
            .collect();
        served.sort_unstable();
        let mut extents = Vec::new();
        let mut pos = 0u64;
        for (off, size, i) in served {
            if off > pos {
                extents.push(Extent { start: pos, len: off - pos, piece: Piece::Skeleton(pos) });
            }
            extents.push(Extent { start: off, len: size, piece: Piece::Data(i, 0) });
            pos = off + size;
        }
        if skel.file_size > pos {
            extents.push(Extent { start: pos, len: skel.file_size - pos, piece: Piece::Skeleton(pos) });
        }
        view.add_file(ROOT_INO, &opts.h5_name, skel.file_size.max(pos), extents)?;

        // arrays/<path>.npy
        let arrays = view.add_dir(ROOT_INO, "arrays")?;
        for i in 0..view.datasets.len() {
            let d = &view.datasets[i];
            if !d.layout.npy {
                continue;
            }
            let header: Arc<[u8]> = npy::header(d.layout.dtype.numpy_descr(), &d.layout.shape).into();
            let (hl, size) = (header.len() as u64, d.size);
            let mut ext = vec![Extent { start: 0, len: hl, piece: Piece::Literal(header) }];
            if size > 0 {
                ext.push(Extent { start: hl, len: size, piece: Piece::Data(i, 0) });
            }
            let path = d.layout.path.clone();
            let (dirs, name) = match path.rsplit_once('/') {
                Some((a, b)) => (a.to_string(), b.to_string()),
                None => (String::new(), path.clone()),
            };
            let mut parent = arrays;
            for seg in dirs.split('/').filter(|s| !s.is_empty()) {
                parent = view.add_dir(parent, seg)?;
            }
            view.add_file(parent, &format!("{name}.npy"), hl + size, ext)?;
        }
        if !opts.zarr_name.is_empty() {
            zarr::add(&mut view, &opts.zarr_name)?;
        }
        Ok(view)
    }
}
