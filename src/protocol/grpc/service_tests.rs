//! Every RPC through the dispatcher, over the example model repository,
//! with an in-memory sink standing in for the HTTP/2 stream: headers,
//! framing, compression, status trailers, unary calls, inference with raw
//! and typed contents, and streams with errors, half-close, cancellation
//! and deadlines.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;

use super::compression::{CompressionLevel, Encoding, compress, decompress};
use super::framing::{MessageDecoder, prefix};
use super::headers::HeaderList;
use super::infer::FINAL_RESPONSE_PARAMETER;
use super::service::{Call, CallSink, GrpcConfig, GrpcService, Method};
use super::status::{Code, percent_decode_message};
use crate::core::proto::grpc::health::v1::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
};
use crate::core::proto::inference::infer_parameter::ParameterChoice;
use crate::core::proto::inference::log_settings_request::SettingValue as LogValue;
use crate::core::proto::inference::log_settings_request::setting_value::ParameterChoice as LogChoice;
use crate::core::proto::inference::log_settings_response::setting_value::ParameterChoice as LogOut;
use crate::core::proto::inference::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use crate::core::proto::inference::model_repository_parameter::ParameterChoice as RepoChoice;
use crate::core::proto::inference::trace_setting_request::SettingValue as TraceValue;
use crate::core::proto::inference::*;
use crate::core::tensor::split_bytes_elements;
use crate::repository::{ControlMode, ManagerOptions};
use crate::server::{Server, ServerOptions};

const WAIT: Duration = Duration::from_secs(20);

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("model_repository")
}

fn new_server(control_mode: ControlMode, models: &[&str]) -> Arc<Server> {
    let options = ServerOptions {
        manager: ManagerOptions {
            repositories: vec![repository()],
            control_mode,
            startup_models: models.iter().map(|m| (*m).to_owned()).collect(),
            ..ManagerOptions::default()
        },
        ..ServerOptions::default()
    };
    let server = Arc::new(Server::new(options).expect("server options are valid"));
    server.start().expect("the example models load");
    server
}

/// The server most tests share: every example model, read-only use.
fn shared_server() -> Arc<Server> {
    static SERVER: OnceLock<Arc<Server>> = OnceLock::new();
    Arc::clone(SERVER.get_or_init(|| new_server(ControlMode::None, &[])))
}

fn service() -> GrpcService {
    GrpcService::new(shared_server(), GrpcConfig::default())
}

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Headers(u16, HeaderList, bool),
    Data(Vec<Bytes>),
    Trailers(HeaderList),
}

impl Event {
    fn ends(&self) -> bool {
        matches!(self, Event::Trailers(_) | Event::Headers(_, _, true))
    }
}

/// What a call sent, as the net layer would have seen it.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
    changed: Condvar,
}

impl Recorder {
    fn wait_for(&self, what: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let deadline = Instant::now() + WAIT;
        let mut events = self.events.lock().unwrap();
        while !what(&events) {
            let now = Instant::now();
            assert!(now < deadline, "timed out; events so far: {events:?}");
            events = self.changed.wait_timeout(events, deadline - now).unwrap().0;
        }
        events.clone()
    }

    fn wait_trailers(&self) -> Reply {
        Reply::new(self.wait_for(|e| e.iter().any(Event::ends)))
    }

    fn snapshot(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

struct Sink(Arc<Recorder>);

impl Sink {
    fn push(&self, e: Event) {
        self.0.events.lock().unwrap().push(e);
        self.0.changed.notify_all();
    }
}

impl CallSink for Sink {
    fn send_headers(&mut self, status: u16, headers: HeaderList, end_stream: bool) {
        self.push(Event::Headers(status, headers, end_stream));
    }
    fn send_data(&mut self, data: Vec<Bytes>) {
        self.push(Event::Data(data));
    }
    fn send_trailers(&mut self, trailers: HeaderList) {
        self.push(Event::Trailers(trailers));
    }
}

/// A finished call.
#[derive(Debug)]
struct Reply {
    events: Vec<Event>,
    /// The HTTP status.
    http_status: u16,
    /// Response headers sent apart from the trailers; `None` for a
    /// trailers-only answer.
    headers: Option<HeaderList>,
    /// The trailers, or the fields of the trailers-only answer.
    trailers: HeaderList,
    messages: Vec<Bytes>,
}

fn find<'a>(list: &'a HeaderList, name: &str) -> Option<&'a str> {
    list.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

impl Reply {
    fn new(events: Vec<Event>) -> Reply {
        let mut headers = None;
        let mut trailers = None;
        let mut http_status = 0;
        let mut data = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if e.ends() {
                assert_eq!(i, events.len() - 1, "nothing after the end: {events:?}");
            }
            match e {
                Event::Headers(status, h, end) => {
                    assert_eq!(http_status, 0, "headers first, once: {events:?}");
                    http_status = *status;
                    if *end {
                        trailers = Some(h.clone());
                    } else {
                        headers = Some(h.clone());
                    }
                }
                Event::Data(chunks) => {
                    assert!(headers.is_some(), "data after headers: {events:?}");
                    for c in chunks {
                        data.extend_from_slice(c);
                    }
                }
                Event::Trailers(t) => {
                    assert!(headers.is_some(), "trailers after headers: {events:?}");
                    trailers = Some(t.clone());
                }
            }
        }
        let trailers = trailers.expect("trailers");
        let encoding = headers
            .as_ref()
            .and_then(|h| find(h, "grpc-encoding"))
            .map_or(Encoding::Identity, |e| Encoding::parse(e).unwrap());
        let mut decoder = MessageDecoder::new(usize::MAX);
        decoder.handle_data(Bytes::from(data)).unwrap();
        decoder.handle_end().expect("whole messages");
        let messages = std::iter::from_fn(|| decoder.poll_message())
            .map(|m| {
                assert_eq!(m.compressed, encoding != Encoding::Identity);
                if m.compressed {
                    decompress(encoding, &m.payload, usize::MAX).unwrap()
                } else {
                    m.payload
                }
            })
            .collect();
        Reply {
            events,
            http_status,
            headers,
            trailers,
            messages,
        }
    }

    fn code(&self) -> Code {
        Code::from_u32(
            find(&self.trailers, "grpc-status")
                .unwrap()
                .parse()
                .unwrap(),
        )
    }

    fn message_text(&self) -> String {
        find(&self.trailers, "grpc-message").map_or_else(String::new, percent_decode_message)
    }

    fn status(&self) -> (Code, String) {
        (self.code(), self.message_text())
    }

    fn ok<M: Message + Default>(&self) -> M {
        assert_eq!(self.status(), (Code::Ok, String::new()));
        assert_eq!(self.http_status, 200);
        assert_eq!(self.messages.len(), 1, "one response message");
        M::decode(self.messages[0].clone()).unwrap()
    }

    /// A refusal: trailers-only, no message.
    fn refused(&self) -> (Code, String) {
        assert!(self.headers.is_none(), "trailers-only: {:?}", self.events);
        assert_eq!(self.http_status, 200);
        assert_eq!(
            find(&self.trailers, "content-type"),
            Some("application/grpc")
        );
        self.status()
    }
}

fn request_headers(path: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in extra {
        h.retain(|(n, _)| n != k);
        h.push(((*k).to_owned(), (*v).to_owned()));
    }
    h
}

fn frame(message: &impl Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut v = prefix(false, body.len()).unwrap().to_vec();
    v.extend_from_slice(&body);
    Bytes::from(v)
}

fn open(service: &GrpcService, path: &str, extra: &[(&str, &str)]) -> (Call, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let call = service.open_call(
        &request_headers(path, extra),
        Box::new(Sink(Arc::clone(&recorder))),
    );
    (call, recorder)
}

fn unary_on(service: &GrpcService, method: Method, message: &impl Message) -> Reply {
    let (mut call, recorder) = open(service, &method.path(), &[]);
    call.handle_data(frame(message));
    call.handle_end_of_stream();
    let reply = recorder.wait_trailers();
    assert!(call.is_finished());
    reply
}

fn unary(method: Method, message: &impl Message) -> Reply {
    unary_on(&service(), method, message)
}

fn param(choice: ParameterChoice) -> InferParameter {
    InferParameter {
        parameter_choice: Some(choice),
    }
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
    Bytes::from(
        values
            .into_iter()
            .flat_map(i32::to_le_bytes)
            .collect::<Vec<u8>>(),
    )
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

fn delay_request(id: &str, delay_ms: i64) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "delay".to_owned(),
        id: id.to_owned(),
        parameters: BTreeMap::from([(
            "execute_delay_ms".to_owned(),
            param(ParameterChoice::Int64Param(delay_ms)),
        )]),
        inputs: vec![input("INPUT0", "FP32", &[1, 1])],
        raw_input_contents: vec![Bytes::from_static(&[0, 0, 128, 63])],
        ..ModelInferRequest::default()
    }
}

// ---------------------------------------------------------------------------
// Call setup and framing.

#[test]
fn requests_that_are_not_grpc_get_http_answers() {
    let service = service();
    let (call, recorder) = open(&service, &Method::ServerLive.path(), &[(":method", "GET")]);
    assert!(call.is_finished() && call.method().is_none());
    let reply = recorder.wait_trailers();
    assert_eq!(reply.http_status, 405);
    assert_eq!(reply.code(), Code::Unimplemented);

    let (_call, recorder) = open(
        &service,
        &Method::ServerLive.path(),
        &[("content-type", "application/json")],
    );
    let reply = recorder.wait_trailers();
    assert_eq!(reply.http_status, 415);
    assert!(reply.message_text().starts_with("unsupported content-type"));
}

#[test]
fn unknown_methods_and_encodings_are_refused_trailers_only() {
    let service = service();
    let (mut call, recorder) = open(&service, "/inference.GRPCInferenceService/Nope", &[]);
    // Whatever the client still sends is ignored.
    call.handle_data(frame(&ServerLiveRequest {}));
    call.handle_end_of_stream();
    let reply = recorder.wait_trailers();
    assert_eq!(
        reply.refused(),
        (
            Code::Unimplemented,
            "unknown gRPC method '/inference.GRPCInferenceService/Nope'".to_owned()
        )
    );
    assert_eq!(reply.events.len(), 1);

    let (_call, recorder) = open(&service, "/grpc.health.v1.Health/Watch", &[]);
    assert_eq!(recorder.wait_trailers().refused().0, Code::Unimplemented);

    let (_call, recorder) = open(
        &service,
        &Method::ServerLive.path(),
        &[("grpc-encoding", "br")],
    );
    let reply = recorder.wait_trailers();
    assert_eq!(reply.refused().0, Code::Unimplemented);
    assert_eq!(
        find(&reply.trailers, "grpc-accept-encoding"),
        Some("identity,deflate,gzip")
    );
}

#[test]
fn messages_split_across_data_chunks() {
    let service = service();
    let wire = frame(&simple_request("split"));
    let (mut call, recorder) = open(&service, &Method::ModelInfer.path(), &[]);
    for piece in wire.chunks(7) {
        call.handle_data(Bytes::copy_from_slice(piece));
    }
    call.handle_end_of_stream();
    let r: ModelInferResponse = recorder.wait_trailers().ok();
    assert_eq!(r.id, "split");
}

#[test]
fn unary_message_count_and_garbage() {
    let service = service();
    let (mut call, recorder) = open(&service, &Method::ServerLive.path(), &[]);
    call.handle_end_of_stream();
    assert_eq!(
        recorder.wait_trailers().refused(),
        (
            Code::Internal,
            "the call ended without a request message".to_owned()
        )
    );

    let (mut call, recorder) = open(&service, &Method::ServerLive.path(), &[]);
    call.handle_data(frame(&ServerLiveRequest {}));
    call.handle_data(frame(&ServerLiveRequest {}));
    assert!(call.is_finished());
    assert_eq!(
        recorder.wait_trailers().refused(),
        (
            Code::Internal,
            "ServerLive takes one request message, the client sent more".to_owned()
        )
    );

    let (mut call, recorder) = open(&service, &Method::ModelReady.path(), &[]);
    call.handle_data(Bytes::from_static(&[0, 0, 0, 0, 2, 0xff, 0xff]));
    call.handle_end_of_stream();
    let (code, message) = recorder.wait_trailers().refused();
    assert_eq!(code, Code::Internal);
    assert!(
        message.starts_with("failed to parse the request message: "),
        "{message}"
    );

    let (mut call, recorder) = open(&service, &Method::ServerLive.path(), &[]);
    call.handle_data(Bytes::from_static(&[0, 0, 0, 0, 9, 1]));
    call.handle_end_of_stream();
    let (code, message) = recorder.wait_trailers().refused();
    assert_eq!(code, Code::Internal);
    assert!(message.starts_with("request stream ended inside a message"));
}

#[test]
fn oversize_messages_are_resource_exhausted() {
    let service = GrpcService::new(
        shared_server(),
        GrpcConfig {
            max_message_size: 64,
            ..GrpcConfig::default()
        },
    );
    let (mut call, recorder) = open(&service, &Method::ModelInfer.path(), &[]);
    call.handle_data(frame(&simple_request("big")));
    assert!(call.is_finished());
    let (code, message) = recorder.wait_trailers().refused();
    assert_eq!(code, Code::ResourceExhausted);
    assert!(
        message.starts_with("Received message larger than max ("),
        "{message}"
    );
    assert!(message.ends_with(" vs. 64)"));

    // A response past the limit is refused with Triton's wording.
    let service = GrpcService::new(
        shared_server(),
        GrpcConfig {
            max_message_size: 150,
            ..GrpcConfig::default()
        },
    );
    // Small varints in, 64 raw bytes per output back.
    let mut small = simple_request("");
    small.raw_input_contents.clear();
    for i in &mut small.inputs {
        i.contents = Some(InferTensorContents {
            int_contents: (0..16).collect(),
            ..InferTensorContents::default()
        });
    }
    assert!(small.encode_to_vec().len() <= 150);
    let reply = unary_on(&service, Method::ModelInfer, &small);
    let (code, message) = reply.refused();
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.starts_with("Response has byte size ")
            && message.ends_with(" which exceeds gRPC's byte size limit 150."),
        "{message}"
    );
}

#[test]
fn compressed_requests_and_responses() {
    for encoding in [Encoding::Gzip, Encoding::Deflate] {
        let service = GrpcService::new(
            shared_server(),
            GrpcConfig {
                response_compression: CompressionLevel::High,
                ..GrpcConfig::default()
            },
        );
        let body = simple_request("zipped").encode_to_vec();
        let packed = compress(encoding, CompressionLevel::Low, &[Bytes::from(body)]);
        let mut wire = prefix(true, packed.len()).unwrap().to_vec();
        wire.extend_from_slice(&packed);
        let (mut call, recorder) = open(
            &service,
            &Method::ModelInfer.path(),
            &[
                ("grpc-encoding", encoding.name()),
                ("grpc-accept-encoding", encoding.name()),
            ],
        );
        call.handle_data(Bytes::from(wire));
        call.handle_end_of_stream();
        let reply = recorder.wait_trailers();
        let headers = reply.headers.clone().unwrap();
        assert_eq!(find(&headers, "grpc-encoding"), Some(encoding.name()));
        let r: ModelInferResponse = reply.ok();
        assert_eq!(r.id, "zipped");
        assert_eq!(r.raw_output_contents[0], i32_bytes(1..17));

        // Non-inference responses stay uncompressed.
        let (mut call, recorder) = open(
            &service,
            &Method::ServerMetadata.path(),
            &[("grpc-accept-encoding", "gzip")],
        );
        call.handle_data(frame(&ServerMetadataRequest {}));
        call.handle_end_of_stream();
        let reply = recorder.wait_trailers();
        assert_eq!(find(reply.headers.as_ref().unwrap(), "grpc-encoding"), None);
    }

    // A compressed message without an encoding is a protocol error.
    let (mut call, recorder) = open(&service(), &Method::ServerLive.path(), &[]);
    call.handle_data(Bytes::from_static(&[1, 0, 0, 0, 0]));
    assert_eq!(recorder.wait_trailers().refused().0, Code::Internal);
}

// ---------------------------------------------------------------------------
// Health, metadata and configuration.

#[test]
fn health_and_metadata() {
    let live: ServerLiveResponse = unary(Method::ServerLive, &ServerLiveRequest {}).ok();
    assert!(live.live);
    let ready: ServerReadyResponse = unary(Method::ServerReady, &ServerReadyRequest {}).ok();
    assert!(ready.ready);
    let reply = unary(Method::ServerMetadata, &ServerMetadataRequest {});
    let headers = reply.headers.clone().unwrap();
    assert_eq!(reply.http_status, 200);
    assert_eq!(find(&headers, "content-type"), Some("application/grpc"));
    assert_eq!(reply.trailers, vec![("grpc-status", "0".to_owned())]);
    let m: ServerMetadataResponse = reply.ok();
    assert_eq!(m.name, "triton");
    assert!(m.extensions.iter().any(|e| e == "model_repository"));

    for service in ["", "inference.GRPCInferenceService"] {
        let h: HealthCheckResponse = unary(
            Method::HealthCheck,
            &HealthCheckRequest {
                service: service.to_owned(),
            },
        )
        .ok();
        assert_eq!(h.status, ServingStatus::Serving as i32);
    }
    let reply = unary(
        Method::HealthCheck,
        &HealthCheckRequest {
            service: "other.Service".to_owned(),
        },
    );
    assert_eq!(reply.refused().0, Code::NotFound);
}

#[test]
fn model_ready_metadata_and_config() {
    let ready: ModelReadyResponse = unary(
        Method::ModelReady,
        &ModelReadyRequest {
            name: "simple".to_owned(),
            version: "1".to_owned(),
        },
    )
    .ok();
    assert!(ready.ready);
    let (code, message) = unary(
        Method::ModelReady,
        &ModelReadyRequest {
            name: "nope".to_owned(),
            version: String::new(),
        },
    )
    .refused();
    // A name the repository does not hold at all: INVALID_ARGUMENT, as Triton.
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.starts_with("Request for unknown model"),
        "{message}"
    );
    let (code, message) = unary(
        Method::ModelReady,
        &ModelReadyRequest {
            name: "simple".to_owned(),
            version: "x".to_owned(),
        },
    )
    .refused();
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.starts_with("failed to get model version from specified version string 'x'"));

    let m: ModelMetadataResponse = unary(
        Method::ModelMetadata,
        &ModelMetadataRequest {
            name: "simple".to_owned(),
            version: String::new(),
        },
    )
    .ok();
    assert_eq!(
        (m.name.as_str(), m.platform.as_str()),
        ("simple", "add_sub")
    );
    assert_eq!(m.versions, vec!["1"]);
    assert_eq!(m.inputs.len(), 2);
    assert_eq!(
        (m.inputs[0].name.as_str(), m.inputs[0].datatype.as_str()),
        ("INPUT0", "INT32")
    );
    assert_eq!(m.inputs[0].shape, vec![-1, 16]);
    assert_eq!(m.outputs[1].name, "OUTPUT1");

    let c: ModelConfigResponse = unary(
        Method::ModelConfig,
        &ModelConfigRequest {
            name: "simple".to_owned(),
            version: String::new(),
        },
    )
    .ok();
    let config = c.config.unwrap();
    assert_eq!((config.name.as_str(), config.max_batch_size), ("simple", 8));
    assert_eq!(config.backend, "add_sub");
    assert_eq!(config.input[0].dims, vec![16]);
    assert_eq!(
        unary(
            Method::ModelConfig,
            &ModelConfigRequest {
                name: "nope".to_owned(),
                version: String::new(),
            },
        )
        .refused()
        .0,
        Code::InvalidArgument
    );
}

#[test]
fn model_statistics() {
    let server = new_server(ControlMode::Explicit, &["simple", "identity_int8"]);
    let service = GrpcService::new(Arc::clone(&server), GrpcConfig::default());
    for _ in 0..2 {
        let _: ModelInferResponse =
            unary_on(&service, Method::ModelInfer, &simple_request("")).ok();
    }
    let stats = |name: &str, version: &str| {
        unary_on(
            &service,
            Method::ModelStatistics,
            &ModelStatisticsRequest {
                name: name.to_owned(),
                version: version.to_owned(),
            },
        )
    };
    let r: ModelStatisticsResponse = stats("simple", "").ok();
    assert_eq!(r.model_stats.len(), 1);
    let s = &r.model_stats[0];
    assert_eq!((s.name.as_str(), s.version.as_str()), ("simple", "1"));
    assert_eq!((s.inference_count, s.execution_count), (2, 2));
    assert!(s.last_inference > 0);
    let inference = s.inference_stats.as_ref().unwrap();
    assert_eq!(inference.success.as_ref().unwrap().count, 2);
    assert_eq!(inference.fail.as_ref().unwrap().count, 0);
    assert_eq!(inference.cache_hit, Some(StatisticDuration::default()));
    assert_eq!(s.batch_stats.len(), 1);
    assert_eq!(s.batch_stats[0].batch_size, 1);
    assert_eq!(s.batch_stats[0].compute_infer.as_ref().unwrap().count, 2);

    let all: ModelStatisticsResponse = stats("", "").ok();
    let names: Vec<&str> = all.model_stats.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["identity_int8", "simple"]);
    let one: ModelStatisticsResponse = stats("simple", "1").ok();
    assert_eq!(one.model_stats.len(), 1);
    assert_ne!(stats("simple", "9").refused().0, Code::Ok);
    assert_eq!(stats("nope", "").refused().0, Code::InvalidArgument);
    server.shutdown();
}

#[test]
fn shared_memory_is_refused_while_client_shm_is_off() {
    let status: SystemSharedMemoryStatusResponse = unary(
        Method::SystemSharedMemoryStatus,
        &SystemSharedMemoryStatusRequest::default(),
    )
    .ok();
    assert!(status.regions.is_empty());
    let status: CudaSharedMemoryStatusResponse = unary(
        Method::CudaSharedMemoryStatus,
        &CudaSharedMemoryStatusRequest::default(),
    )
    .ok();
    assert!(status.regions.is_empty());
    let (code, message) = unary(
        Method::CudaSharedMemoryStatus,
        &CudaSharedMemoryStatusRequest { name: "r".into() },
    )
    .refused();
    assert_eq!(code, Code::NotFound);
    assert_eq!(message, "Unable to find cuda shared memory region: 'r'");
    let refused = [
        unary(
            Method::SystemSharedMemoryRegister,
            &SystemSharedMemoryRegisterRequest::default(),
        ),
        unary(
            Method::SystemSharedMemoryUnregister,
            &SystemSharedMemoryUnregisterRequest::default(),
        ),
        unary(
            Method::CudaSharedMemoryRegister,
            &CudaSharedMemoryRegisterRequest::default(),
        ),
        unary(
            Method::CudaSharedMemoryUnregister,
            &CudaSharedMemoryUnregisterRequest::default(),
        ),
    ];
    for reply in refused {
        let (code, message) = reply.refused();
        assert_eq!(code, Code::Unimplemented);
        assert_eq!(message, crate::shm::DISABLED);
    }
}

// ---------------------------------------------------------------------------
// Repository control, trace and log settings.

#[test]
fn repository_index_load_and_unload() {
    let server = new_server(ControlMode::Explicit, &["simple"]);
    let service = GrpcService::new(Arc::clone(&server), GrpcConfig::default());
    let index: RepositoryIndexResponse = unary_on(
        &service,
        Method::RepositoryIndex,
        &RepositoryIndexRequest {
            ready: true,
            ..RepositoryIndexRequest::default()
        },
    )
    .ok();
    let names: Vec<&str> = index.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["simple"]);
    assert_eq!(
        (
            index.models[0].version.as_str(),
            index.models[0].state.as_str()
        ),
        ("1", "READY")
    );
    let all: RepositoryIndexResponse = unary_on(
        &service,
        Method::RepositoryIndex,
        &RepositoryIndexRequest::default(),
    )
    .ok();
    assert!(
        all.models
            .iter()
            .any(|m| m.name == "identity_int8" && m.state.is_empty())
    );

    let (code, message) = unary_on(
        &service,
        Method::RepositoryIndex,
        &RepositoryIndexRequest {
            repository_name: "r".to_owned(),
            ready: false,
        },
    )
    .refused();
    assert_eq!(
        (code, message.as_str()),
        (
            Code::Unimplemented,
            "'repository_name' specification is not supported"
        )
    );

    // Load with a configuration override.
    let load = |params: Vec<(&str, RepoChoice)>| {
        unary_on(
            &service,
            Method::RepositoryModelLoad,
            &RepositoryModelLoadRequest {
                model_name: "identity_int8".to_owned(),
                parameters: params
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k.to_owned(),
                            ModelRepositoryParameter {
                                parameter_choice: Some(v),
                            },
                        )
                    })
                    .collect(),
                ..RepositoryModelLoadRequest::default()
            },
        )
    };
    let _: RepositoryModelLoadResponse = load(vec![(
        "config",
        RepoChoice::StringParam(r#"{"max_batch_size": 4}"#.to_owned()),
    )])
    .ok();
    assert_eq!(
        server
            .model("identity_int8", None)
            .unwrap()
            .config
            .max_batch_size,
        4
    );
    assert_eq!(
        load(vec![("config", RepoChoice::BoolParam(true))]).refused(),
        (
            Code::InvalidArgument,
            "invalid value type for load parameter 'config', expected string_param.".to_owned()
        )
    );
    assert_eq!(
        load(vec![(
            "file:1/model.onnx",
            RepoChoice::StringParam(String::new())
        )])
        .refused(),
        (
            Code::InvalidArgument,
            "invalid value type for load parameter 'file:1/model.onnx', expected bytes_param."
                .to_owned()
        )
    );
    // Model file overrides: `config` is required with them, paths stay
    // inside the model directory, and the model then loads from a
    // directory of just those files, removed once it is unloaded.
    let (code, message) =
        load(vec![("file:1/model.onnx", RepoChoice::BytesParam(vec![1]))]).refused();
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.starts_with(
            "failed to load 'identity_int8', failed to poll from model repository: load parameter 'config' must be given"
        ),
        "{message}"
    );
    let (code, message) = load(vec![
        ("config", RepoChoice::StringParam("{}".to_owned())),
        ("file:../../escaped", RepoChoice::BytesParam(vec![1])),
    ])
    .refused();
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("outside the model directory"), "{message}");
    assert_eq!(
        server
            .model("identity_int8", None)
            .unwrap()
            .config
            .max_batch_size,
        4,
        "a refused override load leaves the model serving"
    );
    let config = r#"{"backend":"identity","max_batch_size":2,
        "input":[{"name":"INPUT0","data_type":"TYPE_INT8","dims":[-1]}],
        "output":[{"name":"OUTPUT0","data_type":"TYPE_INT8","dims":[-1]}]}"#;
    let _: RepositoryModelLoadResponse = load(vec![
        ("config", RepoChoice::StringParam(config.to_owned())),
        ("file:1/notes.txt", RepoChoice::BytesParam(b"x".to_vec())),
    ])
    .ok();
    let model = server.model("identity_int8", None).unwrap();
    assert_eq!(model.config.max_batch_size, 2);
    let override_dir = model.model_path.clone();
    assert_ne!(override_dir, repository().join("identity_int8"));
    assert_eq!(
        std::fs::read(override_dir.join("1/notes.txt")).unwrap(),
        b"x"
    );
    drop(model);
    assert_eq!(
        load(vec![("weird", RepoChoice::BoolParam(true))]).refused(),
        (
            Code::InvalidArgument,
            "unrecognized load parameter 'weird'.".to_owned()
        )
    );

    let unload = |params: Vec<(&str, RepoChoice)>| {
        unary_on(
            &service,
            Method::RepositoryModelUnload,
            &RepositoryModelUnloadRequest {
                model_name: "identity_int8".to_owned(),
                parameters: params
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k.to_owned(),
                            ModelRepositoryParameter {
                                parameter_choice: Some(v),
                            },
                        )
                    })
                    .collect(),
                ..RepositoryModelUnloadRequest::default()
            },
        )
    };
    assert_eq!(
        unload(vec![(
            "unload_dependents",
            RepoChoice::StringParam("yes".into())
        )])
        .refused(),
        (
            Code::InvalidArgument,
            "invalid value type for 'unload_dependents' parameter, expected bool_param.".to_owned()
        )
    );
    let _: RepositoryModelUnloadResponse =
        unload(vec![("unload_dependents", RepoChoice::BoolParam(true))]).ok();
    assert!(server.model("identity_int8", None).is_err());
    assert!(
        !override_dir.exists(),
        "unloading removes the override files"
    );
    server.shutdown();
}

#[test]
fn trace_settings() {
    let server = new_server(ControlMode::Explicit, &["simple"]);
    let service = GrpcService::new(Arc::clone(&server), GrpcConfig::default());
    let trace = |model: &str, settings: Vec<(&str, Vec<&str>)>| {
        unary_on(
            &service,
            Method::TraceSetting,
            &TraceSettingRequest {
                model_name: model.to_owned(),
                settings: settings
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k.to_owned(),
                            TraceValue {
                                value: v.into_iter().map(str::to_owned).collect(),
                            },
                        )
                    })
                    .collect(),
            },
        )
    };
    let values = |r: &TraceSettingResponse, key: &str| r.settings[key].value.clone();
    let current: TraceSettingResponse = trace("", vec![]).ok();
    assert_eq!(values(&current, "trace_level"), ["OFF"]);
    assert_eq!(values(&current, "trace_rate"), ["1000"]);
    assert_eq!(values(&current, "trace_count"), ["-1"]);
    assert_eq!(values(&current, "log_frequency"), ["0"]);
    assert_eq!(values(&current, "trace_mode"), ["triton"]);

    let updated: TraceSettingResponse = trace(
        "simple",
        vec![("trace_rate", vec!["5"]), ("trace_count", vec!["10"])],
    )
    .ok();
    assert_eq!(values(&updated, "trace_rate"), ["5"]);
    assert_eq!(values(&updated, "trace_count"), ["10"]);
    let global: TraceSettingResponse = trace("", vec![]).ok();
    assert_eq!(values(&global, "trace_rate"), ["1000"]);
    let cleared: TraceSettingResponse = trace("simple", vec![("trace_rate", vec![])]).ok();
    assert_eq!(values(&cleared, "trace_rate"), ["1000"]);

    for (settings, message) in [
        (
            vec![("trace_file", vec!["x"])],
            "trace file location can not be updated through network protocol",
        ),
        (
            vec![("trace_level", vec!["OFF", "TENSORS"])],
            "Expect only one trace level 'OFF' is specified",
        ),
        (
            vec![("trace_rate", vec!["1", "2"])],
            "expect only 1 value for 'trace_rate'",
        ),
        (
            vec![("trace_rate", vec!["abc"])],
            "Unable to parse 'trace_rate', got: abc",
        ),
        (
            vec![("trace_count", vec!["-5"])],
            "Unable to parse 'trace_count'. Expecting value >= -1, got: -5",
        ),
        (
            vec![("log_frequency", vec!["-1"])],
            "Unable to parse 'log_frequency', value is out of range [ 0, 4294967295 ], got: -1",
        ),
    ] {
        let (_, got) = trace("", settings).refused();
        assert_eq!(got, message);
    }
    let (code, message) = trace("nope", vec![]).refused();
    assert_ne!(code, Code::Ok);
    assert!(message.contains("nope"), "{message}");
    server.shutdown();
}

#[test]
fn log_settings() {
    let log = |settings: Vec<(&str, LogChoice)>| {
        unary(
            Method::LogSettings,
            &LogSettingsRequest {
                settings: settings
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k.to_owned(),
                            LogValue {
                                parameter_choice: Some(v),
                            },
                        )
                    })
                    .collect(),
            },
        )
    };
    let current: LogSettingsResponse = log(vec![]).ok();
    let keys: Vec<&str> = current.settings.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "log_error",
            "log_file",
            "log_format",
            "log_info",
            "log_verbose_level",
            "log_warning"
        ]
    );
    let Some(LogOut::BoolParam(info)) = current.settings["log_info"].parameter_choice else {
        panic!("log_info is a bool");
    };
    // Writing the value in force back changes nothing for other tests.
    let same: LogSettingsResponse = log(vec![("log_info", LogChoice::BoolParam(info))]).ok();
    assert_eq!(same.settings["log_info"], current.settings["log_info"]);

    for (settings, code, message) in [
        (
            vec![("log_file", LogChoice::StringParam("/tmp/x".into()))],
            Code::Unimplemented,
            "log file location can not be updated through network protocol",
        ),
        (
            vec![("log_info", LogChoice::Uint32Param(1))],
            Code::InvalidArgument,
            "expect boolean for 'log_info'",
        ),
        (
            vec![("log_verbose_level", LogChoice::BoolParam(true))],
            Code::InvalidArgument,
            "expect int32 for 'log_verbose_level'",
        ),
        (
            vec![("log_format", LogChoice::Uint32Param(1))],
            Code::InvalidArgument,
            "expect string for 'log_format'",
        ),
        (
            vec![("log_format", LogChoice::StringParam("json".into()))],
            Code::InvalidArgument,
            "invalid argument for log_format, got: json",
        ),
    ] {
        assert_eq!(log(settings).refused(), (code, message.to_owned()));
    }
}

// ---------------------------------------------------------------------------
// ModelInfer.

#[test]
fn model_infer_raw() {
    let mut request = simple_request("req-7");
    request.outputs = vec![InferRequestedOutputTensor {
        name: "OUTPUT1".to_owned(),
        parameters: BTreeMap::from([(
            "binary_data".to_owned(),
            param(ParameterChoice::BoolParam(false)),
        )]),
    }];
    let r: ModelInferResponse = unary(Method::ModelInfer, &request).ok();
    assert_eq!(
        (
            r.model_name.as_str(),
            r.model_version.as_str(),
            r.id.as_str()
        ),
        ("simple", "1", "req-7")
    );
    assert_eq!(r.outputs.len(), 1);
    assert_eq!(r.outputs[0].name, "OUTPUT1");
    assert_eq!(r.outputs[0].datatype, "INT32");
    assert_eq!(r.outputs[0].shape, vec![1, 16]);
    assert_eq!(r.raw_output_contents, vec![i32_bytes(-1..15)]);
    assert!(!r.parameters.contains_key(FINAL_RESPONSE_PARAMETER));

    // Every output, in the model's order, aligned with the raw contents.
    let r: ModelInferResponse = unary(Method::ModelInfer, &simple_request("")).ok();
    let names: Vec<&str> = r.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["OUTPUT0", "OUTPUT1"]);
    assert_eq!(
        r.raw_output_contents,
        vec![i32_bytes(1..17), i32_bytes(-1..15)]
    );
    assert_eq!(r.id, "");
}

#[test]
fn model_infer_typed_contents_for_every_datatype() {
    let c = InferTensorContents::default;
    let cases: Vec<(&str, &str, InferTensorContents, Vec<u8>)> = vec![
        (
            "identity_bool",
            "BOOL",
            InferTensorContents {
                bool_contents: vec![true, false],
                ..c()
            },
            vec![1, 0],
        ),
        (
            "identity_int8",
            "INT8",
            InferTensorContents {
                int_contents: vec![-1, 7],
                ..c()
            },
            vec![0xff, 7],
        ),
        (
            "identity_int16",
            "INT16",
            InferTensorContents {
                int_contents: vec![-2, 8],
                ..c()
            },
            [(-2i16).to_le_bytes(), 8i16.to_le_bytes()].concat(),
        ),
        (
            "identity_int32",
            "INT32",
            InferTensorContents {
                int_contents: vec![-3, 9],
                ..c()
            },
            [(-3i32).to_le_bytes(), 9i32.to_le_bytes()].concat(),
        ),
        (
            "identity_int64",
            "INT64",
            InferTensorContents {
                int64_contents: vec![i64::MIN, 10],
                ..c()
            },
            [i64::MIN.to_le_bytes(), 10i64.to_le_bytes()].concat(),
        ),
        (
            "identity_uint8",
            "UINT8",
            InferTensorContents {
                uint_contents: vec![255, 11],
                ..c()
            },
            vec![255, 11],
        ),
        (
            "identity_uint16",
            "UINT16",
            InferTensorContents {
                uint_contents: vec![65535, 12],
                ..c()
            },
            [65535u16.to_le_bytes(), 12u16.to_le_bytes()].concat(),
        ),
        (
            "identity_uint32",
            "UINT32",
            InferTensorContents {
                uint_contents: vec![u32::MAX, 13],
                ..c()
            },
            [u32::MAX.to_le_bytes(), 13u32.to_le_bytes()].concat(),
        ),
        (
            "identity_uint64",
            "UINT64",
            InferTensorContents {
                uint64_contents: vec![u64::MAX, 14],
                ..c()
            },
            [u64::MAX.to_le_bytes(), 14u64.to_le_bytes()].concat(),
        ),
        (
            "identity_fp32",
            "FP32",
            InferTensorContents {
                fp32_contents: vec![1.5, -2.0],
                ..c()
            },
            [1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat(),
        ),
        (
            "identity_fp64",
            "FP64",
            InferTensorContents {
                fp64_contents: vec![0.1, 1e-300],
                ..c()
            },
            [0.1f64.to_le_bytes(), 1e-300f64.to_le_bytes()].concat(),
        ),
        (
            "identity_bytes",
            "BYTES",
            InferTensorContents {
                bytes_contents: vec![Bytes::from_static(b"hello"), Bytes::new()],
                ..c()
            },
            [&5u32.to_le_bytes()[..], b"hello", &0u32.to_le_bytes()].concat(),
        ),
    ];
    for (model, datatype, contents, expected) in cases {
        let mut inp = input("INPUT0", datatype, &[1, 2]);
        inp.contents = Some(contents);
        let request = ModelInferRequest {
            model_name: model.to_owned(),
            inputs: vec![inp],
            ..ModelInferRequest::default()
        };
        let r: ModelInferResponse = unary(Method::ModelInfer, &request).ok();
        assert_eq!(r.outputs[0].datatype, datatype, "{model}");
        assert_eq!(r.outputs[0].shape, vec![1, 2], "{model}");
        assert_eq!(&r.raw_output_contents[0][..], &expected[..], "{model}");
    }
}

#[test]
fn model_infer_raw_for_every_datatype() {
    for (model, datatype, size) in [
        ("identity_bool", "BOOL", 1),
        ("identity_int8", "INT8", 1),
        ("identity_int16", "INT16", 2),
        ("identity_int32", "INT32", 4),
        ("identity_int64", "INT64", 8),
        ("identity_uint8", "UINT8", 1),
        ("identity_uint16", "UINT16", 2),
        ("identity_uint32", "UINT32", 4),
        ("identity_uint64", "UINT64", 8),
        ("identity_fp16", "FP16", 2),
        ("identity_bf16", "BF16", 2),
        ("identity_fp32", "FP32", 4),
        ("identity_fp64", "FP64", 8),
    ] {
        let data: Vec<u8> = (0..3 * size)
            .map(|i| {
                if datatype == "BOOL" {
                    (i % 2) as u8
                } else {
                    i as u8
                }
            })
            .collect();
        let request = ModelInferRequest {
            model_name: model.to_owned(),
            inputs: vec![input("INPUT0", datatype, &[1, 3])],
            raw_input_contents: vec![Bytes::from(data.clone())],
            ..ModelInferRequest::default()
        };
        let r: ModelInferResponse = unary(Method::ModelInfer, &request).ok();
        assert_eq!(r.outputs[0].datatype, datatype);
        assert_eq!(&r.raw_output_contents[0][..], &data[..], "{model}");
    }
    let mut strings = Vec::new();
    for s in [&b"a"[..], b"", b"xyz"] {
        strings.extend_from_slice(&(s.len() as u32).to_le_bytes());
        strings.extend_from_slice(s);
    }
    let request = ModelInferRequest {
        model_name: "identity_bytes".to_owned(),
        inputs: vec![input("INPUT0", "BYTES", &[1, 3])],
        raw_input_contents: vec![Bytes::from(strings.clone())],
        ..ModelInferRequest::default()
    };
    let r: ModelInferResponse = unary(Method::ModelInfer, &request).ok();
    assert_eq!(&r.raw_output_contents[0][..], &strings[..]);
}

#[test]
fn model_infer_classification() {
    let request = ModelInferRequest {
        model_name: "identity_fp32".to_owned(),
        inputs: vec![input("INPUT0", "FP32", &[1, 3])],
        raw_input_contents: vec![Bytes::from(
            [0.5f32, 2.0, 1.0]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>(),
        )],
        outputs: vec![InferRequestedOutputTensor {
            name: "OUTPUT0".to_owned(),
            parameters: BTreeMap::from([(
                "classification".to_owned(),
                param(ParameterChoice::Int64Param(2)),
            )]),
        }],
        ..ModelInferRequest::default()
    };
    let r: ModelInferResponse = unary(Method::ModelInfer, &request).ok();
    assert_eq!(r.outputs[0].datatype, "BYTES");
    assert_eq!(r.outputs[0].shape, vec![1, 2]);
    let classes = split_bytes_elements(&r.raw_output_contents[0]).unwrap();
    assert_eq!(classes, vec![&b"2.000000:1:one"[..], b"1.000000:2:two"]);
}

#[test]
fn model_infer_errors() {
    let mut unknown = simple_request("");
    unknown.model_name = "nope".to_owned();
    let (code, message) = unary(Method::ModelInfer, &unknown).refused();
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.starts_with("Request for unknown model"));

    let mut bad_shape = simple_request("r1");
    bad_shape.inputs[0].shape = vec![1, 15];
    bad_shape.raw_input_contents[0] = i32_bytes(0..15);
    let (code, message) = unary(Method::ModelInfer, &bad_shape).refused();
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message
            .starts_with("[request id: r1] unexpected shape for input 'INPUT0' for model 'simple'"),
        "{message}"
    );

    let mut short = simple_request("");
    short.raw_input_contents[1] = i32_bytes(0..15);
    let (code, message) = unary(Method::ModelInfer, &short).refused();
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.starts_with("input byte size mismatch for input 'INPUT1'"),
        "{message}"
    );

    let mut missing = simple_request("");
    missing.raw_input_contents.pop();
    assert_eq!(
        unary(Method::ModelInfer, &missing).refused(),
        (
            Code::InvalidArgument,
            "unable to find data for input tensor 'INPUT1' for model 'simple' in request."
                .to_owned()
        )
    );

    let mut version = simple_request("");
    version.model_version = "-3".to_owned();
    assert_eq!(
        unary(Method::ModelInfer, &version).refused().0,
        Code::InvalidArgument
    );

    let fault = ModelInferRequest {
        model_name: "fault".to_owned(),
        inputs: vec![input("INPUT0", "INT32", &[4])],
        raw_input_contents: vec![i32_bytes(0..4)],
        ..ModelInferRequest::default()
    };
    let (code, _) = unary(Method::ModelInfer, &fault).refused();
    assert_ne!(code, Code::Ok);
}

#[test]
fn deadline_cancels_a_queued_inference() {
    let server = new_server(ControlMode::Explicit, &["delay"]);
    let service = GrpcService::new(Arc::clone(&server), GrpcConfig::default());
    let (mut call, recorder) = open(
        &service,
        &Method::ModelInfer.path(),
        &[("grpc-timeout", "50m")],
    );
    assert_eq!(call.timeout(), Some(Duration::from_millis(50)));
    call.handle_data(frame(&delay_request("slow", 5000)));
    call.handle_end_of_stream();
    assert!(!call.is_finished());
    let started = Instant::now();
    call.handle_deadline();
    assert_eq!(
        recorder.wait_trailers().refused(),
        (Code::DeadlineExceeded, "Deadline Exceeded".to_owned())
    );
    // The backend notices the cancellation long before its delay ends,
    // and its late completion writes nothing.
    while server.in_flight() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "work was not cancelled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(recorder.snapshot().len(), 1);
    server.shutdown();
}

// ---------------------------------------------------------------------------
// ModelStreamInfer.

fn stream_messages(reply: &Reply) -> Vec<ModelStreamInferResponse> {
    reply
        .messages
        .iter()
        .map(|m| ModelStreamInferResponse::decode(m.clone()).unwrap())
        .collect()
}

#[test]
fn stream_answers_in_order_with_errors_in_band() {
    let service = service();
    let (mut call, recorder) = open(&service, &Method::ModelStreamInfer.path(), &[]);
    assert_eq!(call.method(), Some(Method::ModelStreamInfer));

    let mut unknown = simple_request("bad-model");
    unknown.model_name = "nope".to_owned();
    let mut short = simple_request("bad-size");
    short.raw_input_contents[0] = i32_bytes(0..3);

    // The slow request first: its answer must still come first.
    call.handle_data(frame(&delay_request("slow", 300)));
    let mut wire = Vec::new();
    wire.extend_from_slice(&frame(&simple_request("fast")));
    wire.extend_from_slice(&frame(&unknown));
    wire.extend_from_slice(&frame(&short));
    call.handle_data(Bytes::from(wire));
    call.handle_data(Bytes::from_static(&[0, 0, 0, 0, 3, 0xff, 0xff, 0xff]));
    call.handle_data(frame(&simple_request("last")));
    // Half-close right away: the stream ends only once all are answered.
    call.handle_end_of_stream();
    assert!(!call.is_finished());

    let reply = recorder.wait_trailers();
    assert_eq!(reply.status(), (Code::Ok, String::new()));
    let responses = stream_messages(&reply);
    let summary: Vec<(String, String)> = responses
        .iter()
        .map(|r| {
            (
                r.infer_response.as_ref().unwrap().id.clone(),
                r.error_message.clone(),
            )
        })
        .collect();
    assert_eq!(summary.len(), 6, "{summary:?}");
    assert_eq!(summary[0], ("slow".to_owned(), String::new()));
    assert_eq!(summary[1], ("fast".to_owned(), String::new()));
    assert_eq!(summary[2].0, "bad-model");
    assert!(summary[2].1.starts_with("Request for unknown model"));
    assert_eq!(summary[3].0, "bad-size");
    assert!(
        summary[3]
            .1
            .contains("input byte size mismatch for input 'INPUT0'"),
        "{}",
        summary[3].1
    );
    assert_eq!(summary[4].0, "");
    assert!(
        summary[4]
            .1
            .starts_with("failed to parse the request message: ")
    );
    assert_eq!(summary[5], ("last".to_owned(), String::new()));

    let fast = responses[1].infer_response.as_ref().unwrap();
    assert_eq!(fast.raw_output_contents[0], i32_bytes(1..17));
    assert_eq!(
        fast.parameters[FINAL_RESPONSE_PARAMETER],
        param(ParameterChoice::BoolParam(true))
    );
    // A request that failed once running names its model and is final; one
    // refused before running carries only its id.
    let ran = responses[3].infer_response.as_ref().unwrap();
    assert_eq!(ran.model_name, "simple");
    assert!(ran.parameters.contains_key(FINAL_RESPONSE_PARAMETER));
    let refused = responses[2].infer_response.as_ref().unwrap();
    assert!(refused.model_name.is_empty() && refused.parameters.is_empty());
}

#[test]
fn stream_without_requests_and_empty_final_flag() {
    let service = service();
    let (mut call, recorder) = open(&service, &Method::ModelStreamInfer.path(), &[]);
    call.handle_end_of_stream();
    let reply = recorder.wait_trailers();
    assert_eq!(reply.refused(), (Code::Ok, String::new()));

    let (mut call, recorder) = open(&service, &Method::ModelStreamInfer.path(), &[]);
    let mut request = simple_request("flagged");
    request.parameters.insert(
        "triton_enable_empty_final_response".to_owned(),
        param(ParameterChoice::BoolParam(true)),
    );
    call.handle_data(frame(&request));
    let first = recorder.wait_for(|e| e.iter().any(|x| matches!(x, Event::Data(_))));
    assert!(matches!(first[0], Event::Headers(200, _, false)));
    assert!(
        !call.is_finished(),
        "the stream stays open until half-close"
    );
    call.handle_end_of_stream();
    let responses = stream_messages(&recorder.wait_trailers());
    assert_eq!(responses.len(), 1);
    assert!(responses[0].error_message.is_empty());
}

#[test]
fn stream_in_grpc_error_mode_ends_with_the_first_error() {
    let service = service();
    let (mut call, recorder) = open(
        &service,
        &Method::ModelStreamInfer.path(),
        &[("triton_grpc_error", "true")],
    );
    call.handle_data(frame(&simple_request("ok")));
    // Answers still in flight when the error comes are dropped with the
    // stream; wait for this one.
    recorder.wait_for(|e| e.iter().any(|x| matches!(x, Event::Data(_))));
    let mut unknown = simple_request("bad");
    unknown.model_name = "nope".to_owned();
    call.handle_data(frame(&unknown));
    assert!(call.is_finished());
    call.handle_data(frame(&simple_request("ignored")));
    let reply = recorder.wait_trailers();
    let (code, message) = reply.status();
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.starts_with("Request for unknown model"));
    let ids: Vec<String> = stream_messages(&reply)
        .iter()
        .map(|r| r.infer_response.as_ref().unwrap().id.clone())
        .collect();
    assert_eq!(ids, ["ok"]);
}

#[test]
fn stream_reset_drops_queued_work_and_sends_nothing() {
    let server = new_server(ControlMode::Explicit, &["delay"]);
    let service = GrpcService::new(Arc::clone(&server), GrpcConfig::default());
    let (mut call, recorder) = open(&service, &Method::ModelStreamInfer.path(), &[]);
    for i in 0..4 {
        call.handle_data(frame(&delay_request(&i.to_string(), 5000)));
    }
    assert_eq!(server.in_flight(), 4);
    let started = Instant::now();
    call.handle_reset();
    assert!(call.is_finished());
    while server.in_flight() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "work was not cancelled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(recorder.snapshot().is_empty());
    drop(call);

    // Dropping an unfinished call cancels it too.
    let (mut call, recorder) = open(&service, &Method::ModelStreamInfer.path(), &[]);
    call.handle_data(frame(&delay_request("dropped", 5000)));
    let started = Instant::now();
    drop(call);
    while server.in_flight() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "work was not cancelled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(recorder.snapshot().is_empty());
    server.shutdown();
}

#[test]
fn stream_framing_error_ends_the_stream() {
    let service = GrpcService::new(
        shared_server(),
        GrpcConfig {
            max_message_size: 300,
            ..GrpcConfig::default()
        },
    );
    let (mut call, recorder) = open(&service, &Method::ModelStreamInfer.path(), &[]);
    call.handle_data(frame(&simple_request("a")));
    let first = recorder.wait_for(|e| e.iter().any(|x| matches!(x, Event::Data(_))));
    assert_eq!(first.len(), 2);
    call.handle_data(Bytes::from_static(&[0, 0, 0, 10, 0]));
    let reply = recorder.wait_trailers();
    assert_eq!(reply.code(), Code::ResourceExhausted);
    assert_eq!(stream_messages(&reply).len(), 1);
}

#[test]
fn decoupled_models_answer_on_streams_only() {
    let server = new_server(ControlMode::Explicit, &[]);
    server
        .load_model(
            "identity_int8",
            Some(r#"{"max_batch_size": 8, "model_transaction_policy": {"decoupled": true}}"#),
        )
        .unwrap();
    let service = GrpcService::new(Arc::clone(&server), GrpcConfig::default());
    let request = ModelInferRequest {
        model_name: "identity_int8".to_owned(),
        id: "d".to_owned(),
        inputs: vec![input("INPUT0", "INT8", &[1, 2])],
        raw_input_contents: vec![Bytes::from_static(&[1, 2])],
        ..ModelInferRequest::default()
    };
    assert_eq!(
        unary_on(&service, Method::ModelInfer, &request).refused(),
        (
            Code::Unimplemented,
            "ModelInfer RPC doesn't support models with decoupled transaction policy".to_owned()
        )
    );
    let (mut call, recorder) = open(&service, &Method::ModelStreamInfer.path(), &[]);
    call.handle_data(frame(&request));
    call.handle_end_of_stream();
    let responses = stream_messages(&recorder.wait_trailers());
    assert_eq!(responses.len(), 1);
    let r = responses[0].infer_response.as_ref().unwrap();
    assert_eq!(r.raw_output_contents[0], Bytes::from_static(&[1, 2]));
    assert_eq!(
        r.parameters[FINAL_RESPONSE_PARAMETER],
        param(ParameterChoice::BoolParam(true))
    );
    server.shutdown();
}

#[test]
fn methods_map_to_triton_restriction_groups() {
    use crate::protocol::restrict::Category;
    let expect = |m: Method| match m.name() {
        "ServerLive" | "ServerReady" | "ModelReady" | "Check" => Category::Health,
        "ServerMetadata" | "ModelMetadata" => Category::Metadata,
        "ModelInfer" | "ModelStreamInfer" => Category::Inference,
        "ModelConfig" => Category::ModelConfig,
        "ModelStatistics" => Category::Statistics,
        "TraceSetting" => Category::Trace,
        "LogSettings" => Category::Logging,
        n if n.starts_with("Repository") => Category::ModelRepository,
        n if n.contains("SharedMemory") => Category::SharedMemory,
        n => panic!("no group for {n}"),
    };
    for m in Method::ALL {
        assert_eq!(m.category(), expect(m), "{}", m.name());
    }
}

#[test]
fn restricted_methods_need_their_header() {
    use crate::protocol::restrict::Restrictions;
    let mut restrictions = Restrictions::default();
    restrictions
        .add_group(
            "health:infer-key=infer-value",
            super::RESTRICTED_HEADER_PREFIX,
            "protocol",
        )
        .unwrap();
    let service = GrpcService::new(
        shared_server(),
        GrpcConfig {
            restrictions,
            ..GrpcConfig::default()
        },
    );
    let live = Method::ServerLive.path();
    for extra in [&[][..], &[("triton-grpc-protocol-infer-key", "wrong")][..]] {
        let (call, recorder) = open(&service, &live, extra);
        assert!(call.is_finished() && call.method().is_none());
        assert_eq!(
            recorder.wait_trailers().refused(),
            (
                Code::Unavailable,
                "This protocol is restricted, expecting header \
                 'triton-grpc-protocol-infer-key'"
                    .to_owned()
            )
        );
    }
    let (mut call, recorder) = open(
        &service,
        &live,
        &[("triton-grpc-protocol-infer-key", "infer-value")],
    );
    call.handle_data(frame(&ServerLiveRequest {}));
    call.handle_end_of_stream();
    let r: ServerLiveResponse = recorder.wait_trailers().ok();
    assert!(r.live);
    // Another group is not restricted.
    let (mut call, recorder) = open(&service, &Method::ServerMetadata.path(), &[]);
    call.handle_data(frame(&ServerMetadataRequest {}));
    call.handle_end_of_stream();
    let r: ServerMetadataResponse = recorder.wait_trailers().ok();
    assert_eq!(r.name, "triton");
}
