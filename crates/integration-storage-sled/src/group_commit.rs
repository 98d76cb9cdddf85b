//! Durable writes by group commit, without sled's `flush_async`.
//!
//! sled 0.34's `flush_async` runs a blocking flush on sled's own I/O thread
//! pool, whose flushes wait for log buffer writes queued on that same pool.
//! With enough concurrent flushes every pool thread waits and no write ever
//! runs: the store hangs for good (sled issues #1308, #1241, #1357).
//!
//! Here one thread per database, ours and outside that pool, makes writes
//! durable: writers queue a waiter once their write is in sled, the thread
//! takes every queued waiter, calls the blocking `Db::flush` once, and wakes
//! them all with its outcome. A flush that starts after a waiter was queued
//! covers that waiter's write, and writers arriving during a flush are
//! batched into the next one.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(), sled::Error>>;

/// The flusher thread of one database; stops and joins when dropped.
pub(crate) struct GroupCommit {
    queue: Arc<Queue>,
    flusher: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Queue {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    waiting: Vec<Waiter>,
    closing: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A waiter list stays valid whatever panicked while holding it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a write could not be made durable.
#[derive(Debug)]
pub(crate) enum FlushError {
    /// sled's flush failed.
    Sled(sled::Error),
    /// The flusher thread is gone.
    Stopped,
}

impl GroupCommit {
    /// Starts the flusher thread for `db`.
    pub(crate) fn start(db: sled::Db) -> std::io::Result<Self> {
        let queue = Arc::new(Queue::default());
        let flusher = std::thread::Builder::new()
            .name("integrations-sled-flush".to_owned())
            .spawn({
                let queue = Arc::clone(&queue);
                move || flush_until_closed(&db, &queue)
            })?;
        Ok(Self {
            queue,
            flusher: Some(flusher),
        })
    }

    /// Returns once every write this task made before calling it is durable.
    pub(crate) async fn flush(&self) -> Result<(), FlushError> {
        let (waiter, flushed) = oneshot::channel();
        {
            let mut state = self.queue.lock();
            if state.closing {
                return Err(FlushError::Stopped);
            }
            state.waiting.push(waiter);
        }
        self.queue.wake.notify_one();
        match flushed.await {
            Ok(outcome) => outcome.map_err(FlushError::Sled),
            Err(_) => Err(FlushError::Stopped),
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.queue.lock().closing = true;
        self.queue.wake.notify_one();
        if let Some(flusher) = self.flusher.take() {
            // The thread holds a handle to the database: joining it releases
            // the directory's lock before the last storage handle is gone.
            let _ = flusher.join();
        }
    }
}

/// Marks the queue closed when the flusher thread ends, by return or by
/// panic, so that no writer waits on a thread that is gone.
struct CloseOnExit<'a>(&'a Queue);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.closing = true;
        // Dropped senders answer their writers with `Stopped`.
        state.waiting.clear();
    }
}

fn flush_until_closed(db: &sled::Db, queue: &Queue) {
    let _close = CloseOnExit(queue);
    loop {
        let batch = {
            let mut state = queue.lock();
            while state.waiting.is_empty() && !state.closing {
                state = queue.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
            if state.waiting.is_empty() {
                return;
            }
            std::mem::take(&mut state.waiting)
        };
        let outcome = db.flush().map(drop);
        for waiter in batch {
            // A waiter whose task was cancelled has nobody to tell.
            let _ = waiter.send(outcome.clone());
        }
    }
}
