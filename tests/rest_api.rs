//! The KServe v2 REST API end to end: an in-process [`Server`] over the
//! example model repository, behind `net::HttpServer` on an ephemeral
//! port, driven by plain TCP clients. Every endpoint and its error paths,
//! with the status codes and messages a Triton client sees.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nereid::net::{HttpConfig, HttpServer, HttpServerHandle};
use nereid::protocol::http1;
use nereid::protocol::kserve::RestService;
use nereid::repository::{ControlMode, ManagerOptions};
use nereid::server::{Server, ServerOptions};
use serde_json::{Value, json};

mod common;
use common::{repository, start_models};

struct TestServer {
    server: Arc<Server>,
    http: Option<HttpServerHandle>,
    addr: SocketAddr,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(http) = self.http.take() {
            http.shutdown(Instant::now() + Duration::from_secs(1));
        }
        self.server.shutdown();
    }
}

fn start(control_mode: ControlMode) -> TestServer {
    start_with(control_mode, http1::Config::default())
}

fn start_with(control_mode: ControlMode, http1: http1::Config) -> TestServer {
    let options = ServerOptions {
        manager: ManagerOptions {
            repositories: vec![repository()],
            control_mode,
            startup_models: vec!["*".to_owned()],
            ..ManagerOptions::default()
        },
        ..ServerOptions::default()
    };
    let server = Arc::new(Server::new(options).expect("server options are valid"));
    start_models(&server);
    let http = HttpServer::start(
        HttpConfig {
            address: "127.0.0.1".to_owned(),
            port: 0,
            threads: 2,
            http1,
            ..HttpConfig::default()
        },
        Arc::new(RestService::new(Arc::clone(&server))),
    )
    .expect("binds an ephemeral port");
    let addr = http.local_addr();
    TestServer {
        server,
        http: Some(http),
        addr,
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .expect("an error body")
            .to_owned()
    }
}

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("reads the response");
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if let Some((_, len)) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        body.truncate(len.parse().unwrap());
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    send(addr, "GET", path, &[], b"")
}

fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    send(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

fn simple_request() -> Value {
    json!({
        "id": "42",
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": (0..16).collect::<Vec<i32>>()},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [vec![1; 16]]}
        ]
    })
}

fn i32s(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn health_and_server_metadata() {
    let t = start(ControlMode::None);
    assert_eq!(get(t.addr, "/v2/health/live").status, 200);
    assert_eq!(get(t.addr, "/v2/health/ready").status, 200);
    let r = get(t.addr, "/v2");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["name"], "triton");
    assert!(v["version"].is_string());
    let ext: Vec<&str> = v["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(ext.contains(&"binary_tensor_data") && ext.contains(&"classification"));

    let r = send(t.addr, "POST", "/v2/health/live", &[], b"");
    assert_eq!(
        (r.status, r.error()),
        (405, "Method Not Allowed".to_owned())
    );
    let r = get(t.addr, "/v2/nothing/here");
    assert_eq!((r.status, r.error()), (404, "Not Found".to_owned()));

    // Shutting down: liveness and readiness fail with Triton's message.
    t.server.begin_shutdown();
    let r = get(t.addr, "/v2/health/live");
    assert_eq!((r.status, r.error()), (503, "Server exiting".to_owned()));
    assert_eq!(get(t.addr, "/v2/health/ready").status, 503);
}

#[test]
fn model_metadata_ready_and_config() {
    let t = start(ControlMode::None);
    let r = get(t.addr, "/v2/models/simple");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({
            "name": "simple", "versions": ["1"], "platform": "add_sub",
            "inputs": [
                {"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]},
                {"name": "INPUT1", "datatype": "INT32", "shape": [-1, 16]}],
            "outputs": [
                {"name": "OUTPUT0", "datatype": "INT32", "shape": [-1, 16]},
                {"name": "OUTPUT1", "datatype": "INT32", "shape": [-1, 16]}]
        })
    );
    let r = get(t.addr, "/v2/models/fault/versions/1");
    assert_eq!(r.json()["inputs"][0]["shape"], json!([4]), "no batch dim");
    assert_eq!(r.json()["versions"], json!(["1"]));

    // A name with no version ever loaded is INVALID_ARG in Triton (400);
    // NOT_FOUND (404) is for a model whose versions no longer serve.
    let r = get(t.addr, "/v2/models/nope");
    assert_eq!(r.status, 400);
    assert_eq!(r.error(), "Request for unknown model: 'nope' is not found");
    let r = get(t.addr, "/v2/models/simple/versions/9");
    assert_eq!(
        (r.status, r.error()),
        (
            404,
            "Request for unknown model: 'simple' version 9 is not found".to_owned()
        )
    );
    let r = get(t.addr, "/v2/models/simple/versions/99999999999999999999");
    assert_eq!(r.status, 400);
    assert!(r.error().starts_with("failed to get model version"));

    assert_eq!(get(t.addr, "/v2/models/simple/ready").status, 200);
    assert_eq!(
        get(t.addr, "/v2/models/simple/versions/1/ready").status,
        200
    );
    assert_eq!(get(t.addr, "/v2/models/nope/ready").status, 400);
    assert_eq!(
        send(t.addr, "POST", "/v2/models/simple/ready", &[], b"").status,
        405
    );

    let r = get(t.addr, "/v2/models/simple/config");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(
        (v["name"].as_str(), v["max_batch_size"].as_i64()),
        (Some("simple"), Some(8))
    );
    assert_eq!(get(t.addr, "/v2/models/nope/config").status, 400);
    let r = get(t.addr, "/v2/models/simple/stats");
    assert_eq!(r.status, 200);
    let stats = &r.json()["model_stats"][0];
    assert_eq!(
        (stats["name"].as_str(), stats["version"].as_str()),
        (Some("simple"), Some("1"))
    );
    assert!(stats["inference_stats"]["success"]["count"].is_u64());
    assert!(stats["batch_stats"].is_array());
    let r = get(t.addr, "/v2/models/stats");
    assert_eq!(r.status, 200);
    assert!(r.json()["model_stats"].as_array().unwrap().len() > 1);
    assert_eq!(get(t.addr, "/v2/models/nope/stats").status, 400);
}

#[test]
fn infer_json() {
    let t = start(ControlMode::None);
    let r = post_json(t.addr, "/v2/models/simple/infer", &simple_request());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("inference-header-content-length"), None);
    let v = r.json();
    assert_eq!(
        (&v["id"], &v["model_name"], &v["model_version"]),
        (&json!("42"), &json!("simple"), &json!("1"))
    );
    let sum: Vec<i64> = (1..17).collect();
    let diff: Vec<i64> = (-1..15).collect();
    assert_eq!(
        v["outputs"],
        json!([
            {"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 16], "data": sum},
            {"name": "OUTPUT1", "datatype": "INT32", "shape": [1, 16], "data": diff}
        ])
    );
    // A version in the path; one requested output.
    let mut req = simple_request();
    req["outputs"] = json!([{"name": "OUTPUT1"}]);
    let r = post_json(t.addr, "/v2/models/simple/versions/1/infer", &req);
    let v = r.json();
    assert_eq!(v["outputs"].as_array().unwrap().len(), 1);
    // Both inferences are counted, batch size 1.
    let stats = get(t.addr, "/v2/models/simple/versions/1/stats").json();
    let stats = &stats["model_stats"][0];
    assert_eq!(stats["inference_stats"]["success"]["count"], json!(2));
    assert_eq!(stats["inference_count"], json!(2));
    assert_eq!(stats["batch_stats"][0]["batch_size"], json!(1));
    assert_eq!(stats["batch_stats"][0]["compute_infer"]["count"], json!(2));
    assert_eq!(v["outputs"][0]["name"], "OUTPUT1");

    // BYTES and FP16 as JSON.
    let r = post_json(
        t.addr,
        "/v2/models/simple_identity/infer",
        &json!({"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "BYTES", "data": ["héllo", ""]}]}),
    );
    assert_eq!(r.json()["outputs"][0]["data"], json!(["héllo", ""]));
    let r = post_json(
        t.addr,
        "/v2/models/identity_fp16/infer",
        &json!({"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP16", "data": [0.5, -2, 1024]}]}),
    );
    assert_eq!(r.json()["outputs"][0]["data"], json!([0.5, -2.0, 1024.0]));
    let r = post_json(
        t.addr,
        "/v2/models/identity_fp64/infer",
        &json!({"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP64", "data": [0.1, 1e300]}]}),
    );
    assert_eq!(r.json()["outputs"][0]["data"], json!([0.1, 1e300]));
}

#[test]
fn infer_binary() {
    let t = start(ControlMode::None);
    let in0: Vec<u8> = (0..16i32).flat_map(i32::to_le_bytes).collect();
    let in1: Vec<u8> = [2i32; 16].iter().flat_map(|x| x.to_le_bytes()).collect();
    let header = json!({
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}}
        ],
        "outputs": [
            {"name": "OUTPUT0", "parameters": {"binary_data": true}},
            {"name": "OUTPUT1", "parameters": {"binary_data": false}}
        ]
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&in0);
    body.extend_from_slice(&in1);
    let hl = header.len().to_string();
    let r = send(
        t.addr,
        "POST",
        "/v2/models/simple/infer",
        &[("Inference-Header-Content-Length", &hl)],
        &body,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let json_len: usize = r
        .header("inference-header-content-length")
        .unwrap()
        .parse()
        .unwrap();
    let v: Value = serde_json::from_slice(&r.body[..json_len]).unwrap();
    assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 64);
    assert_eq!(i32s(&r.body[json_len..]), (2..18).collect::<Vec<i32>>());
    assert_eq!(v["outputs"][1]["data"][0], -2);

    // binary_data_output applies to every output the request leaves unnamed.
    let header = json!({
        "parameters": {"binary_data_output": true},
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}}
        ]
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&in0);
    body.extend_from_slice(&in1);
    let hl = header.len().to_string();
    let r = send(
        t.addr,
        "POST",
        "/v2/models/simple/infer",
        &[("Inference-Header-Content-Length", &hl)],
        &body,
    );
    let json_len: usize = r
        .header("inference-header-content-length")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(r.body.len(), json_len + 128);
    assert_eq!(
        i32s(&r.body[json_len + 64..]),
        (-2..14).collect::<Vec<i32>>()
    );

    // Truncated binary data and extra bytes.
    let r = send(
        t.addr,
        "POST",
        "/v2/models/simple/infer",
        &[("Inference-Header-Content-Length", &hl)],
        &body[..body.len() - 4],
    );
    assert_eq!(
        (r.status, r.error()),
        (
            400,
            "unexpected size for input 'INPUT1', expecting 4 additional bytes for model 'simple'"
                .to_owned()
        )
    );
    let mut longer = body.clone();
    longer.push(0);
    let r = send(
        t.addr,
        "POST",
        "/v2/models/simple/infer",
        &[("Inference-Header-Content-Length", &hl)],
        &longer,
    );
    assert_eq!(
        r.error(),
        "unexpected additional input data for model 'simple'"
    );
    let r = send(
        t.addr,
        "POST",
        "/v2/models/simple/infer",
        &[("Inference-Header-Content-Length", "100000")],
        &body,
    );
    assert_eq!(r.status, 400);
    assert!(
        r.error()
            .starts_with("inference header size should be in range")
    );
}

#[test]
fn infer_raw_body_and_classification() {
    let t = start(ControlMode::None);
    let values = [0.5f32, 3.0, -1.0, 2.0];
    let raw: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    let r = send(
        t.addr,
        "POST",
        "/v2/models/identity_fp32/infer",
        &[("Inference-Header-Content-Length", "0")],
        &raw,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let json_len: usize = r
        .header("inference-header-content-length")
        .unwrap()
        .parse()
        .unwrap();
    let v: Value = serde_json::from_slice(&r.body[..json_len]).unwrap();
    assert_eq!(v["outputs"][0]["shape"], json!([1, 4]));
    assert_eq!(&r.body[json_len..], &raw[..]);

    let r = send(
        t.addr,
        "POST",
        "/v2/models/simple/infer",
        &[("Inference-Header-Content-Length", "0")],
        &raw,
    );
    assert_eq!(
        (r.status, r.error()),
        (
            400,
            "Raw request must only have 1 input (found 1) to be deduced but got 2 inputs in 'simple' model configuration"
                .to_owned()
        )
    );

    // Classification: top 2 per batch entry, labelled from labels.txt.
    let req = json!({
        "inputs": [{"name": "INPUT0", "shape": [2, 4], "datatype": "FP32",
                    "data": [[0.5, 3.0, -1.0, 2.0], [9.0, 0.0, 0.0, 10.0]]}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"classification": 2}}]
    });
    let r = post_json(t.addr, "/v2/models/identity_fp32/infer", &req);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["outputs"][0],
        json!({"name": "OUTPUT0", "datatype": "BYTES", "shape": [2, 2],
               "data": ["3.000000:1:one", "2.000000:3:three", "10.000000:3:three", "9.000000:0:zero"]})
    );
}

#[test]
fn infer_errors() {
    let t = start(ControlMode::None);
    let r = post_json(t.addr, "/v2/models/nope/infer", &simple_request());
    assert_eq!(
        (r.status, r.error()),
        (
            400,
            "Request for unknown model: 'nope' is not found".to_owned()
        )
    );
    let r = get(t.addr, "/v2/models/simple/infer");
    assert_eq!(
        (r.status, r.error()),
        (405, "Method Not Allowed".to_owned())
    );

    // Triton's element-count messages (with 400 where Triton answers 500).
    let bad = json!({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": (1..16).collect::<Vec<i32>>()}]});
    let r = post_json(t.addr, "/v2/models/simple/infer", &bad);
    assert_eq!(
        (r.status, r.error()),
        (
            400,
            "Failed to parse 'data' field: shape does not match true shape".to_owned()
        )
    );
    let bad = json!({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": (1..19).collect::<Vec<i32>>()}]});
    let r = post_json(t.addr, "/v2/models/simple/infer", &bad);
    assert_eq!(
        r.body,
        br#"{"error":"Unable to parse 'data': Shape does not match true shape of 'data' field"}"#
    );
    let r = send(t.addr, "POST", "/v2/models/simple/infer", &[], b"{not json");
    assert_eq!(r.status, 400);
    assert!(
        r.error()
            .starts_with("failed to parse the request JSON buffer")
    );

    // Out of range for the input type.
    let bad =
        json!({"inputs": [{"name": "INPUT0", "datatype": "INT8", "shape": [1, 1], "data": [300]}]});
    let r = post_json(t.addr, "/v2/models/simple_int8/infer", &bad);
    assert_eq!(r.status, 400);
    assert!(r.error().contains("out of range for INT8"), "{}", r.error());

    // The scheduler's validation: a missing input, a wrong datatype.
    let mut req = simple_request();
    req["inputs"].as_array_mut().unwrap().pop();
    let r = post_json(t.addr, "/v2/models/simple/infer", &req);
    assert_eq!(r.status, 400);
    assert!(
        r.error()
            .starts_with("[request id: 42] expected 2 inputs but got 1 inputs for model 'simple'"),
        "{}",
        r.error()
    );
    let mut req = simple_request();
    req["outputs"] = json!([{"name": "NOPE"}]);
    let r = post_json(t.addr, "/v2/models/simple/infer", &req);
    assert_eq!(
        r.error(),
        "[request id: 42] unexpected inference output 'NOPE' for model 'simple'"
    );
    // A backend that panics fails its request with 500; the model stays up.
    let r = post_json(
        t.addr,
        "/v2/models/fault/infer",
        &json!({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [4], "data": [1, 2, 3, 4]}]}),
    );
    assert_eq!(r.status, 500);
    assert_eq!(get(t.addr, "/v2/models/fault/ready").status, 200);
    // Classification of an unsupported type.
    let r = post_json(
        t.addr,
        "/v2/models/identity_bool/infer",
        &json!({"inputs": [{"name": "INPUT0", "datatype": "BOOL", "shape": [1, 1], "data": [true]}],
                "outputs": [{"name": "OUTPUT0", "parameters": {"classification": 1}}]}),
    );
    assert_eq!(
        (r.status, r.error()),
        (
            400,
            "class result not available for output due to unsupported type 'BOOL'".to_owned()
        )
    );
    // Every request ends (the count drops just after the answer is handed
    // to the connection).
    assert!(t.server.drain(Instant::now() + Duration::from_secs(5)));
    assert_eq!(t.server.in_flight(), 0);
}

#[test]
fn repository_index_load_unload() {
    let t = start(ControlMode::Explicit);
    let r = send(t.addr, "POST", "/v2/repository/index", &[], b"");
    assert_eq!(r.status, 200);
    let index = r.json();
    assert!(
        index
            .as_array()
            .unwrap()
            .contains(&json!({"name": "simple", "version": "1", "state": "READY"})),
        "{index}"
    );
    let r = post_json(t.addr, "/v2/repository/index", &json!({"ready": "yes"}));
    assert_eq!(
        (r.status, r.error()),
        (
            400,
            "Invalid value for 'ready': expected a boolean".to_owned()
        )
    );
    assert_eq!(get(t.addr, "/v2/repository/index").status, 405);

    let r = post_json(
        t.addr,
        "/v2/repository/models/simple/unload",
        &json!({"parameters": {"unload_dependents": false}}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_ne!(get(t.addr, "/v2/models/simple/ready").status, 200);
    let r = post_json(t.addr, "/v2/repository/index", &json!({"ready": true}));
    assert!(
        !r.json()
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "simple")
    );
    let r = send(t.addr, "POST", "/v2/repository/index", &[], b"");
    assert!(r.json().as_array().unwrap().contains(
        &json!({"name": "simple", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"})
    ));

    let r = send(
        t.addr,
        "POST",
        "/v2/repository/models/simple/load",
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(get(t.addr, "/v2/models/simple/ready").status, 200);

    // Reload with a configuration override.
    let config = json!({"backend": "identity", "max_batch_size": 4,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}]});
    let r = post_json(
        t.addr,
        "/v2/repository/models/identity_fp32/load",
        &json!({"parameters": {"config": config.to_string()}}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = get(t.addr, "/v2/models/identity_fp32/config").json();
    assert_eq!(v["max_batch_size"], 4);

    let r = post_json(
        t.addr,
        "/v2/repository/models/simple/load",
        &json!({"parameters": {"config": 5}}),
    );
    assert_eq!(
        (r.status, r.error()),
        (
            400,
            "attempt to access JSON non-string as string".to_owned()
        )
    );
    let r = send(
        t.addr,
        "POST",
        "/v2/repository/models/no_such_model/load",
        &[],
        b"",
    );
    // The client's mistake (Triton's wording; Triton itself answers 500).
    assert_eq!(r.status, 400);
    assert!(
        r.error()
            .starts_with("failed to load 'no_such_model', failed to poll from model repository"),
        "{}",
        r.error()
    );
    // A malformed repository request body is the client's error too.
    let r = send(t.addr, "POST", "/v2/repository/index", &[], b"{\"ready\":");
    assert_eq!(r.status, 400);
    assert!(
        r.error()
            .starts_with("failed to parse the request JSON buffer")
    );

    // Loading from files sent in the request (base64 in `file:` parameters):
    // a model no repository holds, served from those files, then unloaded.
    let config = json!({"backend": "identity", "max_batch_size": 0,
        "input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [2]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": [2]}]});
    let load_files = |model: &str, params: Value| {
        post_json(
            t.addr,
            &format!("/v2/repository/models/{model}/load"),
            &json!({ "parameters": params }),
        )
    };
    let r = load_files(
        "from_files",
        json!({"config": config.to_string(), "file:1/notes.txt": "aGVsbG8="}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = post_json(
        t.addr,
        "/v2/models/from_files/infer",
        &json!({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [2], "data": [5, 6]}]}),
    );
    assert_eq!(r.json()["outputs"][0]["data"], json!([5, 6]));
    let index = post_json(t.addr, "/v2/repository/index", &json!({"ready": true})).json();
    assert!(
        index
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "from_files" && e["state"] == "READY"),
        "{index}"
    );
    let r = send(
        t.addr,
        "POST",
        "/v2/repository/models/from_files/unload",
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(get(t.addr, "/v2/models/from_files/ready").status, 404);
    // Triton's limits: `config` is required, paths stay inside the model
    // directory, a path component fits a file name (Triton's test pins
    // 500 for that one), and the content is base64.
    for (params, status, fragment) in [
        (
            json!({"file:1/notes.txt": "aGVsbG8="}),
            400,
            "load parameter 'config' must be given",
        ),
        (
            json!({"config": config.to_string(), "file:../../etc/x": "aGVsbG8="}),
            400,
            "outside the model directory",
        ),
        (
            json!({"config": config.to_string(), "file:/etc/x": "aGVsbG8="}),
            400,
            "outside the model directory",
        ),
        (
            json!({"config": "{}", (format!("file:{}", "A".repeat(256))): "YQ=="}),
            500,
            "longer than the 255 bytes",
        ),
        (
            json!({"config": "{}", "file:1/model.onnx": "not base64!"}),
            400,
            "not valid base64",
        ),
    ] {
        let r = load_files("from_files", params);
        assert_eq!(r.status, status, "{}", r.error());
        assert!(r.error().contains(fragment), "{}", r.error());
    }
    assert_eq!(get(t.addr, "/v2/health/ready").status, 200);
    let r = send(
        t.addr,
        "POST",
        "/v2/repository/myrepo/models/simple/load",
        &[],
        b"",
    );
    assert_eq!(
        (r.status, r.error()),
        (
            501,
            "'repository_name' specification is not supported".to_owned()
        )
    );
    let r = get(t.addr, "/v2/repository/models/simple/unload");
    assert_eq!(r.status, 405);
}

#[test]
fn load_refused_without_explicit_mode() {
    let t = start(ControlMode::None);
    let r = send(
        t.addr,
        "POST",
        "/v2/repository/models/simple/unload",
        &[],
        b"",
    );
    assert_eq!(
        (r.status, r.error()),
        (
            503,
            "explicit model load / unload is not allowed if polling is enabled".to_owned()
        )
    );
}

#[test]
fn logging_and_trace_settings() {
    let t = start(ControlMode::None);
    let r = get(t.addr, "/v2/logging");
    assert_eq!(r.status, 200);
    let before = r.json();
    for key in [
        "log_file",
        "log_info",
        "log_warning",
        "log_error",
        "log_verbose_level",
        "log_format",
    ] {
        assert!(before.get(key).is_some(), "{key} in {before}");
    }
    let r = post_json(t.addr, "/v2/logging", &json!({"log_verbose_level": 1}));
    assert_eq!(r.json()["log_verbose_level"], 1);
    let r = post_json(
        t.addr,
        "/v2/logging",
        &json!({"log_verbose_level": before["log_verbose_level"]}),
    );
    assert_eq!(r.json(), before);
    let r = post_json(t.addr, "/v2/logging", &json!({"log_file": "/tmp/x.log"}));
    assert_eq!(
        (r.status, r.error()),
        (
            501,
            "log file location can not be updated through network protocol".to_owned()
        )
    );
    let r = post_json(t.addr, "/v2/logging", &json!({"log_format": "fancy"}));
    assert_eq!(
        (r.status, r.error()),
        (
            503,
            "invalid argument for --log_format, got: fancy".to_owned()
        )
    );
    assert_eq!(send(t.addr, "PUT", "/v2/logging", &[], b"").status, 405);

    let r = get(t.addr, "/v2/trace/setting");
    assert_eq!(
        r.json(),
        json!({"trace_level": ["OFF"], "trace_rate": "1000", "trace_count": "-1",
               "log_frequency": "0", "trace_file": "", "trace_mode": "triton"})
    );
    let r = post_json(
        t.addr,
        "/v2/models/simple/trace/setting",
        &json!({"trace_rate": "10"}),
    );
    assert_eq!(r.json()["trace_rate"], "10");
    let r = post_json(t.addr, "/v2/trace/setting", &json!({"trace_count": "5"}));
    assert_eq!(r.json()["trace_count"], "5");
    let v = get(t.addr, "/v2/models/simple/trace/setting").json();
    assert_eq!(
        (&v["trace_rate"], &v["trace_count"]),
        (&json!("10"), &json!("5"))
    );
    let r = post_json(
        t.addr,
        "/v2/models/simple/trace/setting",
        &json!({"trace_rate": null}),
    );
    assert_eq!(r.json()["trace_rate"], "1000");
    let r = post_json(
        t.addr,
        "/v2/trace/setting",
        &json!({"trace_file": "t.json"}),
    );
    assert_eq!(r.status, 501);
    let r = post_json(
        t.addr,
        "/v2/trace/setting",
        &json!({"trace_level": ["TIMESTAMPS"]}),
    );
    assert_eq!(
        (r.status, r.error()),
        (
            400,
            "Attempting to set invalid trace setting :trace file name is not given".to_owned()
        )
    );
    let r = get(t.addr, "/v2/models/nope/trace/setting");
    assert_eq!(r.status, 400);
    assert_eq!(
        get(t.addr, "/v2/models/simple/versions/1/trace/setting").status,
        404
    );
}

#[test]
fn disconnected_clients_work_is_dropped() {
    let t = start(ControlMode::None);
    let slow = |ms: u64| {
        json!({"parameters": {"execute_delay_ms": ms},
               "inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]})
        .to_string()
    };
    let start = Instant::now();
    // Two requests occupy both instances of `delay`.
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let addr = t.addr;
            let body = slow(800);
            std::thread::spawn(move || {
                send(addr, "POST", "/v2/models/delay/infer", &[], body.as_bytes()).status
            })
        })
        .collect();
    let in_flight = |n: usize, what: &str| {
        while t.server.in_flight() < n {
            assert!(start.elapsed() < Duration::from_secs(4), "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    in_flight(2, "the two busy requests never arrived");
    // A third waits in the queue behind them; its client goes away.
    let body = slow(5000);
    let mut stream = TcpStream::connect(t.addr).unwrap();
    write!(
        stream,
        "POST /v2/models/delay/infer HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    in_flight(3, "the third request never arrived");
    drop(stream);
    for b in busy {
        assert_eq!(b.join().unwrap(), 200);
    }
    // The queued request is dropped instead of running for 5 s.
    while t.server.in_flight() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "the abandoned request kept running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(t.server.drain(Instant::now() + Duration::from_secs(1)));
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Triton compresses inference responses and nothing else; aiohttp asks
/// for gzip on every request and tritonclient's aio client only
/// decompresses inference responses.
#[test]
fn only_infer_responses_are_compressed() {
    let t = start(ControlMode::None);
    let gz = [("Accept-Encoding", "gzip, deflate")];
    for path in ["/v2", "/v2/models/simple", "/v2/models/simple/config"] {
        let r = send(t.addr, "GET", path, &gz, b"");
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-encoding"), None, "{path}");
        r.json();
    }
    let r = send(t.addr, "POST", "/v2/repository/index", &gz, b"{}");
    assert_eq!((r.status, r.header("content-encoding")), (200, None));
    r.json();

    let body = simple_request().to_string();
    let r = send(
        t.addr,
        "POST",
        "/v2/models/simple/infer",
        &gz,
        body.as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_end(&mut plain)
        .unwrap();
    let v: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(v["outputs"][0]["name"], "OUTPUT0");

    // Without Accept-Encoding, or when inference fails: plain.
    let r = send(
        t.addr,
        "POST",
        "/v2/models/simple/infer",
        &[],
        body.as_bytes(),
    );
    assert_eq!((r.status, r.header("content-encoding")), (200, None));
    let r = send(
        t.addr,
        "POST",
        "/v2/models/nope/infer",
        &gz,
        body.as_bytes(),
    );
    assert_ne!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None);
    r.error();
}

#[test]
fn head_answers_as_get_without_the_body() {
    let t = start(ControlMode::None);
    for path in [
        "/v2",
        "/v2/health/ready",
        "/v2/models/simple",
        "/v2/models/simple/config",
        "/v2/models/stats",
    ] {
        let get = get(t.addr, path);
        let head = send(t.addr, "HEAD", path, &[], b"");
        assert_eq!(head.status, get.status, "{path}");
        assert_eq!(
            head.header("content-length"),
            Some(get.body.len().to_string().as_str()),
            "{path}"
        );
        assert!(head.body.is_empty(), "{path}");
    }
    assert_eq!(
        send(t.addr, "HEAD", "/v2/models/simple/infer", &[], b"").status,
        405
    );
    assert_eq!(send(t.addr, "HEAD", "/v2/nothing", &[], b"").status, 404);
}

#[test]
fn oversized_bodies_get_tritons_400() {
    let t = start_with(
        ControlMode::None,
        http1::Config {
            max_body_bytes: 1024,
            max_decoded_body_bytes: 1024,
            ..http1::Config::default()
        },
    );
    let hint = "Use --http-max-input-size to increase the limit.";
    let r = send(
        t.addr,
        "POST",
        "/v2/models/simple/infer",
        &[("Inference-Header-Content-Length", "0")],
        &[0u8; 2000],
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.error(),
        format!(
            "Raw input has a byte_size (2000 bytes) that exceeds the maximum allowed value of 1024 bytes. {hint}"
        )
    );
    assert_eq!(r.header("connection"), Some("close"));

    let r = send(
        t.addr,
        "POST",
        "/v2/models/simple/infer",
        &[],
        &[b' '; 2000],
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.error(),
        format!(
            "request JSON size of 2000 bytes exceeds the maximum allowed input size of 1024 bytes. {hint}"
        )
    );

    // The decompressed size counts too, and is checked as it grows.
    let mut padded = simple_request().to_string().into_bytes();
    padded.extend(std::iter::repeat_n(b' ', 4000));
    let r = send(
        t.addr,
        "POST",
        "/v2/models/simple/infer",
        &[("Content-Encoding", "gzip")],
        &gzip(&padded),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.error(),
        format!("Decompressed data size exceeds the maximum allowed value of 1024 bytes. {hint}")
    );

    // Within the limit, compressed or not, inference runs.
    let small = simple_request().to_string().into_bytes();
    assert!(small.len() <= 1024);
    for (headers, body) in [
        (vec![], small.clone()),
        (vec![("Content-Encoding", "gzip")], gzip(&small)),
    ] {
        let r = send(t.addr, "POST", "/v2/models/simple/infer", &headers, &body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
}
