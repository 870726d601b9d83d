//! .npy headers (being written).
