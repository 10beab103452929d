//! Test support for `protocol::http2`: a frame-builder vocabulary
//! (`frames::headers(1).request("POST", "/x").eos()`), a small test client
//! with its own HPACK context, and [`Pair`], a client and a server
//! connection joined in memory and driven with a simulated clock.
//!
//! Compiled for tests only; calls the rest of `protocol::http2`.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use super::connection::{Config, Connection, Event};
use super::error::ErrorCode;
use super::frame::{
    Continuation, Data, Frame, FrameDecoder, GoAway, Head, Headers, MAX_FRAME_SIZE_LIMIT, PREFACE,
    Ping, Priority, PrioritySpec, RstStream, Settings, StreamId, WindowUpdate, flags,
};
use super::hpack;

/// Something the test client sends: bytes ready to go, or a header block
/// its HPACK encoder still has to encode.
pub enum Out {
    /// Encoded frames.
    Bytes(Bytes),
    /// HEADERS (and CONTINUATIONs) from fields.
    Headers(HeadersBuilder),
}

/// The frame-builder vocabulary.
pub mod frames {
    use super::*;

    /// HEADERS on stream `id`.
    pub fn headers(id: u32) -> HeadersBuilder {
        HeadersBuilder {
            stream: StreamId::new(id),
            fields: Vec::new(),
            end_stream: false,
            end_headers: true,
            pad: None,
            priority: None,
            split: None,
            block: None,
        }
    }

    /// DATA on stream `id`.
    pub fn data(id: u32, payload: impl Into<Bytes>) -> Data {
        Data::new(StreamId::new(id), payload.into(), false)
    }

    /// An empty SETTINGS frame, to add settings to.
    pub fn settings() -> Settings {
        Settings::default()
    }

    /// A SETTINGS acknowledgement.
    pub fn settings_ack() -> Settings {
        Settings::ack()
    }

    /// PING.
    pub fn ping(payload: [u8; 8]) -> Ping {
        Ping::new(payload)
    }

    /// PING acknowledgement.
    pub fn pong(payload: [u8; 8]) -> Ping {
        Ping::pong(payload)
    }

    /// WINDOW_UPDATE.
    pub fn window_update(id: u32, increment: u32) -> WindowUpdate {
        WindowUpdate::new(StreamId::new(id), increment)
    }

    /// RST_STREAM.
    pub fn reset(id: u32, code: ErrorCode) -> RstStream {
        RstStream::new(StreamId::new(id), code)
    }

    /// GOAWAY.
    pub fn goaway(last: u32, code: ErrorCode) -> GoAway {
        GoAway::new(StreamId::new(last), code, Bytes::new())
    }

    /// PRIORITY.
    pub fn priority(id: u32, dependency: u32) -> Priority {
        Priority {
            stream: StreamId::new(id),
            spec: PrioritySpec {
                dependency: StreamId::new(dependency),
                exclusive: false,
                weight: 15,
            },
        }
    }

    /// CONTINUATION with a literal block fragment.
    pub fn continuation(id: u32, block: impl Into<Bytes>) -> Continuation {
        Continuation::new(StreamId::new(id), block.into(), false)
    }

    /// Any frame, byte for byte (its length taken from the payload).
    pub fn raw(kind: u8, flags: u8, id: u32, payload: &[u8]) -> Out {
        let head = Head {
            length: payload.len() as u32,
            kind,
            flags,
            stream: StreamId::new(id),
        };
        let mut b = BytesMut::new();
        head.encode(&mut b);
        b.put_slice(payload);
        Out::Bytes(b.freeze())
    }
}

/// A HEADERS frame being described.
pub struct HeadersBuilder {
    stream: StreamId,
    fields: Vec<(String, String)>,
    end_stream: bool,
    end_headers: bool,
    pad: Option<u8>,
    priority: Option<PrioritySpec>,
    split: Option<usize>,
    block: Option<Bytes>,
}

impl HeadersBuilder {
    /// A request's pseudo-headers: `:method`, `:scheme` http, `:path`,
    /// `:authority` localhost.
    pub fn request(self, method: &str, path: &str) -> Self {
        self.field(":method", method)
            .field(":scheme", "http")
            .field(":path", path)
            .field(":authority", "localhost")
    }

    /// A gRPC call as clients send it.
    pub fn grpc(self, path: &str) -> Self {
        self.request("POST", path)
            .field("content-type", "application/grpc")
            .field("te", "trailers")
    }

    /// One more field.
    pub fn field(mut self, name: &str, value: &str) -> Self {
        self.fields.push((name.to_owned(), value.to_owned()));
        self
    }

    /// END_STREAM.
    pub fn eos(mut self) -> Self {
        self.end_stream = true;
        self
    }

    /// Without END_HEADERS (a CONTINUATION must follow).
    pub fn open(mut self) -> Self {
        self.end_headers = false;
        self
    }

    /// PADDED with `n` bytes of padding.
    pub fn padded(mut self, n: u8) -> Self {
        self.pad = Some(n);
        self
    }

    /// PRIORITY fields depending on `dependency`.
    pub fn priority(mut self, dependency: u32) -> Self {
        self.priority = Some(PrioritySpec {
            dependency: StreamId::new(dependency),
            exclusive: true,
            weight: 31,
        });
        self
    }

    /// Splits the block into fragments of `n` bytes: HEADERS then
    /// CONTINUATIONs.
    pub fn split(mut self, n: usize) -> Self {
        self.split = Some(n.max(1));
        self
    }

    /// Uses these bytes as the header block instead of encoding fields.
    pub fn block(mut self, block: impl Into<Bytes>) -> Self {
        self.block = Some(block.into());
        self
    }
}

macro_rules! encodable {
    ($($t:ty),*) => {$(
        impl From<$t> for Out {
            fn from(f: $t) -> Out {
                let mut b = BytesMut::new();
                f.encode(&mut b);
                Out::Bytes(b.freeze())
            }
        }
    )*};
}
encodable!(
    Data,
    Settings,
    Ping,
    WindowUpdate,
    RstStream,
    GoAway,
    Priority,
    Continuation
);

impl From<HeadersBuilder> for Out {
    fn from(h: HeadersBuilder) -> Out {
        Out::Headers(h)
    }
}

/// Builder-style setters on frames, so that tests read as sentences.
pub trait DataExt {
    /// END_STREAM.
    fn eos(self) -> Self;
    /// PADDED with `n` bytes.
    fn padded(self, n: u8) -> Self;
}

impl DataExt for Data {
    fn eos(mut self) -> Data {
        self.end_stream = true;
        self
    }
    fn padded(mut self, n: u8) -> Data {
        self.pad_len = Some(n);
        self
    }
}

/// A frame the test client received, header blocks decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    /// A complete header block.
    Headers {
        /// Stream.
        stream: u32,
        /// Decoded fields.
        fields: Vec<(String, String)>,
        /// END_STREAM.
        end_stream: bool,
    },
    /// DATA.
    Data {
        /// Stream.
        stream: u32,
        /// Payload.
        data: Bytes,
        /// END_STREAM.
        end_stream: bool,
    },
    /// Any other frame.
    Frame(Frame),
}

impl Got {
    /// The GOAWAY code, if this is a GOAWAY.
    pub fn goaway(&self) -> Option<(u32, ErrorCode)> {
        match self {
            Got::Frame(Frame::GoAway(g)) => Some((g.last_stream.value(), g.code)),
            _ => None,
        }
    }

    /// The RST_STREAM, if this is one.
    pub fn reset(&self) -> Option<(u32, ErrorCode)> {
        match self {
            Got::Frame(Frame::RstStream(r)) => Some((r.stream.value(), r.code)),
            _ => None,
        }
    }
}

/// The client end: an HPACK context and a frame reader of its own.
pub struct Client {
    encoder: hpack::Encoder,
    decoder: hpack::Decoder,
    reader: FrameDecoder,
    partial: Option<(u32, bool, Vec<u8>)>,
}

impl Client {
    fn new() -> Client {
        Client {
            encoder: hpack::Encoder::new(4096),
            decoder: hpack::Decoder::new(4096),
            reader: FrameDecoder::frames(MAX_FRAME_SIZE_LIMIT),
            partial: None,
        }
    }

    fn encode(&mut self, out: Out) -> Bytes {
        let h = match out {
            Out::Bytes(b) => return b,
            Out::Headers(h) => h,
        };
        let block = match h.block {
            Some(b) => b,
            None => {
                let mut v = Vec::new();
                self.encoder.encode(
                    h.fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
                    &mut v,
                );
                Bytes::from(v)
            }
        };
        let mut pieces: Vec<Bytes> = match h.split {
            Some(n) if !block.is_empty() => block.chunks(n).map(Bytes::copy_from_slice).collect(),
            _ => vec![block],
        };
        let first = pieces.remove(0);
        let mut out = BytesMut::new();
        Headers {
            stream: h.stream,
            block: first,
            end_stream: h.end_stream,
            end_headers: h.end_headers && pieces.is_empty(),
            priority: h.priority,
            pad_len: h.pad,
        }
        .encode(&mut out);
        let n = pieces.len();
        for (i, piece) in pieces.into_iter().enumerate() {
            Continuation::new(h.stream, piece, h.end_headers && i + 1 == n).encode(&mut out);
        }
        out.freeze()
    }

    fn read(&mut self, bytes: &[u8], got: &mut VecDeque<Got>) {
        self.reader.push(bytes);
        loop {
            let frame = match self.reader.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => panic!("server sent a frame the client cannot parse: {e}"),
            };
            match frame {
                Frame::Headers(h) => {
                    assert!(self.partial.is_none(), "HEADERS inside a header block");
                    let mut block = h.block.to_vec();
                    if h.end_headers {
                        got.push_back(self.decode(h.stream.value(), h.end_stream, &block));
                    } else {
                        self.partial =
                            Some((h.stream.value(), h.end_stream, std::mem::take(&mut block)));
                    }
                }
                Frame::Continuation(c) => {
                    let (id, eos, mut block) =
                        self.partial.take().expect("CONTINUATION without HEADERS");
                    assert_eq!(id, c.stream.value());
                    block.extend_from_slice(&c.block);
                    if c.end_headers {
                        got.push_back(self.decode(id, eos, &block));
                    } else {
                        self.partial = Some((id, eos, block));
                    }
                }
                Frame::Data(d) => got.push_back(Got::Data {
                    stream: d.stream.value(),
                    data: d.data,
                    end_stream: d.end_stream,
                }),
                other => {
                    assert!(self.partial.is_none(), "frame inside a header block");
                    got.push_back(Got::Frame(other));
                }
            }
        }
    }

    fn decode(&mut self, stream: u32, end_stream: bool, block: &[u8]) -> Got {
        let mut fields = Vec::new();
        self.decoder
            .decode(block, usize::MAX, |n, v| {
                fields.push((
                    String::from_utf8(n.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                ))
            })
            .expect("server's header block decodes");
        Got::Headers {
            stream,
            fields,
            end_stream,
        }
    }
}

/// A client and a server connection joined in memory, with a clock.
pub struct Pair {
    /// The connection under test.
    pub server: Connection,
    /// The test client.
    pub client: Client,
    /// Simulated time.
    pub now: Instant,
    /// Whether the client reads what the server writes.
    pub client_reads: bool,
    got: VecDeque<Got>,
    events: VecDeque<Event>,
}

impl Pair {
    /// A server with `config`, and no bytes exchanged yet.
    pub fn raw(config: Config) -> Pair {
        let now = Instant::now();
        Pair {
            server: Connection::new(config, now),
            client: Client::new(),
            now,
            client_reads: true,
            got: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// A server with `config` after the handshake: preface and SETTINGS
    /// exchanged and acknowledged both ways; what the server sent during
    /// it is dropped.
    pub fn new(config: Config) -> Pair {
        Pair::with_settings(config, frames::settings())
    }

    /// As [`Pair::new`], the client announcing `settings`.
    pub fn with_settings(config: Config, settings: Settings) -> Pair {
        let mut p = Pair::raw(config);
        p.send_bytes(PREFACE);
        p.send(settings);
        let got = p.recv();
        assert!(
            got.iter()
                .any(|g| matches!(g, Got::Frame(Frame::Settings(s)) if s.ack)),
            "server acknowledges the client's SETTINGS: {got:?}"
        );
        p.send(frames::settings_ack());
        assert!(p.recv().is_empty());
        p
    }

    /// Sends a frame (or frames) from the client.
    pub fn send(&mut self, out: impl Into<Out>) {
        let bytes = self.client.encode(out.into());
        self.send_bytes(&bytes);
    }

    /// Sends raw bytes from the client.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.server.handle_read(bytes, self.now);
        self.drive();
    }

    /// Moves what the server wrote to the client (while it reads) and the
    /// server's events to the test.
    pub fn drive(&mut self) {
        while let Some(e) = self.server.poll_event() {
            self.events.push_back(e);
        }
        while self.client_reads && self.server.wants_write() {
            let mut slices = [IoSlice::new(&[]); 64];
            let n = self.server.poll_transmit(&mut slices);
            let mut bytes = Vec::new();
            for s in &slices[..n] {
                bytes.extend_from_slice(s);
            }
            self.server.handle_write(bytes.len(), self.now);
            self.client.read(&bytes, &mut self.got);
        }
        while let Some(e) = self.server.poll_event() {
            self.events.push_back(e);
        }
    }

    /// Everything the client received since the last call.
    pub fn recv(&mut self) -> Vec<Got> {
        self.drive();
        self.got.drain(..).collect()
    }

    /// Every event the server reported since the last call.
    pub fn events(&mut self) -> Vec<Event> {
        self.drive();
        self.events.drain(..).collect()
    }

    /// Moves the clock and lets the server act on its deadlines.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.server.handle_timeout(self.now);
        self.drive();
    }

    /// Asserts that the server sent GOAWAY with `code` and is closed.
    pub fn expect_goaway(&mut self, code: ErrorCode) {
        let got = self.recv();
        assert!(
            got.last()
                .and_then(Got::goaway)
                .is_some_and(|(_, c)| c == code),
            "expected GOAWAY({code}) last, got {got:?}"
        );
        assert!(
            self.server.is_closed(),
            "server still open after GOAWAY({code})"
        );
    }

    /// Asserts that the server reset stream `id` with `code`.
    pub fn expect_reset(&mut self, id: u32, code: ErrorCode) {
        let got = self.recv();
        assert!(
            got.contains(&Got::Frame(Frame::RstStream(RstStream::new(
                StreamId::new(id),
                code
            )))),
            "expected RST_STREAM({id}, {code}), got {got:?}"
        );
        assert!(
            !self.server.is_closed(),
            "connection closed by a stream error"
        );
    }
}

/// A flag value for tests that build raw frames.
pub const END_HEADERS: u8 = flags::END_HEADERS;
