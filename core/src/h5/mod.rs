//! HDF5 (cargo feature `hdf5`, on by default): the run's dataset layout, the libhdf5-written
//! skeleton behind the view's `run.h5`, and `smdfs export`. Every libhdf5 call goes through
//! `ffi`. Reads runs through the read layer; never writes shards.

pub mod export;
pub(crate) mod ffi;
pub mod layout;
pub mod skeleton;
