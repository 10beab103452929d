//! The machinery both front ends share: one acceptor thread and N
//! event-loop threads, generic over the protocol a connection speaks.
//!
//! # Threads
//!
//! The acceptor owns the listener on its own `mio::Poll`. It accepts every
//! pending connection, turns on `TCP_NODELAY`, and hands each socket to the
//! next event loop round-robin (a channel message plus a `mio::Waker`). A
//! dedicated acceptor keeps the loops free of a shared listener (no
//! thundering herd, no accept-fairness games) and makes stopping simple:
//! stop the acceptor and the port is closed while the loops drain.
//!
//! Each event loop owns its connections outright (a slab indexed by
//! `mio::Token`), registers every socket once for read and write readiness
//! (edge-triggered) and remembers readiness itself, so interest never has to
//! be re-registered. A read shorter than the room offered counts as having
//! emptied the socket, as a WouldBlock would. After any event, message or
//! timer it *drives* the connection: read while the protocol wants input,
//! let the [`Session`] hand what it parsed to the application, write while
//! there is output (vectored), and repeat while that made progress. A read
//! budget and a write budget (bytes) per drive keep one busy client (a
//! large body coming in, a large response going out) from starving the
//! others; connections that spent a budget are driven again on the next turn
//! without blocking in `poll`.
//!
//! # Sessions and transports
//!
//! What a connection speaks is a [`Session`]: a sans-IO protocol state
//! machine (HTTP/1.1, HTTP/2 + gRPC) plus the glue that hands its requests
//! to the application and applies the answers that come back. A
//! [`Protocol`] opens one per accepted socket. Between the socket and the
//! session sits the transport: plain TCP, or a `rustls::ServerConnection`
//! (itself sans-IO) that the loop feeds ciphertext and drains plaintext
//! from. Sessions never see the difference.
//!
//! Answers come back from any thread through the loop's inbox; each names
//! its connection by slot and generation, so an answer for a connection
//! that has since closed (and whose slot was reused) is dropped. A message
//! posted from the loop's own thread (an answer computed while the loop was
//! handing a request over) does not wake the poller: the loop drains its
//! inbox after every pass anyway.
//!
//! # Closing
//!
//! A finished session's TLS `close_notify` and pending records are flushed
//! first. A connection that closes while its client may still be sending
//! (a refused body, a connection error) is then half-closed and drained for
//! a moment before the socket is dropped, so the client reads the error
//! instead of a reset. [`Loops::shutdown`] stops the acceptor, then asks
//! every loop to drain: each connection reads what its socket holds, its
//! session is told to shut down gracefully (answering what was received),
//! connections close as their sessions finish, and whatever remains at the
//! deadline is aborted.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::timers::Timers;

/// Token of each poller's waker; connection tokens are slab indexes.
const WAKER: Token = Token(usize::MAX);
/// Token of the listener in the acceptor's poller.
const LISTENER: Token = Token(0);
/// Reads per connection per drive before others get a turn.
const READ_BUDGET: usize = 16;
/// Bytes written per connection per drive before others get a turn.
const WRITE_BUDGET: usize = 1024 * 1024;
/// Most slices handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// How long a closing connection may take to flush and drain after its
/// session finished.
const LINGER: Duration = Duration::from_secs(2);
/// Pause after an accept error such as running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Inbox drains per loop turn before `poll` is consulted again.
const INBOX_ROUNDS: usize = 8;

/// A connection's protocol state machine plus its application glue, as an
/// event loop drives it. The I/O half mirrors the sans-IO protocol
/// objects (`recv_buf`/`handle_recv`, `poll_transmit`/`handle_write`,
/// `poll_timeout`/`handle_timeout`); the rest connects them to the
/// application.
pub(crate) trait Session: Send + 'static {
    /// What other threads post to this connection (answers).
    type Msg: Send + 'static;

    /// Room to read into.
    fn recv_buf(&mut self) -> &mut [u8];
    /// `n` bytes were read into [`Session::recv_buf`].
    fn handle_recv(&mut self, n: usize, now: Instant);
    /// The client closed its side.
    fn handle_eof(&mut self, now: Instant);
    /// Hands whatever the protocol parsed to the application, and applies
    /// answers the application produced meanwhile.
    fn dispatch(&mut self, now: Instant);
    /// A message posted to this connection.
    fn handle_msg(&mut self, msg: Self::Msg, now: Instant);
    /// Whether to read now.
    fn wants_read(&self) -> bool;
    /// Whether there is output.
    fn wants_write(&self) -> bool;
    /// The pending output, as slices for one vectored write.
    fn poll_transmit<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize;
    /// The first `n` bytes of the output were written.
    fn handle_write(&mut self, n: usize, now: Instant);
    /// When [`Session::handle_timeout`] is due.
    fn poll_timeout(&self) -> Option<Instant>;
    /// A deadline passed.
    fn handle_timeout(&mut self, now: Instant);
    /// A graceful close is coming: the socket is read once more first, and
    /// what that brings is to be answered as the last requests.
    fn prepare_shutdown(&mut self) {}
    /// Starts a graceful close.
    fn shutdown(&mut self, now: Instant);
    /// Closes at once, cancelling work in flight.
    fn abort(&mut self);
    /// Whether the socket can be closed.
    fn is_closed(&self) -> bool;
    /// Whether to half-close and drain before closing.
    fn wants_linger(&self) -> bool;
}

/// Opens sessions for accepted sockets: one per endpoint, shared by its
/// loops.
pub(crate) trait Protocol: Send + Sync + 'static {
    /// The per-connection state.
    type Session: Session;
    /// Names the endpoint in logs and thread names (`HTTP`, `gRPC`).
    const NAME: &'static str;

    /// A session for a connection accepted at `now`; `conn` lets the
    /// application post answers to it.
    fn open(&self, conn: ConnRef<MsgOf<Self>>, now: Instant) -> Self::Session;
}

/// The message type of a protocol's sessions.
pub(crate) type MsgOf<P> = <<P as Protocol>::Session as Session>::Msg;

/// Where and how an endpoint listens.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// Address to bind: an IP address or a host name.
    pub(crate) address: String,
    /// Port; 0 picks a free one.
    pub(crate) port: u16,
    /// Event-loop threads (at least 1).
    pub(crate) threads: usize,
    /// TLS, when the endpoint is encrypted.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
}

/// Messages an event loop receives from other threads.
pub(crate) enum LoopMsg<M> {
    /// A newly accepted socket to own.
    Accept(TcpStream),
    /// A message for the connection in `slot`, if it is still of
    /// `generation`.
    Conn {
        slot: usize,
        generation: u64,
        msg: M,
    },
    /// Drain until the deadline, then close everything and stop.
    Shutdown(Instant),
}

/// The inbox of one event loop: a channel plus the waker that gets the loop
/// to read it. Wakes are coalesced (one per batch of messages), and a
/// message posted by the loop's own thread does not wake it at all.
pub(crate) struct LoopInbox<M> {
    sender: mpsc::Sender<LoopMsg<M>>,
    waker: Waker,
    wake_pending: AtomicBool,
    owner: OnceLock<ThreadId>,
}

impl<M> LoopInbox<M> {
    fn new(sender: mpsc::Sender<LoopMsg<M>>, waker: Waker) -> LoopInbox<M> {
        LoopInbox {
            sender,
            waker,
            wake_pending: AtomicBool::new(false),
            owner: OnceLock::new(),
        }
    }

    /// Sends a message and wakes the loop unless a wake is already pending
    /// or the caller is the loop itself. A loop that has exited drops the
    /// message.
    pub(crate) fn post(&self, msg: LoopMsg<M>) {
        if self.sender.send(msg).is_err() {
            return;
        }
        if self.owner.get() == Some(&std::thread::current().id()) {
            return;
        }
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            // A failed wake means the poller is gone, i.e. the loop exited.
            let _ = self.waker.wake();
        }
    }

    /// Called by the loop before it drains its channel, so that any message
    /// sent afterwards wakes it again.
    fn clear_wake(&self) {
        self.wake_pending.store(false, Ordering::Release);
    }
}

/// A handle on one connection of one loop, for posting messages to it from
/// any thread.
pub(crate) struct ConnRef<M> {
    inbox: Arc<LoopInbox<M>>,
    slot: usize,
    generation: u64,
}

impl<M> Clone for ConnRef<M> {
    fn clone(&self) -> ConnRef<M> {
        ConnRef {
            inbox: Arc::clone(&self.inbox),
            slot: self.slot,
            generation: self.generation,
        }
    }
}

impl<M> ConnRef<M> {
    /// Posts `msg` to the connection; dropped if it has closed.
    pub(crate) fn post(&self, msg: M) {
        self.inbox.post(LoopMsg::Conn {
            slot: self.slot,
            generation: self.generation,
            msg,
        });
    }
}

/// Resolves an endpoint's address.
fn resolve(what: &str, address: &str, port: u16) -> io::Result<SocketAddr> {
    // `[::]` is how addresses are often written next to a port.
    let host = address.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot resolve {what} address '{address}': {e}"),
            )
        })?
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} address '{address}' resolves to nothing"),
            )
        })
}

/// Running loops of one endpoint. Dropping it stops them without a grace
/// period.
pub(crate) struct Loops<M: Send + 'static> {
    local_addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
    accept_waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    inboxes: Vec<Arc<LoopInbox<M>>>,
    workers: Vec<JoinHandle<()>>,
    name: &'static str,
}

impl<M: Send + 'static> Loops<M> {
    /// Binds the listener and starts the acceptor and event-loop threads.
    pub(crate) fn start<P>(endpoint: &Endpoint, protocol: Arc<P>) -> io::Result<Loops<M>>
    where
        P: Protocol,
        P::Session: Session<Msg = M>,
    {
        let addr = resolve(P::NAME, &endpoint.address, endpoint.port)?;
        let std_listener = std::net::TcpListener::bind(addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot bind {} port {addr}: {e}", P::NAME),
            )
        })?;
        std_listener.set_nonblocking(true)?;
        let local_addr = std_listener.local_addr()?;
        let listener = TcpListener::from_std(std_listener);
        let prefix = P::NAME.to_ascii_lowercase();

        let accept_poll = Poll::new()?;
        // From here on, an early return drops `loops`, which stops and
        // joins whatever was started.
        let mut loops = Loops {
            local_addr,
            acceptor: None,
            accept_waker: Arc::new(Waker::new(accept_poll.registry(), WAKER)?),
            stop: Arc::new(AtomicBool::new(false)),
            inboxes: Vec::new(),
            workers: Vec::new(),
            name: P::NAME,
        };
        for id in 0..endpoint.threads.max(1) {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKER)?;
            let (tx, rx) = mpsc::channel();
            let inbox = Arc::new(LoopInbox::new(tx, waker));
            let worker = EventLoop::new(
                poll,
                rx,
                inbox.clone(),
                protocol.clone(),
                endpoint.tls.clone(),
            );
            let thread = std::thread::Builder::new()
                .name(format!("{prefix}-loop-{id}"))
                .spawn(move || worker.run())?;
            loops.inboxes.push(inbox);
            loops.workers.push(thread);
        }

        let acceptor = Acceptor {
            poll: accept_poll,
            listener,
            loops: loops.inboxes.clone(),
            next: 0,
            stop: loops.stop.clone(),
            name: P::NAME,
        };
        loops.acceptor = Some(
            std::thread::Builder::new()
                .name(format!("{prefix}-accept"))
                .spawn(move || acceptor.run())?,
        );
        Ok(loops)
    }

    /// The address the listener is bound to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The number of event loops.
    pub(crate) fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Stops accepting, lets sessions finish gracefully until `deadline`,
    /// then closes every connection and joins the threads.
    pub(crate) fn shutdown(&mut self, deadline: Instant) {
        if let Some(acceptor) = self.acceptor.take() {
            self.stop.store(true, Ordering::Release);
            // A failed wake means the acceptor's poller is gone: it has
            // exited.
            let _ = self.accept_waker.wake();
            if acceptor.join().is_err() {
                log::error!("{} acceptor thread panicked", self.name);
            }
        }
        for inbox in self.inboxes.drain(..) {
            inbox.post(LoopMsg::Shutdown(deadline));
        }
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                log::error!("{} event-loop thread panicked", self.name);
            }
        }
    }
}

impl<M: Send + 'static> Drop for Loops<M> {
    fn drop(&mut self) {
        self.shutdown(Instant::now());
    }
}

/// Accepts connections and deals them out to the event loops.
struct Acceptor<M> {
    poll: Poll,
    listener: TcpListener,
    loops: Vec<Arc<LoopInbox<M>>>,
    next: usize,
    stop: Arc<AtomicBool>,
    name: &'static str,
}

impl<M> Acceptor<M> {
    fn run(mut self) {
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut self.listener, LISTENER, Interest::READABLE)
        {
            log::error!("cannot register the {} listener: {e}", self.name);
            return;
        }
        let mut events = Events::with_capacity(16);
        while !self.stop.load(Ordering::Acquire) {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("{} acceptor poll failed: {e}", self.name);
                return;
            }
            if events.iter().any(|e| e.token() == LISTENER) {
                self.accept_all();
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        log::debug!("TCP_NODELAY on {peer}: {e}");
                    }
                    let inbox = &self.loops[self.next % self.loops.len()];
                    self.next = self.next.wrapping_add(1);
                    inbox.post(LoopMsg::Accept(stream));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    // Typically out of file descriptors; pending connections
                    // wait in the backlog meanwhile. Edge-triggered
                    // readiness will not fire again for them, so retry here.
                    log::warn!("{} accept failed: {e}", self.name);
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
            }
        }
    }
}

/// How a connection's bytes travel.
enum Transport {
    Plain,
    Tls(Box<rustls::ServerConnection>),
}

/// Where a closing connection stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Still running.
    No,
    /// The session finished; TLS output is being flushed.
    Flushing,
    /// Half-closed; the client's remaining input is read and dropped.
    Lingering,
}

/// One accepted connection in an event loop.
struct Conn<S> {
    stream: TcpStream,
    transport: Transport,
    session: S,
    generation: u64,
    readable: bool,
    writable: bool,
    /// The poller reported the peer's FIN or a socket error. That is
    /// reported once, so from then on reads go on until one says so.
    read_closed: bool,
    /// The peer closed its side or the socket failed: nothing more to read.
    eof: bool,
    /// Earliest deadline queued in the timer heap for this connection.
    timer: Option<Instant>,
    closing: Closing,
    /// When a closing connection is dropped whatever its state.
    close_by: Option<Instant>,
}

/// What one drive of a connection may still do before others get a turn.
struct Budget {
    /// Socket reads.
    reads: usize,
    /// Bytes written.
    bytes_out: usize,
}

/// What driving a connection left it as.
enum Driven {
    Open,
    Close,
}

/// One event-loop thread.
struct EventLoop<P: Protocol> {
    poll: Poll,
    inbox_rx: mpsc::Receiver<LoopMsg<MsgOf<P>>>,
    inbox: Arc<LoopInbox<MsgOf<P>>>,
    protocol: Arc<P>,
    tls: Option<Arc<rustls::ServerConfig>>,
    conns: Vec<Option<Conn<P::Session>>>,
    free: Vec<usize>,
    next_generation: u64,
    timers: Timers,
    /// Connections to drive again this turn (a budget ran out).
    again: Vec<usize>,
    draining: Option<Instant>,
    scratch: Vec<u8>,
}

impl<P: Protocol> EventLoop<P> {
    fn new(
        poll: Poll,
        inbox_rx: mpsc::Receiver<LoopMsg<MsgOf<P>>>,
        inbox: Arc<LoopInbox<MsgOf<P>>>,
        protocol: Arc<P>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> EventLoop<P> {
        EventLoop {
            poll,
            inbox_rx,
            inbox,
            protocol,
            tls,
            conns: Vec::new(),
            free: Vec::new(),
            next_generation: 0,
            timers: Timers::default(),
            again: Vec::new(),
            draining: None,
            scratch: vec![0; 16 * 1024],
        }
    }

    fn run(mut self) {
        // Posts from this thread need no wake: the inbox is drained after
        // every pass.
        let _ = self.inbox.owner.set(std::thread::current().id());
        let mut events = Events::with_capacity(256);
        let mut to_drive: Vec<usize> = Vec::new();
        loop {
            let now = Instant::now();
            let mut timeout = self.timers.next_in(now);
            if let Some(deadline) = self.draining {
                let left = deadline.saturating_duration_since(now);
                timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
            if !self.again.is_empty() {
                timeout = Some(Duration::ZERO);
            }
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                log::error!("{} event loop poll failed: {e}", P::NAME);
                self.close_all();
                return;
            }
            let now = Instant::now();
            to_drive.append(&mut self.again);
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                let slot = event.token().0;
                if let Some(Some(conn)) = self.conns.get_mut(slot) {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        conn.readable = true;
                    }
                    if event.is_read_closed() || event.is_error() {
                        conn.read_closed = true;
                    }
                    if event.is_writable() || event.is_write_closed() || event.is_error() {
                        conn.writable = true;
                    }
                    to_drive.push(slot);
                }
            }
            while let Some(due) = self.timers.pop_due(now) {
                if let Some(Some(conn)) = self.conns.get_mut(due.slot)
                    && conn.generation == due.generation
                    && conn.timer == Some(due.deadline)
                {
                    conn.timer = None;
                    if conn.closing == Closing::No {
                        conn.session.handle_timeout(now);
                    }
                    to_drive.push(due.slot);
                }
            }
            // Messages first (they may add connections and answers), then
            // the connections; answers computed while driving are posted
            // back to this inbox, so drain it again until it is quiet.
            for _ in 0..INBOX_ROUNDS {
                self.inbox.clear_wake();
                while let Ok(msg) = self.inbox_rx.try_recv() {
                    self.handle_msg(msg, now, &mut to_drive);
                }
                if to_drive.is_empty() {
                    break;
                }
                to_drive.sort_unstable();
                to_drive.dedup();
                for slot in to_drive.drain(..) {
                    self.drive(slot, now);
                }
            }
            if let Some(deadline) = self.draining {
                if self.conns.iter().all(Option::is_none) {
                    return;
                }
                if now >= deadline {
                    self.close_all();
                    return;
                }
            }
        }
    }

    fn handle_msg(&mut self, msg: LoopMsg<MsgOf<P>>, now: Instant, to_drive: &mut Vec<usize>) {
        match msg {
            LoopMsg::Accept(stream) => {
                if self.draining.is_some() {
                    return;
                }
                if let Some(slot) = self.add(stream, now) {
                    to_drive.push(slot);
                }
            }
            LoopMsg::Conn {
                slot,
                generation,
                msg,
            } => {
                if let Some(Some(conn)) = self.conns.get_mut(slot)
                    && conn.generation == generation
                    && conn.closing == Closing::No
                {
                    conn.session.handle_msg(msg, now);
                    to_drive.push(slot);
                }
            }
            LoopMsg::Shutdown(deadline) => {
                self.draining = Some(deadline);
                for slot in 0..self.conns.len() {
                    // What the client sent before the shutdown is read
                    // first, so that a request waiting in the socket is
                    // answered instead of lost with the connection. The
                    // read is tried whatever readiness says: one that
                    // finds nothing costs a WouldBlock.
                    if let Some(Some(conn)) = self.conns.get_mut(slot) {
                        conn.readable = true;
                        conn.session.prepare_shutdown();
                    }
                    self.drive(slot, now);
                    if let Some(Some(conn)) = self.conns.get_mut(slot)
                        && conn.closing == Closing::No
                    {
                        conn.session.shutdown(now);
                        to_drive.push(slot);
                    }
                }
            }
        }
    }

    fn add(&mut self, mut stream: TcpStream, now: Instant) -> Option<usize> {
        let transport = match &self.tls {
            None => Transport::Plain,
            Some(config) => match rustls::ServerConnection::new(Arc::clone(config)) {
                Ok(tls) => Transport::Tls(Box::new(tls)),
                Err(e) => {
                    log::warn!("cannot start TLS on a {} connection: {e}", P::NAME);
                    return None;
                }
            },
        };
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot register a {} connection: {e}", P::NAME);
            self.free.push(slot);
            return None;
        }
        self.next_generation += 1;
        let conn_ref = ConnRef {
            inbox: Arc::clone(&self.inbox),
            slot,
            generation: self.next_generation,
        };
        self.conns[slot] = Some(Conn {
            stream,
            transport,
            session: self.protocol.open(conn_ref, now),
            generation: self.next_generation,
            // Data may have arrived before registration; try at once.
            readable: true,
            writable: true,
            read_closed: false,
            eof: false,
            timer: None,
            closing: Closing::No,
            close_by: None,
        });
        Some(slot)
    }

    fn drive(&mut self, slot: usize, now: Instant) {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        let driven = if conn.closing == Closing::No {
            let mut budget = Budget {
                reads: READ_BUDGET,
                bytes_out: WRITE_BUDGET,
            };
            let driven = pump(conn, now, &mut budget);
            if (budget.reads == 0 && conn.readable && conn.session.wants_read())
                || (budget.bytes_out == 0 && conn.writable && conn.session.wants_write())
            {
                self.again.push(slot);
            }
            match driven {
                Driven::Open if conn.session.is_closed() => {
                    conn.closing = Closing::Flushing;
                    conn.close_by = Some(now + LINGER);
                    if let Transport::Tls(tls) = &mut conn.transport {
                        tls.send_close_notify();
                    }
                    close_step(conn, &mut self.scratch, now)
                }
                other => other,
            }
        } else {
            close_step(conn, &mut self.scratch, now)
        };
        match driven {
            Driven::Close => self.remove(slot),
            Driven::Open => {
                let deadline = match conn.closing {
                    Closing::No => conn.session.poll_timeout(),
                    _ => conn.close_by,
                };
                if let Some(deadline) = deadline
                    && conn.timer.is_none_or(|t| deadline < t)
                {
                    conn.timer = Some(deadline);
                    self.timers.push(deadline, slot, conn.generation);
                }
            }
        }
    }

    fn remove(&mut self, slot: usize) {
        if let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) {
            // Deregistering can only fail if the socket is already gone
            // from the poller; dropping it closes it either way.
            let _ = self.poll.registry().deregister(&mut conn.stream);
            conn.session.abort();
            self.free.push(slot);
        }
    }

    fn close_all(&mut self) {
        for slot in 0..self.conns.len() {
            self.remove(slot);
        }
    }
}

/// Reads, dispatches and writes until nothing more happens (or the read
/// budget is spent).
fn pump<S: Session>(conn: &mut Conn<S>, now: Instant, budget: &mut Budget) -> Driven {
    loop {
        let read = match conn.transport {
            Transport::Plain => read_plain(conn, now, &mut budget.reads),
            Transport::Tls(_) => read_tls(conn, now, &mut budget.reads),
        };
        let Ok(mut progressed) = read else {
            conn.session.abort();
            return Driven::Close;
        };
        conn.session.dispatch(now);
        let written = match conn.transport {
            Transport::Plain => write_plain(conn, now, &mut budget.bytes_out),
            Transport::Tls(_) => write_tls(conn, now, &mut budget.bytes_out),
        };
        match written {
            Ok(w) => progressed |= w,
            Err(()) => {
                conn.session.abort();
                return Driven::Close;
            }
        }
        if conn.session.is_closed() || !progressed {
            return Driven::Open;
        }
    }
}

/// Socket to session. `Err` means the socket failed.
fn read_plain<S: Session>(
    conn: &mut Conn<S>,
    now: Instant,
    budget: &mut usize,
) -> Result<bool, ()> {
    let mut progressed = false;
    while conn.readable && !conn.eof && conn.session.wants_read() && *budget > 0 {
        *budget -= 1;
        let buf = conn.session.recv_buf();
        let room = buf.len();
        if room == 0 {
            break;
        }
        match (&conn.stream).read(buf) {
            Ok(0) => {
                conn.eof = true;
                conn.session.handle_eof(now);
                progressed = true;
            }
            Ok(n) => {
                conn.session.handle_recv(n, now);
                progressed = true;
                // A short read emptied the socket, and bytes that arrive
                // later raise a new edge: the read that would only say
                // WouldBlock is skipped (a system call per request).
                if n < room && !conn.read_closed {
                    conn.readable = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
        conn.session.dispatch(now);
    }
    Ok(progressed)
}

/// Socket to rustls to session. `Err` means the socket or TLS failed.
fn read_tls<S: Session>(conn: &mut Conn<S>, now: Instant, budget: &mut usize) -> Result<bool, ()> {
    let Transport::Tls(tls) = &mut conn.transport else {
        return Ok(false);
    };
    let mut progressed = false;
    loop {
        // Plaintext rustls already holds goes first: reading more
        // ciphertext waits until the session took it.
        while conn.session.wants_read() {
            let buf = conn.session.recv_buf();
            if buf.is_empty() {
                break;
            }
            match tls.reader().read(buf) {
                Ok(0) => {
                    // close_notify: a clean end of the client's side.
                    if !conn.eof {
                        conn.eof = true;
                        conn.session.handle_eof(now);
                        progressed = true;
                    }
                    break;
                }
                Ok(n) => {
                    conn.session.handle_recv(n, now);
                    conn.session.dispatch(now);
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // The socket ended without close_notify.
                    if !conn.eof {
                        conn.eof = true;
                        conn.session.handle_eof(now);
                        progressed = true;
                    }
                    break;
                }
            }
        }
        if !(conn.readable && !conn.eof && tls.wants_read() && *budget > 0) {
            return Ok(progressed);
        }
        *budget -= 1;
        match tls.read_tls(&mut &conn.stream) {
            Ok(0) => {
                conn.eof = true;
                progressed = true;
                // Whatever plaintext is left is fed on the next round;
                // rustls then reports the unclean end.
                if tls.process_new_packets().is_err() {
                    return Err(());
                }
            }
            Ok(_) => {
                progressed = true;
                if let Err(e) = tls.process_new_packets() {
                    log::debug!("TLS error: {e}");
                    // rustls queued an alert saying why; send it, best
                    // effort, before the connection is dropped.
                    let _ = tls.write_tls(&mut &conn.stream);
                    return Err(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
        if conn.eof {
            // Feed what was decrypted before the end, then report it.
            while conn.session.wants_read() {
                let buf = conn.session.recv_buf();
                if buf.is_empty() {
                    break;
                }
                match tls.reader().read(buf) {
                    Ok(n) if n > 0 => {
                        conn.session.handle_recv(n, now);
                        conn.session.dispatch(now);
                    }
                    _ => break,
                }
            }
            conn.session.handle_eof(now);
            return Ok(true);
        }
    }
}

/// Session to socket. `Ok(true)` when bytes moved; `Err` when the socket
/// failed.
fn write_plain<S: Session>(
    conn: &mut Conn<S>,
    now: Instant,
    budget: &mut usize,
) -> Result<bool, ()> {
    let mut progressed = false;
    while conn.writable && conn.session.wants_write() && *budget > 0 {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let n = conn.session.poll_transmit(&mut slices);
        match (&conn.stream).write_vectored(&slices[..n]) {
            Ok(0) => return Err(()),
            Ok(written) => {
                conn.session.handle_write(written, now);
                *budget = budget.saturating_sub(written);
                progressed = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.writable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    Ok(progressed)
}

/// Session to rustls to socket. rustls takes plaintext up to its buffer
/// limit, which is what holds a session back when the client does not
/// read.
fn write_tls<S: Session>(conn: &mut Conn<S>, now: Instant, budget: &mut usize) -> Result<bool, ()> {
    let Transport::Tls(tls) = &mut conn.transport else {
        return Ok(false);
    };
    let mut progressed = false;
    loop {
        let mut moved = false;
        while conn.session.wants_write() && *budget > 0 {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = conn.session.poll_transmit(&mut slices);
            match tls.writer().write_vectored(&slices[..n]) {
                Ok(0) => break,
                Ok(taken) => {
                    conn.session.handle_write(taken, now);
                    *budget = budget.saturating_sub(taken);
                    moved = true;
                }
                Err(_) => return Err(()),
            }
        }
        while conn.writable && tls.wants_write() {
            match tls.write_tls(&mut &conn.stream) {
                Ok(0) => return Err(()),
                Ok(_) => progressed = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        progressed |= moved;
        if !moved || !conn.writable || *budget == 0 {
            return Ok(progressed);
        }
    }
}

/// One step of closing a finished session's connection: flush TLS, then
/// half-close and drain when the session asks for it, then close.
fn close_step<S: Session>(conn: &mut Conn<S>, scratch: &mut [u8], now: Instant) -> Driven {
    if conn.close_by.is_some_and(|by| now >= by) {
        return Driven::Close;
    }
    if conn.closing == Closing::Flushing {
        if let Transport::Tls(tls) = &mut conn.transport {
            while conn.writable && tls.wants_write() {
                match tls.write_tls(&mut &conn.stream) {
                    Ok(0) => return Driven::Close,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Driven::Close,
                }
            }
            if tls.wants_write() {
                return Driven::Open;
            }
        }
        if !conn.session.wants_linger() || conn.eof {
            return Driven::Close;
        }
        // Errors here mean the peer is already gone; the drain that
        // follows then ends at once.
        let _ = conn.stream.shutdown(Shutdown::Write);
        conn.closing = Closing::Lingering;
    }
    while conn.readable {
        match (&conn.stream).read(scratch) {
            Ok(0) => return Driven::Close,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Driven::Close,
        }
    }
    Driven::Open
}
