//! DATA frames (RFC 9113 §6.1).
//!
//! Part of `protocol::http2::frame`; calls nothing outside it.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Head, Kind, StreamId, flags, protocol_error, put_padding, strip_padding};
use crate::protocol::http2::error::Error;

/// A DATA frame: a slice of a stream's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// Stream it belongs to.
    pub stream: StreamId,
    /// Payload without padding (a slice of the read buffer, not a copy).
    pub data: Bytes,
    /// END_STREAM: the sender's last frame on the stream.
    pub end_stream: bool,
    /// Pad length, when PADDED.
    pub pad_len: Option<u8>,
}

impl Data {
    /// An unpadded DATA frame.
    pub fn new(stream: StreamId, data: Bytes, end_stream: bool) -> Data {
        Data {
            stream,
            data,
            end_stream,
            pad_len: None,
        }
    }

    /// Parses a DATA payload.
    pub fn parse(head: Head, payload: Bytes) -> Result<Data, Error> {
        if head.stream.is_zero() {
            return Err(protocol_error("DATA on stream 0"));
        }
        let (data, pad_len) = strip_padding(&head, payload, 0)?;
        Ok(Data {
            stream: head.stream,
            data,
            end_stream: head.has(flags::END_STREAM),
            pad_len,
        })
    }

    /// Bytes the frame counts against flow-control windows: its whole
    /// payload, pad length byte and padding included.
    pub fn flow_len(&self) -> usize {
        self.data.len() + self.pad_len.map_or(0, |p| 1 + usize::from(p))
    }

    /// The header of an unpadded DATA frame carrying `len` bytes.
    pub fn head(stream: StreamId, len: usize, end_stream: bool) -> Head {
        let flags = if end_stream { flags::END_STREAM } else { 0 };
        Head::new(Kind::Data, flags, stream, len)
    }

    /// Appends the whole frame (copying the payload).
    pub fn encode(&self, dst: &mut BytesMut) {
        let mut head = Data::head(self.stream, self.flow_len(), self.end_stream);
        if let Some(pad) = self.pad_len {
            head.flags |= flags::PADDED;
            head.encode(dst);
            dst.put_u8(pad);
        } else {
            head.encode(dst);
        }
        dst.put_slice(&self.data);
        put_padding(dst, self.pad_len);
    }
}
