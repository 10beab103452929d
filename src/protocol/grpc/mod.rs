//! gRPC over HTTP/2, sans-IO: the KServe v2 inference service with
//! Triton's extensions, and `grpc.health.v1`.
//!
//! The layers, bottom to top:
//!
//! * [`framing`]: the 5-byte length-prefixed messages of a call's DATA
//!   stream, with the message-size limit;
//! * [`compression`]: `grpc-encoding` / `grpc-accept-encoding` (gzip and
//!   deflate);
//! * [`headers`]: request header checks (`:method`, `content-type`,
//!   `grpc-timeout`, ...) and the response header blocks (headers,
//!   trailers, trailers-only);
//! * [`status`]: status codes and the percent-encoded `grpc-message`;
//! * [`infer`]: `ModelInferRequest` / `ModelInferResponse` to and from
//!   core requests, tensor bytes uncopied both ways;
//! * [`control`]: the other RPCs over the [`crate::server::Server`];
//! * [`service`]: the dispatcher the net layer drives, one [`Call`] per
//!   HTTP/2 stream, answering through a [`CallSink`].
//!
//! Nothing here touches a socket or a clock: the net layer hands in header
//! lists and DATA payloads, arms the deadline timer, and writes what the
//! sink is given. Inference is handed to the server, whose threads answer;
//! repository control, which blocks, runs on a thread of its own (as the
//! REST front end does). It calls `server`, `core`, `repository` types,
//! `logging` settings and the KServe codec's shared helpers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod compression;
pub mod control;
pub mod framing;
pub mod headers;
pub mod infer;
pub mod service;
pub mod status;

pub use compression::{CompressionLevel, Encoding};
pub use framing::{DEFAULT_MAX_MESSAGE_SIZE, MessageDecoder};
pub use headers::HeaderList;
pub use service::{Call, CallSink, GrpcConfig, GrpcService, Method, RESTRICTED_HEADER_PREFIX};
pub use status::{Code, Status};

#[cfg(test)]
mod service_tests;
