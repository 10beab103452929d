//! Message compression: the `grpc-encoding` a message is compressed with
//! and the `grpc-accept-encoding` list a peer can read.
//!
//! nereid reads `identity`, `deflate` (a zlib stream, as gRPC means it)
//! and `gzip` in requests. Responses are compressed only when the server
//! is configured to (Triton's `--grpc-infer-response-compression-level`),
//! and then with an algorithm the client lists as accepted.

use std::io::{Read, Write};

use bytes::Bytes;
use flate2::Compression;
use flate2::read::{GzDecoder, ZlibDecoder};
use flate2::write::{GzEncoder, ZlibEncoder};

use super::status::Status;

/// What nereid lists in `grpc-accept-encoding`.
pub const ACCEPT_ENCODING: &str = "identity,deflate,gzip";

/// A message encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Not compressed.
    Identity,
    /// zlib (RFC 1950), which gRPC calls `deflate`.
    Deflate,
    /// gzip (RFC 1952).
    Gzip,
}

impl Encoding {
    /// Parses a `grpc-encoding` token (case-insensitive); `None` for an
    /// encoding nereid cannot read.
    pub fn parse(token: &str) -> Option<Encoding> {
        let t = token.trim();
        if t.eq_ignore_ascii_case("identity") {
            Some(Encoding::Identity)
        } else if t.eq_ignore_ascii_case("deflate") {
            Some(Encoding::Deflate)
        } else if t.eq_ignore_ascii_case("gzip") {
            Some(Encoding::Gzip)
        } else {
            None
        }
    }

    /// The token sent in `grpc-encoding`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Deflate => "deflate",
            Encoding::Gzip => "gzip",
        }
    }
}

/// How hard responses are compressed (Triton's compression levels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum CompressionLevel {
    /// Responses are not compressed.
    #[default]
    None,
    /// Fast compression.
    Low,
    /// Balanced compression.
    Medium,
    /// Best compression.
    High,
}

impl CompressionLevel {
    /// Parses a level name: `none`, `low`, `medium` or `high`.
    pub fn parse(name: &str) -> Option<CompressionLevel> {
        Some(match name {
            "none" => CompressionLevel::None,
            "low" => CompressionLevel::Low,
            "medium" => CompressionLevel::Medium,
            "high" => CompressionLevel::High,
            _ => return None,
        })
    }

    fn flate(self) -> Compression {
        match self {
            CompressionLevel::None => Compression::none(),
            CompressionLevel::Low => Compression::fast(),
            CompressionLevel::Medium => Compression::default(),
            CompressionLevel::High => Compression::best(),
        }
    }
}

/// The encodings a peer accepts for the messages it receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcceptEncodings {
    /// `gzip` is listed.
    pub gzip: bool,
    /// `deflate` is listed.
    pub deflate: bool,
}

impl AcceptEncodings {
    /// Adds the tokens of one `grpc-accept-encoding` value (a comma list;
    /// the header may also be repeated).
    pub fn add(&mut self, value: &str) {
        for token in value.split(',') {
            match Encoding::parse(token) {
                Some(Encoding::Gzip) => self.gzip = true,
                Some(Encoding::Deflate) => self.deflate = true,
                _ => {}
            }
        }
    }

    /// The encoding for responses at `level`: none unless compression is
    /// configured and the peer reads an algorithm nereid writes (gzip
    /// preferred).
    pub fn choose(self, level: CompressionLevel) -> Encoding {
        if level == CompressionLevel::None {
            Encoding::Identity
        } else if self.gzip {
            Encoding::Gzip
        } else if self.deflate {
            Encoding::Deflate
        } else {
            Encoding::Identity
        }
    }
}

/// Compresses a payload given as chunks into one buffer.
pub fn compress(encoding: Encoding, level: CompressionLevel, payload: &[Bytes]) -> Bytes {
    let total: usize = payload.iter().map(Bytes::len).sum();
    // Writing into a Vec cannot fail.
    match encoding {
        Encoding::Identity => {
            let mut out = Vec::with_capacity(total);
            for c in payload {
                out.extend_from_slice(c);
            }
            Bytes::from(out)
        }
        Encoding::Deflate => {
            let mut enc = ZlibEncoder::new(Vec::with_capacity(total / 2 + 64), level.flate());
            for c in payload {
                enc.write_all(c).expect("writing to a Vec");
            }
            Bytes::from(enc.finish().expect("writing to a Vec"))
        }
        Encoding::Gzip => {
            let mut enc = GzEncoder::new(Vec::with_capacity(total / 2 + 64), level.flate());
            for c in payload {
                enc.write_all(c).expect("writing to a Vec");
            }
            Bytes::from(enc.finish().expect("writing to a Vec"))
        }
    }
}

/// Decompresses a message payload, refusing output longer than `limit`
/// (a small compressed message must not expand without bound).
pub fn decompress(encoding: Encoding, data: &[u8], limit: usize) -> Result<Bytes, Status> {
    fn read_limited(mut reader: impl Read, limit: usize, hint: usize) -> Result<Vec<u8>, Status> {
        let mut out = Vec::with_capacity(hint.min(limit));
        let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        reader
            .by_ref()
            .take(cap)
            .read_to_end(&mut out)
            .map_err(|e| {
                Status::internal(format!("failed to decompress the request message: {e}"))
            })?;
        if out.len() > limit {
            return Err(Status::resource_exhausted(format!(
                "Received message larger than max (decompressed size exceeds {limit})"
            )));
        }
        Ok(out)
    }
    let hint = data.len().saturating_mul(4);
    let out = match encoding {
        Encoding::Identity => return Ok(Bytes::copy_from_slice(data)),
        Encoding::Deflate => read_limited(ZlibDecoder::new(data), limit, hint)?,
        Encoding::Gzip => read_limited(GzDecoder::new(data), limit, hint)?,
    };
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::grpc::status::Code;

    #[test]
    fn names_and_levels() {
        assert_eq!(Encoding::parse("GZIP"), Some(Encoding::Gzip));
        assert_eq!(Encoding::parse(" deflate"), Some(Encoding::Deflate));
        assert_eq!(Encoding::parse("identity"), Some(Encoding::Identity));
        assert_eq!(Encoding::parse("snappy"), None);
        assert_eq!(
            CompressionLevel::parse("high"),
            Some(CompressionLevel::High)
        );
        assert_eq!(CompressionLevel::parse("max"), None);
    }

    #[test]
    fn accepted_encodings_pick_the_response_encoding() {
        let mut a = AcceptEncodings::default();
        assert_eq!(a.choose(CompressionLevel::High), Encoding::Identity);
        a.add("identity, deflate");
        assert_eq!(a.choose(CompressionLevel::Low), Encoding::Deflate);
        assert_eq!(a.choose(CompressionLevel::None), Encoding::Identity);
        a.add("gzip");
        assert_eq!(a.choose(CompressionLevel::Medium), Encoding::Gzip);
    }

    #[test]
    fn round_trips() {
        let text: Vec<u8> = b"tensor bytes "
            .iter()
            .cycle()
            .take(10_000)
            .copied()
            .collect();
        let chunks = [
            Bytes::copy_from_slice(&text[..3000]),
            Bytes::copy_from_slice(&text[3000..]),
        ];
        for enc in [Encoding::Identity, Encoding::Deflate, Encoding::Gzip] {
            for level in [CompressionLevel::Low, CompressionLevel::High] {
                let packed = compress(enc, level, &chunks);
                if enc != Encoding::Identity {
                    assert!(packed.len() < text.len() / 10, "{enc:?} compresses");
                }
                assert_eq!(
                    &decompress(enc, &packed, text.len()).unwrap()[..],
                    &text[..]
                );
            }
        }
    }

    #[test]
    fn deflate_is_zlib_and_gzip_has_its_magic() {
        let z = compress(
            Encoding::Deflate,
            CompressionLevel::Medium,
            &[Bytes::from_static(b"x")],
        );
        assert_eq!(z[0] & 0x0f, 8, "zlib header names deflate");
        assert_eq!(
            u16::from_be_bytes([z[0], z[1]]) % 31,
            0,
            "zlib header check"
        );
        let g = compress(
            Encoding::Gzip,
            CompressionLevel::Medium,
            &[Bytes::from_static(b"x")],
        );
        assert_eq!(&g[..2], &[0x1f, 0x8b]);
    }

    #[test]
    fn bombs_and_garbage() {
        let zeros = vec![0u8; 1 << 20];
        let packed = compress(
            Encoding::Gzip,
            CompressionLevel::High,
            &[Bytes::from(zeros)],
        );
        let e = decompress(Encoding::Gzip, &packed, 1000).unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(decompress(Encoding::Gzip, &packed, 1 << 20).is_ok());
        let e = decompress(Encoding::Deflate, b"not zlib at all", 1000).unwrap_err();
        assert_eq!(e.code(), Code::Internal);
        assert!(
            e.message()
                .starts_with("failed to decompress the request message: ")
        );
    }
}
