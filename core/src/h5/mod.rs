//! HDF5 (cargo feature `hdf5`, on by default): the run's dataset layout, the libhdf5-written
//! skeleton behind the view's `run.h5`, `smdfs export`, and the same layout as a Zarr v3
//! hierarchy ([`zarr`]: the view's `run.zarr/` and `smdfs export --format zarr`). Every
//! libhdf5 call goes through `ffi`. Reads runs through the read layer; never writes shards.

pub mod export;
pub(crate) mod ffi;
pub mod layout;
pub mod skeleton;
pub mod zarr;
