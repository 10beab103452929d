//! gRPC status: the code and message a call ends with, as they travel in
//! the `grpc-status` and `grpc-message` trailers.
//!
//! `grpc-message` is percent-encoded as the gRPC HTTP/2 mapping asks:
//! bytes outside printable ASCII (0x20..=0x7E) and `%` itself become
//! `%XX` (upper-case hex) of the message's UTF-8 bytes; everything else is
//! sent as is.

use std::fmt;

use crate::core::Error;

/// gRPC status codes (the numbering of `google.rpc.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// Success.
    Ok,
    /// The call was cancelled, typically by the caller.
    Cancelled,
    /// An error without a better category.
    Unknown,
    /// The request is malformed or does not fit the target.
    InvalidArgument,
    /// The deadline passed before the call finished.
    DeadlineExceeded,
    /// Something the request names does not exist.
    NotFound,
    /// Something the request creates already exists.
    AlreadyExists,
    /// The caller may not do this.
    PermissionDenied,
    /// A limit was hit (message size, quota).
    ResourceExhausted,
    /// The system is not in a state that allows the call.
    FailedPrecondition,
    /// The call was aborted (concurrency conflict).
    Aborted,
    /// A value is past a valid range.
    OutOfRange,
    /// The method or feature is not implemented.
    Unimplemented,
    /// A fault inside the server.
    Internal,
    /// The service cannot take the call now.
    Unavailable,
    /// Unrecoverable data loss.
    DataLoss,
    /// The caller is not authenticated.
    Unauthenticated,
}

impl Code {
    const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The numeric value sent in `grpc-status`.
    pub fn as_u32(self) -> u32 {
        Code::ALL
            .iter()
            .position(|&c| c == self)
            .expect("every code is listed") as u32
    }

    /// The code of a numeric value; values past the known range are
    /// [`Code::Unknown`], as gRPC clients read them.
    pub fn from_u32(value: u32) -> Code {
        usize::try_from(value)
            .ok()
            .and_then(|i| Code::ALL.get(i))
            .copied()
            .unwrap_or(Code::Unknown)
    }
}

/// The status a call ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
}

impl Status {
    /// A status with a code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

    /// Success, without a message.
    pub fn ok() -> Status {
        Status::new(Code::Ok, "")
    }

    /// An [`Code::Internal`] status.
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::Internal, message)
    }

    /// An [`Code::Unimplemented`] status.
    pub fn unimplemented(message: impl Into<String>) -> Status {
        Status::new(Code::Unimplemented, message)
    }

    /// A [`Code::ResourceExhausted`] status.
    pub fn resource_exhausted(message: impl Into<String>) -> Status {
        Status::new(Code::ResourceExhausted, message)
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message (not encoded).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether this is success.
    pub fn is_ok(&self) -> bool {
        self.code == Code::Ok
    }
}

impl From<&Error> for Status {
    /// The status Triton's gRPC front end answers an error with: the code
    /// mapped from the error's category, the message unchanged.
    fn from(e: &Error) -> Status {
        Status::new(Code::from_u32(e.code().grpc_status()), e.message())
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::from(&e)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// Percent-encodes a status message for the `grpc-message` trailer.
pub fn percent_encode_message(message: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// Decodes a `grpc-message` value. Malformed escapes are kept as sent
/// (the mapping asks receivers not to fail on them); the bytes are read as
/// UTF-8, lossily.
pub fn percent_decode_message(value: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let raw = value.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Code as CoreCode;

    #[test]
    fn codes_round_trip() {
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(c.as_u32(), i as u32);
            assert_eq!(Code::from_u32(i as u32), *c);
        }
        assert_eq!(Code::from_u32(17), Code::Unknown);
        assert_eq!(Code::from_u32(u32::MAX), Code::Unknown);
        assert_eq!(Code::Unimplemented.as_u32(), 12);
        assert_eq!(Code::ResourceExhausted.as_u32(), 8);
    }

    #[test]
    fn core_errors_map_as_triton_maps_them() {
        for (core, grpc) in [
            (CoreCode::Unknown, Code::Unknown),
            (CoreCode::Internal, Code::Internal),
            (CoreCode::NotFound, Code::NotFound),
            (CoreCode::InvalidArg, Code::InvalidArgument),
            (CoreCode::Unavailable, Code::Unavailable),
            (CoreCode::Unsupported, Code::Unimplemented),
            (CoreCode::AlreadyExists, Code::AlreadyExists),
            (CoreCode::Cancelled, Code::Cancelled),
        ] {
            let s = Status::from(Error::new(core, "m"));
            assert_eq!((s.code(), s.message()), (grpc, "m"));
        }
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode_message("plain text: ok"), "plain text: ok");
        assert_eq!(percent_encode_message("100%"), "100%25");
        assert_eq!(percent_encode_message("a\nb\tc"), "a%0Ab%09c");
        assert_eq!(percent_encode_message("é"), "%C3%A9");
        assert_eq!(percent_encode_message("~\x7f"), "~%7F");
        for s in ["", "100% sure\r\n", "naïve ☃ 'quoted'", "%%%"] {
            assert_eq!(percent_decode_message(&percent_encode_message(s)), s);
        }
        assert_eq!(percent_decode_message("bad %G1 %4"), "bad %G1 %4");
        assert_eq!(percent_decode_message("%e2%98%83"), "☃");
    }
}
