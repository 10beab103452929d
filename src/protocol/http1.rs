//! Sans-IO HTTP/1.1 server connection.
//!
//! [`Connection`] turns the bytes a client sends into [`Request`]s and the
//! [`Response`]s the application hands back into bytes to write. It owns no
//! socket, starts no thread and reads no clock: the caller passes bytes and
//! the current [`Instant`] in, and asks what to write and when to wake it.
//! It may call `core` (for [`CancelFlag`]) and nothing else in the crate.
//!
//! # Call order
//!
//! The driver (`net::` on mio, or a test) repeats:
//!
//! 1. Input: fill [`Connection::recv_buf`] from the socket and report the
//!    count with [`Connection::handle_recv`] (or hand a slice to
//!    [`Connection::handle_read`]); on end of stream call
//!    [`Connection::handle_eof`]; when the deadline from
//!    [`Connection::poll_timeout`] passes call [`Connection::handle_timeout`].
//! 2. Requests: drain [`Connection::poll_request`] and give each to the
//!    application. Its answer comes back, on any schedule and in any order,
//!    through [`Connection::send_response`] with the request's `seq`.
//! 3. Output: write the slices from [`Connection::poll_transmit`] (vectored)
//!    and report progress with [`Connection::handle_write`].
//! 4. Interest: read only while [`Connection::wants_read`]; write while
//!    [`Connection::wants_write`]; drop the socket once
//!    [`Connection::is_closed`].
//!
//! # What it implements
//!
//! Keep-alive (HTTP/1.1 by default, HTTP/1.0 on `Connection: keep-alive`),
//! pipelining with responses written in request order whatever order they
//! complete in, `Expect: 100-continue`, `Content-Length` and chunked request
//! bodies (trailers read and dropped; when both framings are sent, chunked
//! wins and the connection closes after the answer, as RFC 9112 §6.1 asks),
//! at most [`MAX_CHUNKS`] non-empty chunks per body, limits on header and
//! body size, a header timeout, a body deadline with a minimum rate, a
//! body-stall timeout, an idle keep-alive timeout and a write-stall timeout.
//! Errors the connection detects itself are answered with a JSON body
//! `{"error":"..."}` and end the connection.
//!
//! A body over the size limit is not read: its request is still handed out,
//! empty and marked [`Request::oversized`], so that the application can
//! word the refusal; the connection closes after that answer.
//!
//! Content codings are the application's to apply, off the thread that
//! drives the connection when they are expensive: a request body sent with
//! `Content-Encoding: gzip|deflate` comes out as sent, with
//! [`Request::content_coding`] set, and [`Request::decode_body`] undoes it
//! incrementally, stopping at the decoded-size limit. Likewise
//! [`Request::response_coding`] is what `Accept-Encoding` negotiated, and
//! [`compress_response`] applies it to the responses the application
//! chooses to compress; the connection writes responses as given.
//!
//! Request bodies framed by `Content-Length` are read straight into the
//! buffer the [`Request::body`] is later split from, so they are not copied;
//! chunked and compressed bodies are assembled (one copy, by necessity).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, IoSlice, Read, Write};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use flate2::Compression;

use crate::core::CancelFlag;
use crate::protocol::output::OutputQueue;

/// Most header lines one request may carry; more is answered with 431.
const MAX_HEADERS: usize = 128;
/// How much to read at a time while waiting for a request head.
const HEAD_READ_WINDOW: usize = 16 * 1024;
/// Smallest and largest read while a body with a known length arrives.
const MIN_BODY_READ_WINDOW: usize = 16 * 1024;
const MAX_BODY_READ_WINDOW: usize = 256 * 1024;
/// Bodies larger than this get a fresh read buffer once split out.
const RELEASE_AFTER_BODY_BYTES: usize = 256 * 1024;
/// Longest chunk-size line (size plus extensions) accepted in a chunked body.
const MAX_CHUNK_LINE_BYTES: usize = 4096;
/// Most non-empty chunks one chunked body may have (Triton's limit): each
/// costs bookkeeping however small it is, so a body of a million one-byte
/// chunks is refused (400) instead of being assembled.
pub const MAX_CHUNKS: usize = 1 << 16;
/// The default body size limit, before and after decoding: 64 MiB, as
/// Triton's `--http-max-input-size`.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Status line sent for `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Limits and timeouts of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Largest request head (request line and headers); more is 431.
    pub max_header_bytes: usize,
    /// Largest request body as sent on the wire; a larger one is not read
    /// and its request comes out [`Request::oversized`].
    pub max_body_bytes: usize,
    /// Largest request body after `Content-Encoding` is undone: the limit
    /// the application passes to [`Request::decode_body`].
    pub max_decoded_body_bytes: usize,
    /// Time a client has to send a complete request head once it started
    /// one; then 408.
    pub header_timeout: Duration,
    /// Time a client has to send a request body once its head is read,
    /// extended by one second for every [`Config::min_body_rate`] bytes
    /// that arrive; then 408. A body trickled slower than that rate is cut
    /// off however often it makes progress.
    pub body_timeout: Duration,
    /// Bytes per second a body must average to earn more time than
    /// [`Config::body_timeout`]; 0 gives every body just that time.
    pub min_body_rate: u64,
    /// Time a connection may sit with nothing in flight before it is closed
    /// silently; also the longest stall allowed while a body arrives (408)
    /// or while the client does not read what is written (closed).
    pub idle_timeout: Duration,
    /// Most requests parsed and not yet answered; reading pauses beyond.
    pub max_pipelined: usize,
    /// Reading pauses while more than this many response bytes wait to be
    /// written.
    pub output_high_water: usize,
    /// Negotiate [`Request::response_coding`] from `Accept-Encoding`;
    /// when false it is always `None`.
    pub compress_responses: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_header_bytes: 64 * 1024,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_decoded_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            min_body_rate: 1024,
            idle_timeout: Duration::from_secs(300),
            max_pipelined: 64,
            output_high_water: 8 * 1024 * 1024,
            compress_responses: true,
        }
    }
}

/// HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: one request per connection unless it asks for keep-alive.
    Http10,
    /// HTTP/1.1: keep-alive unless it says `Connection: close`.
    Http11,
}

/// A content coding both directions support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `gzip` (RFC 1952).
    Gzip,
    /// `deflate`: the zlib format (RFC 1950) on output; on input the zlib
    /// format, or raw deflate (RFC 1951) as some clients send it.
    Deflate,
}

impl Coding {
    /// The token used in `Content-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }
}

/// One complete request, body decoded.
#[derive(Debug)]
pub struct Request {
    /// Position of the request on its connection; answer it with this.
    pub seq: u64,
    /// Method as sent (`GET`, `POST`, ...).
    pub method: String,
    /// Path of the request target, without the query string, not
    /// percent-decoded.
    pub path: String,
    /// Query string (after `?`), if any, not percent-decoded.
    pub query: Option<String>,
    /// HTTP version.
    pub version: Version,
    /// Header lines in the order received. `Content-Encoding` is removed
    /// once [`Request::decode_body`] has decoded the body.
    pub headers: Vec<(String, String)>,
    /// The request body: as sent while [`Request::content_coding`] is set,
    /// plain once decoded; empty when [`Request::oversized`].
    pub body: Bytes,
    /// Set when the client goes away before it has been answered.
    pub cancel: CancelFlag,
    /// Set when the body is over the size limit: it was not read (or its
    /// decoding stopped at the limit), and the connection closes after the
    /// answer when it was not read.
    pub oversized: Option<Oversized>,
    coding: Option<Coding>,
    response_coding: Option<Coding>,
}

/// A request body over the size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversized {
    /// The body's size: as `Content-Length` declared it; for a chunked
    /// body, what had arrived when reading stopped; for a decompressed one,
    /// what had been decoded when decoding stopped (both lower bounds).
    pub size: u64,
    /// The limit it is over.
    pub limit: usize,
    /// Whether the decompressed body crossed the limit (the body as sent
    /// was within it).
    pub decompressed: bool,
}

/// Why [`Request::decode_body`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The decoded body would be larger than the limit; decoding stopped
    /// there.
    TooLarge(Oversized),
    /// The body is not valid in its coding.
    Corrupt(String),
}

impl Request {
    /// Builds a request without a connection (for tests of a service and
    /// in-process callers): HTTP/1.1, `seq` 0, the target split into path
    /// and query, the response coding negotiated from `Accept-Encoding`.
    pub fn new(
        method: &str,
        target: &str,
        headers: Vec<(String, String)>,
        body: impl Into<Bytes>,
    ) -> Request {
        let (path, query) = split_target(target);
        let response_coding = headers
            .iter()
            .rfind(|(n, _)| n.eq_ignore_ascii_case("accept-encoding"))
            .and_then(|(_, v)| negotiate_coding(v));
        Request {
            seq: 0,
            method: method.to_owned(),
            path,
            query,
            version: Version::Http11,
            headers,
            body: body.into(),
            cancel: CancelFlag::default(),
            oversized: None,
            coding: None,
            response_coding,
        }
    }

    /// The `Content-Encoding` the body still has, if any; see
    /// [`Request::decode_body`].
    pub fn content_coding(&self) -> Option<Coding> {
        self.coding
    }

    /// Undoes the body's content coding, if it has one, decoding
    /// incrementally and stopping as soon as the output would pass `limit`
    /// bytes (so a small compressed bomb costs at most `limit` bytes of
    /// memory, freed on return). On success the body is plain and
    /// `Content-Encoding` is gone from the headers; on
    /// [`DecodeError::TooLarge`] the body is emptied and
    /// [`Request::oversized`] set. CPU-bound: call it off an event loop.
    pub fn decode_body(&mut self, limit: usize) -> Result<(), DecodeError> {
        let Some(coding) = self.coding else {
            return Ok(());
        };
        match decode_body(coding, &self.body, limit) {
            Ok(decoded) => {
                self.body = decoded;
                self.coding = None;
                self.headers
                    .retain(|(n, _)| !n.eq_ignore_ascii_case("content-encoding"));
                Ok(())
            }
            Err(e) => {
                if let DecodeError::TooLarge(oversized) = &e {
                    self.oversized = Some(*oversized);
                    self.body = Bytes::new();
                }
                Err(e)
            }
        }
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, by case-insensitive name.
    pub fn headers_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Content-Type`, if sent.
    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }

    /// `Accept-Encoding`, if sent.
    pub fn accept_encoding(&self) -> Option<&str> {
        self.header("accept-encoding")
    }

    /// The KServe binary extension's `Inference-Header-Content-Length`: the
    /// length of the JSON part at the front of the body. An unparsable value
    /// is an error naming what arrived.
    pub fn inference_header_content_length(&self) -> Result<Option<usize>, String> {
        match self.header("inference-header-content-length") {
            None => Ok(None),
            Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                format!("Inference-Header-Content-Length: expected a byte count, got '{v}'")
            }),
        }
    }

    /// The coding the client accepts for the response, if any (from
    /// `Accept-Encoding` and [`Config::compress_responses`]). The
    /// connection compresses nothing itself: the application calls
    /// [`compress_response`] with it on the responses it compresses.
    pub fn response_coding(&self) -> Option<Coding> {
        self.response_coding
    }
}

/// A response from the application.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header lines. `Content-Length`, `Transfer-Encoding` and `Connection`
    /// are the connection's business and are dropped if present.
    pub headers: Vec<(Cow<'static, str>, String)>,
    /// Body, as chunks written with one vectored write (not copied).
    pub body: Vec<Bytes>,
}

impl Response {
    /// An empty response with a status.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response with a JSON body.
    pub fn json(status: u16, body: impl Into<Bytes>) -> Response {
        Response::new(status)
            .with_header("Content-Type", "application/json")
            .with_body(body)
    }

    /// A JSON error response `{"error":"<message>"}`, as Triton answers.
    pub fn error(status: u16, message: &str) -> Response {
        let body = serde_json::json!({ "error": message }).to_string();
        Response::json(status, body)
    }

    /// Adds a header line.
    pub fn with_header(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<String>,
    ) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Appends a body chunk.
    pub fn with_body(mut self, chunk: impl Into<Bytes>) -> Response {
        self.body.push(chunk.into());
        self
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Total body length in bytes.
    pub fn body_len(&self) -> usize {
        self.body.iter().map(Bytes::len).sum()
    }
}

/// Whether a status forbids a body (and a `Content-Length`).
fn status_has_no_body(status: u16) -> bool {
    status < 200 || status == 204 || status == 304
}

/// Compresses a response body in place and sets `Content-Encoding`.
///
/// Does nothing when the body is empty, the status carries no body, or the
/// response already has a `Content-Encoding`. The whole body is compressed,
/// so headers describing the uncompressed body (such as
/// `Inference-Header-Content-Length`) keep their meaning for the client,
/// which decompresses before it reads them.
pub fn compress_response(response: &mut Response, coding: Coding) {
    if response.body_len() == 0
        || status_has_no_body(response.status)
        || response.header("content-encoding").is_some()
    {
        return;
    }
    // The level favours speed: bodies are tensors on a hot path.
    let level = Compression::fast();
    let capacity = response.body_len() / 2 + 64;
    let compressed = match coding {
        Coding::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(capacity), level);
            write_all_chunks(&mut enc, &response.body).and_then(|()| enc.finish())
        }
        Coding::Deflate => {
            let mut enc = flate2::write::ZlibEncoder::new(Vec::with_capacity(capacity), level);
            write_all_chunks(&mut enc, &response.body).and_then(|()| enc.finish())
        }
    };
    // Writing into a Vec cannot fail; should the encoder ever report an
    // error, the response goes out uncompressed, which is still correct.
    if let Ok(bytes) = compressed {
        response.body = vec![Bytes::from(bytes)];
        response.headers.push((
            Cow::Borrowed("Content-Encoding"),
            coding.as_str().to_owned(),
        ));
    }
}

fn write_all_chunks(w: &mut impl Write, chunks: &[Bytes]) -> io::Result<()> {
    chunks.iter().try_for_each(|c| w.write_all(c))
}

/// Picks the response coding from an `Accept-Encoding` value: the supported
/// coding with the highest q-value, gzip on a tie, none when the client
/// accepts neither (or only with `q=0`).
pub fn negotiate_coding(accept_encoding: &str) -> Option<Coding> {
    let mut gzip: Option<f32> = None;
    let mut deflate: Option<f32> = None;
    let mut star: Option<f32> = None;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';');
        let token = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut q = 1.0f32;
        for p in parts {
            if let Some((k, v)) = p.split_once('=')
                && k.trim().eq_ignore_ascii_case("q")
            {
                q = v.trim().parse().unwrap_or(0.0);
            }
        }
        match token.as_str() {
            "gzip" | "x-gzip" => gzip = Some(q),
            "deflate" => deflate = Some(q),
            "*" => star = Some(q),
            _ => {}
        }
    }
    let gzip = gzip.or(star).unwrap_or(0.0);
    let deflate = deflate.or(star).unwrap_or(0.0);
    if gzip <= 0.0 && deflate <= 0.0 {
        None
    } else if gzip >= deflate {
        Some(Coding::Gzip)
    } else {
        Some(Coding::Deflate)
    }
}

/// Undoes a request body's content coding, refusing output past `limit`:
/// the decoder is read in steps, and stops at the first byte past the
/// limit, so what it allocates stays within `limit` plus one step.
fn decode_body(coding: Coding, body: &[u8], limit: usize) -> Result<Bytes, DecodeError> {
    const STEP: usize = 256 * 1024;
    fn read_limited(mut r: impl Read, limit: usize) -> Result<Vec<u8>, DecodeError> {
        let mut out: Vec<u8> = Vec::new();
        loop {
            if out.len() > limit {
                return Err(DecodeError::TooLarge(Oversized {
                    size: out.len() as u64,
                    limit,
                    decompressed: true,
                }));
            }
            let start = out.len();
            let want = STEP.min(limit + 1 - start);
            if out.capacity() - start < want {
                // Doubling, but never past the first byte over the limit:
                // a bomb cannot make it reserve what the limit refuses.
                out.reserve_exact(start.max(want).min(limit + 1 - start));
            }
            out.resize(start + want, 0);
            match r.read(&mut out[start..]) {
                Ok(0) => {
                    out.truncate(start);
                    return Ok(out);
                }
                Ok(n) => out.truncate(start + n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => out.truncate(start),
                Err(e) => return Err(DecodeError::Corrupt(e.to_string())),
            }
        }
    }
    let out = match coding {
        Coding::Gzip => read_limited(flate2::read::MultiGzDecoder::new(body), limit)?,
        Coding::Deflate => match read_limited(flate2::read::ZlibDecoder::new(body), limit) {
            Err(DecodeError::Corrupt(_)) => {
                read_limited(flate2::read::DeflateDecoder::new(body), limit)?
            }
            other => other?,
        },
    };
    Ok(Bytes::from(out))
}

/// The reason phrase sent with a status.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// A request head, parsed and owned.
#[derive(Debug)]
struct Head {
    method: String,
    path: String,
    query: Option<String>,
    version: Version,
    headers: Vec<(String, String)>,
}

/// How the body of a request is delimited.
#[derive(Debug)]
enum Framing {
    /// `Content-Length`: this many bytes follow the head.
    Length(usize),
    /// `Transfer-Encoding: chunked`: decoded into the buffer as it arrives.
    Chunked(ChunkDecoder, BytesMut),
}

/// Where the reading side is.
#[derive(Debug)]
enum ReadState {
    /// Waiting for (the rest of) a request head.
    Head,
    /// The head of request `seq` is parsed; its body is arriving.
    Body {
        seq: u64,
        head: Box<Head>,
        framing: Framing,
        coding: Option<Coding>,
        /// When the head was read: the body deadline counts from here.
        started: Instant,
        /// Body bytes received so far (they extend the deadline).
        received: u64,
    },
    /// No more requests will be read; bytes that arrive are dropped.
    Done,
}

/// Where one request is between its head and its response.
#[derive(Debug)]
enum SlotState {
    /// Head parsed, body still arriving.
    Reading,
    /// Handed to the application, no answer yet.
    Waiting,
    /// Answered; written once every earlier request has been.
    Ready(Response),
}

/// One request in flight on the connection, in request order.
#[derive(Debug)]
struct Slot {
    seq: u64,
    state: SlotState,
    head_method: bool,
    version: Version,
    keep_alive: bool,
    response_coding: Option<Coding>,
    /// `Expect: 100-continue` still to be answered once this slot is first.
    pending_continue: bool,
    cancel: CancelFlag,
}

/// Decoder state of a chunked body (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading hex digits of a chunk size.
    Size {
        value: u64,
        digits: usize,
        line: usize,
    },
    /// Skipping chunk extensions up to the end of the size line.
    Extension { value: u64, line: usize },
    /// Saw CR after the size line; LF must follow.
    SizeLf { value: u64 },
    /// This many data bytes of the current chunk are left.
    Data(u64),
    /// After chunk data: CR (or a bare LF) must follow.
    DataCr,
    /// After chunk data and CR: LF must follow.
    DataLf,
    /// Reading trailer lines; `line` bytes into the current one.
    Trailer { line: usize, total: usize },
    /// Saw CR in the trailer section; LF must follow.
    TrailerLf { line: usize, total: usize },
    /// The last chunk and the trailer section are read.
    Done,
}

/// Why a chunked body is refused.
#[derive(Debug, PartialEq, Eq)]
enum ChunkError {
    Invalid(&'static str),
    /// The body would pass the limit; how large it would be by then.
    TooLarge(u64),
    TooManyChunks,
    TrailerTooLarge,
}

/// Push decoder for `Transfer-Encoding: chunked`.
#[derive(Debug)]
struct ChunkDecoder {
    state: ChunkState,
    /// Non-empty chunks seen.
    chunks: usize,
}

impl ChunkDecoder {
    fn new() -> ChunkDecoder {
        ChunkDecoder {
            state: ChunkState::Size {
                value: 0,
                digits: 0,
                line: 0,
            },
            chunks: 0,
        }
    }

    /// Decodes from `input`, appending data to `out`. Returns how many input
    /// bytes were consumed; stops right after the end of the body.
    fn decode(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
        max_body: usize,
        max_trailer: usize,
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                ChunkState::Done => return Ok(i),
                ChunkState::Data(left) => {
                    let avail = input.len() - i;
                    let n = usize::try_from(left).map_or(avail, |l| l.min(avail));
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                    continue;
                }
                ChunkState::Size {
                    value,
                    digits,
                    line,
                } => {
                    if line >= MAX_CHUNK_LINE_BYTES {
                        return Err(ChunkError::Invalid("chunk size line too long"));
                    }
                    match b {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            let d = u64::from(hex_value(b));
                            let value = value
                                .checked_mul(16)
                                .and_then(|v| v.checked_add(d))
                                .ok_or(ChunkError::TooLarge(u64::MAX))?;
                            if value > max_body as u64 {
                                return Err(ChunkError::TooLarge(
                                    (out.len() as u64).saturating_add(value),
                                ));
                            }
                            ChunkState::Size {
                                value,
                                digits: digits + 1,
                                line: line + 1,
                            }
                        }
                        _ if digits == 0 => return Err(ChunkError::Invalid("chunk size expected")),
                        b';' | b' ' | b'\t' => ChunkState::Extension {
                            value,
                            line: line + 1,
                        },
                        b'\r' => ChunkState::SizeLf { value },
                        b'\n' => self.end_of_size_line(value, out.len(), max_body)?,
                        _ => return Err(ChunkError::Invalid("invalid byte in chunk size")),
                    }
                }
                ChunkState::Extension { value, line } => {
                    if line >= MAX_CHUNK_LINE_BYTES {
                        return Err(ChunkError::Invalid("chunk extension too long"));
                    }
                    match b {
                        b'\r' => ChunkState::SizeLf { value },
                        b'\n' => self.end_of_size_line(value, out.len(), max_body)?,
                        _ => ChunkState::Extension {
                            value,
                            line: line + 1,
                        },
                    }
                }
                ChunkState::SizeLf { value } => match b {
                    b'\n' => self.end_of_size_line(value, out.len(), max_body)?,
                    _ => return Err(ChunkError::Invalid("expected LF after chunk size")),
                },
                ChunkState::DataCr => match b {
                    b'\r' => ChunkState::DataLf,
                    b'\n' => Self::size_start(),
                    _ => return Err(ChunkError::Invalid("expected CRLF after chunk data")),
                },
                ChunkState::DataLf => match b {
                    b'\n' => Self::size_start(),
                    _ => return Err(ChunkError::Invalid("expected LF after chunk data")),
                },
                ChunkState::Trailer { line, total } => {
                    if total >= max_trailer {
                        return Err(ChunkError::TrailerTooLarge);
                    }
                    match b {
                        b'\r' => ChunkState::TrailerLf {
                            line,
                            total: total + 1,
                        },
                        b'\n' if line == 0 => ChunkState::Done,
                        b'\n' => ChunkState::Trailer {
                            line: 0,
                            total: total + 1,
                        },
                        _ => ChunkState::Trailer {
                            line: line + 1,
                            total: total + 1,
                        },
                    }
                }
                ChunkState::TrailerLf { line, total } => match b {
                    b'\n' if line == 0 => ChunkState::Done,
                    b'\n' => ChunkState::Trailer {
                        line: 0,
                        total: total + 1,
                    },
                    _ => return Err(ChunkError::Invalid("expected LF in trailer section")),
                },
            };
            i += 1;
        }
        Ok(i)
    }

    fn size_start() -> ChunkState {
        ChunkState::Size {
            value: 0,
            digits: 0,
            line: 0,
        }
    }

    fn end_of_size_line(
        &mut self,
        value: u64,
        so_far: usize,
        max_body: usize,
    ) -> Result<ChunkState, ChunkError> {
        if value == 0 {
            return Ok(ChunkState::Trailer { line: 0, total: 0 });
        }
        let size = (so_far as u64).saturating_add(value);
        if size > max_body as u64 {
            return Err(ChunkError::TooLarge(size));
        }
        self.chunks += 1;
        if self.chunks > MAX_CHUNKS {
            return Err(ChunkError::TooManyChunks);
        }
        Ok(ChunkState::Data(value))
    }

    fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Whether `data[from..]` holds the blank line that ends a request head.
fn find_head_end(data: &[u8], from: usize) -> bool {
    let mut i = from;
    while i < data.len() {
        if data[i] == b'\n' {
            match data.get(i + 1) {
                Some(b'\n') => return true,
                Some(b'\r') if data.get(i + 2) == Some(&b'\n') => return true,
                _ => {}
            }
        }
        i += 1;
    }
    false
}

/// Splits a request target into path and query; an absolute-form target
/// (`http://host/path`) is reduced to its path.
fn split_target(target: &str) -> (String, Option<String>) {
    let origin = match target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    match origin.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (origin.to_owned(), None),
    }
}

/// Comma-separated tokens of every value of a header, lowercased.
fn header_tokens(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// An error the connection answers by itself before closing.
struct Reject {
    status: u16,
    message: String,
}

impl Reject {
    fn new(status: u16, message: impl Into<String>) -> Reject {
        Reject {
            status,
            message: message.into(),
        }
    }
}

/// What the head says about the request, once checked.
struct Analysis {
    framing: Option<Framing>,
    coding: Option<Coding>,
    /// `Content-Length` declares a body over the limit: this size.
    oversized: Option<u64>,
    keep_alive: bool,
    expect_continue: bool,
    response_coding: Option<Coding>,
}

/// One HTTP/1.1 server connection. See the module documentation for the
/// call order.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    /// Received bytes are `buf[..filled]`; the rest is zeroed room to read
    /// into.
    buf: BytesMut,
    filled: usize,
    /// Where to resume looking for the end of a head in `buf[..filled]`.
    head_scan: usize,
    /// When the first byte of the head being read was seen.
    head_started: Option<Instant>,
    read: ReadState,
    slots: VecDeque<Slot>,
    next_seq: u64,
    ready: VecDeque<Request>,
    output: OutputQueue,
    /// Last time anything was read or written.
    last_activity: Instant,
    last_read: Instant,
    last_write: Instant,
    /// The latest time handed in by the driver.
    now: Instant,
    draining: bool,
    /// Close once the output is written.
    closing: bool,
    /// Closed at once; nothing more is written.
    aborted: bool,
    /// Reading stopped while the client may still be sending (a rejected
    /// body, discarded input).
    unread_input: bool,
}

impl Connection {
    /// A new connection, accepted at `now`.
    pub fn new(config: Config, now: Instant) -> Connection {
        Connection {
            config,
            buf: BytesMut::new(),
            filled: 0,
            head_scan: 0,
            head_started: None,
            read: ReadState::Head,
            slots: VecDeque::new(),
            next_seq: 0,
            ready: VecDeque::new(),
            output: OutputQueue::default(),
            last_activity: now,
            last_read: now,
            last_write: now,
            now,
            draining: false,
            closing: false,
            aborted: false,
            unread_input: false,
        }
    }

    // ----- getters -----

    /// Whether the driver should read from the socket now. False while the
    /// connection is closing or applying backpressure (too many requests in
    /// flight, too much output queued). Once no more requests will be
    /// parsed, reading continues (and drops the bytes) so that a client
    /// going away is still noticed.
    pub fn wants_read(&self) -> bool {
        if self.aborted || self.closing {
            return false;
        }
        match self.read {
            ReadState::Done => true,
            // A body is always read to its end (it is bounded by the body
            // limit), so that a large response being written cannot make
            // the body look stalled.
            ReadState::Body { .. } => true,
            ReadState::Head => {
                self.slots.len() < self.config.max_pipelined
                    && self.output.len() < self.config.output_high_water
            }
        }
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
    /// (a request was refused before its body was read, or bytes after the
    /// last request were dropped). A driver then half-closes and drains the
    /// socket for a moment before closing it, so the client reads the
    /// answer instead of a reset.
    pub fn wants_linger(&self) -> bool {
        self.unread_input && !self.aborted
    }

    /// Requests parsed (or being read) and not yet written back.
    pub fn in_flight(&self) -> usize {
        self.slots.len()
    }

    /// Bytes waiting to be written.
    pub fn output_len(&self) -> usize {
        self.output.len()
    }

    // ----- input -----

    /// Room to read into; report how much was read with
    /// [`Connection::handle_recv`]. While a body of known length arrives the
    /// room is part of the buffer the body will be split from, so it is
    /// read in place.
    pub fn recv_buf(&mut self) -> &mut [u8] {
        let want = match &self.read {
            ReadState::Body {
                framing: Framing::Length(len),
                ..
            } => len
                .saturating_sub(self.filled)
                .clamp(MIN_BODY_READ_WINDOW, MAX_BODY_READ_WINDOW),
            _ => HEAD_READ_WINDOW,
        };
        if self.buf.len() < self.filled + want {
            self.buf.resize(self.filled + want, 0);
        }
        &mut self.buf[self.filled..]
    }

    /// Reports that `n` bytes were read into [`Connection::recv_buf`].
    pub fn handle_recv(&mut self, n: usize, now: Instant) {
        self.now = now;
        if n == 0 || self.aborted {
            return;
        }
        debug_assert!(self.filled + n <= self.buf.len());
        self.filled = (self.filled + n).min(self.buf.len());
        self.last_activity = now;
        self.last_read = now;
        if let ReadState::Body { received, .. } = &mut self.read {
            *received += n as u64;
        }
        self.progress();
    }

    /// Hands received bytes in (copies them into the read buffer).
    pub fn handle_read(&mut self, mut data: &[u8], now: Instant) {
        while !data.is_empty() && !self.aborted {
            let room = self.recv_buf();
            let n = room.len().min(data.len());
            room[..n].copy_from_slice(&data[..n]);
            data = &data[n..];
            self.handle_recv(n, now);
        }
    }

    /// The client closed its side. Requests still in flight are cancelled
    /// and the connection ends; when every request was already answered,
    /// the remaining output is still written.
    pub fn handle_eof(&mut self, now: Instant) {
        self.now = now;
        if self.slots.is_empty() && !self.output.is_empty() {
            self.read = ReadState::Done;
            self.closing = true;
            return;
        }
        self.abort();
    }

    /// Reports that the first `n` bytes of the pending output were written.
    pub fn handle_write(&mut self, n: usize, now: Instant) {
        self.now = now;
        if n > 0 {
            self.last_activity = now;
            self.last_write = now;
        }
        self.output.consume(n);
    }

    /// Acts on whatever deadline has passed: a head that took too long
    /// (408), a body that stalled or came too slowly (408), an idle
    /// keep-alive connection (closed silently) or a client that stopped
    /// reading (closed).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.is_closed() {
            return;
        }
        let idle = self.config.idle_timeout;
        if !self.output.is_empty() && now >= self.last_write + idle {
            self.abort();
            return;
        }
        match self.read {
            ReadState::Head => {
                if let Some(started) = self.head_started
                    && now >= started + self.config.header_timeout
                {
                    self.reject(Reject::new(408, "timed out waiting for the request header"));
                    return;
                }
            }
            ReadState::Body { .. } => {
                if now >= self.last_read + idle || self.body_deadline().is_some_and(|d| now >= d) {
                    self.reject(Reject::new(408, "timed out waiting for the request body"));
                    return;
                }
            }
            ReadState::Done => {}
        }
        if self.is_idle() && now >= self.last_activity + idle {
            self.read = ReadState::Done;
            self.closing = true;
        }
    }

    // ----- mutators -----

    /// Answers request `seq`. Responses may come in any order; each is
    /// written once all earlier ones have been. Unknown `seq`s (the
    /// connection was aborted, or the request was already answered) are
    /// ignored; returns whether the response was taken.
    pub fn send_response(&mut self, seq: u64, response: Response, now: Instant) -> bool {
        self.now = now;
        let Some(slot) = self.slots.iter_mut().find(|s| s.seq == seq) else {
            return false;
        };
        if !matches!(slot.state, SlotState::Waiting) {
            return false;
        }
        slot.state = SlotState::Ready(response);
        self.progress();
        true
    }

    /// Starts a graceful close: requests already received (in part or in
    /// full, pipelined ones included) are read to their end and answered,
    /// nothing after them is read, the last response says
    /// `Connection: close`, then the connection closes.
    pub fn shutdown(&mut self) {
        self.draining = true;
        self.progress();
    }

    /// Announces a [`Connection::shutdown`] about to come, so that a driver
    /// can hand in what the socket holds first: requests in it are
    /// answered as the last ones, with `Connection: close`, rather than
    /// lost with the connection. Nothing closes until `shutdown`.
    pub fn prepare_shutdown(&mut self) {
        self.draining = true;
    }

    /// Closes at once: requests in flight are cancelled and nothing more is
    /// written.
    pub fn abort(&mut self) {
        self.aborted = true;
        self.stop_reading();
        for slot in self.slots.drain(..) {
            slot.cancel.cancel();
        }
        for req in self.ready.drain(..) {
            req.cancel.cancel();
        }
        self.output.clear();
    }

    // ----- output -----

    /// The next complete request, if any.
    pub fn poll_request(&mut self) -> Option<Request> {
        self.ready.pop_front()
    }

    /// Fills `slices` with the pending output, front first; returns how many
    /// were filled. Write them with one vectored write.
    pub fn poll_transmit<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        self.output.fill(slices)
    }

    /// When [`Connection::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let idle = self.config.idle_timeout;
        let mut deadline: Option<Instant> = None;
        let mut consider = |t: Instant| deadline = Some(deadline.map_or(t, |d| d.min(t)));
        if !self.output.is_empty() {
            consider(self.last_write + idle);
        }
        match self.read {
            ReadState::Head => {
                if let Some(started) = self.head_started {
                    consider(started + self.config.header_timeout);
                }
            }
            ReadState::Body { .. } => {
                consider(self.last_read + idle);
                if let Some(d) = self.body_deadline() {
                    consider(d);
                }
            }
            ReadState::Done => {}
        }
        if self.is_idle() {
            consider(self.last_activity + idle);
        }
        deadline
    }

    // ----- internals -----

    /// When the body being read must be complete: the body timeout from
    /// the end of its head, plus a second per `min_body_rate` bytes
    /// received.
    fn body_deadline(&self) -> Option<Instant> {
        let ReadState::Body {
            started, received, ..
        } = &self.read
        else {
            return None;
        };
        let earned = match self.config.min_body_rate {
            0 => Duration::ZERO,
            rate => Duration::from_secs_f64(*received as f64 / rate as f64),
        };
        Some(*started + self.config.body_timeout + earned)
    }

    /// Nothing in flight, nothing partly read, nothing to write.
    fn is_idle(&self) -> bool {
        self.slots.is_empty()
            && self.output.is_empty()
            && self.filled == 0
            && matches!(self.read, ReadState::Head)
    }

    fn stop_reading(&mut self) {
        self.read = ReadState::Done;
        self.head_started = None;
        self.discard_input();
    }

    fn discard_input(&mut self) {
        if self.filled > 0 {
            self.unread_input = true;
        }
        self.buf.clear();
        self.filled = 0;
        self.head_scan = 0;
    }

    /// Parses what can be parsed and queues what can be written, until
    /// neither makes progress.
    fn progress(&mut self) {
        loop {
            let parsed = self.parse_step();
            let flushed = self.flush();
            if !parsed && !flushed {
                break;
            }
        }
    }

    /// One parsing step; whether it changed anything.
    fn parse_step(&mut self) -> bool {
        if self.aborted {
            return false;
        }
        match self.read {
            ReadState::Head => self.parse_head(),
            ReadState::Body { .. } => self.parse_body(),
            ReadState::Done => {
                if self.filled > 0 {
                    self.discard_input();
                }
                false
            }
        }
    }

    fn parse_head(&mut self) -> bool {
        if self.draining && self.filled == 0 {
            // Everything received before the shutdown has been read.
            self.stop_reading();
            return true;
        }
        if self.filled == 0 || self.slots.len() >= self.config.max_pipelined {
            return false;
        }
        if self.head_started.is_none() {
            self.head_started = Some(self.now);
        }
        let max = self.config.max_header_bytes;
        let data = &self.buf[..self.filled];
        if !find_head_end(data, self.head_scan) {
            self.head_scan = self.filled.saturating_sub(2);
            if self.filled > max {
                self.reject(Reject::new(
                    431,
                    format!("request header exceeds {max} bytes"),
                ));
                return true;
            }
            return false;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let head_len = match parsed.parse(data) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                self.head_scan = self.filled.saturating_sub(2);
                if self.filled > max {
                    self.reject(Reject::new(
                        431,
                        format!("request header exceeds {max} bytes"),
                    ));
                    return true;
                }
                return false;
            }
            Err(httparse::Error::TooManyHeaders) => {
                self.reject(Reject::new(
                    431,
                    format!("more than {MAX_HEADERS} request header lines"),
                ));
                return true;
            }
            Err(e) => {
                self.reject(Reject::new(400, format!("malformed HTTP request: {e}")));
                return true;
            }
        };
        if head_len > max {
            self.reject(Reject::new(
                431,
                format!("request header exceeds {max} bytes"),
            ));
            return true;
        }
        let (path, query) = split_target(parsed.path.unwrap_or("/"));
        let head = Head {
            method: parsed.method.unwrap_or("").to_owned(),
            path,
            query,
            version: if parsed.version == Some(0) {
                Version::Http10
            } else {
                Version::Http11
            },
            headers: parsed
                .headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value);
                    (
                        h.name.to_owned(),
                        value.trim_matches([' ', '\t']).to_owned(),
                    )
                })
                .collect(),
        };
        self.buf.advance(head_len);
        self.filled -= head_len;
        self.head_scan = 0;
        self.head_started = None;

        let analysis = match self.analyze(&head) {
            Ok(a) => a,
            Err(reject) => {
                // The body (if any) is not read, so the connection cannot
                // continue after the answer.
                self.reject(reject);
                return true;
            }
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = Slot {
            seq,
            state: SlotState::Reading,
            head_method: head.method.eq_ignore_ascii_case("HEAD"),
            version: head.version,
            keep_alive: analysis.keep_alive,
            response_coding: analysis.response_coding,
            pending_continue: false,
            cancel: CancelFlag::default(),
        };
        self.slots.push_back(slot);
        if let Some(size) = analysis.oversized {
            // The body is not read: the application words the refusal,
            // then the connection closes (lingering, since the client is
            // likely still sending).
            let oversized = Oversized {
                size,
                limit: self.config.max_body_bytes,
                decompressed: false,
            };
            self.finish_request(seq, head, Bytes::new(), None, Some(oversized));
            self.unread_input = true;
            return true;
        }
        match analysis.framing {
            None => self.finish_request(seq, head, Bytes::new(), None, None),
            Some(framing) => {
                if let Framing::Length(len) = framing {
                    // Room for the whole body, reserved (not touched) now so
                    // that it is read in place without reallocating.
                    let want = len + MIN_BODY_READ_WINDOW;
                    if want > self.buf.len() {
                        self.buf.reserve(want - self.buf.len());
                    }
                }
                if analysis.expect_continue
                    && self.filled == 0
                    && let Some(slot) = self.slots.back_mut()
                {
                    slot.pending_continue = true;
                }
                self.read = ReadState::Body {
                    seq,
                    head: Box::new(head),
                    framing,
                    coding: analysis.coding,
                    started: self.now,
                    received: self.filled as u64,
                };
            }
        }
        true
    }

    /// Checks a head: framing, codings, expectations, keep-alive.
    fn analyze(&self, head: &Head) -> Result<Analysis, Reject> {
        let headers = &head.headers;
        let max_body = self.config.max_body_bytes;

        let transfer = header_tokens(headers, "transfer-encoding");
        let lengths: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .collect();
        let mut oversized = None;
        // Both framings: chunked wins, and the connection closes after the
        // answer, since a peer that read the length would disagree on
        // where the next request starts (RFC 9112 §6.1).
        let ambiguous = !transfer.is_empty() && !lengths.is_empty();
        let framing = if !transfer.is_empty() {
            if transfer.iter().any(|t| t != "chunked") {
                return Err(Reject::new(
                    501,
                    format!("unsupported Transfer-Encoding '{}'", transfer.join(", ")),
                ));
            }
            if transfer.len() > 1 {
                return Err(Reject::new(
                    400,
                    "Transfer-Encoding lists chunked more than once",
                ));
            }
            Some(Framing::Chunked(ChunkDecoder::new(), BytesMut::new()))
        } else if let Some(first) = lengths.first() {
            if lengths.iter().any(|l| l != first) {
                return Err(Reject::new(400, "conflicting Content-Length values"));
            }
            if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Reject::new(
                    400,
                    format!("Content-Length: expected a byte count, got '{first}'"),
                ));
            }
            match first.parse::<usize>() {
                Ok(len) if len <= max_body => (len > 0).then_some(Framing::Length(len)),
                _ => {
                    oversized = Some(first.parse::<u64>().unwrap_or(u64::MAX));
                    None
                }
            }
        } else {
            None
        };

        let mut coding = None;
        for token in header_tokens(headers, "content-encoding") {
            let this = match token.as_str() {
                "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                other => {
                    return Err(Reject::new(
                        415,
                        format!("unsupported Content-Encoding '{other}'"),
                    ));
                }
            };
            if coding.replace(this).is_some() {
                return Err(Reject::new(
                    415,
                    "more than one Content-Encoding is not supported",
                ));
            }
        }

        let mut expect_continue = false;
        for token in header_tokens(headers, "expect") {
            if token == "100-continue" {
                expect_continue = true;
            } else {
                return Err(Reject::new(
                    417,
                    format!("unsupported expectation '{token}'"),
                ));
            }
        }

        let connection = header_tokens(headers, "connection");
        let keep_alive = !ambiguous
            && oversized.is_none()
            && match head.version {
                Version::Http11 => !connection.iter().any(|t| t == "close"),
                Version::Http10 => {
                    connection.iter().any(|t| t == "keep-alive")
                        && !connection.iter().any(|t| t == "close")
                }
            };

        let response_coding =
            if self.config.compress_responses && !head.method.eq_ignore_ascii_case("HEAD") {
                headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case("accept-encoding"))
                    .map(|(_, v)| v.as_str())
                    .reduce(|_, last| last)
                    .and_then(negotiate_coding)
            } else {
                None
            };

        Ok(Analysis {
            framing,
            coding,
            oversized,
            keep_alive,
            expect_continue,
            response_coding,
        })
    }

    fn parse_body(&mut self) -> bool {
        if self.filled == 0 {
            return false;
        }
        let max_body = self.config.max_body_bytes;
        let max_trailer = self.config.max_header_bytes;
        let ReadState::Body { seq, framing, .. } = &mut self.read else {
            return false;
        };
        let seq = *seq;
        if let Some(slot) = self.slots.back_mut()
            && slot.seq == seq
        {
            // The client sent the body without waiting; no 100 is needed.
            slot.pending_continue = false;
        }
        let body = match framing {
            Framing::Length(len) => {
                if self.filled < *len {
                    return false;
                }
                let body = self.buf.split_to(*len).freeze();
                self.filled -= body.len();
                body
            }
            Framing::Chunked(decoder, out) => {
                match decoder.decode(&self.buf[..self.filled], out, max_body, max_trailer) {
                    Ok(consumed) => {
                        self.buf.advance(consumed);
                        self.filled -= consumed;
                        if !decoder.is_done() {
                            return consumed > 0;
                        }
                        out.split().freeze()
                    }
                    Err(e) => {
                        self.chunk_error(seq, e);
                        return true;
                    }
                }
            }
        };
        if body.len() > RELEASE_AFTER_BODY_BYTES {
            // The buffer's tail shares the allocation the body was split
            // from; starting afresh lets that allocation go with the body
            // instead of living on with the keep-alive connection.
            self.buf = BytesMut::from(&self.buf[..self.filled]);
        }
        let ReadState::Body { head, coding, .. } =
            std::mem::replace(&mut self.read, ReadState::Head)
        else {
            return true;
        };
        self.finish_request(seq, *head, body, coding, None);
        true
    }

    /// Ends the chunked body of request `seq` that failed to decode.
    fn chunk_error(&mut self, seq: u64, error: ChunkError) {
        let max_trailer = self.config.max_header_bytes;
        let reject = match error {
            ChunkError::Invalid(what) => {
                Reject::new(400, format!("malformed chunked body: {what}"))
            }
            ChunkError::TooManyChunks => Reject::new(
                400,
                format!(
                    "Chunked request body exceeds maximum of {MAX_CHUNKS} non-empty chunks. \
                     Send fewer or larger HTTP chunks."
                ),
            ),
            ChunkError::TrailerTooLarge => Reject::new(
                431,
                format!("chunked body trailer exceeds {max_trailer} bytes"),
            ),
            ChunkError::TooLarge(size) => {
                let ReadState::Body { head, .. } =
                    std::mem::replace(&mut self.read, ReadState::Head)
                else {
                    return;
                };
                if let Some(slot) = self.slots.iter_mut().find(|s| s.seq == seq) {
                    slot.keep_alive = false;
                }
                let oversized = Oversized {
                    size,
                    limit: self.config.max_body_bytes,
                    decompressed: false,
                };
                self.finish_request(seq, *head, Bytes::new(), None, Some(oversized));
                self.unread_input = true;
                return;
            }
        };
        self.reject(reject);
    }

    /// A request is complete: hand it out.
    fn finish_request(
        &mut self,
        seq: u64,
        head: Head,
        body: Bytes,
        coding: Option<Coding>,
        oversized: Option<Oversized>,
    ) {
        let Some(idx) = self.slots.iter().position(|s| s.seq == seq) else {
            return;
        };
        let slot = &mut self.slots[idx];
        slot.state = SlotState::Waiting;
        slot.pending_continue = false;
        let keep_alive = slot.keep_alive;
        self.ready.push_back(Request {
            seq,
            method: head.method,
            path: head.path,
            query: head.query,
            version: head.version,
            headers: head.headers,
            body,
            cancel: slot.cancel.clone(),
            oversized,
            coding,
            response_coding: slot.response_coding,
        });
        if keep_alive {
            self.read = ReadState::Head;
        } else {
            self.stop_reading();
        }
    }

    /// Answers the request being read (or a new one, when none is) with an
    /// error, and reads nothing more.
    fn reject(&mut self, reject: Reject) {
        let seq = match self.read {
            ReadState::Body { seq, .. } => Some(seq),
            _ => None,
        };
        self.reject_request(seq, reject);
    }

    /// Answers request `seq` (or a new one, when `None`) with an error, and
    /// reads nothing more.
    fn reject_request(&mut self, seq: Option<u64>, reject: Reject) {
        let response = Response::error(reject.status, &reject.message);
        self.stop_reading();
        self.unread_input = true;
        match seq.and_then(|seq| self.slots.iter_mut().find(|s| s.seq == seq)) {
            Some(slot) => {
                slot.state = SlotState::Ready(response);
                slot.keep_alive = false;
                slot.pending_continue = false;
                slot.response_coding = None;
            }
            None => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.slots.push_back(Slot {
                    seq,
                    state: SlotState::Ready(response),
                    head_method: false,
                    version: Version::Http11,
                    keep_alive: false,
                    response_coding: None,
                    pending_continue: false,
                    cancel: CancelFlag::default(),
                });
            }
        }
        self.flush();
    }

    /// Moves answered responses at the front into the output, in order;
    /// emits a pending `100 Continue` for the first unanswered request.
    /// Returns whether anything moved.
    fn flush(&mut self) -> bool {
        if self.aborted {
            return false;
        }
        let mut moved = false;
        while let Some(front) = self.slots.front_mut() {
            if !matches!(front.state, SlotState::Ready(_)) {
                if front.pending_continue {
                    front.pending_continue = false;
                    self.push_output(Bytes::from_static(CONTINUE));
                    moved = true;
                }
                break;
            }
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            moved = true;
            let close =
                !slot.keep_alive || (matches!(self.read, ReadState::Done) && self.slots.is_empty());
            self.write_response(slot, close);
            if close {
                self.stop_reading();
                self.closing = true;
                for rest in self.slots.drain(..) {
                    rest.cancel.cancel();
                }
                break;
            }
        }
        if matches!(self.read, ReadState::Done) && self.slots.is_empty() && !self.closing {
            self.closing = true;
            moved = true;
        }
        moved
    }

    fn push_output(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            if self.output.is_empty() {
                // A write stall is measured from when there was something
                // to write, not from the last write long ago.
                self.last_write = self.now;
            }
            self.output.push(chunk);
        }
    }

    /// Serializes one response into the output.
    fn write_response(&mut self, slot: Slot, close: bool) {
        let SlotState::Ready(response) = slot.state else {
            return;
        };
        let no_body = status_has_no_body(response.status);
        let body_len = response.body_len();
        let mut head = String::with_capacity(128 + response.headers.len() * 48);
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\n",
            response.status,
            reason(response.status)
        );
        for (name, value) in &response.headers {
            if name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case("connection")
                || name.is_empty()
                || name.bytes().any(|b| b <= b' ' || b == b':' || b >= 0x7f)
            {
                continue;
            }
            head.push_str(name);
            head.push_str(": ");
            // A CR or LF in a value would split the response.
            if value.contains(['\r', '\n']) {
                head.push_str(&value.replace(['\r', '\n'], " "));
            } else {
                head.push_str(value);
            }
            head.push_str("\r\n");
        }
        if !no_body {
            let _ = write!(head, "Content-Length: {body_len}\r\n");
        }
        if close {
            head.push_str("Connection: close\r\n");
        } else if slot.version == Version::Http10 {
            head.push_str("Connection: keep-alive\r\n");
        }
        head.push_str("\r\n");
        self.push_output(Bytes::from(head));
        if !no_body && !slot.head_method {
            for chunk in response.body {
                self.push_output(chunk);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    fn conn() -> (Connection, Instant) {
        let now = t0();
        (Connection::new(Config::default(), now), now)
    }

    /// Takes every pending output byte, as a writer that accepts all.
    fn drain(c: &mut Connection, now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut slices = [IoSlice::new(&[]); 8];
            let n = c.poll_transmit(&mut slices);
            if n == 0 {
                break;
            }
            let before = out.len();
            for s in &slices[..n] {
                out.extend_from_slice(s);
            }
            let written = out.len() - before;
            c.handle_write(written, now);
        }
        out
    }

    fn text(v: &[u8]) -> String {
        String::from_utf8_lossy(v).into_owned()
    }

    fn requests(c: &mut Connection) -> Vec<Request> {
        std::iter::from_fn(|| c.poll_request()).collect()
    }

    fn echo(c: &mut Connection, r: &Request, now: Instant) {
        let body = r.body.clone();
        c.send_response(r.seq, Response::new(200).with_body(body), now);
    }

    /// Splits a response stream into (status, headers, body) triples.
    /// A parsed response: status, lowercased headers, body.
    type Parsed = (u16, Vec<(String, String)>, Vec<u8>);

    fn parse_responses(mut data: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            let n = match resp.parse(data).expect("valid response") {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial => panic!("partial response: {}", text(data)),
            };
            let hs: Vec<(String, String)> = resp
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), text(h.value)))
                .collect();
            let status = resp.code.unwrap_or(0);
            let len = hs
                .iter()
                .find(|(n, _)| n == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            out.push((status, hs, data[n..n + len].to_vec()));
            data = &data[n + len..];
        }
        out
    }

    fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
        hs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn simple_get() {
        let (mut c, now) = conn();
        c.handle_read(b"GET /v2/health/ready?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", now);
        let reqs = requests(&mut c);
        assert_eq!(reqs.len(), 1);
        let r = &reqs[0];
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/v2/health/ready")
        );
        assert_eq!(r.query.as_deref(), Some("x=1"));
        assert_eq!(r.header("HOST"), Some("a"));
        assert!(r.body.is_empty());
        c.send_response(r.seq, Response::json(200, "{}"), now);
        let out = text(&drain(&mut c, now));
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
        assert!(!c.is_closed());
        assert!(c.wants_read());
    }

    #[test]
    fn every_split_point() {
        let input: &[u8] =
            b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\n\
            Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n\
            GET /c HTTP/1.1\r\nConnection: close\r\n\r\n";
        for split in 0..=input.len() {
            let (mut c, now) = conn();
            c.handle_read(&input[..split], now);
            c.handle_read(&input[split..], now);
            let reqs = requests(&mut c);
            let got: Vec<(String, Vec<u8>)> = reqs
                .iter()
                .map(|r| (r.path.clone(), r.body.to_vec()))
                .collect();
            assert_eq!(
                got,
                vec![
                    ("/a".to_owned(), b"hello".to_vec()),
                    ("/b".to_owned(), b"abcde".to_vec()),
                    ("/c".to_owned(), Vec::new()),
                ],
                "split at {split}"
            );
        }
        // And one byte at a time.
        let (mut c, now) = conn();
        for b in input {
            c.handle_read(std::slice::from_ref(b), now);
        }
        assert_eq!(requests(&mut c).len(), 3);
    }

    #[test]
    fn pipelined_responses_in_request_order() {
        let (mut c, now) = conn();
        c.handle_read(
            b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n",
            now,
        );
        let reqs = requests(&mut c);
        assert_eq!(reqs.len(), 3);
        c.send_response(reqs[2].seq, Response::new(200).with_body("three"), now);
        c.send_response(reqs[1].seq, Response::new(200).with_body("two"), now);
        assert!(
            drain(&mut c, now).is_empty(),
            "nothing before the first answer"
        );
        c.send_response(reqs[0].seq, Response::new(200).with_body("one"), now);
        let resps = parse_responses(&drain(&mut c, now));
        let bodies: Vec<Vec<u8>> = resps.into_iter().map(|r| r.2).collect();
        assert_eq!(
            bodies,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert!(
            !c.send_response(reqs[0].seq, Response::new(200), now),
            "answered twice"
        );
    }

    #[test]
    fn content_length_body_is_not_copied() {
        let (mut c, now) = conn();
        c.handle_read(b"POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n", now);
        let mut sent = 0;
        while sent < 100_000 {
            let room = c.recv_buf();
            let n = room.len().min(100_000 - sent);
            room[..n].fill(7);
            c.handle_recv(n, now);
            sent += n;
        }
        let reqs = requests(&mut c);
        assert_eq!(reqs[0].body.len(), 100_000);
        assert!(reqs[0].body.iter().all(|&b| b == 7));
    }

    #[test]
    fn keep_alive_rules() {
        let (mut c, now) = conn();
        c.handle_read(b"GET / HTTP/1.0\r\n\r\n", now);
        let r = c.poll_request().unwrap();
        c.send_response(r.seq, Response::new(200), now);
        let out = text(&drain(&mut c, now));
        assert!(out.contains("Connection: close\r\n"), "{out}");
        assert!(c.is_closed());

        let (mut c, now) = conn();
        c.handle_read(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", now);
        let r = c.poll_request().unwrap();
        c.send_response(r.seq, Response::new(200), now);
        let out = text(&drain(&mut c, now));
        assert!(out.contains("Connection: keep-alive\r\n"), "{out}");
        assert!(!c.is_closed());

        let (mut c, now) = conn();
        c.handle_read(
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET /ignored HTTP/1.1\r\n\r\n",
            now,
        );
        let reqs = requests(&mut c);
        assert_eq!(reqs.len(), 1);
        c.send_response(reqs[0].seq, Response::new(204), now);
        let out = text(&drain(&mut c, now));
        assert_eq!(out, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        assert!(c.is_closed());
    }

    #[test]
    fn head_gets_length_without_body() {
        let (mut c, now) = conn();
        c.handle_read(b"HEAD / HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n", now);
        let r = c.poll_request().unwrap();
        c.send_response(r.seq, Response::new(200).with_body("abcdef"), now);
        let out = text(&drain(&mut c, now));
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n");
    }

    #[test]
    fn expect_continue() {
        let (mut c, now) = conn();
        c.handle_read(
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            now,
        );
        assert_eq!(text(&drain(&mut c, now)), "HTTP/1.1 100 Continue\r\n\r\n");
        c.handle_read(b"abc", now);
        let r = c.poll_request().unwrap();
        echo(&mut c, &r, now);
        assert_eq!(
            text(&drain(&mut c, now)),
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
        );

        // Body sent along with the head: no 100.
        let (mut c, now) = conn();
        c.handle_read(
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
            now,
        );
        let r = c.poll_request().unwrap();
        echo(&mut c, &r, now);
        assert!(!text(&drain(&mut c, now)).contains("100 Continue"));
    }

    #[test]
    fn continue_waits_for_earlier_responses() {
        let (mut c, now) = conn();
        c.handle_read(
            b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            now,
        );
        let first = c.poll_request().unwrap();
        assert!(drain(&mut c, now).is_empty());
        c.send_response(first.seq, Response::new(200), now);
        let out = text(&drain(&mut c, now));
        assert!(
            out.ends_with("\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"),
            "{out}"
        );
    }

    #[test]
    fn rejections() {
        let cases: &[(&[u8], u16)] = &[
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Encoding: br\r\n\r\n",
                415,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nExpect: magic\r\n\r\n",
                417,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                400,
            ),
        ];
        for (input, status) in cases {
            let (mut c, now) = conn();
            c.handle_read(input, now);
            assert!(c.poll_request().is_none());
            let resps = parse_responses(&drain(&mut c, now));
            assert_eq!(resps.len(), 1, "{}", text(input));
            assert_eq!(resps[0].0, *status, "{}", text(input));
            assert_eq!(header(&resps[0].1, "connection"), Some("close"));
            assert_eq!(
                header(&resps[0].1, "content-type"),
                Some("application/json")
            );
            let v: serde_json::Value = serde_json::from_slice(&resps[0].2).unwrap();
            assert!(v["error"].is_string());
            assert!(c.is_closed());
        }
    }

    #[test]
    fn header_limits() {
        let config = Config {
            max_header_bytes: 100,
            ..Config::default()
        };
        let now = t0();
        let mut c = Connection::new(config, now);
        c.handle_read(b"GET / HTTP/1.1\r\nX-Long: ", now);
        c.handle_read(&[b'a'; 200], now);
        let resps = parse_responses(&drain(&mut c, now));
        assert_eq!(resps[0].0, 431);
        assert!(c.is_closed());

        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..200 {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let (mut c, now) = conn();
        c.handle_read(&many, now);
        assert_eq!(parse_responses(&drain(&mut c, now))[0].0, 431);
    }

    #[test]
    fn oversized_bodies_come_out_marked_and_unread() {
        let config = Config {
            max_body_bytes: 4,
            ..Config::default()
        };
        // Declared too large: handed out at once, empty, before any body
        // byte (and no 100 Continue); the connection closes after the
        // answer and lingers, since the client is still sending.
        let now = t0();
        let mut c = Connection::new(config, now);
        c.handle_read(
            b"POST /big HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            now,
        );
        let r = c.poll_request().expect("the oversized request");
        assert_eq!(
            r.oversized,
            Some(Oversized {
                size: 5,
                limit: 4,
                decompressed: false
            })
        );
        assert!(r.body.is_empty());
        assert!(drain(&mut c, now).is_empty(), "no 100 Continue");
        c.handle_read(b"hello GET / HTTP/1.1\r\n\r\n", now);
        assert!(c.poll_request().is_none(), "nothing more is read");
        c.send_response(r.seq, Response::error(400, "too big"), now);
        let resps = parse_responses(&drain(&mut c, now));
        assert_eq!(resps.len(), 1);
        assert_eq!(resps[0].0, 400);
        assert_eq!(header(&resps[0].1, "connection"), Some("close"));
        assert!(c.is_closed());
        assert!(c.wants_linger());

        // A length no integer holds is just as oversized.
        let mut c = Connection::new(config, now);
        c.handle_read(
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            now,
        );
        assert_eq!(c.poll_request().unwrap().oversized.unwrap().size, u64::MAX);

        // Chunked: found out as the chunks arrive.
        let mut c = Connection::new(config, now);
        c.handle_read(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n",
            now,
        );
        let r = c.poll_request().expect("the oversized request");
        assert_eq!(r.oversized.map(|o| o.size), Some(5));
        c.send_response(r.seq, Response::error(400, "too big"), now);
        assert_eq!(parse_responses(&drain(&mut c, now))[0].0, 400);
        assert!(c.is_closed());

        // At the limit is fine.
        let mut c = Connection::new(config, now);
        c.handle_read(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd", now);
        let r = c.poll_request().unwrap();
        assert_eq!((r.oversized, &r.body[..]), (None, &b"abcd"[..]));
    }

    #[test]
    fn chunk_count_limit() {
        fn chunked(count: usize) -> Vec<u8> {
            let mut req = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..count {
                req.extend_from_slice(b"1\r\nA\r\n");
            }
            req.extend_from_slice(b"0\r\n\r\n");
            req
        }
        let (mut c, now) = conn();
        c.handle_read(&chunked(MAX_CHUNKS), now);
        let r = c.poll_request().expect("at the limit");
        assert_eq!(r.body.len(), MAX_CHUNKS);

        let (mut c, now) = conn();
        c.handle_read(&chunked(MAX_CHUNKS + 1), now);
        assert!(c.poll_request().is_none());
        let resps = parse_responses(&drain(&mut c, now));
        assert_eq!(resps[0].0, 400);
        let v: serde_json::Value = serde_json::from_slice(&resps[0].2).unwrap();
        assert_eq!(
            v["error"],
            "Chunked request body exceeds maximum of 65536 non-empty chunks. \
             Send fewer or larger HTTP chunks."
        );
        assert!(c.is_closed());
    }

    #[test]
    fn chunked_wins_over_content_length_then_close() {
        let (mut c, now) = conn();
        c.handle_read(
            b"POST /a HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            now,
        );
        let r = c.poll_request().expect("the chunked request");
        assert_eq!(&r.body[..], b"hello");
        assert!(c.poll_request().is_none(), "nothing after it is read");
        echo(&mut c, &r, now);
        let resps = parse_responses(&drain(&mut c, now));
        assert_eq!(resps.len(), 1);
        assert_eq!(resps[0].2, b"hello");
        assert_eq!(header(&resps[0].1, "connection"), Some("close"));
        assert!(c.is_closed());
    }

    #[test]
    fn gzip_and_deflate_request_bodies() {
        let plain = b"the quick brown fox jumps over the lazy dog".repeat(10);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        zl.write_all(&plain).unwrap();
        let zl = zl.finish().unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        raw.write_all(&plain).unwrap();
        let raw = raw.finish().unwrap();
        for (name, data, coding) in [
            ("gzip", gz, Coding::Gzip),
            ("deflate", zl, Coding::Deflate),
            ("deflate", raw, Coding::Deflate),
        ] {
            let (mut c, now) = conn();
            let head = format!(
                "POST / HTTP/1.1\r\nContent-Encoding: {name}\r\nContent-Length: {}\r\n\r\n",
                data.len()
            );
            c.handle_read(head.as_bytes(), now);
            c.handle_read(&data, now);
            let mut r = c.poll_request().unwrap();
            assert_eq!(r.content_coding(), Some(coding));
            assert_eq!(&r.body[..], &data[..], "handed out as sent");
            assert_eq!(r.decode_body(plain.len()), Ok(()));
            assert_eq!(&r.body[..], &plain[..], "{name}");
            assert!(r.header("content-encoding").is_none());
            assert_eq!(r.content_coding(), None);
            assert_eq!(r.decode_body(0), Ok(()), "decoding twice does nothing");
        }

        let (mut c, now) = conn();
        c.handle_read(
            b"POST / HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",
            now,
        );
        let mut r = c.poll_request().unwrap();
        assert!(matches!(r.decode_body(1000), Err(DecodeError::Corrupt(_))));
    }

    #[test]
    fn zip_bomb_stops_at_the_limit() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(&vec![0u8; 10 * 1024 * 1024]).unwrap();
        let gz = gz.finish().unwrap();
        let mut r = Request::new(
            "POST",
            "/",
            vec![("Content-Encoding".to_owned(), "gzip".to_owned())],
            gz,
        );
        r.coding = Some(Coding::Gzip);
        let limit = 1024 * 1024;
        let Err(DecodeError::TooLarge(o)) = r.decode_body(limit) else {
            panic!("a bomb is refused");
        };
        assert_eq!(
            (o.size, o.limit, o.decompressed),
            (limit as u64 + 1, limit, true)
        );
        assert_eq!(r.oversized, Some(o));
        assert!(r.body.is_empty(), "the compressed body is let go");

        // What decoding allocates stays within the limit plus one byte.
        let out = decode_body(
            Coding::Gzip,
            &{
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::best());
                gz.write_all(&vec![1u8; limit]).unwrap();
                gz.finish().unwrap()
            },
            limit,
        )
        .unwrap();
        assert_eq!(out.len(), limit);
    }

    #[test]
    fn responses_are_written_as_given() {
        assert_eq!(negotiate_coding("gzip"), Some(Coding::Gzip));
        assert_eq!(
            negotiate_coding("deflate, gzip;q=0.5"),
            Some(Coding::Deflate)
        );
        assert_eq!(
            negotiate_coding("gzip;q=0, deflate;q=0.1"),
            Some(Coding::Deflate)
        );
        assert_eq!(negotiate_coding("identity"), None);
        assert_eq!(negotiate_coding("*"), Some(Coding::Gzip));
        assert_eq!(negotiate_coding("*;q=0"), None);
        assert_eq!(negotiate_coding("br, deflate"), Some(Coding::Deflate));

        // The connection negotiates but does not compress: a response it is
        // given goes out as it is, whatever Accept-Encoding said.
        let body = b"{\"outputs\":[1,2,3]}".repeat(50);
        let (mut c, now) = conn();
        c.handle_read(b"GET / HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n", now);
        let r = c.poll_request().unwrap();
        assert_eq!(r.response_coding(), Some(Coding::Gzip));
        c.send_response(r.seq, Response::json(200, body.clone()), now);
        let resps = parse_responses(&drain(&mut c, now));
        assert_eq!(header(&resps[0].1, "content-encoding"), None);
        assert_eq!(resps[0].2, body);
    }

    #[test]
    fn compress_response_keeps_headers_and_roundtrips() {
        let body = b"{\"outputs\":[1,2,3]}".repeat(50);
        for coding in [Coding::Gzip, Coding::Deflate] {
            let mut resp = Response::json(200, body.clone())
                .with_header("Inference-Header-Content-Length", "12")
                .with_body(Bytes::from_static(b"tail"));
            compress_response(&mut resp, coding);
            assert_eq!(resp.header("content-encoding"), Some(coding.as_str()));
            assert_eq!(resp.header("inference-header-content-length"), Some("12"));
            let compressed: Vec<u8> = resp.body.concat();
            let mut decoded = Vec::new();
            match coding {
                Coding::Gzip => flate2::read::GzDecoder::new(&compressed[..])
                    .read_to_end(&mut decoded)
                    .unwrap(),
                Coding::Deflate => flate2::read::ZlibDecoder::new(&compressed[..])
                    .read_to_end(&mut decoded)
                    .unwrap(),
            };
            let mut expected = body.clone();
            expected.extend_from_slice(b"tail");
            assert_eq!(decoded, expected);
        }
        // Empty bodies are left alone.
        let mut resp = Response::new(200);
        compress_response(&mut resp, Coding::Gzip);
        assert_eq!(resp.header("content-encoding"), None);
    }

    #[test]
    fn header_timeout_answers_408() {
        let (mut c, now) = conn();
        c.handle_read(b"GET / HTTP/1.1\r\n", now);
        let deadline = c.poll_timeout().unwrap();
        assert_eq!(deadline, now + Config::default().header_timeout);
        c.handle_timeout(deadline - Duration::from_millis(1));
        assert!(drain(&mut c, now).is_empty());
        c.handle_timeout(deadline);
        let resps = parse_responses(&drain(&mut c, deadline));
        assert_eq!(resps[0].0, 408);
        assert!(c.is_closed());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn idle_timeout_closes_silently() {
        let (mut c, now) = conn();
        let idle = Config::default().idle_timeout;
        assert_eq!(c.poll_timeout(), Some(now + idle));
        let later = now + Duration::from_secs(5);
        c.handle_read(b"GET / HTTP/1.1\r\n\r\n", later);
        let r = c.poll_request().unwrap();
        assert_eq!(
            c.poll_timeout(),
            None,
            "no timeout while the application works"
        );
        c.send_response(r.seq, Response::new(200), later);
        let done = later + Duration::from_secs(1);
        drain(&mut c, done);
        assert_eq!(c.poll_timeout(), Some(done + idle));
        c.handle_timeout(done + idle);
        assert!(c.is_closed());
        assert!(drain(&mut c, done + idle).is_empty());
    }

    #[test]
    fn body_stall_and_write_stall() {
        let idle = Config::default().idle_timeout;
        let config = Config {
            body_timeout: idle * 10,
            ..Config::default()
        };
        let now = t0();
        let mut c = Connection::new(config, now);
        c.handle_read(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", now);
        assert_eq!(c.poll_timeout(), Some(now + idle));
        c.handle_timeout(now + idle);
        assert_eq!(parse_responses(&drain(&mut c, now + idle))[0].0, 408);

        let (mut c, now) = conn();
        c.handle_read(b"GET / HTTP/1.1\r\n\r\n", now);
        let r = c.poll_request().unwrap();
        c.send_response(r.seq, Response::new(200).with_body("x"), now);
        assert!(c.wants_write());
        c.handle_timeout(now + idle);
        assert!(c.is_closed(), "a client that never reads is dropped");
    }

    #[test]
    fn body_deadline_with_a_minimum_rate() {
        let config = Config {
            body_timeout: Duration::from_secs(10),
            min_body_rate: 100,
            ..Config::default()
        };
        let now = t0();
        let mut c = Connection::new(config, now);
        c.handle_read(b"POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n", now);
        assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(10)));
        // A byte a second is progress, so the stall timeout never fires;
        // it earns a hundredth of a second each, so the deadline does.
        let mut t = now;
        let mut answered = Vec::new();
        for _ in 0..20 {
            t += Duration::from_secs(1);
            c.handle_timeout(t);
            answered.extend(drain(&mut c, t));
            if c.is_closed() {
                break;
            }
            c.handle_read(b"x", t);
        }
        let resps = parse_responses(&answered);
        assert_eq!(resps[0].0, 408, "a trickled body is cut off");
        assert!(c.is_closed());
        assert!(t <= now + Duration::from_secs(11));

        // 100 bytes a second earns a second a second: never cut off.
        let mut c = Connection::new(config, now);
        c.handle_read(b"POST / HTTP/1.1\r\nContent-Length: 3000\r\n\r\n", now);
        let mut t = now;
        for _ in 0..30 {
            t += Duration::from_secs(1);
            c.handle_timeout(t);
            assert!(!c.is_closed());
            c.handle_read(&[b'y'; 100], t);
        }
        assert_eq!(c.poll_request().unwrap().body.len(), 3000);

        // Rate 0: the body timeout is all a body gets.
        let config = Config {
            min_body_rate: 0,
            ..config
        };
        let mut c = Connection::new(config, now);
        c.handle_read(b"POST / HTTP/1.1\r\nContent-Length: 3000\r\n\r\n", now);
        c.handle_read(&[b'y'; 2000], now + Duration::from_secs(9));
        assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(10)));
    }

    #[test]
    fn late_response_is_not_a_write_stall() {
        let (mut c, now) = conn();
        let idle = Config::default().idle_timeout;
        c.handle_read(b"GET / HTTP/1.1\r\n\r\n", now);
        let r = c.poll_request().unwrap();
        let late = now + idle * 3;
        c.send_response(r.seq, Response::new(200).with_body("slow answer"), late);
        assert_eq!(c.poll_timeout(), Some(late + idle));
        c.handle_timeout(late + Duration::from_secs(1));
        assert!(!c.is_closed());
        assert!(text(&drain(&mut c, late)).ends_with("slow answer"));
    }

    #[test]
    fn eof_cancels_in_flight() {
        let (mut c, now) = conn();
        c.handle_read(b"GET / HTTP/1.1\r\n\r\n", now);
        let r = c.poll_request().unwrap();
        assert!(!r.cancel.is_cancelled());
        c.handle_eof(now);
        assert!(r.cancel.is_cancelled());
        assert!(c.is_closed());
        assert!(!c.send_response(r.seq, Response::new(200), now));

        // EOF mid-body.
        let (mut c, now) = conn();
        c.handle_read(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", now);
        c.handle_eof(now);
        assert!(c.is_closed());
        assert!(c.poll_request().is_none());
    }

    #[test]
    fn backpressure_on_pipelining() {
        let config = Config {
            max_pipelined: 2,
            ..Config::default()
        };
        let now = t0();
        let mut c = Connection::new(config, now);
        c.handle_read(
            b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n",
            now,
        );
        let reqs = requests(&mut c);
        assert_eq!(reqs.len(), 2);
        assert!(!c.wants_read());
        c.send_response(reqs[0].seq, Response::new(200), now);
        let third = requests(&mut c);
        assert_eq!(third.len(), 1);
        assert_eq!(third[0].path, "/3");
        drain(&mut c, now);
        c.send_response(reqs[1].seq, Response::new(200), now);
        c.send_response(third[0].seq, Response::new(200), now);
        assert_eq!(parse_responses(&drain(&mut c, now)).len(), 2);
        assert!(c.wants_read());
    }

    #[test]
    fn graceful_shutdown() {
        let (mut c, now) = conn();
        c.handle_read(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n", now);
        let reqs = requests(&mut c);
        c.shutdown();
        c.send_response(reqs[0].seq, Response::new(200), now);
        let out = text(&drain(&mut c, now));
        assert!(!out.contains("Connection: close"));
        assert!(!c.is_closed());
        c.send_response(reqs[1].seq, Response::new(200), now);
        let out = text(&drain(&mut c, now));
        assert!(out.contains("Connection: close"), "{out}");
        assert!(c.is_closed());

        let (mut c, _) = conn();
        c.shutdown();
        assert!(c.is_closed(), "an idle connection closes at once");

        // A request partly received when the shutdown comes is read to its
        // end (body included) and answered; nothing after it is read.
        let (mut c, now) = conn();
        c.handle_read(b"POST /late HTTP/1.1\r\nContent-", now);
        c.shutdown();
        assert!(!c.is_closed());
        assert!(c.wants_read());
        c.handle_read(b"Length: 2\r\n\r\n", now);
        assert!(c.wants_read(), "its body is still to come");
        c.handle_read(b"ok", now);
        let reqs = requests(&mut c);
        assert_eq!(reqs.len(), 1);
        assert_eq!(&reqs[0].body[..], b"ok");
        c.handle_read(b"GET /next HTTP/1.1\r\n\r\n", now);
        assert!(c.poll_request().is_none(), "sent after the shutdown");
        echo(&mut c, &reqs[0], now);
        let out = text(&drain(&mut c, now));
        assert!(out.contains("Connection: close\r\n"), "{out}");
        assert!(out.ends_with("ok"), "{out}");
        assert!(c.is_closed());

        // Announced before the socket's last read: what that read brings
        // is answered as the last request.
        let (mut c, now) = conn();
        c.prepare_shutdown();
        assert!(!c.is_closed());
        c.handle_read(b"GET /x HTTP/1.1\r\n\r\n", now);
        let r = c.poll_request().unwrap();
        c.shutdown();
        c.send_response(r.seq, Response::new(200), now);
        assert!(text(&drain(&mut c, now)).contains("Connection: close\r\n"));
        assert!(c.is_closed());
        let (mut c, _) = conn();
        c.prepare_shutdown();
        c.shutdown();
        assert!(c.is_closed(), "the last read brought nothing");

        // Pipelined requests already received are all answered.
        let (mut c, now) = conn();
        c.handle_read(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n", now);
        c.shutdown();
        let reqs = requests(&mut c);
        assert_eq!(reqs.len(), 2);
        for r in &reqs {
            c.send_response(r.seq, Response::new(204), now);
        }
        let out = text(&drain(&mut c, now));
        assert_eq!(out.matches("204 No Content").count(), 2, "{out}");
        assert!(c.is_closed());
    }

    #[test]
    fn header_values_cannot_split_responses() {
        let (mut c, now) = conn();
        c.handle_read(b"GET / HTTP/1.1\r\n\r\n", now);
        let r = c.poll_request().unwrap();
        c.send_response(
            r.seq,
            Response::new(200)
                .with_header("X-A", "1\r\nX-Injected: 2")
                .with_header("Content-Length", "999"),
            now,
        );
        let out = text(&drain(&mut c, now));
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nX-A: 1  X-Injected: 2\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn absolute_target_and_blank_lines() {
        let (mut c, now) = conn();
        c.handle_read(b"\r\nGET http://host:8000/v2?q HTTP/1.1\r\n\r\n", now);
        let r = c.poll_request().unwrap();
        assert_eq!(r.path, "/v2");
        assert_eq!(r.query.as_deref(), Some("q"));
    }

    #[test]
    fn request_without_connection() {
        let r = Request::new(
            "POST",
            "/v2/models/m/infer?x=1",
            vec![("Accept-Encoding".to_owned(), "deflate".to_owned())],
            "{}",
        );
        assert_eq!(r.path, "/v2/models/m/infer");
        assert_eq!(r.query.as_deref(), Some("x=1"));
        assert_eq!(r.response_coding(), Some(Coding::Deflate));
        assert_eq!(&r.body[..], b"{}");
    }

    #[test]
    fn inference_header_length() {
        let (mut c, now) = conn();
        c.handle_read(
            b"POST / HTTP/1.1\r\nInference-Header-Content-Length: 12\r\n\r\n",
            now,
        );
        let r = c.poll_request().unwrap();
        assert_eq!(r.inference_header_content_length(), Ok(Some(12)));
        let (mut c, now) = conn();
        c.handle_read(
            b"POST / HTTP/1.1\r\nInference-Header-Content-Length: x\r\n\r\n",
            now,
        );
        let r = c.poll_request().unwrap();
        assert!(r.inference_header_content_length().is_err());
    }

    #[test]
    fn garbage_never_panics() {
        // A small deterministic generator; every input must end in a
        // response, a close or a wait, never a panic.
        let mut seed = 0x1234_5678_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet: &[u8] = b"GET POST / HTTP/1.1\r\n:Content-Length: 0123456789abcdef;chunked\
            Transfer-Encoding Expect 100-continue gzip \x00\xff";
        for _ in 0..2000 {
            let (mut c, now) = conn();
            let len = (next() % 300) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let mut rest = &data[..];
            while !rest.is_empty() {
                let n = ((next() % 17) as usize + 1).min(rest.len());
                c.handle_read(&rest[..n], now);
                rest = &rest[n..];
                while let Some(r) = c.poll_request() {
                    echo(&mut c, &r, now);
                }
            }
            drain(&mut c, now);
            c.handle_timeout(now + Duration::from_secs(1000));
            drain(&mut c, now);
        }
    }
}
