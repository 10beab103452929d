//! The KServe v2 REST router: maps each request path onto a
//! [`Server`] call and its answer onto a response.
//!
//! Routes (paths as Triton matches them; anything else is
//! `404 {"error":"Not Found"}`, a known path with the wrong method is
//! `405 {"error":"Method Not Allowed"}`):
//!
//! | path | methods |
//! | --- | --- |
//! | `/v2` | GET server metadata |
//! | `/v2/health/live`, `/v2/health/ready` | GET (200, or 400 when not) |
//! | `/v2/models/{m}[/versions/{v}]` | GET model metadata |
//! | `.../ready`, `.../config` | GET |
//! | `.../infer` | POST |
//! | `/v2/models/{m}/trace/setting`, `/v2/trace/setting` | GET, POST |
//! | `/v2/repository[/{r}]/index` | POST |
//! | `/v2/repository[/{r}]/models/{m}/load`, `.../unload` | POST |
//! | `/v2/logging` | GET, POST |
//!
//! `HEAD` is answered wherever `GET` is, as `GET` without the body.
//!
//! A route whose group `--http-restricted-api` restricts needs its header
//! and value, else it is answered 403 (Triton's wording, see
//! [`crate::protocol::restrict`]).
//!
//! Errors are `{"error":"<message>"}` with the status of the error's code;
//! a body over `--http-max-input-size` gets 400 with Triton's wording.
//! Inference is decoded on the event loop (on a decoding thread when its
//! JSON is large, see [`HttpService::offload`]), runs on the model's
//! instance threads, and is encoded and answered from there, compressed
//! when the client's `Accept-Encoding` asks (inference responses are the
//! only ones compressed, as in Triton); repository control blocks, so it
//! runs on a thread of its own.

use std::sync::Arc;

use bytes::Bytes;

use super::control;
use super::decode::{
    self, DecodedRequest, HEADER_LENGTH_HEADER, ResponseFormat, decode_infer_request,
    decode_raw_infer_request,
};
use super::encode::encode_infer_response;
use super::json;
use super::shm;
use crate::core::{Error, InferResponse, Result};
use crate::net::{HttpService, Responder};
use crate::protocol::http1::{Oversized, Request, Response};
use crate::protocol::restrict::{Category, Restrictions};
use crate::server::Server;
use crate::shm::Kind;

/// Requests whose JSON part is larger than this are decoded off the event
/// loop: parsing it takes about a millisecond per 100 KiB, time the loop's
/// other connections would wait.
const OFFLOAD_JSON_ABOVE_BYTES: usize = 64 * 1024;

/// The REST front end of a [`Server`].
#[derive(Debug, Clone)]
pub struct RestService {
    server: Arc<Server>,
    restrictions: Restrictions,
}

impl RestService {
    /// A router over `server`.
    pub fn new(server: Arc<Server>) -> RestService {
        RestService {
            server,
            restrictions: Restrictions::default(),
        }
    }

    /// The router with `--http-restricted-api` groups: a request to a
    /// restricted API without its header is answered 403.
    pub fn with_restrictions(mut self, restrictions: Restrictions) -> RestService {
        self.restrictions = restrictions;
        self
    }

    /// The server behind the router.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }
}

/// What a model path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelAction {
    Metadata,
    Ready,
    Config,
    Infer,
    Stats,
    Generate,
    Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    ServerMetadata,
    Live,
    Ready,
    Logging,
    Trace,
    AllStats,
    Model {
        name: &'a str,
        version: Option<&'a str>,
        action: ModelAction,
    },
    Index,
    Control {
        repository: Option<&'a str>,
        model: &'a str,
        load: bool,
    },
    SharedMemory {
        kind: Kind,
        region: Option<&'a str>,
        action: ShmAction,
    },
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShmAction {
    Status,
    Register,
    Unregister,
}

impl Route<'_> {
    /// The restriction group of the route, as Triton groups its handlers
    /// (model readiness is health, generate is inference).
    fn category(&self) -> Option<Category> {
        Some(match self {
            Route::ServerMetadata => Category::Metadata,
            Route::Live | Route::Ready => Category::Health,
            Route::Logging => Category::Logging,
            Route::Trace => Category::Trace,
            Route::AllStats => Category::Statistics,
            Route::Model { action, .. } => match action {
                ModelAction::Metadata => Category::Metadata,
                ModelAction::Ready => Category::Health,
                ModelAction::Config => Category::ModelConfig,
                ModelAction::Infer | ModelAction::Generate => Category::Inference,
                ModelAction::Stats => Category::Statistics,
                ModelAction::Trace => Category::Trace,
            },
            Route::Index | Route::Control { .. } => Category::ModelRepository,
            Route::SharedMemory { .. } => Category::SharedMemory,
            Route::NotFound => return None,
        })
    }
}

/// One path segment: non-empty, without `/`.
fn segment(s: &str) -> Option<(&str, &str)> {
    let end = s.find('/').unwrap_or(s.len());
    (end > 0).then(|| (&s[..end], &s[end..]))
}

fn route(path: &str) -> Route<'_> {
    match path {
        "/v2" => return Route::ServerMetadata,
        "/v2/health/live" => return Route::Live,
        "/v2/health/ready" => return Route::Ready,
        "/v2/logging" => return Route::Logging,
        "/v2/trace/setting" => return Route::Trace,
        "/v2/models/stats" => return Route::AllStats,
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/v2/models/") {
        return model_route(rest).unwrap_or(Route::NotFound);
    }
    if let Some(rest) = path.strip_prefix("/v2/repository") {
        return repository_route(rest).unwrap_or(Route::NotFound);
    }
    for (prefix, kind) in [
        ("/v2/systemsharedmemory", Kind::System),
        ("/v2/cudasharedmemory", Kind::Cuda),
    ] {
        if let Some(rest) = path.strip_prefix(prefix) {
            return shm_route(kind, rest).unwrap_or(Route::NotFound);
        }
    }
    Route::NotFound
}

/// `[/region/<name>]/(status|register|unregister)`; register needs a
/// region.
fn shm_route(kind: Kind, rest: &str) -> Option<Route<'_>> {
    let (region, tail) = match rest.strip_prefix("/region/") {
        Some(after) => {
            let (name, tail) = segment(after)?;
            (Some(name), tail)
        }
        None => (None, rest),
    };
    let action = match tail {
        "/status" => ShmAction::Status,
        "/register" if region.is_some() => ShmAction::Register,
        "/unregister" => ShmAction::Unregister,
        _ => return None,
    };
    Some(Route::SharedMemory {
        kind,
        region,
        action,
    })
}

fn model_route(rest: &str) -> Option<Route<'_>> {
    let (name, mut rest) = segment(rest)?;
    let mut version = None;
    if let Some(after) = rest.strip_prefix("/versions/")
        && let Some((v, tail)) = segment(after)
        && v.bytes().all(|b| b.is_ascii_digit())
    {
        version = Some(v);
        rest = tail;
    }
    let action = match rest {
        "" => ModelAction::Metadata,
        "/ready" => ModelAction::Ready,
        "/config" => ModelAction::Config,
        "/infer" => ModelAction::Infer,
        "/stats" => ModelAction::Stats,
        "/generate" | "/generate_stream" => ModelAction::Generate,
        // No versioned trace settings: Triton answers those with 404 too.
        "/trace/setting" if version.is_none() => ModelAction::Trace,
        _ => return None,
    };
    Some(Route::Model {
        name,
        version,
        action,
    })
}

fn repository_route(rest: &str) -> Option<Route<'_>> {
    fn action(rest: &str) -> Option<(Option<&str>, bool)> {
        if rest == "/index" {
            return Some((None, false));
        }
        let (model, tail) = segment(rest.strip_prefix("/models/")?)?;
        match tail {
            "/load" => Some((Some(model), true)),
            "/unload" => Some((Some(model), false)),
            _ => None,
        }
    }
    let (repository, parsed) = match segment(rest.strip_prefix('/')?)
        .and_then(|(repo, tail)| action(tail).map(|a| (Some(repo), a)))
    {
        Some(found) => found,
        None => (None, action(rest)?),
    };
    Some(match parsed {
        (None, _) => Route::Index,
        (Some(model), load) => Route::Control {
            repository,
            model,
            load,
        },
    })
}

fn json_response(status: u16, body: Vec<u8>) -> Response {
    Response::json(status, body)
}

fn error_response(e: &Error) -> Response {
    json_response(e.code().http_status(), json::error_body(e.message()))
}

fn method_not_allowed() -> Response {
    json_response(405, json::error_body("Method Not Allowed"))
}

fn not_found() -> Response {
    json_response(404, json::error_body("Not Found"))
}

fn answer(result: Result<Vec<u8>>) -> Response {
    match result {
        Ok(body) => json_response(200, body),
        Err(e) => error_response(&e),
    }
}

/// The version of a path (`None` when absent). Only digits reach here, so
/// the one failure is a number too large.
fn parse_version(version: Option<&str>) -> Result<Option<i64>> {
    version
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                Error::invalid_arg(format!(
                    "failed to get model version from specified version string '{v}' (details: value out of range), version should be an integral value > 0"
                ))
            })
        })
        .transpose()
}

/// Runs blocking work (repository control) on a thread of its own and
/// answers from there. Should the thread not start, dropping the responder
/// answers 500.
fn off_loop(responder: Responder, work: impl FnOnce() -> Response + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name("nereid-repository".to_owned())
        .spawn(move || responder.respond(work()));
    if let Err(e) = spawned {
        log::error!("cannot start a thread for a repository request: {e}");
    }
}

/// The response to a finished inference.
pub fn infer_response(result: Result<InferResponse>, format: &ResponseFormat) -> Response {
    match result.and_then(|r| encode_infer_response(&r, format)) {
        Ok(encoded) => {
            let mut response = Response::new(200);
            response = match encoded.json_length {
                Some(n) => response
                    .with_header("Content-Type", "application/octet-stream")
                    .with_header(HEADER_LENGTH_HEADER, n.to_string()),
                None => response.with_header("Content-Type", "application/json"),
            };
            response.body = encoded.body;
            response
        }
        Err(e) => infer_failed(&e),
    }
}

/// The answer to an inference that failed (logged at verbose level, as
/// Triton logs it).
fn infer_failed(e: &Error) -> Response {
    log::debug!("Infer failed: {}", e.message());
    error_response(e)
}

impl HttpService for RestService {
    /// Off the loop when the JSON to parse is large: the whole body, or
    /// the part `Inference-Header-Content-Length` names (binary tensors
    /// after it are not parsed, and a raw body has none).
    fn offload(&self, request: &Request) -> bool {
        let json = match request.inference_header_content_length() {
            Ok(Some(n)) => n,
            _ => request.body.len(),
        };
        json > OFFLOAD_JSON_ABOVE_BYTES
    }

    fn body_too_large(&self, request: &Request, oversized: &Oversized) -> Response {
        json_response(
            400,
            json::error_body(&too_large_message(request, oversized)),
        )
    }

    fn handle(&self, mut request: Request, responder: Responder) {
        let path = std::mem::take(&mut request.path);
        let method = std::mem::take(&mut request.method);
        log::debug!("HTTP request: {method} {path}");
        // The connection drops the body of a HEAD answer and keeps its
        // Content-Length.
        let method = if method == "HEAD" {
            "GET"
        } else {
            method.as_str()
        };
        let get = method == "GET";
        let post = method == "POST";
        let server = &self.server;
        let route = route(&path);
        if let Some(r) = route
            .category()
            .and_then(|c| self.restrictions.refusal(c, &request.headers))
        {
            let message = format!("This API is restricted, expecting header '{}'", r.header);
            return responder.respond(json_response(403, json::error_body(&message)));
        }
        let response = match route {
            Route::NotFound => not_found(),
            Route::ServerMetadata if get => {
                json_response(200, control::server_metadata(&server.metadata()))
            }
            Route::Live if get => health(server.is_live()),
            Route::Ready if get => health(server.is_ready()),
            Route::Logging if get || post => answer(self.logging(post, &request.body)),
            Route::Trace if get || post => answer(self.trace(None, post, &request.body)),
            Route::AllStats if get => answer(
                server
                    .model_statistics(None, None)
                    .map(|rows| control::model_statistics(&rows)),
            ),
            Route::Model {
                name,
                version,
                action,
            } => match (action, method) {
                (ModelAction::Metadata, "GET") => answer(
                    parse_version(version)
                        .and_then(|v| server.model_metadata(name, v))
                        .map(|m| control::model_metadata(&m)),
                ),
                (ModelAction::Ready, "GET") => {
                    match parse_version(version).and_then(|v| server.model_ready(name, v)) {
                        Ok(true) => Response::new(200),
                        Ok(false) => {
                            json_response(400, json::error_body("Model version not ready"))
                        }
                        Err(e) => error_response(&e),
                    }
                }
                (ModelAction::Config, "GET") => answer(
                    parse_version(version)
                        .and_then(|v| server.model_config_json(name, v))
                        .map(String::into_bytes),
                ),
                (ModelAction::Infer, "POST") => {
                    return self.infer(name, version, request, responder);
                }
                (ModelAction::Stats, "GET") => answer(
                    parse_version(version)
                        .and_then(|v| server.model_statistics(Some(name), v))
                        .map(|rows| control::model_statistics(&rows)),
                ),
                (ModelAction::Generate, "POST") => error_response(&Error::unsupported(
                    "the generate extension is not supported by this server",
                )),
                (ModelAction::Trace, "GET" | "POST") => {
                    answer(self.trace(Some(name), post, &request.body))
                }
                _ => method_not_allowed(),
            },
            Route::Index if post => {
                let server = Arc::clone(server);
                let body = request.body;
                return off_loop(responder, move || {
                    answer(
                        control::parse_index_request(&body)
                            .and_then(|ready| server.repository_index(ready))
                            .map(|index| control::repository_index(&index)),
                    )
                });
            }
            Route::Control {
                repository,
                model,
                load,
            } if post => {
                if repository.is_some() {
                    error_response(&Error::unsupported(
                        "'repository_name' specification is not supported",
                    ))
                } else {
                    let server = Arc::clone(server);
                    let model = model.to_owned();
                    let body = request.body;
                    return off_loop(responder, move || {
                        let done = if load {
                            control::parse_load_request(&body).and_then(|load| {
                                server.load_model_files(&model, load.config.as_deref(), &load.files)
                            })
                        } else {
                            control::parse_unload_request(&body)
                                .and_then(|deps| server.unload_model(&model, deps))
                        };
                        match done {
                            Ok(()) => Response::json(200, Bytes::new()),
                            Err(e) => error_response(&e),
                        }
                    });
                }
            }
            Route::SharedMemory {
                kind,
                region,
                action: ShmAction::Status,
            } if get => answer(
                server
                    .shared_memory()
                    .status(kind, region)
                    .map(|regions| shm::status(kind, &regions)),
            ),
            Route::SharedMemory {
                kind,
                region,
                action,
            } if post => {
                // Opening a CUDA handle can create a context (hundreds of
                // milliseconds the first time), and closing one waits for
                // the device: both run off the event loop.
                let server = Arc::clone(server);
                let region = region.map(str::to_owned);
                let body = request.body;
                return off_loop(responder, move || {
                    let registry = server.shared_memory();
                    let name = region.as_deref();
                    let done = match (action, kind) {
                        (ShmAction::Register, Kind::System) => shm::parse_system_register(&body)
                            .and_then(|r| {
                                registry.register_system(
                                    name.unwrap_or_default(),
                                    &r.key,
                                    r.offset,
                                    r.byte_size,
                                )
                            }),
                        (ShmAction::Register, Kind::Cuda) => shm::parse_cuda_register(&body)
                            .and_then(|r| {
                                registry.register_cuda(
                                    name.unwrap_or_default(),
                                    &r.raw_handle,
                                    r.device_id,
                                    r.byte_size,
                                )
                            }),
                        _ => registry.unregister(kind, name),
                    };
                    match done {
                        Ok(()) => Response::json(200, Bytes::new()),
                        Err(e) => error_response(&e),
                    }
                });
            }
            _ => method_not_allowed(),
        };
        responder.respond(response);
    }
}

/// 200 when healthy, 400 (empty body) when not, as Triton answers.
fn health(state: Result<bool>) -> Response {
    match state {
        Ok(true) => Response::new(200),
        Ok(false) => Response::new(400),
        Err(e) => error_response(&e),
    }
}

impl RestService {
    fn logging(&self, update: bool, body: &[u8]) -> Result<Vec<u8>> {
        let settings = if update {
            self.server
                .update_log_settings(control::parse_log_update(body)?)?
        } else {
            self.server.log_settings()
        };
        Ok(control::log_settings(&settings))
    }

    fn trace(&self, model: Option<&str>, update: bool, body: &[u8]) -> Result<Vec<u8>> {
        let settings = if update {
            // The model is checked before the body is read, as Triton does.
            self.server.trace_settings(model)?;
            self.server
                .update_trace_settings(model, &control::parse_trace_update(body)?)?
        } else {
            self.server.trace_settings(model)?
        };
        Ok(control::trace_settings(&settings))
    }

    /// Decodes and submits an inference; the answer comes from the thread
    /// that finishes it.
    fn infer(&self, name: &str, version: Option<&str>, request: Request, responder: Responder) {
        let decoded = parse_version(version).and_then(|version| {
            let model = self.server.model(name, version)?;
            let header = decode::json_header_length(
                request.header(HEADER_LENGTH_HEADER),
                request.body.len(),
            )?;
            let decoded = if header == 0 {
                decode_raw_infer_request(name, version, &model.config, request.body.clone())?
            } else {
                decode_infer_request(name, version, &request.body, header)?
            };
            Ok((model, decoded))
        });
        let (
            model,
            DecodedRequest {
                mut request,
                format,
            },
        ) = match decoded {
            Ok(d) => d,
            Err(e) => return responder.respond(infer_failed(&e)),
        };
        request.cancel = responder.cancel_flag().clone();
        self.server.infer_on(
            &model,
            request,
            Box::new(move |result| {
                let response = infer_response(result, &format);
                if response.status == 200 {
                    responder.respond_compressed(response);
                } else {
                    responder.respond(response);
                }
            }),
        );
    }
}

/// Triton's answer to a body over `--http-max-input-size`, worded after
/// what the body is: compressed, a raw input (`Inference-Header-Content-
/// Length: 0`), or JSON (with binary tensors after it or not).
fn too_large_message(request: &Request, oversized: &Oversized) -> String {
    let Oversized {
        size,
        limit,
        decompressed,
    } = *oversized;
    let hint = "Use --http-max-input-size to increase the limit.";
    if decompressed {
        return format!(
            "Decompressed data size exceeds the maximum allowed value of {limit} bytes. {hint}"
        );
    }
    match request.inference_header_content_length() {
        Ok(Some(0)) => format!(
            "Raw input has a byte_size ({size} bytes) that exceeds the maximum allowed value of {limit} bytes. {hint}"
        ),
        _ => format!(
            "request JSON size of {size} bytes exceeds the maximum allowed input size of {limit} bytes. {hint}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = |name, version, action| Route::Model {
            name,
            version,
            action,
        };
        assert_eq!(route("/v2"), Route::ServerMetadata);
        assert_eq!(route("/v2/"), Route::NotFound);
        assert_eq!(route("/v2/health"), Route::NotFound);
        assert_eq!(
            route("/v2/models/simple"),
            m("simple", None, ModelAction::Metadata)
        );
        assert_eq!(
            route("/v2/models/simple/versions/12/infer"),
            m("simple", Some("12"), ModelAction::Infer)
        );
        assert_eq!(route("/v2/models/simple/versions/x/infer"), Route::NotFound);
        assert_eq!(route("/v2/models/simple/versions"), Route::NotFound);
        assert_eq!(route("/v2/models/simple/"), Route::NotFound);
        assert_eq!(route("/v2/models//ready"), Route::NotFound);
        assert_eq!(
            route("/v2/models/ready/ready"),
            m("ready", None, ModelAction::Ready)
        );
        assert_eq!(
            route("/v2/models/m/trace/setting"),
            m("m", None, ModelAction::Trace)
        );
        assert_eq!(
            route("/v2/models/m/versions/1/trace/setting"),
            Route::NotFound
        );
        assert_eq!(route("/v2/models/stats"), Route::AllStats);
        assert_eq!(route("/v2/repository/index"), Route::Index);
        assert_eq!(route("/v2/repository/r/index"), Route::Index);
        assert_eq!(route("/v2/repository/models/index"), Route::Index);
        assert_eq!(
            route("/v2/repository/models/simple/load"),
            Route::Control {
                repository: None,
                model: "simple",
                load: true
            }
        );
        assert_eq!(
            route("/v2/repository/r/models/simple/unload"),
            Route::Control {
                repository: Some("r"),
                model: "simple",
                load: false
            }
        );
        assert_eq!(route("/v2/repository/models/simple"), Route::NotFound);
        assert_eq!(route("/v2/repository"), Route::NotFound);
        let shm = |kind, region, action| Route::SharedMemory {
            kind,
            region,
            action,
        };
        assert_eq!(
            route("/v2/systemsharedmemory/status"),
            shm(Kind::System, None, ShmAction::Status)
        );
        assert_eq!(
            route("/v2/cudasharedmemory/region/r/register"),
            shm(Kind::Cuda, Some("r"), ShmAction::Register)
        );
        assert_eq!(
            route("/v2/systemsharedmemory/region/r/unregister"),
            shm(Kind::System, Some("r"), ShmAction::Unregister)
        );
        assert_eq!(
            route("/v2/cudasharedmemory/unregister"),
            shm(Kind::Cuda, None, ShmAction::Unregister)
        );
        assert_eq!(route("/v2/systemsharedmemory/register"), Route::NotFound);
        assert_eq!(
            route("/v2/systemsharedmemory/region//status"),
            Route::NotFound
        );
    }

    #[test]
    fn routes_map_to_triton_restriction_groups() {
        use Category::*;
        for (path, category) in [
            ("/v2", Some(Metadata)),
            ("/v2/health/live", Some(Health)),
            ("/v2/health/ready", Some(Health)),
            ("/v2/models/m/ready", Some(Health)),
            ("/v2/models/m/versions/1/ready", Some(Health)),
            ("/v2/models/m", Some(Metadata)),
            ("/v2/models/m/versions/1", Some(Metadata)),
            ("/v2/models/m/config", Some(ModelConfig)),
            ("/v2/models/m/infer", Some(Inference)),
            ("/v2/models/m/versions/1/infer", Some(Inference)),
            ("/v2/models/m/generate", Some(Inference)),
            ("/v2/models/m/generate_stream", Some(Inference)),
            ("/v2/models/m/stats", Some(Statistics)),
            ("/v2/models/stats", Some(Statistics)),
            ("/v2/models/m/trace/setting", Some(Trace)),
            ("/v2/trace/setting", Some(Trace)),
            ("/v2/logging", Some(Logging)),
            ("/v2/repository/index", Some(ModelRepository)),
            ("/v2/repository/models/m/load", Some(ModelRepository)),
            ("/v2/repository/models/m/unload", Some(ModelRepository)),
            ("/v2/systemsharedmemory/status", Some(SharedMemory)),
            (
                "/v2/systemsharedmemory/region/r/register",
                Some(SharedMemory),
            ),
            ("/v2/cudasharedmemory/unregister", Some(SharedMemory)),
            ("/v2/nope", None),
        ] {
            assert_eq!(route(path).category(), category, "{path}");
        }
    }

    #[test]
    fn version_overflow() {
        assert_eq!(parse_version(Some("7")).unwrap(), Some(7));
        assert!(
            parse_version(Some("99999999999999999999"))
                .unwrap_err()
                .message()
                .starts_with("failed to get model version from specified version string")
        );
    }
}
