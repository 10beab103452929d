//! The gRPC endpoint: [`GrpcServer`] runs the shared event loops
//! ([`super::event_loop`]) with a session per connection that drives a
//! sans-IO [`http2::Connection`] (HTTP/2 with prior knowledge, or over TLS
//! with ALPN `h2`) and one [`Call`] of the [`GrpcService`] per request
//! stream.
//!
//! # Calls on a connection
//!
//! The session follows the call order `protocol::grpc::service` documents:
//! `Event::Request` opens a call whose [`CallSink`] queues what it is given
//! (headers, framed messages, trailers) in the connection's outbox, which
//! the session applies to the HTTP/2 connection in the order queued: at
//! the end of every dispatch (so an answer computed on the loop thread goes
//! out in the same write), and when the loop is told the outbox has filled
//! (one message and wake per batch, for answers from other threads).
//! Request DATA
//! goes to the call and its flow-control capacity is released at once;
//! END_STREAM ends the call's input; `Event::Reset` (client reset, stream
//! error, the connection going away) cancels it. A call's `grpc-timeout`
//! becomes a deadline folded into the session's own timeout, so the loop's
//! timer heap fires it. A call is dropped as soon as it has finished
//! (nothing more comes from it); closing the connection drops, and so
//! cancels, every call left.
//!
//! # Shutdown
//!
//! [`GrpcServerHandle::shutdown`] stops accepting and shuts every session
//! down gracefully: GOAWAY, calls in flight finish, the connection closes
//! when its last stream is done, and whatever is left at the deadline is
//! aborted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::event_loop::{ConnRef, Endpoint, Loops, Protocol, Session};
use super::tls::TlsConfig;
use crate::protocol::grpc::{Call, CallSink, GrpcService, HeaderList};
use crate::protocol::http2::{self, Event, StreamId};

/// Chunks of a response message smaller than this are gathered into one
/// buffer so that the message leaves as one DATA frame; larger ones are
/// written from where they are.
const GATHER_BELOW: usize = 4 * 1024;

/// Where and how to serve gRPC.
#[derive(Debug, Clone)]
pub struct GrpcServerConfig {
    /// Address to bind: an IP address (`0.0.0.0`, `::`) or a host name.
    pub address: String,
    /// Port to bind; 0 picks a free one (see
    /// [`GrpcServerHandle::local_addr`]).
    pub port: u16,
    /// Event-loop threads; 0 picks one per core, at least 2 and at most 16.
    pub threads: usize,
    /// Per-connection HTTP/2 limits and timeouts.
    pub http2: http2::Config,
    /// Serve over TLS (ALPN `h2`) instead of cleartext HTTP/2.
    pub tls: Option<TlsConfig>,
}

impl Default for GrpcServerConfig {
    fn default() -> GrpcServerConfig {
        GrpcServerConfig {
            address: "0.0.0.0".to_owned(),
            port: 8001,
            threads: 0,
            http2: http2::Config::default(),
            tls: None,
        }
    }
}

/// The gRPC front end.
#[derive(Debug)]
pub struct GrpcServer;

impl GrpcServer {
    /// Reads the TLS files (if any), binds the listener and starts the
    /// acceptor and event-loop threads.
    pub fn start(config: GrpcServerConfig, service: GrpcService) -> io::Result<GrpcServerHandle> {
        let tls = match &config.tls {
            Some(tls) => Some(tls.server_config(&[b"h2"])?),
            None => None,
        };
        let endpoint = Endpoint {
            address: config.address.clone(),
            port: config.port,
            threads: super::http::loop_count(config.threads),
            tls,
        };
        let protocol = Arc::new(Grpc {
            service: Arc::new(service),
            config: config.http2,
        });
        let loops = Loops::start(&endpoint, protocol)?;
        log::debug!(
            "gRPC listening on {} with {} event loops{}",
            loops.local_addr(),
            loops.threads(),
            if config.tls.is_some() { ", TLS" } else { "" }
        );
        Ok(GrpcServerHandle { loops })
    }
}

/// A running gRPC server. Dropping it shuts it down without a grace
/// period.
pub struct GrpcServerHandle {
    loops: Loops<OutboxFilled>,
}

impl std::fmt::Debug for GrpcServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServerHandle")
            .field("local_addr", &self.loops.local_addr())
            .field("threads", &self.loops.threads())
            .finish()
    }
}

impl GrpcServerHandle {
    /// The address the listener is bound to (with the real port when 0 was
    /// asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.loops.local_addr()
    }

    /// Stops accepting, sends GOAWAY on every connection, lets calls in
    /// flight finish until `deadline`, then closes every connection and
    /// joins the threads.
    pub fn shutdown(mut self, deadline: Instant) {
        self.loops.shutdown(deadline);
    }
}

/// Posted to a connection's loop when its outbox goes from empty to not
/// empty.
pub(crate) struct OutboxFilled;

/// What the calls of one connection have to send, in order.
#[derive(Default)]
struct Outbox {
    ops: Mutex<Vec<SinkOp>>,
    /// The session is handing input to its calls and flushes the outbox
    /// right after: a sink need not tell the loop (answers computed on the
    /// loop thread then cost no loop message and no second drive).
    dispatching: AtomicBool,
}

/// One call of a [`CallSink`], for one stream.
struct SinkOp {
    stream: StreamId,
    kind: SinkKind,
}

enum SinkKind {
    Headers {
        status: u16,
        headers: HeaderList,
        end_stream: bool,
    },
    Data(Vec<Bytes>),
    Trailers(HeaderList),
}

/// The sink of one call: queues in its connection's outbox and tells the
/// loop when the outbox fills.
struct StreamSink {
    outbox: Arc<Outbox>,
    conn: ConnRef<OutboxFilled>,
    stream: StreamId,
}

impl StreamSink {
    fn post(&self, kind: SinkKind) {
        let mut ops = self
            .outbox
            .ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let was_empty = ops.is_empty();
        ops.push(SinkOp {
            stream: self.stream,
            kind,
        });
        // Read under the lock: a session that has stopped dispatching has
        // cleared the flag before it takes the lock to flush, so a push
        // that still sees the flag set is taken by that flush.
        let flushed_soon = self.outbox.dispatching.load(Ordering::Acquire);
        drop(ops);
        if was_empty && !flushed_soon {
            self.conn.post(OutboxFilled);
        }
    }
}

impl CallSink for StreamSink {
    fn send_headers(&mut self, status: u16, headers: HeaderList, end_stream: bool) {
        self.post(SinkKind::Headers {
            status,
            headers,
            end_stream,
        });
    }

    fn send_data(&mut self, data: Vec<Bytes>) {
        self.post(SinkKind::Data(data));
    }

    fn send_trailers(&mut self, trailers: HeaderList) {
        self.post(SinkKind::Trailers(trailers));
    }
}

/// Opens gRPC sessions.
struct Grpc {
    service: Arc<GrpcService>,
    config: http2::Config,
}

impl Protocol for Grpc {
    type Session = GrpcSession;
    const NAME: &'static str = "gRPC";

    fn open(&self, conn: ConnRef<OutboxFilled>, now: Instant) -> GrpcSession {
        GrpcSession {
            h2: http2::Connection::new(self.config, now),
            service: Arc::clone(&self.service),
            conn,
            outbox: Arc::default(),
            applying: Vec::new(),
            calls: HashMap::new(),
            deadlines: BinaryHeap::new(),
        }
    }
}

/// A call in progress and its deadline.
struct Active {
    call: Call,
    deadline: Option<Instant>,
}

/// One HTTP/2 connection and the calls on its streams.
struct GrpcSession {
    h2: http2::Connection,
    service: Arc<GrpcService>,
    conn: ConnRef<OutboxFilled>,
    outbox: Arc<Outbox>,
    /// The outbox's operations being applied (kept for its capacity).
    applying: Vec<SinkOp>,
    calls: HashMap<StreamId, Active>,
    /// Call deadlines, earliest first; entries of calls that have since
    /// gone are skipped when they come up.
    deadlines: BinaryHeap<Reverse<(Instant, StreamId)>>,
}

impl GrpcSession {
    fn on_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Request {
                stream,
                headers,
                end_stream,
            } => {
                let sink = Box::new(StreamSink {
                    outbox: Arc::clone(&self.outbox),
                    conn: self.conn.clone(),
                    stream,
                });
                let service = &self.service;
                let opened = catch_unwind(AssertUnwindSafe(|| {
                    let mut call = service.open_call(&headers, sink);
                    if end_stream {
                        call.handle_end_of_stream();
                    }
                    call
                }));
                let Ok(call) = opened else {
                    log::error!("gRPC service panicked while opening a call");
                    let _ = self.h2.reset(stream, http2::ErrorCode::INTERNAL_ERROR, now);
                    return;
                };
                if call.is_finished() {
                    return;
                }
                let deadline = call.timeout().and_then(|t| now.checked_add(t));
                if let Some(deadline) = deadline {
                    self.deadlines.push(Reverse((deadline, stream)));
                }
                self.calls.insert(stream, Active { call, deadline });
            }
            Event::Data {
                stream,
                data,
                end_stream,
            } => {
                let n = data.len();
                self.with_call(stream, |call| {
                    call.handle_data(data);
                    if end_stream {
                        call.handle_end_of_stream();
                    }
                });
                // The call has taken the bytes (it buffers at most one
                // incomplete message, bounded by the message-size limit).
                self.h2.release_capacity(stream, n, now);
            }
            Event::Trailers { stream, .. } => {
                self.with_call(stream, Call::handle_end_of_stream);
            }
            Event::Reset { stream, .. } => {
                if let Some(mut active) = self.calls.remove(&stream) {
                    active.call.handle_reset();
                }
            }
        }
    }

    /// Runs `f` on the call of `stream`, if it is still going, and drops
    /// the call once it has finished.
    fn with_call(&mut self, stream: StreamId, f: impl FnOnce(&mut Call)) {
        let Some(active) = self.calls.get_mut(&stream) else {
            return;
        };
        if catch_unwind(AssertUnwindSafe(|| f(&mut active.call))).is_err() {
            log::error!("gRPC call panicked");
            if let Some(mut active) = self.calls.remove(&stream) {
                active.call.handle_reset();
            }
            let _ = self
                .h2
                .reset(stream, http2::ErrorCode::INTERNAL_ERROR, Instant::now());
            return;
        }
        if active.call.is_finished() {
            self.calls.remove(&stream);
        }
    }

    /// Applies one sink operation to the HTTP/2 connection. Failures mean
    /// the stream is gone (reset by the client or a limit): the call was
    /// or will be told, and its output is dropped.
    fn apply(&mut self, op: SinkOp, now: Instant) {
        let stream = op.stream;
        let ended = match op.kind {
            SinkKind::Headers {
                status,
                headers,
                end_stream,
            } => {
                let _ = self
                    .h2
                    .send_headers(stream, status, headers, end_stream, now);
                end_stream
            }
            SinkKind::Data(chunks) => {
                for chunk in gather(chunks) {
                    if self.h2.send_data(stream, chunk, false, now).is_err() {
                        break;
                    }
                }
                false
            }
            SinkKind::Trailers(trailers) => {
                let _ = self.h2.send_trailers(stream, trailers, now);
                true
            }
        };
        if ended {
            // The call wrote its last word: it is finished.
            self.calls.remove(&stream);
        }
    }

    /// Applies everything the calls have queued, in order.
    fn flush_outbox(&mut self, now: Instant) {
        {
            let mut ops = self
                .outbox
                .ops
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if ops.is_empty() {
                return;
            }
            std::mem::swap(&mut *ops, &mut self.applying);
        }
        let mut ops = std::mem::take(&mut self.applying);
        for op in ops.drain(..) {
            self.apply(op, now);
        }
        self.applying = ops;
    }

    /// Drops deadline entries of calls that have gone or moved on.
    fn prune_deadlines(&mut self) {
        while let Some(Reverse((deadline, stream))) = self.deadlines.peek() {
            let live = self
                .calls
                .get(stream)
                .is_some_and(|a| a.deadline == Some(*deadline));
            if live {
                return;
            }
            self.deadlines.pop();
        }
    }
}

/// Gathers the small chunks of a message into one buffer (a copy of at most
/// a few kilobytes at a time, to save a DATA frame per chunk); large
/// chunks are passed through uncopied.
fn gather(chunks: Vec<Bytes>) -> Vec<Bytes> {
    if chunks.len() <= 1 {
        return chunks;
    }
    let mut out = Vec::with_capacity(chunks.len());
    let mut small = BytesMut::new();
    for chunk in chunks {
        if chunk.len() >= GATHER_BELOW {
            if !small.is_empty() {
                out.push(small.split().freeze());
            }
            out.push(chunk);
        } else {
            small.extend_from_slice(&chunk);
        }
    }
    if !small.is_empty() {
        out.push(small.freeze());
    }
    out
}

impl Session for GrpcSession {
    type Msg = OutboxFilled;

    fn recv_buf(&mut self) -> &mut [u8] {
        self.h2.recv_buf()
    }

    fn handle_recv(&mut self, n: usize, now: Instant) {
        self.h2.handle_recv(n, now);
    }

    fn handle_eof(&mut self, now: Instant) {
        self.h2.handle_eof(now);
    }

    fn dispatch(&mut self, now: Instant) {
        self.outbox.dispatching.store(true, Ordering::Release);
        while let Some(event) = self.h2.poll_event() {
            self.on_event(event, now);
        }
        self.outbox.dispatching.store(false, Ordering::Release);
        self.flush_outbox(now);
        self.prune_deadlines();
    }

    fn handle_msg(&mut self, _: OutboxFilled, now: Instant) {
        self.flush_outbox(now);
    }

    fn wants_read(&self) -> bool {
        self.h2.wants_read()
    }

    fn wants_write(&self) -> bool {
        self.h2.wants_write()
    }

    fn poll_transmit<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        self.h2.poll_transmit(slices)
    }

    fn handle_write(&mut self, n: usize, now: Instant) {
        self.h2.handle_write(n, now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let h2 = self.h2.poll_timeout();
        match self.deadlines.peek() {
            Some(Reverse((call, _))) => Some(h2.map_or(*call, |t| t.min(*call))),
            None => h2,
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.h2.handle_timeout(now);
        self.outbox.dispatching.store(true, Ordering::Release);
        while let Some(Reverse((deadline, stream))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if self
                .calls
                .get(&stream)
                .is_some_and(|a| a.deadline == Some(deadline))
            {
                self.with_call(stream, Call::handle_deadline);
            }
        }
        self.outbox.dispatching.store(false, Ordering::Release);
        self.flush_outbox(now);
        self.prune_deadlines();
    }

    fn shutdown(&mut self, now: Instant) {
        self.h2.shutdown(now);
    }

    fn abort(&mut self) {
        self.h2.abort();
        // Dropping an unfinished call cancels its work.
        self.calls.clear();
        self.deadlines.clear();
    }

    fn is_closed(&self) -> bool {
        self.h2.is_closed()
    }

    fn wants_linger(&self) -> bool {
        self.h2.wants_linger()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_chunks_are_gathered_large_ones_kept() {
        let big = Bytes::from(vec![7u8; GATHER_BELOW]);
        let out = gather(vec![
            Bytes::from_static(b"\0\0\0\0\x10"),
            Bytes::from_static(b"abc"),
            big.clone(),
            Bytes::from_static(b"de"),
        ]);
        assert_eq!(out.len(), 3);
        assert_eq!(&out[0][..], b"\0\0\0\0\x10abc");
        assert_eq!(out[1].as_ptr(), big.as_ptr(), "large chunks are not copied");
        assert_eq!(&out[2][..], b"de");
        assert_eq!(gather(vec![big.clone()]).len(), 1);
    }
}
