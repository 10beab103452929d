//! Core types shared by every layer: datatypes, shapes, tensors, the
//! request/response pair, the error type and the description of tensor
//! bytes that live outside the request body (`memory`). Depends on nothing else in the
//! crate.

#![warn(missing_docs)]

pub mod datatype;
pub mod error;
pub mod memory;
pub mod proto;
pub mod request;
pub mod response;
pub mod tensor;

pub use datatype::DataType;
pub use error::{Code, Error, Result};
pub use memory::{Bindings, DeviceBytes, NO_BINDINGS, OutputSink};
pub use request::{
    CancelFlag, InferRequest, InferResponse, ParamValue, Parameters, RequestedOutput, ShmRef,
};
pub use response::{Delivery, ResponseSender, ResponseSink};
pub use tensor::Tensor;
