//! The KServe v2 protocol with Triton's extensions, over HTTP/REST.
//!
//! The codec is sans-IO and calls `core` only: [`decode`] turns a request
//! body (JSON, binary tensor data extension, or a raw body) into an
//! [`InferRequest`](crate::core::InferRequest), [`encode`] turns an
//! [`InferResponse`](crate::core::InferResponse) into body chunks, and
//! [`json`] holds the JSON writing both share. [`control`] reads and
//! writes the bodies of the other endpoints in terms of the server's
//! types, [`shm`] those of the shared-memory extension, and [`rest`] is the
//! router that maps REST paths onto
//! [`crate::server::Server`] calls and implements
//! [`crate::net::HttpService`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod control;
pub mod decode;
pub mod encode;
pub mod json;
pub mod rest;
pub mod shm;

pub use decode::{
    DecodedRequest, HEADER_LENGTH_HEADER, ResponseFormat, decode_infer_request,
    decode_raw_infer_request, json_header_length,
};
pub use encode::{EncodedResponse, encode_infer_response};
pub use rest::RestService;

#[cfg(test)]
mod codec_tests;
