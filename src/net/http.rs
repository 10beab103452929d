//! The HTTP/1.1 endpoint: [`HttpServer`] runs the shared event loops
//! ([`super::event_loop`]) with a session per connection that drives a
//! sans-IO [`http1::Connection`], hands each complete request to an
//! [`HttpService`] with a [`Responder`], and writes the responses that come
//! back. With [`HttpConfig::tls`] the port speaks HTTPS (ALPN `http/1.1`).
//!
//! Requests with a compressed body, and those the service asks to have
//! off the loop ([`HttpService::offload`]: large bodies to parse), go to a
//! small pool of decoding threads shared by the endpoint's loops. There the
//! body is decompressed (incrementally, stopping at the decoded-size
//! limit) and the service's `handle` runs, so a large or malicious body
//! costs its own connection time, never the loop's other connections. A
//! connection's requests still reach the service in the order they were
//! sent: behind one that went to the decoding threads, the next ones queue
//! too.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Instant;

use super::event_loop::{ConnRef, Endpoint, Loops, Protocol, Session};
use super::service::{HttpService, Outbox, OutboxFilled, Responder};
use super::tls::TlsConfig;
use crate::protocol::http1::{self, DecodeError, Request, Response};

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
    /// Serve HTTPS with this certificate instead of plain HTTP.
    pub tls: Option<TlsConfig>,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            address: "0.0.0.0".to_owned(),
            port: 8000,
            threads: 0,
            http1: http1::Config::default(),
            tls: None,
        }
    }
}

impl HttpConfig {
    /// The number of event loops this configuration starts.
    pub fn thread_count(&self) -> usize {
        loop_count(self.threads)
    }
}

/// `threads`, or one event loop per core (2 to 16) when 0.
pub(crate) fn loop_count(threads: usize) -> usize {
    if threads > 0 {
        return threads;
    }
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 16)
}

/// The HTTP/1.1 front end.
#[derive(Debug)]
pub struct HttpServer;

impl HttpServer {
    /// Reads the TLS files (if any), binds the listener and starts the
    /// acceptor and event-loop threads.
    pub fn start(
        config: HttpConfig,
        service: Arc<dyn HttpService>,
    ) -> io::Result<HttpServerHandle> {
        let tls = match &config.tls {
            Some(tls) => Some(tls.server_config(&[b"http/1.1"])?),
            None => None,
        };
        let endpoint = Endpoint {
            address: config.address.clone(),
            port: config.port,
            threads: config.thread_count(),
            tls,
        };
        let protocol = Arc::new(Http1 {
            service,
            config: config.http1,
            decoders: Decoders::start(decoder_count())?,
        });
        let loops = Loops::start(&endpoint, protocol)?;
        log::debug!(
            "HTTP listening on {} with {} event loops{}",
            loops.local_addr(),
            loops.threads(),
            if config.tls.is_some() { ", TLS" } else { "" }
        );
        Ok(HttpServerHandle { loops })
    }
}

/// A running HTTP server. Dropping it shuts it down without a grace period.
pub struct HttpServerHandle {
    loops: Loops<OutboxFilled>,
}

impl std::fmt::Debug for HttpServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServerHandle")
            .field("local_addr", &self.loops.local_addr())
            .field("threads", &self.loops.threads())
            .finish()
    }
}

impl HttpServerHandle {
    /// The address the listener is bound to (with the real port when 0 was
    /// asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.loops.local_addr()
    }

    /// Stops accepting, lets requests in flight (and those already in the
    /// connections' sockets) finish until `deadline`, answered with
    /// `Connection: close`; idle connections close at once. Then closes
    /// every connection and joins the threads.
    pub fn shutdown(mut self, deadline: Instant) {
        self.loops.shutdown(deadline);
    }
}

/// Decoding threads per endpoint: one per core, 2 to 8.
fn decoder_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
}

/// Work for a decoding thread.
type Job = Box<dyn FnOnce() + Send>;

/// The decoding threads of one endpoint, fed through one queue. They stop
/// once the last session (holding the queue) is gone.
struct Decoders {
    queue: mpsc::Sender<Job>,
}

impl Decoders {
    fn start(threads: usize) -> io::Result<Decoders> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        for id in 0..threads {
            let jobs = Arc::clone(&jobs);
            std::thread::Builder::new()
                .name(format!("http-decode-{id}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for a job.
                        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(job) = job else { return };
                        job();
                    }
                })?;
        }
        Ok(Decoders { queue })
    }
}

/// The requests of one connection that go through the decoding threads,
/// in order: one job at a time per connection takes them from the front,
/// so the service sees a connection's requests in the order they were
/// sent (sequence requests pipelined behind a large one stay behind it).
#[derive(Default)]
struct Backlog {
    /// The requests waiting, and whether a job is taking them.
    queue: Mutex<(VecDeque<Job>, bool)>,
}

impl Backlog {
    /// Whether requests wait or are being taken: a new one must queue
    /// behind them.
    fn busy(&self) -> bool {
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.1 || !queue.0.is_empty()
    }

    /// Queues a request's work; starts a job on the decoding threads to
    /// take the queue when none is running. A failed send means the
    /// threads are gone (the endpoint is stopping): the queued work is
    /// dropped, and its responders answer 500.
    fn push(self: &Arc<Self>, work: Job, decoders: &mpsc::Sender<Job>) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.0.push_back(work);
        if queue.1 {
            return;
        }
        queue.1 = true;
        drop(queue);
        let backlog = Arc::clone(self);
        if decoders.send(Box::new(move || backlog.drain())).is_err() {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.0.clear();
            queue.1 = false;
        }
    }

    /// Runs the queued work, oldest first, until none is left.
    fn drain(&self) {
        loop {
            let work = {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                match queue.0.pop_front() {
                    Some(work) => work,
                    None => {
                        queue.1 = false;
                        return;
                    }
                }
            };
            work();
        }
    }
}

/// Opens HTTP/1.1 sessions.
struct Http1 {
    service: Arc<dyn HttpService>,
    config: http1::Config,
    decoders: Decoders,
}

impl Protocol for Http1 {
    type Session = Http1Session;
    const NAME: &'static str = "HTTP";

    fn open(&self, conn: ConnRef<OutboxFilled>, now: Instant) -> Http1Session {
        Http1Session {
            proto: http1::Connection::new(self.config, now),
            service: Arc::clone(&self.service),
            decoders: self.decoders.queue.clone(),
            backlog: Arc::default(),
            max_decoded: self.config.max_decoded_body_bytes,
            conn,
            outbox: Arc::default(),
            applying: Vec::new(),
        }
    }
}

/// One HTTP/1.1 connection: the protocol object and where its requests go.
struct Http1Session {
    proto: http1::Connection,
    service: Arc<dyn HttpService>,
    decoders: mpsc::Sender<Job>,
    backlog: Arc<Backlog>,
    max_decoded: usize,
    conn: ConnRef<OutboxFilled>,
    outbox: Arc<Outbox>,
    /// The outbox's responses being applied (kept for its capacity).
    applying: Vec<(u64, http1::Response)>,
}

/// Hands a request to the service. A panicking service must not take the
/// thread down; the responder it dropped while unwinding answers 500.
fn handle(service: &dyn HttpService, request: Request, responder: Responder) {
    if let Some(oversized) = request.oversized {
        let response = catch_unwind(AssertUnwindSafe(|| {
            service.body_too_large(&request, &oversized)
        }));
        match response {
            Ok(response) => responder.respond(response),
            Err(_) => log::error!("HTTP service panicked while refusing a request"),
        }
        return;
    }
    if catch_unwind(AssertUnwindSafe(|| service.handle(request, responder))).is_err() {
        log::error!("HTTP service panicked while handling a request");
    }
}

/// On a decoding thread: undoes the body's content coding, if any
/// (stopping at `limit`), then hands the request to the service.
fn decode_and_handle(
    service: &dyn HttpService,
    mut request: Request,
    responder: Responder,
    limit: usize,
) {
    let coding = request.content_coding();
    match request.decode_body(limit) {
        Ok(()) | Err(DecodeError::TooLarge(_)) => handle(service, request, responder),
        Err(DecodeError::Corrupt(e)) => {
            let coding = coding.map_or("", |c| c.as_str());
            responder.respond(Response::error(
                400,
                &format!("cannot decode {coding} request body: {e}"),
            ));
        }
    }
}

impl Http1Session {
    /// Applies every response the outbox holds, in the order given.
    fn flush_outbox(&mut self, now: Instant) {
        self.outbox.take(&mut self.applying);
        for (seq, response) in self.applying.drain(..) {
            self.proto.send_response(seq, response, now);
        }
    }
}

impl Session for Http1Session {
    type Msg = OutboxFilled;

    fn recv_buf(&mut self) -> &mut [u8] {
        self.proto.recv_buf()
    }

    fn handle_recv(&mut self, n: usize, now: Instant) {
        self.proto.handle_recv(n, now);
    }

    fn handle_eof(&mut self, now: Instant) {
        self.proto.handle_eof(now);
    }

    /// Hands every complete request to the service (through a decoding
    /// thread when its body is compressed or the service asks for it),
    /// then applies the answers given meanwhile.
    fn dispatch(&mut self, now: Instant) {
        self.outbox.set_dispatching(true);
        while let Some(request) = self.proto.poll_request() {
            let responder =
                Responder::for_loop(Arc::clone(&self.outbox), self.conn.clone(), &request);
            // Behind a request on the decoding threads, a request queues
            // too, whatever its size, so that order is kept.
            let off_loop = self.backlog.busy()
                || request.content_coding().is_some()
                || (request.oversized.is_none()
                    && catch_unwind(AssertUnwindSafe(|| self.service.offload(&request)))
                        .unwrap_or(false));
            if off_loop {
                let service = Arc::clone(&self.service);
                let limit = self.max_decoded;
                self.backlog.push(
                    Box::new(move || decode_and_handle(&*service, request, responder, limit)),
                    &self.decoders,
                );
            } else {
                handle(&*self.service, request, responder);
            }
        }
        self.outbox.set_dispatching(false);
        self.flush_outbox(now);
    }

    fn handle_msg(&mut self, _: OutboxFilled, now: Instant) {
        self.flush_outbox(now);
    }

    fn wants_read(&self) -> bool {
        self.proto.wants_read()
    }

    fn wants_write(&self) -> bool {
        self.proto.wants_write()
    }

    fn poll_transmit<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        self.proto.poll_transmit(slices)
    }

    fn handle_write(&mut self, n: usize, now: Instant) {
        self.proto.handle_write(n, now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.proto.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.proto.handle_timeout(now);
    }

    fn prepare_shutdown(&mut self) {
        self.proto.prepare_shutdown();
    }

    fn shutdown(&mut self, _now: Instant) {
        self.proto.shutdown();
    }

    fn abort(&mut self) {
        self.proto.abort();
    }

    fn is_closed(&self) -> bool {
        self.proto.is_closed()
    }

    fn wants_linger(&self) -> bool {
        self.proto.wants_linger()
    }
}
