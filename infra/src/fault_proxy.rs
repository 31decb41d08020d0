//! A TCP proxy that injects network faults between a service and its broker
//! or database.
//!
//! Kernel tools such as `tc netem` or iptables need privileges and are not
//! available on every machine or CI runner, and they act on whole interfaces
//! rather than on one link. Putting this proxy in front of nats-server or
//! PostgreSQL and pointing the service at it gives the same faults from
//! inside the project: added latency, a silent partition, and dropped
//! connections, switched at run time through a [`FaultHandle`].
//!
//! The fault is read by the copy loops on every chunk, so a change applies
//! to open connections as well as new ones:
//!
//! - [`Fault::Latency`] delays every chunk, each direction on its own,
//!   keeping order.
//! - [`Fault::LateReplies`] delays only what the upstream sends: the request
//!   arrives and is acted on at once, its answer comes too late for a
//!   caller's deadline (the unknown outcome a timeout leaves).
//! - [`Fault::Blackhole`] stops reading from both sides: a chunk already read
//!   is held, never delivered, and the kernel buffers fill up until the
//!   senders' writes block, as in a network partition. Connections accepted
//!   meanwhile are not passed on upstream. No side sees an error. When the
//!   fault changes, every connection that was blackholed is reset rather
//!   than resumed: a real partition that outlasts the peers' timeouts ends
//!   that way, and it is the reconnect path that a test wants to exercise.
//! - [`Fault::Reset`] resets every open connection (RST, both sides) and
//!   every new one as soon as it is accepted.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The most read from a socket at once.
const CHUNK_SIZE: usize = 16 * 1024;
/// Chunks in flight per direction under latency. Bounded so that a slow
/// reader pushes back on the sender instead of the proxy buffering without
/// limit.
const IN_FLIGHT_CHUNKS: usize = 64;
/// Pause after a failed accept (such as too many open files) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What the proxy does to the traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Pass everything through.
    #[default]
    None,
    /// Deliver every chunk, in each direction, this much later.
    Latency(Duration),
    /// Deliver what the upstream sends this much later; pass the client's
    /// bytes at once.
    LateReplies(Duration),
    /// Forward nothing and report nothing; reset the affected connections
    /// once the fault changes.
    Blackhole,
    /// Reset open connections now and new ones as they arrive.
    Reset,
}

/// Sets the fault of a [`FaultProxy`]; cheap to clone and usable after the
/// proxy is gone (it then does nothing).
#[derive(Clone, Debug)]
pub struct FaultHandle {
    state: watch::Sender<State>,
}

impl FaultHandle {
    pub fn set(&self, fault: Fault) {
        // `send_modify` stores the value even when no connection listens.
        self.state.send_modify(|state| {
            state.fault = fault;
            if fault == Fault::Reset {
                state.resets += 1;
            }
        });
    }

    pub fn get(&self) -> Fault {
        self.state.borrow().fault
    }
}

/// What the copy loops watch.
#[derive(Clone, Copy, Debug, Default)]
struct State {
    fault: Fault,
    /// How often [`Fault::Reset`] was set. A connection compares it with the
    /// count at its accept, so that a reset lifted again before the
    /// connection's task ran still ends it.
    resets: u64,
}

/// A TCP proxy on 127.0.0.1 in front of one upstream address. Dropping it
/// stops accepting and closes every connection, as [`stop`](Self::stop)
/// does, without waiting.
pub struct FaultProxy {
    addr: SocketAddr,
    handle: FaultHandle,
    open: Arc<AtomicUsize>,
    cancel: CancellationToken,
    /// Returns `None` once the accept loop and every connection have ended:
    /// each holds a sender.
    done: mpsc::Receiver<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on a free port. Must be called within a
    /// Tokio runtime, which runs the proxy.
    pub fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        Self::start_on(0, upstream)
    }

    /// Starts a proxy to `upstream` on 127.0.0.1:`listen_port` (0 for a free
    /// port), such as the port a service was configured with.
    pub fn start_on(listen_port: u16, upstream: SocketAddr) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().context("a fault proxy needs a Tokio runtime")?;
        // Bound synchronously so that the port accepts connections as soon as
        // this returns.
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, listen_port))
            .with_context(|| format!("binding the fault proxy to 127.0.0.1:{listen_port}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let (state, _) = watch::channel(State::default());
        let open = Arc::new(AtomicUsize::new(0));
        let cancel = CancellationToken::new();
        let (alive, done) = mpsc::channel(1);
        runtime.spawn(accept_loop(
            listener,
            upstream,
            state.subscribe(),
            Arc::clone(&open),
            cancel.clone(),
            alive,
        ));
        Ok(Self {
            addr,
            handle: FaultHandle { state },
            open,
            cancel,
            done,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn handle(&self) -> FaultHandle {
        self.handle.clone()
    }

    pub fn set(&self, fault: Fault) {
        self.handle.set(fault);
    }

    pub fn fault(&self) -> Fault {
        self.handle.get()
    }

    /// Client connections currently open through the proxy.
    pub fn connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Stops accepting, resets every connection and waits until the port and
    /// all sockets are closed, so that the port can be bound again.
    pub async fn stop(&mut self) {
        self.cancel.cancel();
        while self.done.recv().await.is_some() {}
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Counts a connection as open for as long as it lives.
struct Open {
    open: Arc<AtomicUsize>,
    _alive: mpsc::Sender<()>,
}

impl Open {
    fn new(open: &Arc<AtomicUsize>, alive: &mpsc::Sender<()>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self {
            open: Arc::clone(open),
            _alive: alive.clone(),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    state: watch::Receiver<State>,
    open: Arc<AtomicUsize>,
    cancel: CancellationToken,
    alive: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else {
            tokio::time::sleep(ACCEPT_BACKOFF).await;
            continue;
        };
        let at_accept = *state.borrow();
        if at_accept.fault == Fault::Reset {
            abort(client);
            continue;
        }
        let open = Open::new(&open, &alive);
        let connection = serve(client, upstream, state.clone(), at_accept.resets, cancel.clone(), open);
        tokio::spawn(connection);
    }
    // Closed before `alive` goes, so that `stop` returns with the port free.
    drop(listener);
}

/// One client connection, from accept to close.
async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut state: watch::Receiver<State>,
    resets: u64,
    cancel: CancellationToken,
    open: Open,
) {
    let blackholed = AtomicBool::new(false);
    let relay_state = state.clone();
    let mut server = None;
    let clean = tokio::select! {
        () = cancel.cancelled() => false,
        () = until_reset(&mut state, resets, &blackholed) => false,
        relayed = relay(&mut client, &mut server, upstream, relay_state, &blackholed) => relayed.is_ok(),
    };
    // A clean end is both sides having closed their sending halves; anything
    // else ends the connection for both. Closed before `open` goes, so that
    // `stop` returns with every socket closed.
    if clean {
        drop((client, server));
    } else {
        abort(client);
        if let Some(server) = server {
            abort(server);
        }
    }
    drop(open);
}

/// Returns when the connection must be reset: on [`Fault::Reset`], or on any
/// change after the connection was blackholed.
async fn until_reset(state: &mut watch::Receiver<State>, resets: u64, blackholed: &AtomicBool) {
    loop {
        let current = *state.borrow_and_update();
        if current.resets != resets {
            return;
        }
        match current.fault {
            Fault::Reset => return,
            Fault::Blackhole => blackholed.store(true, Ordering::Relaxed),
            // Also set by a copy loop that saw a blackhole this loop missed.
            _ if blackholed.load(Ordering::Relaxed) => return,
            _ => {}
        }
        if state.changed().await.is_err() {
            // The proxy is gone; its cancellation ends the connection.
            std::future::pending::<()>().await;
        }
    }
}

/// Dials the upstream and copies both ways until both sides have closed.
async fn relay(
    client: &mut TcpStream,
    server: &mut Option<TcpStream>,
    upstream: SocketAddr,
    state: watch::Receiver<State>,
    blackholed: &AtomicBool,
) -> std::io::Result<()> {
    // A connection that arrives during a blackhole never reaches upstream.
    gate(&state, Direction::Request, blackholed).await;
    let server = server.insert(TcpStream::connect(upstream).await?);
    // The proxy must not add Nagle delays of its own to what it measures.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = server.split();
    tokio::try_join!(
        pump(client_read, server_write, Direction::Request, &state, blackholed),
        pump(server_read, client_write, Direction::Reply, &state, blackholed),
    )?;
    Ok(())
}

/// Copies one direction. Reading and writing are separate so that under
/// latency every chunk is delayed from the moment it arrived, rather than
/// chunks queueing behind each other's delays.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    direction: Direction,
    state: &watch::Receiver<State>,
    blackholed: &AtomicBool,
) -> std::io::Result<()> {
    let (queue, mut queued) = mpsc::channel::<(Vec<u8>, Instant)>(IN_FLIGHT_CHUNKS);
    let read = async move {
        loop {
            let mut chunk = vec![0; CHUNK_SIZE];
            let n = from.read(&mut chunk).await?;
            if n == 0 {
                // Dropping the queue lets the writer finish and pass the end
                // of stream on.
                return Ok(());
            }
            chunk.truncate(n);
            let delay = gate(state, direction, blackholed).await;
            if queue.send((chunk, Instant::now() + delay)).await.is_err() {
                return Ok(());
            }
        }
    };
    let write = async {
        while let Some((chunk, due)) = queued.recv().await {
            tokio::time::sleep_until(due).await;
            // Chunks still in flight when a blackhole starts stay held too.
            gate(state, direction, blackholed).await;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    tokio::try_join!(read, write)?;
    Ok(())
}

/// Which way a chunk goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// Client to upstream.
    Request,
    /// Upstream to client.
    Reply,
}

/// The delay in force for a chunk going `direction`. Under
/// [`Fault::Blackhole`] or [`Fault::Reset`] it never returns: the connection
/// waits, holding its chunk, until [`until_reset`] ends it.
async fn gate(state: &watch::Receiver<State>, direction: Direction, blackholed: &AtomicBool) -> Duration {
    // Copied out: the borrow locks the channel and must not be held.
    let current = state.borrow().fault;
    match current {
        Fault::None => Duration::ZERO,
        Fault::Latency(delay) => delay,
        Fault::LateReplies(delay) if direction == Direction::Reply => delay,
        Fault::LateReplies(_) => Duration::ZERO,
        Fault::Blackhole | Fault::Reset => {
            if current == Fault::Blackhole {
                blackholed.store(true, Ordering::Relaxed);
            }
            std::future::pending().await
        }
    }
}

/// Closes with a TCP reset, as a crashed peer or a middlebox dropping state
/// does: zero linger makes the close send RST and discard unsent data, so
/// the other side gets an error rather than a clean end of stream.
fn abort(stream: TcpStream) {
    // Should it fail, the drop still closes, with a FIN.
    let _ = stream.set_zero_linger();
    drop(stream);
}
