//! A server rank's work: a receive thread takes batch messages from any client rank (matched
//! probe, then a receive into a recycled buffer) and hands them over a bounded channel to a
//! writer thread, which decodes each into a view of the message and appends and commits it
//! with the shard writer, exactly as a threads-mode server does. Receiving the next batch
//! overlaps writing the last one.
//!
//! The server ends when every client rank has sent its end message, which carries how many
//! batches that rank sent here; a count that disagrees with what arrived is an error. A batch
//! the server cannot write (a schema conflict between ranks, an I/O error) aborts the job with
//! the message: clients would otherwise keep computing for nothing.

use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::model::schema::{Schema, StatsMap};
use crate::shard::writer::ShardWriter;
use crate::sync::lock;
use crate::write::mpi::comm::{abort, Comm, Idle, TAG_BATCH, TAG_END};
use crate::write::mpi::wire::Decoder;

/// What a server reports at the end: its shard's close-record offset and statistics, and
/// the schema it merged from the clients' messages.
#[derive(Debug)]
pub(crate) struct ServerDone {
    pub(crate) close_offset: u64,
    pub(crate) stats: StatsMap,
    pub(crate) schema: Schema,
}

/// Starts serving shard `index` on this rank. `clients` client ranks (ranks `0..clients`)
/// send here; `depth` batches may wait between receiving and writing.
pub(crate) fn spawn(
    comm: Comm,
    shard: ShardWriter,
    index: usize,
    rank: usize,
    clients: usize,
    depth: usize,
) -> Result<JoinHandle<Result<ServerDone>>> {
    std::thread::Builder::new()
        .name(format!("smdfs-mpi-server-{index}"))
        .spawn(move || receive(comm, shard, index, rank, clients, depth))
        .map_err(|e| Error::Mpi { rank: None, why: format!("cannot start the server thread: {e}") })
}

fn receive(
    comm: Comm,
    mut shard: ShardWriter,
    index: usize,
    rank: usize,
    clients: usize,
    depth: usize,
) -> Result<ServerDone> {
    let who = format!("MPI rank {rank} (server {index}, shard {index})");
    let pool: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = sync_channel::<(usize, Vec<u8>)>(depth.max(1));
    let writer = {
        let pool = Arc::clone(&pool);
        let whom = who.clone();
        std::thread::Builder::new()
            .name(format!("smdfs-mpi-writer-{index}"))
            .spawn(move || -> Result<ServerDone> {
                let mut dec = Decoder::new(clients);
                for (src, buf) in rx {
                    let r = dec.decode(src, &buf).and_then(|view| {
                        let schema = &dec.schema;
                        shard.append(&view, &|f| schema.fields[f as usize].clone(), &|g| {
                            schema.groups[g as usize].clone()
                        })
                    });
                    if let Err(e) = r {
                        abort(&format!("{whom}: a batch from client rank {src}: {e}"));
                    }
                    let mut p = lock(&pool);
                    if p.len() < depth + 2 {
                        p.push(buf);
                    }
                }
                let (close_offset, stats) = shard.close()?;
                Ok(ServerDone { close_offset, stats, schema: dec.schema })
            })
            .unwrap_or_else(|e| abort(&format!("{who}: cannot start the writer thread: {e}")))
    };
    let mut received = vec![0u64; clients];
    let mut expected: Vec<Option<u64>> = vec![None; clients];
    let mut ends = 0;
    let mut idle = Idle::new();
    while ends < clients {
        // Until every client has ended, a server that stops would leave clients waiting on
        // their sends: any failure here aborts the job instead of returning.
        let probed = comm.improbe().unwrap_or_else(|e| abort(&format!("{who}: {e}")));
        let Some((msg, src, tag, n)) = probed else {
            idle.pause();
            continue;
        };
        idle = Idle::new();
        let mut buf = lock(&pool).pop().unwrap_or_default();
        buf.resize(n, 0);
        msg.receive(&mut buf).unwrap_or_else(|e| abort(&format!("{who}: {e}")));
        if src >= clients {
            abort(&format!("{who}: a message from rank {src}, which is not a client"));
        }
        match tag {
            TAG_BATCH => {
                received[src] += 1;
                if tx.send((src, buf)).is_err() {
                    abort(&format!("{who}: the writer thread stopped (it panicked)"));
                }
            }
            TAG_END => {
                let count = buf.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
                if count.is_none() || expected[src].is_some() {
                    abort(&format!("{who}: a malformed or repeated end message from client rank {src}"));
                }
                expected[src] = count;
                ends += 1;
            }
            _ => abort(&format!("{who}: a message with unknown tag {tag} from rank {src}")),
        }
    }
    drop(tx);
    let done =
        writer.join().map_err(|_| Error::ServerFailed { shard: index, why: "the writer thread panicked".into() })??;
    for (src, (&got, want)) in received.iter().zip(&expected).enumerate() {
        if Some(got) != *want {
            return Err(Error::ServerFailed {
                shard: index,
                why: format!("client rank {src} sent {want:?} batches here, {got} arrived"),
            });
        }
    }
    Ok(done)
}
