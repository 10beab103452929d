//! Encoding an [`InferResponse`] as a KServe v2 REST response body.
//!
//! The JSON part is written by hand into one buffer (no intermediate
//! document): `id` (when the request had one), `model_name`,
//! `model_version` (a string), `parameters` (when there are any) and
//! `outputs`, each with `name`, `datatype`, `shape` and either `data` or
//! `parameters.binary_data_size`. Outputs sent as binary data follow the
//! JSON part in output order; they are the tensors' own [`Bytes`], so they
//! are not copied again, and the body is returned as a list of chunks for
//! a vectored write. [`EncodedResponse::json_length`] is then the value of
//! `Inference-Header-Content-Length`.

use bytes::Bytes;
use half::{bf16, f16};

use super::decode::ResponseFormat;
use super::json;
use crate::core::tensor::element_count;
use crate::core::{DataType, Error, InferResponse, ParamValue, Parameters, Result, Tensor};

/// An encoded response body.
#[derive(Debug, Clone, Default)]
pub struct EncodedResponse {
    /// The body chunks: the JSON part, then binary output data.
    pub body: Vec<Bytes>,
    /// Length of the JSON part when binary data follows it (the
    /// `Inference-Header-Content-Length` to send); `None` for JSON only.
    pub json_length: Option<usize>,
}

/// Encodes `response`, sending each output as JSON or binary data as
/// `format` says.
pub fn encode_infer_response(
    response: &InferResponse,
    format: &ResponseFormat,
) -> Result<EncodedResponse> {
    let estimate: usize = 160
        + response
            .outputs
            .iter()
            .map(|t| {
                64 + t.name.len()
                    + if format.is_binary(&t.name) {
                        0
                    } else {
                        json_size_estimate(t)
                    }
            })
            .sum::<usize>();
    let mut out = Vec::with_capacity(estimate);
    let mut binary: Vec<Bytes> = Vec::new();

    out.push(b'{');
    if let Some(id) = response.id.as_deref().filter(|id| !id.is_empty()) {
        json::write_key(&mut out, "id");
        json::write_str(&mut out, id);
        out.push(b',');
    }
    json::write_key(&mut out, "model_name");
    json::write_str(&mut out, &response.model_name);
    out.extend_from_slice(b",\"model_version\":\"");
    json::write_i64(&mut out, response.model_version);
    out.push(b'"');
    if !response.parameters.is_empty() {
        out.extend_from_slice(b",\"parameters\":");
        write_parameters(&mut out, &response.parameters);
    }
    out.extend_from_slice(b",\"outputs\":[");
    for (i, t) in response.outputs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        json::write_str(&mut out, &t.name);
        out.extend_from_slice(b",\"datatype\":\"");
        out.extend_from_slice(t.datatype.wire_name().as_bytes());
        out.extend_from_slice(b"\",\"shape\":[");
        for (j, &d) in t.shape.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            json::write_i64(&mut out, d);
        }
        out.push(b']');
        if format.is_in_shm(&t.name) {
            // The bytes are in the client's shared memory already.
        } else if format.is_binary(&t.name) {
            out.extend_from_slice(b",\"parameters\":{\"binary_data_size\":");
            json::write_u64(&mut out, t.data.len() as u64);
            out.push(b'}');
            if !t.data.is_empty() {
                binary.push(t.data.clone());
            }
        } else {
            out.extend_from_slice(b",\"data\":[");
            write_data(&mut out, t)?;
            out.push(b']');
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");

    let json_length = (!binary.is_empty()).then_some(out.len());
    let mut body = Vec::with_capacity(1 + binary.len());
    body.push(Bytes::from(out));
    body.extend(binary);
    Ok(EncodedResponse { body, json_length })
}

/// Appends a parameters object.
pub fn write_parameters(out: &mut Vec<u8>, params: &Parameters) {
    out.push(b'{');
    for (i, (k, v)) in params.0.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_key(out, k);
        match v {
            ParamValue::Bool(b) => json::write_bool(out, *b),
            ParamValue::Int(n) => json::write_i64(out, *n),
            ParamValue::Double(d) => json::write_f64(out, *d),
            ParamValue::String(s) => json::write_str(out, s),
        }
    }
    out.push(b'}');
}

/// A rough size of a tensor's JSON text, to size the buffer once.
fn json_size_estimate(t: &Tensor) -> usize {
    let per_element = match t.datatype {
        DataType::Bool => 6,
        DataType::Uint8 | DataType::Int8 => 4,
        DataType::Uint16 | DataType::Int16 => 6,
        DataType::Uint32 | DataType::Int32 => 11,
        DataType::Fp16 | DataType::Bf16 => 10,
        DataType::Fp32 => 14,
        DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 21,
        // Text plus quotes and comma, minus the 4-byte length prefix.
        DataType::Bytes => return t.data.len() + 16,
    };
    t.data.len() / t.datatype.element_size().unwrap_or(1) * per_element
}

fn size_mismatch(name: &str) -> Error {
    Error::internal(format!(
        "Failed to write 'data' field: output tensor shape does not match size of output for '{name}'"
    ))
}

/// Writes each fixed-size element (decoded from `N` little-endian bytes by
/// `write`) separated by commas.
fn write_elements<const N: usize>(
    out: &mut Vec<u8>,
    data: &[u8],
    write: impl Fn(&mut Vec<u8>, [u8; N]),
) {
    for (i, chunk) in data.chunks_exact(N).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut raw = [0u8; N];
        raw.copy_from_slice(chunk);
        write(out, raw);
    }
}

/// Appends the elements of `t` (without the brackets).
fn write_data(out: &mut Vec<u8>, t: &Tensor) -> Result<()> {
    let count = element_count(&t.shape).map_err(|_| size_mismatch(&t.name))?;
    let data = &t.data[..];
    if let Some(size) = t.datatype.element_size()
        && count.checked_mul(size as u64) != Some(data.len() as u64)
    {
        return Err(size_mismatch(&t.name));
    }
    match t.datatype {
        DataType::Bool => write_elements::<1>(out, data, |o, [b]| json::write_bool(o, b != 0)),
        DataType::Uint8 => write_elements::<1>(out, data, |o, [b]| json::write_u64(o, b.into())),
        DataType::Int8 => write_elements::<1>(out, data, |o, b| {
            json::write_i64(o, i8::from_le_bytes(b).into())
        }),
        DataType::Uint16 => write_elements::<2>(out, data, |o, b| {
            json::write_u64(o, u16::from_le_bytes(b).into())
        }),
        DataType::Int16 => write_elements::<2>(out, data, |o, b| {
            json::write_i64(o, i16::from_le_bytes(b).into())
        }),
        DataType::Uint32 => write_elements::<4>(out, data, |o, b| {
            json::write_u64(o, u32::from_le_bytes(b).into())
        }),
        DataType::Int32 => write_elements::<4>(out, data, |o, b| {
            json::write_i64(o, i32::from_le_bytes(b).into())
        }),
        DataType::Uint64 => {
            write_elements::<8>(out, data, |o, b| json::write_u64(o, u64::from_le_bytes(b)))
        }
        DataType::Int64 => {
            write_elements::<8>(out, data, |o, b| json::write_i64(o, i64::from_le_bytes(b)))
        }
        DataType::Fp16 => write_elements::<2>(out, data, |o, b| {
            json::write_f32(o, f16::from_le_bytes(b).to_f32())
        }),
        DataType::Bf16 => write_elements::<2>(out, data, |o, b| {
            json::write_f32(o, bf16::from_le_bytes(b).to_f32())
        }),
        DataType::Fp32 => {
            write_elements::<4>(out, data, |o, b| json::write_f32(o, f32::from_le_bytes(b)))
        }
        DataType::Fp64 => {
            write_elements::<8>(out, data, |o, b| json::write_f64(o, f64::from_le_bytes(b)))
        }
        DataType::Bytes => {
            let bad = || {
                Error::internal(format!(
                    "output tensor shape does not match size of output for '{}'",
                    t.name
                ))
            };
            let mut rest = data;
            for i in 0..count {
                if rest.len() < 4 {
                    return Err(bad());
                }
                let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let element = rest.get(4..4 + len).ok_or_else(bad)?;
                if i > 0 {
                    out.push(b',');
                }
                // A JSON document is UTF-8; bytes that are not can only be
                // returned as binary data.
                let text = std::str::from_utf8(element).map_err(|_| {
                    Error::invalid_arg(format!(
                        "output '{}' element {i} is not valid UTF-8, so it cannot be returned as JSON; request the output with \"binary_data\": true",
                        t.name
                    ))
                })?;
                json::write_str(out, text);
                rest = &rest[4 + len..];
            }
        }
    }
    Ok(())
}
