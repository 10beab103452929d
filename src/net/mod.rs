//! Sockets and event loops: the only layer that does network I/O.
//!
//! Both front ends run on the same machinery ([`event_loop`]): an acceptor
//! thread per port and a few `mio` event loops, each owning its
//! connections and driving a per-connection *session* around a sans-IO
//! protocol object, with rustls (also sans-IO) between the socket and the
//! session when the port is encrypted ([`TlsConfig`]).
//!
//! * [`HttpServer`]: HTTP/1.1. Complete requests go to an [`HttpService`]
//!   (the KServe router) together with a [`Responder`] that any thread may
//!   complete; compressed or large bodies are decoded, and handed to the
//!   service, on a few decoding threads instead of the loop.
//! * [`GrpcServer`]: HTTP/2 with one `protocol::grpc::Call` per stream,
//!   answering through a sink that posts to the owning loop.
//!
//! Answers travel back to the owning loop through a channel and a
//! `mio::Waker`. This module may call `protocol` and `core`; it never
//! interprets a request itself.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod event_loop;
mod grpc;
mod http;
mod service;
mod timers;
mod tls;

pub use grpc::{GrpcServer, GrpcServerConfig, GrpcServerHandle};
pub use http::{HttpConfig, HttpServer, HttpServerHandle};
pub use service::{HttpService, Responder};
pub use tls::{TlsConfig, TlsError};
