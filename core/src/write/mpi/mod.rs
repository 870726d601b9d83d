//! MPI mode: the same writer program across `mpirun` ranks (feature `mpi`).
//!
//! Under an MPI launcher with P > 1 ranks, [`Builder::build`](crate::Builder::build) splits
//! the ranks: the last S ranks are servers (server `k` = rank `P − S + k` writes shard `k`),
//! ranks `0..P − S` are clients (client index = rank). A client rank's [`Client`](crate::Client)
//! handles batch events exactly as in threads mode and send each batch as one MPI message to
//! their server with a synchronous-mode non-blocking send (`MPI_Issend`, complete only once
//! the server has taken it) straight from the batch's column buffers (no copy; see
//! `client`), at most `max_batches_in_flight` per handle: back-pressure. A server rank
//! receives from any client on a background thread into recycled buffers, maps the sender's
//! field ids to its own (each rank has its own schema registry; see `wire`) and appends and
//! commits with the same shard writer as threads mode, on a second thread.
//!
//! With S = P (`servers(P)`) every rank is a client and writes its own shard `rank`
//! directly (see `local`): no batch crosses MPI. Reductions are all-gathers of every rank's
//! accumulators; `done()` is collective (see `node`), and every rank builds its share of
//! the global index (see `index`), so no rank merges the whole run. docs/SCALING.md gives
//! each stage's cost in P, S, N and F.
//!
//! Failure never hangs the job: an error before or during `done()` reaches every rank as an
//! error; a rank that leaves the run without `done()` fails the job when it exits; a server
//! that cannot write a batch (a schema conflict between ranks, a full disk) aborts the job
//! with its message. The committed prefix of every shard stays readable (a crashed run).

pub(crate) mod client;
pub(crate) mod comm;
mod index;
pub(crate) mod local;
pub(crate) mod node;
mod server;
pub(crate) mod wire;
