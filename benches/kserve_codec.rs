//! KServe REST codec micro-benchmarks: decoding requests and encoding
//! responses for Triton's `simple` model (two INT32 [1,16] tensors), as JSON
//! and with the binary tensor data extension, and a 1 MiB FP32 tensor both
//! ways. The binary paths do not copy tensor bytes (inputs are slices of
//! the body, outputs are the tensors' own buffers), so their cost is the
//! JSON header alone; the JSON paths convert every element.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nereid::core::{DataType, InferResponse, Tensor};
use nereid::protocol::kserve::{
    ResponseFormat, decode_infer_request, encode_infer_response, json_header_length,
};

fn json_request(elements: usize, datatype: &str, value: impl Fn(usize) -> String) -> Bytes {
    let data: Vec<String> = (0..elements).map(value).collect();
    let input = |name: &str| {
        format!(
            r#"{{"name":"{name}","shape":[1,{elements}],"datatype":"{datatype}","data":[{}]}}"#,
            data.join(",")
        )
    };
    Bytes::from(format!(
        r#"{{"id":"1","inputs":[{},{}]}}"#,
        input("INPUT0"),
        input("INPUT1")
    ))
}

fn binary_request(inputs: &[(&str, &str, usize, &[u8])]) -> (Bytes, usize) {
    let specs: Vec<String> = inputs
        .iter()
        .map(|(name, datatype, n, data)| {
            format!(
                r#"{{"name":"{name}","shape":[1,{n}],"datatype":"{datatype}","parameters":{{"binary_data_size":{}}}}}"#,
                data.len()
            )
        })
        .collect();
    let header = format!(
        r#"{{"id":"1","inputs":[{}],"parameters":{{"binary_data_output":true}}}}"#,
        specs.join(",")
    );
    let mut body = header.clone().into_bytes();
    for (_, _, _, data) in inputs {
        body.extend_from_slice(data);
    }
    (Bytes::from(body), header.len())
}

fn response(outputs: Vec<Tensor>) -> InferResponse {
    InferResponse {
        model_name: "simple".into(),
        model_version: 1,
        id: Some("1".into()),
        outputs,
        ..InferResponse::default()
    }
}

fn int32_tensor(name: &str, n: usize) -> Tensor {
    let data: Vec<u8> = (0..n as i32).flat_map(i32::to_le_bytes).collect();
    Tensor::new(name, DataType::Int32, vec![1, n as i64], Bytes::from(data)).unwrap()
}

fn fp32_tensor(name: &str, n: usize) -> Tensor {
    let data: Vec<u8> = (0..n)
        .flat_map(|i| (i as f32 * 0.37 - 1000.0).to_le_bytes())
        .collect();
    Tensor::new(name, DataType::Fp32, vec![1, n as i64], Bytes::from(data)).unwrap()
}

const JSON_OUT: ResponseFormat = ResponseFormat {
    binary_default: false,
    outputs: Vec::new(),
    in_shm: Vec::new(),
};
const BINARY_OUT: ResponseFormat = ResponseFormat {
    binary_default: true,
    outputs: Vec::new(),
    in_shm: Vec::new(),
};

fn simple(c: &mut Criterion) {
    let mut g = c.benchmark_group("simple");
    let json = json_request(16, "INT32", |i| i.to_string());
    g.bench_function("decode_json", |b| {
        b.iter(|| {
            let len = json_header_length(None, json.len()).unwrap();
            decode_infer_request("simple", None, black_box(&json), len).unwrap()
        })
    });
    let data: Vec<u8> = (0..16i32).flat_map(i32::to_le_bytes).collect();
    let (binary, header) = binary_request(&[
        ("INPUT0", "INT32", 16, &data),
        ("INPUT1", "INT32", 16, &data),
    ]);
    g.bench_function("decode_binary", |b| {
        b.iter(|| decode_infer_request("simple", None, black_box(&binary), header).unwrap())
    });
    let out = response(vec![
        int32_tensor("OUTPUT0", 16),
        int32_tensor("OUTPUT1", 16),
    ]);
    g.bench_function("encode_json", |b| {
        b.iter(|| encode_infer_response(black_box(&out), &JSON_OUT).unwrap())
    });
    g.bench_function("encode_binary", |b| {
        b.iter(|| encode_infer_response(black_box(&out), &BINARY_OUT).unwrap())
    });
    g.finish();
}

fn fp32_1mib(c: &mut Criterion) {
    const N: usize = 1 << 18;
    let mut g = c.benchmark_group("fp32_1MiB");
    g.throughput(Throughput::Bytes((N * 4) as u64));
    g.sample_size(20);

    let tensor = fp32_tensor("INPUT0", N);
    let (binary, header) = binary_request(&[("INPUT0", "FP32", N, &tensor.data)]);
    g.bench_function("decode_binary", |b| {
        b.iter(|| decode_infer_request("m", None, black_box(&binary), header).unwrap())
    });
    let values: Vec<f32> = tensor
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let json = Bytes::from(format!(
        r#"{{"inputs":[{{"name":"INPUT0","shape":[1,{N}],"datatype":"FP32","data":{}}}]}}"#,
        serde_json::to_string(&values).unwrap()
    ));
    g.bench_function("decode_json", |b| {
        b.iter(|| decode_infer_request("m", None, black_box(&json), json.len()).unwrap())
    });

    let out = response(vec![fp32_tensor("OUTPUT0", N)]);
    g.bench_function("encode_binary", |b| {
        b.iter(|| encode_infer_response(black_box(&out), &BINARY_OUT).unwrap())
    });
    g.bench_function("encode_json", |b| {
        b.iter(|| encode_infer_response(black_box(&out), &JSON_OUT).unwrap())
    });
    g.finish();
}

criterion_group!(benches, simple, fp32_1mib);
criterion_main!(benches);
