//! Cuts the bytes a client sends into frames: checks the connection
//! preface, enforces the frame size limit we advertised, and hands out
//! each frame's payload as a slice of the read buffer.
//!
//! Part of `protocol::http2::frame`; calls nothing outside it.

use bytes::{Bytes, BytesMut};

use super::{Frame, HEADER_LEN, Head, PREFACE, frame_size_error, protocol_error};
use crate::protocol::http2::error::Error;

/// How much room to offer for each read, at least.
const READ_CHUNK: usize = 16 * 1024;

/// A push decoder over a byte stream: fill [`FrameDecoder::recv_buf`] (or
/// [`FrameDecoder::push`]), then take frames with
/// [`FrameDecoder::next_frame`] until it returns `Ok(None)`.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Received bytes are `buf[..filled]`; the rest is room to read into.
    buf: BytesMut,
    filled: usize,
    /// Preface bytes still expected before the first frame.
    preface_left: usize,
    max_frame_size: u32,
}

impl FrameDecoder {
    /// A decoder for the server side of a connection: it expects the
    /// client preface, then frames of at most `max_frame_size` bytes.
    pub fn server(max_frame_size: u32) -> FrameDecoder {
        FrameDecoder {
            buf: BytesMut::new(),
            filled: 0,
            preface_left: PREFACE.len(),
            max_frame_size,
        }
    }

    /// A decoder for a bare frame stream (no preface), as a client reads.
    pub fn frames(max_frame_size: u32) -> FrameDecoder {
        FrameDecoder {
            preface_left: 0,
            ..FrameDecoder::server(max_frame_size)
        }
    }

    /// Whether the preface has been read.
    pub fn preface_done(&self) -> bool {
        self.preface_left == 0
    }

    /// Bytes received and not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.filled
    }

    /// Room to read into; report the count with [`FrameDecoder::commit`].
    /// While a frame is partly read, the room covers its rest, so its
    /// payload arrives in one buffer and is never copied.
    pub fn recv_buf(&mut self) -> &mut [u8] {
        let mut want = READ_CHUNK;
        if self.preface_left == 0 && self.filled >= HEADER_LEN {
            let head = Head::parse(self.buf[..HEADER_LEN].try_into().expect("9 bytes"));
            let total = HEADER_LEN + head.length.min(self.max_frame_size) as usize;
            want = want.max(total.saturating_sub(self.filled));
        }
        if self.buf.len() < self.filled + want {
            self.buf.resize(self.filled + want, 0);
        }
        &mut self.buf[self.filled..]
    }

    /// Reports that `n` bytes were read into [`FrameDecoder::recv_buf`].
    pub fn commit(&mut self, n: usize) {
        self.filled = (self.filled + n).min(self.buf.len());
    }

    /// Copies received bytes in.
    pub fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = self.recv_buf();
            let n = room.len().min(data.len());
            room[..n].copy_from_slice(&data[..n]);
            data = &data[n..];
            self.commit(n);
        }
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed, or
    /// the error that ends the connection (bad preface, frame too large)
    /// or a stream (as the frame's parser reports it).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Error> {
        if self.preface_left > 0 {
            let done = PREFACE.len() - self.preface_left;
            let n = self.filled.min(self.preface_left);
            if self.buf[..n] != PREFACE[done..done + n] {
                return Err(protocol_error("invalid connection preface"));
            }
            self.consume(n);
            self.preface_left -= n;
            if self.preface_left > 0 {
                return Ok(None);
            }
        }
        if self.filled < HEADER_LEN {
            return Ok(None);
        }
        let head = Head::parse(self.buf[..HEADER_LEN].try_into().expect("9 bytes"));
        if head.length > self.max_frame_size {
            return Err(frame_size_error(
                "frame larger than SETTINGS_MAX_FRAME_SIZE",
            ));
        }
        let total = HEADER_LEN + head.length as usize;
        if self.filled < total {
            return Ok(None);
        }
        let mut frame: Bytes = self.buf.split_to(total).freeze();
        self.filled -= total;
        let payload = frame.split_off(HEADER_LEN);
        Frame::parse(head, payload).map(Some)
    }

    fn consume(&mut self, n: usize) {
        let _ = self.buf.split_to(n);
        self.filled -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http2::error::ErrorCode;
    use crate::protocol::http2::frame::{Data, Ping, StreamId};

    #[test]
    fn preface_then_frames_split_anywhere() {
        let mut wire = BytesMut::from(&PREFACE[..]);
        Ping::new(*b"pingpong").encode(&mut wire);
        Data::new(StreamId::new(1), Bytes::from(vec![7u8; 40_000]), true).encode(&mut wire);
        for split in [1, 5, 9, 24, 25, 33, 1000, 39_999, wire.len()] {
            let mut d = FrameDecoder::server(65_536);
            let mut frames = Vec::new();
            for chunk in wire.chunks(split) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    frames.push(f);
                }
            }
            assert!(d.preface_done());
            assert_eq!(d.buffered(), 0);
            assert_eq!(frames.len(), 2, "split {split}");
            assert_eq!(frames[0], Frame::Ping(Ping::new(*b"pingpong")));
            match &frames[1] {
                Frame::Data(data) => assert_eq!(data.data.len(), 40_000),
                f => panic!("{f:?}"),
            }
        }
    }

    #[test]
    fn bad_preface_fails_early() {
        let mut d = FrameDecoder::server(16_384);
        d.push(b"GET / HTTP/1.1\r\n");
        let err = d.next_frame().unwrap_err();
        assert_eq!(err.code(), ErrorCode::PROTOCOL_ERROR);
        let mut d = FrameDecoder::server(16_384);
        d.push(b"PRI * HTTP/2.0\r\n\r\nXX");
        assert_eq!(
            d.next_frame().unwrap_err().code(),
            ErrorCode::PROTOCOL_ERROR
        );
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let mut d = FrameDecoder::frames(16_384);
        let head = Head {
            length: 16_385,
            kind: 0,
            flags: 0,
            stream: StreamId::new(1),
        };
        d.push(&head.to_bytes());
        assert_eq!(
            d.next_frame().unwrap_err().code(),
            ErrorCode::FRAME_SIZE_ERROR
        );
    }

    #[test]
    fn payload_is_not_copied() {
        let mut d = FrameDecoder::frames(65_536);
        let mut wire = BytesMut::new();
        Data::new(StreamId::new(1), Bytes::from(vec![1u8; 30_000]), false).encode(&mut wire);
        let room = d.recv_buf();
        room[..HEADER_LEN].copy_from_slice(&wire[..HEADER_LEN]);
        d.commit(HEADER_LEN);
        // The room offered now covers the rest of the frame.
        assert!(d.recv_buf().len() >= 30_000);
        let base = d.recv_buf().as_ptr() as usize;
        d.push(&wire[HEADER_LEN..]);
        let Some(Frame::Data(data)) = d.next_frame().unwrap() else {
            panic!("no DATA")
        };
        assert_eq!(data.data.as_ptr() as usize, base);
    }
}
