//! GOAWAY frames (RFC 9113 §6.8).
//!
//! Part of `protocol::http2::frame`; calls nothing outside it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{Head, Kind, StreamId, frame_size_error, protocol_error};
use crate::protocol::http2::error::{Error, ErrorCode};

/// A GOAWAY frame: the sender processes no stream above `last_stream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    /// Highest stream the sender has processed or may still process.
    pub last_stream: StreamId,
    /// Why the connection is going away.
    pub code: ErrorCode,
    /// Opaque diagnostic data.
    pub debug: Bytes,
}

impl GoAway {
    /// A GOAWAY frame.
    pub fn new(last_stream: StreamId, code: ErrorCode, debug: Bytes) -> GoAway {
        GoAway {
            last_stream,
            code,
            debug,
        }
    }

    /// Parses a GOAWAY payload.
    pub fn parse(head: Head, mut payload: Bytes) -> Result<GoAway, Error> {
        if !head.stream.is_zero() {
            return Err(protocol_error("GOAWAY on a stream"));
        }
        if payload.len() < 8 {
            return Err(frame_size_error("GOAWAY payload shorter than 8 bytes"));
        }
        let last_stream = StreamId::new(payload.get_u32());
        let code = ErrorCode(payload.get_u32());
        Ok(GoAway {
            last_stream,
            code,
            debug: payload,
        })
    }

    /// Appends the whole frame.
    pub fn encode(&self, dst: &mut BytesMut) {
        Head::new(Kind::GoAway, 0, StreamId::ZERO, 8 + self.debug.len()).encode(dst);
        dst.put_u32(self.last_stream.value());
        dst.put_u32(self.code.0);
        dst.put_slice(&self.debug);
    }
}
