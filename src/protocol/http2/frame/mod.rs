//! HTTP/2 frames (RFC 9113 §4, §6): the 9-byte frame header, one type per
//! frame kind (each in its own file, with parsing and encoding), and the
//! [`FrameDecoder`] that cuts a byte stream into frames.
//!
//! Parsing checks what a frame can check alone (sizes, stream 0 or not,
//! padding, setting values) and says how far a failure reaches (stream or
//! connection); rules that need stream state live in the connection.
//!
//! Part of `protocol::http2`; calls nothing outside it.

mod continuation;
mod data;
mod decoder;
mod goaway;
mod headers;
mod ping;
mod priority;
mod rst_stream;
mod settings;
mod window_update;

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

pub use continuation::Continuation;
pub use data::Data;
pub use decoder::FrameDecoder;
pub use goaway::GoAway;
pub use headers::Headers;
pub use ping::Ping;
pub use priority::{Priority, PrioritySpec};
pub use rst_stream::RstStream;
pub use settings::Settings;
pub use window_update::WindowUpdate;

use super::error::{Error, ErrorCode};

/// What a client sends first (RFC 9113 §3.4), before its SETTINGS.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of a frame header.
pub const HEADER_LEN: usize = 9;
/// `SETTINGS_MAX_FRAME_SIZE` until a peer says otherwise, and its minimum.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// Largest `SETTINGS_MAX_FRAME_SIZE` allowed (2^24 - 1).
pub const MAX_FRAME_SIZE_LIMIT: u32 = (1 << 24) - 1;
/// Largest flow-control window (2^31 - 1).
pub const MAX_WINDOW_SIZE: u32 = (1 << 31) - 1;
/// Initial flow-control window of a connection and of each stream until
/// SETTINGS change it.
pub const DEFAULT_WINDOW_SIZE: u32 = 65_535;

/// Frame flags (their meaning depends on the frame type).
pub mod flags {
    /// DATA, HEADERS: last frame the sender sends on the stream.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING: an acknowledgement.
    pub const ACK: u8 = 0x1;
    /// HEADERS, CONTINUATION: the header block ends here.
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS: a pad length byte and padding are present.
    pub const PADDED: u8 = 0x8;
    /// HEADERS: priority fields are present.
    pub const PRIORITY: u8 = 0x20;
}

/// A stream identifier: 31 bits, odd for streams a client opens, 0 for the
/// connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId(u32);

impl StreamId {
    /// The connection as a whole.
    pub const ZERO: StreamId = StreamId(0);
    /// The largest identifier.
    pub const MAX: StreamId = StreamId(MAX_WINDOW_SIZE);

    /// An identifier from its number; the reserved top bit is dropped.
    pub const fn new(id: u32) -> StreamId {
        StreamId(id & MAX_WINDOW_SIZE)
    }

    /// The number.
    pub const fn value(self) -> u32 {
        self.0
    }

    /// Whether this is stream 0 (the connection).
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Whether a client opens streams with this identifier (odd).
    pub const fn is_client_initiated(self) -> bool {
        self.0 % 2 == 1
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<StreamId> for u32 {
    fn from(id: StreamId) -> u32 {
        id.0
    }
}

/// Frame types this implementation knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// DATA (0x0).
    Data = 0x0,
    /// HEADERS (0x1).
    Headers = 0x1,
    /// PRIORITY (0x2).
    Priority = 0x2,
    /// RST_STREAM (0x3).
    RstStream = 0x3,
    /// SETTINGS (0x4).
    Settings = 0x4,
    /// PUSH_PROMISE (0x5).
    PushPromise = 0x5,
    /// PING (0x6).
    Ping = 0x6,
    /// GOAWAY (0x7).
    GoAway = 0x7,
    /// WINDOW_UPDATE (0x8).
    WindowUpdate = 0x8,
    /// CONTINUATION (0x9).
    Continuation = 0x9,
}

impl Kind {
    /// The kind with this type code, if known.
    pub fn from_u8(kind: u8) -> Option<Kind> {
        Some(match kind {
            0x0 => Kind::Data,
            0x1 => Kind::Headers,
            0x2 => Kind::Priority,
            0x3 => Kind::RstStream,
            0x4 => Kind::Settings,
            0x5 => Kind::PushPromise,
            0x6 => Kind::Ping,
            0x7 => Kind::GoAway,
            0x8 => Kind::WindowUpdate,
            0x9 => Kind::Continuation,
            _ => return None,
        })
    }
}

/// The 9-byte frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Payload length (24 bits).
    pub length: u32,
    /// Type code.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream the frame belongs to.
    pub stream: StreamId,
}

impl Head {
    /// A header for a frame of a known kind.
    pub fn new(kind: Kind, flags: u8, stream: StreamId, length: usize) -> Head {
        Head {
            length: length as u32,
            kind: kind as u8,
            flags,
            stream,
        }
    }

    /// Reads a header from the first 9 bytes of `b`.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Head {
        Head {
            length: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: StreamId::new(u32::from_be_bytes([b[5], b[6], b[7], b[8]])),
        }
    }

    /// The header's 9 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let len = self.length.to_be_bytes();
        let id = self.stream.value().to_be_bytes();
        [
            len[1], len[2], len[3], self.kind, self.flags, id[0], id[1], id[2], id[3],
        ]
    }

    /// Appends the header's 9 bytes.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_slice(&self.to_bytes());
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The kind, if known.
    pub fn known_kind(&self) -> Option<Kind> {
        Kind::from_u8(self.kind)
    }
}

/// One parsed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// DATA.
    Data(Data),
    /// HEADERS.
    Headers(Headers),
    /// PRIORITY (parsed, then ignored).
    Priority(Priority),
    /// RST_STREAM.
    RstStream(RstStream),
    /// SETTINGS.
    Settings(Settings),
    /// PUSH_PROMISE, which a server never accepts; only its header is kept.
    PushPromise(Head),
    /// PING.
    Ping(Ping),
    /// GOAWAY.
    GoAway(GoAway),
    /// WINDOW_UPDATE.
    WindowUpdate(WindowUpdate),
    /// CONTINUATION.
    Continuation(Continuation),
    /// A frame of a type this implementation does not know (ignored).
    Unknown(Head),
}

impl Frame {
    /// Parses the payload of a frame whose header is `head`.
    pub fn parse(head: Head, payload: Bytes) -> Result<Frame, Error> {
        debug_assert_eq!(payload.len(), head.length as usize);
        Ok(match head.known_kind() {
            Some(Kind::Data) => Frame::Data(Data::parse(head, payload)?),
            Some(Kind::Headers) => Frame::Headers(Headers::parse(head, payload)?),
            Some(Kind::Priority) => Frame::Priority(Priority::parse(head, &payload)?),
            Some(Kind::RstStream) => Frame::RstStream(RstStream::parse(head, &payload)?),
            Some(Kind::Settings) => Frame::Settings(Settings::parse(head, &payload)?),
            Some(Kind::PushPromise) => Frame::PushPromise(head),
            Some(Kind::Ping) => Frame::Ping(Ping::parse(head, &payload)?),
            Some(Kind::GoAway) => Frame::GoAway(GoAway::parse(head, payload)?),
            Some(Kind::WindowUpdate) => Frame::WindowUpdate(WindowUpdate::parse(head, &payload)?),
            Some(Kind::Continuation) => Frame::Continuation(Continuation::parse(head, payload)?),
            None => Frame::Unknown(head),
        })
    }

    /// The stream the frame belongs to (0 for connection frames).
    pub fn stream(&self) -> StreamId {
        match self {
            Frame::Data(f) => f.stream,
            Frame::Headers(f) => f.stream,
            Frame::Priority(f) => f.stream,
            Frame::RstStream(f) => f.stream,
            Frame::Settings(_) | Frame::Ping(_) | Frame::GoAway(_) => StreamId::ZERO,
            Frame::WindowUpdate(f) => f.stream,
            Frame::Continuation(f) => f.stream,
            Frame::PushPromise(h) | Frame::Unknown(h) => h.stream,
        }
    }
}

/// Connection error of type PROTOCOL_ERROR.
fn protocol_error(reason: &'static str) -> Error {
    Error::connection(ErrorCode::PROTOCOL_ERROR, reason)
}

/// Connection error of type FRAME_SIZE_ERROR.
fn frame_size_error(reason: &'static str) -> Error {
    Error::connection(ErrorCode::FRAME_SIZE_ERROR, reason)
}

/// Removes the pad length byte and the padding of a PADDED frame;
/// `fixed` is how many bytes after the pad length belong to the frame
/// before its content (HEADERS' priority fields). A frame whose padding
/// does not fit is a connection error (RFC 9113 §6.1, §6.2).
fn strip_padding(
    head: &Head,
    mut payload: Bytes,
    fixed: usize,
) -> Result<(Bytes, Option<u8>), Error> {
    if !head.has(flags::PADDED) {
        return Ok((payload, None));
    }
    let Some(&pad) = payload.first() else {
        return Err(frame_size_error("padded frame without a pad length"));
    };
    let pad_len = usize::from(pad);
    if 1 + fixed + pad_len > payload.len() {
        return Err(protocol_error("padding is as long as the frame or longer"));
    }
    let end = payload.len() - pad_len;
    payload.truncate(end);
    bytes::Buf::advance(&mut payload, 1);
    Ok((payload, Some(pad)))
}

/// Appends `pad` bytes of zero padding.
fn put_padding(dst: &mut BytesMut, pad: Option<u8>) {
    if let Some(pad) = pad {
        dst.put_bytes(0, usize::from(pad));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame, encoded: &BytesMut) {
        let head = Head::parse(encoded[..HEADER_LEN].try_into().unwrap());
        assert_eq!(head.length as usize, encoded.len() - HEADER_LEN);
        let parsed = Frame::parse(head, Bytes::copy_from_slice(&encoded[HEADER_LEN..])).unwrap();
        assert_eq!(parsed, frame);
    }

    #[test]
    fn every_frame_round_trips() {
        let s1 = StreamId::new(1);
        let frames = vec![
            Frame::Data(Data::new(s1, Bytes::from_static(b"hello"), true)),
            Frame::Data(Data {
                pad_len: Some(3),
                ..Data::new(s1, Bytes::from_static(b"x"), false)
            }),
            Frame::Headers(Headers {
                pad_len: Some(2),
                priority: Some(PrioritySpec {
                    dependency: StreamId::new(7),
                    exclusive: true,
                    weight: 200,
                }),
                ..Headers::new(s1, Bytes::from_static(b"\x82\x84"), false, true)
            }),
            Frame::Priority(Priority {
                stream: s1,
                spec: PrioritySpec {
                    dependency: StreamId::new(3),
                    exclusive: false,
                    weight: 15,
                },
            }),
            Frame::RstStream(RstStream::new(s1, ErrorCode::CANCEL)),
            Frame::Settings(Settings {
                header_table_size: Some(0),
                enable_push: Some(0),
                max_concurrent_streams: Some(100),
                initial_window_size: Some(1 << 20),
                max_frame_size: Some(1 << 20),
                max_header_list_size: Some(8192),
                ..Settings::default()
            }),
            Frame::Settings(Settings::ack()),
            Frame::Ping(Ping::new(*b"12345678")),
            Frame::Ping(Ping::pong(*b"abcdefgh")),
            Frame::GoAway(GoAway::new(
                StreamId::new(5),
                ErrorCode::ENHANCE_YOUR_CALM,
                Bytes::from_static(b"calm down"),
            )),
            Frame::WindowUpdate(WindowUpdate::new(StreamId::ZERO, 1 << 30)),
            Frame::Continuation(Continuation::new(s1, Bytes::from_static(b"\x86"), true)),
        ];
        for frame in frames {
            let mut buf = BytesMut::new();
            match &frame {
                Frame::Data(f) => f.encode(&mut buf),
                Frame::Headers(f) => f.encode(&mut buf),
                Frame::Priority(f) => f.encode(&mut buf),
                Frame::RstStream(f) => f.encode(&mut buf),
                Frame::Settings(f) => f.encode(&mut buf),
                Frame::Ping(f) => f.encode(&mut buf),
                Frame::GoAway(f) => f.encode(&mut buf),
                Frame::WindowUpdate(f) => f.encode(&mut buf),
                Frame::Continuation(f) => f.encode(&mut buf),
                Frame::PushPromise(_) | Frame::Unknown(_) => unreachable!(),
            }
            round_trip(frame, &buf);
        }
    }

    fn parse(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Result<Frame, Error> {
        let head = Head {
            length: payload.len() as u32,
            kind,
            flags,
            stream: StreamId::new(stream),
        };
        Frame::parse(head, Bytes::copy_from_slice(payload))
    }

    fn code(r: Result<Frame, Error>) -> (bool, ErrorCode) {
        match r {
            Err(Error::Connection(e)) => (true, e.code),
            Err(Error::Stream(e)) => (false, e.code),
            Ok(f) => panic!("parsed: {f:?}"),
        }
    }

    #[test]
    fn invalid_frames() {
        use ErrorCode as E;
        let conn = true;
        let cases: Vec<(Result<Frame, Error>, (bool, ErrorCode))> = vec![
            (parse(0, 0, 0, b"x"), (conn, E::PROTOCOL_ERROR)),
            (parse(0, flags::PADDED, 1, b""), (conn, E::FRAME_SIZE_ERROR)),
            (
                parse(0, flags::PADDED, 1, b"\x03ab"),
                (conn, E::PROTOCOL_ERROR),
            ),
            (parse(1, 0, 0, b"\x82"), (conn, E::PROTOCOL_ERROR)),
            (
                parse(1, flags::PRIORITY, 1, b"\0\0\0"),
                (conn, E::FRAME_SIZE_ERROR),
            ),
            (
                parse(1, flags::PADDED | flags::PRIORITY, 1, b"\x01\0\0\0\x03\x10"),
                (conn, E::PROTOCOL_ERROR),
            ),
            (parse(2, 0, 0, &[0; 5]), (conn, E::PROTOCOL_ERROR)),
            (parse(2, 0, 1, &[0; 4]), (false, E::FRAME_SIZE_ERROR)),
            (
                parse(2, 0, 1, b"\0\0\0\x01\x10"),
                (false, E::PROTOCOL_ERROR),
            ),
            (parse(3, 0, 0, &[0; 4]), (conn, E::PROTOCOL_ERROR)),
            (parse(3, 0, 1, &[0; 5]), (conn, E::FRAME_SIZE_ERROR)),
            (parse(4, 0, 1, b""), (conn, E::PROTOCOL_ERROR)),
            (parse(4, 0, 0, &[0; 5]), (conn, E::FRAME_SIZE_ERROR)),
            (
                parse(4, flags::ACK, 0, &[0; 6]),
                (conn, E::FRAME_SIZE_ERROR),
            ),
            (
                parse(4, 0, 0, b"\0\x02\0\0\0\x02"),
                (conn, E::PROTOCOL_ERROR),
            ),
            (
                parse(4, 0, 0, b"\0\x04\x80\0\0\0"),
                (conn, E::FLOW_CONTROL_ERROR),
            ),
            (
                parse(4, 0, 0, b"\0\x05\0\0\x3f\xff"),
                (conn, E::PROTOCOL_ERROR),
            ),
            (
                parse(4, 0, 0, b"\0\x05\x01\0\0\0"),
                (conn, E::PROTOCOL_ERROR),
            ),
            (parse(6, 0, 0, &[0; 7]), (conn, E::FRAME_SIZE_ERROR)),
            (parse(6, 0, 1, &[0; 8]), (conn, E::PROTOCOL_ERROR)),
            (parse(7, 0, 1, &[0; 8]), (conn, E::PROTOCOL_ERROR)),
            (parse(7, 0, 0, &[0; 7]), (conn, E::FRAME_SIZE_ERROR)),
            (parse(8, 0, 0, &[0; 3]), (conn, E::FRAME_SIZE_ERROR)),
            (parse(8, 0, 0, &[0; 4]), (conn, E::PROTOCOL_ERROR)),
            (parse(8, 0, 3, &[0; 4]), (false, E::PROTOCOL_ERROR)),
            (parse(9, 0, 0, b""), (conn, E::PROTOCOL_ERROR)),
        ];
        for (i, (result, want)) in cases.into_iter().enumerate() {
            assert_eq!(code(result), want, "case {i}");
        }
        // Unknown settings and unknown frame types are ignored.
        assert!(matches!(
            parse(4, 0, 0, b"\0\x63\0\0\0\x01"),
            Ok(Frame::Settings(_))
        ));
        assert!(matches!(
            parse(0xfa, 0xff, 3, b"whatever"),
            Ok(Frame::Unknown(_))
        ));
        // Window update of 2^31-1 with the reserved bit set parses as the value.
        assert!(matches!(
            parse(8, 0, 0, &[0xff, 0xff, 0xff, 0xff]),
            Ok(Frame::WindowUpdate(WindowUpdate {
                increment: MAX_WINDOW_SIZE,
                ..
            }))
        ));
    }
}
