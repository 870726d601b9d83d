//! A server rank's work: a receive thread takes batch messages from any client rank (matched
//! probe, then a nonblocking receive into a recycled buffer, up to [`IN_FLIGHT`] at once,
//! tested with back-off so a waiting server sleeps instead of spinning) and hands them, in
//! the order they were matched, over a bounded channel to a writer thread, which decodes each into a view of the message and appends and commits it
//! with the shard writer, exactly as a threads-mode server does. Receiving the next batch
//! overlaps writing the last one.
//!
//! The server ends when every client rank has sent its end message, which carries how many
//! batches that rank sent here; a count that disagrees with what arrived is an error. A batch
//! the server cannot write (a schema conflict between ranks, an I/O error) aborts the job with
//! the message: clients would otherwise keep computing for nothing.

use std::collections::VecDeque;
use std::os::raw::c_int;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::model::schema::{Schema, StatsMap};
use crate::shard::writer::ShardWriter;
use crate::sync::lock;
use crate::write::mpi::comm::{abort, Comm, Idle, Request, TAG_BATCH, TAG_END};
use crate::write::mpi::wire::Decoder;

/// Receives a server rank has in flight at once, each into its own buffer: matched
/// messages from several clients progress together while the receive thread sleeps between
/// tests (a blocking receive would spin in MPI until the sender delivered, taking a core
/// from the client ranks that must make that progress).
const IN_FLIGHT: usize = 4;

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
                    if p.len() < depth + IN_FLIGHT + 2 {
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
    let (mut ends, mut ends_matched) = (0, 0);
    let mut inflight: VecDeque<(usize, c_int, Vec<u8>, Request)> = VecDeque::new();
    let mut idle = Idle::new();
    while ends_matched < clients || !inflight.is_empty() {
        // Until every client has ended, a server that stops would leave clients waiting on
        // their sends: any failure here aborts the job instead of returning.
        let mut progressed = false;
        // Completed receives go to the writer in the order they were matched (for one
        // client, the order it sent them).
        while let Some((_, _, _, req)) = inflight.front_mut() {
            if !req.test().unwrap_or_else(|e| abort(&format!("{who}: {e}"))) {
                break;
            }
            let (src, tag, buf, _) = inflight.pop_front().expect("front exists");
            progressed = true;
            match tag {
                TAG_BATCH => {
                    received[src] += 1;
                    if tx.send((src, buf)).is_err() {
                        abort(&format!("{who}: the writer thread stopped (it panicked)"));
                    }
                }
                _ => {
                    let count = buf.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
                    if count.is_none() || expected[src].is_some() {
                        abort(&format!("{who}: a malformed or repeated end message from client rank {src}"));
                    }
                    expected[src] = count;
                    ends += 1;
                }
            }
        }
        if ends_matched < clients && inflight.len() < IN_FLIGHT {
            if let Some((msg, src, tag, n)) = comm.improbe().unwrap_or_else(|e| abort(&format!("{who}: {e}"))) {
                if src >= clients {
                    abort(&format!("{who}: a message from rank {src}, which is not a client"));
                }
                if tag != TAG_BATCH && tag != TAG_END {
                    abort(&format!("{who}: a message with unknown tag {tag} from rank {src}"));
                }
                ends_matched += usize::from(tag == TAG_END);
                let mut buf = lock(&pool).pop().unwrap_or_default();
                buf.resize(n, 0);
                // SAFETY: `buf` moves into `inflight` (its heap bytes stay put) and is neither
                // read nor freed until the request has completed; on an MPI error the job
                // aborts.
                let req = unsafe { msg.receive_start(&mut buf) }.unwrap_or_else(|e| abort(&format!("{who}: {e}")));
                inflight.push_back((src, tag, buf, req));
                progressed = true;
            }
        }
        if progressed {
            idle = Idle::new();
        } else if !inflight.is_empty() {
            // A transfer moves only while this side is in MPI too: keep testing, but let the
            // client ranks sharing the cores run in between.
            std::thread::yield_now();
        } else {
            idle.pause();
        }
    }
    debug_assert_eq!(ends, clients);
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
