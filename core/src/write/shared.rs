//! What a run's clients and server threads share within one process: the schema registry,
//! recycled batch buffers and error slots per server, reductions, the live-client count, the
//! callbacks and the batching limits. Built once by the builder; both engines use it.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard};

use crate::error::{Error, Result};
use crate::fork::Origin;
use crate::model::batch::Batch;
use crate::model::dtype::Element;
use crate::model::handle::{self, Resolved};
use crate::model::reduce::Reductions;
use crate::model::schema::Registry;
use crate::model::value::{Field, Value};
use crate::shard::io::Faults;
use crate::sync::{lock, write};

/// A function called with every event on the client that produced it.
pub(crate) type Callback = Arc<dyn Fn(u64, &[Field<'_>]) + Send + Sync>;

/// What a run's clients share (per process).
pub(crate) struct Shared {
    pub(crate) registry: RwLock<Registry>,
    /// Threads mode: recycled batches per server.
    pub(crate) pools: Vec<Mutex<Vec<Batch>>>,
    /// Per server: the error that stopped it, for the clients' and `done()`'s messages.
    pub(crate) errors: Vec<Mutex<Option<String>>>,
    pub(crate) reductions: Mutex<Reductions>,
    pub(crate) live_clients: AtomicUsize,
    pub(crate) callbacks: Vec<Callback>,
    pub(crate) batch_events: usize,
    pub(crate) batch_bytes: usize,
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) in_flight: usize,
    /// Most recycled batches kept per server.
    pub(crate) pool_cap: usize,
    /// Crash tests: the fault plan the shard writers run under (`None` in production).
    pub(crate) faults: Option<Arc<Faults>>,
    /// The process the writer was made in: a forked child may not use it.
    pub(crate) origin: Origin,
}

/// The batching limits a builder sets.
pub(crate) struct Limits {
    pub(crate) servers: usize,
    pub(crate) batch_events: usize,
    pub(crate) batch_bytes: usize,
    pub(crate) in_flight: usize,
    pub(crate) faults: Option<Arc<Faults>>,
}

impl Shared {
    pub(crate) fn new(registry: Registry, callbacks: Vec<Callback>, l: Limits) -> Arc<Shared> {
        Arc::new(Shared {
            registry: RwLock::new(registry),
            pools: (0..l.servers).map(|_| Mutex::new(Vec::new())).collect(),
            errors: (0..l.servers).map(|_| Mutex::new(None)).collect(),
            reductions: Mutex::new(Reductions::new()),
            live_clients: AtomicUsize::new(0),
            callbacks,
            batch_events: l.batch_events,
            batch_bytes: l.batch_bytes,
            in_flight: l.in_flight,
            pool_cap: l.in_flight + 2,
            faults: l.faults,
            origin: Origin::here("writer"),
        })
    }

    /// The error of a server that stopped taking batches.
    pub(crate) fn server_error(&self, shard: usize) -> Error {
        let why = lock(&self.errors[shard]).clone().unwrap_or_else(|| "server stopped".into());
        Error::ServerFailed { shard, why }
    }

    /// Records why server `shard` stopped (the first reason wins).
    pub(crate) fn set_server_error(&self, shard: usize, why: String) {
        lock(&self.errors[shard]).get_or_insert(why);
    }

    /// The field registry, to add or change a field. Refused in a forked child: another
    /// thread may have held its lock at the fork, and the child's writer is unusable anyway.
    pub(crate) fn registry_mut(&self) -> Result<RwLockWriteGuard<'_, Registry>> {
        self.origin.check()?;
        Ok(write(&self.registry))
    }
}

/// Field handles: resolving one registers the field (its first sight) or checks it.
impl Shared {
    fn resolve(&self, path: &str, proto: &Value<'_>) -> Result<Resolved> {
        let id = self.registry_mut()?.resolve(path, proto)?;
        Ok(Resolved { id, path: path.into() })
    }

    pub(crate) fn scalar<T: Element>(&self, path: &str) -> Result<handle::Scalar<T>> {
        Ok(handle::Scalar::new(self.resolve(path, &handle::prototype_scalar::<T>())?))
    }

    pub(crate) fn array<T: Element>(&self, path: &str, shape: &[usize]) -> Result<handle::Array<T>> {
        let proto = handle::prototype_array::<T>(shape)
            .ok_or_else(|| Error::BadValue { field: path.into(), why: format!("shape {shape:?} is too large") })?;
        let n = shape.iter().product();
        Ok(handle::Array::new(self.resolve(path, &proto)?, n))
    }

    pub(crate) fn ragged<T: Element>(&self, path: &str) -> Result<handle::Ragged<T>> {
        Ok(handle::Ragged::new(self.resolve(path, &handle::prototype_ragged::<T>())?))
    }

    pub(crate) fn bytes(&self, path: &str) -> Result<handle::Bytes> {
        Ok(handle::Bytes::new(self.resolve(path, &Value::bytes(&[]))?))
    }

    pub(crate) fn text(&self, path: &str) -> Result<handle::Text> {
        Ok(handle::Text::new(self.resolve(path, &Value::from(""))?))
    }
}
