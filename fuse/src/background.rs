//! A named background thread that loops until its owner drops it: the loop body sleeps with
//! [`StopSignal::sleep`], which returns early (and says so) when the owner stops it, and
//! dropping the [`Background`] stops and joins the thread. Used by the live view's refresher
//! and the counters writer.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use smdfs::sync::{lock, wait_while};

/// What the thread sleeps on: set once, when its owner stops it.
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    /// Sleeps up to `d`; true if the thread was stopped (now or before).
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        *wait_while(&self.wake, lock(&self.stopped), d, |s| !*s)
    }
}

/// A running background thread; dropping it stops and joins the thread.
#[derive(Debug)]
pub(crate) struct Background {
    signal: Arc<StopSignal>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Starts `body` on a thread named `name`; `body` returns when it is done or stopped.
    pub(crate) fn spawn(name: &str, body: impl FnOnce(&StopSignal) + Send + 'static) -> std::io::Result<Background> {
        let signal = Arc::new(StopSignal::default());
        let s = Arc::clone(&signal);
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || body(&s))?;
        Ok(Background { signal, thread: Some(thread) })
    }

    /// True once the thread's body has returned.
    pub(crate) fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        *lock(&self.signal.stopped) = true;
        self.signal.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
