//! The view of a run (a pure model of files as extents) and its FUSE adapter. See issue 4.
