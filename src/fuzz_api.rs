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
        while let Some(req) = self.conn.poll_request() {
            assert_eq!(req.seq, self.next_seq, "requests must come out in order");
            self.next_seq += 1;
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
/// Checks that requests come out in sequence, that what is written starts
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
    assert_eq!(
        config_to_json(&again),
        json,
        "configuration changed in a JSON round trip"
    );
}
