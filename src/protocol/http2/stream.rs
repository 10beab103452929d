//! One HTTP/2 stream as the server sees it: its state (RFC 9113 §5.1), its
//! two flow-control windows, the body bytes the application has not
//! released yet, and what the application queued to send.
//!
//! Part of `protocol::http2`; calls nothing outside it.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::frame::StreamId;

/// The state of a stream (RFC 9113 §5.1), as a server that never pushes
/// sees it: the two "reserved" states cannot occur.
///
/// ```text
///                          +--------+
///                          |  idle  |
///                          +--------+
///                              |
///                              | recv HEADERS
///                              v
///                          +--------+
///                  recv ES |        | send ES
///             ,------------|  open  |------------.
///            /             |        |             \
///           v              +--------+              v
///     +----------+             |             +----------+
///     |   half   |             |             |   half   |
///     |  closed  |             | send R /    |  closed  |
///     | (remote) |             | recv R      | (local)  |
///     +----------+             |             +----------+
///          |                   |                   |
///          | send ES /         |         recv ES / |
///          | send R /          v          send R / |
///          | recv R        +--------+     recv R   |
///          `-------------->| closed |<-------------'
///                          +--------+
///
///   recv HEADERS with ES goes from idle straight to half closed (remote).
///   ES: a frame with END_STREAM; R: RST_STREAM.
/// ```
///
/// A server that has sent a complete response while the request is still
/// arriving leaves half closed (local) at once with RST_STREAM(NO_ERROR)
/// (RFC 9113 §8.1), so the client stops sending a body nobody reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not opened yet.
    Idle,
    /// Both sides may send.
    Open,
    /// The client has finished sending; the server is answering.
    HalfClosedRemote,
    /// The server has finished sending; the client is still sending.
    HalfClosedLocal,
    /// Finished, or reset by either side.
    Closed,
}

impl State {
    /// Whether the client may still send DATA or trailers.
    pub fn remote_open(self) -> bool {
        matches!(self, State::Open | State::HalfClosedLocal)
    }

    /// Whether the server may still send.
    pub fn local_open(self) -> bool {
        matches!(self, State::Open | State::HalfClosedRemote)
    }

    /// The state after the client's END_STREAM.
    pub fn recv_end(self) -> State {
        match self {
            State::Idle | State::Open => State::HalfClosedRemote,
            _ => State::Closed,
        }
    }

    /// The state after the server's END_STREAM.
    pub fn send_end(self) -> State {
        match self {
            State::Open => State::HalfClosedLocal,
            _ => State::Closed,
        }
    }
}

/// Something the application queued on a stream, sent in order.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A header block (response headers or trailers), encoded when it
    /// reaches the front, so HPACK sees blocks in the order they are sent.
    Headers {
        fields: Vec<(String, String)>,
        end_stream: bool,
    },
    /// Body bytes, cut into DATA frames as windows allow.
    Data { data: Bytes, end_stream: bool },
}

/// A stream the connection tracks: opened by the client and not closed.
#[derive(Debug)]
pub(crate) struct Stream {
    pub state: State,
    /// Bytes the client may still send before we open the window more.
    pub recv_window: i64,
    /// Body bytes handed to the application and not yet released.
    pub unreleased: usize,
    /// Bytes released and not yet announced with WINDOW_UPDATE.
    pub pending_update: u32,
    /// `content-length` of the request, if it sent one.
    pub content_length: Option<u64>,
    /// Body bytes received so far.
    pub received: u64,
    /// Bytes we may still send before the client opens the window more;
    /// negative after the client lowered `SETTINGS_INITIAL_WINDOW_SIZE`.
    pub send_window: i64,
    /// What the application queued and is not in the output yet.
    pub queue: VecDeque<Outgoing>,
    /// Body bytes in `queue`.
    pub queued_bytes: usize,
    /// The response headers were queued.
    pub headers_queued: bool,
    /// END_STREAM was queued: the application may send nothing more.
    pub end_queued: bool,
    /// Whether the stream is in the connection's ready list.
    pub ready: bool,
    /// Since when queued data has waited on this stream's window.
    pub blocked_since: Option<Instant>,
}

impl Stream {
    pub fn new(state: State, recv_window: u32, send_window: u32) -> Stream {
        Stream {
            state,
            recv_window: i64::from(recv_window),
            unreleased: 0,
            pending_update: 0,
            content_length: None,
            received: 0,
            send_window: i64::from(send_window),
            queue: VecDeque::new(),
            queued_bytes: 0,
            headers_queued: false,
            end_queued: false,
            ready: false,
            blocked_since: None,
        }
    }
}

/// How a stream that is no longer tracked ended, remembered for a while so
/// that late frames get the answer RFC 9113 §5.1 gives for each case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Both sides sent END_STREAM: further frames are a connection error.
    Finished,
    /// The client reset it: further frames are a stream error.
    ResetByPeer,
    /// We reset or refused it: frames the client sent before it saw our
    /// RST_STREAM are ignored.
    ResetByUs,
}

/// Remembers how recently closed streams ended, up to a fixed count.
#[derive(Debug, Default)]
pub(crate) struct RecentlyClosed {
    entries: VecDeque<(StreamId, Ended)>,
}

impl RecentlyClosed {
    const CAPACITY: usize = 512;

    pub fn record(&mut self, id: StreamId, how: Ended) {
        if self.entries.len() == Self::CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back((id, how));
    }

    pub fn get(&self, id: StreamId) -> Option<Ended> {
        self.entries
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, how)| *how)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        assert_eq!(State::Idle.recv_end(), State::HalfClosedRemote);
        assert_eq!(State::Open.recv_end(), State::HalfClosedRemote);
        assert_eq!(State::HalfClosedLocal.recv_end(), State::Closed);
        assert_eq!(State::Open.send_end(), State::HalfClosedLocal);
        assert_eq!(State::HalfClosedRemote.send_end(), State::Closed);
        assert!(State::Open.remote_open() && State::Open.local_open());
        assert!(!State::HalfClosedRemote.remote_open());
        assert!(!State::HalfClosedLocal.local_open());
    }

    #[test]
    fn recently_closed_is_bounded() {
        let mut r = RecentlyClosed::default();
        for i in 0..(RecentlyClosed::CAPACITY as u32 + 10) {
            r.record(StreamId::new(2 * i + 1), Ended::Finished);
        }
        assert_eq!(r.get(StreamId::new(1)), None);
        assert_eq!(r.get(StreamId::new(2 * 500 + 1)), Some(Ended::Finished));
        r.record(StreamId::new(1), Ended::ResetByUs);
        assert_eq!(r.get(StreamId::new(1)), Some(Ended::ResetByUs));
    }
}
