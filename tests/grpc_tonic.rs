//! The gRPC endpoint over real sockets, called by tonic: an HTTP/2 and gRPC
//! implementation independent of ours (hyper's `h2` underneath). Every
//! RPC of `inference.GRPCInferenceService` and `grpc.health.v1.Health/Check`
//! is called with `tonic::client::Grpc` and a prost codec over nereid's own
//! message types, so no code generation is needed; plus streams, deadlines,
//! compression, TLS and mutual TLS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nereid::core::proto::grpc::health::v1::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
};
use nereid::core::proto::inference::infer_parameter::ParameterChoice;
use nereid::core::proto::inference::model_infer_request::InferInputTensor;
use nereid::core::proto::inference::model_repository_parameter::ParameterChoice as RepoParam;
use nereid::core::proto::inference::*;
use nereid::net::{GrpcServer, GrpcServerConfig, GrpcServerHandle, TlsConfig};
use nereid::protocol::grpc::{GrpcConfig, GrpcService};
use nereid::repository::{ControlMode, ManagerOptions};
use nereid::server::{Server, ServerOptions};
use tonic::client::Grpc;
use tonic::codec::CompressionEncoding;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

mod common;
use common::{repository, start_models};

const SERVICE: &str = "/inference.GRPCInferenceService/";

struct TestServer {
    server: Arc<Server>,
    grpc: Option<GrpcServerHandle>,
    addr: SocketAddr,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(grpc) = self.grpc.take() {
            grpc.shutdown(Instant::now() + Duration::from_secs(1));
        }
        self.server.shutdown();
    }
}

fn start(control_mode: ControlMode, startup: &[&str], tls: Option<TlsConfig>) -> TestServer {
    let options = ServerOptions {
        manager: ManagerOptions {
            repositories: vec![repository()],
            control_mode,
            startup_models: startup.iter().map(|m| (*m).to_owned()).collect(),
            ..ManagerOptions::default()
        },
        ..ServerOptions::default()
    };
    let server = Arc::new(Server::new(options).expect("server options are valid"));
    start_models(&server);
    let grpc = GrpcServer::start(
        GrpcServerConfig {
            address: "127.0.0.1".to_owned(),
            port: 0,
            threads: 2,
            tls,
            ..GrpcServerConfig::default()
        },
        GrpcService::new(Arc::clone(&server), GrpcConfig::default()),
    )
    .expect("binds an ephemeral port");
    let addr = grpc.local_addr();
    assert_ne!(addr.port(), 0);
    TestServer {
        server,
        grpc: Some(grpc),
        addr,
    }
}

/// Every example model loaded (explicit mode, `--load-model=*`).
fn start_all() -> TestServer {
    start(ControlMode::Explicit, &["*"], None)
}

fn client(channel: Channel) -> Grpc<Channel> {
    Grpc::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

async fn connect(addr: SocketAddr) -> Grpc<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connects over h2c");
    client(channel)
}

async fn call<Req, Resp>(
    client: &mut Grpc<Channel>,
    path: &str,
    request: tonic::Request<Req>,
) -> Result<Resp, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = PathAndQuery::try_from(path).expect("a valid path");
    client
        .unary(request, path, ProstCodec::<Req, Resp>::default())
        .await
        .map(tonic::Response::into_inner)
}

/// Calls `inference.GRPCInferenceService/<method>`.
async fn rpc<Req, Resp>(
    client: &mut Grpc<Channel>,
    method: &str,
    request: Req,
) -> Result<Resp, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    call(
        client,
        &format!("{SERVICE}{method}"),
        tonic::Request::new(request),
    )
    .await
}

fn input(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
    InferInputTensor {
        name: name.to_owned(),
        datatype: datatype.to_owned(),
        shape: shape.to_vec(),
        ..InferInputTensor::default()
    }
}

fn i32_bytes(values: impl IntoIterator<Item = i32>) -> Bytes {
    values.into_iter().flat_map(i32::to_le_bytes).collect()
}

fn i32s(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn simple_request(id: &str) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "simple".to_owned(),
        id: id.to_owned(),
        inputs: vec![
            input("INPUT0", "INT32", &[1, 16]),
            input("INPUT1", "INT32", &[1, 16]),
        ],
        raw_input_contents: vec![i32_bytes(0..16), i32_bytes(std::iter::repeat_n(1, 16))],
        ..ModelInferRequest::default()
    }
}

/// Checks a `simple` answer: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 -
/// INPUT1, raw contents by position.
fn check_simple(response: &ModelInferResponse) {
    assert_eq!(response.model_name, "simple");
    let names: Vec<&str> = response.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["OUTPUT0", "OUTPUT1"]);
    assert_eq!(response.raw_output_contents.len(), 2);
    assert_eq!(
        i32s(&response.raw_output_contents[0]),
        (1..17).collect::<Vec<_>>()
    );
    assert_eq!(
        i32s(&response.raw_output_contents[1]),
        (-1..15).collect::<Vec<_>>()
    );
}

fn delay_request(id: &str, delay_ms: i64) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "delay".to_owned(),
        id: id.to_owned(),
        parameters: BTreeMap::from([(
            "execute_delay_ms".to_owned(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::Int64Param(delay_ms)),
            },
        )]),
        inputs: vec![input("INPUT0", "FP32", &[1, 1])],
        raw_input_contents: vec![Bytes::copy_from_slice(&1.0f32.to_le_bytes())],
        ..ModelInferRequest::default()
    }
}

#[tokio::test]
async fn health_metadata_config_and_statistics() {
    let server = start_all();
    let mut c = connect(server.addr).await;

    let live: ServerLiveResponse = rpc(&mut c, "ServerLive", ServerLiveRequest {})
        .await
        .unwrap();
    assert!(live.live);
    let ready: ServerReadyResponse = rpc(&mut c, "ServerReady", ServerReadyRequest {})
        .await
        .unwrap();
    assert!(ready.ready);
    let ready: ModelReadyResponse = rpc(
        &mut c,
        "ModelReady",
        ModelReadyRequest {
            name: "simple".to_owned(),
            version: String::new(),
        },
    )
    .await
    .unwrap();
    assert!(ready.ready);

    let meta: ServerMetadataResponse = rpc(&mut c, "ServerMetadata", ServerMetadataRequest {})
        .await
        .unwrap();
    assert_eq!(meta.name, "triton");
    assert!(meta.extensions.iter().any(|e| e == "model_repository"));

    let meta: ModelMetadataResponse = rpc(
        &mut c,
        "ModelMetadata",
        ModelMetadataRequest {
            name: "simple".to_owned(),
            version: "1".to_owned(),
        },
    )
    .await
    .unwrap();
    assert_eq!(meta.name, "simple");
    assert_eq!(meta.versions, ["1"]);
    let inputs: Vec<(&str, &str)> = meta
        .inputs
        .iter()
        .map(|t| (t.name.as_str(), t.datatype.as_str()))
        .collect();
    assert_eq!(inputs, [("INPUT0", "INT32"), ("INPUT1", "INT32")]);

    let err = rpc::<_, ModelMetadataResponse>(
        &mut c,
        "ModelMetadata",
        ModelMetadataRequest {
            name: "no_such_model".to_owned(),
            version: String::new(),
        },
    )
    .await
    .unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    assert!(err.message().contains("no_such_model"), "{err:?}");

    let config: ModelConfigResponse = rpc(
        &mut c,
        "ModelConfig",
        ModelConfigRequest {
            name: "simple".to_owned(),
            version: String::new(),
        },
    )
    .await
    .unwrap();
    let config = config.config.expect("a config");
    assert_eq!(config.name, "simple");
    assert_eq!(config.input.len(), 2);

    // One inference so the statistics have something to count.
    let _: ModelInferResponse = rpc(&mut c, "ModelInfer", simple_request("stats"))
        .await
        .unwrap();
    let stats: ModelStatisticsResponse = rpc(
        &mut c,
        "ModelStatistics",
        ModelStatisticsRequest {
            name: "simple".to_owned(),
            version: String::new(),
        },
    )
    .await
    .unwrap();
    assert_eq!(stats.model_stats.len(), 1);
    let simple = &stats.model_stats[0];
    assert_eq!(simple.name, "simple");
    assert!(simple.inference_count >= 1, "{simple:?}");
    let success = simple
        .inference_stats
        .as_ref()
        .and_then(|s| s.success.as_ref());
    assert!(success.is_some_and(|s| s.count >= 1), "{simple:?}");

    for service in ["", "inference.GRPCInferenceService"] {
        let health: HealthCheckResponse = call(
            &mut c,
            "/grpc.health.v1.Health/Check",
            tonic::Request::new(HealthCheckRequest {
                service: service.to_owned(),
            }),
        )
        .await
        .unwrap();
        assert_eq!(health.status, ServingStatus::Serving as i32);
    }

    let trace: TraceSettingResponse = rpc(&mut c, "TraceSetting", TraceSettingRequest::default())
        .await
        .unwrap();
    assert!(trace.settings.contains_key("trace_level"), "{trace:?}");
    let logs: LogSettingsResponse = rpc(&mut c, "LogSettings", LogSettingsRequest::default())
        .await
        .unwrap();
    assert!(logs.settings.contains_key("log_verbose_level"), "{logs:?}");

    let unknown = call::<_, ServerLiveResponse>(
        &mut c,
        "/inference.GRPCInferenceService/NoSuchMethod",
        tonic::Request::new(ServerLiveRequest {}),
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.code(), Code::Unimplemented);
}

#[tokio::test]
async fn shared_memory_rpcs_refused_while_client_shm_is_off() {
    let server = start_all();
    let mut c = connect(server.addr).await;
    let system: SystemSharedMemoryStatusResponse = rpc(
        &mut c,
        "SystemSharedMemoryStatus",
        SystemSharedMemoryStatusRequest::default(),
    )
    .await
    .expect("status answers while client shm is off");
    assert!(system.regions.is_empty());
    let cuda: CudaSharedMemoryStatusResponse = rpc(
        &mut c,
        "CudaSharedMemoryStatus",
        CudaSharedMemoryStatusRequest::default(),
    )
    .await
    .expect("status answers while client shm is off");
    assert!(cuda.regions.is_empty());
    let refused = [
        rpc::<_, SystemSharedMemoryRegisterResponse>(
            &mut c,
            "SystemSharedMemoryRegister",
            SystemSharedMemoryRegisterRequest {
                name: "r".to_owned(),
                key: "/k".to_owned(),
                offset: 0,
                byte_size: 64,
            },
        )
        .await
        .map(drop),
        rpc::<_, SystemSharedMemoryUnregisterResponse>(
            &mut c,
            "SystemSharedMemoryUnregister",
            SystemSharedMemoryUnregisterRequest::default(),
        )
        .await
        .map(drop),
        rpc::<_, CudaSharedMemoryRegisterResponse>(
            &mut c,
            "CudaSharedMemoryRegister",
            CudaSharedMemoryRegisterRequest::default(),
        )
        .await
        .map(drop),
        rpc::<_, CudaSharedMemoryUnregisterResponse>(
            &mut c,
            "CudaSharedMemoryUnregister",
            CudaSharedMemoryUnregisterRequest::default(),
        )
        .await
        .map(drop),
    ];
    for result in refused {
        let err = result.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
        assert!(err.message().contains("--allow-client-shm=true"), "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_infer_raw_typed_compressed_and_concurrent() {
    let server = start_all();
    let mut c = connect(server.addr).await;

    let response: ModelInferResponse = rpc(&mut c, "ModelInfer", simple_request("raw"))
        .await
        .unwrap();
    assert_eq!(response.id, "raw");
    check_simple(&response);

    // Typed contents instead of raw bytes.
    let mut typed = simple_request("typed");
    typed.raw_input_contents.clear();
    typed.inputs[0].contents = Some(InferTensorContents {
        int_contents: (0..16).collect(),
        ..InferTensorContents::default()
    });
    typed.inputs[1].contents = Some(InferTensorContents {
        int_contents: vec![1; 16],
        ..InferTensorContents::default()
    });
    let response: ModelInferResponse = rpc(&mut c, "ModelInfer", typed).await.unwrap();
    check_simple(&response);

    // gzip both ways (tonic offers it in grpc-accept-encoding).
    let mut zipped = c
        .clone()
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let response: ModelInferResponse = rpc(&mut zipped, "ModelInfer", simple_request("gzip"))
        .await
        .unwrap();
    check_simple(&response);
    let mut deflated = c
        .clone()
        .send_compressed(CompressionEncoding::Deflate)
        .accept_compressed(CompressionEncoding::Deflate);
    let response: ModelInferResponse = rpc(&mut deflated, "ModelInfer", simple_request("deflate"))
        .await
        .unwrap();
    check_simple(&response);

    // Error paths, each with its status.
    let mut unknown = simple_request("x");
    unknown.model_name = "no_such_model".to_owned();
    let err = rpc::<_, ModelInferResponse>(&mut c, "ModelInfer", unknown)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let mut wrong_type = simple_request("x");
    wrong_type.inputs[0].datatype = "FP32".to_owned();
    let err = rpc::<_, ModelInferResponse>(&mut c, "ModelInfer", wrong_type)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("INPUT0"), "{err:?}");
    let mut missing = simple_request("x");
    missing.inputs.pop();
    missing.raw_input_contents.pop();
    let err = rpc::<_, ModelInferResponse>(&mut c, "ModelInfer", missing)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Many calls in flight on one connection (HTTP/2 multiplexing) and on
    // several connections.
    let mut tasks = Vec::new();
    for i in 0..64 {
        let mut c = if i % 4 == 0 {
            connect(server.addr).await
        } else {
            c.clone()
        };
        tasks.push(tokio::spawn(async move {
            let id = format!("c{i}");
            let response: ModelInferResponse = rpc(&mut c, "ModelInfer", simple_request(&id))
                .await
                .unwrap();
            assert_eq!(response.id, id);
            check_simple(&response);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_stream_infer_in_order_with_an_error_mid_stream() {
    let server = start_all();
    let mut c = connect(server.addr).await;
    c.ready().await.unwrap();

    const N: usize = 100;
    let requests: Vec<ModelInferRequest> = (0..N)
        .map(|i| {
            if i == N / 2 {
                let mut bad = simple_request(&format!("s{i}"));
                bad.model_name = "no_such_model".to_owned();
                bad
            } else if i % 10 == 3 {
                delay_request(&format!("s{i}"), 20)
            } else {
                simple_request(&format!("s{i}"))
            }
        })
        .collect();
    // The stream of requests ends after the last one: the client's
    // half-close, after which the server answers what is outstanding and
    // ends the call with OK.
    let outbound = tokio_stream::iter(requests);
    let response = c
        .streaming(
            tonic::Request::new(outbound),
            PathAndQuery::from_static("/inference.GRPCInferenceService/ModelStreamInfer"),
            ProstCodec::<ModelInferRequest, ModelStreamInferResponse>::default(),
        )
        .await
        .expect("the stream opens");
    let mut inbound = response.into_inner();
    let mut got = Vec::new();
    while let Some(message) = inbound.message().await.expect("the stream ends with OK") {
        got.push(message);
    }
    assert_eq!(got.len(), N);
    for (i, message) in got.iter().enumerate() {
        if i == N / 2 {
            assert!(
                message.error_message.contains("no_such_model"),
                "{message:?}"
            );
            assert_eq!(message.infer_response.as_ref().unwrap().id, format!("s{i}"));
            continue;
        }
        assert!(message.error_message.is_empty(), "{i}: {message:?}");
        let r = message.infer_response.as_ref().expect("a response");
        assert_eq!(r.id, format!("s{i}"), "answers come in request order");
        if r.model_name == "simple" {
            check_simple(r);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_stream_infer_with_requests_as_they_come() {
    let server = start_all();
    let mut c = connect(server.addr).await;
    c.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<ModelInferRequest>(4);
    // tonic's `streaming` waits for the response headers, which nereid
    // sends with the first answer: queue the first request before.
    tx.send(simple_request("i0")).await.unwrap();
    let response = c
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            PathAndQuery::from_static("/inference.GRPCInferenceService/ModelStreamInfer"),
            ProstCodec::<ModelInferRequest, ModelStreamInferResponse>::default(),
        )
        .await
        .expect("the stream opens");
    let mut inbound = response.into_inner();
    // One request, its answer, the next: the stream is interactive.
    for i in 0..5 {
        if i > 0 {
            tx.send(simple_request(&format!("i{i}"))).await.unwrap();
        }
        let message = inbound.message().await.unwrap().expect("an answer");
        assert_eq!(message.infer_response.unwrap().id, format!("i{i}"));
    }
    drop(tx);
    assert!(inbound.message().await.unwrap().is_none());
}

#[tokio::test]
async fn repository_index_load_and_unload() {
    let server = start(ControlMode::Explicit, &[], None);
    let mut c = connect(server.addr).await;
    let index: RepositoryIndexResponse = rpc(
        &mut c,
        "RepositoryIndex",
        RepositoryIndexRequest {
            ready: true,
            ..RepositoryIndexRequest::default()
        },
    )
    .await
    .unwrap();
    assert!(index.models.is_empty(), "{index:?}");

    let _: RepositoryModelLoadResponse = rpc(
        &mut c,
        "RepositoryModelLoad",
        RepositoryModelLoadRequest {
            model_name: "simple".to_owned(),
            ..RepositoryModelLoadRequest::default()
        },
    )
    .await
    .unwrap();
    let index: RepositoryIndexResponse = rpc(
        &mut c,
        "RepositoryIndex",
        RepositoryIndexRequest {
            ready: true,
            ..RepositoryIndexRequest::default()
        },
    )
    .await
    .unwrap();
    let loaded: Vec<(&str, &str)> = index
        .models
        .iter()
        .map(|m| (m.name.as_str(), m.state.as_str()))
        .collect();
    assert_eq!(loaded, [("simple", "READY")]);
    let response: ModelInferResponse = rpc(&mut c, "ModelInfer", simple_request("loaded"))
        .await
        .unwrap();
    check_simple(&response);

    let err = rpc::<_, RepositoryModelLoadResponse>(
        &mut c,
        "RepositoryModelLoad",
        RepositoryModelLoadRequest {
            model_name: "no_such_model".to_owned(),
            ..RepositoryModelLoadRequest::default()
        },
    )
    .await
    .unwrap_err();
    // A model no repository holds is the client's mistake, as a name never
    // loaded is for the other calls.
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .starts_with("failed to load 'no_such_model', failed to poll from model repository"),
        "{err:?}"
    );
    let err = rpc::<_, ModelReadyResponse>(
        &mut c,
        "ModelReady",
        ModelReadyRequest {
            name: "no_such_model".to_owned(),
            version: String::new(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::InvalidArgument,
            "Request for unknown model: 'no_such_model' is not found"
        )
    );

    // Model file overrides arrive as bytes parameters.
    let config = r#"{"backend":"identity","max_batch_size":0,
        "input":[{"name":"INPUT0","data_type":"TYPE_INT32","dims":[2]}],
        "output":[{"name":"OUTPUT0","data_type":"TYPE_INT32","dims":[2]}]}"#;
    let parameter = |choice| ModelRepositoryParameter {
        parameter_choice: Some(choice),
    };
    let _: RepositoryModelLoadResponse = rpc(
        &mut c,
        "RepositoryModelLoad",
        RepositoryModelLoadRequest {
            model_name: "from_files".to_owned(),
            parameters: [
                (
                    "config".to_owned(),
                    parameter(RepoParam::StringParam(config.to_owned())),
                ),
                (
                    "file:1/notes.txt".to_owned(),
                    parameter(RepoParam::BytesParam(b"hello".to_vec())),
                ),
            ]
            .into(),
            ..RepositoryModelLoadRequest::default()
        },
    )
    .await
    .unwrap();
    let ready: ModelReadyResponse = rpc(
        &mut c,
        "ModelReady",
        ModelReadyRequest {
            name: "from_files".to_owned(),
            version: "1".to_owned(),
        },
    )
    .await
    .unwrap();
    assert!(ready.ready);
    let err = rpc::<_, RepositoryModelLoadResponse>(
        &mut c,
        "RepositoryModelLoad",
        RepositoryModelLoadRequest {
            model_name: "from_files".to_owned(),
            parameters: [(
                "file:../escape".to_owned(),
                parameter(RepoParam::BytesParam(b"x".to_vec())),
            )]
            .into(),
            ..RepositoryModelLoadRequest::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let _: RepositoryModelUnloadResponse = rpc(
        &mut c,
        "RepositoryModelUnload",
        RepositoryModelUnloadRequest {
            model_name: "simple".to_owned(),
            ..RepositoryModelUnloadRequest::default()
        },
    )
    .await
    .unwrap();
    let ready = rpc::<_, ModelReadyResponse>(
        &mut c,
        "ModelReady",
        ModelReadyRequest {
            name: "simple".to_owned(),
            version: String::new(),
        },
    )
    .await;
    // Triton answers "not ready" for a model that is no longer loaded;
    // nereid says why, as NOT_FOUND.
    match ready {
        Ok(r) => assert!(!r.ready),
        Err(e) => assert_eq!(e.code(), Code::NotFound, "{e:?}"),
    }
}

/// One unary call over the `h2` crate directly, with `grpc-timeout` set:
/// tonic enforces a deadline on the client side as well, which would hide
/// whether the server does. Returns the gRPC status and how long it took.
async fn call_with_timeout(
    addr: SocketAddr,
    message: &impl prost::Message,
    timeout: &str,
) -> (u32, Duration) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{addr}/inference.GRPCInferenceService/ModelInfer"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(())
        .unwrap();
    let payload = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    framed.extend_from_slice(&payload);
    let started = Instant::now();
    let (response, mut body) = client.send_request(request, false).unwrap();
    body.send_data(Bytes::from(framed), true).unwrap();
    let response = response.await.unwrap();
    let status = |headers: &tonic::codegen::http::HeaderMap| {
        headers
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().parse::<u32>().unwrap())
    };
    if let Some(code) = status(response.headers()) {
        return (code, started.elapsed());
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let n = chunk.unwrap().len();
        let _ = body.flow_control().release_capacity(n);
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    (status(&trailers).expect("grpc-status"), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_expires_and_the_server_stays_healthy() {
    let server = start_all();
    let (code, took) = call_with_timeout(server.addr, &delay_request("late", 3000), "200m").await;
    assert_eq!(code, Code::DeadlineExceeded as u32);
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(2500),
        "answered at the deadline, not when the model finished: {took:?}"
    );
    let (code, _) = call_with_timeout(server.addr, &delay_request("in-time", 10), "10S").await;
    assert_eq!(code, Code::Ok as u32);

    // tonic's own deadline handling against the server: an error either way.
    let mut c = connect(server.addr).await;
    let mut request = tonic::Request::new(delay_request("late", 3000));
    request.set_timeout(Duration::from_millis(100));
    let err = call::<_, ModelInferResponse>(
        &mut c,
        "/inference.GRPCInferenceService/ModelInfer",
        request,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );

    let live: ServerLiveResponse = rpc(&mut c, "ServerLive", ServerLiveRequest {})
        .await
        .unwrap();
    assert!(live.live);
    let response: ModelInferResponse = rpc(&mut c, "ModelInfer", simple_request("after"))
        .await
        .unwrap();
    check_simple(&response);
}

#[tokio::test]
async fn graceful_shutdown_finishes_calls_in_flight() {
    let mut server = start_all();
    let mut c = connect(server.addr).await;
    c.ready().await.unwrap();
    let mut slow = c.clone();
    let in_flight = tokio::spawn(async move {
        rpc::<_, ModelInferResponse>(&mut slow, "ModelInfer", delay_request("drain", 300)).await
    });
    assert!(
        wait_until(Duration::from_secs(5), || server.server.in_flight() == 1).await,
        "the call never reached the server"
    );
    let grpc = server.grpc.take().unwrap();
    let stopper =
        std::thread::spawn(move || grpc.shutdown(Instant::now() + Duration::from_secs(5)));
    let response = in_flight
        .await
        .unwrap()
        .expect("the call in flight completes");
    assert_eq!(response.id, "drain");
    stopper.join().unwrap();
    assert!(
        Endpoint::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .connect()
            .await
            .is_err(),
        "the port is closed after shutdown"
    );
}

/// A CA, a server certificate for localhost and a client certificate, as
/// PEM files in a fresh directory.
struct Pki {
    dir: PathBuf,
    ca: String,
    client_cert: String,
    client_key: String,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir =
            std::env::temp_dir().join(format!("nereid-grpc-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "nereid test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let server_cert =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap()
                .signed_by(&server_key, &issuer)
                .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(vec!["client".to_owned()]).unwrap();
        client_params
            .distinguished_name
            .push(DnType::CommonName, "nereid test client");
        let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), server_cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
        Pki {
            dir,
            ca: ca_cert.pem(),
            client_cert: client_cert.pem(),
            client_key: client_key.serialize_pem(),
        }
    }

    fn server_tls(&self, mutual: bool) -> TlsConfig {
        TlsConfig {
            cert: self.dir.join("server.pem"),
            key: self.dir.join("server.key"),
            client_ca: mutual.then(|| self.dir.join("ca.pem")),
        }
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        with_identity: bool,
    ) -> Result<Grpc<Channel>, String> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .domain_name("localhost");
        if with_identity {
            tls = tls.identity(Identity::from_pem(&self.client_cert, &self.client_key));
        }
        let channel = Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
            .unwrap()
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok(client(channel))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls() {
    let pki = Pki::new("tls");
    let server = start(
        ControlMode::Explicit,
        &["simple"],
        Some(pki.server_tls(false)),
    );
    let mut c = pki.connect(server.addr, false).await.expect("TLS connects");
    let response: ModelInferResponse = rpc(&mut c, "ModelInfer", simple_request("tls"))
        .await
        .unwrap();
    check_simple(&response);
    // A cleartext client cannot talk to the TLS port.
    let mut plain = connect_lazy(server.addr);
    assert!(
        rpc::<_, ServerLiveResponse>(&mut plain, "ServerLive", ServerLiveRequest {})
            .await
            .is_err()
    );
    drop(server);

    let server = start(
        ControlMode::Explicit,
        &["simple", "identity_uint8"],
        Some(pki.server_tls(true)),
    );
    let mut c = pki
        .connect(server.addr, true)
        .await
        .expect("mutual TLS connects with a client certificate");
    let live: ServerLiveResponse = rpc(&mut c, "ServerLive", ServerLiveRequest {})
        .await
        .unwrap();
    assert!(live.live);
    let mut big = simple_request("big");
    // A message larger than the TLS buffers and the flow-control windows.
    big.model_name = "identity_uint8".to_owned();
    big.inputs = vec![input("INPUT0", "UINT8", &[1, 3 << 20])];
    big.raw_input_contents = vec![Bytes::from(vec![7u8; 3 << 20])];
    let response: ModelInferResponse = rpc(&mut c, "ModelInfer", big).await.unwrap();
    assert_eq!(response.raw_output_contents[0].len(), 3 << 20);

    // Without a client certificate the handshake (or the first call) fails.
    let refused = match pki.connect(server.addr, false).await {
        Err(_) => true,
        Ok(mut c) => rpc::<_, ServerLiveResponse>(&mut c, "ServerLive", ServerLiveRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate is refused");
}

fn connect_lazy(addr: SocketAddr) -> Grpc<Channel> {
    client(
        Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(2))
            .connect_lazy(),
    )
}

/// Waits until `f` holds, for at most `limit`.
async fn wait_until(limit: Duration, f: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    while !f() {
        if started.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_its_calls() {
    let server = start_all();
    let inner = Arc::clone(&server.server);

    // A call abandoned by its client: tonic resets the stream.
    let mut c = connect(server.addr).await;
    let call = tokio::spawn(async move {
        rpc::<_, ModelInferResponse>(&mut c, "ModelInfer", delay_request("reset", 5000)).await
    });
    assert!(wait_until(Duration::from_secs(2), || inner.in_flight() == 1).await);
    call.abort();
    assert!(
        wait_until(Duration::from_secs(3), || inner.in_flight() == 0).await,
        "a reset stream cancels its call"
    );

    // A connection that closes with calls (a stream too) in flight.
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut bodies = Vec::new();
    for (i, path) in ["ModelInfer", "ModelStreamInfer"].iter().enumerate() {
        let request = tonic::codegen::http::Request::builder()
            .method("POST")
            .uri(format!("http://{}{SERVICE}{path}", server.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let payload = prost::Message::encode_to_vec(&delay_request(&format!("gone{i}"), 5000));
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        framed.extend_from_slice(&payload);
        let (response, mut body) = client.send_request(request, false).unwrap();
        // The unary call ends its request; the stream stays open.
        body.send_data(Bytes::from(framed), i == 0).unwrap();
        bodies.push((response, body));
    }
    assert!(wait_until(Duration::from_secs(2), || inner.in_flight() == 2).await);
    driver.abort();
    drop(bodies);
    drop(client);
    assert!(
        wait_until(Duration::from_secs(3), || inner.in_flight() == 0).await,
        "closing the connection cancels every call on it"
    );
    let mut c = connect(server.addr).await;
    let response: ModelInferResponse = rpc(&mut c, "ModelInfer", simple_request("after"))
        .await
        .unwrap();
    check_simple(&response);
}
