//! Sans-IO HTTP/2 server connection (RFC 9113) with its own HPACK
//! (RFC 7541).
//!
//! [`Connection`] turns the bytes a client sends into [`Event`]s and the
//! responses the application hands back into frames to write. It owns no
//! socket, starts no thread and reads no clock: the caller passes bytes and
//! the current [`Instant`](std::time::Instant) in, and asks what to write
//! and when to wake it. It may call nothing outside this module.
//!
//! # Call order
//!
//! The driver (`net::` on mio, or a test) repeats:
//!
//! 1. Input: fill [`Connection::recv_buf`] from the socket and report the
//!    count with [`Connection::handle_recv`] (or hand a slice to
//!    [`Connection::handle_read`]); on end of stream call
//!    [`Connection::handle_eof`]; when the deadline from
//!    [`Connection::poll_timeout`] passes call
//!    [`Connection::handle_timeout`].
//! 2. Events: drain [`Connection::poll_event`]. [`Event::Request`] opens a
//!    stream; [`Event::Data`] and [`Event::Trailers`] carry the rest of the
//!    request; [`Event::Reset`] means the stream is gone and its work
//!    should be cancelled. After consuming body bytes, call
//!    [`Connection::release_capacity`]: the client can only send as much
//!    as the application has released, which bounds the memory a slow
//!    consumer holds.
//! 3. Commands, on any schedule: [`Connection::send_headers`], then any
//!    number of [`Connection::send_data`], then
//!    [`Connection::send_trailers`] (or `end_stream` on the last one
//!    sent); a gRPC "trailers-only" answer is one `send_headers` with
//!    `end_stream`. [`Connection::reset`] abandons a stream;
//!    [`Connection::shutdown`] starts a graceful close, [`Connection::abort`]
//!    an immediate one.
//! 4. Output: write the slices from [`Connection::poll_transmit`]
//!    (vectored) and report progress with [`Connection::handle_write`].
//! 5. Interest: read only while [`Connection::wants_read`]; write while
//!    [`Connection::wants_write`]; drop the socket once
//!    [`Connection::is_closed`] (after draining it for a moment when
//!    [`Connection::wants_linger`]).
//!
//! # What it implements
//!
//! The connection preface, SETTINGS with acknowledgement, HEADERS with
//! CONTINUATION, padding, PRIORITY (parsed and ignored), DATA with stream
//! and connection flow control both ways (the client's initial window and
//! frame size honoured, windows that go negative after a SETTINGS change
//! handled), PING, RST_STREAM both ways, GOAWAY with a two-step graceful
//! shutdown, the stream state machine of RFC 9113 §5.1 ([`State`]), request
//! validation (§8.3), and errors that reach one stream ([`StreamError`],
//! answered with RST_STREAM) or the connection ([`ConnectionError`],
//! answered with GOAWAY). Limits against abuse: concurrent streams,
//! header list size, header block bytes and CONTINUATION count, rapid
//! reset, PING and SETTINGS floods, zero-window stalls, idle connections
//! and unread output; see [`Config`].
//!
//! Response body bytes are never copied: frame headers and slices of the
//! application's [`Bytes`](bytes::Bytes) go out interleaved in one vectored
//! write. Large request DATA payloads are slices of the read buffer.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod connection;
pub mod error;
pub mod frame;
pub mod hpack;
mod stream;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use connection::{Config, Connection, Event, SendError, header};
pub use error::{ConnectionError, Error, ErrorCode, StreamError};
pub use frame::StreamId;
pub use stream::State;
