//! Entry points for the fuzz targets in `fuzz/`, compiled only under
//! `cfg(fuzzing)` (which `cargo fuzz` sets). Each takes the fuzzer's bytes,
//! drives one parser the way the server drives it, and panics only when
//! an invariant breaks; errors the parser reports are expected outcomes.
//!
//! It may call anything in the crate; nothing calls it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::core::proto::ModelConfig;
use crate::core::tensor::{byte_size, element_count, split_bytes_elements};
use crate::core::{InferResponse, Tensor};
use crate::protocol::http1::{Config, Connection, Response};
use crate::protocol::kserve::{
    decode_infer_request, decode_raw_infer_request, encode_infer_response, json_header_length,
};
use crate::repository::config::{config_to_json, parse_config_json, parse_config_text};

/// A small deterministic generator, so chunk sizes and answer order follow
/// from the input and a crash reproduces.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % bound.max(1)
    }
}

/// An HTTP/1.1 connection with a pretend application and socket around it.
struct Http1Driver {
    conn: Connection,
    rng: Lcg,
    now: Instant,
    /// Everything reported as written to the socket.
    written: Vec<u8>,
    /// Requests taken and not answered yet.
    pending: Vec<u64>,
    next_seq: u64,
}

impl Http1Driver {
    /// Takes requests, answers some (all when `flush`) in a shuffled order,
    /// and writes output (partially unless `flush`).
    fn pump(&mut self, flush: bool) {
        while let Some(mut req) = self.conn.poll_request() {
            assert_eq!(req.seq, self.next_seq, "requests must come out in order");
            self.next_seq += 1;
            // The application's half of a compressed body: decoding it
            // stops at the limit, whatever the input.
            let limit = 1 << 16;
            if req.decode_body(limit).is_ok() {
                assert!(req.body.len() <= limit);
                assert!(req.content_coding().is_none());
            }
            self.pending.push(req.seq);
        }
        while !self.pending.is_empty() && (flush || self.rng.next(2) == 0) {
            let i = self.rng.next(self.pending.len());
            let seq = self.pending.swap_remove(i);
            let status = [200, 400, 404, 500][self.rng.next(4)];
            self.conn.send_response(
                seq,
                Response::json(status, Bytes::from_static(b"{}")),
                self.now,
            );
        }
        while self.conn.wants_write() {
            let mut slices = [std::io::IoSlice::new(&[]); 8];
            let n = self.conn.poll_transmit(&mut slices);
            let total: usize = slices[..n].iter().map(|s| s.len()).sum();
            let part = if flush || total == 0 {
                total
            } else {
                1 + self.rng.next(total)
            };
            let mut left = part;
            for s in &slices[..n] {
                let take = left.min(s.len());
                self.written.extend_from_slice(&s[..take]);
                left -= take;
            }
            self.conn.handle_write(part, self.now);
            if part == 0 {
                break;
            }
        }
    }
}

/// Drives an HTTP/1.1 server connection with `data` as the client's bytes:
/// the first byte seeds how the rest is split into reads, how much of the
/// output each write takes, and in which order requests are answered.
/// Checks that requests come out in sequence, that a compressed body
/// decodes within its limit, that what is written starts
/// as an HTTP/1.1 response, and that the connection ends after end of
/// stream.
pub fn http1_connection(data: &[u8]) {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let config = Config {
        max_header_bytes: 2048,
        max_body_bytes: 1 << 16,
        max_decoded_body_bytes: 1 << 16,
        max_pipelined: 4,
        output_high_water: 1 << 16,
        ..Config::default()
    };
    let now = Instant::now();
    let mut d = Http1Driver {
        conn: Connection::new(config, now),
        rng: Lcg(u64::from(seed)),
        now,
        written: Vec::new(),
        pending: Vec::new(),
        next_seq: 0,
    };
    let mut rest = input;
    while !rest.is_empty() && !d.conn.is_closed() {
        if !d.conn.wants_read() {
            d.pump(true);
            if !d.conn.wants_read() {
                break;
            }
        }
        let n = 1 + d.rng.next(rest.len().min(512));
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        d.conn.handle_read(chunk, d.now);
        d.pump(false);
        if d.rng.next(16) == 0 {
            d.now += Duration::from_secs(d.rng.next(120) as u64);
            d.conn.handle_timeout(d.now);
        }
    }
    d.pump(true);
    d.conn.handle_eof(d.now);
    d.pump(true);
    d.now += Duration::from_secs(3600);
    d.conn.handle_timeout(d.now);
    d.pump(true);

    if !d.written.is_empty() {
        assert!(
            d.written.starts_with(b"HTTP/1.1 "),
            "output does not start with a status line: {:?}",
            String::from_utf8_lossy(&d.written[..d.written.len().min(64)])
        );
    }
    assert!(
        d.conn.is_closed(),
        "connection still open after end of stream and a long timeout"
    );
}

fn raw_model_configs() -> &'static [ModelConfig] {
    static CONFIGS: OnceLock<Vec<ModelConfig>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        [
            r#"name: "fault" max_batch_size: 0
               input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 4 ] } ]
               output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 4 ] } ]"#,
            r#"name: "id" max_batch_size: 8
               input [ { name: "INPUT0" data_type: TYPE_FP16 dims: [ 2, -1 ] } ]
               output [ { name: "OUTPUT0" data_type: TYPE_FP16 dims: [ 2, -1 ] } ]"#,
            r#"name: "s" max_batch_size: 0
               input [ { name: "INPUT0" data_type: TYPE_STRING dims: [ 1 ] } ]
               output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ 1 ] } ]"#,
            r#"name: "two" max_batch_size: 0
               input [ { name: "A" data_type: TYPE_INT8 dims: [ 1 ] },
                       { name: "B" data_type: TYPE_INT8 dims: [ 1 ] } ]
               output [ { name: "C" data_type: TYPE_INT8 dims: [ 1 ] } ]"#,
        ]
        .iter()
        .map(|t| parse_config_text(t).expect("fuzz harness configs parse"))
        .collect()
    })
}

/// Whether a tensor's bytes match its datatype and shape, the check the
/// scheduler makes before a tensor can become an output.
fn well_formed(t: &Tensor) -> bool {
    match byte_size(t.datatype, &t.shape) {
        Ok(Some(n)) => t.data.len() as u64 == n,
        Ok(None) => match (element_count(&t.shape), split_bytes_elements(&t.data)) {
            (Ok(n), Ok(elements)) => elements.len() as u64 == n,
            _ => false,
        },
        Err(_) => false,
    }
}

/// Decodes `data` as a KServe v2 inference request body. The first byte
/// picks the framing: plain JSON, the binary tensor extension with a header
/// length taken from the next two bytes, or a raw body for one of a few
/// model configurations. A request that decodes is echoed back through
/// the response encoder (its well-formed inputs as outputs).
pub fn kserve_body(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let decoded = match mode % 4 {
        0 | 1 => {
            let body = Bytes::copy_from_slice(rest);
            let Ok(n) = json_header_length(None, body.len()) else {
                panic!("a missing header length must mean the whole body");
            };
            assert_eq!(n, body.len());
            if n == 0 {
                return;
            }
            decode_infer_request("m", None, &body, n)
        }
        2 => {
            if rest.len() < 2 {
                return;
            }
            let value = u16::from_le_bytes([rest[0], rest[1]]).to_string();
            let body = Bytes::copy_from_slice(&rest[2..]);
            match json_header_length(Some(&value), body.len()) {
                Ok(0) => decode_raw_infer_request("m", Some(1), &raw_model_configs()[0], body),
                Ok(n) => {
                    assert!(n <= body.len(), "header length beyond the body");
                    decode_infer_request("m", Some(1), &body, n)
                }
                Err(_) => return,
            }
        }
        _ => {
            let Some((&pick, raw)) = rest.split_first() else {
                return;
            };
            let configs = raw_model_configs();
            let config = &configs[usize::from(pick) % configs.len()];
            decode_raw_infer_request("m", None, config, Bytes::copy_from_slice(raw))
        }
    };
    let Ok(decoded) = decoded else {
        return;
    };
    let response = InferResponse {
        model_name: "m".to_owned(),
        model_version: 1,
        id: decoded.request.id.clone(),
        outputs: decoded
            .request
            .inputs
            .iter()
            .filter(|t| well_formed(t))
            .cloned()
            .collect(),
        parameters: decoded.request.parameters.clone(),
    };
    if let Ok(encoded) = encode_infer_response(&response, &decoded.format) {
        let json_len = encoded.json_length.unwrap_or_else(|| encoded.body[0].len());
        let head = &encoded.body[0][..json_len];
        assert!(
            serde_json::from_slice::<serde_json::Value>(head).is_ok(),
            "encoder wrote invalid JSON: {}",
            String::from_utf8_lossy(head)
        );
    }
}

/// Parses `data` as `config.pbtxt` text. A configuration that parses must
/// survive the trip through the JSON the model configuration endpoint
/// prints and the JSON a load override sends.
pub fn config_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = parse_config_text(text) else {
        return;
    };
    let json = config_to_json(&config);
    let again = parse_config_json(&json)
        .unwrap_or_else(|e| panic!("printed configuration does not parse back: {e}\n{json}"));
    // Compared as JSON values: protobuf maps (`parameters`, ...) print in
    // no fixed order.
    let value = |s: &str| {
        serde_json::from_str::<serde_json::Value>(s)
            .unwrap_or_else(|e| panic!("configuration printed as invalid JSON: {e}\n{s}"))
    };
    assert_eq!(
        value(&config_to_json(&again)),
        value(&json),
        "configuration changed in a JSON round trip"
    );
}

/// Checks what an HTTP/2 server connection wrote, as a client would read
/// it: every frame parses and every header block decodes.
struct Http2Reader {
    frames: crate::protocol::http2::frame::FrameDecoder,
    hpack: crate::protocol::http2::hpack::Decoder,
    block: Option<Vec<u8>>,
    frames_read: usize,
}

impl Http2Reader {
    fn read(&mut self, bytes: &[u8]) {
        use crate::protocol::http2::frame::Frame;
        self.frames.push(bytes);
        loop {
            let frame = match self.frames.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => panic!("server wrote a frame a client cannot parse: {e}"),
            };
            if self.frames_read == 0 {
                assert!(
                    matches!(frame, Frame::Settings(ref s) if !s.ack),
                    "server preface is not SETTINGS: {frame:?}"
                );
            }
            self.frames_read += 1;
            let (fragment, end) = match frame {
                Frame::Headers(h) => {
                    assert!(self.block.is_none(), "HEADERS inside a header block");
                    self.block = Some(Vec::new());
                    (h.block, h.end_headers)
                }
                Frame::Continuation(c) => {
                    assert!(self.block.is_some(), "CONTINUATION without HEADERS");
                    (c.block, c.end_headers)
                }
                other => {
                    assert!(self.block.is_none(), "{other:?} inside a header block");
                    continue;
                }
            };
            let block = self.block.as_mut().expect("a block is open");
            block.extend_from_slice(&fragment);
            if end {
                let block = self.block.take().expect("a block is open");
                self.hpack
                    .decode(&block, usize::MAX, |_, _| {})
                    .unwrap_or_else(|e| {
                        panic!("server wrote a header block that does not decode: {e}")
                    });
            }
        }
    }
}

/// Drives an HTTP/2 server connection with `data` as what a client sends
/// after a valid preface and SETTINGS. The first byte seeds how the rest
/// is split into reads, how the pretend application answers (headers,
/// data, trailers, trailers-only, resets, capacity releases) and how much
/// of the output each write takes. Checks that everything written parses
/// as frames whose header blocks decode, and that the connection ends
/// after end of stream and a long timeout.
pub fn http2_connection(data: &[u8]) {
    use crate::protocol::http2::frame::{FrameDecoder, MAX_FRAME_SIZE_LIMIT, PREFACE};
    use crate::protocol::http2::hpack;
    use crate::protocol::http2::{
        Config as H2Config, Connection as H2Connection, ErrorCode, Event,
    };

    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let config = H2Config {
        max_concurrent_streams: 8,
        stream_window: 65_535,
        connection_window: 131_070,
        max_frame_size: 16_384,
        max_header_list_size: 4096,
        max_header_block_bytes: 8192,
        max_continuation_frames: 8,
        max_resets: 20,
        max_pending_control: 64,
        output_high_water: 1 << 16,
        ..H2Config::default()
    };
    let mut rng = Lcg(u64::from(seed));
    let mut now = Instant::now();
    let mut conn = H2Connection::new(config, now);
    let mut reader = Http2Reader {
        frames: FrameDecoder::frames(MAX_FRAME_SIZE_LIMIT),
        hpack: hpack::Decoder::new(4096),
        block: None,
        frames_read: 0,
    };
    let mut open = Vec::new();

    let mut pump = |conn: &mut H2Connection, rng: &mut Lcg, now: Instant, flush: bool| {
        while let Some(event) = conn.poll_event() {
            match event {
                Event::Request { stream, .. } => open.push(stream),
                Event::Data { stream, data, .. } => {
                    if rng.next(2) == 0 {
                        conn.release_capacity(stream, data.len(), now);
                    }
                }
                Event::Trailers { .. } => {}
                Event::Reset { stream, .. } => open.retain(|&s| s != stream),
            }
        }
        while !open.is_empty() && (flush || rng.next(3) == 0) {
            let stream = open.swap_remove(rng.next(open.len()));
            let body = Bytes::from(vec![b'r'; rng.next(40_000)]);
            // Errors mean the stream went away meanwhile: an expected outcome.
            let _ = match rng.next(4) {
                0 => conn.send_headers(stream, 200, [("grpc-status", "0")], true, now),
                1 => conn.reset(stream, ErrorCode::CANCEL, now),
                _ => conn
                    .send_headers(
                        stream,
                        200,
                        [("content-type", "application/grpc")],
                        false,
                        now,
                    )
                    .and_then(|()| conn.send_data(stream, body, false, now))
                    .and_then(|()| conn.send_trailers(stream, [("grpc-status", "0")], now)),
            };
        }
        while conn.wants_write() {
            let mut slices = [std::io::IoSlice::new(&[]); 16];
            let n = conn.poll_transmit(&mut slices);
            let total: usize = slices[..n].iter().map(|s| s.len()).sum();
            let part = if flush || total == 0 {
                total
            } else {
                1 + rng.next(total)
            };
            let mut written = Vec::with_capacity(part);
            let mut left = part;
            for s in &slices[..n] {
                let take = left.min(s.len());
                written.extend_from_slice(&s[..take]);
                left -= take;
            }
            conn.handle_write(part, now);
            reader.read(&written);
            if part == 0 || !flush {
                break;
            }
        }
    };

    let mut handshake = PREFACE.to_vec();
    handshake.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    handshake.extend_from_slice(&[0, 0, 0, 4, 1, 0, 0, 0, 0]);
    conn.handle_read(&handshake, now);
    pump(&mut conn, &mut rng, now, false);

    let mut rest = input;
    while !rest.is_empty() && !conn.is_closed() {
        if !conn.wants_read() {
            pump(&mut conn, &mut rng, now, true);
            if !conn.wants_read() {
                break;
            }
        }
        let n = 1 + rng.next(rest.len().min(4096));
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        conn.handle_read(chunk, now);
        pump(&mut conn, &mut rng, now, false);
        if rng.next(16) == 0 {
            now += Duration::from_secs(rng.next(200) as u64);
            conn.handle_timeout(now);
        }
    }
    pump(&mut conn, &mut rng, now, true);
    conn.handle_eof(now);
    pump(&mut conn, &mut rng, now, true);
    now += Duration::from_secs(3600);
    conn.handle_timeout(now);
    pump(&mut conn, &mut rng, now, true);
    assert!(
        conn.is_closed(),
        "HTTP/2 connection still open after end of stream and a long timeout"
    );
}

/// Decodes `data` as a sequence of HPACK header blocks on one context, each
/// block prefixed by its length in one byte. Every block that decodes is
/// encoded again and decoded on a second context pair, and must come back
/// the same.
pub fn hpack_blocks(data: &[u8]) {
    use crate::protocol::http2::hpack::{Decoder, Encoder, Outcome};

    let Some((&sizes, mut rest)) = data.split_first() else {
        return;
    };
    let table = [0usize, 64, 256, 4096][usize::from(sizes % 4)];
    let mut decoder = Decoder::new(table);
    let mut encoder = Encoder::new([0usize, 100, 4096][usize::from(sizes / 4 % 3)]);
    let mut check = Decoder::new(4096);
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (block, tail) = tail.split_at(len);
        rest = tail;
        let mut fields = Vec::new();
        match decoder.decode(block, 8192, |n, v| fields.push((n.to_vec(), v.to_vec()))) {
            Ok(Outcome::Complete) => {}
            Ok(Outcome::TooLarge) => continue,
            // The context is unusable after an error, as on a connection.
            Err(_) => return,
        }
        assert!(decoder.table_size() <= table, "table above its limit");
        let mut encoded = Vec::new();
        encoder.encode(fields.iter().map(|(n, v)| (n, v)), &mut encoded);
        let mut again = Vec::new();
        check
            .decode(&encoded, usize::MAX, |n, v| {
                again.push((n.to_vec(), v.to_vec()))
            })
            .unwrap_or_else(|e| panic!("our encoder wrote a block that does not decode: {e}"));
        assert_eq!(
            again, fields,
            "fields changed in an encode/decode round trip"
        );
    }
}

/// Drives the gRPC message path with `data` as one call's DATA stream. The
/// first byte seeds how the rest is split into chunks and picks the
/// encoding of compressed messages (gzip or deflate). Every message that
/// comes out is decompressed under a small limit, decoded as a
/// `ModelInferRequest` and converted into a core request; a request that
/// converts is answered with its well-formed inputs as outputs, and the
/// encoded stream response must decode back with its raw outputs aligned
/// with its outputs and equal to the tensors sent.
pub fn grpc_message(data: &[u8]) {
    use prost::Message;

    use crate::core::proto::inference::{ModelInferRequest, ModelStreamInferResponse};
    use crate::protocol::grpc::compression::{Encoding, decompress};
    use crate::protocol::grpc::framing::MessageDecoder;
    use crate::protocol::grpc::infer::{
        decode_infer_request, encode_infer_response, wrap_stream_response,
    };

    const LIMIT: usize = 1 << 16;
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let mut rng = Lcg(u64::from(seed));
    let encoding = if seed & 1 == 0 {
        Encoding::Gzip
    } else {
        Encoding::Deflate
    };
    let mut decoder = MessageDecoder::new(LIMIT);
    let mut messages = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let n = 1 + rng.next(rest.len().min(4096));
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let fed = decoder.handle_data(Bytes::copy_from_slice(chunk));
        while let Some(m) = decoder.poll_message() {
            assert!(m.payload.len() <= LIMIT, "message past the limit");
            messages.push(m);
        }
        if fed.is_err() {
            break;
        }
    }
    let _ = decoder.handle_end();

    for m in messages {
        let payload = if m.compressed {
            match decompress(encoding, &m.payload, LIMIT) {
                Ok(p) => {
                    assert!(p.len() <= LIMIT, "decompressed past the limit");
                    p
                }
                Err(_) => continue,
            }
        } else {
            m.payload
        };
        let Ok(request) = ModelInferRequest::decode(payload) else {
            continue;
        };
        let Ok(decoded) = decode_infer_request(request, None) else {
            continue;
        };
        let request = decoded.request;
        let response = InferResponse {
            model_name: request.model_name.clone(),
            model_version: 1,
            id: request.id.clone(),
            outputs: request
                .inputs
                .iter()
                .filter(|t| well_formed(t))
                .cloned()
                .collect(),
            parameters: request.parameters.clone(),
        };
        let chunks = wrap_stream_response(encode_infer_response(&response, true));
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let back = ModelStreamInferResponse::decode(&joined[..])
            .unwrap_or_else(|e| panic!("encoder wrote a message that does not decode: {e}"));
        let inner = back
            .infer_response
            .expect("the stream response carries the inference response");
        assert_eq!(inner.outputs.len(), response.outputs.len());
        assert_eq!(inner.raw_output_contents.len(), response.outputs.len());
        for ((t, o), raw) in response
            .outputs
            .iter()
            .zip(&inner.outputs)
            .zip(&inner.raw_output_contents)
        {
            assert_eq!(t.name, o.name);
            assert_eq!(t.shape, o.shape);
            assert_eq!(&t.data, raw, "output '{}' changed on the way", t.name);
        }
    }
}
