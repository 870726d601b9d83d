//! What a finished run reports ([`DoneReport`]) and a process's place in an MPI-mode run
//! ([`MpiInfo`], [`MpiRole`]): plain values, shared by both engines.

use std::path::PathBuf;

use crate::index::IndexReport;

/// What `done()` reports.
#[derive(Clone, Debug)]
pub struct DoneReport {
    /// The run directory.
    pub dir: PathBuf,
    /// Events in the run's aligned group.
    pub events: u64,
    /// Per group: rows, duplicates.
    pub groups: Vec<IndexReport>,
    /// MPI mode: this rank's place in the job (every rank gets the same report otherwise).
    pub mpi: Option<MpiInfo>,
}

impl DoneReport {
    /// Total duplicated event ids over all groups.
    pub fn duplicates(&self) -> u64 {
        self.groups.iter().map(|g| g.duplicates).sum()
    }
}

/// What a rank does in an MPI-mode run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpiRole {
    /// Client number `k` (`0..clients`, equal to its rank): writes events.
    Client(usize),
    /// Server number `k` (shard `k`, rank `clients + k`): receives and writes batches.
    Server(usize),
}

/// A process's place in an MPI-mode run (`SmallData::mpi`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpiInfo {
    /// This process's rank in `MPI_COMM_WORLD`.
    pub rank: usize,
    /// Ranks in the job.
    pub size: usize,
    /// Server ranks (the last `servers` ranks).
    pub servers: usize,
    /// Client ranks (ranks `0..clients`).
    pub clients: usize,
    /// What this rank does.
    pub role: MpiRole,
}
