//! The engines of the older tools smdfs replaces: a recorder (record/get over several
//! sinks), split records, named slices of one `.npy`, and parallel HDF5 streaming. Built on
//! the writer and reader layers; nothing below imports them.

#[cfg(feature = "hdf5")]
pub mod h5stream;
pub mod recorder;
pub mod slices;
pub mod split;
