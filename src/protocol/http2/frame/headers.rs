//! HEADERS frames (RFC 9113 §6.2): a header block fragment, optionally
//! padded and carrying (deprecated, ignored) priority fields.
//!
//! Part of `protocol::http2::frame`; calls nothing outside it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{
    Head, Kind, PrioritySpec, StreamId, flags, frame_size_error, protocol_error, put_padding,
    strip_padding,
};
use crate::protocol::http2::error::Error;

/// A HEADERS frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// Stream it opens or belongs to.
    pub stream: StreamId,
    /// Header block fragment (HPACK-encoded).
    pub block: Bytes,
    /// END_STREAM: nothing follows on the stream after this block.
    pub end_stream: bool,
    /// END_HEADERS: the block is complete (no CONTINUATION follows).
    pub end_headers: bool,
    /// Priority fields, when PRIORITY is set.
    pub priority: Option<PrioritySpec>,
    /// Pad length, when PADDED.
    pub pad_len: Option<u8>,
}

impl Headers {
    /// A HEADERS frame without padding or priority.
    pub fn new(stream: StreamId, block: Bytes, end_stream: bool, end_headers: bool) -> Headers {
        Headers {
            stream,
            block,
            end_stream,
            end_headers,
            priority: None,
            pad_len: None,
        }
    }

    /// Parses a HEADERS payload. A priority that names the stream itself
    /// is left for the connection to refuse, after it has decoded the
    /// block (the HPACK context must see every block).
    pub fn parse(head: Head, payload: Bytes) -> Result<Headers, Error> {
        if head.stream.is_zero() {
            return Err(protocol_error("HEADERS on stream 0"));
        }
        let has_priority = head.has(flags::PRIORITY);
        let fixed = if has_priority { 5 } else { 0 };
        if payload.len() < fixed {
            return Err(frame_size_error(
                "HEADERS too short for its priority fields",
            ));
        }
        let (mut block, pad_len) = strip_padding(&head, payload, fixed)?;
        let priority = if has_priority {
            let spec = PrioritySpec::parse(&block[..5]);
            block.advance(5);
            Some(spec)
        } else {
            None
        };
        Ok(Headers {
            stream: head.stream,
            block,
            end_stream: head.has(flags::END_STREAM),
            end_headers: head.has(flags::END_HEADERS),
            priority,
            pad_len,
        })
    }

    /// The header of an unpadded HEADERS frame carrying `len` bytes of block.
    pub fn head(stream: StreamId, len: usize, end_stream: bool, end_headers: bool) -> Head {
        let mut f = 0;
        if end_stream {
            f |= flags::END_STREAM;
        }
        if end_headers {
            f |= flags::END_HEADERS;
        }
        Head::new(Kind::Headers, f, stream, len)
    }

    /// Appends the whole frame.
    pub fn encode(&self, dst: &mut BytesMut) {
        let mut len = self.block.len();
        let mut head = Headers::head(self.stream, 0, self.end_stream, self.end_headers);
        if let Some(pad) = self.pad_len {
            head.flags |= flags::PADDED;
            len += 1 + usize::from(pad);
        }
        if self.priority.is_some() {
            head.flags |= flags::PRIORITY;
            len += 5;
        }
        head.length = len as u32;
        head.encode(dst);
        if let Some(pad) = self.pad_len {
            dst.put_u8(pad);
        }
        if let Some(spec) = &self.priority {
            spec.encode(dst);
        }
        dst.put_slice(&self.block);
        put_padding(dst, self.pad_len);
    }
}
