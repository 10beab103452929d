//! Sans-IO HTTP/2 server connection (RFC 9113).

mod connection;
pub mod error;
pub mod frame;
pub mod hpack;
mod stream;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use connection::{Config, Connection, Event, SendError, header};
pub use error::{ConnectionError, Error, ErrorCode, StreamError};
pub use frame::StreamId;
pub use stream::State;
