//! Serving on every core: one single-threaded runtime per worker thread,
//! each accepting on its own socket.
//!
//! A request then runs start to end on the thread that accepted its
//! connection, with the upstream connections that thread's runtime drives
//! (see [`HttpClient::with_pool_per_thread`]): no task hops between threads
//! and no cross-thread wake-ups, which a work-stealing runtime pays on every
//! proxied request.
//!
//! [`HttpClient::with_pool_per_thread`]: integrations::http::HttpClient::with_pool_per_thread

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::pin::pin;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use hyper_util::rt::TokioTimer;
use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::{AppState, Gateway};

mod front;
mod rewind;

/// Entry point for the fuzz target in `fuzz/`: the front's request-head
/// parser, fed whatever bytes a client could send.
#[doc(hidden)]
pub fn fuzz_request_head(bytes: &[u8]) {
    let mut presented = Vec::new();
    front::parse_for_fuzzing(bytes, &mut presented);
}

/// How connections are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// How long a client has to send a request's head; a keep-alive
    /// connection idle this long between requests is closed too.
    pub header_read_timeout: Duration,
    /// How long a client has to send the rest of a proxied request's body
    /// once its head is read; past it the request is answered 408 and the
    /// connection closed.
    pub body_read_timeout: Duration,
    /// The most connections one worker serves at once. At the cap it
    /// accepts no more until one closes: new ones wait in the listening
    /// socket's backlog (1,024), then the kernel refuses them.
    pub max_connections: usize,
    /// At shutdown, how long requests in flight may take to finish; what
    /// is left then is closed.
    pub shutdown_grace: Duration,
    /// Whether the front answers the proxy requests it reads whole (the
    /// fast path). Off, hyper answers every request: slower, the same
    /// bytes on the wire, which the tests compare.
    pub fast_path: bool,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 4096,
            shutdown_grace: Duration::from_secs(30),
            fast_path: true,
        }
    }
}

/// The listening sockets, one per worker, all on one address.
///
/// On Linux each worker has its own socket (`SO_REUSEPORT`), and the kernel
/// spreads new connections over them; elsewhere the workers share one.
#[derive(Debug)]
pub struct Listeners {
    sockets: Vec<std::net::TcpListener>,
    address: SocketAddr,
}

impl Listeners {
    /// Binds `workers` sockets to `address`. With port 0, the port the
    /// first one got is used for the others.
    pub fn bind(address: SocketAddr, workers: NonZeroUsize) -> io::Result<Self> {
        let first = listen(address)?;
        let address = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..workers.get() {
            sockets.push(if cfg!(target_os = "linux") {
                listen(address)?
            } else {
                sockets[0].try_clone()?
            });
        }
        Ok(Self { sockets, address })
    }

    /// The address bound, with the port the system chose for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// How many workers will serve.
    pub fn workers(&self) -> usize {
        self.sockets.len()
    }
}

fn listen(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    #[cfg(target_os = "linux")]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Serves `state` with one worker thread per listening socket until
/// `shutdown` completes, then lets every worker finish its requests in
/// flight. Blocks the calling thread, which waits for `shutdown`.
pub fn serve_on_workers(
    listeners: Listeners,
    state: Arc<AppState>,
    settings: ConnectionSettings,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let app = Gateway::new(state);
    let (stop, stopped) = watch::channel(false);
    let (exited, mut worker_exited) = mpsc::unbounded_channel::<()>();
    let mut workers = Vec::with_capacity(listeners.sockets.len());
    for (index, socket) in listeners.sockets.into_iter().enumerate() {
        let app = app.clone();
        let mut stopped = stopped.clone();
        let exited = ExitNotice(exited.clone());
        let worker = thread::Builder::new()
            .name(format!("integrations-worker-{index}"))
            .spawn(move || -> io::Result<()> {
                let _exited = exited;
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(socket)?;
                    serve_worker(listener, app, settings, async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    })
                    .await
                })
            })?;
        workers.push(worker);
    }
    drop(exited);
    let signals = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    signals.block_on(async {
        tokio::select! {
            () = shutdown => {}
            // A worker that stopped on its own (an error) stops the rest.
            _ = worker_exited.recv() => {}
        }
    });
    let _ = stop.send(true);
    let mut outcome = Ok(());
    for worker in workers {
        let result = worker
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("a worker thread panicked")));
        if outcome.is_ok() {
            outcome = result;
        }
    }
    outcome
}

/// Serves HTTP/1.1 connections from `listener` until `stop` completes, then
/// waits for every connection to finish its request in flight. Proxy
/// requests are answered by the [`front`], the rest by hyper.
pub(crate) async fn serve_worker(
    listener: TcpListener,
    app: Gateway,
    settings: ConnectionSettings,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let app = app.with_body_read_timeout(settings.body_read_timeout);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        // Slow clients do not hold connections open for ever.
        .header_read_timeout(settings.header_read_timeout)
        // Head and small body copied into one buffer: one iovec per write,
        // cheaper on loopback than gathering them (a few % faster).
        .writev(false);
    // Set at shutdown; every connection holds a receiver until it ends.
    let (stop_connections, connection_stop) = watch::channel(false);
    let connections = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let mut stop = pin!(stop);
    loop {
        // At the cap, nothing is accepted until a connection ends.
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    // Out of file descriptors and the like: wait for some
                    // to be released rather than spin.
                    tracing::error!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = front::serve(stream, app.clone(), http.clone(), settings, connection_stop.clone());
        tokio::spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    drop(listener);
    drop(connection_stop);
    stop_connections.send_replace(true);
    if tokio::time::timeout(settings.shutdown_grace, stop_connections.closed())
        .await
        .is_err()
    {
        // The runtime's end drops the connections still open.
        tracing::warn!(
            grace = ?settings.shutdown_grace,
            "requests still in flight at the end of the shutdown grace period are cut off"
        );
    }
    Ok(())
}

/// Errors of one connection, not of the listener.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Tells the waiting thread that a worker ended, however it ended.
struct ExitNotice(mpsc::UnboundedSender<()>);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}
