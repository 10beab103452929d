//! PRIORITY frames (RFC 9113 §6.3) and the priority fields of HEADERS.
//! RFC 9113 deprecates this signalling; it is parsed for validity and
//! otherwise ignored.
//!
//! Part of `protocol::http2::frame`; calls nothing outside it.

use bytes::{BufMut, BytesMut};

use super::{Head, Kind, StreamId, protocol_error};
use crate::protocol::http2::error::{Error, ErrorCode};

/// Stream dependency and weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrioritySpec {
    /// Stream depended on.
    pub dependency: StreamId,
    /// Exclusive flag.
    pub exclusive: bool,
    /// Weight minus one, as on the wire.
    pub weight: u8,
}

impl PrioritySpec {
    /// Reads the five bytes of priority fields.
    pub fn parse(b: &[u8]) -> PrioritySpec {
        let raw = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        PrioritySpec {
            dependency: StreamId::new(raw),
            exclusive: raw & 0x8000_0000 != 0,
            weight: b[4],
        }
    }

    /// Appends the five bytes.
    pub fn encode(&self, dst: &mut BytesMut) {
        let excl = if self.exclusive { 0x8000_0000 } else { 0 };
        dst.put_u32(self.dependency.value() | excl);
        dst.put_u8(self.weight);
    }
}

/// A PRIORITY frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    /// Stream it is about.
    pub stream: StreamId,
    /// Its dependency and weight.
    pub spec: PrioritySpec,
}

impl Priority {
    /// Parses a PRIORITY payload.
    pub fn parse(head: Head, payload: &[u8]) -> Result<Priority, Error> {
        if head.stream.is_zero() {
            return Err(protocol_error("PRIORITY on stream 0"));
        }
        if payload.len() != 5 {
            return Err(Error::stream(
                head.stream,
                ErrorCode::FRAME_SIZE_ERROR,
                "PRIORITY payload is not 5 bytes",
            ));
        }
        let spec = PrioritySpec::parse(payload);
        if spec.dependency == head.stream {
            return Err(Error::stream(
                head.stream,
                ErrorCode::PROTOCOL_ERROR,
                "stream depends on itself",
            ));
        }
        Ok(Priority {
            stream: head.stream,
            spec,
        })
    }

    /// Appends the whole frame.
    pub fn encode(&self, dst: &mut BytesMut) {
        Head::new(Kind::Priority, 0, self.stream, 5).encode(dst);
        self.spec.encode(dst);
    }
}
