//! One shard per rank (MPI mode with as many servers as ranks): every rank is a client and
//! the server of its own shard (shard k = rank k), so a batch is appended and committed by
//! the client thread that filled it and its bytes never cross MPI — the way ranks that hold
//! big batches write at the disk's speed, and the way the h5py and ADIOS2 habits go (a file
//! per rank), but keeping one run: `done()` still closes every shard and builds one global
//! index over all of them.
//!
//! The rank's client handles share the shard behind a mutex (a batch is appended whole,
//! never interleaved); the schema a rank's shard holds is the rank's own registry, kept here
//! as of the last append for `done()`'s report.

use std::sync::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::model::batch::{Batch, BatchView};
use crate::model::schema::{Registry, Schema, StatsMap};
use crate::shard::writer::ShardWriter;
use crate::sync::{lock, read};

/// This rank's own shard.
pub(crate) struct LocalShard {
    index: usize,
    state: Mutex<State>,
}

struct State {
    /// `None` once closed.
    writer: Option<ShardWriter>,
    /// The fields and groups of every batch appended so far (the rank's registry's ids).
    schema: Schema,
}

impl LocalShard {
    pub(crate) fn new(writer: ShardWriter) -> LocalShard {
        LocalShard { index: writer.index(), state: Mutex::new(State { writer: Some(writer), schema: Schema::new() }) }
    }

    /// Appends and commits one batch.
    pub(crate) fn append(&self, batch: &Batch, registry: &RwLock<Registry>) -> Result<()> {
        self.append_view(&batch.view(), registry)
    }

    /// Appends and commits one batch's columns (a batch's, or an `events()` call's own).
    pub(crate) fn append_view(&self, view: &BatchView<'_>, registry: &RwLock<Registry>) -> Result<()> {
        let mut st = lock(&self.state);
        let reg = read(registry);
        // The registry only grows: a longer one has fields or groups this shard may hold.
        if reg.schema.fields.len() != st.schema.fields.len() || reg.schema.groups.len() != st.schema.groups.len() {
            st.schema = reg.schema.clone();
        }
        let w = st.writer.as_mut().ok_or_else(|| Error::ServerFailed {
            shard: self.index,
            why: "a batch after done() closed this rank's shard".into(),
        })?;
        let schema = &reg.schema;
        w.append(view, &|f| schema.fields[f as usize].clone(), &|g| schema.groups[g as usize].clone())
    }

    /// Closes the shard: its close-record offset, statistics, and the schema of what it holds.
    pub(crate) fn close(&self) -> Result<(u64, StatsMap, Schema)> {
        let mut st = lock(&self.state);
        let w =
            st.writer.take().ok_or_else(|| Error::ServerFailed { shard: self.index, why: "closed twice".into() })?;
        let (offset, stats) = w.close()?;
        Ok((offset, stats, std::mem::take(&mut st.schema)))
    }
}
