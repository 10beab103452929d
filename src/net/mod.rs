//! Sockets and event loops: the only layer that does network I/O.
//!
//! [`HttpServer`] binds a listener and runs HTTP/1.1 on a few `mio` event
//! loops. Each accepted socket is driven by a sans-IO
//! [`crate::protocol::http1::Connection`]; complete requests go to an
//! [`HttpService`] (the KServe router) together with a [`Responder`] that
//! any thread may complete. Completions travel back to the owning loop
//! through a channel and a `mio::Waker`.
//!
//! This module may call `protocol` and `core`; it never interprets a request
//! itself.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod http;
mod service;
mod timers;

pub use http::{HttpConfig, HttpServer, HttpServerHandle};
pub use service::{HttpService, Responder};
