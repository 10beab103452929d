//! Sans-IO protocol state machines: they parse bytes they are handed and
//! produce bytes to write, and never touch a socket, a thread or a clock.
//! They may call `core` only.

pub mod grpc;
pub mod http1;
pub mod http2;
pub mod kserve;
pub mod output;
pub mod restrict;
