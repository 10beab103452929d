//! The HTTP/2 server connection state machine: frames in, events out;
//! commands in, frames out. See the parent module for the call order.
//!
//! Part of `protocol::http2`; calls nothing outside it.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::error::{ConnectionError, Error, ErrorCode};
use super::frame::{
    Continuation, DEFAULT_MAX_FRAME_SIZE, DEFAULT_WINDOW_SIZE, Data, Frame, FrameDecoder, GoAway,
    Headers, MAX_FRAME_SIZE_LIMIT, MAX_WINDOW_SIZE, Ping, RstStream, Settings, StreamId,
    WindowUpdate,
};
use super::hpack;
use super::stream::{Ended, Outgoing, RecentlyClosed, State, Stream};
use crate::protocol::output::OutputQueue;

/// Stream data is moved into the output until this much is queued; the
/// rest waits in its stream, where a reset can still drop it and where
/// control frames cannot get stuck behind it.
const WRITE_BATCH: usize = 256 * 1024;
/// DATA payloads smaller than this are copied out of the read buffer, so
/// that a small slice held by the application does not pin a whole read
/// buffer; larger ones are handed out as slices of it.
const COPY_BELOW: usize = 8 * 1024;
/// Opaque data of the PING that times a graceful shutdown.
const SHUTDOWN_PING: [u8; 8] = *b"nereid\x00\x01";
/// Most bytes of an error's reason sent as GOAWAY debug data.
const MAX_DEBUG_DATA: usize = 256;
/// The HPACK table size both sides start with; we never advertise another.
const HPACK_TABLE_SIZE: usize = 4096;

/// Limits, windows and timeouts of one connection. The `SETTINGS` we send
/// come from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`: streams beyond it are refused
    /// with RST_STREAM(REFUSED_STREAM).
    pub max_concurrent_streams: u32,
    /// `SETTINGS_INITIAL_WINDOW_SIZE`: request body bytes a client may
    /// send on a stream ahead of the application releasing them. At least
    /// 65,535 (smaller values are raised to it).
    pub stream_window: u32,
    /// Request body bytes a client may send on the whole connection ahead
    /// of the application releasing them; bounds the memory held by
    /// undelivered and unreleased body data. At least 65,535.
    pub connection_window: u32,
    /// `SETTINGS_MAX_FRAME_SIZE`: the largest frame we accept (16,384 to
    /// 16,777,215).
    pub max_frame_size: u32,
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`: a request whose header list is
    /// larger (RFC 7541 §4.1 counting) is answered 431 and not processed.
    pub max_header_list_size: u32,
    /// Most compressed bytes one header block (HEADERS and its
    /// CONTINUATIONs) may have; more ends the connection with
    /// ENHANCE_YOUR_CALM.
    pub max_header_block_bytes: usize,
    /// Most CONTINUATION frames after one HEADERS; more ends the connection
    /// with ENHANCE_YOUR_CALM.
    pub max_continuation_frames: usize,
    /// Most bytes of HPACK table our encoder keeps (the peer's
    /// `SETTINGS_HEADER_TABLE_SIZE` may lower it further).
    pub encoder_table_size: usize,
    /// Streams reset by the client before we finished them, plus streams
    /// we refused, allowed per `reset_window`; more ends the connection
    /// with ENHANCE_YOUR_CALM (the "rapid reset" attack, CVE-2023-44487).
    pub max_resets: u32,
    /// The window over which `max_resets` is counted.
    pub reset_window: Duration,
    /// Most PING and SETTINGS acknowledgements and RST_STREAM frames
    /// queued and not yet written; more ends the connection with
    /// ENHANCE_YOUR_CALM (PING, SETTINGS and reset floods against a peer
    /// that does not read).
    pub max_pending_control: usize,
    /// Reading pauses while more than this many bytes wait to be written.
    pub output_high_water: usize,
    /// A connection with no open stream for this long is closed with
    /// GOAWAY(NO_ERROR).
    pub idle_timeout: Duration,
    /// Time the client has to acknowledge our SETTINGS; then GOAWAY
    /// (SETTINGS_TIMEOUT).
    pub settings_timeout: Duration,
    /// Longest wait for progress when we have something to send: output
    /// the socket does not take (the connection is dropped), a stream
    /// whose window stays closed (RST_STREAM(CANCEL)), a connection
    /// window that stays closed (GOAWAY(ENHANCE_YOUR_CALM)).
    pub stall_timeout: Duration,
    /// During a graceful shutdown, how long to wait for the PING that
    /// follows the first GOAWAY to be answered before sending the final
    /// GOAWAY.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_concurrent_streams: 128,
            stream_window: 1 << 20,
            connection_window: 4 << 20,
            max_frame_size: 64 * 1024,
            max_header_list_size: 64 * 1024,
            max_header_block_bytes: 128 * 1024,
            max_continuation_frames: 64,
            encoder_table_size: 4096,
            max_resets: 200,
            reset_window: Duration::from_secs(10),
            max_pending_control: 256,
            output_high_water: 1 << 20,
            idle_timeout: Duration::from_secs(300),
            settings_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(120),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// What the connection tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new request. `headers` holds the pseudo-headers (`:method`,
    /// `:scheme`, `:path`, `:authority`) first, then the regular fields,
    /// names lowercase, in the order sent. With `end_stream` the request
    /// has no body.
    Request {
        /// The request's stream; answer on it.
        stream: StreamId,
        /// Header fields, pseudo-headers included.
        headers: Vec<(String, String)>,
        /// No body or trailers follow.
        end_stream: bool,
    },
    /// Request body bytes. Hand the count back with
    /// [`Connection::release_capacity`] once they are consumed; until then
    /// they count against the flow-control windows. Release as soon as the
    /// bytes are in a buffer of your own: holding them until a whole
    /// message has arrived stalls any message larger than
    /// [`Config::stream_window`]. An empty `data` with `end_stream` just
    /// ends the body.
    Data {
        /// The request's stream.
        stream: StreamId,
        /// Body bytes (a slice of the read buffer when large).
        data: Bytes,
        /// The body is complete.
        end_stream: bool,
    },
    /// Trailer fields ending the request (no pseudo-headers).
    Trailers {
        /// The request's stream.
        stream: StreamId,
        /// Trailer fields, names lowercase.
        headers: Vec<(String, String)>,
    },
    /// The stream ended abnormally: the client reset it, a limit or
    /// protocol error ended it, or the connection is going away. Cancel
    /// the work; sends on it now fail.
    Reset {
        /// The stream.
        stream: StreamId,
        /// The code it was reset with.
        code: ErrorCode,
    },
}

/// Why a command on a stream was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The stream is not open: never opened, already finished, or reset
    /// (in which case an [`Event::Reset`] was or will be delivered).
    UnknownStream,
    /// Response headers were already sent on the stream.
    HeadersAlreadySent,
    /// Data or trailers before the response headers.
    HeadersNotSent,
    /// The response was already ended.
    StreamEnded,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::UnknownStream => "stream is not open",
            SendError::HeadersAlreadySent => "response headers already sent",
            SendError::HeadersNotSent => "response headers not sent yet",
            SendError::StreamEnded => "response already ended",
        })
    }
}

impl std::error::Error for SendError {}

/// A header block that continues in CONTINUATION frames.
#[derive(Debug)]
struct PartialBlock {
    stream: StreamId,
    end_stream: bool,
    self_dependent: bool,
    bytes: Vec<u8>,
    frames: usize,
}

/// Where a graceful shutdown stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    /// Not shutting down.
    No,
    /// GOAWAY(2^31-1) and a PING sent; the final GOAWAY follows the PING's
    /// answer or the deadline.
    Announced { deadline: Instant },
    /// The final GOAWAY is sent: no stream above `accept_limit` is taken.
    Final,
}

/// One HTTP/2 server connection. See the module documentation for the call
/// order.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    reader: FrameDecoder,
    decoder: hpack::Decoder,
    encoder: hpack::Encoder,
    streams: BTreeMap<StreamId, Stream>,
    closed: RecentlyClosed,
    /// Highest stream identifier the client has used.
    last_client: StreamId,
    /// Highest stream taken for processing (GOAWAY's last-stream-id).
    last_accepted: StreamId,
    /// Streams above this are ignored (after the final GOAWAY).
    accept_limit: StreamId,
    block: Option<PartialBlock>,
    /// The client's first SETTINGS has arrived.
    got_settings: bool,
    /// Our SETTINGS are not acknowledged yet; sent at this time.
    settings_sent: Option<Instant>,
    peer_initial_window: u32,
    peer_max_frame_size: u32,
    /// Connection window for what we send.
    send_window: i64,
    /// Connection window for what the client sends.
    recv_window: i64,
    /// Connection-level bytes released and not yet announced.
    pending_update: u32,
    /// Streams with something queued that may be sendable, in turn.
    ready: VecDeque<StreamId>,
    conn_blocked_since: Option<Instant>,
    output: OutputQueue,
    scratch: BytesMut,
    queued_total: u64,
    written_total: u64,
    /// Output positions (in `queued_total` terms) where queued
    /// acknowledgements and resets end.
    control_marks: VecDeque<u64>,
    events: VecDeque<Event>,
    now: Instant,
    last_write: Instant,
    /// Since when no stream has been open.
    idle_since: Option<Instant>,
    resets: u32,
    resets_since: Instant,
    shutdown: Shutdown,
    peer_goaway: bool,
    closing: bool,
    aborted: bool,
    linger: bool,
    error: Option<ConnectionError>,
}

impl Connection {
    /// A new connection, accepted at `now`. Our SETTINGS (and a connection
    /// WINDOW_UPDATE) are queued at once, as the server preface.
    pub fn new(config: Config, now: Instant) -> Connection {
        let mut config = config;
        config.stream_window = config
            .stream_window
            .clamp(DEFAULT_WINDOW_SIZE, MAX_WINDOW_SIZE);
        config.connection_window = config
            .connection_window
            .clamp(DEFAULT_WINDOW_SIZE, MAX_WINDOW_SIZE);
        config.max_frame_size = config
            .max_frame_size
            .clamp(DEFAULT_MAX_FRAME_SIZE, MAX_FRAME_SIZE_LIMIT);
        let mut conn = Connection {
            config,
            reader: FrameDecoder::server(config.max_frame_size),
            decoder: hpack::Decoder::new(HPACK_TABLE_SIZE),
            encoder: hpack::Encoder::new(config.encoder_table_size),
            streams: BTreeMap::new(),
            closed: RecentlyClosed::default(),
            last_client: StreamId::ZERO,
            last_accepted: StreamId::ZERO,
            accept_limit: StreamId::MAX,
            block: None,
            got_settings: false,
            settings_sent: Some(now),
            peer_initial_window: DEFAULT_WINDOW_SIZE,
            peer_max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            send_window: i64::from(DEFAULT_WINDOW_SIZE),
            recv_window: i64::from(config.connection_window),
            pending_update: 0,
            ready: VecDeque::new(),
            conn_blocked_since: None,
            output: OutputQueue::default(),
            scratch: BytesMut::new(),
            queued_total: 0,
            written_total: 0,
            control_marks: VecDeque::new(),
            events: VecDeque::new(),
            now,
            last_write: now,
            idle_since: Some(now),
            resets: 0,
            resets_since: now,
            shutdown: Shutdown::No,
            peer_goaway: false,
            closing: false,
            aborted: false,
            linger: false,
            error: None,
        };
        let settings = Settings {
            max_concurrent_streams: Some(config.max_concurrent_streams),
            initial_window_size: Some(config.stream_window),
            max_frame_size: Some(config.max_frame_size),
            max_header_list_size: Some(config.max_header_list_size),
            ..Settings::default()
        };
        conn.push_frame(|b| settings.encode(b));
        let extra = config.connection_window - DEFAULT_WINDOW_SIZE;
        if extra > 0 {
            conn.push_frame(|b| WindowUpdate::new(StreamId::ZERO, extra).encode(b));
        }
        conn
    }

    // ----- getters -----

    /// Whether the driver should read from the socket now: false once the
    /// connection is closing, and while too much output is queued.
    pub fn wants_read(&self) -> bool {
        !self.aborted && !self.closing && self.output.len() <= self.config.output_high_water
    }

    /// Whether there are bytes to write.
    pub fn wants_write(&self) -> bool {
        !self.aborted && !self.output.is_empty()
    }

    /// Whether the connection is finished: the socket can be closed.
    pub fn is_closed(&self) -> bool {
        self.aborted || (self.closing && self.output.is_empty())
    }

    /// Whether the client may still be sending when the connection closes
    /// (it was closed for an error). A driver then half-closes and drains
    /// the socket for a moment, so the client reads our GOAWAY instead of
    /// a reset.
    pub fn wants_linger(&self) -> bool {
        self.linger && !self.aborted
    }

    /// The connection error that ended (or is ending) the connection.
    pub fn error(&self) -> Option<&ConnectionError> {
        self.error.as_ref()
    }

    /// Streams open (or half closed) now.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// The state of a stream.
    pub fn stream_state(&self, stream: StreamId) -> State {
        match self.streams.get(&stream) {
            Some(s) => s.state,
            None if stream <= self.last_client && !stream.is_zero() => State::Closed,
            None => State::Idle,
        }
    }

    /// Response body bytes queued on a stream and not yet in the output
    /// (waiting for flow-control windows). An application producing a long
    /// response can hold back while this is large.
    pub fn queued_send(&self, stream: StreamId) -> usize {
        self.streams.get(&stream).map_or(0, |s| s.queued_bytes)
    }

    /// Bytes waiting to be written.
    pub fn output_len(&self) -> usize {
        self.output.len()
    }

    // ----- input -----

    /// Room to read into; report how much was read with
    /// [`Connection::handle_recv`]. A frame's payload is read in place and
    /// handed out without a copy.
    pub fn recv_buf(&mut self) -> &mut [u8] {
        self.reader.recv_buf()
    }

    /// Reports that `n` bytes were read into [`Connection::recv_buf`].
    pub fn handle_recv(&mut self, n: usize, now: Instant) {
        self.now = now;
        if n == 0 || self.aborted || self.closing {
            return;
        }
        self.reader.commit(n);
        self.process();
    }

    /// Hands received bytes in (copies them into the read buffer).
    pub fn handle_read(&mut self, mut data: &[u8], now: Instant) {
        while !data.is_empty() && !self.aborted && !self.closing {
            let room = self.recv_buf();
            let n = room.len().min(data.len());
            room[..n].copy_from_slice(&data[..n]);
            data = &data[n..];
            self.handle_recv(n, now);
        }
    }

    /// The client closed its side. Streams still open can no longer
    /// complete: each is reported as [`Event::Reset`] with CANCEL; queued
    /// output is still written, then the connection closes.
    pub fn handle_eof(&mut self, now: Instant) {
        self.now = now;
        if self.aborted {
            return;
        }
        self.closing = true;
        self.drop_all_streams(ErrorCode::CANCEL);
    }

    /// Reports that the first `n` bytes of the pending output were written.
    pub fn handle_write(&mut self, n: usize, now: Instant) {
        self.now = now;
        if n == 0 {
            return;
        }
        self.last_write = now;
        self.written_total += n as u64;
        while let Some(&mark) = self.control_marks.front()
            && mark <= self.written_total
        {
            self.control_marks.pop_front();
        }
        self.output.consume(n);
        self.fill_output();
        self.maybe_finish();
    }

    /// Acts on whatever deadline has passed: output the client does not
    /// read (dropped), SETTINGS not acknowledged (GOAWAY SETTINGS_TIMEOUT),
    /// the end of a shutdown's grace period (final GOAWAY), a stream or
    /// connection window that stays closed, an idle connection (GOAWAY
    /// NO_ERROR).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.is_closed() {
            return;
        }
        let stall = self.config.stall_timeout;
        if !self.output.is_empty() && now >= self.last_write + stall {
            self.abort();
            return;
        }
        if self.closing {
            return;
        }
        if let Some(sent) = self.settings_sent
            && now >= sent + self.config.settings_timeout
        {
            self.connection_error(ConnectionError::new(
                ErrorCode::SETTINGS_TIMEOUT,
                "SETTINGS not acknowledged in time",
            ));
            return;
        }
        if let Shutdown::Announced { deadline } = self.shutdown
            && now >= deadline
        {
            self.final_goaway();
        }
        let stalled: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, s)| {
                s.send_window <= 0
                    && s.queued_bytes > 0
                    && s.blocked_since.is_some_and(|t| now >= t + stall)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in stalled {
            self.reset_stream(id, ErrorCode::CANCEL, true);
        }
        if let Some(since) = self.conn_blocked_since
            && now >= since + stall
            && self.send_window <= 0
            && self.streams.values().any(|s| s.queued_bytes > 0)
        {
            self.connection_error(ConnectionError::new(
                ErrorCode::ENHANCE_YOUR_CALM,
                "connection flow-control window stayed closed",
            ));
            return;
        }
        if let Some(since) = self.idle_since
            && now >= since + self.config.idle_timeout
            && !self.closing
        {
            self.push_goaway(self.last_accepted, ErrorCode::NO_ERROR, b"idle");
            self.closing = true;
        }
        self.settle();
    }

    // ----- mutators -----

    /// Sends the response headers of `stream`: `:status` then `headers`
    /// (names are lowercased; pseudo-headers and connection-specific
    /// fields are dropped; CR, LF and NUL in values become spaces). With
    /// `end_stream` this is the whole response (gRPC's "trailers-only").
    pub fn send_headers<N, V>(
        &mut self,
        stream: StreamId,
        status: u16,
        headers: impl IntoIterator<Item = (N, V)>,
        end_stream: bool,
        now: Instant,
    ) -> Result<(), SendError>
    where
        N: AsRef<str>,
        V: AsRef<str>,
    {
        self.now = now;
        let s = self
            .streams
            .get_mut(&stream)
            .ok_or(SendError::UnknownStream)?;
        if s.headers_queued {
            return Err(SendError::HeadersAlreadySent);
        }
        let mut fields = Vec::with_capacity(8);
        fields.push((":status".to_owned(), status.to_string()));
        push_app_fields(&mut fields, headers);
        s.headers_queued = true;
        s.end_queued = end_stream;
        s.queue.push_back(Outgoing::Headers { fields, end_stream });
        self.make_ready(stream);
        self.settle();
        Ok(())
    }

    /// Queues response body bytes on `stream`; they are written (without a
    /// copy) as the client's flow-control windows and its frame size
    /// allow. With `end_stream` the response ends with them.
    pub fn send_data(
        &mut self,
        stream: StreamId,
        data: Bytes,
        end_stream: bool,
        now: Instant,
    ) -> Result<(), SendError> {
        self.now = now;
        let s = self
            .streams
            .get_mut(&stream)
            .ok_or(SendError::UnknownStream)?;
        if !s.headers_queued {
            return Err(SendError::HeadersNotSent);
        }
        if s.end_queued {
            return Err(SendError::StreamEnded);
        }
        if data.is_empty() && !end_stream {
            return Ok(());
        }
        s.queued_bytes += data.len();
        s.end_queued = end_stream;
        s.queue.push_back(Outgoing::Data { data, end_stream });
        self.make_ready(stream);
        self.settle();
        Ok(())
    }

    /// Ends the response on `stream` with trailer fields (gRPC's status
    /// goes here). Sanitized as in [`Connection::send_headers`].
    pub fn send_trailers<N, V>(
        &mut self,
        stream: StreamId,
        headers: impl IntoIterator<Item = (N, V)>,
        now: Instant,
    ) -> Result<(), SendError>
    where
        N: AsRef<str>,
        V: AsRef<str>,
    {
        self.now = now;
        let s = self
            .streams
            .get_mut(&stream)
            .ok_or(SendError::UnknownStream)?;
        if !s.headers_queued {
            return Err(SendError::HeadersNotSent);
        }
        if s.end_queued {
            return Err(SendError::StreamEnded);
        }
        let mut fields = Vec::with_capacity(4);
        push_app_fields(&mut fields, headers);
        s.end_queued = true;
        s.queue.push_back(Outgoing::Headers {
            fields,
            end_stream: true,
        });
        self.make_ready(stream);
        self.settle();
        Ok(())
    }

    /// Resets `stream` with `code` (RST_STREAM); whatever was queued on it
    /// is dropped. No [`Event::Reset`] follows.
    pub fn reset(
        &mut self,
        stream: StreamId,
        code: ErrorCode,
        now: Instant,
    ) -> Result<(), SendError> {
        self.now = now;
        if !self.streams.contains_key(&stream) {
            return Err(SendError::UnknownStream);
        }
        self.reset_stream(stream, code, false);
        self.settle();
        Ok(())
    }

    /// Tells the connection that the application has consumed `n` body
    /// bytes of `stream` (from [`Event::Data`]): the client may send that
    /// much more. WINDOW_UPDATE frames go out in batches. Bytes of streams
    /// that have ended are given back by the connection itself, so late
    /// calls for them are ignored.
    pub fn release_capacity(&mut self, stream: StreamId, n: usize, now: Instant) {
        self.now = now;
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        let n = n.min(s.unreleased);
        if n == 0 {
            return;
        }
        s.unreleased -= n;
        self.release_stream_window(stream, n);
        self.release_connection_window(n);
        self.settle();
    }

    /// Starts a graceful shutdown: GOAWAY(2^31-1) and a PING now; once the
    /// PING is answered (or [`Config::shutdown_grace`] passes), the final
    /// GOAWAY with the last stream taken. Streams taken finish; then the
    /// connection closes.
    pub fn shutdown(&mut self, now: Instant) {
        self.now = now;
        if self.closing || self.aborted || self.shutdown != Shutdown::No {
            return;
        }
        if !self.got_settings {
            self.push_goaway(StreamId::ZERO, ErrorCode::NO_ERROR, b"shutting down");
            self.closing = true;
            return;
        }
        self.push_goaway(StreamId::MAX, ErrorCode::NO_ERROR, b"shutting down");
        self.push_frame(|b| Ping::new(SHUTDOWN_PING).encode(b));
        self.shutdown = Shutdown::Announced {
            deadline: now + self.config.shutdown_grace,
        };
        self.settle();
    }

    /// Closes at once: nothing more is written; every open stream is
    /// reported as [`Event::Reset`] with CANCEL.
    pub fn abort(&mut self) {
        self.aborted = true;
        self.closing = true;
        self.drop_all_streams(ErrorCode::CANCEL);
        self.output.clear();
    }

    // ----- output -----

    /// The next event for the application, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Fills `slices` with the pending output, front first; returns how many
    /// were filled. Write them with one vectored write: frame headers and
    /// body slices interleave, payload bytes are never copied.
    pub fn poll_transmit<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        if self.aborted {
            return 0;
        }
        self.output.fill(slices)
    }

    /// When [`Connection::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let stall = self.config.stall_timeout;
        let mut deadline: Option<Instant> = None;
        let mut consider = |t: Instant| deadline = Some(deadline.map_or(t, |d| d.min(t)));
        if !self.output.is_empty() {
            consider(self.last_write + stall);
        }
        if self.closing {
            return deadline;
        }
        if let Some(sent) = self.settings_sent {
            consider(sent + self.config.settings_timeout);
        }
        if let Shutdown::Announced { deadline } = self.shutdown {
            consider(deadline);
        }
        for s in self.streams.values() {
            if let Some(t) = s.blocked_since {
                consider(t + stall);
            }
        }
        if let Some(t) = self.conn_blocked_since {
            consider(t + stall);
        }
        if let Some(t) = self.idle_since {
            consider(t + self.config.idle_timeout);
        }
        deadline
    }

    // ----- frame handling -----

    /// Parses and handles every complete frame received.
    fn process(&mut self) {
        while !self.closing && !self.aborted {
            let frame = match self.reader.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    self.fail(e);
                    continue;
                }
            };
            if let Err(e) = self.on_frame(frame) {
                self.fail(e);
            }
        }
        self.settle();
    }

    fn fail(&mut self, e: Error) {
        match e {
            Error::Connection(e) => self.connection_error(e),
            Error::Stream(e) => self.reset_stream(e.stream, e.code, true),
        }
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), Error> {
        if self.block.is_some() {
            return match frame {
                Frame::Continuation(c) => self.on_continuation(c),
                _ => Err(protocol_error("header block interrupted by another frame")),
            };
        }
        if !self.got_settings && !matches!(&frame, Frame::Settings(s) if !s.ack) {
            return Err(protocol_error("the preface must be followed by SETTINGS"));
        }
        match frame {
            Frame::Data(d) => self.on_data(d),
            Frame::Headers(h) => self.on_headers(h),
            Frame::Priority(_) | Frame::Unknown(_) => Ok(()),
            Frame::RstStream(r) => self.on_rst_stream(r),
            Frame::Settings(s) => self.on_settings(s),
            Frame::PushPromise(_) => Err(protocol_error("PUSH_PROMISE from a client")),
            Frame::Ping(p) => self.on_ping(p),
            Frame::GoAway(_) => {
                self.peer_goaway = true;
                Ok(())
            }
            Frame::WindowUpdate(w) => self.on_window_update(w),
            Frame::Continuation(_) => Err(protocol_error("CONTINUATION without HEADERS")),
        }
    }

    fn on_settings(&mut self, s: Settings) -> Result<(), Error> {
        if s.ack {
            self.settings_sent = None;
            return Ok(());
        }
        self.got_settings = true;
        if let Some(n) = s.header_table_size {
            self.encoder.set_peer_max_table_size(n as usize);
        }
        if let Some(n) = s.max_frame_size {
            self.peer_max_frame_size = n;
        }
        if let Some(n) = s.initial_window_size {
            let delta = i64::from(n) - i64::from(self.peer_initial_window);
            self.peer_initial_window = n;
            for s in self.streams.values_mut() {
                s.send_window += delta;
                if s.send_window > i64::from(MAX_WINDOW_SIZE) {
                    return Err(Error::connection(
                        ErrorCode::FLOW_CONTROL_ERROR,
                        "SETTINGS_INITIAL_WINDOW_SIZE change overflows a stream window",
                    ));
                }
            }
            if delta > 0 {
                self.requeue_all();
            }
        }
        self.push_control(|b| Settings::ack().encode(b))
    }

    fn on_ping(&mut self, p: Ping) -> Result<(), Error> {
        if p.ack {
            if p.payload == SHUTDOWN_PING && matches!(self.shutdown, Shutdown::Announced { .. }) {
                self.final_goaway();
            }
            return Ok(());
        }
        self.push_control(|b| Ping::pong(p.payload).encode(b))
    }

    fn on_window_update(&mut self, w: WindowUpdate) -> Result<(), Error> {
        let inc = i64::from(w.increment);
        if w.stream.is_zero() {
            self.send_window += inc;
            if self.send_window > i64::from(MAX_WINDOW_SIZE) {
                return Err(Error::connection(
                    ErrorCode::FLOW_CONTROL_ERROR,
                    "connection window above 2^31-1",
                ));
            }
            if self.send_window > 0 {
                self.conn_blocked_since = None;
                self.requeue_all();
            }
            return Ok(());
        }
        self.check_not_idle(w.stream, "WINDOW_UPDATE")?;
        let Some(s) = self.streams.get_mut(&w.stream) else {
            return Ok(());
        };
        s.send_window += inc;
        if s.send_window > i64::from(MAX_WINDOW_SIZE) {
            return Err(Error::stream(
                w.stream,
                ErrorCode::FLOW_CONTROL_ERROR,
                "stream window above 2^31-1",
            ));
        }
        if s.send_window > 0 {
            s.blocked_since = None;
            if !s.queue.is_empty() {
                self.make_ready(w.stream);
            }
        }
        Ok(())
    }

    fn on_rst_stream(&mut self, r: RstStream) -> Result<(), Error> {
        self.check_not_idle(r.stream, "RST_STREAM")?;
        let Some(s) = self.streams.remove(&r.stream) else {
            return Ok(());
        };
        self.forget(s);
        self.closed.record(r.stream, Ended::ResetByPeer);
        self.events.push_back(Event::Reset {
            stream: r.stream,
            code: r.code,
        });
        self.count_reset()
    }

    fn on_data(&mut self, d: Data) -> Result<(), Error> {
        let id = d.stream;
        if !id.is_client_initiated() || id > self.last_client {
            return Err(protocol_error("DATA on an idle stream"));
        }
        let flow = d.flow_len();
        if flow as i64 > self.recv_window {
            return Err(Error::connection(
                ErrorCode::FLOW_CONTROL_ERROR,
                "DATA beyond the connection window",
            ));
        }
        self.recv_window -= flow as i64;
        let Some(s) = self.streams.get_mut(&id) else {
            self.release_connection_window(flow);
            return match self.closed.get(id) {
                Some(Ended::ResetByUs) => Ok(()),
                Some(Ended::ResetByPeer) => Err(Error::stream(
                    id,
                    ErrorCode::STREAM_CLOSED,
                    "DATA after RST_STREAM",
                )),
                _ => Err(Error::connection(
                    ErrorCode::STREAM_CLOSED,
                    "DATA on a closed stream",
                )),
            };
        };
        let refused = if !s.state.remote_open() {
            Some(Error::stream(
                id,
                ErrorCode::STREAM_CLOSED,
                "DATA after END_STREAM",
            ))
        } else if flow as i64 > s.recv_window {
            Some(Error::stream(
                id,
                ErrorCode::FLOW_CONTROL_ERROR,
                "DATA beyond the stream window",
            ))
        } else {
            s.received += d.data.len() as u64;
            s.content_length
                .filter(|&cl| s.received > cl || (d.end_stream && s.received != cl))
                .map(|_| {
                    Error::stream(
                        id,
                        ErrorCode::PROTOCOL_ERROR,
                        "body length differs from content-length",
                    )
                })
        };
        if let Some(e) = refused {
            self.release_connection_window(flow);
            return Err(e);
        }
        s.recv_window -= flow as i64;
        let len = d.data.len();
        s.unreleased += len;
        if d.end_stream {
            s.state = s.state.recv_end();
        }
        let closed = s.state == State::Closed;
        let padding = flow - len;
        if padding > 0 {
            self.release_stream_window(id, padding);
            self.release_connection_window(padding);
        }
        if len > 0 || d.end_stream {
            let data = if len < COPY_BELOW {
                Bytes::copy_from_slice(&d.data)
            } else {
                d.data
            };
            self.events.push_back(Event::Data {
                stream: id,
                data,
                end_stream: d.end_stream,
            });
        }
        if closed {
            self.finish_stream(id);
        }
        Ok(())
    }

    fn on_headers(&mut self, h: Headers) -> Result<(), Error> {
        let self_dependent = h.priority.is_some_and(|p| p.dependency == h.stream);
        if h.end_headers {
            return self.on_header_block(h.stream, &h.block, h.end_stream, self_dependent);
        }
        self.check_block_size(h.block.len())?;
        self.block = Some(PartialBlock {
            stream: h.stream,
            end_stream: h.end_stream,
            self_dependent,
            bytes: h.block.to_vec(),
            frames: 1,
        });
        Ok(())
    }

    fn on_continuation(&mut self, c: Continuation) -> Result<(), Error> {
        let Some(mut block) = self.block.take() else {
            return Err(protocol_error("CONTINUATION without HEADERS"));
        };
        if c.stream != block.stream {
            return Err(protocol_error("CONTINUATION on another stream"));
        }
        block.frames += 1;
        if block.frames > self.config.max_continuation_frames + 1 {
            return Err(Error::connection(
                ErrorCode::ENHANCE_YOUR_CALM,
                "too many CONTINUATION frames",
            ));
        }
        self.check_block_size(block.bytes.len() + c.block.len())?;
        block.bytes.extend_from_slice(&c.block);
        if c.end_headers {
            self.on_header_block(
                block.stream,
                &block.bytes,
                block.end_stream,
                block.self_dependent,
            )
        } else {
            self.block = Some(block);
            Ok(())
        }
    }

    fn check_block_size(&self, n: usize) -> Result<(), Error> {
        if n > self.config.max_header_block_bytes {
            return Err(Error::connection(
                ErrorCode::ENHANCE_YOUR_CALM,
                "header block too large",
            ));
        }
        Ok(())
    }

    /// A complete header block: a new request, or trailers.
    fn on_header_block(
        &mut self,
        id: StreamId,
        block: &[u8],
        end_stream: bool,
        self_dependent: bool,
    ) -> Result<(), Error> {
        if !id.is_client_initiated() {
            return Err(protocol_error("HEADERS on an even-numbered stream"));
        }
        // Every block goes through the decoder, whatever becomes of the
        // stream, so that the HPACK context stays in step with the peer's.
        let mut fields = Vec::new();
        let mut not_utf8 = false;
        let outcome = self
            .decoder
            .decode(
                block,
                self.config.max_header_list_size as usize,
                |n, v| match (std::str::from_utf8(n), std::str::from_utf8(v)) {
                    (Ok(n), Ok(v)) => fields.push((n.to_owned(), v.to_owned())),
                    _ => not_utf8 = true,
                },
            )
            .map_err(|e| Error::connection(ErrorCode::COMPRESSION_ERROR, format!("HPACK: {e}")))?;
        let too_large = outcome == hpack::Outcome::TooLarge;

        if let Some(s) = self.streams.get(&id) {
            if !s.state.remote_open() {
                return Err(Error::stream(
                    id,
                    ErrorCode::STREAM_CLOSED,
                    "HEADERS after END_STREAM",
                ));
            }
            return self.on_trailers(id, fields, too_large || not_utf8, end_stream);
        }
        if id <= self.last_client {
            return match self.closed.get(id) {
                Some(Ended::ResetByUs) => Ok(()),
                Some(Ended::ResetByPeer) => Err(Error::stream(
                    id,
                    ErrorCode::STREAM_CLOSED,
                    "HEADERS after RST_STREAM",
                )),
                Some(Ended::Finished) => Err(Error::connection(
                    ErrorCode::STREAM_CLOSED,
                    "HEADERS on a closed stream",
                )),
                None => Err(protocol_error(
                    "stream identifier not above the previous ones",
                )),
            };
        }
        self.last_client = id;
        if id > self.accept_limit {
            // After the final GOAWAY new streams are ignored (RFC 9113 §6.8).
            self.closed.record(id, Ended::ResetByUs);
            return Ok(());
        }
        if self_dependent {
            return Err(Error::stream(
                id,
                ErrorCode::PROTOCOL_ERROR,
                "stream depends on itself",
            ));
        }
        if too_large {
            return self.answer_too_large(id, end_stream);
        }
        if not_utf8 {
            return Err(Error::stream(
                id,
                ErrorCode::PROTOCOL_ERROR,
                "header field is not UTF-8",
            ));
        }
        if self.streams.len() >= self.config.max_concurrent_streams as usize {
            self.count_reset()?;
            return Err(Error::stream(
                id,
                ErrorCode::REFUSED_STREAM,
                "SETTINGS_MAX_CONCURRENT_STREAMS reached",
            ));
        }
        let content_length = check_request(&fields)
            .map_err(|why| Error::stream(id, ErrorCode::PROTOCOL_ERROR, why))?;
        if end_stream && content_length.is_some_and(|cl| cl != 0) {
            return Err(Error::stream(
                id,
                ErrorCode::PROTOCOL_ERROR,
                "content-length with no body",
            ));
        }
        let state = if end_stream {
            State::HalfClosedRemote
        } else {
            State::Open
        };
        let mut stream = Stream::new(state, self.config.stream_window, 0);
        stream.send_window = i64::from(self.peer_initial_window);
        stream.content_length = content_length;
        self.streams.insert(id, stream);
        self.last_accepted = id;
        self.idle_since = None;
        self.events.push_back(Event::Request {
            stream: id,
            headers: fields,
            end_stream,
        });
        Ok(())
    }

    fn on_trailers(
        &mut self,
        id: StreamId,
        fields: Vec<(String, String)>,
        unusable: bool,
        end_stream: bool,
    ) -> Result<(), Error> {
        let malformed = |why: &'static str| Err(Error::stream(id, ErrorCode::PROTOCOL_ERROR, why));
        if !end_stream {
            return malformed("trailers without END_STREAM");
        }
        if unusable {
            return malformed("trailers too large or not UTF-8");
        }
        if let Err(why) = check_trailers(&fields) {
            return malformed(why);
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if s.content_length.is_some_and(|cl| cl != s.received) {
            return malformed("body length differs from content-length");
        }
        s.state = s.state.recv_end();
        let closed = s.state == State::Closed;
        self.events.push_back(Event::Trailers {
            stream: id,
            headers: fields,
        });
        if closed {
            self.finish_stream(id);
        }
        Ok(())
    }

    /// Answers a request whose header list is over the limit with 431
    /// (RFC 9113 §10.5.1) without processing it.
    fn answer_too_large(&mut self, id: StreamId, end_stream: bool) -> Result<(), Error> {
        self.push_header_block(id, [(":status", "431")], true);
        self.closed.record(id, Ended::ResetByUs);
        if !end_stream {
            self.push_control(|b| RstStream::new(id, ErrorCode::NO_ERROR).encode(b))?;
        }
        Ok(())
    }

    /// A frame of a kind that cannot open a stream, on a stream that was
    /// never opened: a connection error (RFC 9113 §5.1, "idle").
    fn check_not_idle(&self, id: StreamId, what: &'static str) -> Result<(), Error> {
        if !id.is_client_initiated() || id > self.last_client {
            return Err(Error::connection(
                ErrorCode::PROTOCOL_ERROR,
                format!("{what} on an idle stream"),
            ));
        }
        Ok(())
    }

    fn count_reset(&mut self) -> Result<(), Error> {
        if self.now >= self.resets_since + self.config.reset_window {
            self.resets = 0;
            self.resets_since = self.now;
        }
        self.resets += 1;
        if self.resets > self.config.max_resets {
            return Err(Error::connection(
                ErrorCode::ENHANCE_YOUR_CALM,
                "too many streams reset or refused",
            ));
        }
        Ok(())
    }

    // ----- streams and windows -----

    /// Sends RST_STREAM for `id` and forgets it; `notify` reports it to the
    /// application as [`Event::Reset`].
    fn reset_stream(&mut self, id: StreamId, code: ErrorCode, notify: bool) {
        if let Some(s) = self.streams.remove(&id) {
            self.forget(s);
            if notify {
                self.events.push_back(Event::Reset { stream: id, code });
            }
        }
        self.closed.record(id, Ended::ResetByUs);
        if let Err(e) = self.push_control(|b| RstStream::new(id, code).encode(b)) {
            self.fail(e);
        }
    }

    /// Both sides have ended the stream.
    fn finish_stream(&mut self, id: StreamId) {
        if let Some(s) = self.streams.remove(&id) {
            self.forget(s);
        }
        self.closed.record(id, Ended::Finished);
    }

    /// Accounting for a stream leaving the table: body bytes the
    /// application never released go back to the connection window.
    fn forget(&mut self, s: Stream) {
        if s.unreleased > 0 {
            self.release_connection_window(s.unreleased);
        }
    }

    fn drop_all_streams(&mut self, code: ErrorCode) {
        for (id, s) in std::mem::take(&mut self.streams) {
            self.forget(s);
            self.events.push_back(Event::Reset { stream: id, code });
        }
        self.ready.clear();
        self.block = None;
    }

    fn release_stream_window(&mut self, id: StreamId, n: usize) {
        let threshold = self.config.stream_window / 2;
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if self.closing {
            return;
        }
        if !s.state.remote_open() {
            return;
        }
        s.pending_update = s.pending_update.saturating_add(n as u32);
        if s.pending_update >= threshold {
            let inc = s.pending_update;
            s.pending_update = 0;
            s.recv_window += i64::from(inc);
            self.push_frame(|b| WindowUpdate::new(id, inc).encode(b));
        }
    }

    fn release_connection_window(&mut self, n: usize) {
        if self.closing {
            return;
        }
        self.pending_update = self.pending_update.saturating_add(n as u32);
        if self.pending_update >= self.config.connection_window / 2 {
            let inc = self.pending_update;
            self.pending_update = 0;
            self.recv_window += i64::from(inc);
            self.push_frame(|b| WindowUpdate::new(StreamId::ZERO, inc).encode(b));
        }
    }

    fn make_ready(&mut self, id: StreamId) {
        if let Some(s) = self.streams.get_mut(&id)
            && !s.ready
        {
            s.ready = true;
            self.ready.push_back(id);
        }
    }

    /// Puts every stream with something queued back in turn (a window
    /// opened).
    fn requeue_all(&mut self) {
        for (&id, s) in self.streams.iter_mut() {
            if !s.ready && !s.queue.is_empty() {
                s.ready = true;
                self.ready.push_back(id);
            }
        }
    }

    // ----- output -----

    /// Moves queued stream output into the output, a frame per stream in
    /// turn, while windows allow and until a batch is queued.
    fn fill_output(&mut self) {
        if self.closing {
            return;
        }
        while self.output.len() < WRITE_BATCH {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let Some(mut s) = self.streams.remove(&id) else {
                continue;
            };
            s.ready = false;
            let (again, ended) = self.send_from(id, &mut s);
            if ended {
                self.forget(s);
                continue;
            }
            if again {
                s.ready = true;
                self.ready.push_back(id);
            }
            self.streams.insert(id, s);
        }
    }

    /// Sends what a stream's turn allows: header blocks at its front, then
    /// one DATA frame. Returns (whether it should get another turn, whether
    /// the stream ended).
    fn send_from(&mut self, id: StreamId, s: &mut Stream) -> (bool, bool) {
        loop {
            match s.queue.front_mut() {
                None => return (false, false),
                Some(Outgoing::Headers { .. }) => {
                    let Some(Outgoing::Headers { fields, end_stream }) = s.queue.pop_front() else {
                        return (false, false);
                    };
                    self.push_header_block(id, fields, end_stream);
                    if end_stream {
                        return (false, self.local_end(id, s));
                    }
                }
                Some(Outgoing::Data { data, end_stream }) => {
                    let window = s.send_window.min(self.send_window);
                    if !data.is_empty() && window <= 0 {
                        if s.send_window <= 0 {
                            s.blocked_since.get_or_insert(self.now);
                        } else {
                            self.conn_blocked_since.get_or_insert(self.now);
                        }
                        return (false, false);
                    }
                    let n = data
                        .len()
                        .min(window.max(0) as usize)
                        .min(self.peer_max_frame_size as usize);
                    let chunk = data.split_to(n);
                    let end = *end_stream && data.is_empty();
                    if data.is_empty() {
                        s.queue.pop_front();
                    }
                    s.queued_bytes -= n;
                    s.send_window -= n as i64;
                    self.send_window -= n as i64;
                    s.blocked_since = None;
                    let head = Data::head(id, n, end);
                    self.push_frame(|b| head.encode(b));
                    self.push(chunk);
                    if end {
                        return (false, self.local_end(id, s));
                    }
                    return (!s.queue.is_empty(), false);
                }
            }
        }
    }

    /// We sent END_STREAM on `id`. Returns whether the stream is closed.
    fn local_end(&mut self, id: StreamId, s: &mut Stream) -> bool {
        s.state = s.state.send_end();
        if s.state == State::HalfClosedLocal {
            // The response is complete while the request is still coming:
            // ask the client to stop sending (RFC 9113 §8.1).
            s.state = State::Closed;
            self.closed.record(id, Ended::ResetByUs);
            self.push_frame(|b| RstStream::new(id, ErrorCode::NO_ERROR).encode(b));
        } else {
            self.closed.record(id, Ended::Finished);
        }
        true
    }

    /// Encodes a header block and queues it as HEADERS and as many
    /// CONTINUATION frames as the client's frame size requires.
    fn push_header_block<N, V>(
        &mut self,
        id: StreamId,
        fields: impl IntoIterator<Item = (N, V)>,
        end_stream: bool,
    ) where
        N: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut block = Vec::with_capacity(64);
        self.encoder.encode(fields, &mut block);
        let mut rest = Bytes::from(block);
        let max = self.peer_max_frame_size as usize;
        let mut first = true;
        loop {
            let chunk = rest.split_to(rest.len().min(max));
            let last = rest.is_empty();
            let head = if first {
                Headers::head(id, chunk.len(), end_stream, last)
            } else {
                Continuation::head(id, chunk.len(), last)
            };
            self.push_frame(|b| head.encode(b));
            self.push(chunk);
            first = false;
            if last {
                break;
            }
        }
    }

    fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        if self.output.is_empty() {
            // A write stall is measured from when there was something to
            // write, not from the last write long ago.
            self.last_write = self.now;
        }
        self.queued_total += chunk.len() as u64;
        self.output.push(chunk);
    }

    fn push_frame(&mut self, encode: impl FnOnce(&mut BytesMut)) {
        if self.scratch.capacity() < 128 {
            self.scratch.reserve(4096);
        }
        encode(&mut self.scratch);
        let frame = self.scratch.split().freeze();
        self.push(frame);
    }

    /// Queues an acknowledgement or a reset, counting it against
    /// [`Config::max_pending_control`].
    fn push_control(&mut self, encode: impl FnOnce(&mut BytesMut)) -> Result<(), Error> {
        self.push_frame(encode);
        self.control_marks.push_back(self.queued_total);
        if self.control_marks.len() > self.config.max_pending_control {
            return Err(Error::connection(
                ErrorCode::ENHANCE_YOUR_CALM,
                "too many acknowledgements and resets waiting to be written",
            ));
        }
        Ok(())
    }

    fn push_goaway(&mut self, last: StreamId, code: ErrorCode, debug: &[u8]) {
        let debug = Bytes::copy_from_slice(&debug[..debug.len().min(MAX_DEBUG_DATA)]);
        self.push_frame(|b| GoAway::new(last, code, debug).encode(b));
    }

    /// Ends the connection for an error: GOAWAY with the last stream taken,
    /// every open stream reported reset, nothing more read.
    fn connection_error(&mut self, e: ConnectionError) {
        if self.closing || self.aborted {
            return;
        }
        self.push_goaway(self.last_accepted, e.code, e.reason.as_bytes());
        self.closing = true;
        self.drop_all_streams(e.code);
        self.linger = true;
        self.error = Some(e);
    }

    /// The second GOAWAY of a graceful shutdown.
    fn final_goaway(&mut self) {
        self.shutdown = Shutdown::Final;
        self.accept_limit = self.last_client;
        self.push_goaway(self.last_accepted, ErrorCode::NO_ERROR, b"shutting down");
    }

    /// Brings the output, closing and idle bookkeeping up to date after
    /// anything changed.
    fn settle(&mut self) {
        self.fill_output();
        self.maybe_finish();
        if self.streams.is_empty() {
            self.idle_since.get_or_insert(self.now);
        } else {
            self.idle_since = None;
        }
    }

    fn maybe_finish(&mut self) {
        if self.closing || self.aborted {
            return;
        }
        let draining = self.shutdown == Shutdown::Final || self.peer_goaway;
        if draining && self.streams.is_empty() && self.block.is_none() {
            self.closing = true;
        }
    }
}

fn protocol_error(reason: &'static str) -> Error {
    Error::connection(ErrorCode::PROTOCOL_ERROR, reason)
}

/// Header fields that belong to a hop, not a message: not allowed in
/// HTTP/2 (RFC 9113 §8.2.2).
fn is_connection_specific(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
    )
}

/// Whether `b` may appear in an HTTP/2 field name (a lowercase token
/// character).
fn is_name_byte(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
        | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty header name");
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("uppercase header name");
    }
    if !name.bytes().all(is_name_byte) {
        return Err("invalid character in a header name");
    }
    if is_connection_specific(name) {
        return Err("connection-specific header field");
    }
    Ok(())
}

/// RFC 9113 §8.2.1: no NUL, CR or LF; no whitespace at either end.
fn check_value(value: &str) -> Result<(), &'static str> {
    let b = value.as_bytes();
    if b.iter().any(|&c| c == 0 || c == b'\r' || c == b'\n') {
        return Err("NUL, CR or LF in a header value");
    }
    if matches!(b.first(), Some(b' ' | b'\t')) || matches!(b.last(), Some(b' ' | b'\t')) {
        return Err("whitespace around a header value");
    }
    Ok(())
}

/// Checks a request's header list (RFC 9113 §8.3.1); returns its
/// `content-length`, if any.
fn check_request(fields: &[(String, String)]) -> Result<Option<u64>, &'static str> {
    let mut method: Option<&str> = None;
    let mut scheme = false;
    let mut path: Option<&str> = None;
    let mut authority = false;
    let mut regular = false;
    let mut content_length: Option<u64> = None;
    for (name, value) in fields {
        check_value(value)?;
        if let Some(pseudo) = name.strip_prefix(':') {
            if regular {
                return Err("pseudo-header after a regular field");
            }
            let duplicate = match pseudo {
                "method" => method.replace(value).is_some(),
                "scheme" => std::mem::replace(&mut scheme, true),
                "path" => path.replace(value).is_some(),
                "authority" => std::mem::replace(&mut authority, true),
                _ => return Err("unknown or response pseudo-header"),
            };
            if duplicate {
                return Err("repeated pseudo-header");
            }
            continue;
        }
        regular = true;
        check_name(name)?;
        if name == "te" && value != "trailers" {
            return Err("te other than \"trailers\"");
        }
        if name == "content-length" {
            let n = value.parse::<u64>().map_err(|_| "invalid content-length")?;
            if content_length.is_some_and(|c| c != n) {
                return Err("conflicting content-length values");
            }
            content_length = Some(n);
        }
    }
    match method {
        None => Err("missing :method"),
        Some("CONNECT") if scheme || path.is_some() || !authority => {
            Err("CONNECT needs :authority and no :scheme or :path")
        }
        Some("CONNECT") => Ok(content_length),
        Some(_) if !scheme => Err("missing :scheme"),
        Some(_) if path.is_none_or(str::is_empty) => Err("missing or empty :path"),
        Some(_) => Ok(content_length),
    }
}

fn check_trailers(fields: &[(String, String)]) -> Result<(), &'static str> {
    for (name, value) in fields {
        if name.starts_with(':') {
            return Err("pseudo-header in trailers");
        }
        check_name(name)?;
        check_value(value)?;
    }
    Ok(())
}

/// Appends the application's fields, sanitized for the wire.
fn push_app_fields<N, V>(out: &mut Vec<(String, String)>, fields: impl IntoIterator<Item = (N, V)>)
where
    N: AsRef<str>,
    V: AsRef<str>,
{
    for (name, value) in fields {
        let name = name.as_ref();
        let value = value.as_ref();
        let lower: Cow<'_, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        if lower.is_empty()
            || !lower.bytes().all(is_name_byte)
            || is_connection_specific(&lower)
            || lower == "te"
        {
            continue;
        }
        let value = if value.contains(['\r', '\n', '\0']) {
            value.replace(['\r', '\n', '\0'], " ")
        } else {
            value.to_owned()
        };
        out.push((lower.into_owned(), value));
    }
}

/// The first value of a header field in a list as [`Event::Request`] and
/// [`Event::Trailers`] carry it, by exact (lowercase) name.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}
