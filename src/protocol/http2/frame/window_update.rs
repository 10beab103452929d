//! WINDOW_UPDATE frames (RFC 9113 §6.9).
//!
//! Part of `protocol::http2::frame`; calls nothing outside it.

use bytes::{BufMut, BytesMut};

use super::{Head, Kind, MAX_WINDOW_SIZE, StreamId, frame_size_error, protocol_error};
use crate::protocol::http2::error::{Error, ErrorCode};

/// A WINDOW_UPDATE frame: the sender can take `increment` more bytes on
/// the stream (or the connection, on stream 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowUpdate {
    /// Stream, or 0 for the connection.
    pub stream: StreamId,
    /// Bytes added to the window (1 to 2^31 - 1).
    pub increment: u32,
}

impl WindowUpdate {
    /// A WINDOW_UPDATE frame.
    pub fn new(stream: StreamId, increment: u32) -> WindowUpdate {
        WindowUpdate { stream, increment }
    }

    /// Parses a WINDOW_UPDATE payload. An increment of 0 is an error of
    /// the stream, or of the connection on stream 0.
    pub fn parse(head: Head, payload: &[u8]) -> Result<WindowUpdate, Error> {
        let Ok(raw) = <[u8; 4]>::try_from(payload) else {
            return Err(frame_size_error("WINDOW_UPDATE payload is not 4 bytes"));
        };
        let increment = u32::from_be_bytes(raw) & MAX_WINDOW_SIZE;
        if increment == 0 {
            return Err(if head.stream.is_zero() {
                protocol_error("WINDOW_UPDATE with an increment of 0")
            } else {
                Error::stream(
                    head.stream,
                    ErrorCode::PROTOCOL_ERROR,
                    "WINDOW_UPDATE with an increment of 0",
                )
            });
        }
        Ok(WindowUpdate {
            stream: head.stream,
            increment,
        })
    }

    /// Appends the whole frame.
    pub fn encode(&self, dst: &mut BytesMut) {
        Head::new(Kind::WindowUpdate, 0, self.stream, 4).encode(dst);
        dst.put_u32(self.increment);
    }
}
