//! PING frames (RFC 9113 §6.7).
//!
//! Part of `protocol::http2::frame`; calls nothing outside it.

use bytes::{BufMut, BytesMut};

use super::{Head, Kind, StreamId, flags, frame_size_error, protocol_error};
use crate::protocol::http2::error::Error;

/// A PING frame or its acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    /// ACK: this answers a PING.
    pub ack: bool,
    /// Opaque data, echoed in the answer.
    pub payload: [u8; 8],
}

impl Ping {
    /// A PING.
    pub fn new(payload: [u8; 8]) -> Ping {
        Ping {
            ack: false,
            payload,
        }
    }

    /// The answer to a PING carrying `payload`.
    pub fn pong(payload: [u8; 8]) -> Ping {
        Ping { ack: true, payload }
    }

    /// Parses a PING payload.
    pub fn parse(head: Head, payload: &[u8]) -> Result<Ping, Error> {
        if !head.stream.is_zero() {
            return Err(protocol_error("PING on a stream"));
        }
        let Ok(payload) = <[u8; 8]>::try_from(payload) else {
            return Err(frame_size_error("PING payload is not 8 bytes"));
        };
        Ok(Ping {
            ack: head.has(flags::ACK),
            payload,
        })
    }

    /// Appends the whole frame.
    pub fn encode(&self, dst: &mut BytesMut) {
        let f = if self.ack { flags::ACK } else { 0 };
        Head::new(Kind::Ping, f, StreamId::ZERO, 8).encode(dst);
        dst.put_slice(&self.payload);
    }
}
