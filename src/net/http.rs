//! The HTTP/1.1 server: one acceptor thread and N event-loop threads.
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
//! be re-registered. After any event, completion or timer it *drives* the
//! connection: read while the protocol wants input, hand complete requests
//! to the service, write while there is output (vectored), and repeat while
//! that made progress. A read budget per drive keeps one busy client from
//! starving the others; connections with budget left over are driven again
//! on the next turn without blocking in `poll`.
//!
//! Responses come back from any thread through the loop's inbox (see
//! [`super::service`]); each names its connection by slot and generation,
//! so a response for a connection that has since closed (and whose slot
//! was reused) is dropped.
//!
//! # Closing
//!
//! A connection that closes while its client may still be sending
//! (a refused body) is half-closed and drained for a moment before the
//! socket is dropped, so the client reads the error instead of a reset.
//! [`HttpServerHandle::shutdown`] stops the acceptor, then asks every loop
//! to drain: idle connections close at once, requests in flight finish and
//! are answered with `Connection: close`, and whatever remains at the
//! deadline is cancelled and closed.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::service::{HttpService, LoopInbox, LoopMsg, Responder};
use super::timers::Timers;
use crate::protocol::http1;

/// Token of each poller's waker; connection tokens are slab indexes.
const WAKER: Token = Token(usize::MAX);
/// Token of the listener in the acceptor's poller.
const LISTENER: Token = Token(0);
/// Reads per connection per drive before others get a turn.
const READ_BUDGET: usize = 16;
/// Most slices handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// How long a closing connection is drained after its half-close.
const LINGER: Duration = Duration::from_secs(2);
/// Pause after an accept error such as running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Where and how to serve HTTP.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Address to bind: an IP address (`0.0.0.0`, `::`) or a host name.
    pub address: String,
    /// Port to bind; 0 picks a free one (see
    /// [`HttpServerHandle::local_addr`]).
    pub port: u16,
    /// Event-loop threads; 0 picks one per core, at least 2 and at most 16.
    pub threads: usize,
    /// Per-connection limits and timeouts.
    pub http1: http1::Config,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            address: "0.0.0.0".to_owned(),
            port: 8000,
            threads: 0,
            http1: http1::Config::default(),
        }
    }
}

impl HttpConfig {
    /// The number of event loops this configuration starts.
    pub fn thread_count(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 16)
    }
}

/// The HTTP/1.1 front end.
#[derive(Debug)]
pub struct HttpServer;

impl HttpServer {
    /// Binds the listener and starts the acceptor and event-loop threads.
    pub fn start(
        config: HttpConfig,
        service: Arc<dyn HttpService>,
    ) -> io::Result<HttpServerHandle> {
        // `[::]` is how addresses are often written next to a port.
        let host = config.address.trim_start_matches('[').trim_end_matches(']');
        let addr = (host, config.port)
            .to_socket_addrs()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot resolve HTTP address '{}': {e}", config.address),
                )
            })?
            .next()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("HTTP address '{}' resolves to nothing", config.address),
                )
            })?;
        let std_listener = std::net::TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind HTTP port {addr}: {e}")))?;
        std_listener.set_nonblocking(true)?;
        let local_addr = std_listener.local_addr()?;
        let listener = TcpListener::from_std(std_listener);

        let accept_poll = Poll::new()?;
        // From here on, an early return drops `handle`, which stops and
        // joins whatever was started.
        let mut handle = HttpServerHandle {
            local_addr,
            acceptor: None,
            accept_waker: Arc::new(Waker::new(accept_poll.registry(), WAKER)?),
            stop: Arc::new(AtomicBool::new(false)),
            inboxes: Vec::new(),
            workers: Vec::new(),
        };
        for id in 0..config.thread_count() {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKER)?;
            let (tx, rx) = mpsc::channel();
            let inbox = Arc::new(LoopInbox::new(tx, waker));
            let worker = EventLoop::new(poll, rx, inbox.clone(), service.clone(), config.http1);
            let thread = std::thread::Builder::new()
                .name(format!("http-loop-{id}"))
                .spawn(move || worker.run())?;
            handle.inboxes.push(inbox);
            handle.workers.push(thread);
        }

        let acceptor = Acceptor {
            poll: accept_poll,
            listener,
            loops: handle.inboxes.clone(),
            next: 0,
            stop: handle.stop.clone(),
        };
        handle.acceptor = Some(
            std::thread::Builder::new()
                .name("http-accept".to_owned())
                .spawn(move || acceptor.run())?,
        );

        log::info!("Started HTTPService at {local_addr}");
        Ok(handle)
    }
}

/// A running HTTP server. Dropping it shuts it down without a grace period.
pub struct HttpServerHandle {
    local_addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
    accept_waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    inboxes: Vec<Arc<LoopInbox>>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for HttpServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServerHandle")
            .field("local_addr", &self.local_addr)
            .field("threads", &self.workers.len())
            .finish()
    }
}

impl HttpServerHandle {
    /// The address the listener is bound to (with the real port when 0 was
    /// asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish until `deadline`,
    /// then closes every connection and joins the threads.
    pub fn shutdown(mut self, deadline: Instant) {
        self.stop_all(deadline);
    }

    fn stop_all(&mut self, deadline: Instant) {
        if let Some(acceptor) = self.acceptor.take() {
            self.stop.store(true, Ordering::Release);
            // A failed wake means the acceptor's poller is gone: it has
            // exited.
            let _ = self.accept_waker.wake();
            if acceptor.join().is_err() {
                log::error!("HTTP acceptor thread panicked");
            }
        }
        for inbox in self.inboxes.drain(..) {
            inbox.post(LoopMsg::Shutdown(deadline));
        }
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                log::error!("HTTP event-loop thread panicked");
            }
        }
    }
}

impl Drop for HttpServerHandle {
    fn drop(&mut self) {
        self.stop_all(Instant::now());
    }
}

/// Accepts connections and deals them out to the event loops.
struct Acceptor {
    poll: Poll,
    listener: TcpListener,
    loops: Vec<Arc<LoopInbox>>,
    next: usize,
    stop: Arc<AtomicBool>,
}

impl Acceptor {
    fn run(mut self) {
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut self.listener, LISTENER, Interest::READABLE)
        {
            log::error!("cannot register the HTTP listener: {e}");
            return;
        }
        let mut events = Events::with_capacity(16);
        while !self.stop.load(Ordering::Acquire) {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("HTTP acceptor poll failed: {e}");
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
                    log::warn!("HTTP accept failed: {e}");
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
            }
        }
    }
}

/// One accepted connection in an event loop.
struct Conn {
    stream: TcpStream,
    proto: http1::Connection,
    generation: u64,
    readable: bool,
    writable: bool,
    /// The peer closed its side or the socket failed: nothing more to read.
    eof: bool,
    /// Earliest deadline queued in the timer heap for this connection.
    timer: Option<Instant>,
    /// Set once the protocol is done and the socket is half-closed and
    /// drained until this time.
    linger_until: Option<Instant>,
}

/// What driving a connection left it as.
enum Driven {
    Open,
    Close,
}

/// One event-loop thread.
struct EventLoop {
    poll: Poll,
    inbox_rx: mpsc::Receiver<LoopMsg>,
    inbox: Arc<LoopInbox>,
    service: Arc<dyn HttpService>,
    config: http1::Config,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    next_generation: u64,
    timers: Timers,
    /// Connections to drive again this turn (read budget ran out).
    again: Vec<usize>,
    draining: Option<Instant>,
    scratch: Vec<u8>,
}

impl EventLoop {
    fn new(
        poll: Poll,
        inbox_rx: mpsc::Receiver<LoopMsg>,
        inbox: Arc<LoopInbox>,
        service: Arc<dyn HttpService>,
        config: http1::Config,
    ) -> EventLoop {
        EventLoop {
            poll,
            inbox_rx,
            inbox,
            service,
            config,
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
                log::error!("HTTP event loop poll failed: {e}");
                self.close_all();
                return;
            }
            let now = Instant::now();
            to_drive.append(&mut self.again);
            let mut woken = false;
            for event in events.iter() {
                if event.token() == WAKER {
                    woken = true;
                    continue;
                }
                let slot = event.token().0;
                if let Some(Some(conn)) = self.conns.get_mut(slot) {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        conn.readable = true;
                    }
                    if event.is_writable() || event.is_write_closed() || event.is_error() {
                        conn.writable = true;
                    }
                    to_drive.push(slot);
                }
            }
            if woken {
                self.inbox.clear_wake();
                while let Ok(msg) = self.inbox_rx.try_recv() {
                    self.handle_msg(msg, now, &mut to_drive);
                }
            }
            while let Some(due) = self.timers.pop_due(now) {
                if let Some(Some(conn)) = self.conns.get_mut(due.slot)
                    && conn.generation == due.generation
                {
                    if conn.timer == Some(due.deadline) {
                        conn.timer = None;
                    }
                    conn.proto.handle_timeout(now);
                    to_drive.push(due.slot);
                }
            }
            to_drive.sort_unstable();
            to_drive.dedup();
            for slot in to_drive.drain(..) {
                self.drive(slot, now);
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

    fn handle_msg(&mut self, msg: LoopMsg, now: Instant, to_drive: &mut Vec<usize>) {
        match msg {
            LoopMsg::Accept(stream) => {
                if self.draining.is_some() {
                    return;
                }
                if let Some(slot) = self.add(stream, now) {
                    to_drive.push(slot);
                }
            }
            LoopMsg::Complete {
                slot,
                generation,
                seq,
                response,
            } => {
                if let Some(Some(conn)) = self.conns.get_mut(slot)
                    && conn.generation == generation
                {
                    conn.proto.send_response(seq, response, now);
                    to_drive.push(slot);
                }
            }
            LoopMsg::Shutdown(deadline) => {
                self.draining = Some(deadline);
                for (slot, conn) in self.conns.iter_mut().enumerate() {
                    if let Some(conn) = conn {
                        conn.proto.shutdown();
                        to_drive.push(slot);
                    }
                }
            }
        }
    }

    fn add(&mut self, mut stream: TcpStream, now: Instant) -> Option<usize> {
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
            log::warn!("cannot register an HTTP connection: {e}");
            self.free.push(slot);
            return None;
        }
        self.next_generation += 1;
        self.conns[slot] = Some(Conn {
            stream,
            proto: http1::Connection::new(self.config, now),
            generation: self.next_generation,
            // Data may have arrived before registration; try at once.
            readable: true,
            writable: true,
            eof: false,
            timer: None,
            linger_until: None,
        });
        Some(slot)
    }

    fn drive(&mut self, slot: usize, now: Instant) {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        let driven = if conn.linger_until.is_some() {
            linger(conn, &mut self.scratch, now)
        } else {
            let mut budget = READ_BUDGET;
            let driven = pump(conn, &self.inbox, &*self.service, slot, now, &mut budget);
            if budget == 0 && conn.readable && conn.proto.wants_read() {
                self.again.push(slot);
            }
            match driven {
                Driven::Open if conn.proto.is_closed() => {
                    if conn.proto.wants_linger() && !conn.eof {
                        // Errors here mean the peer is already gone; the
                        // drain that follows then ends at once.
                        let _ = conn.stream.shutdown(Shutdown::Write);
                        conn.linger_until = Some(now + LINGER);
                        linger(conn, &mut self.scratch, now)
                    } else {
                        Driven::Close
                    }
                }
                other => other,
            }
        };
        match driven {
            Driven::Close => self.remove(slot),
            Driven::Open => {
                let deadline = match conn.linger_until {
                    Some(until) => Some(until),
                    None => conn.proto.poll_timeout(),
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
            conn.proto.abort();
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
fn pump(
    conn: &mut Conn,
    inbox: &Arc<LoopInbox>,
    service: &dyn HttpService,
    slot: usize,
    now: Instant,
    budget: &mut usize,
) -> Driven {
    loop {
        let mut progressed = false;

        while conn.readable && !conn.eof && conn.proto.wants_read() && *budget > 0 {
            *budget -= 1;
            let buf = conn.proto.recv_buf();
            match (&conn.stream).read(buf) {
                Ok(0) => {
                    conn.eof = true;
                    conn.proto.handle_eof(now);
                    progressed = true;
                }
                Ok(n) => {
                    conn.proto.handle_recv(n, now);
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    conn.eof = true;
                    conn.proto.abort();
                    return Driven::Close;
                }
            }
            dispatch(conn, inbox, service, slot);
        }
        dispatch(conn, inbox, service, slot);

        while conn.writable && conn.proto.wants_write() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = conn.proto.poll_transmit(&mut slices);
            match (&conn.stream).write_vectored(&slices[..n]) {
                Ok(0) => {
                    conn.proto.abort();
                    return Driven::Close;
                }
                Ok(written) => {
                    conn.proto.handle_write(written, now);
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    conn.proto.abort();
                    return Driven::Close;
                }
            }
        }

        if conn.proto.is_closed() || !progressed {
            return Driven::Open;
        }
    }
}

/// Hands every complete request to the service.
fn dispatch(conn: &mut Conn, inbox: &Arc<LoopInbox>, service: &dyn HttpService, slot: usize) {
    while let Some(request) = conn.proto.poll_request() {
        let responder = Responder::for_loop(inbox.clone(), slot, conn.generation, &request);
        // A panicking service must not take the loop down; the responder
        // it dropped while unwinding answers 500.
        if catch_unwind(AssertUnwindSafe(|| service.handle(request, responder))).is_err() {
            log::error!("HTTP service panicked while handling a request");
        }
    }
}

/// Drains a half-closed socket until the client closes or time runs out.
fn linger(conn: &mut Conn, scratch: &mut [u8], now: Instant) -> Driven {
    if conn.linger_until.is_some_and(|until| now >= until) {
        return Driven::Close;
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
