//! Codec test vectors: every datatype through JSON and binary, nesting,
//! BYTES, raw bodies, the response encoder, and each error path with the
//! wording and code a client sees.

use bytes::Bytes;
use serde_json::{Value, json};

use super::*;
use crate::core::proto::{ModelConfig, ModelInput};
use crate::core::{Code, DataType, InferResponse, ParamValue, Parameters, Tensor};

fn decode_json(body: &str) -> crate::core::Result<DecodedRequest> {
    let body = Bytes::copy_from_slice(body.as_bytes());
    decode_infer_request("simple", None, &body, body.len())
}

fn decode_value(v: Value) -> crate::core::Result<DecodedRequest> {
    decode_json(&v.to_string())
}

fn err(v: Value) -> crate::core::Error {
    decode_value(v).expect_err("request must be refused")
}

fn one_input(datatype: &str, shape: Value, data: Value) -> Value {
    json!({"inputs":[{"name":"INPUT0","shape":shape,"datatype":datatype,"data":data}]})
}

fn le_bytes<T: Copy, const N: usize>(values: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| f(v)).collect()
}

/// (datatype, JSON data, expected raw bytes) for every datatype.
fn every_datatype() -> Vec<(DataType, Value, Vec<u8>)> {
    vec![
        (DataType::Bool, json!([true, false, true]), vec![1, 0, 1]),
        (DataType::Uint8, json!([0, 7, 255]), vec![0, 7, 255]),
        (
            DataType::Uint16,
            json!([0, 65535, 2]),
            le_bytes(&[0u16, 65535, 2], u16::to_le_bytes),
        ),
        (
            DataType::Uint32,
            json!([0, 4294967295u64, 2]),
            le_bytes(&[0u32, u32::MAX, 2], u32::to_le_bytes),
        ),
        (
            DataType::Uint64,
            json!([0, u64::MAX, 2]),
            le_bytes(&[0u64, u64::MAX, 2], u64::to_le_bytes),
        ),
        (
            DataType::Int8,
            json!([-128, 127, 0]),
            le_bytes(&[-128i8, 127, 0], i8::to_le_bytes),
        ),
        (
            DataType::Int16,
            json!([-32768, 32767, 1]),
            le_bytes(&[i16::MIN, i16::MAX, 1], i16::to_le_bytes),
        ),
        (
            DataType::Int32,
            json!([i32::MIN, i32::MAX, -1]),
            le_bytes(&[i32::MIN, i32::MAX, -1], i32::to_le_bytes),
        ),
        (
            DataType::Int64,
            json!([i64::MIN, i64::MAX, 5]),
            le_bytes(&[i64::MIN, i64::MAX, 5], i64::to_le_bytes),
        ),
        (
            DataType::Fp16,
            json!([1.5, -2, 65504]),
            le_bytes(
                &[
                    half::f16::from_f32(1.5),
                    half::f16::from_f32(-2.0),
                    half::f16::MAX,
                ],
                half::f16::to_le_bytes,
            ),
        ),
        (
            DataType::Bf16,
            json!([1.5, -2, 0.25]),
            le_bytes(
                &[
                    half::bf16::from_f32(1.5),
                    half::bf16::from_f32(-2.0),
                    half::bf16::from_f32(0.25),
                ],
                half::bf16::to_le_bytes,
            ),
        ),
        (
            DataType::Fp32,
            json!([0.1, -3, 3.4028234663852886e38]),
            le_bytes(&[0.1f32, -3.0, f32::MAX], f32::to_le_bytes),
        ),
        (
            DataType::Fp64,
            json!([0.1, -3, 1e300]),
            le_bytes(&[0.1f64, -3.0, 1e300], f64::to_le_bytes),
        ),
        (DataType::Bytes, json!(["ab", "", "✓"]), {
            let mut v = Vec::new();
            for s in ["ab", "", "✓"] {
                crate::core::tensor::push_bytes_element(&mut v, s.as_bytes());
            }
            v
        }),
    ]
}

#[test]
fn every_datatype_decodes_from_json() {
    for (dt, data, raw) in every_datatype() {
        let d = decode_value(one_input(dt.wire_name(), json!([3]), data.clone()))
            .unwrap_or_else(|e| panic!("{dt}: {e}"));
        let t = &d.request.inputs[0];
        assert_eq!((t.datatype, &t.shape[..]), (dt, &[3i64][..]), "{dt}");
        assert_eq!(&t.data[..], &raw[..], "{dt}");

        // The same with `data` before `datatype` and `shape`.
        let reordered = format!(
            r#"{{"inputs":[{{"data":{data},"name":"INPUT0","datatype":"{}","shape":[3]}}]}}"#,
            dt.wire_name()
        );
        let d2 = decode_json(&reordered).unwrap_or_else(|e| panic!("{dt}: {e}"));
        assert_eq!(&d2.request.inputs[0].data[..], &raw[..], "{dt} reordered");
    }
}

#[test]
fn every_datatype_round_trips_through_json_response() {
    for (dt, data, raw) in every_datatype() {
        let response = InferResponse {
            model_name: "m".into(),
            model_version: 1,
            outputs: vec![Tensor::new("OUT", dt, vec![3], Bytes::from(raw.clone())).unwrap()],
            ..InferResponse::default()
        };
        let enc = encode_infer_response(&response, &ResponseFormat::default()).unwrap();
        assert_eq!(enc.json_length, None);
        assert_eq!(enc.body.len(), 1);
        let v: Value = serde_json::from_slice(&enc.body[0]).unwrap();
        let out = &v["outputs"][0];
        assert_eq!(out["datatype"], dt.wire_name());
        assert_eq!(out["shape"], json!([3]));
        // Decoding the emitted data gives back the same bytes.
        let again = decode_value(one_input(dt.wire_name(), json!([3]), out["data"].clone()))
            .unwrap_or_else(|e| panic!("{dt}: {e}"));
        assert_eq!(&again.request.inputs[0].data[..], &raw[..], "{dt}");
        if dt == DataType::Bytes || dt == DataType::Bool {
            assert_eq!(out["data"], data, "{dt}");
        }
    }
}

#[test]
fn every_datatype_decodes_from_binary_without_copying() {
    for (dt, _, raw) in every_datatype() {
        let header = json!({"inputs":[{"name":"INPUT0","shape":[3],"datatype":dt.wire_name(),
            "parameters":{"binary_data_size":raw.len()}}]})
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend_from_slice(&raw);
        let body = Bytes::from(body);
        let d = decode_infer_request("m", Some(2), &body, header.len()).unwrap();
        let t = &d.request.inputs[0];
        assert_eq!(&t.data[..], &raw[..], "{dt}");
        assert_eq!(d.request.model_version, Some(2));
        // Zero copy: the tensor points into the request body.
        assert_eq!(t.data.as_ptr(), body[header.len()..].as_ptr(), "{dt}");
    }
}

#[test]
fn nested_arrays_flatten() {
    let d = decode_value(one_input("INT32", json!([2, 2]), json!([[1, 2], [3, [4]]]))).unwrap();
    assert_eq!(
        &d.request.inputs[0].data[..],
        &le_bytes(&[1i32, 2, 3, 4], i32::to_le_bytes)[..]
    );
}

#[test]
fn request_fields_and_parameters() {
    // A string, not `json!`, whose maps would sort the keys.
    let d = decode_json(
        r#"{
        "id": "r1",
        "parameters": {"z": 1, "a": "s", "b": true, "d": 0.5, "big": 18446744073709551615,
            "sequence_id": 7, "sequence_start": true, "priority": 2,
            "binary_data_output": true},
        "inputs": [{"name":"INPUT0","shape":[1],"datatype":"INT32","data":[1]}],
        "outputs": [
            {"name":"OUTPUT0","parameters":{"binary_data":false,"classification":3}},
            {"name":"OUTPUT1","parameters":{"binary_data":true,"other":"x"}},
            {"name":"OUTPUT2"}
        ]
    }"#,
    )
    .unwrap();
    let r = &d.request;
    assert_eq!(r.id.as_deref(), Some("r1"));
    assert_eq!(r.model_name, "simple");
    let keys: Vec<&str> = r.parameters.0.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "z",
            "a",
            "b",
            "d",
            "big",
            "sequence_id",
            "sequence_start",
            "priority"
        ]
    );
    assert_eq!(r.parameters.get("z"), Some(&ParamValue::Int(1)));
    assert_eq!(r.parameters.get("d"), Some(&ParamValue::Double(0.5)));
    assert_eq!(
        r.parameters.get("big"),
        Some(&ParamValue::Double(u64::MAX as f64))
    );
    assert_eq!(r.parameters.get("sequence_id"), Some(&ParamValue::Int(7)));
    assert!(d.format.binary_default);
    assert_eq!(r.outputs[0].class_count, 3);
    assert_eq!(r.outputs[0].binary_data, Some(false));
    assert_eq!(r.outputs[1].binary_data, Some(true));
    assert_eq!(
        r.outputs[1].parameters.get("other"),
        Some(&ParamValue::String("x".into()))
    );
    // Named outputs are JSON unless they ask; unnamed follow the default.
    assert!(!d.format.is_binary("OUTPUT0"));
    assert!(d.format.is_binary("OUTPUT1"));
    assert!(!d.format.is_binary("OUTPUT2"));
    assert!(d.format.is_binary("UNNAMED"));

    // An empty id is no id.
    let d = decode_value(json!({"id":"","inputs":[]})).unwrap();
    assert_eq!(d.request.id, None);
}

fn assert_err(e: &crate::core::Error, code: Code, message: &str) {
    assert_eq!((e.code(), e.message()), (code, message));
}

#[test]
fn element_count_mismatches() {
    assert_err(
        &err(one_input("INT32", json!([1, 16]), json!([1, 2, 3]))),
        Code::InvalidArg,
        "Failed to parse 'data' field: shape does not match true shape",
    );
    assert_err(
        &err(one_input("INT32", json!([1, 2]), json!([1, 2, 3]))),
        Code::InvalidArg,
        "Unable to parse 'data': Shape does not match true shape of 'data' field",
    );
    // Same when the shape comes after the data.
    let e =
        decode_json(r#"{"inputs":[{"data":[1,2,3],"datatype":"FP32","name":"I","shape":[2]}]}"#)
            .unwrap_err();
    assert_err(
        &e,
        Code::InvalidArg,
        "Unable to parse 'data': Shape does not match true shape of 'data' field",
    );
}

#[test]
fn wrong_element_types() {
    let cases = [
        ("INT32", json!(["1"]), "signed-integer as signed-integer"),
        ("INT32", json!([1.5]), "signed-integer as signed-integer"),
        ("UINT8", json!([-1]), "unsigned-integer as unsigned-integer"),
        ("BOOL", json!([1]), "boolean as boolean"),
        ("FP32", json!(["1"]), "number as double"),
        ("FP32", json!([null]), "number as double"),
        ("BYTES", json!([1]), "string as string"),
        (
            "INT64",
            json!([{"a": 1}]),
            "signed-integer as signed-integer",
        ),
    ];
    for (dt, data, tail) in cases {
        let e = err(one_input(dt, json!([1]), data));
        assert_eq!(e.code(), Code::InvalidArg, "{dt}");
        assert!(
            e.message()
                .starts_with("Unable to parse 'data': attempt to access JSON non-"),
            "{}",
            e.message()
        );
        assert!(e.message().ends_with(tail), "{dt}: {}", e.message());
    }
    assert_err(
        &err(one_input("INT32", json!([1]), json!(5))),
        Code::InvalidArg,
        "Unable to parse 'data': attempt to access JSON non-array as array",
    );
}

#[test]
fn out_of_range_elements() {
    let cases = [
        ("UINT8", json!([256]), "256"),
        ("INT8", json!([-129]), "-129"),
        ("INT16", json!([40000]), "40000"),
        ("INT32", json!([2147483648u64]), "2147483648"),
        ("UINT32", json!([4294967296u64]), "4294967296"),
        ("INT64", json!([u64::MAX]), "18446744073709551615"),
        ("FP16", json!([70000.0]), "70000.0"),
        ("FP32", json!([1e39]), "1e39"),
    ];
    for (dt, data, shown) in cases {
        let e = err(one_input(dt, json!([1]), data));
        assert_err(
            &e,
            Code::InvalidArg,
            &format!(
                "Unable to parse 'data': value {shown} of input 'INPUT0' is out of range for {dt}"
            ),
        );
    }
}

#[test]
fn shapes() {
    assert_err(
        &err(one_input("FP32", json!([2, -5]), json!([1.0]))),
        Code::Internal,
        "Unable to parse 'shape': attempt to access JSON non-unsigned-integer as unsigned-integer",
    );
    let e = err(one_input(
        "FP32",
        json!([16, (1u64 << 60) + 2]),
        json!([1.0]),
    ));
    assert_eq!(e.code(), Code::InvalidArg);
    assert!(
        e.message()
            .contains("causes total element count to exceed maximum size of 9223372036854775807"),
        "{}",
        e.message()
    );
    let e = err(one_input(
        "FP32",
        json!([4, (1u64 << 60) + 2]),
        json!([1.0]),
    ));
    assert_eq!(e.code(), Code::InvalidArg);
    assert!(
        e.message()
            .starts_with("byte size overflow for input 'INPUT0'"),
        "{}",
        e.message()
    );
    assert_err(
        &err(one_input("FP32", json!([1u64 << 63]), json!([1.0]))),
        Code::InvalidArg,
        "invalid shape for input 'INPUT0': shape [9223372036854775808] contains one or more invalid dimensions",
    );
    assert_err(
        &err(one_input("FP32", json!(3), json!([1.0]))),
        Code::InvalidArg,
        "Unable to parse 'shape': attempt to access JSON non-array as array",
    );
    // A zero dimension: no elements, the data is not looked at.
    let d = decode_value(one_input("FP32", json!([0, 4]), json!([]))).unwrap();
    assert!(d.request.inputs[0].data.is_empty());
    // A huge shape with tiny data does not allocate the shape's size.
    let e = err(one_input("FP64", json!([1u64 << 40]), json!([1.0])));
    assert_eq!(
        e.message(),
        "Failed to parse 'data' field: shape does not match true shape"
    );
}

#[test]
fn structure_errors() {
    assert_err(
        &decode_json("{\"inputs\":[").unwrap_err(),
        Code::InvalidArg,
        "failed to parse the request JSON buffer: EOF while parsing a list at line 1 column 11",
    );
    assert!(
        decode_json("{} x")
            .unwrap_err()
            .message()
            .starts_with("failed to parse the request JSON buffer: trailing characters")
    );
    assert_err(
        &err(json!({})),
        Code::InvalidArg,
        "Unable to parse 'inputs': attempt to access non-existing object member 'inputs'",
    );
    assert_err(
        &err(json!([1])),
        Code::InvalidArg,
        "Unable to parse 'inputs': attempt to access non-existing object member 'inputs'",
    );
    assert_err(
        &err(json!({"inputs": {}})),
        Code::InvalidArg,
        "Unable to parse 'inputs': attempt to access JSON non-array as array",
    );
    assert_err(
        &err(json!({"id": 5, "inputs": []})),
        Code::InvalidArg,
        "Unable to parse 'id': attempt to access JSON non-string as string",
    );
    assert_err(
        &err(json!({"inputs": [{"name":"I","shape":[1],"datatype":"INT32"}]})),
        Code::InvalidArg,
        "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', 'shared_memory_region' in 'parameters'. But no field is set",
    );
    assert_err(
        &err(
            json!({"inputs": [{"name":"I","shape":[1],"datatype":"INT32","data":[1],
            "parameters":{"binary_data_size":4}}]}),
        ),
        Code::InvalidArg,
        "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', 'shared_memory_region' in 'parameters'. But set 'data' 'binary_data_size'",
    );
    assert_err(
        &err(json!({"inputs": [{"shape":[1],"datatype":"INT32","data":[1]}]})),
        Code::InvalidArg,
        "Unable to parse 'name': attempt to access non-existing object member 'name'",
    );
    assert_err(
        &err(json!({"inputs": [{"name":"I","shape":[1],"datatype":7,"data":[1]}]})),
        Code::InvalidArg,
        "Unable to parse 'datatype': attempt to access JSON non-string as string",
    );
    assert_err(
        &err(one_input("INT31", json!([1]), json!([1]))),
        Code::InvalidArg,
        "invalid datatype for input INPUT0",
    );
    assert_err(
        &err(
            json!({"inputs": [{"name":"I","shape":[1],"datatype":"INT32",
            "parameters":{"shared_memory_region":"r","shared_memory_offset":-1}}]}),
        ),
        Code::InvalidArg,
        "Unable to parse 'shared_memory_offset': attempt to access JSON non-unsigned-integer as unsigned-integer",
    );
}

#[test]
fn shared_memory_references_are_kept_for_the_server() {
    let decoded = decode_value(json!({
        "inputs": [{"name":"I","shape":[2],"datatype":"INT32",
            "parameters":{"shared_memory_region":"in","shared_memory_offset":8,
                          "shared_memory_byte_size":8}}],
        "outputs": [{"name":"O","parameters":{"shared_memory_region":"out",
            "shared_memory_byte_size":16}}, {"name":"P"}]
    }))
    .unwrap();
    let r = &decoded.request;
    assert_eq!(r.inputs[0].shape, vec![2]);
    assert!(r.inputs[0].data.is_empty());
    let shm = |region: &str, offset, byte_size| crate::core::ShmRef {
        region: region.into(),
        offset,
        byte_size,
    };
    assert_eq!(r.shm_inputs, vec![("I".to_owned(), shm("in", 8, 8))]);
    assert_eq!(r.outputs[0].shm, Some(shm("out", 0, 16)));
    assert!(r.outputs[0].parameters.is_empty());
    assert_eq!(r.outputs[1].shm, None);
    assert!(decoded.format.is_in_shm("O"));
    assert!(!decoded.format.is_in_shm("P"));
    // An output in shared memory goes out without data.
    let response = InferResponse {
        outputs: vec![Tensor {
            name: "O".into(),
            datatype: DataType::Int32,
            shape: vec![2],
            data: Bytes::new(),
        }],
        ..InferResponse::default()
    };
    let enc = encode_infer_response(&response, &decoded.format).unwrap();
    assert_eq!(enc.body.len(), 1);
    assert_eq!(
        std::str::from_utf8(&enc.body[0]).unwrap(),
        r#"{"model_name":"","model_version":"0","outputs":[{"name":"O","datatype":"INT32","shape":[2]}]}"#
    );
}

#[test]
fn parameter_errors() {
    let with = |p: Value| json!({"parameters": p, "inputs": []});
    assert_err(
        &err(with(json!({"triton_x": 1}))),
        Code::InvalidArg,
        "parameter keys starting with 'triton_' are reserved for Triton usage and should not be specified.",
    );
    assert_err(
        &err(with(json!({"p": [1]}))),
        Code::InvalidArg,
        "parameter 'p' has invalid type. It should be either 'int', 'bool', or 'string'.",
    );
    assert_err(
        &err(with(json!({"binary_data_output": 1}))),
        Code::InvalidArg,
        "Unable to parse 'binary_data_output': attempt to access JSON non-boolean as boolean",
    );
    assert_err(
        &err(with(json!({"priority": -1}))),
        Code::InvalidArg,
        "Unable to parse 'priority': attempt to access JSON non-unsigned-integer as unsigned-integer",
    );
    assert_err(
        &err(with(json!({"sequence_id": true}))),
        Code::InvalidArg,
        "Unable to parse 'sequence_id': attempt to access JSON non-string as string",
    );
    assert_err(
        &err(with(json!(3))),
        Code::InvalidArg,
        "failed to get request params.: attempt to get members for non-object",
    );
    let outputs = |o: Value| json!({"inputs": [], "outputs": o});
    assert_err(
        &err(outputs(json!({}))),
        Code::InvalidArg,
        "Unable to parse 'outputs': attempt to access JSON non-array as array",
    );
    assert_err(
        &err(outputs(json!([{"parameters":{"classification":2}}]))),
        Code::InvalidArg,
        "Unable to parse 'name': attempt to access non-existing object member 'name'",
    );
    assert_err(
        &err(outputs(
            json!([{"name":"O","parameters":{"classification":-2}}]),
        )),
        Code::InvalidArg,
        "Unable to set 'classification': attempt to access JSON non-unsigned-integer as unsigned-integer",
    );
    assert_err(
        &err(outputs(
            json!([{"name":"O","parameters":{"binary_data":"yes"}}]),
        )),
        Code::InvalidArg,
        "Unable to parse 'binary_data': attempt to access JSON non-boolean as boolean",
    );
    assert_err(
        &err(outputs(
            json!([{"name":"O","parameters":{"shared_memory_region":"r","classification":1}}]),
        )),
        Code::InvalidArg,
        "Output can't set both 'shared_memory_region' and 'classification'",
    );
}

fn binary_body(header: &Value, tail: &[u8]) -> (Bytes, usize) {
    let h = header.to_string();
    let mut b = h.clone().into_bytes();
    b.extend_from_slice(tail);
    (Bytes::from(b), h.len())
}

#[test]
fn binary_size_errors() {
    let header = json!({"inputs":[
        {"name":"INPUT0","shape":[1,2],"datatype":"INT32","parameters":{"binary_data_size":8}},
        {"name":"INPUT1","shape":[1,2],"datatype":"INT32","parameters":{"binary_data_size":8}}]});
    // Truncated: the second input is 4 bytes short.
    let (body, hl) = binary_body(&header, &[0u8; 12]);
    assert_err(
        &decode_infer_request("simple", None, &body, hl).unwrap_err(),
        Code::InvalidArg,
        "unexpected size for input 'INPUT1', expecting 4 additional bytes for model 'simple'",
    );
    // Extra bytes after the last input.
    let (body, hl) = binary_body(&header, &[0u8; 17]);
    assert_err(
        &decode_infer_request("simple", None, &body, hl).unwrap_err(),
        Code::InvalidArg,
        "unexpected additional input data for model 'simple'",
    );
    // Exact: both slices, in order.
    let tail: Vec<u8> = (0u8..16).collect();
    let (body, hl) = binary_body(&header, &tail);
    let d = decode_infer_request("simple", None, &body, hl).unwrap();
    assert_eq!(&d.request.inputs[0].data[..], &tail[..8]);
    assert_eq!(&d.request.inputs[1].data[..], &tail[8..]);
    // A declared size that disagrees with the shape reaches the model's
    // validation untouched (Triton reports it there).
    let header = json!({"inputs":[
        {"name":"INPUT0","shape":[1,2],"datatype":"INT32","parameters":{"binary_data_size":4}}]});
    let (body, hl) = binary_body(&header, &[0u8; 4]);
    let d = decode_infer_request("simple", None, &body, hl).unwrap();
    assert_eq!(d.request.inputs[0].data.len(), 4);
    // Mixed JSON and binary inputs.
    let header = json!({"inputs":[
        {"name":"A","shape":[1],"datatype":"INT32","data":[9]},
        {"name":"B","shape":[1],"datatype":"INT32","parameters":{"binary_data_size":4}}]});
    let (body, hl) = binary_body(&header, &7i32.to_le_bytes());
    let d = decode_infer_request("simple", None, &body, hl).unwrap();
    assert_eq!(&d.request.inputs[0].data[..], &9i32.to_le_bytes());
    assert_eq!(&d.request.inputs[1].data[..], &7i32.to_le_bytes());
    let header = json!({"inputs":[
        {"name":"A","shape":[1],"datatype":"INT32","parameters":{"binary_data_size":-4}}]});
    let (body, hl) = binary_body(&header, &[]);
    assert_err(
        &decode_infer_request("simple", None, &body, hl).unwrap_err(),
        Code::InvalidArg,
        "Unable to parse 'binary_data_size': attempt to access JSON non-unsigned-integer as unsigned-integer",
    );
}

#[test]
fn header_length_values() {
    assert_eq!(json_header_length(None, 10).unwrap(), 10);
    assert_eq!(json_header_length(Some("0"), 10).unwrap(), 0);
    assert_eq!(json_header_length(Some(" 7xyz"), 10).unwrap(), 7);
    assert_err(
        &json_header_length(Some("abc"), 10).unwrap_err(),
        Code::InvalidArg,
        "Unable to parse Inference-Header-Content-Length, got: abc",
    );
    assert_err(
        &json_header_length(Some("99999999999"), 10).unwrap_err(),
        Code::InvalidArg,
        "Unable to parse Inference-Header-Content-Length, value is out of range [ -2147483648, 2147483647 ], got: 99999999999",
    );
    assert_err(
        &json_header_length(Some("11"), 10).unwrap_err(),
        Code::InvalidArg,
        "inference header size should be in range (0, 10), got: 11",
    );
    assert_err(
        &json_header_length(Some("-1"), 10).unwrap_err(),
        Code::InvalidArg,
        "inference header size should be in range (0, 10), got: -1",
    );
}

fn config(max_batch_size: i32, inputs: &[(&str, DataType, &[i64])]) -> ModelConfig {
    ModelConfig {
        name: "m".into(),
        max_batch_size,
        input: inputs
            .iter()
            .map(|(n, dt, dims)| ModelInput {
                name: (*n).into(),
                data_type: dt.config_enum(),
                dims: dims.to_vec(),
                ..ModelInput::default()
            })
            .collect(),
        ..ModelConfig::default()
    }
}

#[test]
fn raw_bodies() {
    let body = Bytes::from(le_bytes(&[1.0f32, 2.0, 3.0, 4.0], f32::to_le_bytes));
    let c = config(8, &[("INPUT0", DataType::Fp32, &[-1])]);
    let d = decode_raw_infer_request("m", None, &c, body.clone()).unwrap();
    let t = &d.request.inputs[0];
    assert_eq!((t.name.as_str(), t.datatype), ("INPUT0", DataType::Fp32));
    assert_eq!(t.shape, vec![1, 4]);
    assert_eq!(t.data.as_ptr(), body.as_ptr());
    assert!(d.format.binary_default);

    let c = config(0, &[("INPUT0", DataType::Fp32, &[2, -1])]);
    let d = decode_raw_infer_request("m", None, &c, body.clone()).unwrap();
    assert_eq!(d.request.inputs[0].shape, vec![2, 2]);

    let c = config(0, &[("INPUT0", DataType::Bytes, &[1])]);
    let d = decode_raw_infer_request("m", None, &c, Bytes::from_static(b"427")).unwrap();
    assert_eq!(&d.request.inputs[0].data[..], b"\x03\x00\x00\x00427");

    let c = config(0, &[("INPUT0", DataType::Bytes, &[-1])]);
    assert_err(
        &decode_raw_infer_request("m", None, &c, body.clone()).unwrap_err(),
        Code::InvalidArg,
        "For BYTE datatype raw input 'INPUT0', the model must have input shape [1]",
    );
    let c = config(0, &[("INPUT0", DataType::Fp16, &[-1, -1])]);
    assert_err(
        &decode_raw_infer_request("m", None, &c, body.clone()).unwrap_err(),
        Code::InvalidArg,
        "The shape of the raw input 'INPUT0' can not be deduced because there are more than one variable-sized dimension",
    );
    let c = config(
        8,
        &[
            ("INPUT0", DataType::Int32, &[16]),
            ("INPUT1", DataType::Int32, &[16]),
        ],
    );
    assert_err(
        &decode_raw_infer_request("simple", None, &c, body).unwrap_err(),
        Code::InvalidArg,
        "Raw request must only have 1 input (found 1) to be deduced but got 2 inputs in 'simple' model configuration",
    );
}

fn simple_response() -> InferResponse {
    let a: Vec<i32> = (0..16).collect();
    InferResponse {
        model_name: "simple".into(),
        model_version: 1,
        id: Some("x\"1".into()),
        outputs: vec![
            Tensor::new(
                "OUTPUT0",
                DataType::Int32,
                vec![1, 16],
                Bytes::from(le_bytes(&a, i32::to_le_bytes)),
            )
            .unwrap(),
            Tensor::new(
                "OUTPUT1",
                DataType::Fp32,
                vec![1, 2],
                Bytes::from(le_bytes(&[0.1f32, -2.5], f32::to_le_bytes)),
            )
            .unwrap(),
        ],
        parameters: Parameters(vec![("p".into(), ParamValue::Bool(true))]),
    }
}

#[test]
fn json_response_text() {
    let enc = encode_infer_response(&simple_response(), &ResponseFormat::default()).unwrap();
    let text = std::str::from_utf8(&enc.body[0]).unwrap();
    assert_eq!(
        text,
        concat!(
            r#"{"id":"x\"1","model_name":"simple","model_version":"1","parameters":{"p":true},"#,
            r#""outputs":[{"name":"OUTPUT0","datatype":"INT32","shape":[1,16],"#,
            r#""data":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]},"#,
            r#"{"name":"OUTPUT1","datatype":"FP32","shape":[1,2],"data":[0.1,-2.5]}]}"#
        )
    );
}

#[test]
fn binary_response_parts() {
    let response = simple_response();
    let format = ResponseFormat {
        binary_default: false,
        outputs: vec![("OUTPUT0".into(), true), ("OUTPUT1".into(), false)],
        ..ResponseFormat::default()
    };
    let enc = encode_infer_response(&response, &format).unwrap();
    assert_eq!(enc.body.len(), 2);
    assert_eq!(enc.json_length, Some(enc.body[0].len()));
    // The binary part is the tensor's own buffer.
    assert_eq!(enc.body[1].as_ptr(), response.outputs[0].data.as_ptr());
    let v: Value = serde_json::from_slice(&enc.body[0]).unwrap();
    assert_eq!(
        v["outputs"][0]["parameters"],
        json!({"binary_data_size": 64})
    );
    assert!(v["outputs"][0].get("data").is_none());
    assert_eq!(v["outputs"][1]["data"], json!([0.1, -2.5]));

    // An empty binary output declares size 0 and adds no chunk.
    let empty = InferResponse {
        model_name: "m".into(),
        outputs: vec![Tensor::new("O", DataType::Fp32, vec![0], Bytes::new()).unwrap()],
        ..InferResponse::default()
    };
    let all_binary = ResponseFormat {
        binary_default: true,
        ..ResponseFormat::default()
    };
    let enc = encode_infer_response(&empty, &all_binary).unwrap();
    assert_eq!((enc.body.len(), enc.json_length), (1, None));
}

#[test]
fn malformed_outputs_are_refused() {
    let bad = InferResponse {
        model_name: "m".into(),
        outputs: vec![Tensor {
            name: "O".into(),
            datatype: DataType::Int32,
            shape: vec![3],
            data: Bytes::from_static(&[0; 8]),
        }],
        ..InferResponse::default()
    };
    assert_err(
        &encode_infer_response(&bad, &ResponseFormat::default()).unwrap_err(),
        Code::Internal,
        "Failed to write 'data' field: output tensor shape does not match size of output for 'O'",
    );
    let bad_bytes = InferResponse {
        model_name: "m".into(),
        outputs: vec![Tensor {
            name: "S".into(),
            datatype: DataType::Bytes,
            shape: vec![2],
            data: Bytes::from_static(b"\x01\x00\x00\x00a\x05\x00\x00"),
        }],
        ..InferResponse::default()
    };
    assert_err(
        &encode_infer_response(&bad_bytes, &ResponseFormat::default()).unwrap_err(),
        Code::Internal,
        "output tensor shape does not match size of output for 'S'",
    );
}

#[test]
fn bytes_that_are_not_utf8_are_refused_as_json_but_sent_as_binary() {
    let response = InferResponse {
        model_name: "m".into(),
        outputs: vec![Tensor {
            name: "S".into(),
            datatype: DataType::Bytes,
            shape: vec![1],
            data: Bytes::from_static(b"\x01\x00\x00\x00\xde"),
        }],
        ..InferResponse::default()
    };
    let e = encode_infer_response(&response, &ResponseFormat::default()).unwrap_err();
    assert!(
        e.message()
            .contains("output 'S' element 0 is not valid UTF-8"),
        "{e}"
    );
    let all_binary = ResponseFormat {
        binary_default: true,
        ..ResponseFormat::default()
    };
    assert!(encode_infer_response(&response, &all_binary).is_ok());
}

/// `data` wrapped in `depth` arrays around one scalar.
fn nested(depth: usize, scalar: &str) -> String {
    format!("{}{scalar}{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn data_nesting_stops_at_triton_limit() {
    for (datatype, scalar) in [("BYTES", "\"hello\""), ("INT64", "123")] {
        let body = |depth| {
            format!(
                r#"{{"inputs":[{{"name":"INPUT0","datatype":"{datatype}","shape":[1,1],"data":{}}}]}}"#,
                nested(depth, scalar)
            )
        };
        // The scalar at level 99 is the deepest allowed, level 100 is not.
        let ok = decode_json(&body(99)).expect("99 levels are allowed");
        assert_eq!(ok.request.inputs[0].shape, vec![1, 1]);
        for depth in [100, 120, 5000] {
            assert_err(
                &decode_json(&body(depth)).unwrap_err(),
                Code::InvalidArg,
                "JSON nesting depth exceeds maximum allowed limit (100)",
            );
        }
    }
}

#[test]
fn duplicate_names_already_exist_in_request() {
    let input = json!({"name":"INPUT0","shape":[1],"datatype":"INT32","data":[1]});
    assert_err(
        &err(json!({"inputs":[input.clone()],"outputs":[{"name":"OUTPUT0"},{"name":"OUTPUT0"}]})),
        Code::InvalidArg,
        "output 'OUTPUT0' already exists in request",
    );
    assert_err(
        &err(json!({"id":"r7","inputs":[input.clone(), input]})),
        Code::InvalidArg,
        "[request id: r7] input 'INPUT0' already exists in request",
    );
}

#[test]
fn syntax_errors_are_the_clients_and_name_the_input() {
    let e =
        decode_json(r#"{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1],"data":[NaN]}]}"#)
            .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArg);
    assert!(
        e.message()
            .starts_with("failed to parse the request JSON buffer: in input 'INPUT0': "),
        "{}",
        e.message()
    );
    // Invalid UTF-8 inside a string, outside any input.
    let body = Bytes::from_static(b"{\"id\":\"\xff\",\"inputs\":[]}");
    let e = decode_infer_request("simple", None, &body, body.len()).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArg);
    assert!(
        e.message()
            .starts_with("failed to parse the request JSON buffer: invalid unicode"),
        "{}",
        e.message()
    );
}
