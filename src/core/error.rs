//! The one error type below the protocol layer. Its [`Code`] follows
//! Triton's error codes, which fix the HTTP status and gRPC status a client
//! sees; the message is what the client reads, so it names what was expected
//! and what arrived.

use std::fmt;

/// Error categories with a fixed wire mapping (Triton's `TRITONSERVER_Error_Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// Something unexpected.
    Unknown,
    /// A fault inside the server or a backend.
    Internal,
    /// A model, version, region or file that does not exist.
    NotFound,
    /// A request that is malformed or does not match the model.
    InvalidArg,
    /// A model or server that is not ready, or a full queue.
    Unavailable,
    /// A feature that is not supported.
    Unsupported,
    /// A name that is already taken.
    AlreadyExists,
    /// The request was cancelled.
    Cancelled,
}

impl Code {
    /// The HTTP status Triton answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Internal => 500,
            Code::NotFound => 404,
            Code::Unavailable => 503,
            Code::Unsupported => 501,
            Code::Unknown | Code::InvalidArg | Code::AlreadyExists | Code::Cancelled => 400,
        }
    }

    /// The gRPC status code (numeric, as in `google.rpc.Code`).
    pub fn grpc_status(self) -> u32 {
        match self {
            Code::Unknown => 2,
            Code::Internal => 13,
            Code::NotFound => 5,
            Code::InvalidArg => 3,
            Code::Unavailable => 14,
            Code::Unsupported => 12,
            Code::AlreadyExists => 6,
            Code::Cancelled => 1,
        }
    }
}

/// An error with a code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: Code,
    message: String,
}

impl Error {
    /// Builds an error from a code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }

    /// An [`Code::InvalidArg`] error.
    pub fn invalid_arg(message: impl Into<String>) -> Error {
        Error::new(Code::InvalidArg, message)
    }

    /// A [`Code::NotFound`] error.
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(Code::NotFound, message)
    }

    /// A [`Code::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(Code::Internal, message)
    }

    /// A [`Code::Unavailable`] error.
    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::new(Code::Unavailable, message)
    }

    /// A [`Code::Unsupported`] error.
    pub fn unsupported(message: impl Into<String>) -> Error {
        Error::new(Code::Unsupported, message)
    }

    /// The error's category.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message the client reads.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
