//! One rank's part of an MPI-mode run: the collective `build()`, client handles' senders,
//! reductions, and the collective `done()`.
//!
//! Every collective step ends in an agreement (an all-gather of each rank's status), so when
//! any rank fails, every rank returns an error naming it instead of some ranks waiting
//! forever. `build()`: rank 0 prepares the directory and manifest (and holds the writer
//! lock), then server ranks create their shards (with as many servers as ranks, every rank
//! creates its own: see `local`). `done()`: client ranks send each server an
//! end message with the number of batches they sent it; servers drain, close their shards and
//! report (close offset, statistics, schema) to rank 0, which merges the schemas (a field
//! two ranks gave different dtypes is an error) and broadcasts the run's schema and close
//! offsets; every rank builds its slice of the global index (see `index`), and rank 0
//! stores the manifest complete and broadcasts the outcome.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::lock::WriterLock;
use crate::format::manifest::Manifest;
use crate::format::shard_dir_name;
use crate::index::IndexReport;
use crate::model::reduce::{decode, encode, merge_all, Reductions};
use crate::model::schema::{merge_stats, Schema, StatsMap};
use crate::shard::writer::ShardWriter;
use crate::write::mpi::client::Sender;
use crate::write::mpi::comm::{mark_failed, Comm, World, TAG_END};
use crate::write::mpi::local::LocalShard;
use crate::write::mpi::server::{spawn, ServerDone};
use crate::write::report::{DoneReport, MpiInfo, MpiRole};
use crate::write::run_dir::{prepare, RunConfig};

/// How long a rank that left the run without `done()` may take to exit before it aborts
/// the job itself.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// One rank's MPI-mode state.
pub(crate) struct Node {
    info: MpiInfo,
    comm: Comm,
    /// Client ranks: a communicator of the client ranks only (collectives of client-only code).
    clients: Option<Comm>,
    /// Client ranks: batches sent to each server, over all handles.
    sent: Vec<Arc<AtomicU64>>,
    /// Server ranks: the receive thread.
    server: Option<JoinHandle<Result<ServerDone>>>,
    /// One shard per rank: this rank's own.
    local: Option<Arc<LocalShard>>,
    dir: String,
    finished: bool,
}

/// Every rank's `local` outcome: `Ok` everywhere, or this rank's own error, or an error
/// naming the first rank that failed (collective).
pub(crate) fn agree<T>(comm: Comm, rank: usize, local: Result<T>) -> Result<T> {
    let mine = match &local {
        Ok(_) => vec![0u8],
        Err(e) => {
            let mut v = vec![1u8];
            v.extend_from_slice(e.to_string().as_bytes());
            v
        }
    };
    let all = comm.allgather_bytes(&mine)?;
    let local = local?;
    for (r, s) in all.iter().enumerate() {
        if r != rank && s.first() != Some(&0) {
            let why = String::from_utf8_lossy(s.get(1..).unwrap_or_default()).into_owned();
            return Err(Error::Mpi { rank: Some(r), why });
        }
    }
    Ok(local)
}

/// A global index every rank built its slice of: the manifest's index part and the report.
pub(crate) type BuiltIndex = (crate::format::manifest::IndexManifest, Vec<IndexReport>);

/// What [`start`] hands back to the builder: this rank's node, and on rank 0 the writer
/// lock; the manifest the run starts with.
pub(crate) type Started = (Node, Option<WriterLock>, Manifest);

/// `build()` in MPI mode (collective): splits the ranks, prepares the run on rank 0 and
/// starts the shard servers on server ranks.
pub(crate) fn start(cfg: &RunConfig, world: World) -> Result<Started> {
    let (p, s) = (world.size, cfg.servers);
    if s > p {
        return Err(Error::Usage(format!(
            "MPI mode: {s} server rank(s) need at least {} ranks (servers plus at least one client), \
             but the job has {p}; lower servers() or start more ranks (or ask for exactly {p}: one \
             shard per rank)",
            s + 1
        )));
    }
    // As many servers as ranks: every rank is a client writing its own shard.
    let own = s == p;
    let clients = if own { p } else { p - s };
    let role = if world.rank < clients { MpiRole::Client(world.rank) } else { MpiRole::Server(world.rank - clients) };
    let info = MpiInfo { rank: world.rank, size: p, servers: s, clients, role };
    let comm = Comm::world().duplicate()?;
    let clients_comm = match comm.split(world.rank < clients) {
        Ok(c) => c,
        Err(e) => {
            comm.free();
            return Err(e);
        }
    };
    let dir = cfg.dir.clone();
    let prepared = if world.rank == 0 { prepare(cfg).map(Some) } else { Ok(None) };
    let prepared = match agree(comm, world.rank, prepared) {
        Ok(p) => p,
        Err(e) => {
            comm.free();
            return Err(e);
        }
    };
    let shard = match role {
        MpiRole::Server(k) => ShardWriter::create(&dir.join(shard_dir_name(k)), k, cfg.sync).map(Some),
        MpiRole::Client(k) if own => ShardWriter::create(&dir.join(shard_dir_name(k)), k, cfg.sync).map(Some),
        MpiRole::Client(_) => Ok(None),
    };
    let shard = match agree(comm, world.rank, shard) {
        Ok(sh) => sh,
        Err(e) => {
            comm.free();
            return Err(e);
        }
    };
    let mut local = None;
    let server = match (role, shard) {
        (MpiRole::Client(_), Some(shard)) => {
            local = Some(Arc::new(LocalShard::new(shard)));
            None
        }
        // Every rank has agreed to start: a server that cannot would leave its clients waiting.
        (MpiRole::Server(k), Some(shard)) => {
            Some(spawn(comm, shard, k, world.rank, clients, cfg.in_flight).unwrap_or_else(|e| {
                crate::write::mpi::comm::abort(&format!("MPI rank {} (server {k}): {e}", world.rank))
            }))
        }
        _ => None,
    };
    let node = Node {
        info,
        comm,
        clients: clients_comm,
        sent: if own { vec![] } else { (0..s).map(|_| Arc::new(AtomicU64::new(0))).collect() },
        server,
        local,
        dir: dir.display().to_string(),
        finished: false,
    };
    let (lock, manifest) = match prepared {
        Some((lock, manifest)) => (Some(lock), manifest),
        None => (None, Manifest::new(s)),
    };
    Ok((node, lock, manifest))
}

/// What each rank contributes to `done()`'s agreement.
#[derive(Serialize, Deserialize)]
enum Status {
    Client,
    Server { shard: usize, close_offset: u64, stats: StatsMap, schema: Schema },
    Failed(String),
}

/// Rank 0's merge of every rank's status, sent to every rank: what the index needs.
#[derive(Serialize, Deserialize)]
enum Merged {
    Ok { schema: Schema, closes: Vec<u64> },
    Failed { rank: Option<usize>, why: String },
}

/// Rank 0's outcome of `done()`, sent to every rank.
#[derive(Serialize, Deserialize)]
enum Outcome {
    Done { events: u64, groups: Vec<(String, u64, u64, Vec<u64>)> },
    Failed { rank: Option<usize>, why: String },
}

impl Node {
    pub(crate) fn info(&self) -> MpiInfo {
        self.info
    }

    /// A sender for client handle number `n` of this rank, and its server index; on a
    /// server rank, the reason a handle takes no events.
    pub(crate) fn sender(&self, n: usize, in_flight: usize) -> std::result::Result<(usize, Sender), String> {
        match self.info.role {
            MpiRole::Client(c) if self.local.is_some() => {
                Ok((c, Sender::local(Arc::clone(self.local.as_ref().expect("checked")))))
            }
            MpiRole::Client(c) => {
                // Handles of one rank spread over the servers, starting at its own.
                let k = (c + n) % self.info.servers;
                let dest = self.info.clients + k;
                Ok((k, Sender::new(self.comm, dest, Arc::clone(&self.sent[k]), in_flight)))
            }
            MpiRole::Server(k) => Err(format!(
                "MPI rank {} is server {k} of this run: it writes no events (give server ranks an empty \
                 share, e.g. with SmallData::block or SmallData::round_robin)",
                self.info.rank
            )),
        }
    }

    /// Every rank's reductions merged in rank order (collective).
    pub(crate) fn reduce(&self, mine: &Reductions) -> Result<Reductions> {
        let all = self.comm.allgather_bytes(&encode(mine))?;
        let mut merged = Reductions::new();
        for (r, bytes) in all.iter().enumerate() {
            let theirs = decode(bytes).map_err(|e| Error::Mpi { rank: Some(r), why: e.to_string() })?;
            merge_all(&mut merged, theirs)?;
        }
        Ok(merged)
    }

    /// Every client rank's bytes, in rank order (collective over the client ranks only).
    pub(crate) fn allgather_clients(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        match self.clients {
            Some(c) => c.allgather_bytes(mine),
            None => Err(Error::Usage(format!(
                "MPI rank {} is a server rank: client-only collectives (reductions in a summary block) \
                 run on client ranks only (check `summary` / is_client() first)",
                self.info.rank
            ))),
        }
    }

    /// `done()` in MPI mode (collective). `alive` is this rank's own check (no live
    /// clients); `complete` builds the index and stores the manifest (rank 0).
    pub(crate) fn done(
        &mut self,
        alive: Result<()>,
        complete: impl FnOnce(Schema, StatsMap, Vec<u64>, Option<BuiltIndex>) -> Result<DoneReport>,
    ) -> Result<DoneReport> {
        self.finished = true;
        let rank = self.info.rank;
        let local: Result<Status> = match (self.info.role, self.local.take()) {
            (MpiRole::Client(k), Some(own)) => alive
                .and_then(|()| own.close())
                .map(|(close_offset, stats, schema)| Status::Server { shard: k, close_offset, stats, schema }),
            (MpiRole::Client(_), None) => alive.and(self.send_ends()).map(|()| Status::Client),
            (MpiRole::Server(k), _) => {
                let served = match self.server.take() {
                    Some(h) => h.join().unwrap_or_else(|_| {
                        Err(Error::ServerFailed { shard: k, why: "the server thread panicked".into() })
                    }),
                    None => Err(Error::ServerFailed { shard: k, why: "no server thread".into() }),
                };
                alive.and(served).map(|d| Status::Server {
                    shard: k,
                    close_offset: d.close_offset,
                    stats: d.stats,
                    schema: d.schema,
                })
            }
        };
        let (mine, local_err) = match local {
            Ok(s) => (s, None),
            Err(e) => (Status::Failed(e.to_string()), Some(e)),
        };
        let bytes = serde_json::to_vec(&mine).map_err(Error::encode("an MPI done() status"))?;
        // Statuses go to rank 0 only (O(P) bytes there, not on every rank); rank 0 checks
        // them, merges the schemas, and tells every rank the run's schema and close offsets
        // (or the failure), so all agree on whether to go on.
        let gathered = match self.comm.gather_bytes(&bytes) {
            Ok(a) => a,
            Err(e) => return Err(local_err.unwrap_or(e)),
        };
        let mut stats = StatsMap::new();
        let msg = match gathered {
            Some(all) => {
                let m = match self.merge(&all) {
                    Ok((schema, s, closes)) => {
                        stats = s;
                        Merged::Ok { schema, closes }
                    }
                    Err(Error::Mpi { rank: Some(r), why }) => Merged::Failed { rank: Some(r), why },
                    Err(e) => Merged::Failed { rank: Some(0), why: e.to_string() },
                };
                serde_json::to_vec(&m).unwrap_or_default()
            }
            None => vec![],
        };
        let merged: Result<(Schema, Vec<u64>)> =
            self.comm.bcast_bytes(&msg).and_then(|b| {
                match serde_json::from_slice(&b)
                    .map_err(|e| Error::Mpi { rank: Some(0), why: format!("unreadable merge: {e}") })?
                {
                    Merged::Ok { schema, closes } => Ok((schema, closes)),
                    Merged::Failed { rank, why } => Err(Error::Mpi { rank, why }),
                }
            });
        let built = match &merged {
            Ok((schema, closes)) => crate::write::mpi::index::build(self.comm, Path::new(&self.dir), schema, closes),
            Err(_) => Ok(None),
        };
        let mut own: Option<Result<DoneReport>> = None;
        let outcome = if rank == 0 {
            let r = merged.and_then(|(schema, closes)| complete(schema, stats, closes, built?));
            let o = match &r {
                Ok(rep) => Outcome::Done {
                    events: rep.events,
                    groups: rep
                        .groups
                        .iter()
                        .map(|g| (g.group.clone(), g.rows, g.duplicates, g.duplicate_ids.clone()))
                        .collect(),
                },
                Err(Error::Mpi { rank: Some(r), why }) => Outcome::Failed { rank: Some(*r), why: why.clone() },
                Err(e) => Outcome::Failed { rank: Some(0), why: e.to_string() },
            };
            own = Some(r);
            serde_json::to_vec(&o).map_err(Error::encode("an MPI done() outcome"))?
        } else {
            vec![]
        };
        let told = self.comm.bcast_bytes(&outcome);
        if let Some(c) = self.clients.take() {
            c.free();
        }
        self.comm.free();
        if let Some(e) = local_err {
            return Err(e);
        }
        if let Some(r) = own {
            return r;
        }
        let told = told?;
        let outcome: Outcome = serde_json::from_slice(&told)
            .map_err(|e| Error::Mpi { rank: Some(0), why: format!("unreadable outcome: {e}") })?;
        match outcome {
            Outcome::Done { events, groups } => Ok(DoneReport {
                dir: Path::new(&self.dir).to_path_buf(),
                events,
                groups: groups
                    .into_iter()
                    .map(|(group, rows, duplicates, duplicate_ids)| IndexReport {
                        group,
                        rows,
                        duplicates,
                        duplicate_ids,
                    })
                    .collect(),
                mpi: Some(self.info),
            }),
            Outcome::Failed { rank, why } => Err(Error::Mpi { rank, why }),
        }
    }

    /// Tells every server this rank is done, with the number of batches it sent there.
    fn send_ends(&self) -> Result<()> {
        let counts: Vec<[u8; 8]> =
            self.sent.iter().map(|c| c.load(std::sync::atomic::Ordering::Acquire).to_le_bytes()).collect();
        let mut reqs = Vec::with_capacity(counts.len());
        for (k, c) in counts.iter().enumerate() {
            reqs.push(self.comm.isend(c, self.info.clients + k, TAG_END)?);
        }
        for r in &mut reqs {
            r.wait()?;
        }
        Ok(())
    }

    /// Rank 0: checks every rank's status and merges the servers' schemas and statistics:
    /// the run's schema, statistics and shards' close offsets.
    fn merge(&self, all: &[Vec<u8>]) -> Result<(Schema, StatsMap, Vec<u64>)> {
        let mut schema = Schema::new();
        let mut stats = StatsMap::new();
        let mut closes = vec![0u64; self.info.servers];
        let mut servers = Vec::new();
        for (r, bytes) in all.iter().enumerate() {
            let status: Status = serde_json::from_slice(bytes)
                .map_err(|e| Error::Mpi { rank: Some(r), why: format!("unreadable status: {e}") })?;
            match status {
                Status::Client => {}
                Status::Failed(why) => return Err(Error::Mpi { rank: Some(r), why }),
                Status::Server { shard, close_offset, stats: s, schema: sc } => {
                    *closes.get_mut(shard).ok_or_else(|| Error::Mpi { rank: Some(r), why: "bad shard".into() })? =
                        close_offset;
                    merge_stats(&mut stats, s);
                    servers.push((r, sc));
                }
            }
        }
        for (r, sc) in servers {
            schema.merge_from(&sc.fields, &sc.groups, |_, e| {
                Err(Error::Mpi { rank: Some(r), why: format!("the ranks disagree on a field's type: {e}") })
            })?;
        }
        Ok((schema, stats, closes))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if !self.finished {
            mark_failed(
                &format!(
                    "MPI rank {} left the run in {} without done() (an error or a panic on this rank)",
                    self.info.rank, self.dir
                ),
                EXIT_GRACE,
            );
        }
    }
}
