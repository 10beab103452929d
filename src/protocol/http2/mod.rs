//! Sans-IO HTTP/2 server connection (RFC 9113).

pub mod hpack;
