//! HTTP/2 error codes (RFC 9113 §7) and the two reaches of an error: a
//! [`StreamError`] ends one stream with RST_STREAM, a [`ConnectionError`]
//! ends the connection with GOAWAY.
//!
//! Part of `protocol::http2`; calls nothing outside it.

use std::borrow::Cow;
use std::fmt;

use super::frame::StreamId;

/// An error code as carried by RST_STREAM and GOAWAY. Codes this crate
/// does not know are kept as they arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// Graceful shutdown, or a stream no longer needed by its sender.
    pub const NO_ERROR: ErrorCode = ErrorCode(0x0);
    /// An unspecific protocol violation.
    pub const PROTOCOL_ERROR: ErrorCode = ErrorCode(0x1);
    /// An unexpected internal error.
    pub const INTERNAL_ERROR: ErrorCode = ErrorCode(0x2);
    /// The peer violated flow control.
    pub const FLOW_CONTROL_ERROR: ErrorCode = ErrorCode(0x3);
    /// SETTINGS were not acknowledged in time.
    pub const SETTINGS_TIMEOUT: ErrorCode = ErrorCode(0x4);
    /// A frame arrived after the stream was half-closed or closed.
    pub const STREAM_CLOSED: ErrorCode = ErrorCode(0x5);
    /// A frame had an invalid size.
    pub const FRAME_SIZE_ERROR: ErrorCode = ErrorCode(0x6);
    /// The stream was refused before any processing; safe to retry.
    pub const REFUSED_STREAM: ErrorCode = ErrorCode(0x7);
    /// The stream is no longer needed.
    pub const CANCEL: ErrorCode = ErrorCode(0x8);
    /// The header compression context cannot be maintained.
    pub const COMPRESSION_ERROR: ErrorCode = ErrorCode(0x9);
    /// A CONNECT tunnel failed.
    pub const CONNECT_ERROR: ErrorCode = ErrorCode(0xa);
    /// The peer is generating excessive load.
    pub const ENHANCE_YOUR_CALM: ErrorCode = ErrorCode(0xb);
    /// The transport's security properties are insufficient.
    pub const INADEQUATE_SECURITY: ErrorCode = ErrorCode(0xc);
    /// HTTP/1.1 is required instead.
    pub const HTTP_1_1_REQUIRED: ErrorCode = ErrorCode(0xd);

    /// The RFC's name of the code, if it is a known one.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "unknown error code {:#x}", self.0),
        }
    }
}

/// An error that ends the whole connection: answered with GOAWAY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionError {
    /// Code sent in GOAWAY.
    pub code: ErrorCode,
    /// What went wrong; sent as GOAWAY debug data.
    pub reason: Cow<'static, str>,
}

impl ConnectionError {
    /// A connection error with a code and a reason.
    pub fn new(code: ErrorCode, reason: impl Into<Cow<'static, str>>) -> ConnectionError {
        ConnectionError {
            code,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection error {}: {}", self.code, self.reason)
    }
}

impl std::error::Error for ConnectionError {}

/// An error confined to one stream: answered with RST_STREAM, the
/// connection goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    /// The stream it ends.
    pub stream: StreamId,
    /// Code sent in RST_STREAM.
    pub code: ErrorCode,
    /// What went wrong (for logs; RST_STREAM carries no text).
    pub reason: Cow<'static, str>,
}

impl StreamError {
    /// A stream error with a code and a reason.
    pub fn new(
        stream: StreamId,
        code: ErrorCode,
        reason: impl Into<Cow<'static, str>>,
    ) -> StreamError {
        StreamError {
            stream,
            code,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stream {} error {}: {}",
            self.stream, self.code, self.reason
        )
    }
}

impl std::error::Error for StreamError {}

/// Either reach of error, as frame parsing and stream handling report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Ends the connection (GOAWAY).
    Connection(ConnectionError),
    /// Ends one stream (RST_STREAM).
    Stream(StreamError),
}

impl Error {
    /// A connection error.
    pub fn connection(code: ErrorCode, reason: impl Into<Cow<'static, str>>) -> Error {
        Error::Connection(ConnectionError::new(code, reason))
    }

    /// A stream error.
    pub fn stream(
        stream: StreamId,
        code: ErrorCode,
        reason: impl Into<Cow<'static, str>>,
    ) -> Error {
        Error::Stream(StreamError::new(stream, code, reason))
    }

    /// The code the error is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Connection(e) => e.code,
            Error::Stream(e) => e.code,
        }
    }
}

impl From<ConnectionError> for Error {
    fn from(e: ConnectionError) -> Error {
        Error::Connection(e)
    }
}

impl From<StreamError> for Error {
    fn from(e: StreamError) -> Error {
        Error::Stream(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connection(e) => e.fmt(f),
            Error::Stream(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {}
