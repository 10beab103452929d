//! Core types shared by every layer: datatypes, shapes, tensors, the
//! request/response pair and the error type. Depends on nothing else in the
//! crate.

#![warn(missing_docs)]

pub mod datatype;
pub mod error;
pub mod proto;
pub mod request;
pub mod tensor;

pub use datatype::DataType;
pub use error::{Code, Error, Result};
pub use request::{
    CancelFlag, InferRequest, InferResponse, ParamValue, Parameters, RequestedOutput,
};
pub use tensor::Tensor;
