//! gRPC message framing: every message on a call's HTTP/2 DATA stream is a
//! 5-byte prefix (a compressed flag byte, then the payload length as a
//! big-endian `u32`) followed by the payload.
//!
//! [`MessageDecoder`] is push-based: it is handed DATA payloads as they
//! arrive, split anywhere, and yields whole messages. A message that lies
//! inside one handed chunk is a slice of that chunk (no copy); one that
//! spans chunks is gathered into a buffer of its own, the one copy framing
//! makes. [`encode_frame`] prefixes a payload given as chunks without
//! joining them, for a vectored write.

use bytes::{Bytes, BytesMut};

use super::status::Status;

/// Length of the message prefix.
pub const PREFIX_LEN: usize = 5;

/// The default limit on a message's payload length, in both directions:
/// Triton's (`INT32_MAX`).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = i32::MAX as usize;

/// The most a gathering buffer reserves before the bytes arrive: a peer
/// announcing a huge message must send it to make the server hold it.
const MAX_UPFRONT_RESERVE: usize = 4 << 20;

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Whether the payload is compressed with the call's `grpc-encoding`.
    pub compressed: bool,
    /// The payload.
    pub payload: Bytes,
}

/// Why the incoming message stream cannot be read further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A message announces more bytes than the limit allows.
    TooLarge {
        /// The announced length.
        length: u64,
        /// The limit.
        limit: usize,
    },
    /// The flag byte is neither 0 nor 1.
    BadFlag(u8),
    /// The stream ended inside a message.
    Truncated {
        /// Bytes of the message (prefix included) that never came.
        missing: usize,
    },
}

impl FrameError {
    /// The status a call ends with because of this error. The oversize
    /// wording is gRPC's own, which clients show.
    pub fn to_status(&self) -> Status {
        match self {
            FrameError::TooLarge { length, limit } => Status::resource_exhausted(format!(
                "Received message larger than max ({length} vs. {limit})"
            )),
            FrameError::BadFlag(flag) => Status::internal(format!(
                "invalid gRPC message prefix: compressed flag is {flag}, expected 0 or 1"
            )),
            FrameError::Truncated { missing } => Status::internal(format!(
                "request stream ended inside a message ({missing} bytes missing)"
            )),
        }
    }
}

#[derive(Debug)]
enum State {
    /// Reading a prefix; `have` bytes of it are in `prefix`.
    Prefix {
        prefix: [u8; PREFIX_LEN],
        have: usize,
    },
    /// Reading a payload of `length` bytes, gathered so far in `gathered`.
    Payload {
        compressed: bool,
        length: usize,
        gathered: BytesMut,
    },
    /// An error was reported; nothing more is read.
    Failed,
}

/// Splits a call's incoming bytes into messages.
///
/// Call order: [`MessageDecoder::handle_data`] with each DATA payload, then
/// [`MessageDecoder::poll_message`] until it answers `None`; at the end of
/// the stream, [`MessageDecoder::handle_end`].
#[derive(Debug)]
pub struct MessageDecoder {
    max_message_size: usize,
    state: State,
    ready: std::collections::VecDeque<Message>,
}

impl MessageDecoder {
    /// A decoder refusing payloads longer than `max_message_size`.
    pub fn new(max_message_size: usize) -> MessageDecoder {
        MessageDecoder {
            max_message_size,
            state: State::Prefix {
                prefix: [0; PREFIX_LEN],
                have: 0,
            },
            ready: std::collections::VecDeque::new(),
        }
    }

    /// Takes the next chunk of the stream. Once this fails, the decoder
    /// reads nothing more; messages completed before the fault are still
    /// returned by [`MessageDecoder::poll_message`].
    pub fn handle_data(&mut self, mut data: Bytes) -> Result<(), FrameError> {
        while !data.is_empty() {
            match &mut self.state {
                State::Failed => return Ok(()),
                State::Prefix { prefix, have } => {
                    let take = (PREFIX_LEN - *have).min(data.len());
                    prefix[*have..*have + take].copy_from_slice(&data[..take]);
                    *have += take;
                    let _ = data.split_to(take);
                    if *have < PREFIX_LEN {
                        continue;
                    }
                    let flag = prefix[0];
                    let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
                    if flag > 1 {
                        self.state = State::Failed;
                        return Err(FrameError::BadFlag(flag));
                    }
                    if u64::from(length) > self.max_message_size as u64 {
                        self.state = State::Failed;
                        return Err(FrameError::TooLarge {
                            length: length.into(),
                            limit: self.max_message_size,
                        });
                    }
                    let length = length as usize;
                    let compressed = flag == 1;
                    if data.len() >= length {
                        // The whole payload is in this chunk: share it.
                        self.ready.push_back(Message {
                            compressed,
                            payload: data.split_to(length),
                        });
                        self.reset();
                    } else {
                        self.state = State::Payload {
                            compressed,
                            length,
                            gathered: BytesMut::new(),
                        };
                    }
                }
                State::Payload {
                    compressed,
                    length,
                    gathered,
                } => {
                    let want = *length - gathered.len();
                    let take = want.min(data.len());
                    if gathered.capacity() == 0 {
                        gathered.reserve((*length).min(MAX_UPFRONT_RESERVE.max(take)));
                    }
                    // The copy of a message spanning DATA frames: its
                    // pieces are joined once, here.
                    gathered.extend_from_slice(&data[..take]);
                    let _ = data.split_to(take);
                    if gathered.len() == *length {
                        let message = Message {
                            compressed: *compressed,
                            payload: std::mem::take(gathered).freeze(),
                        };
                        self.ready.push_back(message);
                        self.reset();
                    }
                }
            }
        }
        Ok(())
    }

    /// The next complete message, in stream order.
    pub fn poll_message(&mut self) -> Option<Message> {
        self.ready.pop_front()
    }

    /// The stream ended: an error when it ended inside a message.
    pub fn handle_end(&mut self) -> Result<(), FrameError> {
        let missing = match &self.state {
            State::Prefix { have: 0, .. } | State::Failed => return Ok(()),
            State::Prefix { have, .. } => PREFIX_LEN - have,
            State::Payload {
                length, gathered, ..
            } => length - gathered.len(),
        };
        self.state = State::Failed;
        Err(FrameError::Truncated { missing })
    }

    /// Bytes held for a message not yet complete.
    pub fn buffered(&self) -> usize {
        match &self.state {
            State::Prefix { have, .. } => *have,
            State::Payload { gathered, .. } => gathered.len(),
            State::Failed => 0,
        }
    }

    fn reset(&mut self) {
        self.state = State::Prefix {
            prefix: [0; PREFIX_LEN],
            have: 0,
        };
    }
}

/// The prefix of a message of `length` bytes; `None` when the length does
/// not fit the prefix's 32 bits.
pub fn prefix(compressed: bool, length: usize) -> Option<[u8; PREFIX_LEN]> {
    let length = u32::try_from(length).ok()?;
    let [a, b, c, d] = length.to_be_bytes();
    Some([u8::from(compressed), a, b, c, d])
}

/// Frames a payload given as chunks: the prefix, then the chunks as they
/// are. `None` when the payload is too long for the prefix.
pub fn encode_frame(compressed: bool, payload: Vec<Bytes>) -> Option<Vec<Bytes>> {
    let length: usize = payload.iter().map(Bytes::len).sum();
    let head = prefix(compressed, length)?;
    let mut out = Vec::with_capacity(payload.len() + 1);
    out.push(Bytes::copy_from_slice(&head));
    out.extend(payload.into_iter().filter(|c| !c.is_empty()));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(compressed: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = prefix(compressed, payload.len()).unwrap().to_vec();
        v.extend_from_slice(payload);
        v
    }

    fn drain(d: &mut MessageDecoder) -> Vec<Message> {
        std::iter::from_fn(|| d.poll_message()).collect()
    }

    #[test]
    fn whole_messages_in_one_chunk_are_shared() {
        let mut wire = frame(false, b"hello");
        wire.extend(frame(true, b""));
        wire.extend(frame(false, b"world!"));
        let wire = Bytes::from(wire);
        let mut d = MessageDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
        d.handle_data(wire.clone()).unwrap();
        let got = drain(&mut d);
        assert_eq!(
            got.iter()
                .map(|m| (m.compressed, &m.payload[..]))
                .collect::<Vec<_>>(),
            vec![
                (false, &b"hello"[..]),
                (true, &b""[..]),
                (false, &b"world!"[..])
            ]
        );
        // Zero copy: the first payload points into the chunk it came in.
        let base = wire.as_ptr() as usize;
        let p = got[0].payload.as_ptr() as usize;
        assert!(p >= base && p < base + wire.len());
        assert!(d.handle_end().is_ok());
    }

    #[test]
    fn messages_split_at_every_position() {
        let mut wire = frame(false, b"0123456789");
        wire.extend(frame(true, b"abc"));
        for split in 0..=wire.len() {
            for step in [1, 2, 3, 7] {
                let mut d = MessageDecoder::new(64);
                let (a, b) = wire.split_at(split);
                d.handle_data(Bytes::copy_from_slice(a)).unwrap();
                for piece in b.chunks(step) {
                    d.handle_data(Bytes::copy_from_slice(piece)).unwrap();
                }
                let got = drain(&mut d);
                assert_eq!(got.len(), 2, "split {split} step {step}");
                assert_eq!(&got[0].payload[..], b"0123456789");
                assert!(!got[0].compressed);
                assert_eq!(&got[1].payload[..], b"abc");
                assert!(got[1].compressed);
                assert_eq!(d.buffered(), 0);
                assert!(d.handle_end().is_ok());
            }
        }
    }

    #[test]
    fn oversize_and_bad_flags() {
        let mut d = MessageDecoder::new(4);
        d.handle_data(Bytes::from(frame(false, b"1234"))).unwrap();
        let e = d
            .handle_data(Bytes::from(frame(false, b"12345")))
            .unwrap_err();
        assert_eq!(
            e,
            FrameError::TooLarge {
                length: 5,
                limit: 4
            }
        );
        let status = e.to_status();
        assert_eq!(status.code(), super::super::status::Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "Received message larger than max (5 vs. 4)"
        );
        // What came before the fault is still delivered; nothing after.
        assert_eq!(drain(&mut d).len(), 1);
        d.handle_data(Bytes::from(frame(false, b"1"))).unwrap();
        assert!(drain(&mut d).is_empty());

        let mut d = MessageDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
        let e = d
            .handle_data(Bytes::from_static(&[2, 0, 0, 0, 0]))
            .unwrap_err();
        assert_eq!(e, FrameError::BadFlag(2));

        // The largest announced length is refused before anything is held.
        let mut d = MessageDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
        let e = d
            .handle_data(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]))
            .unwrap_err();
        assert_eq!(
            e.to_status().message(),
            "Received message larger than max (4294967295 vs. 2147483647)"
        );
    }

    #[test]
    fn truncated_streams() {
        let mut d = MessageDecoder::new(64);
        d.handle_data(Bytes::from_static(&[0, 0])).unwrap();
        assert_eq!(d.handle_end(), Err(FrameError::Truncated { missing: 3 }));

        let mut d = MessageDecoder::new(64);
        let wire = frame(false, b"abcdef");
        d.handle_data(Bytes::copy_from_slice(&wire[..8])).unwrap();
        assert_eq!(d.buffered(), 3);
        assert_eq!(d.handle_end(), Err(FrameError::Truncated { missing: 3 }));
    }

    #[test]
    fn a_huge_announcement_reserves_little() {
        let mut d = MessageDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
        d.handle_data(Bytes::from_static(&[0, 0x7f, 0xff, 0xff, 0xff, 1]))
            .unwrap();
        match &d.state {
            State::Payload { gathered, .. } => {
                assert!(gathered.capacity() <= MAX_UPFRONT_RESERVE)
            }
            other => panic!("unexpected state {other:?}"),
        }
    }

    #[test]
    fn framing_outgoing() {
        let chunks = encode_frame(
            true,
            vec![
                Bytes::from_static(b"ab"),
                Bytes::new(),
                Bytes::from_static(b"c"),
            ],
        )
        .unwrap();
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        assert_eq!(joined, frame(true, b"abc"));
        assert_eq!(chunks.len(), 3, "empty chunks are dropped");
        assert_eq!(prefix(false, 0x0102_0304), Some([0, 1, 2, 3, 4]));
        assert_eq!(prefix(false, usize::MAX), None);
    }
}
