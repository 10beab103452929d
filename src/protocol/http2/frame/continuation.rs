//! CONTINUATION frames (RFC 9113 §6.10): the rest of a header block.
//!
//! Part of `protocol::http2::frame`; calls nothing outside it.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Head, Kind, StreamId, flags, protocol_error};
use crate::protocol::http2::error::Error;

/// A CONTINUATION frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    /// Stream whose header block it continues.
    pub stream: StreamId,
    /// Header block fragment.
    pub block: Bytes,
    /// END_HEADERS: the block is complete.
    pub end_headers: bool,
}

impl Continuation {
    /// A CONTINUATION frame.
    pub fn new(stream: StreamId, block: Bytes, end_headers: bool) -> Continuation {
        Continuation {
            stream,
            block,
            end_headers,
        }
    }

    /// Parses a CONTINUATION payload.
    pub fn parse(head: Head, payload: Bytes) -> Result<Continuation, Error> {
        if head.stream.is_zero() {
            return Err(protocol_error("CONTINUATION on stream 0"));
        }
        Ok(Continuation {
            stream: head.stream,
            block: payload,
            end_headers: head.has(flags::END_HEADERS),
        })
    }

    /// The header of a CONTINUATION frame carrying `len` bytes.
    pub fn head(stream: StreamId, len: usize, end_headers: bool) -> Head {
        let f = if end_headers { flags::END_HEADERS } else { 0 };
        Head::new(Kind::Continuation, f, stream, len)
    }

    /// Appends the whole frame.
    pub fn encode(&self, dst: &mut BytesMut) {
        Continuation::head(self.stream, self.block.len(), self.end_headers).encode(dst);
        dst.put_slice(&self.block);
    }
}
