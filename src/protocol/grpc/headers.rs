//! The HTTP/2 header blocks of a gRPC call: reading the request's
//! (`:method`, `:path`, `content-type`, `grpc-encoding`,
//! `grpc-accept-encoding`, `grpc-timeout`, Triton's `triton_grpc_error`)
//! and writing the response's (headers, trailers, trailers-only).
//!
//! A request that is not a gRPC request at all (wrong method or content
//! type) is answered at the HTTP level (405, 415) with a gRPC status as
//! well, for the benefit of both kinds of client; a gRPC request the server
//! cannot take is answered with a trailers-only response (status 200 and
//! the gRPC status in one HEADERS frame with END_STREAM).
//!
//! Header lists hold regular fields only; the HTTP status travels beside
//! them (as the HTTP/2 layer's `send_headers` takes it).

use std::time::Duration;

use super::compression::{ACCEPT_ENCODING, AcceptEncodings, Encoding};
use super::status::{Code, Status, percent_encode_message};

/// Header fields to send, in order, without pseudo-headers; names are
/// lower-case as HTTP/2 requires.
pub type HeaderList = Vec<(&'static str, String)>;

/// The request headers of a call, as far as gRPC reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// `:path`: `/<package>.<Service>/<Method>`.
    pub path: String,
    /// How request messages are compressed (`grpc-encoding`).
    pub encoding: Encoding,
    /// What the client reads back (`grpc-accept-encoding`).
    pub accept: AcceptEncodings,
    /// `grpc-timeout`: how long the client waits, from the time the
    /// headers arrived.
    pub timeout: Option<Duration>,
    /// Triton's `triton_grpc_error: true`: a stream ends with the first
    /// error as its gRPC status instead of reporting it in-band.
    pub grpc_error_mode: bool,
}

/// Why a call is refused before it starts, and how to say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The HTTP status of the answer (200 for a gRPC-level refusal).
    pub http_status: u16,
    /// The gRPC status carried with it.
    pub status: Status,
}

impl Rejection {
    /// A gRPC-level refusal, answered trailers-only.
    pub fn grpc(status: Status) -> Rejection {
        Rejection {
            http_status: 200,
            status,
        }
    }

    /// The fields of the one header block answering it (sent with
    /// [`Rejection::http_status`] and END_STREAM).
    pub fn headers(&self) -> HeaderList {
        trailers_only(&self.status)
    }
}

/// Whether a `content-type` names gRPC over protobuf:
/// `application/grpc`, `application/grpc+proto`, each with optional
/// parameters.
pub fn is_grpc_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/grpc")
        || essence.eq_ignore_ascii_case("application/grpc+proto")
}

/// Reads a call's request headers (pseudo-headers included, as HTTP/2
/// delivers them).
pub fn parse_request_head<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    headers: &[(N, V)],
) -> Result<RequestHead, Rejection> {
    let mut method = None;
    let mut path = None;
    let mut content_type = None;
    let mut encoding = None;
    let mut accept = AcceptEncodings::default();
    let mut timeout = None;
    let mut grpc_error_mode = false;
    for (name, value) in headers {
        let name = name.as_ref();
        let value = String::from_utf8_lossy(value.as_ref());
        match name {
            b":method" => method = Some(value.into_owned()),
            b":path" => path = Some(value.into_owned()),
            _ if name.eq_ignore_ascii_case(b"content-type") => {
                content_type = Some(value.into_owned());
            }
            _ if name.eq_ignore_ascii_case(b"grpc-encoding") => {
                encoding = Some(value.trim().to_owned());
            }
            _ if name.eq_ignore_ascii_case(b"grpc-accept-encoding") => accept.add(&value),
            _ if name.eq_ignore_ascii_case(b"grpc-timeout") => {
                // As gRPC's own servers do, a malformed timeout is ignored
                // rather than failing the call.
                timeout = parse_timeout(&value);
                if timeout.is_none() {
                    log::debug!("ignoring malformed grpc-timeout '{value}'");
                }
            }
            _ if name.eq_ignore_ascii_case(b"triton_grpc_error") => {
                grpc_error_mode = value.trim().eq_ignore_ascii_case("true");
            }
            _ => {}
        }
    }
    let method = method.unwrap_or_default();
    if method != "POST" {
        return Err(Rejection {
            http_status: 405,
            status: Status::new(
                Code::Unimplemented,
                format!("gRPC requires method POST, got '{method}'"),
            ),
        });
    }
    let content_type = content_type.unwrap_or_default();
    if !is_grpc_content_type(&content_type) {
        return Err(Rejection {
            http_status: 415,
            status: Status::new(
                Code::Internal,
                format!(
                    "unsupported content-type '{content_type}': expected application/grpc or application/grpc+proto"
                ),
            ),
        });
    }
    let Some(path) = path.filter(|p| p.starts_with('/')) else {
        return Err(Rejection::grpc(Status::unimplemented(
            "request has no :path naming a gRPC method",
        )));
    };
    let encoding = match encoding {
        None => Encoding::Identity,
        Some(token) => Encoding::parse(&token).ok_or_else(|| {
            Rejection::grpc(Status::unimplemented(format!(
                "grpc-encoding '{token}' is not supported; supported encodings: {ACCEPT_ENCODING}"
            )))
        })?,
    };
    Ok(RequestHead {
        path,
        encoding,
        accept,
        timeout,
        grpc_error_mode,
    })
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit (`H`
/// hours, `M` minutes, `S` seconds, `m` milliseconds, `u` microseconds,
/// `n` nanoseconds).
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The response headers (status 200) of a call whose messages go out with
/// `encoding`.
pub fn response_headers(encoding: Encoding) -> HeaderList {
    let mut h: HeaderList = vec![
        ("content-type", "application/grpc".to_owned()),
        ("grpc-accept-encoding", ACCEPT_ENCODING.to_owned()),
    ];
    if encoding != Encoding::Identity {
        h.push(("grpc-encoding", encoding.name().to_owned()));
    }
    h
}

/// The trailers ending a call that sent response headers.
pub fn trailers(status: &Status) -> HeaderList {
    let mut h: HeaderList = vec![("grpc-status", status.code().as_u32().to_string())];
    if !status.message().is_empty() {
        h.push(("grpc-message", percent_encode_message(status.message())));
    }
    h
}

/// The one header block (status 200, END_STREAM) of a call answered with
/// a status only.
pub fn trailers_only(status: &Status) -> HeaderList {
    let mut h = response_headers(Encoding::Identity);
    h.extend(trailers(status));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut h = vec![
            (":method".to_owned(), "POST".to_owned()),
            (":scheme".to_owned(), "http".to_owned()),
            (
                ":path".to_owned(),
                "/inference.GRPCInferenceService/ServerLive".to_owned(),
            ),
            (":authority".to_owned(), "localhost".to_owned()),
            ("content-type".to_owned(), "application/grpc".to_owned()),
            ("te".to_owned(), "trailers".to_owned()),
        ];
        for (k, v) in extra {
            match h.iter_mut().find(|(n, _)| n == k) {
                Some(slot) => slot.1 = (*v).to_owned(),
                None => h.push(((*k).to_owned(), (*v).to_owned())),
            }
        }
        h
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout("30S"), Some(Duration::from_secs(30)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_timeout("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_timeout("0S"), Some(Duration::ZERO));
        assert_eq!(
            parse_timeout("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        for bad in [
            "",
            "S",
            "100",
            "123456789S",
            "1.5S",
            "-1S",
            "10s",
            "10 S",
            "1x",
            "10é",
        ] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn content_types() {
        for ok in [
            "application/grpc",
            "application/grpc+proto",
            "application/GRPC; charset=utf-8",
        ] {
            assert!(is_grpc_content_type(ok), "{ok}");
        }
        for bad in [
            "application/json",
            "application/grpc+json",
            "application/grpc-web",
            "",
        ] {
            assert!(!is_grpc_content_type(bad), "{bad}");
        }
    }

    #[test]
    fn request_heads() {
        let h = parse_request_head(&head(&[
            ("grpc-encoding", "gzip"),
            ("grpc-accept-encoding", "identity,deflate"),
            ("grpc-timeout", "5S"),
            ("triton_grpc_error", "true"),
        ]))
        .unwrap();
        assert_eq!(h.path, "/inference.GRPCInferenceService/ServerLive");
        assert_eq!(h.encoding, Encoding::Gzip);
        assert!(h.accept.deflate && !h.accept.gzip);
        assert_eq!(h.timeout, Some(Duration::from_secs(5)));
        assert!(h.grpc_error_mode);

        // Defaults; no `te` is tolerated; a bad timeout is ignored.
        let mut plain = head(&[("grpc-timeout", "soon")]);
        plain.retain(|(n, _)| n != "te");
        let h = parse_request_head(&plain).unwrap();
        assert_eq!(h.encoding, Encoding::Identity);
        assert_eq!(h.timeout, None);
        assert!(!h.grpc_error_mode);

        let r = parse_request_head(&head(&[(":method", "GET")])).unwrap_err();
        assert_eq!(r.http_status, 405);
        let r = parse_request_head(&head(&[("content-type", "text/plain")])).unwrap_err();
        assert_eq!(r.http_status, 415);
        assert_eq!(
            r.headers()[0],
            ("content-type", "application/grpc".to_owned())
        );

        let r = parse_request_head(&head(&[("grpc-encoding", "snappy")])).unwrap_err();
        assert_eq!(r.http_status, 200);
        assert_eq!(r.status.code(), Code::Unimplemented);
        let h = r.headers();
        assert!(h.contains(&("grpc-accept-encoding", ACCEPT_ENCODING.to_owned())));
        assert!(h.contains(&("grpc-status", "12".to_owned())));

        let mut no_path = head(&[]);
        no_path.retain(|(n, _)| n != ":path");
        assert_eq!(
            parse_request_head(&no_path).unwrap_err().status.code(),
            Code::Unimplemented
        );
    }

    #[test]
    fn response_blocks() {
        assert_eq!(
            response_headers(Encoding::Gzip),
            vec![
                ("content-type", "application/grpc".to_owned()),
                ("grpc-accept-encoding", ACCEPT_ENCODING.to_owned()),
                ("grpc-encoding", "gzip".to_owned()),
            ]
        );
        assert_eq!(
            trailers(&Status::ok()),
            vec![("grpc-status", "0".to_owned())]
        );
        assert_eq!(
            trailers(&Status::new(Code::NotFound, "no model 'x'\n100%")),
            vec![
                ("grpc-status", "5".to_owned()),
                ("grpc-message", "no model 'x'%0A100%25".to_owned()),
            ]
        );
        let only = trailers_only(&Status::new(Code::Unavailable, "busy"));
        assert_eq!(only[0], ("content-type", "application/grpc".to_owned()));
        assert_eq!(only[only.len() - 2], ("grpc-status", "14".to_owned()));
    }
}
