//! Sans-IO HTTP/2 server connection (RFC 9113).

pub mod error;
pub mod frame;
pub mod hpack;
