//! The store's own runtime: connections belong to the runtime that opened
//! them, so queries run on one that lives as long as the store, whatever
//! runtime (or thread) the caller is on.

use std::sync::Arc;

use integration_core::{Error, ErrorKind, Result};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A runtime on a thread of its own, stopped when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct DatabaseRuntime {
    handle: Handle,
    _stop: Arc<Stop>,
}

/// Tells the runtime's thread to stop, when dropped.
struct Stop(Option<oneshot::Sender<()>>);

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
    }
}

impl DatabaseRuntime {
    pub(crate) fn start() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("integrations-postgres")
            .enable_all()
            .build()
            .map_err(|error| {
                Error::new(ErrorKind::Storage, "cannot start the PostgreSQL runtime").with_source(error)
            })?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("integrations-postgres".to_owned())
            // The runtime is dropped here, off every async context.
            .spawn(move || runtime.block_on(async move { drop(stopped.await) }))
            .map_err(|error| Error::new(ErrorKind::Storage, "cannot start the PostgreSQL thread").with_source(error))?;
        Ok(Self {
            handle,
            _stop: Arc::new(Stop(Some(stop))),
        })
    }

    /// Starts `task` on this runtime; it ends when the store does.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        drop(self.handle.spawn(task));
    }

    /// Runs `task` on this runtime and waits for it from the caller's.
    pub(crate) async fn run<T: Send + 'static>(&self, task: impl Future<Output = T> + Send + 'static) -> Result<T> {
        self.handle.spawn(task).await.map_err(|error| {
            if error.is_panic() {
                std::panic::resume_unwind(error.into_panic());
            }
            Error::new(ErrorKind::Storage, "the PostgreSQL runtime stopped")
        })
    }
}
