//! The prefetch pipeline behind the loader: worker threads read bins ahead in a given
//! order into a bounded window and hand them over in that order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::error::{Error, Result};
use crate::fork::Threads;
use crate::sync::lock;

struct PipeState<X> {
    /// Next position in the bin order a worker claims.
    next: usize,
    /// Bins the consumer has taken.
    consumed: usize,
    done: BTreeMap<usize, Result<Vec<X>>>,
}

struct PipeShared<X> {
    state: Mutex<PipeState<X>>,
    ready: Condvar,
    space: Condvar,
    stop: AtomicBool,
}

/// Background workers that process bins in a fixed order, at most `depth` bins ahead of the
/// consumer, and hand results back in that order whatever order they finish in.
pub(super) struct Pipeline<X> {
    shared: Arc<PipeShared<X>>,
    bins: usize,
    /// The workers (absent in a forked child: every call there is `Error::Forked`).
    threads: Threads,
}

impl<X: Send + 'static> Pipeline<X> {
    /// Starts `threads` workers reading the bins of `order` ahead, at most `depth` waiting.
    pub(super) fn start<S, W>(inner: Arc<S>, order: Vec<usize>, threads: usize, depth: usize, work: W) -> Result<Self>
    where
        S: Send + Sync + 'static,
        W: Fn(&S, usize) -> Result<Vec<X>> + Send + Sync + 'static,
    {
        let shared = Arc::new(PipeShared {
            state: Mutex::new(PipeState { next: 0, consumed: 0, done: BTreeMap::new() }),
            ready: Condvar::new(),
            space: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let bins = order.len();
        let order = Arc::new(order);
        let work = Arc::new(work);
        let depth = depth.max(1);
        let mut pipe = Pipeline { shared, bins, threads: Threads::new("split-records prefetch") };
        for t in 0..threads.max(1) {
            let (sh, inner, order, work) =
                (Arc::clone(&pipe.shared), Arc::clone(&inner), Arc::clone(&order), Arc::clone(&work));
            let h = std::thread::Builder::new()
                .name(format!("smdfs-split-{t}"))
                .spawn(move || loop {
                    let s = {
                        let mut st = lock(&sh.state);
                        while !sh.stop.load(Ordering::Acquire)
                            && st.next < order.len()
                            && st.next >= st.consumed + depth
                        {
                            st = crate::sync::wait(&sh.space, st);
                        }
                        if sh.stop.load(Ordering::Acquire) || st.next >= order.len() {
                            return;
                        }
                        st.next += 1;
                        st.next - 1
                    };
                    let b = order[s];
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&inner, b)))
                        .unwrap_or_else(|_| Err(Error::thread(format!("prefetch of bin {b}"), "panicked")));
                    lock(&sh.state).done.insert(s, r);
                    sh.ready.notify_all();
                })
                .map_err(|e| Error::thread("split prefetch", format!("cannot start: {e}")))?;
            pipe.threads.push(h);
        }
        Ok(pipe)
    }
}

impl<X> Pipeline<X> {
    /// The next bin's result in order; `None` after the last.
    pub(super) fn next_bin(&mut self) -> Option<Result<Vec<X>>> {
        // In a forked child no worker fills bins (and one may have held the lock at the fork).
        if let Err(e) = self.threads.check() {
            return Some(Err(e));
        }
        let mut st = lock(&self.shared.state);
        if st.consumed >= self.bins {
            return None;
        }
        loop {
            let c = st.consumed;
            if let Some(r) = st.done.remove(&c) {
                st.consumed += 1;
                drop(st);
                self.shared.space.notify_all();
                return Some(r);
            }
            st = crate::sync::wait(&self.shared.ready, st);
        }
    }
}

impl<X> Drop for Pipeline<X> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if self.threads.origin().forked() {
            self.threads.join_all();
            return;
        }
        {
            let _st = lock(&self.shared.state);
            self.shared.space.notify_all();
        }
        self.threads.join_all();
    }
}
