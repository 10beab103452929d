//! RST_STREAM frames (RFC 9113 §6.4).
//!
//! Part of `protocol::http2::frame`; calls nothing outside it.

use bytes::{BufMut, BytesMut};

use super::{Head, Kind, StreamId, frame_size_error, protocol_error};
use crate::protocol::http2::error::{Error, ErrorCode};

/// A RST_STREAM frame: ends a stream at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RstStream {
    /// Stream it ends.
    pub stream: StreamId,
    /// Why.
    pub code: ErrorCode,
}

impl RstStream {
    /// A RST_STREAM frame.
    pub fn new(stream: StreamId, code: ErrorCode) -> RstStream {
        RstStream { stream, code }
    }

    /// Parses a RST_STREAM payload.
    pub fn parse(head: Head, payload: &[u8]) -> Result<RstStream, Error> {
        if head.stream.is_zero() {
            return Err(protocol_error("RST_STREAM on stream 0"));
        }
        let Ok(code) = <[u8; 4]>::try_from(payload) else {
            return Err(frame_size_error("RST_STREAM payload is not 4 bytes"));
        };
        Ok(RstStream {
            stream: head.stream,
            code: ErrorCode(u32::from_be_bytes(code)),
        })
    }

    /// Appends the whole frame.
    pub fn encode(&self, dst: &mut BytesMut) {
        Head::new(Kind::RstStream, 0, self.stream, 4).encode(dst);
        dst.put_u32(self.code.0);
    }
}
