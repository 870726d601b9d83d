//! The writer: [`SmallData`] (the run being written), its [`Builder`], and the per-worker
//! [`Client`].
//!
//! Clients validate and batch events locally (no lock per event), then hand whole batches to
//! their server. Threads mode: servers are threads, each owning one shard, fed through
//! bounded channels: at most `max_batches_in_flight` batches wait per server, so a slow disk
//! slows the clients instead of growing a queue. MPI mode (feature `mpi`, under `mpirun`
//! with more than one rank; see `crate::mpi`): the same API, with servers on ranks and each
//! client's batches sent as MPI messages, at most `max_batches_in_flight` in flight per
//! client. Either way `done()` drains the servers, closes the shards, merges their index
//! maps into the global index and marks the manifest complete.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use rustc_hash::FxHashMap;

use crate::batch::{Batch, FieldRows, GroupRows};
use crate::error::{Error, IoContext, Result};
use crate::format::shard_dir_name;
use crate::index::{build_global_index, IndexReport};
use crate::manifest::{Manifest, RunState, SummaryValue, WriterLock, INDEX_DIR, MANIFEST_FILE};
#[cfg(feature = "mpi")]
use crate::mpi::node::Node;
use crate::path::validate_path;
use crate::reduce::{contribute, read_back, Accumulator, Reducible, Reductions};
use crate::schema::{FieldId, FieldSpec, GroupId, Registry, Schema, StatsMap};
use crate::shard_writer::ShardWriter;
use crate::value::{Field, Kind, Value};

/// A function called with every event on the client that produced it.
pub type Callback = Arc<dyn Fn(u64, &[Field<'_>]) + Send + Sync>;

/// Configures and starts a run. See [`SmallData::builder`].
pub struct Builder {
    pub(crate) dir: PathBuf,
    pub(crate) servers: usize,
    batch_events: usize,
    batch_bytes: usize,
    pub(crate) in_flight: usize,
    unaligned: HashSet<String>,
    groups: HashMap<String, String>,
    fills: HashMap<String, Vec<u8>>,
    units: HashMap<String, String>,
    callbacks: Vec<Callback>,
    pub(crate) sync: bool,
    pub(crate) overwrite: bool,
}

impl Builder {
    /// Number of servers (shards). Default 2. In MPI mode, the number of server ranks: the
    /// last `n` ranks serve, the others are clients (at least one).
    pub fn servers(mut self, n: usize) -> Self {
        self.servers = n;
        self
    }

    /// Events per client batch. Default 4096.
    pub fn batch_events(mut self, n: usize) -> Self {
        self.batch_events = n;
        self
    }

    /// A batch is handed over once it holds this many bytes, even if not full. Default 8 MiB.
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
    pub fn build(self) -> Result<SmallData> {
        self.validate()?;
        #[cfg(feature = "mpi")]
        if let Some(world) = crate::mpi::comm::world()? {
            return crate::mpi::node::build(self, world);
        }
        self.build_threads()
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
        Ok(())
    }

    /// The state clients share, from this builder's settings (consumes them).
    pub(crate) fn shared(&mut self) -> Arc<Shared> {
        Arc::new(Shared {
            registry: RwLock::new(
                Registry::new(
                    std::mem::take(&mut self.unaligned),
                    std::mem::take(&mut self.groups),
                    std::mem::take(&mut self.fills),
                )
                .with_units(std::mem::take(&mut self.units)),
            ),
            pools: (0..self.servers).map(|_| Mutex::new(Vec::new())).collect(),
            errors: (0..self.servers).map(|_| Mutex::new(None)).collect(),
            reductions: Mutex::new(Reductions::new()),
            live_clients: AtomicUsize::new(0),
            callbacks: std::mem::take(&mut self.callbacks),
            batch_events: self.batch_events,
            batch_bytes: self.batch_bytes,
            in_flight: self.in_flight,
            pool_cap: self.in_flight + 2,
        })
    }

    fn build_threads(mut self) -> Result<SmallData> {
        let dir = self.dir.clone();
        let (lock, manifest) = prepare_run(&dir, self.overwrite, self.servers)?;
        let shared = self.shared();
        let mut senders = Vec::with_capacity(self.servers);
        let mut servers = Vec::with_capacity(self.servers);
        for i in 0..self.servers {
            let shard = ShardWriter::create(&dir.join(shard_dir_name(i)), i, self.sync)?;
            let (tx, rx) = sync_channel::<Batch>(self.in_flight);
            let sh = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("smdfs-server-{i}"))
                .spawn(move || serve(rx, shard, &sh))
                .map_err(|e| Error::io(&dir, e))?;
            senders.push(tx);
            servers.push(handle);
        }
        Ok(SmallData::assemble(dir, shared, self.servers, Engine::Threads { senders, servers }, manifest, Some(lock)))
    }
}

/// Creates the run directory, takes the writer lock, clears (with `overwrite`) or refuses an
/// existing run, and stores a fresh manifest. (MPI mode: rank 0 only.)
pub(crate) fn prepare_run(dir: &Path, overwrite: bool, servers: usize) -> Result<(WriterLock, Manifest)> {
    std::fs::create_dir_all(dir).at(dir)?;
    let lock = WriterLock::acquire(dir)?;
    if dir.join(MANIFEST_FILE).exists() {
        if !overwrite {
            return Err(Error::Usage(format!(
                "{} already holds a run; choose another directory or overwrite it",
                dir.display()
            )));
        }
        remove_run_files(dir)?;
    }
    let manifest = Manifest::new(servers);
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

/// What a run's clients share (per process).
pub(crate) struct Shared {
    pub(crate) registry: RwLock<Registry>,
    /// Threads mode: recycled batches per server.
    pools: Vec<Mutex<Vec<Batch>>>,
    errors: Vec<Mutex<Option<String>>>,
    pub(crate) reductions: Mutex<Reductions>,
    pub(crate) live_clients: AtomicUsize,
    callbacks: Vec<Callback>,
    batch_events: usize,
    batch_bytes: usize,
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) in_flight: usize,
    pool_cap: usize,
}

impl Shared {
    fn server_error(&self, shard: usize) -> Error {
        let why = lock(&self.errors[shard]).clone().unwrap_or_else(|| "server stopped".into());
        Error::ServerFailed { shard, why }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn serve(rx: Receiver<Batch>, mut shard: ShardWriter, shared: &Shared) -> Result<(u64, StatsMap)> {
    let idx = shard.index();
    let field_spec = |f: FieldId| {
        shared.registry.read().unwrap_or_else(std::sync::PoisonError::into_inner).schema.fields[f as usize].clone()
    };
    let group_spec = |g: GroupId| {
        shared.registry.read().unwrap_or_else(std::sync::PoisonError::into_inner).schema.groups[g as usize].clone()
    };
    while let Ok(mut batch) = rx.recv() {
        if let Err(e) = shard.append(&batch.view(), &field_spec, &group_spec) {
            *lock(&shared.errors[idx]) = Some(e.to_string());
            return Err(e);
        }
        batch.clear();
        let mut pool = lock(&shared.pools[idx]);
        if pool.len() < shared.pool_cap {
            pool.push(batch);
        }
    }
    shard.close().inspect_err(|e| *lock(&shared.errors[idx]) = Some(e.to_string()))
}

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

/// What a rank does in an MPI-mode run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpiRole {
    /// Client number `k` (`0..clients`, equal to its rank): writes events.
    Client(usize),
    /// Server number `k` (shard `k`, rank `clients + k`): receives and writes batches.
    Server(usize),
}

/// A process's place in an MPI-mode run ([`SmallData::mpi`]).
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

impl DoneReport {
    /// Total duplicated event ids over all groups.
    pub fn duplicates(&self) -> u64 {
        self.groups.iter().map(|g| g.duplicates).sum()
    }
}

/// How a run's servers are reached.
pub(crate) enum Engine {
    /// Server threads, fed through bounded channels.
    Threads { senders: Vec<SyncSender<Batch>>, servers: Vec<JoinHandle<Result<(u64, StatsMap)>>> },
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
            batch_bytes: 8 << 20,
            in_flight: 4,
            unaligned: HashSet::new(),
            groups: HashMap::new(),
            fills: HashMap::new(),
            units: HashMap::new(),
            callbacks: vec![],
            sync: false,
            overwrite: false,
        }
    }

    pub(crate) fn assemble(
        dir: PathBuf,
        shared: Arc<Shared>,
        servers: usize,
        engine: Engine,
        manifest: Manifest,
        lock: Option<WriterLock>,
    ) -> SmallData {
        SmallData {
            dir,
            shared,
            servers,
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
        crate::mpi::block(range, n, k)
    }

    /// This process's round-robin share of `range`: all of it in threads mode; in MPI mode
    /// client rank `k` of `C` gets `start + k, start + k + C, …`, and a server rank nothing.
    pub fn round_robin(&self, range: Range<u64>) -> std::iter::StepBy<Range<u64>> {
        let (k, n) = self.share();
        crate::mpi::round_robin(range, n, k)
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
        Client {
            shared: Arc::clone(&self.shared),
            server,
            sink,
            batch: Batch::default(),
            cache: FxHashMap::default(),
            metas: vec![],
            slots: vec![],
            resolved: vec![],
            touched: vec![],
            reductions: Reductions::new(),
            finished,
        }
    }

    fn reduced(&self, name: &str) -> Result<Accumulator> {
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

    /// Saves values once per run (`/summary/<name>` in the view). Saving a name again
    /// replaces it. Stored in the manifest at once, so a crashed run keeps it. In MPI mode
    /// every rank may call it (the same program does); rank 0's values are stored.
    pub fn save_summary<'v, F: AsRef<[Field<'v>]>>(&self, fields: F) -> Result<()> {
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
            return node
                .done(alive, |schema, stats, closes| complete(dir, manifest, summary, info, schema, stats, closes));
        }
        alive?;
        #[allow(irrefutable_let_patterns)] // without the `mpi` feature there is one engine
        let Engine::Threads { senders, servers } = &mut self.engine
        else {
            unreachable!("MPI mode returned above")
        };
        senders.clear();
        let mut closes = Vec::with_capacity(servers.len());
        let mut stats = StatsMap::new();
        let mut first_err = None;
        for (i, h) in std::mem::take(servers).into_iter().enumerate() {
            match h.join() {
                Ok(Ok((offset, s))) => {
                    closes.push(offset);
                    for (k, v) in s {
                        stats.entry(k).or_default().merge(&v);
                    }
                }
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(Error::ServerFailed { shard: i, why: "server thread panicked".into() });
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let schema = self.shared.registry.read().unwrap_or_else(std::sync::PoisonError::into_inner).schema.clone();
        complete(dir, manifest, summary, info, schema, stats, closes)
    }
}

/// Builds the global index of the closed shards and stores the manifest complete.
fn complete(
    dir: &Path,
    manifest: &Mutex<Manifest>,
    summary: &Mutex<Vec<SummaryValue>>,
    mpi: Option<MpiInfo>,
    schema: Schema,
    stats: StatsMap,
    closes: Vec<u64>,
) -> Result<DoneReport> {
    let mut m = lock(manifest).clone();
    m.schema = schema;
    m.stats = stats;
    m.summary = lock(summary).clone();
    let (index, reports) = build_global_index(dir, &m, closes)?;
    m.index = Some(index);
    m.state = RunState::Complete;
    m.store(dir)?;
    let events = reports.iter().find(|r| r.group.is_empty()).map_or(0, |r| r.rows);
    Ok(DoneReport { dir: dir.to_path_buf(), events, groups: reports, mpi })
}

impl Drop for SmallData {
    fn drop(&mut self) {
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

/// What a client caches about a field it has resolved.
struct Meta {
    spec: FieldSpec,
    id: FieldId,
    group: GroupId,
    aligned: bool,
    row_bytes: usize,
    fill_row: Vec<u8>,
}

/// Where a client's batches go.
enum Sink {
    Thread(SyncSender<Batch>),
    #[cfg(feature = "mpi")]
    Mpi(Box<crate::mpi::client::Sender>),
    /// An MPI server rank's handle: no events (the reason).
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    Refuse(String),
}

/// One worker's handle: validates events, batches them, hands batches to its server.
/// `Send`, not `Sync`: give each thread its own (`for_each_init(|| smd.client(), …)`).
pub struct Client {
    shared: Arc<Shared>,
    server: usize,
    sink: Sink,
    batch: Batch,
    cache: FxHashMap<Box<str>, usize>,
    metas: Vec<Meta>,
    /// Per meta: its slot in the current batch's fields.
    slots: Vec<Option<usize>>,
    resolved: Vec<usize>,
    touched: Vec<(GroupId, usize)>,
    reductions: Reductions,
    finished: bool,
}

impl Client {
    /// The server (shard) this client sends to.
    pub fn server(&self) -> usize {
        self.server
    }

    fn resolve_slow(&mut self, path: &str, v: &Value<'_>) -> Result<usize> {
        let (spec, id, group, aligned) = {
            let mut reg = self.shared.registry.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let id = reg.resolve(path, v)?;
            let spec = reg.schema.fields[id as usize].clone();
            let gid = reg.group_id(&spec.group);
            let aligned = reg.schema.groups[gid as usize].aligned;
            (spec, id, gid, aligned)
        };
        let fill_row = if spec.kind == Kind::Fixed { spec.fill.repeat(spec.elements_per_row()) } else { vec![] };
        let row_bytes = spec.row_bytes();
        self.metas.push(Meta { spec, id, group, aligned, row_bytes, fill_row });
        self.slots.push(None);
        let mi = self.metas.len() - 1;
        self.cache.insert(path.into(), mi);
        Ok(mi)
    }

    /// Records one event. Every field is checked before anything is written, so a rejected
    /// event leaves the batch as it was.
    pub fn event<'v, F: AsRef<[Field<'v>]>>(&mut self, id: u64, fields: F) -> Result<()> {
        let fields = fields.as_ref();
        if self.finished {
            return Err(Error::Usage(match &self.sink {
                Sink::Refuse(why) => why.clone(),
                _ => "event() on a finished client".into(),
            }));
        }
        self.resolved.clear();
        for (path, v) in fields {
            let mi = match self.cache.get(*path) {
                Some(&mi) => {
                    self.metas[mi].spec.check(v)?;
                    mi
                }
                None => self.resolve_slow(path, v)?,
            };
            let m = &self.metas[mi];
            if m.spec.kind == Kind::Fixed && v.data().len() != m.row_bytes {
                return Err(Error::BadValue {
                    field: (*path).into(),
                    why: format!("{} needs {} bytes, data has {}", m.spec.describe(), m.row_bytes, v.data().len()),
                });
            }
            if self.resolved.contains(&mi) {
                return Err(Error::BadValue { field: (*path).into(), why: "given twice in one event".into() });
            }
            self.resolved.push(mi);
        }
        for cb in &self.shared.callbacks {
            cb(id, fields);
        }
        // Each group the event touches gets one row; an event with no fields is a row of
        // the run group (every aligned field filled).
        self.touched.clear();
        let run_group = [crate::schema::RUN_GROUP_ID];
        let groups: &[GroupId] = if self.resolved.is_empty() { &run_group } else { &[] };
        for g in groups.iter().copied().chain(self.resolved.iter().map(|&mi| self.metas[mi].group)) {
            if !self.touched.iter().any(|&(t, _)| t == g) {
                let slot = match self.batch.groups.iter().position(|r| r.group == g) {
                    Some(s) => s,
                    None => {
                        self.batch.groups.push(GroupRows { group: g, ids: Vec::new() });
                        self.batch.groups.len() - 1
                    }
                };
                self.batch.groups[slot].ids.push(id);
                self.touched.push((g, slot));
            }
        }
        for (k, &mi) in self.resolved.iter().enumerate() {
            let v = &fields[k].1;
            let m = &self.metas[mi];
            let gslot = self.touched.iter().find(|&&(t, _)| t == m.group).map(|&(_, s)| s).expect("group touched");
            let row = self.batch.groups[gslot].ids.len() - 1;
            let fslot = match self.slots[mi] {
                Some(s) => s,
                None => {
                    self.batch.fields.push(FieldRows { field: m.id, group_slot: gslot, ..Default::default() });
                    let s = self.batch.fields.len() - 1;
                    self.slots[mi] = Some(s);
                    s
                }
            };
            let fr = &mut self.batch.fields[fslot];
            pad(fr, m, row);
            let data = v.data();
            fr.data.extend_from_slice(data);
            if m.aligned {
                fr.present.push(1);
            }
            if m.spec.kind.is_ragged() {
                fr.lens.push((data.len() / m.spec.dtype.size()) as u64);
            }
            fr.rows += 1;
            self.batch.bytes += data.len();
        }
        self.batch.events += 1;
        if self.batch.events >= self.shared.batch_events || self.batch.bytes >= self.shared.batch_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Contributes a value to the named reduction (read with `smd.sum/min/max(name)` after
    /// the client is finished or dropped).
    pub fn reduce<T: Reducible>(&mut self, name: &str, value: T) -> Result<()> {
        contribute(&mut self.reductions, name, value.to_num())
    }

    /// Hands the current batch to the server (blocks while the server's queue is full, or
    /// in MPI mode while `max_batches_in_flight` sends are unfinished).
    pub fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        // Aligned fields absent from the batch's last events are filled up to the group.
        self.seal();
        for s in &mut self.slots {
            *s = None;
        }
        match &mut self.sink {
            Sink::Thread(tx) => {
                let fresh = lock(&self.shared.pools[self.server]).pop().unwrap_or_default();
                let full = std::mem::replace(&mut self.batch, fresh);
                tx.send(full).map_err(|_| self.shared.server_error(self.server))
            }
            #[cfg(feature = "mpi")]
            Sink::Mpi(sender) => {
                // The batch is copied into a send buffer, so it is reused at once.
                let r = sender.send(&self.batch, &self.shared.registry);
                self.batch.clear();
                r
            }
            Sink::Refuse(why) => Err(Error::Usage(why.clone())),
        }
    }

    fn seal(&mut self) {
        for (mi, slot) in self.slots.iter().enumerate() {
            if let Some(s) = *slot {
                let fr = &mut self.batch.fields[s];
                let rows = self.batch.groups[fr.group_slot].ids.len();
                pad(fr, &self.metas[mi], rows);
            }
        }
    }

    /// Flushes and merges this client's reductions into the run's. Called by `drop` too,
    /// where errors are kept for `done()`.
    pub fn finish(mut self) -> Result<()> {
        self.finish_inner()
    }

    fn finish_inner(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let r = self.flush();
        // MPI mode: a send buffer must outlive its send.
        #[cfg(feature = "mpi")]
        let r = match &mut self.sink {
            Sink::Mpi(sender) => r.and(sender.wait_all()),
            _ => r,
        };
        let mut merged = Ok(());
        {
            let mut all = lock(&self.shared.reductions);
            for (name, acc) in std::mem::take(&mut self.reductions) {
                let r = match all.get_mut(&name) {
                    Some(a) => a.merge(&name, &acc),
                    None => {
                        all.insert(name, acc);
                        Ok(())
                    }
                };
                if merged.is_ok() {
                    merged = r;
                }
            }
        }
        self.shared.live_clients.fetch_sub(1, Ordering::AcqRel);
        r.and(merged)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Err(e) = self.finish_inner() {
            let mut slot = lock(&self.shared.errors[self.server]);
            slot.get_or_insert_with(|| format!("client flush on drop failed: {e}"));
        }
    }
}

/// Pads an aligned field's rows with fill up to `row` (rows of events that lacked it).
fn pad(fr: &mut FieldRows, m: &Meta, row: usize) {
    if !m.aligned || fr.rows >= row {
        return;
    }
    let missing = row - fr.rows;
    if m.spec.kind.is_ragged() {
        fr.lens.extend(std::iter::repeat_n(0u64, missing));
    } else {
        for _ in 0..missing {
            fr.data.extend_from_slice(&m.fill_row);
        }
    }
    fr.present.extend(std::iter::repeat_n(0u8, missing));
    fr.rows = row;
}
