//! The gRPC service: maps each call's `:path` onto a [`Server`] call and
//! drives the call from its request bytes to its response bytes.
//!
//! # Driving a call (the net layer's side)
//!
//! The HTTP/2 connection owns the streams; for each request stream it
//! opens one [`Call`] and feeds it what arrives (in terms of
//! `protocol::http2::Event`):
//!
//! 1. `Event::Request`: build a [`CallSink`] for the stream and call
//!    [`GrpcService::open_call`] with the request's header fields
//!    (pseudo-headers included). If [`Call::timeout`] is `Some(d)`, arm a
//!    timer for `d` from now. With `end_stream`, go on as in step 3.
//! 2. `Event::Data`: [`Call::handle_data`] with its bytes (chunks may
//!    split messages anywhere), and release the flow-control capacity
//!    right away: the call has taken the bytes (it holds at most one
//!    incomplete message, bounded by [`GrpcConfig::max_message_size`]).
//!    With `end_stream`, go on as in step 3.
//! 3. End of the request (END_STREAM, or `Event::Trailers`, which gRPC
//!    clients do not send): [`Call::handle_end_of_stream`].
//! 4. `Event::Reset` (client RST_STREAM, a protocol error, the connection
//!    going away): [`Call::handle_reset`]. When the timer fires:
//!    [`Call::handle_deadline`].
//! 5. Keep the call until [`Call::is_finished`] and the stream is closed,
//!    then drop it (and its timer). Dropping an unfinished call cancels it.
//!
//! Every `handle_*` method returns quickly: inference runs on the model's
//! instance threads, repository control on a thread of its own.
//!
//! # Answering (the sink)
//!
//! The call writes through its [`CallSink`], from whichever thread has
//! the answer (the event loop, a model instance thread, a repository
//! thread). The sink is called with the call's lock held, so its calls
//! come in the order they must reach the wire, and they map one to one
//! onto the HTTP/2 connection's `send_headers` / `send_data` /
//! `send_trailers`:
//!
//! * a call that answers with messages gets one
//!   [`CallSink::send_headers`] (status 200, no END_STREAM), then
//!   [`CallSink::send_data`] per message (already framed, as chunks for a
//!   vectored write), then one [`CallSink::send_trailers`] (END_STREAM);
//! * a call refused or failed before any message gets a single
//!   [`CallSink::send_headers`] with `end_stream` set: a trailers-only
//!   response (status 200), or for a request that is not gRPC at all an
//!   HTTP 405 or 415.
//!
//! Nothing follows the END_STREAM, and nothing at all is sent after
//! [`Call::handle_reset`]. When the trailers go out while the client is
//! still sending, the net layer may end the request side with
//! RST_STREAM(NO_ERROR), as RFC 9113 §8.1 allows. A sink posts to the
//! event loop and wakes it; it must not call back into the call.
//!
//! # Streams
//!
//! `ModelStreamInfer` runs each request as soon as it is read and writes
//! each response in request order. A request that fails is answered in
//! the stream with `error_message` set and the stream stays open, unless
//! the client sent Triton's `triton_grpc_error: true` header, which makes
//! the first error end the stream with its status. Every response carries
//! `triton_final_response: true` (nereid's models answer each request
//! once). The client's half-close ends the stream with OK once every
//! request read has been answered; a reset cancels the work still queued.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;

use crate::core::proto::grpc::health::v1::HealthCheckRequest;
use crate::core::proto::inference::{
    CudaSharedMemoryRegisterRequest, CudaSharedMemoryStatusRequest,
    CudaSharedMemoryUnregisterRequest, LogSettingsRequest, ModelConfigRequest, ModelInferRequest,
    ModelMetadataRequest, ModelReadyRequest, ModelStatisticsRequest, RepositoryIndexRequest,
    RepositoryModelLoadRequest, RepositoryModelUnloadRequest, ServerLiveRequest,
    ServerMetadataRequest, ServerReadyRequest, SystemSharedMemoryRegisterRequest,
    SystemSharedMemoryStatusRequest, SystemSharedMemoryUnregisterRequest, TraceSettingRequest,
};
use crate::core::{CancelFlag, Error, InferResponse};
use crate::repository::LoadedModel;
use crate::server::Server;

use super::compression::{CompressionLevel, Encoding, compress, decompress};
use super::control;
use super::framing::{DEFAULT_MAX_MESSAGE_SIZE, FrameError, MessageDecoder, encode_frame};
use super::headers::{
    HeaderList, Rejection, parse_request_head, response_headers, trailers, trailers_only,
};
use super::infer::{
    DecodedInfer, FailedRequest, decode_infer_request, encode_infer_response, encode_stream_error,
    parse_model_version, wrap_stream_response,
};
use super::status::{Code, Status};
use crate::protocol::restrict::{Category, Restrictions};

/// Settings of the gRPC front end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcConfig {
    /// The longest message payload taken or sent, in bytes. The default is
    /// Triton's fixed limit, INT32_MAX; a longer incoming message ends the
    /// call with RESOURCE_EXHAUSTED, a longer response is refused with
    /// INVALID_ARGUMENT as Triton refuses it.
    pub max_message_size: usize,
    /// Compression of inference responses
    /// (`--grpc-infer-response-compression-level`).
    pub response_compression: CompressionLevel,
    /// `--grpc-restricted-protocol` groups; a restricted method needs its
    /// `triton-grpc-protocol-<key>` header (see [`RESTRICTED_HEADER_PREFIX`]).
    pub restrictions: Restrictions,
}

/// What Triton puts before a restriction's key to name the gRPC header.
pub const RESTRICTED_HEADER_PREFIX: &str = "triton-grpc-protocol-";

impl Default for GrpcConfig {
    fn default() -> GrpcConfig {
        GrpcConfig {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            response_compression: CompressionLevel::None,
            restrictions: Restrictions::default(),
        }
    }
}

/// Where a call's response goes: implemented by the net layer for one
/// HTTP/2 stream (see the module documentation for the order of calls).
pub trait CallSink: Send {
    /// Response headers: HTTP `status` and `headers` (no pseudo-headers),
    /// ending the response when `end_stream` (a trailers-only answer).
    fn send_headers(&mut self, status: u16, headers: HeaderList, end_stream: bool);
    /// Response bytes: one whole framed message, as chunks to write in
    /// order (DATA frames).
    fn send_data(&mut self, data: Vec<Bytes>);
    /// The trailers ending the response (HEADERS with END_STREAM).
    fn send_trailers(&mut self, trailers: HeaderList);
}

/// The methods the service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `ServerLive`.
    ServerLive,
    /// `ServerReady`.
    ServerReady,
    /// `ModelReady`.
    ModelReady,
    /// `ServerMetadata`.
    ServerMetadata,
    /// `ModelMetadata`.
    ModelMetadata,
    /// `ModelInfer`.
    ModelInfer,
    /// `ModelStreamInfer` (bidirectional stream).
    ModelStreamInfer,
    /// `ModelConfig`.
    ModelConfig,
    /// `ModelStatistics`.
    ModelStatistics,
    /// `RepositoryIndex`.
    RepositoryIndex,
    /// `RepositoryModelLoad`.
    RepositoryModelLoad,
    /// `RepositoryModelUnload`.
    RepositoryModelUnload,
    /// `SystemSharedMemoryStatus`.
    SystemSharedMemoryStatus,
    /// `SystemSharedMemoryRegister`.
    SystemSharedMemoryRegister,
    /// `SystemSharedMemoryUnregister`.
    SystemSharedMemoryUnregister,
    /// `CudaSharedMemoryStatus`.
    CudaSharedMemoryStatus,
    /// `CudaSharedMemoryRegister`.
    CudaSharedMemoryRegister,
    /// `CudaSharedMemoryUnregister`.
    CudaSharedMemoryUnregister,
    /// `TraceSetting`.
    TraceSetting,
    /// `LogSettings`.
    LogSettings,
    /// `grpc.health.v1.Health/Check`.
    HealthCheck,
}

const INFERENCE_PREFIX: &str = "/inference.GRPCInferenceService/";
const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

impl Method {
    /// Every method.
    pub const ALL: [Method; 21] = [
        Method::ServerLive,
        Method::ServerReady,
        Method::ModelReady,
        Method::ServerMetadata,
        Method::ModelMetadata,
        Method::ModelInfer,
        Method::ModelStreamInfer,
        Method::ModelConfig,
        Method::ModelStatistics,
        Method::RepositoryIndex,
        Method::RepositoryModelLoad,
        Method::RepositoryModelUnload,
        Method::SystemSharedMemoryStatus,
        Method::SystemSharedMemoryRegister,
        Method::SystemSharedMemoryUnregister,
        Method::CudaSharedMemoryStatus,
        Method::CudaSharedMemoryRegister,
        Method::CudaSharedMemoryUnregister,
        Method::TraceSetting,
        Method::LogSettings,
        Method::HealthCheck,
    ];

    /// The method's name within its service.
    pub fn name(self) -> &'static str {
        match self {
            Method::ServerLive => "ServerLive",
            Method::ServerReady => "ServerReady",
            Method::ModelReady => "ModelReady",
            Method::ServerMetadata => "ServerMetadata",
            Method::ModelMetadata => "ModelMetadata",
            Method::ModelInfer => "ModelInfer",
            Method::ModelStreamInfer => "ModelStreamInfer",
            Method::ModelConfig => "ModelConfig",
            Method::ModelStatistics => "ModelStatistics",
            Method::RepositoryIndex => "RepositoryIndex",
            Method::RepositoryModelLoad => "RepositoryModelLoad",
            Method::RepositoryModelUnload => "RepositoryModelUnload",
            Method::SystemSharedMemoryStatus => "SystemSharedMemoryStatus",
            Method::SystemSharedMemoryRegister => "SystemSharedMemoryRegister",
            Method::SystemSharedMemoryUnregister => "SystemSharedMemoryUnregister",
            Method::CudaSharedMemoryStatus => "CudaSharedMemoryStatus",
            Method::CudaSharedMemoryRegister => "CudaSharedMemoryRegister",
            Method::CudaSharedMemoryUnregister => "CudaSharedMemoryUnregister",
            Method::TraceSetting => "TraceSetting",
            Method::LogSettings => "LogSettings",
            Method::HealthCheck => "Check",
        }
    }

    /// The `:path` of the method.
    pub fn path(self) -> String {
        match self {
            Method::HealthCheck => HEALTH_CHECK_PATH.to_owned(),
            m => format!("{INFERENCE_PREFIX}{}", m.name()),
        }
    }

    /// The method a `:path` names.
    pub fn from_path(path: &str) -> Option<Method> {
        if path == HEALTH_CHECK_PATH {
            return Some(Method::HealthCheck);
        }
        let name = path.strip_prefix(INFERENCE_PREFIX)?;
        Method::ALL
            .into_iter()
            .find(|m| *m != Method::HealthCheck && m.name() == name)
    }

    /// The restriction group the method belongs to, as Triton groups its
    /// RPCs (model readiness is health; both shared-memory kinds are
    /// shared-memory).
    pub fn category(self) -> Category {
        match self {
            Method::ServerLive | Method::ServerReady | Method::ModelReady | Method::HealthCheck => {
                Category::Health
            }
            Method::ServerMetadata | Method::ModelMetadata => Category::Metadata,
            Method::ModelInfer | Method::ModelStreamInfer => Category::Inference,
            Method::ModelConfig => Category::ModelConfig,
            Method::ModelStatistics => Category::Statistics,
            Method::RepositoryIndex
            | Method::RepositoryModelLoad
            | Method::RepositoryModelUnload => Category::ModelRepository,
            Method::SystemSharedMemoryStatus
            | Method::SystemSharedMemoryRegister
            | Method::SystemSharedMemoryUnregister
            | Method::CudaSharedMemoryStatus
            | Method::CudaSharedMemoryRegister
            | Method::CudaSharedMemoryUnregister => Category::SharedMemory,
            Method::TraceSetting => Category::Trace,
            Method::LogSettings => Category::Logging,
        }
    }

    /// Whether the method's responses may be compressed (Triton's
    /// compression setting is for inference responses).
    fn compresses_responses(self) -> bool {
        matches!(self, Method::ModelInfer | Method::ModelStreamInfer)
    }
}

/// The gRPC front end of a [`Server`]: opens calls.
#[derive(Debug, Clone)]
pub struct GrpcService {
    server: Arc<Server>,
    config: GrpcConfig,
}

impl GrpcService {
    /// A service over `server`.
    pub fn new(server: Arc<Server>, config: GrpcConfig) -> GrpcService {
        GrpcService { server, config }
    }

    /// The server behind the service.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// The settings.
    pub fn config(&self) -> &GrpcConfig {
        &self.config
    }

    /// Opens a call from its request headers. A call that cannot start
    /// (not gRPC, unknown method, unknown encoding) is answered through
    /// `sink` at once and comes back finished; the net layer still feeds
    /// it (it ignores everything) or drops it.
    pub fn open_call<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        headers: &[(N, V)],
        sink: Box<dyn CallSink>,
    ) -> Call {
        let head = parse_request_head(headers);
        let method = match &head {
            Ok(head) => Method::from_path(&head.path)
                .ok_or_else(|| {
                    Rejection::grpc(Status::unimplemented(format!(
                        "unknown gRPC method '{}'",
                        head.path
                    )))
                })
                .and_then(|m| self.admit(m, headers)),
            Err(rejection) => Err(rejection.clone()),
        };
        let response_encoding = match (&head, &method) {
            (Ok(head), Ok(m)) if m.compresses_responses() => {
                head.accept.choose(self.config.response_compression)
            }
            _ => Encoding::Identity,
        };
        let shared = Arc::new(Shared {
            cancel: CancelFlag::default(),
            out: Mutex::new(Output {
                sink,
                headers_sent: false,
                finished: false,
                encoding: response_encoding,
                level: self.config.response_compression,
                max_message_size: self.config.max_message_size,
                stream: StreamOrder::default(),
                grpc_error_mode: head.as_ref().is_ok_and(|h| h.grpc_error_mode),
            }),
        });
        let mut call = Call {
            method: None,
            server: Arc::clone(&self.server),
            shared,
            decoder: MessageDecoder::new(self.config.max_message_size),
            request_encoding: Encoding::Identity,
            max_message_size: self.config.max_message_size,
            timeout: None,
            request: None,
        };
        match (head, method) {
            (Ok(head), Ok(method)) => {
                log::debug!("gRPC call {}", head.path);
                call.method = Some(method);
                call.request_encoding = head.encoding;
                call.timeout = head.timeout;
            }
            (_, Err(rejection)) => {
                log::debug!("gRPC call refused: {}", rejection.status);
                let mut out = call.shared.lock();
                out.sink
                    .send_headers(rejection.http_status, rejection.headers(), true);
                out.finished = true;
            }
            (Err(_), Ok(_)) => unreachable!("a method is only found in a parsed head"),
        }
        call
    }
}

impl GrpcService {
    /// `method` when its restriction (if any) is met by `headers`; else
    /// Triton's refusal, UNAVAILABLE naming the header expected.
    fn admit<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        method: Method,
        headers: &[(N, V)],
    ) -> Result<Method, Rejection> {
        match self.config.restrictions.refusal(method.category(), headers) {
            None => Ok(method),
            Some(r) => Err(Rejection::grpc(Status::new(
                Code::Unavailable,
                format!(
                    "This protocol is restricted, expecting header '{}'",
                    r.header
                ),
            ))),
        }
    }
}

/// The part of a call the threads answering it share.
struct Shared {
    /// Set when the client goes away or the deadline passes; given to
    /// every inference the call submits.
    cancel: CancelFlag,
    out: Mutex<Output>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Output> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the call with `status` and drops the work it still has queued.
    fn fail(&self, status: &Status) {
        // Finished first: cancelling wakes the scheduler, which may complete
        // the queued work with CANCELLED on another thread at once.
        self.lock().finish(status);
        self.cancel.cancel();
    }
}

/// Request-order bookkeeping of a stream.
#[derive(Debug, Default)]
struct StreamOrder {
    /// Sequence number of the next request read.
    read: u64,
    /// Responses written (they go out in request order).
    written: u64,
    /// Responses waiting for an earlier one, by sequence number.
    waiting: BTreeMap<u64, Vec<Bytes>>,
    /// The client half-closed.
    half_closed: bool,
}

/// The writing side of a call.
struct Output {
    sink: Box<dyn CallSink>,
    headers_sent: bool,
    finished: bool,
    encoding: Encoding,
    level: CompressionLevel,
    max_message_size: usize,
    stream: StreamOrder,
    grpc_error_mode: bool,
}

impl Output {
    /// Writes one message (headers first if not sent yet).
    fn send_message(&mut self, payload: Vec<Bytes>) -> Result<(), Status> {
        let length: usize = payload.iter().map(Bytes::len).sum();
        if length > self.max_message_size {
            return Err(Status::new(
                Code::InvalidArgument,
                format!(
                    "Response has byte size {length} which exceeds gRPC's byte size limit {}.",
                    self.max_message_size
                ),
            ));
        }
        let framed = if self.encoding == Encoding::Identity {
            encode_frame(false, payload)
        } else {
            encode_frame(true, vec![compress(self.encoding, self.level, &payload)])
        };
        let framed = framed.ok_or_else(|| {
            Status::internal(format!(
                "response of {length} bytes does not fit a gRPC frame"
            ))
        })?;
        if !self.headers_sent {
            self.headers_sent = true;
            self.sink
                .send_headers(200, response_headers(self.encoding), false);
        }
        self.sink.send_data(framed);
        Ok(())
    }

    /// Sends the trailers (or a trailers-only answer); nothing goes out
    /// afterwards.
    fn finish(&mut self, status: &Status) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.headers_sent {
            self.sink.send_trailers(trailers(status));
        } else {
            self.sink.send_headers(200, trailers_only(status), true);
        }
    }

    /// Answers a unary call.
    fn reply(&mut self, result: Result<Vec<Bytes>, Status>) {
        if self.finished {
            return;
        }
        let status = result
            .and_then(|payload| self.send_message(payload))
            .err()
            .unwrap_or_else(Status::ok);
        self.finish(&status);
    }

    /// Queues the response to stream request `seq` and writes whatever is
    /// now in order; ends the stream once the client half-closed and every
    /// request is answered.
    fn deliver(&mut self, seq: u64, payload: Vec<Bytes>) {
        if self.finished {
            return;
        }
        self.stream.waiting.insert(seq, payload);
        while let Some(next) = self.stream.waiting.remove(&self.stream.written) {
            self.stream.written += 1;
            if let Err(status) = self.send_message(next) {
                self.finish(&status);
                return;
            }
        }
        self.close_if_done();
    }

    fn close_if_done(&mut self) {
        if self.stream.half_closed && self.stream.written == self.stream.read {
            self.finish(&Status::ok());
        }
    }
}

/// One gRPC call (one HTTP/2 request stream). See the module
/// documentation for the order in which the net layer calls it.
pub struct Call {
    /// `None` for a call refused when it opened.
    method: Option<Method>,
    server: Arc<Server>,
    shared: Arc<Shared>,
    decoder: MessageDecoder,
    request_encoding: Encoding,
    max_message_size: usize,
    timeout: Option<Duration>,
    /// The request message of a unary call, until the client half-closes.
    request: Option<Bytes>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("timeout", &self.timeout)
            .field("finished", &self.is_finished())
            .finish_non_exhaustive()
    }
}

impl Call {
    /// The method called; `None` when the call was refused.
    pub fn method(&self) -> Option<Method> {
        self.method
    }

    /// The client's `grpc-timeout`, from the time the headers arrived.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether the call sent its trailers (or was reset): it takes nothing
    /// more and sends nothing more.
    pub fn is_finished(&self) -> bool {
        self.shared.lock().finished
    }

    /// Takes a DATA payload of the request stream.
    pub fn handle_data(&mut self, data: Bytes) {
        if self.method.is_none() || self.is_finished() {
            return;
        }
        let framing = self.decoder.handle_data(data);
        while let Some(message) = self.decoder.poll_message() {
            let payload = if message.compressed {
                if self.request_encoding == Encoding::Identity {
                    return self.shared.fail(&Status::internal(
                        "compressed message received without a grpc-encoding",
                    ));
                }
                match decompress(
                    self.request_encoding,
                    &message.payload,
                    self.max_message_size,
                ) {
                    Ok(p) => p,
                    Err(status) => return self.shared.fail(&status),
                }
            } else {
                message.payload
            };
            self.handle_message(payload);
            if self.is_finished() {
                return;
            }
        }
        if let Err(e) = framing {
            self.frame_error(&e);
        }
    }

    /// The client ended its side of the stream (END_STREAM).
    pub fn handle_end_of_stream(&mut self) {
        let Some(method) = self.method else {
            return;
        };
        if self.is_finished() {
            return;
        }
        if let Err(e) = self.decoder.handle_end() {
            return self.frame_error(&e);
        }
        if method == Method::ModelStreamInfer {
            let mut out = self.shared.lock();
            out.stream.half_closed = true;
            out.close_if_done();
            return;
        }
        match self.request.take() {
            Some(message) => self.dispatch(method, message),
            None => self.shared.fail(&Status::internal(
                "the call ended without a request message",
            )),
        }
    }

    /// The client reset the stream or the connection is gone: queued work
    /// is dropped and nothing more is sent.
    pub fn handle_reset(&mut self) {
        // Finished first, as in `fail`: the cancel may complete the work on
        // another thread at once, and nothing may be written after a reset.
        self.shared.lock().finished = true;
        self.shared.cancel.cancel();
    }

    /// The deadline from [`Call::timeout`] passed: queued work is dropped
    /// and the call ends with DEADLINE_EXCEEDED.
    pub fn handle_deadline(&mut self) {
        self.shared
            .fail(&Status::new(Code::DeadlineExceeded, "Deadline Exceeded"));
    }

    fn frame_error(&self, e: &FrameError) {
        self.shared.fail(&e.to_status());
    }

    fn handle_message(&mut self, message: Bytes) {
        match self.method {
            Some(Method::ModelStreamInfer) => self.stream_request(message),
            Some(method) => {
                if self.request.is_some() {
                    self.shared.fail(&Status::internal(format!(
                        "{} takes one request message, the client sent more",
                        method.name()
                    )));
                } else {
                    self.request = Some(message);
                }
            }
            None => {}
        }
    }

    /// Runs a unary call.
    fn dispatch(&self, method: Method, message: Bytes) {
        let server = &self.server;
        let shared = &self.shared;
        match method {
            Method::ServerLive => {
                unary(shared, message, |_: ServerLiveRequest| {
                    control::server_live(server)
                });
            }
            Method::ServerReady => {
                unary(shared, message, |_: ServerReadyRequest| {
                    control::server_ready(server)
                });
            }
            Method::ModelReady => unary(shared, message, |r: ModelReadyRequest| {
                control::model_ready(server, &r)
            }),
            Method::ServerMetadata => unary(shared, message, |_: ServerMetadataRequest| {
                Ok(control::server_metadata(server))
            }),
            Method::ModelMetadata => unary(shared, message, |r: ModelMetadataRequest| {
                control::model_metadata(server, &r)
            }),
            Method::ModelConfig => unary(shared, message, |r: ModelConfigRequest| {
                control::model_config(server, &r)
            }),
            Method::ModelStatistics => unary(shared, message, |r: ModelStatisticsRequest| {
                control::model_statistics(server, &r)
            }),
            Method::TraceSetting => unary(shared, message, |r: TraceSettingRequest| {
                control::trace_setting(server, &r)
            }),
            Method::LogSettings => unary(shared, message, |r: LogSettingsRequest| {
                control::log_settings(server, &r)
            }),
            Method::HealthCheck => unary(shared, message, |r: HealthCheckRequest| {
                control::health_check(server, &r)
            }),
            Method::SystemSharedMemoryStatus => {
                unary(shared, message, |r: SystemSharedMemoryStatusRequest| {
                    control::system_shm_status(server, &r)
                });
            }
            Method::CudaSharedMemoryStatus => {
                unary(shared, message, |r: CudaSharedMemoryStatusRequest| {
                    control::cuda_shm_status(server, &r)
                });
            }
            // Mapping and unmapping (for CUDA: opening a handle, which may
            // create a context, and closing one) run off the event loop.
            Method::SystemSharedMemoryRegister => {
                let server = Arc::clone(server);
                off_loop(
                    shared,
                    message,
                    move |r: SystemSharedMemoryRegisterRequest| {
                        control::system_shm_register(&server, &r)
                    },
                );
            }
            Method::SystemSharedMemoryUnregister => {
                let server = Arc::clone(server);
                off_loop(
                    shared,
                    message,
                    move |r: SystemSharedMemoryUnregisterRequest| {
                        control::system_shm_unregister(&server, &r)
                    },
                );
            }
            Method::CudaSharedMemoryRegister => {
                let server = Arc::clone(server);
                off_loop(
                    shared,
                    message,
                    move |r: CudaSharedMemoryRegisterRequest| {
                        control::cuda_shm_register(&server, &r)
                    },
                );
            }
            Method::CudaSharedMemoryUnregister => {
                let server = Arc::clone(server);
                off_loop(
                    shared,
                    message,
                    move |r: CudaSharedMemoryUnregisterRequest| {
                        control::cuda_shm_unregister(&server, &r)
                    },
                );
            }
            Method::RepositoryIndex => {
                let server = Arc::clone(server);
                off_loop(shared, message, move |r: RepositoryIndexRequest| {
                    control::repository_index(&server, &r)
                });
            }
            Method::RepositoryModelLoad => {
                let server = Arc::clone(server);
                off_loop(shared, message, move |r: RepositoryModelLoadRequest| {
                    control::repository_load(&server, &r)
                });
            }
            Method::RepositoryModelUnload => {
                let server = Arc::clone(server);
                off_loop(shared, message, move |r: RepositoryModelUnloadRequest| {
                    control::repository_unload(&server, &r)
                });
            }
            Method::ModelInfer => self.model_infer(message),
            Method::ModelStreamInfer => unreachable!("streams take messages as they come"),
        }
    }

    /// Decodes and submits a `ModelInfer`; the answer comes from the
    /// thread that finishes it.
    fn model_infer(&self, message: Bytes) {
        let prepared = decode_message::<ModelInferRequest>(message)
            .and_then(|r| prepare_infer(&self.server, r, true).map_err(|(e, _)| e));
        let (model, decoded) = match prepared {
            Ok(p) => p,
            Err(status) => {
                log::debug!("Infer failed: {}", status.message());
                return self.shared.lock().reply(Err(status));
            }
        };
        let mut request = decoded.request;
        request.cancel = self.shared.cancel.clone();
        let shared = Arc::clone(&self.shared);
        self.server.infer_on(
            &model,
            request,
            Box::new(move |result| {
                let encoded = result
                    .map(|r| encode_infer_response(&r, false))
                    .map_err(|e| {
                        log::debug!("Infer failed: {}", e.message());
                        Status::from(e)
                    });
                shared.lock().reply(encoded);
            }),
        );
    }

    /// Reads and submits one request of a stream.
    fn stream_request(&mut self, message: Bytes) {
        let seq = {
            let mut out = self.shared.lock();
            let seq = out.stream.read;
            out.stream.read += 1;
            seq
        };
        let decoded = decode_message::<ModelInferRequest>(message);
        let request = match decoded {
            Ok(r) => r,
            Err(status) => {
                return stream_failed(&self.shared, seq, &status, &FailedRequest::default());
            }
        };
        let failed = FailedRequest {
            id: request.id.clone(),
            model: Some((request.model_name.clone(), request.model_version.clone())),
        };
        let (model, decoded) = match prepare_infer(&self.server, request, false) {
            Ok(p) => p,
            Err((status, id)) => {
                let early = FailedRequest { id, model: None };
                return stream_failed(&self.shared, seq, &status, &early);
            }
        };
        let mut request = decoded.request;
        request.cancel = self.shared.cancel.clone();
        let shared = Arc::clone(&self.shared);
        let limit = self.max_message_size;
        self.server.infer_on(
            &model,
            request,
            Box::new(move |result| match result {
                Ok(response) => {
                    let payload = stream_payload(&response, limit);
                    shared.lock().deliver(seq, payload);
                }
                Err(e) => stream_failed(&shared, seq, &Status::from(e), &failed),
            }),
        );
    }
}

impl Drop for Call {
    /// A call dropped before it finished was abandoned: whatever it still
    /// has queued is dropped.
    fn drop(&mut self) {
        if !self.is_finished() {
            self.handle_reset();
        }
    }
}

/// Decodes a request message; a message that is not one is the client's
/// fault, reported as gRPC servers report it.
fn decode_message<M: prost::Message + Default>(message: Bytes) -> Result<M, Status> {
    M::decode(message)
        .map_err(|e| Status::internal(format!("failed to parse the request message: {e}")))
}

/// Reads the version, finds the model and converts the request, in
/// Triton's order; a `unary` call refuses decoupled models. On failure,
/// also returns the request id for the stream's error response.
fn prepare_infer(
    server: &Server,
    request: ModelInferRequest,
    unary: bool,
) -> Result<(Arc<LoadedModel>, DecodedInfer), (Status, String)> {
    let fail = |e: Error, id: &str| (Status::from(e), id.to_owned());
    let version = parse_model_version(&request.model_version).map_err(|e| fail(e, &request.id))?;
    let model = server
        .model(&request.model_name, version)
        .map_err(|e| fail(e, &request.id))?;
    // A decoupled model may answer any number of times: only a stream can
    // carry that.
    let decoupled = model
        .config
        .model_transaction_policy
        .as_ref()
        .is_some_and(|p| p.decoupled);
    if unary && decoupled {
        return Err(fail(
            Error::unsupported(
                "ModelInfer RPC doesn't support models with decoupled transaction policy",
            ),
            &request.id,
        ));
    }
    let id = request.id.clone();
    let decoded = decode_infer_request(request, version).map_err(|e| fail(e, &id))?;
    Ok((model, decoded))
}

/// A stream response, or the in-band error saying it is too large.
fn stream_payload(response: &InferResponse, limit: usize) -> Vec<Bytes> {
    let payload = wrap_stream_response(encode_infer_response(response, true));
    let length: usize = payload.iter().map(Bytes::len).sum();
    if length <= limit {
        return payload;
    }
    let message =
        format!("Response has byte size {length} which exceeds gRPC's byte size limit {limit}.");
    let failed = FailedRequest {
        id: response.id.clone().unwrap_or_default(),
        model: Some((
            response.model_name.clone(),
            response.model_version.to_string(),
        )),
    };
    vec![encode_stream_error(&message, &failed)]
}

/// Reports a failed stream request: in the stream, or, in Triton's
/// `triton_grpc_error` mode, as the status ending the stream.
fn stream_failed(shared: &Shared, seq: u64, status: &Status, failed: &FailedRequest) {
    log::debug!("Infer failed: {}", status.message());
    let mut out = shared.lock();
    if out.grpc_error_mode {
        drop(out);
        return shared.fail(status);
    }
    out.deliver(seq, vec![encode_stream_error(status.message(), failed)]);
}

/// Decodes a unary request, runs `f` on it here, and answers.
fn unary<Req, Resp>(shared: &Shared, message: Bytes, f: impl FnOnce(Req) -> Result<Resp, Error>)
where
    Req: prost::Message + Default,
    Resp: prost::Message,
{
    let result = decode_message::<Req>(message)
        .and_then(|r| f(r).map_err(Status::from))
        .map(|resp| vec![Bytes::from(resp.encode_to_vec())]);
    shared.lock().reply(result);
}

/// Like [`unary`], on a thread of its own: for calls that block.
fn off_loop<Req, Resp>(
    shared: &Arc<Shared>,
    message: Bytes,
    f: impl FnOnce(Req) -> Result<Resp, Error> + Send + 'static,
) where
    Req: prost::Message + Default,
    Resp: prost::Message,
{
    let worker = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name("nereid-grpc-repository".to_owned())
        .spawn(move || unary(&worker, message, f));
    if let Err(e) = spawned {
        shared.lock().reply(Err(Status::internal(format!(
            "cannot start a thread for a repository request: {e}"
        ))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_move_between_threads_and_the_service_is_shared() {
        fn send<T: Send>() {}
        fn shared<T: Send + Sync>() {}
        send::<Call>();
        shared::<GrpcService>();
    }

    #[test]
    fn method_paths_round_trip() {
        for m in Method::ALL {
            assert_eq!(Method::from_path(&m.path()), Some(m), "{m:?}");
        }
        assert_eq!(
            Method::ModelInfer.path(),
            "/inference.GRPCInferenceService/ModelInfer"
        );
        assert_eq!(Method::HealthCheck.path(), "/grpc.health.v1.Health/Check");
        assert_eq!(
            Method::from_path("/inference.GRPCInferenceService/Check"),
            None
        );
        assert_eq!(Method::from_path("/grpc.health.v1.Health/Watch"), None);
        assert_eq!(Method::from_path("/inference.GRPCInferenceService/"), None);
        assert_eq!(Method::from_path("/other.Service/ModelInfer"), None);
    }
}
