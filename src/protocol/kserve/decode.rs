//! Decoding a KServe v2 REST inference request into a [`InferRequest`].
//!
//! Three body shapes reach the decoder:
//!
//! * plain JSON (no `Inference-Header-Content-Length`): every input carries
//!   its elements in `data`;
//! * the binary tensor data extension: a JSON header of
//!   `Inference-Header-Content-Length` bytes, followed by the raw bytes of
//!   every input that declares `parameters.binary_data_size`, in input
//!   order. Those tensors are slices of the request body, not copies;
//! * a raw body (`Inference-Header-Content-Length: 0`): the whole body is
//!   the one input of a single-input model, typed and shaped from the
//!   model's configuration ([`decode_raw_infer_request`]).
//!
//! JSON is decoded in one streaming pass: `data` arrays are converted to
//! little-endian tensor bytes as they are parsed when the input's
//! `datatype` came before them (what clients send), and kept as a compact
//! list of scalars otherwise. Structural checks then run in the order
//! Triton runs them, so a request with several faults reports the same
//! one Triton would.
//!
//! Error wording follows Triton's HTTP front end (accessor failures read
//! `Unable to parse '<field>': attempt to access JSON ...`), which clients
//! and Triton's own tests match on. The codes do not always: Triton answers
//! JSON syntax errors, accessor failures and element-count mismatches with
//! INTERNAL (HTTP 500), although the request is at fault. nereid answers
//! them with [`Code::InvalidArg`] (400, as the KServe protocol asks for a
//! malformed request), except a `shape` element that is not an unsigned
//! integer (a negative dimension), whose 500 Triton's own test pins.
//! `data` nested deeper than Triton's limit of [`MAX_JSON_DEPTH`] levels is
//! refused with Triton's message. Triton stores JSON integers that do not
//! fit the input's type truncated; nereid rejects them with an
//! [`Code::InvalidArg`] error naming the value, the type and the input.
//! Unlike Triton, FP16 and BF16 inputs may be given as JSON numbers.

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use half::{bf16, f16};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::core::proto::ModelConfig;
use crate::core::{
    Code, DataType, Error, InferRequest, ParamValue, Parameters, RequestedOutput, Result, ShmRef,
    Tensor,
};

/// The header naming the length of the JSON part of a binary request or
/// response.
pub const HEADER_LENGTH_HEADER: &str = "Inference-Header-Content-Length";

const NON_STRING: &str = "attempt to access JSON non-string as string";
const NON_BOOL: &str = "attempt to access JSON non-boolean as boolean";
const NON_INT: &str = "attempt to access JSON non-signed-integer as signed-integer";
const NON_UINT: &str = "attempt to access JSON non-unsigned-integer as unsigned-integer";
const NON_NUMBER: &str = "attempt to access JSON non-number as double";
const NON_ARRAY: &str = "attempt to access JSON non-array as array";

/// How deep `data` arrays may nest (the `data` value itself is level 0),
/// Triton's HTTP front end's limit.
pub const MAX_JSON_DEPTH: usize = 100;

/// Triton's message for `data` nested deeper than [`MAX_JSON_DEPTH`].
fn nesting_message() -> String {
    format!("JSON nesting depth exceeds maximum allowed limit ({MAX_JSON_DEPTH})")
}

/// How the client wants each output delivered; the front end keeps it to
/// encode the response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseFormat {
    /// Whether outputs the request does not name go out as binary data
    /// (`parameters.binary_data_output`, or a raw-body request).
    pub binary_default: bool,
    /// The outputs the request names, with whether each goes out as
    /// binary data (`parameters.binary_data`, default `false`).
    pub outputs: Vec<(String, bool)>,
    /// The outputs written into shared memory: returned without data.
    pub in_shm: Vec<String>,
}

impl ResponseFormat {
    /// Whether output `name` is returned as binary data. As in Triton, an
    /// output the request names is JSON unless it asks for binary data
    /// itself; `binary_data_output` applies to the outputs it does not name.
    pub fn is_binary(&self, name: &str) -> bool {
        self.outputs
            .iter()
            .find(|(n, _)| n == name)
            .map_or(self.binary_default, |&(_, b)| b)
    }

    /// Whether output `name` was written into client shared memory.
    pub fn is_in_shm(&self, name: &str) -> bool {
        self.in_shm.iter().any(|n| n == name)
    }
}

/// A decoded request and how its response is to be encoded.
#[derive(Debug)]
pub struct DecodedRequest {
    /// The request, ready for the server.
    pub request: InferRequest,
    /// Output delivery choices.
    pub format: ResponseFormat,
}

/// Length of the JSON header, from the `Inference-Header-Content-Length`
/// header value (`None` when absent: the whole body is JSON). `Ok(0)`
/// means the body is one raw input.
///
/// The value is read as Triton reads it (leading digits of a 32-bit signed
/// integer) and must not exceed the body length.
pub fn json_header_length(value: Option<&str>, body_len: usize) -> Result<usize> {
    let Some(text) = value else {
        return Ok(body_len);
    };
    let parsed = parse_leading_int(text).ok_or_else(|| {
        Error::invalid_arg(format!(
            "Unable to parse {HEADER_LENGTH_HEADER}, got: {text}"
        ))
    })?;
    let parsed = i32::try_from(parsed).map_err(|_| {
        Error::invalid_arg(format!(
            "Unable to parse {HEADER_LENGTH_HEADER}, value is out of range [ {}, {} ], got: {text}",
            i32::MIN,
            i32::MAX
        ))
    })?;
    match usize::try_from(parsed) {
        Ok(n) if n <= body_len => Ok(n),
        _ => Err(Error::invalid_arg(format!(
            "inference header size should be in range (0, {body_len}), got: {text}"
        ))),
    }
}

/// Reads an optionally signed decimal integer after leading whitespace,
/// ignoring whatever follows the digits (C's `strtol` rules). `None` when
/// there are no digits; saturates far outside `i64`.
pub(crate) fn parse_leading_int(text: &str) -> Option<i64> {
    leading_int(text).map(|r| r.unwrap_or_else(|saturated| saturated))
}

/// Like [`parse_leading_int`], but a value outside `i64` is an `Err`
/// holding the saturated value, for callers that refuse it (C's `stol`).
pub(crate) fn leading_int(text: &str) -> Option<std::result::Result<i64, i64>> {
    let t = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    let magnitude = digits[..end].bytes().fold(0i128, |acc, b| {
        (acc * 10 + i128::from(b - b'0')).min(i128::from(i64::MAX) + 2)
    });
    let value = if negative { -magnitude } else { magnitude };
    Some(i64::try_from(value).map_err(|_| if negative { i64::MIN } else { i64::MAX }))
}

/// Decodes a JSON or binary-extension request. `header_length` comes from
/// [`json_header_length`] and must be non-zero (zero selects
/// [`decode_raw_infer_request`]); the bytes after the header are the
/// binary inputs.
pub fn decode_infer_request(
    model_name: &str,
    model_version: Option<i64>,
    body: &Bytes,
    header_length: usize,
) -> Result<DecodedRequest> {
    let header = body.get(..header_length).ok_or_else(|| {
        Error::invalid_arg(format!(
            "unexpected size for request JSON, expecting {} more bytes",
            header_length - body.len()
        ))
    })?;
    let raw = parse_header(header)?;

    let mut request = InferRequest {
        model_name: model_name.to_owned(),
        model_version,
        ..InferRequest::default()
    };
    let mut format = ResponseFormat::default();

    if let Some(id) = raw.id {
        match id {
            Value::String(s) => request.id = (!s.is_empty()).then_some(s),
            _ => return Err(unable("id", NON_STRING)),
        }
    }
    // Triton's request-level errors name the request id when there is one.
    let log_prefix = request
        .id
        .as_deref()
        .map_or_else(String::new, |id| format!("[request id: {id}] "));
    if let Some(params) = raw.parameters {
        decode_request_parameters(params, &mut request.parameters, &mut format)?;
    }

    let inputs = match raw.inputs {
        None => {
            return Err(unable(
                "inputs",
                "attempt to access non-existing object member 'inputs'",
            ));
        }
        Some(Shaped::Other) => return Err(unable("inputs", NON_ARRAY)),
        Some(Shaped::Is(inputs)) => inputs,
    };
    let mut offset = header_length;
    request.inputs.reserve(inputs.len());
    for input in inputs {
        let tensor = decode_input(
            input,
            model_name,
            body,
            &mut offset,
            &mut request.shm_inputs,
        )?;
        if request.inputs.iter().any(|t| t.name == tensor.name) {
            return Err(Error::invalid_arg(format!(
                "{log_prefix}input '{}' already exists in request",
                tensor.name
            )));
        }
        request.inputs.push(tensor);
    }
    if offset != body.len() {
        return Err(Error::invalid_arg(format!(
            "unexpected additional input data for model '{model_name}'"
        )));
    }

    if let Some(outputs) = raw.outputs {
        let Value::Array(outputs) = outputs else {
            return Err(unable("outputs", NON_ARRAY));
        };
        for output in outputs {
            let requested = decode_output(output)?;
            if request.outputs.iter().any(|o| o.name == requested.name) {
                return Err(Error::invalid_arg(format!(
                    "{log_prefix}output '{}' already exists in request",
                    requested.name
                )));
            }
            format
                .outputs
                .push((requested.name.clone(), requested.binary_data == Some(true)));
            if requested.shm.is_some() {
                format.in_shm.push(requested.name.clone());
            }
            request.outputs.push(requested);
        }
    }
    Ok(DecodedRequest { request, format })
}

/// Decodes a raw-body request (`Inference-Header-Content-Length: 0`): the
/// body is the only input of a model with exactly one input; its datatype
/// and shape come from the configuration (a variable-size dimension is
/// deduced from the body length, a batching model gets batch size 1).
/// Every output is returned as binary data.
pub fn decode_raw_infer_request(
    model_name: &str,
    model_version: Option<i64>,
    config: &ModelConfig,
    body: Bytes,
) -> Result<DecodedRequest> {
    let [input] = config.input.as_slice() else {
        return Err(Error::invalid_arg(format!(
            "Raw request must only have 1 input (found 1) to be deduced but got {} inputs in '{model_name}' model configuration",
            config.input.len()
        )));
    };
    let datatype = DataType::from_config_enum(input.data_type)
        .ok_or_else(|| Error::invalid_arg(format!("invalid datatype for input {}", input.name)))?;
    let mut shape: Vec<i64> = Vec::with_capacity(input.dims.len() + 1);
    if config.max_batch_size != 0 {
        shape.push(1);
    }
    let mut dynamic_axis = None;
    let mut fixed_elements: u64 = 1;
    for &d in &input.dims {
        if d == -1 {
            if dynamic_axis.is_some() {
                return Err(Error::invalid_arg(format!(
                    "The shape of the raw input '{}' can not be deduced because there are more than one variable-sized dimension",
                    input.name
                )));
            }
            dynamic_axis = Some(shape.len());
        } else {
            fixed_elements = fixed_elements.saturating_mul(u64::try_from(d).unwrap_or(0));
        }
        shape.push(d);
    }
    let data = match datatype.element_size() {
        None => {
            if dynamic_axis.is_some() || fixed_elements != 1 {
                return Err(Error::invalid_arg(format!(
                    "For BYTE datatype raw input '{}', the model must have input shape [1]",
                    input.name
                )));
            }
            // The one copy of a raw BYTES body: the wire form of a BYTES
            // element puts its length in front of it.
            let len = u32::try_from(body.len()).map_err(|_| {
                Error::invalid_arg(format!(
                    "raw input '{}' of {} bytes is too large for one BYTES element",
                    input.name,
                    body.len()
                ))
            })?;
            let mut v = Vec::with_capacity(body.len() + 4);
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(&body);
            Bytes::from(v)
        }
        Some(size) => {
            if let Some(axis) = dynamic_axis {
                let per = fixed_elements.saturating_mul(size as u64);
                let deduced = (body.len() as u64).checked_div(per).unwrap_or(0);
                shape[axis] = i64::try_from(deduced).unwrap_or(i64::MAX);
            }
            body
        }
    };
    let request = InferRequest {
        model_name: model_name.to_owned(),
        model_version,
        inputs: vec![Tensor {
            name: input.name.clone(),
            datatype,
            shape,
            data,
        }],
        ..InferRequest::default()
    };
    Ok(DecodedRequest {
        request,
        format: ResponseFormat {
            binary_default: true,
            ..ResponseFormat::default()
        },
    })
}

/// The `shared_memory_*` parameters of a tensor whose region is `region`:
/// offset defaults to 0, byte size to 0 (which no tensor fits).
fn shm_ref(region: &str, params: &serde_json::Map<String, Value>) -> Result<ShmRef> {
    let mut numbers = [0u64; 2];
    for (field, slot) in ["shared_memory_offset", "shared_memory_byte_size"]
        .into_iter()
        .zip(&mut numbers)
    {
        if let Some(v) = params.get(field) {
            *slot = v.as_u64().ok_or_else(|| unable(field, NON_UINT))?;
        }
    }
    Ok(ShmRef {
        region: region.to_owned(),
        offset: numbers[0],
        byte_size: numbers[1],
    })
}

/// `Unable to parse '<field>': <what>`, Triton's accessor failure.
fn unable(field: &str, what: &str) -> Error {
    Error::invalid_arg(format!("Unable to parse '{field}': {what}"))
}

fn missing(field: &str) -> Error {
    unable(
        field,
        &format!("attempt to access non-existing object member '{field}'"),
    )
}

// ---------------------------------------------------------------------------
// Phase 2: checks in Triton's order, building core types.

fn decode_request_parameters(
    params: Shaped<Vec<(String, Value)>>,
    out: &mut Parameters,
    format: &mut ResponseFormat,
) -> Result<()> {
    let Shaped::Is(params) = params else {
        return Err(Error::new(
            Code::InvalidArg,
            "failed to get request params.: attempt to get members for non-object",
        ));
    };
    for (key, value) in params {
        let decoded = match key.as_str() {
            "sequence_id" => match value {
                Value::Number(n) if n.is_u64() => u64_param(n.as_u64().unwrap_or(0)),
                Value::String(s) => ParamValue::String(s),
                _ => return Err(unable("sequence_id", NON_STRING)),
            },
            "sequence_start" | "sequence_end" => match value {
                Value::Bool(b) => ParamValue::Bool(b),
                _ => return Err(unable(&key, NON_BOOL)),
            },
            "priority" | "timeout" => match value.as_u64() {
                Some(v) => u64_param(v),
                None => return Err(unable(&key, NON_UINT)),
            },
            "binary_data_output" => match value {
                Value::Bool(b) => {
                    format.binary_default = b;
                    continue;
                }
                _ => return Err(unable("binary_data_output", NON_BOOL)),
            },
            k if k.starts_with("triton_") => {
                return Err(Error::invalid_arg(
                    "parameter keys starting with 'triton_' are reserved for Triton usage and should not be specified.",
                ));
            }
            _ => match json_param(&value) {
                Some(v) => v,
                None => {
                    return Err(Error::invalid_arg(format!(
                        "parameter '{key}' has invalid type. It should be either 'int', 'bool', or 'string'."
                    )));
                }
            },
        };
        out.set(key, decoded);
    }
    Ok(())
}

/// An unsigned parameter as an integer, or as its decimal string when it
/// does not fit `i64`.
pub(crate) fn u64_param(v: u64) -> ParamValue {
    i64::try_from(v).map_or_else(|_| ParamValue::String(v.to_string()), ParamValue::Int)
}

/// A scalar JSON value as a parameter (Triton's bool/int/double/string).
fn json_param(value: &Value) -> Option<ParamValue> {
    Some(match value {
        Value::String(s) => ParamValue::String(s.clone()),
        Value::Bool(b) => ParamValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => ParamValue::Int(i),
            None => ParamValue::Double(n.as_f64()?),
        },
        _ => return None,
    })
}

fn string_member(value: Option<Value>, field: &str) -> Result<String> {
    match value {
        None => Err(missing(field)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(unable(field, NON_STRING)),
    }
}

/// Formats dimensions as sent (unsigned) the way Triton prints shapes.
fn dims_to_string(dims: &[u64]) -> String {
    let parts: Vec<String> = dims.iter().map(u64::to_string).collect();
    format!("[{}]", parts.join(","))
}

/// Element count of `dims` with Triton's rules: a zero dimension makes the
/// count zero whatever follows; otherwise a dimension beyond `i64` is
/// invalid and a product beyond `i64` overflows.
fn json_element_count(name: &str, dims: &[u64]) -> Result<u64> {
    let mut count: u64 = 1;
    for &d in dims {
        if d > i64::MAX as u64 {
            return Err(Error::invalid_arg(format!(
                "invalid shape for input '{name}': shape {} contains one or more invalid dimensions",
                dims_to_string(dims)
            )));
        }
        if d == 0 {
            return Ok(0);
        }
        count = match count.checked_mul(d) {
            Some(c) if c <= i64::MAX as u64 => c,
            _ => {
                return Err(Error::invalid_arg(format!(
                    "invalid shape for input '{name}': shape {} causes total element count to exceed maximum size of {}",
                    dims_to_string(dims),
                    i64::MAX
                )));
            }
        };
    }
    Ok(count)
}

fn decode_input(
    input: Shaped<RawInput>,
    model_name: &str,
    body: &Bytes,
    offset: &mut usize,
    in_shm: &mut Vec<(String, ShmRef)>,
) -> Result<Tensor> {
    let input = match input {
        Shaped::Is(i) => i,
        Shaped::Other => RawInput::default(),
    };
    let params = match &input.parameters {
        Some(Value::Object(p)) => Some(p),
        _ => None,
    };
    let has_data = input.data.is_some();
    let has_binary = params.is_some_and(|p| p.contains_key("binary_data_size"));
    let has_shm = params.is_some_and(|p| p.contains_key("shared_memory_region"));
    if usize::from(has_data) + usize::from(has_binary) + usize::from(has_shm) != 1 {
        let mut msg = String::from(
            "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', 'shared_memory_region' in 'parameters'. But",
        );
        if !(has_data || has_binary || has_shm) {
            msg.push_str(" no field is set");
        } else {
            msg.push_str(" set");
            for (set, field) in [
                (has_data, " 'data'"),
                (has_binary, " 'binary_data_size'"),
                (has_shm, " 'shared_memory_region'"),
            ] {
                if set {
                    msg.push_str(field);
                }
            }
        }
        return Err(Error::invalid_arg(msg));
    }

    let name = string_member(input.name, "name")?;
    let datatype_name = string_member(input.datatype, "datatype")?;
    let dims: Vec<u64> = match input.shape {
        None => return Err(missing("shape")),
        Some(Value::Array(a)) => a
            .iter()
            .map(|d| {
                // Triton's test_negative_dimensions pins this one at 500.
                d.as_u64()
                    .ok_or_else(|| Error::internal(format!("Unable to parse 'shape': {NON_UINT}")))
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(unable("shape", NON_ARRAY)),
    };
    let datatype = DataType::from_wire(&datatype_name)
        .ok_or_else(|| Error::invalid_arg(format!("invalid datatype for input {name}")))?;

    if has_binary {
        let p = params.expect("has_binary implies an object");
        let size = p
            .get("binary_data_size")
            .and_then(Value::as_u64)
            .ok_or_else(|| unable("binary_data_size", NON_UINT))?;
        let shape = shape_i64(&name, &dims)?;
        let remaining = (body.len() - *offset) as u64;
        if size > remaining {
            return Err(Error::invalid_arg(format!(
                "unexpected size for input '{name}', expecting {} additional bytes for model '{model_name}'",
                size - remaining
            )));
        }
        let end = *offset + size as usize;
        // Zero copy: the tensor shares the request body's buffer.
        let data = body.slice(*offset..end);
        *offset = end;
        return Ok(Tensor {
            name,
            datatype,
            shape,
            data,
        });
    }

    if has_shm {
        let p = params.expect("has_shm implies an object");
        let region = p
            .get("shared_memory_region")
            .and_then(Value::as_str)
            .ok_or_else(|| unable("shared_memory_region", NON_STRING))?;
        let shm = shm_ref(region, p)?;
        let shape = shape_i64(&name, &dims)?;
        // The data is read from the region once the server looks it up.
        in_shm.push((name.clone(), shm));
        return Ok(Tensor {
            name,
            datatype,
            shape,
            data: Bytes::new(),
        });
    }

    let count = json_element_count(&name, &dims)?;
    let shape = shape_i64(&name, &dims)?;
    if count == 0 {
        return Ok(Tensor {
            name,
            datatype,
            shape,
            data: Bytes::new(),
        });
    }
    if let Some(size) = datatype.element_size()
        && size > 1
        && count > i64::MAX as u64 / size as u64
    {
        return Err(Error::invalid_arg(format!(
            "byte size overflow for input '{name}': element count ({count}) * data type size ({size}) exceeds maximum allowed size ({})",
            i64::MAX
        )));
    }
    let expected = datatype.element_size().map(|_| count);
    let sink = match input.data.expect("has_data checked above") {
        RawData::NotArray => return Err(unable("data", NON_ARRAY)),
        RawData::Typed(sink) if sink.datatype == datatype => sink,
        RawData::Typed(_) => {
            // Only reachable with a repeated `datatype` key; the first one
            // typed the data, so the data is read as that type.
            return Err(Error::invalid_arg(format!(
                "input '{name}' names its datatype more than once"
            )));
        }
        RawData::Generic(scalars) => {
            let mut sink = TypedSink::new(datatype, expected, scalars.len());
            for s in scalars {
                s.replay(&mut sink);
            }
            sink
        }
    };
    let TypedSink {
        bytes,
        count: got,
        error,
        ..
    } = sink;
    if let Some(e) = error {
        return Err(e.into_error(&name, datatype));
    }
    if let Some(expected) = expected {
        if got > expected {
            return Err(ElemError::TooMany.into_error(&name, datatype));
        }
        if got < expected {
            return Err(Error::invalid_arg(
                "Failed to parse 'data' field: shape does not match true shape",
            ));
        }
    }
    Ok(Tensor {
        name,
        datatype,
        shape,
        data: Bytes::from(bytes),
    })
}

fn shape_i64(name: &str, dims: &[u64]) -> Result<Vec<i64>> {
    dims.iter()
        .map(|&d| {
            i64::try_from(d).map_err(|_| {
                Error::invalid_arg(format!(
                    "invalid shape for input '{name}': shape {} contains one or more invalid dimensions",
                    dims_to_string(dims)
                ))
            })
        })
        .collect()
}

fn decode_output(output: Value) -> Result<RequestedOutput> {
    let Value::Object(mut obj) = output else {
        return Err(missing("name"));
    };
    let params = match obj.remove("parameters") {
        Some(Value::Object(p)) => p,
        _ => serde_json::Map::new(),
    };
    if params.contains_key("shared_memory_region") {
        if params.contains_key("classification") {
            return Err(Error::invalid_arg(
                "Output can't set both 'shared_memory_region' and 'classification'",
            ));
        }
        if let Some(b) = params.get("binary_data") {
            match b {
                Value::Bool(true) => {
                    return Err(Error::invalid_arg(
                        "Output can't set both 'shared_memory_region' and 'binary_data'",
                    ));
                }
                Value::Bool(false) => {}
                _ => {
                    return Err(Error::new(
                        Code::InvalidArg,
                        format!("Unable to set 'binary_data': {NON_BOOL}"),
                    ));
                }
            }
        }
    }
    let name = string_member(obj.remove("name"), "name")?;
    let shm = match params.get("shared_memory_region") {
        None => None,
        Some(region) => {
            let region = region
                .as_str()
                .ok_or_else(|| unable("shared_memory_region", NON_STRING))?;
            Some(shm_ref(region, &params)?)
        }
    };
    let mut requested = RequestedOutput {
        name,
        shm,
        ..RequestedOutput::default()
    };
    for (key, value) in params {
        match key.as_str() {
            "classification" => {
                let n = value.as_u64().ok_or_else(|| {
                    Error::new(
                        Code::InvalidArg,
                        format!("Unable to set 'classification': {NON_UINT}"),
                    )
                })?;
                requested.class_count = u32::try_from(n).unwrap_or(u32::MAX);
            }
            "binary_data" => match value {
                Value::Bool(b) => requested.binary_data = Some(b),
                _ => return Err(unable("binary_data", NON_BOOL)),
            },
            "shared_memory_region" | "shared_memory_offset" | "shared_memory_byte_size" => {}
            _ => {
                if let Some(v) = json_param(&value) {
                    requested.parameters.set(key, v);
                }
            }
        }
    }
    Ok(requested)
}

// ---------------------------------------------------------------------------
// Element conversion.

/// Why a `data` element was refused; rendered once the input's name is
/// known.
#[derive(Debug, Clone, PartialEq)]
enum ElemError {
    /// The element's JSON type does not fit the datatype (Triton's
    /// accessor message).
    WrongType,
    /// A number outside the datatype's range.
    OutOfRange(String),
    /// More elements than the shape holds.
    TooMany,
}

impl ElemError {
    fn into_error(self, name: &str, datatype: DataType) -> Error {
        match self {
            ElemError::WrongType => unable("data", wrong_type_message(datatype)),
            ElemError::OutOfRange(v) => Error::invalid_arg(format!(
                "Unable to parse 'data': value {v} of input '{name}' is out of range for {datatype}"
            )),
            ElemError::TooMany => Error::invalid_arg(
                "Unable to parse 'data': Shape does not match true shape of 'data' field",
            ),
        }
    }
}

fn wrong_type_message(datatype: DataType) -> &'static str {
    match datatype {
        DataType::Bool => NON_BOOL,
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 | DataType::Uint64 => NON_UINT,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => NON_INT,
        DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64 => NON_NUMBER,
        DataType::Bytes => NON_STRING,
    }
}

/// Receives the leaf elements of a `data` array in order.
trait ElementSink {
    fn push_u64(&mut self, v: u64);
    fn push_i64(&mut self, v: i64);
    fn push_f64(&mut self, v: f64);
    fn push_bool(&mut self, v: bool);
    fn push_str(&mut self, v: &str);
    /// `null` or an object.
    fn push_other(&mut self);
}

/// Converts elements straight into the tensor's little-endian bytes.
#[derive(Debug)]
struct TypedSink {
    datatype: DataType,
    bytes: Vec<u8>,
    count: u64,
    /// Element count the shape allows, when known while parsing (fixed-size
    /// types only); an extra element is an error and stops storing.
    limit: Option<u64>,
    error: Option<ElemError>,
}

impl TypedSink {
    fn new(datatype: DataType, limit: Option<u64>, body_hint: usize) -> TypedSink {
        // Reserve what the shape calls for, but never more than the JSON
        // text could fill: a hostile shape must not allocate by itself.
        let capacity = match (datatype.element_size(), limit) {
            (Some(size), Some(n)) => (n as usize)
                .saturating_mul(size)
                .min(body_hint.saturating_mul(size)),
            _ => 0,
        };
        TypedSink {
            datatype,
            bytes: Vec::with_capacity(capacity),
            count: 0,
            limit,
            error: None,
        }
    }

    /// Counts an element; false when it must not be stored.
    fn admit(&mut self) -> bool {
        if self.error.is_some() {
            return false;
        }
        self.count += 1;
        if self.limit.is_some_and(|l| self.count > l) {
            self.error = Some(ElemError::TooMany);
            return false;
        }
        true
    }

    fn fail(&mut self, e: ElemError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn store_int(&mut self, v: i128) {
        let out = &mut self.bytes;
        let ok = match self.datatype {
            DataType::Uint8 => u8::try_from(v).map(|x| out.push(x)).is_ok(),
            DataType::Uint16 => u16::try_from(v)
                .map(|x| out.extend_from_slice(&x.to_le_bytes()))
                .is_ok(),
            DataType::Uint32 => u32::try_from(v)
                .map(|x| out.extend_from_slice(&x.to_le_bytes()))
                .is_ok(),
            DataType::Uint64 => u64::try_from(v)
                .map(|x| out.extend_from_slice(&x.to_le_bytes()))
                .is_ok(),
            DataType::Int8 => i8::try_from(v)
                .map(|x| out.extend_from_slice(&x.to_le_bytes()))
                .is_ok(),
            DataType::Int16 => i16::try_from(v)
                .map(|x| out.extend_from_slice(&x.to_le_bytes()))
                .is_ok(),
            DataType::Int32 => i32::try_from(v)
                .map(|x| out.extend_from_slice(&x.to_le_bytes()))
                .is_ok(),
            DataType::Int64 => i64::try_from(v)
                .map(|x| out.extend_from_slice(&x.to_le_bytes()))
                .is_ok(),
            _ => unreachable!("store_int is only called for integer types"),
        };
        if !ok {
            self.fail(ElemError::OutOfRange(v.to_string()));
        }
    }

    fn store_float(&mut self, v: f64) {
        let out = &mut self.bytes;
        let fits = match self.datatype {
            DataType::Fp64 => {
                out.extend_from_slice(&v.to_le_bytes());
                true
            }
            DataType::Fp32 => {
                let x = v as f32;
                out.extend_from_slice(&x.to_le_bytes());
                x.is_finite() || !v.is_finite()
            }
            DataType::Fp16 => {
                let x = f16::from_f64(v);
                out.extend_from_slice(&x.to_le_bytes());
                x.is_finite() || !v.is_finite()
            }
            DataType::Bf16 => {
                let x = bf16::from_f64(v);
                out.extend_from_slice(&x.to_le_bytes());
                x.is_finite() || !v.is_finite()
            }
            _ => unreachable!("store_float is only called for float types"),
        };
        if !fits {
            self.fail(ElemError::OutOfRange(format!("{v:?}")));
        }
    }

    fn is_float(&self) -> bool {
        matches!(
            self.datatype,
            DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64
        )
    }

    fn is_unsigned(&self) -> bool {
        matches!(
            self.datatype,
            DataType::Uint8 | DataType::Uint16 | DataType::Uint32 | DataType::Uint64
        )
    }

    fn is_signed(&self) -> bool {
        matches!(
            self.datatype,
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
        )
    }
}

impl ElementSink for TypedSink {
    fn push_u64(&mut self, v: u64) {
        if !self.admit() {
            return;
        }
        if self.is_float() {
            self.store_float(v as f64);
        } else if self.is_unsigned() || self.is_signed() {
            self.store_int(i128::from(v));
        } else {
            self.fail(ElemError::WrongType);
        }
    }

    fn push_i64(&mut self, v: i64) {
        if !self.admit() {
            return;
        }
        if self.is_float() {
            self.store_float(v as f64);
        } else if self.is_signed() {
            self.store_int(i128::from(v));
        } else {
            // A negative number is not an unsigned integer.
            self.fail(ElemError::WrongType);
        }
    }

    fn push_f64(&mut self, v: f64) {
        if !self.admit() {
            return;
        }
        if self.is_float() {
            self.store_float(v);
        } else {
            self.fail(ElemError::WrongType);
        }
    }

    fn push_bool(&mut self, v: bool) {
        if !self.admit() {
            return;
        }
        if self.datatype == DataType::Bool {
            self.bytes.push(u8::from(v));
        } else {
            self.fail(ElemError::WrongType);
        }
    }

    fn push_str(&mut self, v: &str) {
        if !self.admit() {
            return;
        }
        if self.datatype == DataType::Bytes {
            match u32::try_from(v.len()) {
                Ok(len) => {
                    self.bytes.extend_from_slice(&len.to_le_bytes());
                    self.bytes.extend_from_slice(v.as_bytes());
                }
                Err(_) => self.fail(ElemError::OutOfRange(format!("of {} bytes", v.len()))),
            }
        } else {
            self.fail(ElemError::WrongType);
        }
    }

    fn push_other(&mut self) {
        if self.admit() {
            self.fail(ElemError::WrongType);
        }
    }
}

/// One `data` element kept as parsed, for inputs whose `datatype` comes
/// after their `data`.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(Box<str>),
    Other,
}

impl Scalar {
    fn replay(self, sink: &mut impl ElementSink) {
        match self {
            Scalar::U64(v) => sink.push_u64(v),
            Scalar::I64(v) => sink.push_i64(v),
            Scalar::F64(v) => sink.push_f64(v),
            Scalar::Bool(v) => sink.push_bool(v),
            Scalar::Str(v) => sink.push_str(&v),
            Scalar::Other => sink.push_other(),
        }
    }
}

impl ElementSink for Vec<Scalar> {
    fn push_u64(&mut self, v: u64) {
        self.push(Scalar::U64(v));
    }
    fn push_i64(&mut self, v: i64) {
        self.push(Scalar::I64(v));
    }
    fn push_f64(&mut self, v: f64) {
        self.push(Scalar::F64(v));
    }
    fn push_bool(&mut self, v: bool) {
        self.push(Scalar::Bool(v));
    }
    fn push_str(&mut self, v: &str) {
        self.push(Scalar::Str(v.into()));
    }
    fn push_other(&mut self) {
        self.push(Scalar::Other);
    }
}

// ---------------------------------------------------------------------------
// Phase 1: one streaming parse of the JSON header.

/// A value of the JSON type expected, or something else.
#[derive(Debug)]
enum Shaped<T> {
    Is(T),
    Other,
}

#[derive(Debug, Default)]
struct RawRequest {
    id: Option<Value>,
    parameters: Option<Shaped<Vec<(String, Value)>>>,
    inputs: Option<Shaped<Vec<Shaped<RawInput>>>>,
    outputs: Option<Value>,
}

#[derive(Debug, Default)]
struct RawInput {
    name: Option<Value>,
    shape: Option<Value>,
    datatype: Option<Value>,
    parameters: Option<Value>,
    data: Option<RawData>,
}

#[derive(Debug)]
enum RawData {
    NotArray,
    Typed(TypedSink),
    Generic(Vec<Scalar>),
}

fn parse_header(header: &[u8]) -> Result<RawRequest> {
    let mut de = serde_json::Deserializer::from_slice(header);
    let hint = header.len();
    let current = RefCell::new(None);
    let parsed = RequestSeed {
        hint,
        current: &current,
    }
    .deserialize(&mut de)
    .and_then(|r| de.end().map(|()| r));
    parsed.map_err(|e| {
        let text = e.to_string();
        // serde_json's own limit (128 levels of the whole document) only
        // triggers beyond Triton's, so it is reported the same way.
        if text.starts_with(&nesting_message()) || text.starts_with("recursion limit exceeded") {
            return Error::invalid_arg(nesting_message());
        }
        let within = current
            .into_inner()
            .map_or_else(String::new, |name| format!("in input '{name}': "));
        Error::invalid_arg(format!(
            "failed to parse the request JSON buffer: {within}{text}"
        ))
    })
}

/// Visitor methods that accept any JSON value other than the one a visitor
/// is for, consuming it and answering `$value`.
macro_rules! accept_other_values {
    ($value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

macro_rules! accept_other_seq {
    ($value:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($value)
        }
    };
}

macro_rules! accept_other_map {
    ($value:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok($value)
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Id,
    Parameters,
    Inputs,
    Outputs,
    Name,
    Shape,
    Datatype,
    Data,
    Other,
}

const REQUEST_KEYS: &[(&str, Key)] = &[
    ("id", Key::Id),
    ("parameters", Key::Parameters),
    ("inputs", Key::Inputs),
    ("outputs", Key::Outputs),
];

const INPUT_KEYS: &[(&str, Key)] = &[
    ("name", Key::Name),
    ("shape", Key::Shape),
    ("datatype", Key::Datatype),
    ("parameters", Key::Parameters),
    ("data", Key::Data),
];

struct KeySeed(&'static [(&'static str, Key)]);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(self
            .0
            .iter()
            .find(|(k, _)| *k == v)
            .map_or(Key::Other, |&(_, key)| key))
    }
}

/// Reads a member's value unless the key was seen before: as with
/// RapidJSON's member lookup, the first occurrence of a key wins.
fn first<'de, A: MapAccess<'de>, T: serde::Deserialize<'de>>(
    slot: &mut Option<T>,
    map: &mut A,
) -> Result<(), A::Error> {
    if slot.is_some() {
        map.next_value::<IgnoredAny>()?;
    } else {
        *slot = Some(map.next_value()?);
    }
    Ok(())
}

/// The name of the input being parsed, for a syntax error's message.
type CurrentInput = RefCell<Option<String>>;

struct RequestSeed<'a> {
    hint: usize,
    current: &'a CurrentInput,
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = RawRequest;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawRequest, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_> {
    type Value = RawRequest;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an inference request object")
    }
    accept_other_values!(RawRequest::default());
    accept_other_seq!(RawRequest::default());

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRequest, A::Error> {
        let mut r = RawRequest::default();
        while let Some(key) = map.next_key_seed(KeySeed(REQUEST_KEYS))? {
            match key {
                Key::Id => first(&mut r.id, &mut map)?,
                Key::Outputs => first(&mut r.outputs, &mut map)?,
                Key::Parameters if r.parameters.is_none() => {
                    r.parameters = Some(map.next_value_seed(ParamsSeed)?);
                }
                Key::Inputs if r.inputs.is_none() => {
                    r.inputs = Some(map.next_value_seed(InputsSeed {
                        hint: self.hint,
                        current: self.current,
                    })?);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(r)
    }
}

/// Request parameters, in the order sent.
struct ParamsSeed;

impl<'de> DeserializeSeed<'de> for ParamsSeed {
    type Value = Shaped<Vec<(String, Value)>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ParamsSeed {
    type Value = Shaped<Vec<(String, Value)>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a parameters object")
    }
    accept_other_values!(Shaped::Other);
    accept_other_seq!(Shaped::Other);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: Vec<(String, Value)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.iter().any(|(k, _)| *k == key) {
                map.next_value::<IgnoredAny>()?;
            } else {
                let value = map.next_value::<Value>()?;
                out.push((key, value));
            }
        }
        Ok(Shaped::Is(out))
    }
}

struct InputsSeed<'a> {
    hint: usize,
    current: &'a CurrentInput,
}

impl<'de> DeserializeSeed<'de> for InputsSeed<'_> {
    type Value = Shaped<Vec<Shaped<RawInput>>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InputsSeed<'_> {
    type Value = Shaped<Vec<Shaped<RawInput>>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of inputs")
    }
    accept_other_values!(Shaped::Other);
    accept_other_map!(Shaped::Other);

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(2));
        while let Some(input) = seq.next_element_seed(InputSeed {
            hint: self.hint,
            current: self.current,
        })? {
            out.push(input);
        }
        Ok(Shaped::Is(out))
    }
}

struct InputSeed<'a> {
    hint: usize,
    current: &'a CurrentInput,
}

impl<'de> DeserializeSeed<'de> for InputSeed<'_> {
    type Value = Shaped<RawInput>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InputSeed<'_> {
    type Value = Shaped<RawInput>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an input object")
    }
    accept_other_values!(Shaped::Other);
    accept_other_seq!(Shaped::Other);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut input = RawInput::default();
        self.current.replace(None);
        while let Some(key) = map.next_key_seed(KeySeed(INPUT_KEYS))? {
            match key {
                Key::Name => {
                    first(&mut input.name, &mut map)?;
                    if let Some(Value::String(name)) = &input.name {
                        self.current.replace(Some(name.clone()));
                    }
                }
                Key::Shape => first(&mut input.shape, &mut map)?,
                Key::Datatype => first(&mut input.datatype, &mut map)?,
                Key::Parameters => first(&mut input.parameters, &mut map)?,
                Key::Data if input.data.is_none() => {
                    let datatype = input
                        .datatype
                        .as_ref()
                        .and_then(Value::as_str)
                        .and_then(DataType::from_wire);
                    let data = match datatype {
                        Some(dt) => {
                            let limit = dt
                                .element_size()
                                .and(input.shape.as_ref())
                                .and_then(known_count);
                            let mut sink = TypedSink::new(dt, limit, self.hint);
                            let is_array = map.next_value_seed(ElementSeed {
                                sink: &mut sink,
                                depth: 0,
                            })?;
                            if is_array {
                                RawData::Typed(sink)
                            } else {
                                RawData::NotArray
                            }
                        }
                        None => {
                            let mut scalars: Vec<Scalar> = Vec::new();
                            let is_array = map.next_value_seed(ElementSeed {
                                sink: &mut scalars,
                                depth: 0,
                            })?;
                            if is_array {
                                RawData::Generic(scalars)
                            } else {
                                RawData::NotArray
                            }
                        }
                    };
                    input.data = Some(data);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        self.current.replace(None);
        Ok(Shaped::Is(input))
    }
}

/// The element count of a `shape` value seen before `data`, when it is a
/// valid shape.
fn known_count(shape: &Value) -> Option<u64> {
    let dims = shape.as_array()?;
    dims.iter().try_fold(1u64, |acc, d| {
        let d = d.as_u64().filter(|&d| d <= i64::MAX as u64)?;
        acc.checked_mul(d).filter(|&c| c <= i64::MAX as u64)
    })
}

/// Walks a `data` value: arrays nested up to [`MAX_JSON_DEPTH`] levels are
/// flattened into the sink; at the top (depth 0), a non-array answers
/// `false`.
struct ElementSeed<'a, S> {
    sink: &'a mut S,
    depth: usize,
}

impl<S> ElementSeed<'_, S> {
    fn is_top(&self) -> bool {
        self.depth == 0
    }
}

impl<'de, S: ElementSink> DeserializeSeed<'de> for ElementSeed<'_, S> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        if self.depth >= MAX_JSON_DEPTH {
            return Err(de::Error::custom(nesting_message()));
        }
        d.deserialize_any(self)
    }
}

impl<'de, S: ElementSink> Visitor<'de> for ElementSeed<'_, S> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor data")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let sink = self.sink;
        while seq
            .next_element_seed(ElementSeed {
                sink: &mut *sink,
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(true)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        if !self.is_top() {
            self.sink.push_u64(v);
        }
        Ok(false)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        if !self.is_top() {
            self.sink.push_i64(v);
        }
        Ok(false)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        if !self.is_top() {
            self.sink.push_f64(v);
        }
        Ok(false)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        if !self.is_top() {
            self.sink.push_bool(v);
        }
        Ok(false)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        if !self.is_top() {
            self.sink.push_str(v);
        }
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        if !self.is_top() {
            self.sink.push_other();
        }
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        if !self.is_top() {
            self.sink.push_other();
        }
        Ok(false)
    }
}
