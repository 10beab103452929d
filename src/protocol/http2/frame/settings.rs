//! SETTINGS frames (RFC 9113 §6.5): the parameters each side announces,
//! and their acknowledgement.
//!
//! Part of `protocol::http2::frame`; calls nothing outside it.

use bytes::{BufMut, BytesMut};

use super::{
    DEFAULT_MAX_FRAME_SIZE, Head, Kind, MAX_FRAME_SIZE_LIMIT, MAX_WINDOW_SIZE, StreamId, flags,
    frame_size_error, protocol_error,
};
use crate::protocol::http2::error::{Error, ErrorCode};

/// Setting identifiers (RFC 9113 §6.5.2).
const HEADER_TABLE_SIZE: u16 = 0x1;
const ENABLE_PUSH: u16 = 0x2;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;
const INITIAL_WINDOW_SIZE: u16 = 0x4;
const MAX_FRAME_SIZE: u16 = 0x5;
const MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// A SETTINGS frame: each field is present when the frame carries that
/// setting (the last value wins when one repeats); unknown settings are
/// ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// ACK: acknowledges the peer's SETTINGS (carries no settings).
    pub ack: bool,
    /// `SETTINGS_HEADER_TABLE_SIZE`.
    pub header_table_size: Option<u32>,
    /// `SETTINGS_ENABLE_PUSH` (0 or 1).
    pub enable_push: Option<u32>,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub max_concurrent_streams: Option<u32>,
    /// `SETTINGS_INITIAL_WINDOW_SIZE` (at most 2^31 - 1).
    pub initial_window_size: Option<u32>,
    /// `SETTINGS_MAX_FRAME_SIZE` (2^14 to 2^24 - 1).
    pub max_frame_size: Option<u32>,
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`.
    pub max_header_list_size: Option<u32>,
}

impl Settings {
    /// A SETTINGS acknowledgement.
    pub fn ack() -> Settings {
        Settings {
            ack: true,
            ..Settings::default()
        }
    }

    /// Parses a SETTINGS payload, refusing values out of range.
    pub fn parse(head: Head, payload: &[u8]) -> Result<Settings, Error> {
        if !head.stream.is_zero() {
            return Err(protocol_error("SETTINGS on a stream"));
        }
        if head.has(flags::ACK) {
            if !payload.is_empty() {
                return Err(frame_size_error("SETTINGS ACK with a payload"));
            }
            return Ok(Settings::ack());
        }
        if !payload.len().is_multiple_of(6) {
            return Err(frame_size_error(
                "SETTINGS payload is not a multiple of 6 bytes",
            ));
        }
        let mut s = Settings::default();
        for entry in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([entry[0], entry[1]]);
            let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
            match id {
                HEADER_TABLE_SIZE => s.header_table_size = Some(value),
                ENABLE_PUSH => {
                    if value > 1 {
                        return Err(protocol_error("SETTINGS_ENABLE_PUSH is neither 0 nor 1"));
                    }
                    s.enable_push = Some(value);
                }
                MAX_CONCURRENT_STREAMS => s.max_concurrent_streams = Some(value),
                INITIAL_WINDOW_SIZE => {
                    if value > MAX_WINDOW_SIZE {
                        return Err(Error::connection(
                            ErrorCode::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                        ));
                    }
                    s.initial_window_size = Some(value);
                }
                MAX_FRAME_SIZE => {
                    if !(DEFAULT_MAX_FRAME_SIZE..=MAX_FRAME_SIZE_LIMIT).contains(&value) {
                        return Err(protocol_error(
                            "SETTINGS_MAX_FRAME_SIZE outside 2^14 to 2^24-1",
                        ));
                    }
                    s.max_frame_size = Some(value);
                }
                MAX_HEADER_LIST_SIZE => s.max_header_list_size = Some(value),
                _ => {}
            }
        }
        Ok(s)
    }

    fn entries(&self) -> impl Iterator<Item = (u16, u32)> {
        [
            (HEADER_TABLE_SIZE, self.header_table_size),
            (ENABLE_PUSH, self.enable_push),
            (MAX_CONCURRENT_STREAMS, self.max_concurrent_streams),
            (INITIAL_WINDOW_SIZE, self.initial_window_size),
            (MAX_FRAME_SIZE, self.max_frame_size),
            (MAX_HEADER_LIST_SIZE, self.max_header_list_size),
        ]
        .into_iter()
        .filter_map(|(id, v)| v.map(|v| (id, v)))
    }

    /// Appends the whole frame.
    pub fn encode(&self, dst: &mut BytesMut) {
        if self.ack {
            Head::new(Kind::Settings, flags::ACK, StreamId::ZERO, 0).encode(dst);
            return;
        }
        let n = self.entries().count();
        Head::new(Kind::Settings, 0, StreamId::ZERO, n * 6).encode(dst);
        for (id, v) in self.entries() {
            dst.put_u16(id);
            dst.put_u32(v);
        }
    }
}
