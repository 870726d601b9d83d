//! The run being written: [`SmallData`] and its [`Builder`]. The builder validates the
//! settings and starts an engine — server threads (`threads`) or, under `mpirun` with the
//! `mpi` feature, server ranks (`mpi::node`) — then hands every part to `SmallData`, which
//! gives out [`Client`] handles, answers reductions, stores the summary, and at `done()`
//! drains the servers and completes the run (`run_dir::complete`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::lock::WriterLock;
use crate::format::manifest::{Manifest, SummaryValue};
use crate::model::dtype::Element;
use crate::model::handle;
use crate::model::path::validate_path;
use crate::model::reduce::{read_back, Accumulator, Reducible};
use crate::model::schema::{check_attr_name, Registry};
use crate::model::value::{Field, Value};
use crate::shard::io::Faults;
use crate::sync::{lock, read};
use crate::write::client::{Client, Sink};
#[cfg(feature = "mpi")]
use crate::write::mpi::node::Node;
use crate::write::report::{DoneReport, MpiInfo, MpiRole};
use crate::write::run_dir::{self, RunConfig};
use crate::write::share;
use crate::write::shared::{Callback, Limits, Shared};
use crate::write::threads::{self, ServerThread, ToServer};

/// Configures and starts a run. See [`SmallData::builder`].
pub struct Builder {
    dir: PathBuf,
    servers: usize,
    batch_events: usize,
    batch_bytes: usize,
    in_flight: usize,
    unaligned: HashSet<String>,
    groups: HashMap<String, String>,
    fills: HashMap<String, Vec<u8>>,
    units: HashMap<String, String>,
    attrs: HashMap<String, BTreeMap<String, String>>,
    callbacks: Vec<Callback>,
    sync: bool,
    overwrite: bool,
    private: bool,
    faults: Option<Arc<Faults>>,
}

impl Builder {
    /// Number of servers (shards). Default 2. In MPI mode, the number of server ranks: the
    /// last `n` ranks serve, the others are clients (at least one) — or, with `n` equal to
    /// the number of ranks, every rank is a client that writes its own shard (no batch
    /// crosses MPI: the fastest layout for ranks that produce much data).
    pub fn servers(mut self, n: usize) -> Self {
        self.servers = n;
        self
    }

    /// Events per client batch. Default 4096.
    pub fn batch_events(mut self, n: usize) -> Self {
        self.batch_events = n;
        self
    }

    /// A batch is handed over once it holds this many bytes, even if not full. Default 1 MiB:
    /// a batch that still sits in the CPU cache when its server writes it is copied into the
    /// page cache several times faster than one that was evicted (measured here: 1 MiB
    /// `write()`s run 4-7x faster than 8 MiB ones). In sync mode the shard's committer syncs
    /// every batch queued meanwhile with one fdatasync, so small batches do not multiply
    /// syncs.
    pub fn batch_bytes(mut self, n: usize) -> Self {
        self.batch_bytes = n;
        self
    }

    /// Batches that may wait for each server before clients block (MPI mode: batches each
    /// client may have in flight). Default 4.
    pub fn max_batches_in_flight(mut self, n: usize) -> Self {
        self.in_flight = n;
        self
    }

    /// Marks a field unaligned: its own group, rows only where present, no fill.
    /// (Fields whose last path segment starts with `unaligned_` are unaligned too.)
    pub fn unaligned(mut self, path: &str) -> Self {
        self.unaligned.insert(path.into());
        self
    }

    /// Puts fields in a named alignment group with its own event-id column
    /// (view: `/<group>/timestamp`, `/<group>/<path>`).
    pub fn aligned_group(mut self, group: &str, paths: &[&str]) -> Self {
        for p in paths {
            self.groups.insert((*p).into(), group.into());
        }
        self
    }

    /// Overrides a field's fill value (a scalar of the field's dtype).
    pub fn fill<'a>(mut self, path: &str, value: impl Into<Value<'a>>) -> Self {
        self.fills.insert(path.into(), value.into().data().to_vec());
        self
    }

    /// Gives a field's physical units (the view's `units` attribute, e.g. `"eV"`).
    pub fn units(mut self, path: &str, units: &str) -> Self {
        self.units.insert(path.into(), units.into());
        self
    }

    /// Gives a field a text attribute (shown on its dataset in `run.h5`, its `run.zarr`
    /// array and exports), e.g. `attr("det/image", "description", "raw frames")`. Names the
    /// view sets itself (`units`, `_FillValue`, `min`, …) are refused at `build()`.
    pub fn attr(mut self, path: &str, name: &str, value: &str) -> Self {
        self.attrs.entry(path.into()).or_default().insert(name.into(), value.into());
        self
    }

    /// Gives a field its CF `long_name` (a descriptive name readers such as xarray show).
    pub fn long_name(self, path: &str, text: &str) -> Self {
        self.attr(path, "long_name", text)
    }

    /// Calls `f(id, fields)` with every accepted event, on the client that produced it.
    pub fn callback(mut self, f: impl Fn(u64, &[Field<'_>]) + Send + Sync + 'static) -> Self {
        self.callbacks.push(Arc::new(f));
        self
    }

    /// fdatasync data and log at every commit (survives power loss, not only process
    /// death). Default off: a killed process never loses committed data either way.
    pub fn sync_commits(mut self, on: bool) -> Self {
        self.sync = on;
        self
    }

    /// Create the run directory owner-only (mode 0700; an existing one is changed so), so
    /// nobody but its owner can list or read the run. Default off: the directory gets the
    /// usual mode (umask). A mount of it is owner-only anyway unless `--allow-other`.
    pub fn private(mut self, on: bool) -> Self {
        self.private = on;
        self
    }

    /// Crash tests only: the shard writers' file operations run under a fault plan (fail
    /// the N-th write, or cut the power at the N-th sync); threads mode.
    #[doc(hidden)]
    pub fn fault_injection(mut self, faults: Arc<Faults>) -> Self {
        self.faults = Some(faults);
        self
    }

    /// Replace an existing run in the directory instead of failing.
    pub fn overwrite(mut self, on: bool) -> Self {
        self.overwrite = on;
        self
    }

    /// Creates the run directory, its shards and servers.
    ///
    /// Built with the `mpi` feature and launched by `mpirun` (or another MPI launcher) with
    /// more than one rank, this runs in MPI mode: it is collective (every rank calls it), the
    /// last `servers` ranks become servers (a server rank's [`SmallData`] receives and writes
    /// batches in the background and has no events of its own to write), and every rank gets
    /// the same error if any rank fails. Otherwise it starts threads mode.
    pub fn build(mut self) -> Result<SmallData> {
        self.validate()?;
        let cfg = RunConfig {
            dir: self.dir.clone(),
            servers: self.servers,
            in_flight: self.in_flight,
            sync: self.sync,
            overwrite: self.overwrite,
            private: self.private,
        };
        let shared = self.shared();
        #[cfg(feature = "mpi")]
        if let Some(world) = crate::write::mpi::comm::world()? {
            let (node, lock, manifest) = crate::write::mpi::node::start(&cfg, world)?;
            return Ok(SmallData::assemble(cfg, shared, Engine::Mpi(node), manifest, lock));
        }
        let (lock, manifest) = run_dir::prepare(&cfg)?;
        let (senders, servers) = threads::start(&cfg, &shared)?;
        Ok(SmallData::assemble(cfg, shared, Engine::Threads { senders, servers }, manifest, Some(lock)))
    }

    fn validate(&self) -> Result<()> {
        if self.servers == 0 || self.servers > 1 << 16 {
            return Err(Error::Usage(format!("servers must be 1..=65536, got {}", self.servers)));
        }
        if self.batch_events == 0 || self.in_flight == 0 {
            return Err(Error::Usage("batch_events and max_batches_in_flight must be at least 1".into()));
        }
        for p in self.unaligned.iter().chain(self.groups.keys()).chain(self.fills.keys()).chain(self.units.keys()) {
            validate_path(p)?;
        }
        for g in self.groups.values() {
            validate_path(g)?;
        }
        for (p, attrs) in &self.attrs {
            validate_path(p)?;
            for name in attrs.keys() {
                check_attr_name(p, name)?;
            }
        }
        Ok(())
    }

    /// The state clients share, from this builder's settings (consumes them).
    fn shared(&mut self) -> Arc<Shared> {
        let registry = Registry::new(
            std::mem::take(&mut self.unaligned),
            std::mem::take(&mut self.groups),
            std::mem::take(&mut self.fills),
        )
        .with_units(std::mem::take(&mut self.units))
        .with_attrs(std::mem::take(&mut self.attrs));
        let limits = Limits {
            servers: self.servers,
            batch_events: self.batch_events,
            batch_bytes: self.batch_bytes,
            in_flight: self.in_flight,
            faults: self.faults.take(),
        };
        Shared::new(registry, std::mem::take(&mut self.callbacks), limits)
    }
}

/// How a run's servers are reached.
pub(crate) enum Engine {
    /// Server threads, fed through bounded channels.
    Threads { senders: Vec<SyncSender<ToServer>>, servers: Vec<ServerThread> },
    /// Server ranks (MPI mode).
    #[cfg(feature = "mpi")]
    Mpi(Node),
}

/// A run being written, in threads mode or (feature `mpi`, under `mpirun`) MPI mode.
pub struct SmallData {
    dir: PathBuf,
    shared: Arc<Shared>,
    servers: usize,
    engine: Engine,
    next_client: AtomicUsize,
    summary: Mutex<Vec<SummaryValue>>,
    /// MPI mode: only rank 0's is stored.
    manifest: Mutex<Manifest>,
    /// MPI mode: held by rank 0.
    _lock: Option<WriterLock>,
}

impl SmallData {
    /// Starts configuring a run written to `dir`.
    pub fn builder(dir: impl AsRef<Path>) -> Builder {
        Builder {
            dir: dir.as_ref().to_path_buf(),
            servers: 2,
            batch_events: 4096,
            batch_bytes: 1 << 20,
            in_flight: 4,
            unaligned: HashSet::new(),
            groups: HashMap::new(),
            fills: HashMap::new(),
            units: HashMap::new(),
            attrs: HashMap::new(),
            callbacks: vec![],
            sync: false,
            overwrite: false,
            private: false,
            faults: None,
        }
    }

    fn assemble(
        cfg: RunConfig,
        shared: Arc<Shared>,
        engine: Engine,
        manifest: Manifest,
        lock: Option<WriterLock>,
    ) -> SmallData {
        SmallData {
            dir: cfg.dir,
            shared,
            servers: cfg.servers,
            engine,
            next_client: AtomicUsize::new(0),
            summary: Mutex::new(Vec::new()),
            manifest: Mutex::new(manifest),
            _lock: lock,
        }
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of servers (shards).
    pub fn servers(&self) -> usize {
        self.servers
    }

    /// MPI mode: this rank's place in the job. `None` in threads mode.
    pub fn mpi(&self) -> Option<MpiInfo> {
        match &self.engine {
            Engine::Threads { .. } => None,
            #[cfg(feature = "mpi")]
            Engine::Mpi(node) => Some(node.info()),
        }
    }

    /// True if this process writes events: always in threads mode; on client ranks in MPI
    /// mode (a server rank's loops over [`SmallData::block`] or
    /// [`SmallData::round_robin`] are empty).
    pub fn is_client(&self) -> bool {
        self.share().1 > 0
    }

    /// (index, count) of this process among the processes that write events: (0, 1) in
    /// threads mode, (rank, client ranks) on an MPI client rank, (0, 0) on a server rank.
    fn share(&self) -> (usize, usize) {
        match self.mpi() {
            None => (0, 1),
            Some(MpiInfo { role: MpiRole::Client(k), clients, .. }) => (k, clients),
            Some(MpiInfo { role: MpiRole::Server(_), .. }) => (0, 0),
        }
    }

    /// This process's contiguous block of `range`: all of it in threads mode (split it among
    /// threads as usual, e.g. with rayon); in MPI mode client rank `k` of `C` gets the `k`th
    /// of `C` near-equal blocks, and a server rank an empty range.
    pub fn block(&self, range: Range<u64>) -> Range<u64> {
        let (k, n) = self.share();
        share::block(range, n, k)
    }

    /// This process's round-robin share of `range`: all of it in threads mode; in MPI mode
    /// client rank `k` of `C` gets `start + k, start + k + C, …`, and a server rank nothing.
    pub fn round_robin(&self, range: Range<u64>) -> std::iter::StepBy<Range<u64>> {
        let (k, n) = self.share();
        share::round_robin(range, n, k)
    }

    /// A handle to scalar field `path` of element type `T`, for
    /// [`Client::begin`]: `let e = smd.scalar::<f64>("energy")?;` then
    /// `c.begin(id).set(&e, 1.5).write()?`. Resolving fixes the field in the schema (its first
    /// sight); a field already seen as something else is a schema mismatch.
    pub fn scalar<T: Element>(&self, path: &str) -> Result<handle::Scalar<T>> {
        self.shared.scalar(path)
    }

    /// A handle to fixed-shape array field `path` of `T`, per-event shape `shape` (C order).
    pub fn array<T: Element>(&self, path: &str, shape: &[usize]) -> Result<handle::Array<T>> {
        self.shared.array(path, shape)
    }

    /// A handle to ragged (varying-length 1-D) field `path` of `T`.
    pub fn ragged<T: Element>(&self, path: &str) -> Result<handle::Ragged<T>> {
        self.shared.ragged(path)
    }

    /// A handle to bytes field `path`.
    pub fn bytes(&self, path: &str) -> Result<handle::Bytes> {
        self.shared.bytes(path)
    }

    /// A handle to text field `path`.
    pub fn text(&self, path: &str) -> Result<handle::Text> {
        self.shared.text(path)
    }

    /// A handle for one worker. Clients are assigned to servers round-robin. Drop the client
    /// (or call [`Client::finish`]) before [`SmallData::done`]. On an MPI server rank the
    /// handle accepts no events (its `event()` says why): give it none.
    pub fn client(&self) -> Client {
        let n = self.next_client.fetch_add(1, Ordering::Relaxed);
        let (server, sink, finished) = match &self.engine {
            Engine::Threads { senders, .. } => {
                let k = n % self.servers;
                (k, Sink::Thread(senders[k].clone()), false)
            }
            #[cfg(feature = "mpi")]
            Engine::Mpi(node) => match node.sender(n, self.shared.in_flight) {
                Ok((k, sender)) => (k, Sink::Mpi(Box::new(sender)), false),
                Err(why) => (0, Sink::Refuse(why), true),
            },
        };
        if !finished {
            self.shared.live_clients.fetch_add(1, Ordering::AcqRel);
        }
        Client::new(Arc::clone(&self.shared), server, sink, finished)
    }

    fn reduced(&self, name: &str) -> Result<Accumulator> {
        self.shared.origin.check()?;
        let not_found = || Error::NotFound { what: "reduction", name: name.into() };
        match &self.engine {
            Engine::Threads { .. } => lock(&self.shared.reductions).get(name).copied().ok_or_else(not_found),
            #[cfg(feature = "mpi")]
            Engine::Mpi(node) => {
                let mine = lock(&self.shared.reductions).clone();
                node.reduce(&mine)?.get(name).copied().ok_or_else(not_found)
            }
        }
    }

    /// Sum of the values finished clients contributed under `name` with [`Client::reduce`].
    /// In MPI mode the reductions are collective: every rank calls them in the same order
    /// (the same program does) and gets the value over all client ranks.
    pub fn sum<T: Reducible>(&self, name: &str) -> Result<T> {
        read_back(name, self.reduced(name)?.sum)
    }

    /// Minimum of the contributions under `name`.
    pub fn min<T: Reducible>(&self, name: &str) -> Result<T> {
        read_back(name, self.reduced(name)?.min)
    }

    /// Maximum of the contributions under `name`.
    pub fn max<T: Reducible>(&self, name: &str) -> Result<T> {
        read_back(name, self.reduced(name)?.max)
    }

    /// Number of contributions under `name`.
    pub fn count(&self, name: &str) -> Result<u64> {
        Ok(self.reduced(name)?.count)
    }

    /// Every client process's `mine`, in client order: collective over the processes that
    /// write events only (MPI client ranks; server ranks must not call it), so code that
    /// runs on clients alone (a summary block) can reduce values of any type without the
    /// servers. Threads mode: `[mine]`.
    pub fn allgather_clients(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.shared.origin.check()?;
        match &self.engine {
            Engine::Threads { .. } => Ok(vec![mine.to_vec()]),
            #[cfg(feature = "mpi")]
            Engine::Mpi(node) => node.allgather_clients(mine),
        }
    }

    /// Saves values once per run (`/summary/<name>` in the view). Saving a name again
    /// replaces it. Stored in the manifest at once, so a crashed run keeps it. In MPI mode
    /// every rank may call it (the same program does); rank 0's values are stored.
    pub fn save_summary<'v, F: AsRef<[Field<'v>]>>(&self, fields: F) -> Result<()> {
        self.shared.origin.check()?;
        let mut summary = lock(&self.summary);
        for (path, v) in fields.as_ref() {
            validate_path(path)?;
            if let Value::Array { shape, data, dtype } = v {
                if shape.iter().product::<usize>() * dtype.size() != data.len() {
                    return Err(Error::BadValue {
                        field: (*path).into(),
                        why: format!("data does not fill shape {shape:?}"),
                    });
                }
            }
            summary.retain(|s| s.path != *path);
            summary.push(SummaryValue::new(path, v));
        }
        if self.mpi().is_some_and(|m| m.rank != 0) {
            return Ok(());
        }
        let mut m = lock(&self.manifest);
        m.summary = summary.clone();
        m.store(&self.dir)
    }

    /// Drains every client batch, closes the shards, merges their index maps into the
    /// global index and marks the run complete. Every client must be dropped or finished.
    ///
    /// MPI mode: collective. Client ranks tell every server they are done, servers drain and
    /// close their shards, rank 0 merges the index maps and writes the manifest; every rank
    /// returns the same report, or an error if any rank failed (naming that rank).
    pub fn done(mut self) -> Result<DoneReport> {
        self.shared.origin.check()?;
        let live = self.shared.live_clients.load(Ordering::Acquire);
        let alive = if live > 0 {
            Err(Error::Usage(format!(
                "done() called while {live} client(s) are alive: drop them or call finish() first"
            )))
        } else {
            Ok(())
        };
        let info = self.mpi();
        let (dir, manifest, summary) = (&self.dir, &self.manifest, &self.summary);
        #[cfg(feature = "mpi")]
        if let Engine::Mpi(node) = &mut self.engine {
            return node.done(alive, |schema, stats, closes, built| {
                run_dir::complete(dir, manifest, summary, info, schema, stats, closes, built)
            });
        }
        alive?;
        #[allow(irrefutable_let_patterns)] // without the `mpi` feature there is one engine
        let Engine::Threads { senders, servers } = &mut self.engine
        else {
            unreachable!("MPI mode returned above")
        };
        senders.clear();
        let (closes, stats) = threads::join(std::mem::take(servers))?;
        let schema = read(&self.shared.registry).schema.clone();
        run_dir::complete(dir, manifest, summary, info, schema, stats, closes, None)
    }
}

impl Drop for SmallData {
    fn drop(&mut self) {
        if self.shared.origin.forked() {
            // A forked child's copy: the servers (threads, MPI) are the parent's. Leave them
            // untouched — joining a thread that is not here would wait forever.
            let parents = std::mem::replace(&mut self.engine, Engine::Threads { senders: vec![], servers: vec![] });
            std::mem::forget(parents);
            return;
        }
        match &mut self.engine {
            Engine::Threads { senders, servers } => {
                // Without done(): stop the servers so their threads end; the manifest stays
                // `writing`, which readers see as `crashed` once the lock is released.
                // Clients still alive hold senders: their servers end when the last one
                // drops, so joining here would wait on user code. Detach instead.
                senders.clear();
                let servers = std::mem::take(servers);
                if self.shared.live_clients.load(Ordering::Acquire) == 0 {
                    for h in servers {
                        let _ = h.join();
                    }
                }
            }
            // The node's own drop fails the job unless done() ran.
            #[cfg(feature = "mpi")]
            Engine::Mpi(_) => {}
        }
    }
}
