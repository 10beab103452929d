//! `ModelInferRequest` into [`InferRequest`], and [`InferResponse`] into
//! `ModelInferResponse` / `ModelStreamInferResponse` bytes.
//!
//! Inputs carry their data either in `raw_input_contents` (one entry per
//! input, by position) or in the typed lists of `contents`, never both in
//! one request. Raw contents become the tensors' bytes as they are: when
//! the message was decoded from a [`Bytes`] buffer they are slices of it,
//! not copies. Typed lists are converted to the raw little-endian form (a
//! copy that cannot be avoided); INT8/INT16 and UINT8/UINT16 travel in the
//! 32-bit lists and must fit the narrower type. FP16 and BF16 have no list.
//!
//! Responses are encoded without gathering the output tensors: the message
//! is written up to its outputs' descriptions, and each entry of
//! `raw_output_contents` follows as a small length prefix and the tensor's
//! own [`Bytes`], so a large output reaches the socket without a copy.
//!
//! Error wording and codes follow Triton's gRPC front end, where clients
//! see them.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};

use crate::core::proto::inference::infer_parameter::ParameterChoice;
use crate::core::proto::inference::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use crate::core::proto::inference::model_infer_response::InferOutputTensor;
use crate::core::proto::inference::{
    InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse,
    ModelStreamInferResponse,
};
use crate::core::{
    DataType, Error, InferRequest, InferResponse, ParamValue, Parameters, RequestedOutput, Result,
    ShmRef, Tensor,
};
use crate::protocol::kserve::decode::{leading_int, u64_param};

/// Request parameters starting with `triton_` that clients may send.
pub const RESERVED_PARAMETERS: &[&str] = &[EMPTY_FINAL_RESPONSE_PARAMETER];

/// Asks a stream to send an empty response flagged final once a decoupled
/// model is done with a request.
pub const EMPTY_FINAL_RESPONSE_PARAMETER: &str = "triton_enable_empty_final_response";

/// The response parameter telling a stream client whether a response is
/// the last one for its request.
pub const FINAL_RESPONSE_PARAMETER: &str = "triton_final_response";

/// Raw outputs up to this size are copied into the message buffer: one
/// small copy is cheaper than one more slice in the vectored write.
const INLINE_OUTPUT_BYTES: usize = 2048;

/// A decoded `ModelInferRequest`.
#[derive(Debug)]
pub struct DecodedInfer {
    /// The request for the server.
    pub request: InferRequest,
    /// `triton_enable_empty_final_response` was set.
    pub empty_final_response: bool,
}

/// Reads a model version string as Triton does (C's `stol`: leading
/// blanks, a sign, digits, anything after ignored). Empty means the version
/// the model's policy picks.
pub fn parse_model_version(version: &str) -> Result<Option<i64>> {
    if version.is_empty() {
        return Ok(None);
    }
    let unreadable = || {
        Error::invalid_arg(format!(
            "failed to get model version from specified version string '{version}' (details: stol), version should be an integral value > 0"
        ))
    };
    let Some(Ok(value)) = leading_int(version) else {
        return Err(unreadable());
    };
    if value < 0 {
        return Err(Error::invalid_arg(format!(
            "invalid model version specified '{version}' , version should be an integral value > 0"
        )));
    }
    Ok(Some(value))
}

/// Converts a request. `model_version` is the request's version string,
/// already read with [`parse_model_version`].
pub fn decode_infer_request(
    message: ModelInferRequest,
    model_version: Option<i64>,
) -> Result<DecodedInfer> {
    let ModelInferRequest {
        model_name,
        model_version: _,
        id,
        parameters,
        inputs,
        outputs,
        raw_input_contents,
    } = message;
    let mut request = InferRequest {
        model_version,
        id: (!id.is_empty()).then_some(id),
        ..InferRequest::default()
    };
    let empty_final_response = request_parameters(parameters, &mut request.parameters)?;
    (request.inputs, request.shm_inputs) = decode_inputs(&model_name, inputs, raw_input_contents)?;
    request.outputs = outputs
        .into_iter()
        .map(decode_output)
        .collect::<Result<_>>()?;
    // Triton refuses a tensor named twice as it adds it to the request,
    // before any check against the model; its request-level messages name
    // the request id when there is one.
    let prefix = request
        .id
        .as_deref()
        .map_or_else(String::new, |id| format!("[request id: {id}] "));
    let inputs: Vec<&str> = request.inputs.iter().map(|t| t.name.as_str()).collect();
    let outputs: Vec<&str> = request.outputs.iter().map(|o| o.name.as_str()).collect();
    for (kind, names) in [("input", inputs), ("output", outputs)] {
        if let Some(name) = first_repeat(&names) {
            return Err(Error::invalid_arg(format!(
                "{prefix}{kind} '{name}' already exists in request"
            )));
        }
    }
    request.model_name = model_name;
    Ok(DecodedInfer {
        request,
        empty_final_response,
    })
}

/// The first name that appears a second time.
fn first_repeat<'a>(names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .enumerate()
        .find(|&(i, n)| names[..i].contains(n))
        .map(|(_, n)| *n)
}

fn invalid_type(key: &str, expected: &str) -> Error {
    Error::invalid_arg(format!(
        "invalid value type for '{key}' parameter, expected {expected}."
    ))
}

/// Reads the request parameters into `out`; returns whether the empty
/// final response was asked for.
fn request_parameters(
    params: BTreeMap<String, InferParameter>,
    out: &mut Parameters,
) -> Result<bool> {
    let mut empty_final = false;
    for (key, param) in params {
        let choice = param.parameter_choice;
        let value = match key.as_str() {
            "sequence_id" => match choice {
                Some(ParameterChoice::Int64Param(v)) => ParamValue::Int(v),
                Some(ParameterChoice::StringParam(s)) => ParamValue::String(s),
                _ => return Err(invalid_type(&key, "int64_param or string_param")),
            },
            "sequence_start" | "sequence_end" => match choice {
                Some(ParameterChoice::BoolParam(b)) => ParamValue::Bool(b),
                _ => return Err(invalid_type(&key, "bool_param")),
            },
            "priority" => match choice {
                Some(ParameterChoice::Int64Param(v)) if v < 0 => {
                    return Err(Error::invalid_arg(
                        "invalid value for 'priority', expected value >= 0.",
                    ));
                }
                Some(ParameterChoice::Int64Param(v)) => ParamValue::Int(v),
                Some(ParameterChoice::Uint64Param(v)) => u64_param(v),
                _ => return Err(invalid_type(&key, "int64_param or uint64_param")),
            },
            "timeout" => match choice {
                Some(ParameterChoice::Int64Param(v)) => ParamValue::Int(v),
                _ => return Err(invalid_type(&key, "int64_param")),
            },
            k if k.starts_with("triton_") => {
                if !RESERVED_PARAMETERS.contains(&k) {
                    return Err(Error::invalid_arg(format!(
                        "parameter keys starting with 'triton_' are reserved for Triton usage. Only the following keys starting with 'triton_' are allowed: {}",
                        RESERVED_PARAMETERS.join(" ")
                    )));
                }
                match choice {
                    Some(ParameterChoice::BoolParam(b)) => empty_final = b,
                    _ => return Err(invalid_type(&key, "bool_param")),
                }
                // Read by the stream, not passed to the model.
                continue;
            }
            _ => match choice {
                Some(ParameterChoice::Int64Param(v)) => ParamValue::Int(v),
                Some(ParameterChoice::BoolParam(b)) => ParamValue::Bool(b),
                Some(ParameterChoice::StringParam(s)) => ParamValue::String(s),
                Some(ParameterChoice::DoubleParam(d)) => ParamValue::Double(d),
                _ => {
                    return Err(invalid_type(
                        &key,
                        "int64_param, bool_param, or string_param",
                    ));
                }
            },
        };
        out.set(key, value);
    }
    Ok(empty_final)
}

/// Reads the `shared_memory_*` parameters of a tensor, with Triton's
/// checks; `None` when the tensor does not use shared memory.
fn shared_memory_params(
    name: &str,
    params: &BTreeMap<String, InferParameter>,
) -> Result<Option<ShmRef>> {
    let choice = |key: &str| params.get(key).map(|p| p.parameter_choice.as_ref());
    let region = match choice("shared_memory_region") {
        None => None,
        Some(Some(ParameterChoice::StringParam(s))) => Some(s.clone()),
        Some(_) => {
            return Err(Error::invalid_arg(format!(
                "invalid value type for 'shared_memory_region' parameter for tensor '{name}', expected string_param."
            )));
        }
    };
    let mut numbers = [0u64; 2];
    for (key, slot) in ["shared_memory_offset", "shared_memory_byte_size"]
        .into_iter()
        .zip(&mut numbers)
    {
        match choice(key) {
            None => {}
            Some(_) if region.is_none() => {
                return Err(Error::invalid_arg(format!(
                    "'{key}' can not be specified without 'shared_memory_region' parameter for tensor '{name}'"
                )));
            }
            Some(Some(ParameterChoice::Int64Param(v))) => {
                *slot = u64::try_from(*v).map_err(|_| {
                    Error::invalid_arg(format!(
                        "invalid value for '{key}' parameter for tensor '{name}', expected a value >= 0."
                    ))
                })?;
            }
            Some(_) => {
                return Err(Error::invalid_arg(format!(
                    "invalid value type for '{key}' parameter for tensor '{name}', expected int64_param."
                )));
            }
        }
    }
    match region {
        Some(_) if !params.contains_key("shared_memory_byte_size") => {
            Err(Error::invalid_arg(format!(
                "'shared_memory_byte_size' must be specified along with 'shared_memory_region' parameter for tensor '{name}'"
            )))
        }
        Some(region) => Ok(Some(ShmRef {
            region,
            offset: numbers[0],
            byte_size: numbers[1],
        })),
        None => Ok(None),
    }
}

/// Inputs the client placed in shared memory, by name.
type ShmInputs = Vec<(String, ShmRef)>;

fn decode_inputs(
    model: &str,
    inputs: Vec<InferInputTensor>,
    raw_input_contents: Vec<Bytes>,
) -> Result<(Vec<Tensor>, ShmInputs)> {
    let raw_count = raw_input_contents.len();
    let mut in_shm = Vec::new();
    let mut raw = raw_input_contents.into_iter();
    let mut raw_used = 0usize;
    let mut tensors = Vec::with_capacity(inputs.len());
    for input in inputs {
        let InferInputTensor {
            name,
            datatype,
            shape,
            parameters,
            contents,
        } = input;
        let shm = shared_memory_params(&name, &parameters)?;
        if shm.is_some() && contents.is_some() {
            return Err(Error::invalid_arg(format!(
                "unexpected 'content' provided when using shared memory for input tensor '{name}' for model '{model}'"
            )));
        }
        let datatype = DataType::from_wire(&datatype)
            .ok_or_else(|| Error::invalid_arg(format!("invalid datatype for input {name}")))?;
        if let Some(shm) = shm {
            // The data is read from the region once the server looks it up.
            in_shm.push((name.clone(), shm));
            tensors.push(Tensor {
                name,
                datatype,
                shape,
                data: Bytes::new(),
            });
            continue;
        }
        let data = match contents {
            Some(_) if raw_count > 0 => {
                return Err(Error::invalid_arg(format!(
                    "contents field must not be specified when using raw_input_contents for '{name}' for model '{model}'"
                )));
            }
            Some(contents) => typed_contents(&name, model, datatype, contents)?,
            None => match raw.next() {
                Some(bytes) => {
                    raw_used += 1;
                    bytes
                }
                None => {
                    return Err(Error::invalid_arg(format!(
                        "unable to find data for input tensor '{name}' for model '{model}' in request."
                    )));
                }
            },
        };
        tensors.push(Tensor {
            name,
            datatype,
            shape,
            data,
        });
    }
    if raw_used < raw_count {
        return Err(Error::invalid_arg(format!(
            "raw_input_contents has {raw_count} entries but the request has {raw_used} inputs for model '{model}'; give one entry per input, in input order"
        )));
    }
    Ok((tensors, in_shm))
}

/// Converts typed contents to raw bytes. Exactly one list may hold data,
/// and it must be the list of the input's datatype.
fn typed_contents(
    name: &str,
    model: &str,
    datatype: DataType,
    contents: InferTensorContents,
) -> Result<Bytes> {
    let InferTensorContents {
        bool_contents,
        int_contents,
        int64_contents,
        uint_contents,
        uint64_contents,
        fp32_contents,
        fp64_contents,
        bytes_contents,
    } = contents;
    let mut data: Option<Vec<u8>> = None;
    let claim = |data: &Option<Vec<u8>>, carried: DataType| -> Result<()> {
        if data.is_some() {
            return Err(Error::invalid_arg(format!(
                "unexpected explicit tensor data for input tensor '{name}' for model '{model}', binary data was already supplied."
            )));
        }
        if carried != datatype {
            return Err(Error::invalid_arg(format!(
                "unexpected explicit tensor data for input tensor '{name}' for model '{model}' of type '{carried}', expected datatype '{datatype}'"
            )));
        }
        Ok(())
    };
    let out_of_range = |v: i64, list: &str| {
        Error::invalid_arg(format!(
            "value {v} in {list} of input tensor '{name}' for model '{model}' is out of range for {datatype}"
        ))
    };
    if !bool_contents.is_empty() {
        claim(&data, DataType::Bool)?;
        data = Some(bool_contents.iter().map(|&b| u8::from(b)).collect());
    }
    if !int_contents.is_empty() {
        let carried = match datatype {
            DataType::Int8 | DataType::Int16 => datatype,
            _ => DataType::Int32,
        };
        claim(&data, carried)?;
        let mut v = Vec::with_capacity(int_contents.len() * 4);
        for &x in &int_contents {
            match carried {
                DataType::Int8 => v.extend_from_slice(
                    &i8::try_from(x)
                        .map_err(|_| out_of_range(x.into(), "int_contents"))?
                        .to_le_bytes(),
                ),
                DataType::Int16 => v.extend_from_slice(
                    &i16::try_from(x)
                        .map_err(|_| out_of_range(x.into(), "int_contents"))?
                        .to_le_bytes(),
                ),
                _ => v.extend_from_slice(&x.to_le_bytes()),
            }
        }
        data = Some(v);
    }
    if !int64_contents.is_empty() {
        claim(&data, DataType::Int64)?;
        data = Some(
            int64_contents
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        );
    }
    if !uint_contents.is_empty() {
        let carried = match datatype {
            DataType::Uint8 | DataType::Uint16 => datatype,
            _ => DataType::Uint32,
        };
        claim(&data, carried)?;
        let mut v = Vec::with_capacity(uint_contents.len() * 4);
        for &x in &uint_contents {
            match carried {
                DataType::Uint8 => {
                    v.push(u8::try_from(x).map_err(|_| out_of_range(x.into(), "uint_contents"))?)
                }
                DataType::Uint16 => v.extend_from_slice(
                    &u16::try_from(x)
                        .map_err(|_| out_of_range(x.into(), "uint_contents"))?
                        .to_le_bytes(),
                ),
                _ => v.extend_from_slice(&x.to_le_bytes()),
            }
        }
        data = Some(v);
    }
    if !uint64_contents.is_empty() {
        claim(&data, DataType::Uint64)?;
        data = Some(
            uint64_contents
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        );
    }
    if !fp32_contents.is_empty() {
        claim(&data, DataType::Fp32)?;
        data = Some(fp32_contents.iter().flat_map(|x| x.to_le_bytes()).collect());
    }
    if !fp64_contents.is_empty() {
        claim(&data, DataType::Fp64)?;
        data = Some(fp64_contents.iter().flat_map(|x| x.to_le_bytes()).collect());
    }
    if !bytes_contents.is_empty() {
        claim(&data, DataType::Bytes)?;
        let total: usize = bytes_contents.iter().map(|e| e.len() + 4).sum();
        let mut v = Vec::with_capacity(total);
        for element in &bytes_contents {
            let len = u32::try_from(element.len()).map_err(|_| {
                Error::invalid_arg(format!(
                    "BYTES element of {} bytes in input tensor '{name}' for model '{model}' is longer than 4 GiB",
                    element.len()
                ))
            })?;
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(element);
        }
        data = Some(v);
    }
    Ok(data.map(Bytes::from).unwrap_or_default())
}

fn decode_output(output: InferRequestedOutputTensor) -> Result<RequestedOutput> {
    let InferRequestedOutputTensor { name, parameters } = output;
    let shm = shared_memory_params(&name, &parameters)?;
    let class_count = match parameters.get("classification") {
        None => None,
        Some(p) => match p.parameter_choice {
            Some(ParameterChoice::Int64Param(n)) if n > 0 => {
                Some(u32::try_from(n).unwrap_or(u32::MAX))
            }
            Some(ParameterChoice::Int64Param(_)) => {
                return Err(Error::invalid_arg(
                    "invalid value for 'classification' parameter, expected >= 0",
                ));
            }
            _ => {
                return Err(Error::invalid_arg(
                    "invalid value type for 'classification' parameter, expected int64_param",
                ));
            }
        },
    };
    if shm.is_some() && class_count.is_some() {
        return Err(Error::invalid_arg(
            "output can't set both 'shared_memory_region' and 'classification'",
        ));
    }
    let mut requested = RequestedOutput {
        name,
        class_count: class_count.unwrap_or(0),
        shm,
        ..RequestedOutput::default()
    };
    for (key, p) in parameters {
        // `binary_data` is an HTTP notion: gRPC outputs are always raw.
        if key == "classification" || key == "binary_data" || key.starts_with("shared_memory_") {
            continue;
        }
        if let Some(v) = param_value(p) {
            requested.parameters.set(key, v);
        }
    }
    Ok(requested)
}

/// A parameter as a core value (`None` when unset).
pub fn param_value(p: InferParameter) -> Option<ParamValue> {
    Some(match p.parameter_choice? {
        ParameterChoice::BoolParam(b) => ParamValue::Bool(b),
        ParameterChoice::Int64Param(v) => ParamValue::Int(v),
        ParameterChoice::StringParam(s) => ParamValue::String(s),
        ParameterChoice::DoubleParam(d) => ParamValue::Double(d),
        ParameterChoice::Uint64Param(v) => u64_param(v),
    })
}

/// A core value as a parameter.
pub fn infer_parameter(v: &ParamValue) -> InferParameter {
    InferParameter {
        parameter_choice: Some(match v {
            ParamValue::Bool(b) => ParameterChoice::BoolParam(*b),
            ParamValue::Int(n) => ParameterChoice::Int64Param(*n),
            ParamValue::Double(d) => ParameterChoice::DoubleParam(*d),
            ParamValue::String(s) => ParameterChoice::StringParam(s.clone()),
        }),
    }
}

fn bool_parameter(b: bool) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::BoolParam(b)),
    }
}

/// Encodes a response as `ModelInferResponse` bytes, in chunks whose
/// concatenation is the message. `final_response` adds the stream's
/// `triton_final_response` flag.
pub fn encode_infer_response(response: &InferResponse, final_response: bool) -> Vec<Bytes> {
    let mut parameters: BTreeMap<String, InferParameter> = response
        .parameters
        .0
        .iter()
        .map(|(k, v)| (k.clone(), infer_parameter(v)))
        .collect();
    if final_response {
        parameters.insert(FINAL_RESPONSE_PARAMETER.to_owned(), bool_parameter(true));
    }
    let head = ModelInferResponse {
        model_name: response.model_name.clone(),
        model_version: response.model_version.to_string(),
        id: response.id.clone().unwrap_or_default(),
        parameters,
        outputs: response
            .outputs
            .iter()
            .map(|t| InferOutputTensor {
                name: t.name.clone(),
                datatype: t.datatype.wire_name().to_owned(),
                shape: t.shape.clone(),
                ..InferOutputTensor::default()
            })
            .collect(),
        raw_output_contents: Vec::new(),
    };
    let inline: usize = response
        .outputs
        .iter()
        .map(|t| {
            11 + if t.data.len() <= INLINE_OUTPUT_BYTES {
                t.data.len()
            } else {
                0
            }
        })
        .sum();
    let mut buf = Vec::with_capacity(head.encoded_len() + inline);
    head.encode(&mut buf)
        .expect("a Vec grows to hold any message");
    let mut chunks = Vec::with_capacity(1 + 2 * response.outputs.len());
    for t in &response.outputs {
        encode_key(6, WireType::LengthDelimited, &mut buf);
        encode_varint(t.data.len() as u64, &mut buf);
        if t.data.len() <= INLINE_OUTPUT_BYTES {
            buf.extend_from_slice(&t.data);
        } else {
            chunks.push(Bytes::from(std::mem::take(&mut buf)));
            chunks.push(t.data.clone());
        }
    }
    if !buf.is_empty() {
        chunks.push(Bytes::from(buf));
    }
    chunks
}

/// Wraps an encoded `ModelInferResponse` as the `infer_response` of a
/// `ModelStreamInferResponse`, without copying it.
pub fn wrap_stream_response(infer_response: Vec<Bytes>) -> Vec<Bytes> {
    let len: usize = infer_response.iter().map(Bytes::len).sum();
    let mut head = Vec::with_capacity(11);
    encode_key(2, WireType::LengthDelimited, &mut head);
    encode_varint(len as u64, &mut head);
    let mut out = Vec::with_capacity(infer_response.len() + 1);
    out.push(Bytes::from(head));
    out.extend(infer_response);
    out
}

/// What a stream error response says about the request that failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailedRequest {
    /// The request's id.
    pub id: String,
    /// Its model name and version string, once the request was read far
    /// enough to run (Triton repeats them when inference itself failed).
    pub model: Option<(String, String)>,
}

/// A `ModelStreamInferResponse` reporting one request's error in-band.
/// When inference itself failed, the response also names the model and is
/// flagged final, as Triton's are.
pub fn encode_stream_error(message: &str, failed: &FailedRequest) -> Bytes {
    let mut infer_response = ModelInferResponse {
        id: failed.id.clone(),
        ..ModelInferResponse::default()
    };
    if let Some((name, version)) = &failed.model {
        infer_response.model_name = name.clone();
        infer_response.model_version = version.clone();
        infer_response
            .parameters
            .insert(FINAL_RESPONSE_PARAMETER.to_owned(), bool_parameter(true));
    }
    let response = ModelStreamInferResponse {
        error_message: message.to_owned(),
        infer_response: Some(infer_response),
    };
    Bytes::from(response.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Code;

    fn param(choice: ParameterChoice) -> InferParameter {
        InferParameter {
            parameter_choice: Some(choice),
        }
    }

    fn raw_request(inputs: &[(&str, &str, Vec<i64>)], raw: Vec<Bytes>) -> ModelInferRequest {
        ModelInferRequest {
            model_name: "m".to_owned(),
            inputs: inputs
                .iter()
                .map(|(n, dt, shape)| InferInputTensor {
                    name: (*n).to_owned(),
                    datatype: (*dt).to_owned(),
                    shape: shape.clone(),
                    ..InferInputTensor::default()
                })
                .collect(),
            raw_input_contents: raw,
            ..ModelInferRequest::default()
        }
    }

    fn err(message: ModelInferRequest) -> Error {
        decode_infer_request(message, None).unwrap_err()
    }

    #[test]
    fn versions() {
        assert_eq!(parse_model_version("").unwrap(), None);
        assert_eq!(parse_model_version("3").unwrap(), Some(3));
        assert_eq!(parse_model_version(" +7abc").unwrap(), Some(7));
        assert_eq!(parse_model_version("0").unwrap(), Some(0));
        assert_eq!(
            parse_model_version("abc").unwrap_err().message(),
            "failed to get model version from specified version string 'abc' (details: stol), version should be an integral value > 0"
        );
        assert!(parse_model_version("99999999999999999999").is_err());
        let e = parse_model_version("-1").unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (
                Code::InvalidArg,
                "invalid model version specified '-1' , version should be an integral value > 0"
            )
        );
    }

    #[test]
    fn raw_inputs_are_not_copied() {
        let wire = raw_request(
            &[("A", "INT32", vec![1, 2]), ("B", "BYTES", vec![1])],
            vec![
                Bytes::from_static(&[1, 0, 0, 0, 2, 0, 0, 0]),
                Bytes::from_static(&[2, 0, 0, 0, b'h', b'i']),
            ],
        )
        .encode_to_vec();
        let buffer = Bytes::from(wire);
        let message = ModelInferRequest::decode(buffer.clone()).unwrap();
        let decoded = decode_infer_request(message, Some(2)).unwrap();
        let r = &decoded.request;
        assert_eq!((r.model_name.as_str(), r.model_version), ("m", Some(2)));
        assert_eq!(r.inputs[0].datatype, DataType::Int32);
        assert_eq!(r.inputs[0].shape, vec![1, 2]);
        assert_eq!(&r.inputs[1].data[..], b"\x02\0\0\0hi");
        let range = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
        for t in &r.inputs {
            assert!(
                range.contains(&(t.data.as_ptr() as usize)),
                "{} was copied",
                t.name
            );
        }
    }

    #[test]
    fn raw_input_faults() {
        let e = err(raw_request(&[("A", "INT32", vec![1])], vec![]));
        assert_eq!(
            e.message(),
            "unable to find data for input tensor 'A' for model 'm' in request."
        );
        let e = err(raw_request(
            &[("A", "INT32", vec![1])],
            vec![Bytes::new(), Bytes::new()],
        ));
        assert!(
            e.message()
                .starts_with("raw_input_contents has 2 entries but the request has 1 inputs")
        );
        let mut mixed = raw_request(
            &[("A", "INT32", vec![1]), ("B", "INT32", vec![1])],
            vec![Bytes::from_static(&[0; 4])],
        );
        mixed.inputs[1].contents = Some(InferTensorContents {
            int_contents: vec![1],
            ..InferTensorContents::default()
        });
        assert_eq!(
            err(mixed).message(),
            "contents field must not be specified when using raw_input_contents for 'B' for model 'm'"
        );
        let e = err(raw_request(&[("A", "INT33", vec![1])], vec![Bytes::new()]));
        assert_eq!(e.message(), "invalid datatype for input A");
    }

    fn typed(datatype: &str, contents: InferTensorContents) -> Result<Bytes> {
        let mut r = raw_request(&[("X", datatype, vec![2])], vec![]);
        r.inputs[0].contents = Some(contents);
        decode_infer_request(r, None).map(|d| d.request.inputs[0].data.clone())
    }

    #[test]
    fn typed_contents_for_every_datatype() {
        let c = InferTensorContents::default;
        let cases: Vec<(&str, InferTensorContents, Vec<u8>)> = vec![
            (
                "BOOL",
                InferTensorContents {
                    bool_contents: vec![true, false],
                    ..c()
                },
                vec![1, 0],
            ),
            (
                "INT8",
                InferTensorContents {
                    int_contents: vec![-1, 2],
                    ..c()
                },
                vec![0xff, 2],
            ),
            (
                "INT16",
                InferTensorContents {
                    int_contents: vec![-2, 3],
                    ..c()
                },
                vec![0xfe, 0xff, 3, 0],
            ),
            (
                "INT32",
                InferTensorContents {
                    int_contents: vec![-3, 4],
                    ..c()
                },
                [(-3i32).to_le_bytes(), 4i32.to_le_bytes()].concat(),
            ),
            (
                "INT64",
                InferTensorContents {
                    int64_contents: vec![-4, 5],
                    ..c()
                },
                [(-4i64).to_le_bytes(), 5i64.to_le_bytes()].concat(),
            ),
            (
                "UINT8",
                InferTensorContents {
                    uint_contents: vec![255, 6],
                    ..c()
                },
                vec![255, 6],
            ),
            (
                "UINT16",
                InferTensorContents {
                    uint_contents: vec![65535, 7],
                    ..c()
                },
                vec![0xff, 0xff, 7, 0],
            ),
            (
                "UINT32",
                InferTensorContents {
                    uint_contents: vec![u32::MAX, 8],
                    ..c()
                },
                [u32::MAX.to_le_bytes(), 8u32.to_le_bytes()].concat(),
            ),
            (
                "UINT64",
                InferTensorContents {
                    uint64_contents: vec![u64::MAX, 9],
                    ..c()
                },
                [u64::MAX.to_le_bytes(), 9u64.to_le_bytes()].concat(),
            ),
            (
                "FP32",
                InferTensorContents {
                    fp32_contents: vec![1.5, -0.25],
                    ..c()
                },
                [1.5f32.to_le_bytes(), (-0.25f32).to_le_bytes()].concat(),
            ),
            (
                "FP64",
                InferTensorContents {
                    fp64_contents: vec![2.5, 1e300],
                    ..c()
                },
                [2.5f64.to_le_bytes(), 1e300f64.to_le_bytes()].concat(),
            ),
            (
                "BYTES",
                InferTensorContents {
                    bytes_contents: vec![Bytes::from_static(b"ab"), Bytes::new()],
                    ..c()
                },
                vec![2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0],
            ),
        ];
        for (dt, contents, expected) in cases {
            assert_eq!(&typed(dt, contents).unwrap()[..], &expected[..], "{dt}");
        }
        // Present but empty contents: no data (a zero-element tensor).
        assert!(typed("FP32", c()).unwrap().is_empty());
    }

    #[test]
    fn typed_content_faults() {
        let c = InferTensorContents::default;
        let e = typed(
            "FP16",
            InferTensorContents {
                fp32_contents: vec![1.0],
                ..c()
            },
        )
        .unwrap_err();
        assert_eq!(
            e.message(),
            "unexpected explicit tensor data for input tensor 'X' for model 'm' of type 'FP32', expected datatype 'FP16'"
        );
        let e = typed(
            "BF16",
            InferTensorContents {
                uint_contents: vec![1],
                ..c()
            },
        )
        .unwrap_err();
        assert!(
            e.message()
                .ends_with("of type 'UINT32', expected datatype 'BF16'")
        );
        let e = typed(
            "INT32",
            InferTensorContents {
                int_contents: vec![1],
                int64_contents: vec![2],
                ..c()
            },
        )
        .unwrap_err();
        assert_eq!(
            e.message(),
            "unexpected explicit tensor data for input tensor 'X' for model 'm', binary data was already supplied."
        );
        let e = typed(
            "INT8",
            InferTensorContents {
                int_contents: vec![128],
                ..c()
            },
        )
        .unwrap_err();
        assert_eq!(
            e.message(),
            "value 128 in int_contents of input tensor 'X' for model 'm' is out of range for INT8"
        );
        assert!(
            typed(
                "UINT16",
                InferTensorContents {
                    uint_contents: vec![65536],
                    ..c()
                }
            )
            .is_err()
        );
        assert!(
            typed(
                "INT16",
                InferTensorContents {
                    int_contents: vec![-32769],
                    ..c()
                }
            )
            .is_err()
        );
    }

    #[test]
    fn tensors_named_twice_already_exist_in_request() {
        let four = || Bytes::from_static(&[0; 4]);
        let mut r = raw_request(&[("A", "INT32", vec![1])], vec![four()]);
        r.outputs = vec![
            InferRequestedOutputTensor {
                name: "OUTPUT0".to_owned(),
                ..InferRequestedOutputTensor::default()
            };
            2
        ];
        let e = err(r);
        assert_eq!(
            (e.code(), e.message()),
            (
                Code::InvalidArg,
                "output 'OUTPUT0' already exists in request"
            )
        );
        let mut r = raw_request(
            &[("A", "INT32", vec![1]), ("A", "INT32", vec![1])],
            vec![four(), four()],
        );
        r.id = "r1".to_owned();
        assert_eq!(
            err(r).message(),
            "[request id: r1] input 'A' already exists in request"
        );
    }

    #[test]
    fn request_parameters_and_outputs() {
        let mut r = raw_request(&[], vec![]);
        r.id = "req-1".to_owned();
        r.parameters = BTreeMap::from([
            (
                "sequence_id".to_owned(),
                param(ParameterChoice::StringParam("s".into())),
            ),
            (
                "sequence_start".to_owned(),
                param(ParameterChoice::BoolParam(true)),
            ),
            (
                "priority".to_owned(),
                param(ParameterChoice::Uint64Param(u64::MAX)),
            ),
            (
                "timeout".to_owned(),
                param(ParameterChoice::Int64Param(100)),
            ),
            (
                "custom".to_owned(),
                param(ParameterChoice::DoubleParam(0.5)),
            ),
            (
                EMPTY_FINAL_RESPONSE_PARAMETER.to_owned(),
                param(ParameterChoice::BoolParam(true)),
            ),
        ]);
        r.outputs = vec![InferRequestedOutputTensor {
            name: "OUT".to_owned(),
            parameters: BTreeMap::from([
                (
                    "classification".to_owned(),
                    param(ParameterChoice::Int64Param(3)),
                ),
                (
                    "binary_data".to_owned(),
                    param(ParameterChoice::BoolParam(true)),
                ),
                (
                    "note".to_owned(),
                    param(ParameterChoice::StringParam("x".into())),
                ),
            ]),
        }];
        let d = decode_infer_request(r, None).unwrap();
        assert!(d.empty_final_response);
        let p = &d.request.parameters;
        assert_eq!(d.request.id.as_deref(), Some("req-1"));
        assert_eq!(p.get("sequence_id"), Some(&ParamValue::String("s".into())));
        assert_eq!(p.get("sequence_start"), Some(&ParamValue::Bool(true)));
        assert_eq!(
            p.get("priority"),
            Some(&ParamValue::String(u64::MAX.to_string()))
        );
        assert_eq!(p.get("timeout"), Some(&ParamValue::Int(100)));
        assert_eq!(p.get("custom"), Some(&ParamValue::Double(0.5)));
        assert_eq!(p.get(EMPTY_FINAL_RESPONSE_PARAMETER), None);
        let o = &d.request.outputs[0];
        assert_eq!((o.name.as_str(), o.class_count), ("OUT", 3));
        assert_eq!(
            o.parameters.0,
            vec![("note".to_owned(), ParamValue::String("x".into()))]
        );

        let faults: Vec<(&str, ParameterChoice, &str)> = vec![
            (
                "sequence_id",
                ParameterChoice::BoolParam(true),
                "invalid value type for 'sequence_id' parameter, expected int64_param or string_param.",
            ),
            (
                "sequence_end",
                ParameterChoice::Int64Param(1),
                "invalid value type for 'sequence_end' parameter, expected bool_param.",
            ),
            (
                "priority",
                ParameterChoice::Int64Param(-1),
                "invalid value for 'priority', expected value >= 0.",
            ),
            (
                "priority",
                ParameterChoice::StringParam("1".into()),
                "invalid value type for 'priority' parameter, expected int64_param or uint64_param.",
            ),
            (
                "timeout",
                ParameterChoice::Uint64Param(1),
                "invalid value type for 'timeout' parameter, expected int64_param.",
            ),
            (
                "triton_other",
                ParameterChoice::BoolParam(true),
                "parameter keys starting with 'triton_' are reserved for Triton usage. Only the following keys starting with 'triton_' are allowed: triton_enable_empty_final_response",
            ),
            (
                EMPTY_FINAL_RESPONSE_PARAMETER,
                ParameterChoice::Int64Param(1),
                "invalid value type for 'triton_enable_empty_final_response' parameter, expected bool_param.",
            ),
            (
                "other",
                ParameterChoice::Uint64Param(1),
                "invalid value type for 'other' parameter, expected int64_param, bool_param, or string_param.",
            ),
        ];
        for (key, choice, message) in faults {
            let mut r = raw_request(&[], vec![]);
            r.parameters.insert(key.to_owned(), param(choice));
            let e = err(r);
            assert_eq!(
                (e.code(), e.message()),
                (Code::InvalidArg, message),
                "{key}"
            );
        }
    }

    #[test]
    fn output_faults_and_shared_memory() {
        let output = |params: Vec<(&str, ParameterChoice)>| {
            let mut r = raw_request(&[], vec![]);
            r.outputs = vec![InferRequestedOutputTensor {
                name: "O".to_owned(),
                parameters: params
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), param(v)))
                    .collect(),
            }];
            err(r)
        };
        assert_eq!(
            output(vec![(
                "classification",
                ParameterChoice::StringParam("2".into())
            )])
            .message(),
            "invalid value type for 'classification' parameter, expected int64_param"
        );
        assert_eq!(
            output(vec![("classification", ParameterChoice::Int64Param(0))]).message(),
            "invalid value for 'classification' parameter, expected >= 0"
        );
        assert_eq!(
            output(vec![
                (
                    "shared_memory_region",
                    ParameterChoice::StringParam("r".into())
                ),
                ("shared_memory_byte_size", ParameterChoice::Int64Param(4)),
                ("classification", ParameterChoice::Int64Param(1)),
            ])
            .message(),
            "output can't set both 'shared_memory_region' and 'classification'"
        );
        let e = output(vec![
            (
                "shared_memory_region",
                ParameterChoice::StringParam("r".into()),
            ),
            ("shared_memory_byte_size", ParameterChoice::Int64Param(-4)),
        ]);
        assert_eq!(
            (e.code(), e.message()),
            (
                Code::InvalidArg,
                "invalid value for 'shared_memory_byte_size' parameter for tensor 'O', expected a value >= 0."
            )
        );
        assert_eq!(
            output(vec![(
                "shared_memory_offset",
                ParameterChoice::Int64Param(0)
            )])
            .message(),
            "'shared_memory_offset' can not be specified without 'shared_memory_region' parameter for tensor 'O'"
        );
        assert_eq!(
            output(vec![(
                "shared_memory_region",
                ParameterChoice::StringParam("r".into())
            )])
            .message(),
            "'shared_memory_byte_size' must be specified along with 'shared_memory_region' parameter for tensor 'O'"
        );
        assert_eq!(
            output(vec![(
                "shared_memory_region",
                ParameterChoice::Int64Param(1)
            )])
            .message(),
            "invalid value type for 'shared_memory_region' parameter for tensor 'O', expected string_param."
        );

        let mut r = raw_request(&[("A", "INT32", vec![1])], vec![]);
        r.inputs[0].parameters = BTreeMap::from([
            (
                "shared_memory_region".to_owned(),
                param(ParameterChoice::StringParam("r".into())),
            ),
            (
                "shared_memory_byte_size".to_owned(),
                param(ParameterChoice::StringParam("4".into())),
            ),
        ]);
        assert_eq!(
            err(r.clone()).message(),
            "invalid value type for 'shared_memory_byte_size' parameter for tensor 'A', expected int64_param."
        );
        r.inputs[0].parameters.insert(
            "shared_memory_byte_size".to_owned(),
            param(ParameterChoice::Int64Param(4)),
        );
        let decoded = decode_infer_request(r.clone(), None).unwrap().request;
        assert!(decoded.inputs[0].data.is_empty());
        assert_eq!(
            decoded.shm_inputs,
            vec![(
                "A".to_owned(),
                ShmRef {
                    region: "r".into(),
                    offset: 0,
                    byte_size: 4
                }
            )]
        );
        r.inputs[0].contents = Some(InferTensorContents::default());
        assert_eq!(
            err(r).message(),
            "unexpected 'content' provided when using shared memory for input tensor 'A' for model 'm'"
        );
    }

    fn join(chunks: &[Bytes]) -> Bytes {
        Bytes::from(chunks.iter().flat_map(|c| c.to_vec()).collect::<Vec<u8>>())
    }

    #[test]
    fn responses_keep_outputs_aligned_and_uncopied() {
        let big = Bytes::from(vec![7u8; 100_000]);
        let response = InferResponse {
            model_name: "m".to_owned(),
            model_version: 3,
            id: Some("r1".to_owned()),
            outputs: vec![
                Tensor {
                    name: "SMALL".to_owned(),
                    datatype: DataType::Int32,
                    shape: vec![1, 2],
                    data: Bytes::from_static(&[1, 0, 0, 0, 2, 0, 0, 0]),
                },
                Tensor {
                    name: "EMPTY".to_owned(),
                    datatype: DataType::Fp32,
                    shape: vec![0],
                    data: Bytes::new(),
                },
                Tensor {
                    name: "BIG".to_owned(),
                    datatype: DataType::Uint8,
                    shape: vec![100_000],
                    data: big.clone(),
                },
            ],
            parameters: Parameters(vec![("p".to_owned(), ParamValue::Int(1))]),
        };
        let chunks = encode_infer_response(&response, false);
        assert!(
            chunks.iter().any(|c| c.as_ptr() == big.as_ptr()),
            "the large output travels as its own chunk"
        );
        let decoded = ModelInferResponse::decode(join(&chunks)).unwrap();
        assert_eq!(decoded.model_name, "m");
        assert_eq!(decoded.model_version, "3");
        assert_eq!(decoded.id, "r1");
        assert_eq!(
            decoded.parameters["p"],
            param(ParameterChoice::Int64Param(1))
        );
        assert!(!decoded.parameters.contains_key(FINAL_RESPONSE_PARAMETER));
        let names: Vec<&str> = decoded.outputs.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["SMALL", "EMPTY", "BIG"]);
        assert_eq!(decoded.outputs[0].datatype, "INT32");
        assert_eq!(decoded.outputs[0].shape, vec![1, 2]);
        assert_eq!(decoded.raw_output_contents.len(), 3);
        assert_eq!(decoded.raw_output_contents[0], response.outputs[0].data);
        assert!(decoded.raw_output_contents[1].is_empty());
        assert_eq!(decoded.raw_output_contents[2], big);
    }

    #[test]
    fn stream_responses() {
        let response = InferResponse {
            model_name: "m".to_owned(),
            model_version: 1,
            ..InferResponse::default()
        };
        let wrapped = wrap_stream_response(encode_infer_response(&response, true));
        let s = ModelStreamInferResponse::decode(join(&wrapped)).unwrap();
        assert!(s.error_message.is_empty());
        let inner = s.infer_response.unwrap();
        assert_eq!(inner.model_name, "m");
        assert_eq!(
            inner.parameters[FINAL_RESPONSE_PARAMETER],
            param(ParameterChoice::BoolParam(true))
        );

        let early = ModelStreamInferResponse::decode(encode_stream_error(
            "bad input",
            &FailedRequest {
                id: "7".to_owned(),
                model: None,
            },
        ))
        .unwrap();
        assert_eq!(early.error_message, "bad input");
        let inner = early.infer_response.unwrap();
        assert_eq!(inner.id, "7");
        assert!(inner.parameters.is_empty());

        let late = ModelStreamInferResponse::decode(encode_stream_error(
            "backend failed",
            &FailedRequest {
                id: String::new(),
                model: Some(("m".to_owned(), "2".to_owned())),
            },
        ))
        .unwrap();
        let inner = late.infer_response.unwrap();
        assert_eq!(
            (inner.model_name.as_str(), inner.model_version.as_str()),
            ("m", "2")
        );
        assert!(inner.parameters.contains_key(FINAL_RESPONSE_PARAMETER));
    }
}
