//! HDF5 skeleton builder (being written; see the helper's task).
