//! The few MPI calls MPI mode makes, over the `mpi` crate's raw bindings: starting MPI once
//! per process, a duplicated communicator per run, non-blocking sends, matched probes and
//! receives, and all-gathers of bytes.
//!
//! Raw calls because the run owns its send buffers for as long as a send is in flight (a
//! ring per client), which the crate's scoped requests cannot express. MPI is started with
//! `MPI_THREAD_MULTIPLE`: client handles on rayon threads, the server's receive thread and
//! the main thread's collectives all call MPI. Every wait is a test-and-yield loop, never a
//! blocking call: ranks often outnumber cores, and MPICH's blocking calls spin at full speed.
//!
//! Exit: a process that started MPI finalizes it when it exits; a rank that leaves a run
//! without `done()` (an error or a panic) makes the job fail instead (see [`mark_failed`]).

use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ::mpi::environment::{Threading, Universe};
use ::mpi::ffi;

use crate::error::{Error, Result};

/// Tag of a batch message (client → server).
pub(crate) const TAG_BATCH: c_int = 1;
/// Tag of a client's last message to a server: the number of batches it sent there (u64).
pub(crate) const TAG_END: c_int = 2;

/// This process's place in `MPI_COMM_WORLD`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct World {
    pub(crate) rank: usize,
    pub(crate) size: usize,
}

static WORLD: OnceLock<std::result::Result<Option<World>, String>> = OnceLock::new();
/// The universe this library started (finalized at exit); `None` if the program started MPI.
static UNIVERSE: Mutex<Option<Universe>> = Mutex::new(None);
/// Set when a run is left without `done()`: exiting must then fail the job, not finalize.
static FAILED: AtomicBool = AtomicBool::new(false);

/// Environment variables MPI launchers set (MPICH's hydra and PMI-1/2 launchers such as
/// Slurm's, PMIx, Open MPI). Without one, the program was launched plainly: threads mode,
/// and MPI is never started.
const LAUNCHER_VARS: [&str; 4] = ["PMI_SIZE", "PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE"];

/// The MPI world if this process runs under an MPI launcher with more than one rank
/// (starting MPI on first use), `None` for threads mode. Errors if MPI cannot give
/// `MPI_THREAD_MULTIPLE`.
pub(crate) fn world() -> Result<Option<World>> {
    WORLD.get_or_init(init).clone().map_err(|why| Error::Mpi { rank: None, why })
}

fn init() -> std::result::Result<Option<World>, String> {
    if !::mpi::environment::is_initialized() {
        if !LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
            return Ok(None);
        }
        // A launcher that says one rank: threads mode without starting MPI.
        if std::env::var("PMI_SIZE").ok().or_else(|| std::env::var("OMPI_COMM_WORLD_SIZE").ok()).as_deref() == Some("1")
        {
            return Ok(None);
        }
        match ::mpi::environment::initialize_with_threading(Threading::Multiple) {
            Some((universe, _)) => {
                *crate::sync::lock(&UNIVERSE) = Some(universe);
                register_at_exit();
            }
            None => return Err("MPI was started by another thread while smdfs started it".into()),
        }
    }
    let level = ::mpi::environment::threading_support();
    let (rank, size) = (Comm::world().rank(), Comm::world().size());
    if size > 1 && level < Threading::Multiple {
        return Err(format!(
            "MPI gives thread level {level:?}; smdfs needs MPI_THREAD_MULTIPLE (start MPI with \
             mpi::initialize_with_threading(Threading::Multiple), or let smdfs start it)"
        ));
    }
    Ok((size > 1).then_some(World { rank, size }))
}

/// Registers [`at_exit`] once per process.
fn register_at_exit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: registering a plain `extern "C" fn()` with atexit.
    ONCE.call_once(|| unsafe {
        libc::atexit(at_exit);
    });
}

extern "C" fn at_exit() {
    if FAILED.load(Ordering::SeqCst) {
        // Exiting without MPI_Finalize and with a failure code makes the launcher end the
        // job (MPICH's hydra kills the other ranks); finalizing could wait on them forever.
        // SAFETY: _exit ends the process at once, which is all that is left to do.
        unsafe { libc::_exit(1) };
    }
    let universe = crate::sync::lock(&UNIVERSE).take();
    drop(universe); // MPI_Finalize
}

/// Records that this rank left a run without `done()` (an error or a panic on this rank):
/// the job must fail, with a message, rather than leave the other ranks waiting. The
/// process fails the job when it exits; if it is still alive after `grace`, it aborts it.
pub(crate) fn mark_failed(why: &str, grace: Duration) {
    eprintln!("smdfs: {why}; the MPI job will fail");
    FAILED.store(true, Ordering::SeqCst);
    // Also when the program started MPI: its exit must fail the job too.
    register_at_exit();
    let _ = std::thread::Builder::new().name("smdfs-mpi-abort".into()).spawn(move || {
        std::thread::sleep(grace);
        abort("this rank left the run without done() and did not exit");
    });
}

/// Prints `why` and aborts the whole MPI job (every rank).
pub(crate) fn abort(why: &str) -> ! {
    eprintln!("smdfs: {why}; aborting the MPI job");
    // SAFETY: MPI_Abort on the world communicator; it does not return.
    unsafe { ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, 1) };
    std::process::exit(1)
}

/// A communicator handle. MPI handles are plain values; MPI_THREAD_MULTIPLE makes calls on
/// them from any thread safe.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Comm(ffi::MPI_Comm);

// SAFETY: see the type's doc; the handle is an integer (MPICH) or a pointer to an object MPI
// synchronizes itself (MPI_THREAD_MULTIPLE).
unsafe impl Send for Comm {}
// SAFETY: as above.
unsafe impl Sync for Comm {}

fn check(rc: c_int, what: &str) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::Mpi { rank: None, why: format!("{what} failed with MPI error code {rc}") })
    }
}

fn count(n: usize, what: &str) -> Result<c_int> {
    c_int::try_from(n).map_err(|_| Error::Mpi {
        rank: None,
        why: format!("{what}: {n} bytes exceed MPI's 2 GiB message limit (lower batch_bytes)"),
    })
}

impl Comm {
    pub(crate) fn world() -> Comm {
        // SAFETY: reading the world handle after MPI_Init.
        Comm(unsafe { ffi::RSMPI_COMM_WORLD })
    }

    /// A private communicator with the same ranks (collective), so a run's messages never
    /// match the program's own.
    pub(crate) fn duplicate(self) -> Result<Comm> {
        // SAFETY: reading a handle constant.
        let mut c = unsafe { ffi::RSMPI_COMM_NULL };
        // SAFETY: valid communicator and out-pointer.
        check(unsafe { ffi::MPI_Comm_dup(self.0, &mut c) }, "MPI_Comm_dup")?;
        Ok(Comm(c))
    }

    /// The ranks that pass `member` as a communicator of their own (collective over `self`;
    /// the others get `None`).
    pub(crate) fn split(self, member: bool) -> Result<Option<Comm>> {
        // SAFETY: reading handle constants.
        let (mut c, color) = unsafe { (ffi::RSMPI_COMM_NULL, if member { 0 } else { ffi::RSMPI_UNDEFINED }) };
        // SAFETY: valid communicator and out-pointer.
        check(unsafe { ffi::MPI_Comm_split(self.0, color, self.rank() as c_int, &mut c) }, "MPI_Comm_split")?;
        Ok(member.then_some(Comm(c)))
    }

    /// Frees a communicator made by [`Comm::duplicate`] (collective).
    pub(crate) fn free(mut self) {
        // SAFETY: a communicator this module duplicated, no longer used.
        unsafe { ffi::MPI_Comm_free(&mut self.0) };
    }

    pub(crate) fn rank(self) -> usize {
        let mut r: c_int = 0;
        // SAFETY: valid communicator and out-pointer.
        unsafe { ffi::MPI_Comm_rank(self.0, &mut r) };
        r as usize
    }

    pub(crate) fn size(self) -> usize {
        let mut s: c_int = 0;
        // SAFETY: valid communicator and out-pointer.
        unsafe { ffi::MPI_Comm_size(self.0, &mut s) };
        s as usize
    }

    /// Starts sending `buf` to `dest` in synchronous mode (`MPI_Issend`: the request completes
    /// only once `dest` has matched the message, which is what bounds what is in flight).
    /// The caller keeps `buf` alive and unmoved in memory (a `Vec`'s heap buffer does not
    /// move with the `Vec`) until the request completes.
    pub(crate) fn isend(self, buf: &[u8], dest: usize, tag: c_int) -> Result<Request> {
        let n = count(buf.len(), "a batch message")?;
        let mut req = Request::null();
        // SAFETY: buf is valid for n bytes and outlives the request (caller's contract).
        let rc = unsafe {
            ffi::MPI_Issend(
                buf.as_ptr().cast::<c_void>(),
                n,
                ffi::RSMPI_UINT8_T,
                dest as c_int,
                tag,
                self.0,
                &mut req.0,
            )
        };
        check(rc, "MPI_Issend")?;
        Ok(req)
    }

    /// Starts sending the concatenation of `blocks` (each a pointer and a length) to `dest`
    /// as one message, in synchronous mode like [`Comm::isend`], without copying them into
    /// one buffer: an `MPI_Type_create_hindexed` datatype describes where the blocks lie, so
    /// the receiver gets the same bytes as from a send of their concatenation.
    ///
    /// # Safety
    /// Every block must be valid for reading its length, and stay alive and unmoved until
    /// the request completes.
    pub(crate) unsafe fn isend_gather(self, blocks: &[(*const u8, usize)], dest: usize, tag: c_int) -> Result<Request> {
        let Some(&(base, _)) = blocks.first() else {
            return self.isend(&[], dest, tag);
        };
        count(blocks.iter().map(|b| b.1).sum(), "a batch message")?;
        let mut lens = Vec::with_capacity(blocks.len());
        let mut disps = Vec::with_capacity(blocks.len());
        for &(p, n) in blocks {
            lens.push(count(n, "a batch message")?);
            // Displacements from the first block: MPI adds them to the buffer address.
            disps.push((p as ffi::MPI_Aint).wrapping_sub(base as ffi::MPI_Aint));
        }
        let nblocks = count(blocks.len(), "a batch message's blocks")?;
        // SAFETY: reading a handle constant.
        let mut ty = unsafe { ffi::RSMPI_DATATYPE_NULL };
        // SAFETY: arrays of `nblocks` entries; out-pointer valid.
        check(
            unsafe {
                ffi::MPI_Type_create_hindexed(nblocks, lens.as_ptr(), disps.as_ptr(), ffi::RSMPI_UINT8_T, &mut ty)
            },
            "MPI_Type_create_hindexed",
        )?;
        // SAFETY: a datatype just created.
        let committed = check(unsafe { ffi::MPI_Type_commit(&mut ty) }, "MPI_Type_commit");
        let mut req = Request::null();
        let sent = committed.and_then(|()| {
            // SAFETY: the blocks outlive the request (the caller's contract); one element of
            // the committed type starting at the first block.
            check(
                unsafe { ffi::MPI_Issend(base.cast::<c_void>(), 1, ty, dest as c_int, tag, self.0, &mut req.0) },
                "MPI_Issend",
            )
        });
        // Freeing a type a pending send uses is allowed: MPI frees it once the send is done.
        // SAFETY: a datatype this function created.
        unsafe { ffi::MPI_Type_free(&mut ty) };
        sent.map(|()| req)
    }

    /// A message waiting from any rank with any tag: (message, source, tag, bytes).
    pub(crate) fn improbe(self) -> Result<Option<(Message, usize, c_int, usize)>> {
        let mut flag: c_int = 0;
        // SAFETY: reading a handle constant.
        let mut msg = Message(unsafe { ffi::RSMPI_MESSAGE_NULL });
        // SAFETY: MPI_Status is plain data; MPI fills it.
        let mut st: ffi::MPI_Status = unsafe { std::mem::zeroed() };
        // SAFETY: valid communicator and out-pointers.
        let rc = unsafe {
            ffi::MPI_Improbe(ffi::RSMPI_ANY_SOURCE, ffi::RSMPI_ANY_TAG, self.0, &mut flag, &mut msg.0, &mut st)
        };
        check(rc, "MPI_Improbe")?;
        if flag == 0 {
            return Ok(None);
        }
        let mut n: c_int = 0;
        // SAFETY: a status MPI filled.
        check(unsafe { ffi::MPI_Get_count(&st, ffi::RSMPI_UINT8_T, &mut n) }, "MPI_Get_count")?;
        Ok(Some((msg, st.MPI_SOURCE as usize, st.MPI_TAG, n.max(0) as usize)))
    }

    /// All ranks' byte strings, in rank order (collective).
    pub(crate) fn allgather_bytes(self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(self.gather_to(mine, None)?.unwrap_or_default())
    }

    /// Every rank's byte string on rank 0, in rank order (`None` on the other ranks;
    /// collective). Only rank 0 holds all of them: O(P) bytes there, not on every rank.
    pub(crate) fn gather_bytes(self, mine: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        self.gather_to(mine, Some(0))
    }

    /// Every rank's byte string, in rank order, on rank `root` (`None` elsewhere) or, with no
    /// root, on every rank: the lengths first, then the bytes (collective).
    fn gather_to(self, mine: &[u8], root: Option<c_int>) -> Result<Option<Vec<Vec<u8>>>> {
        let what = if root.is_some() { "a gather" } else { "an all-gather" };
        let receives = root.is_none_or(|r| self.rank() == r as usize);
        let len = count(mine.len(), what)?;
        let mut counts = vec![0 as c_int; if receives { self.size() } else { 0 }];
        let (len_ptr, counts_ptr) = ((&len as *const c_int).cast::<c_void>(), counts.as_mut_ptr().cast::<c_void>());
        let mut req = Request::null();
        // SAFETY: one int sent; where this rank receives, one per rank into `counts`, which
        // outlives the wait.
        let rc = match root {
            Some(r) => unsafe {
                ffi::MPI_Igather(
                    len_ptr,
                    1,
                    ffi::RSMPI_INT32_T,
                    counts_ptr,
                    1,
                    ffi::RSMPI_INT32_T,
                    r,
                    self.0,
                    &mut req.0,
                )
            },
            None => unsafe {
                ffi::MPI_Iallgather(
                    len_ptr,
                    1,
                    ffi::RSMPI_INT32_T,
                    counts_ptr,
                    1,
                    ffi::RSMPI_INT32_T,
                    self.0,
                    &mut req.0,
                )
            },
        };
        check(rc, if root.is_some() { "MPI_Igather" } else { "MPI_Iallgather" })?;
        req.wait()?;
        let mut displs = Vec::with_capacity(counts.len());
        let mut total = 0usize;
        for &c in &counts {
            displs.push(count(total, what)?);
            total += c.max(0) as usize;
        }
        count(total, what)?;
        let mut all = vec![0u8; total];
        let (mine_ptr, all_ptr) = (mine.as_ptr().cast::<c_void>(), all.as_mut_ptr().cast::<c_void>());
        let (cp, dp) = (counts.as_ptr(), displs.as_ptr());
        let mut req = Request::null();
        // SAFETY: buffers sized from the counts every rank sent (only receivers read them);
        // all outlive the wait.
        let rc = match root {
            Some(r) => unsafe {
                ffi::MPI_Igatherv(
                    mine_ptr,
                    len,
                    ffi::RSMPI_UINT8_T,
                    all_ptr,
                    cp,
                    dp,
                    ffi::RSMPI_UINT8_T,
                    r,
                    self.0,
                    &mut req.0,
                )
            },
            None => unsafe {
                ffi::MPI_Iallgatherv(
                    mine_ptr,
                    len,
                    ffi::RSMPI_UINT8_T,
                    all_ptr,
                    cp,
                    dp,
                    ffi::RSMPI_UINT8_T,
                    self.0,
                    &mut req.0,
                )
            },
        };
        check(rc, if root.is_some() { "MPI_Igatherv" } else { "MPI_Iallgatherv" })?;
        req.wait()?;
        Ok(receives.then(|| {
            counts
                .iter()
                .zip(&displs)
                .map(|(&c, &d)| all[d as usize..d as usize + c.max(0) as usize].to_vec())
                .collect()
        }))
    }

    /// Rank 0's `mine` on every rank (collective; the other ranks' `mine` is ignored).
    pub(crate) fn bcast_bytes(self, mine: &[u8]) -> Result<Vec<u8>> {
        let root = self.rank() == 0;
        let mut len: u64 = if root { mine.len() as u64 } else { 0 };
        let mut req = Request::null();
        // SAFETY: one u64, valid until the wait.
        check(
            unsafe {
                ffi::MPI_Ibcast((&mut len as *mut u64).cast::<c_void>(), 1, ffi::RSMPI_UINT64_T, 0, self.0, &mut req.0)
            },
            "MPI_Ibcast",
        )?;
        req.wait()?;
        let n = count(usize::try_from(len).unwrap_or(usize::MAX), "a broadcast")?;
        let mut buf = if root { mine.to_vec() } else { vec![0u8; n as usize] };
        let mut req = Request::null();
        // SAFETY: `buf` holds n bytes on every rank and outlives the wait.
        check(
            unsafe { ffi::MPI_Ibcast(buf.as_mut_ptr().cast::<c_void>(), n, ffi::RSMPI_UINT8_T, 0, self.0, &mut req.0) },
            "MPI_Ibcast",
        )?;
        req.wait()?;
        Ok(buf)
    }
}

/// A pending non-blocking operation. Must be completed ([`Request::wait`]) before its buffer
/// is reused or freed.
#[derive(Debug)]
pub(crate) struct Request(ffi::MPI_Request);

// SAFETY: a request handle may be tested from any thread under MPI_THREAD_MULTIPLE.
unsafe impl Send for Request {}

impl Request {
    fn null() -> Request {
        // SAFETY: reading a handle constant.
        Request(unsafe { ffi::RSMPI_REQUEST_NULL })
    }

    /// True once the operation has completed (then the request is spent).
    pub(crate) fn test(&mut self) -> Result<bool> {
        let mut flag: c_int = 0;
        // SAFETY: a live (or null) request; status ignored.
        check(unsafe { ffi::MPI_Test(&mut self.0, &mut flag, ffi::RSMPI_STATUS_IGNORE) }, "MPI_Test")?;
        Ok(flag != 0)
    }

    /// Waits for completion, yielding the CPU between tests.
    pub(crate) fn wait(&mut self) -> Result<()> {
        let mut idle = Idle::new();
        while !self.test()? {
            idle.pause();
        }
        Ok(())
    }
}

/// A matched message, received with [`Message::receive_start`].
#[derive(Debug)]
pub(crate) struct Message(ffi::MPI_Message);

impl Message {
    /// Starts receiving the message into `buf` (`MPI_Imrecv`), which must be exactly the
    /// message's size, and returns the request. Unlike a blocking `MPI_Mrecv`, which spins
    /// in MPI until the sender has delivered every byte, the caller may test the request and
    /// yield in between, leaving the core to the ranks that must progress the transfer.
    ///
    /// # Safety
    /// `buf` must stay alive, unmoved and untouched until the request completes (a `Vec`'s
    /// heap buffer does not move with the `Vec`).
    pub(crate) unsafe fn receive_start(mut self, buf: &mut [u8]) -> Result<Request> {
        let n = count(buf.len(), "a received message")?;
        let mut req = Request::null();
        // SAFETY: buf is valid for n bytes, the message's size, and outlives the request
        // (the caller's contract).
        let rc = unsafe {
            ffi::MPI_Imrecv(buf.as_mut_ptr().cast::<c_void>(), n, ffi::RSMPI_UINT8_T, &mut self.0, &mut req.0)
        };
        check(rc, "MPI_Imrecv")?;
        Ok(req)
    }
}

/// Backing off while waiting on MPI: spin briefly (latency), then yield for a moment, then
/// sleep in naps that double up to 1 ms (ranks often outnumber cores; a server waits for
/// batches most of the time, and a client ring of several batches hides a millisecond).
pub(crate) struct Idle {
    polls: u32,
    since: Option<Instant>,
    nap: Duration,
}

impl Idle {
    pub(crate) fn new() -> Idle {
        Idle { polls: 0, since: None, nap: Duration::from_micros(20) }
    }

    pub(crate) fn pause(&mut self) {
        self.polls += 1;
        if self.polls < 16 {
            std::hint::spin_loop();
            return;
        }
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() < Duration::from_micros(200) {
            std::thread::yield_now();
        } else {
            std::thread::sleep(self.nap);
            self.nap = (self.nap * 2).min(Duration::from_millis(1));
        }
    }
}
