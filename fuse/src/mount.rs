//! The fuser adapter (being written).
