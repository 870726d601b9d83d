//! The run directory's life as a writer sees it: [`prepare`] creates it, takes the writer
//! lock, refuses or clears an existing run and stores a fresh manifest; [`complete`] builds
//! the global index of the closed shards and stores the manifest complete. Both engines
//! (threads and MPI rank 0) call these; the settings they need travel as [`RunConfig`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, IoContext, Result};
use crate::format::lock::WriterLock;
use crate::format::manifest::{IndexManifest, Manifest, RunState, SummaryValue, INDEX_DIR, MANIFEST_FILE};
use crate::index::{build_global_index, IndexReport};
use crate::model::schema::{Schema, StatsMap};
use crate::sync::lock;
use crate::write::report::{DoneReport, MpiInfo};

/// The settings an engine needs to start a run's servers.
#[derive(Clone, Debug)]
pub(crate) struct RunConfig {
    /// The run directory.
    pub(crate) dir: PathBuf,
    /// Servers (shards).
    pub(crate) servers: usize,
    /// Batches that may wait per server (MPI: in flight per client handle).
    pub(crate) in_flight: usize,
    /// fdatasync at every commit.
    pub(crate) sync: bool,
    /// Replace an existing run.
    pub(crate) overwrite: bool,
    /// Create the run directory owner-only (0700).
    pub(crate) private: bool,
}

/// Creates the run directory (and its parents); `private` creates it owner-only (0700).
pub(crate) fn create_dir(dir: &Path, private: bool) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !private {
        return std::fs::create_dir_all(dir).at(dir);
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).at(parent)?;
    }
    // The umask may narrow the mode, never widen it.
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        r => r.at(dir),
    }
}

/// Creates the run directory, takes the writer lock, clears (with `overwrite`) or refuses an
/// existing run, makes an existing directory owner-only when `private` (only once it is
/// known to be this run's: a refused run keeps its mode), and stores a fresh manifest. (MPI
/// mode: rank 0 only.)
pub(crate) fn prepare(cfg: &RunConfig) -> Result<(WriterLock, Manifest)> {
    use std::os::unix::fs::PermissionsExt;
    let dir = &cfg.dir;
    create_dir(dir, cfg.private)?;
    let lock = WriterLock::acquire(dir)?;
    if dir.join(MANIFEST_FILE).exists() {
        if !cfg.overwrite {
            return Err(Error::RunExists { path: dir.clone() });
        }
        remove_run_files(dir)?;
    }
    if cfg.private {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).at(dir)?;
    }
    let manifest = Manifest::new(cfg.servers);
    manifest.store(dir)?;
    Ok((lock, manifest))
}

fn remove_run_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let p = entry.path();
        if name.starts_with("shard-") || name == INDEX_DIR {
            std::fs::remove_dir_all(&p).at(&p)?;
        } else if name == MANIFEST_FILE {
            std::fs::remove_file(&p).at(&p)?;
        }
    }
    Ok(())
}

/// Builds the global index of the closed shards (unless `built`: MPI ranks built it
/// together) and stores the manifest complete.
#[allow(clippy::too_many_arguments)]
pub(crate) fn complete(
    dir: &Path,
    manifest: &Mutex<Manifest>,
    summary: &Mutex<Vec<SummaryValue>>,
    mpi: Option<MpiInfo>,
    schema: Schema,
    stats: StatsMap,
    closes: Vec<u64>,
    built: Option<(IndexManifest, Vec<IndexReport>)>,
) -> Result<DoneReport> {
    let mut m = lock(manifest).clone();
    m.schema = schema;
    m.stats = stats;
    m.summary = lock(summary).clone();
    let (index, reports) = match built {
        Some(b) => b,
        None => build_global_index(dir, &m, closes)?,
    };
    m.index = Some(index);
    m.state = RunState::Complete;
    m.store(dir)?;
    let events = reports.iter().find(|r| r.group.is_empty()).map_or(0, |r| r.rows);
    Ok(DoneReport { dir: dir.to_path_buf(), events, groups: reports, mpi })
}
