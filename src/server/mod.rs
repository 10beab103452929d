//! The server: the one handle every front end calls (HTTP/REST now, gRPC
//! later). It speaks core types, not wire formats: health and readiness,
//! server and model metadata, model configuration, inference (with the
//! classification extension applied to the response), repository control,
//! logging and trace settings, the shared-memory registry (inputs read
//! from client regions, outputs written into them), and shutdown with a
//! drain of in-flight requests.
//!
//! It calls `repository` (the model manager, which owns the schedulers),
//! `backend` (to build the backend table) and `logging`. Repository
//! control calls block until the load or unload is done; front ends run
//! them off their event loops.

pub mod classification;
pub mod trace;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use crate::backend::BackendRegistry;
use crate::backend::onnx::{OnnxOptions, OnnxRuntime};
use crate::core::{
    DataType, Error, InferRequest, InferResponse, OutputSink, ResponseSender, Result,
};
use crate::logging::{self, LogSettings};
use crate::repository::{IndexEntry, LoadedModel, ManagerOptions, ModelManager};
use crate::scheduler::Completion;
use crate::scheduler::stats::ModelStats;
use crate::shm::{InputBytes, Registry};

use classification::LabelCache;
pub use trace::{Change, TraceLevel, TraceMode, TraceSettings, TraceStore, TraceUpdate};

/// The protocol extensions nereid implements, as server metadata lists
/// them. Extensions land here when they work end to end (traces are not
/// produced yet).
pub const EXTENSIONS: &[&str] = &[
    "classification",
    "sequence",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "system_shared_memory",
    "cuda_shared_memory",
    "binary_tensor_data",
    "parameters",
    "statistics",
    "logging",
];

/// One ready model version as the metrics endpoint reports it.
#[derive(Debug, Clone)]
pub struct ModelMetrics {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: i64,
    /// Its statistics so far.
    pub stats: ModelStats,
    /// Requests waiting in its queue now.
    pub pending: usize,
}

/// What the server is built from.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The name server metadata reports (`--id`, default `triton`).
    pub server_id: String,
    /// `--strict-readiness`: ready only while every model is ready.
    pub strict_readiness: bool,
    /// The model repository and control mode.
    pub manager: ManagerOptions,
    /// Trace settings at startup.
    pub trace: TraceSettings,
    /// The ONNX Runtime backend's settings (library location, auto-complete
    /// batch size).
    pub onnxruntime: OnnxOptions,
    /// `--allow-client-shm`: clients may register shared memory regions.
    pub allow_client_shm: bool,
    /// Pinned and CUDA memory pools.
    pub pools: crate::gpu::PoolOptions,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            server_id: "triton".to_owned(),
            strict_readiness: true,
            manager: ManagerOptions::default(),
            trace: TraceSettings::default(),
            onnxruntime: OnnxOptions::default(),
            allow_client_shm: false,
            pools: crate::gpu::PoolOptions::default(),
        }
    }
}

/// Server metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMetadata {
    /// Server name.
    pub name: String,
    /// Server version.
    pub version: String,
    /// Supported protocol extensions.
    pub extensions: Vec<&'static str>,
}

/// Name, datatype and shape of a model input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMetadata {
    /// Tensor name.
    pub name: String,
    /// KServe datatype name (empty for an invalid configuration type).
    pub datatype: &'static str,
    /// Shape, with -1 first for the batch dimension of a batching model.
    pub shape: Vec<i64>,
}

/// Model metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelMetadata {
    /// Model name.
    pub name: String,
    /// The version asked for, or every ready version.
    pub versions: Vec<String>,
    /// The configuration's platform, or its backend when it has none.
    pub platform: String,
    /// Inputs.
    pub inputs: Vec<TensorMetadata>,
    /// Outputs.
    pub outputs: Vec<TensorMetadata>,
}

/// An update of the logging settings; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogUpdate {
    /// `log_file`: the log file cannot be changed at run time; giving one
    /// is refused.
    pub log_file: Option<String>,
    /// `log_info`.
    pub log_info: Option<bool>,
    /// `log_warning`.
    pub log_warning: Option<bool>,
    /// `log_error`.
    pub log_error: Option<bool>,
    /// `log_verbose_level`.
    pub log_verbose_level: Option<u32>,
    /// `log_format`: `default` or `ISO8601`.
    pub log_format: Option<String>,
}

/// Counts requests in flight so shutdown can wait for them.
#[derive(Debug, Default)]
struct InFlight {
    state: Mutex<InFlightState>,
    idle: Condvar,
}

#[derive(Debug, Default)]
struct InFlightState {
    count: usize,
    /// Threads waiting in [`Server::drain`]. The last request out wakes the
    /// condvar only when someone waits: a notify is a system call even
    /// with no waiter, and every request would pay for it.
    waiters: usize,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, InFlightState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the count is zero or `deadline` passes; true when it
    /// reached zero.
    fn wait_idle(&self, deadline: Instant) -> bool {
        let mut state = self.lock();
        state.waiters += 1;
        let idle = loop {
            if state.count == 0 {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            state = self
                .idle
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        state.waiters -= 1;
        idle
    }
}

/// Held for the life of one request; dropping it ends the request.
struct InFlightGuard(Arc<InFlight>);

impl InFlightGuard {
    fn enter(inflight: &Arc<InFlight>) -> InFlightGuard {
        inflight.lock().count += 1;
        InFlightGuard(Arc::clone(inflight))
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.count -= 1;
        if state.count == 0 && state.waiters > 0 {
            self.0.idle.notify_all();
        }
    }
}

/// The inference server.
pub struct Server {
    id: String,
    strict_readiness: bool,
    manager: ModelManager,
    /// Set once the startup models were attempted ([`Server::start`]).
    started: AtomicBool,
    exiting: AtomicBool,
    inflight: Arc<InFlight>,
    labels: Arc<LabelCache>,
    trace: Mutex<TraceStore>,
    shm: Registry,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("id", &self.id)
            .field("strict_readiness", &self.strict_readiness)
            .field("exiting", &self.exiting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn not_ready() -> Error {
    Error::unavailable("Server not ready")
}

impl Server {
    /// Builds the server with nereid's built-in backends and the ONNX
    /// Runtime backend. Loads nothing: call [`Server::start`].
    pub fn new(options: ServerOptions) -> Result<Server> {
        let mut backends = BackendRegistry::with_builtins();
        backends.register(Arc::new(OnnxRuntime::new(options.onnxruntime)));
        let manager = ModelManager::new(options.manager, backends)?;
        Ok(Server::with_manager(
            options.server_id,
            options.strict_readiness,
            options.trace,
            manager,
        )
        .with_client_shm(options.allow_client_shm))
    }

    /// Lets clients register shared memory regions (`--allow-client-shm`);
    /// without it registration is refused and status lists nothing.
    pub fn with_client_shm(mut self, allow: bool) -> Server {
        self.shm = Registry::new(allow, Box::new(crate::shm::open_cuda));
        self
    }

    /// Builds the server around a model manager made elsewhere (for a
    /// custom backend table).
    pub fn with_manager(
        server_id: String,
        strict_readiness: bool,
        trace: TraceSettings,
        manager: ModelManager,
    ) -> Server {
        Server {
            id: server_id,
            strict_readiness,
            manager,
            started: AtomicBool::new(false),
            exiting: AtomicBool::new(false),
            inflight: Arc::new(InFlight::default()),
            labels: Arc::new(LabelCache::default()),
            trace: Mutex::new(TraceStore::new(trace)),
            shm: Registry::new(false, Box::new(crate::shm::open_cuda)),
        }
    }

    /// Loads the startup models (see [`ModelManager::start`]); the server
    /// counts as started (see [`Server::is_ready`]) once they were all
    /// attempted. The server serves whatever loaded even when this fails.
    pub fn start(&self) -> Result<()> {
        let loaded = self.manager.start();
        self.started.store(true, Ordering::Release);
        loaded
    }

    /// The model manager, for the startup table and repository polling.
    pub fn manager(&self) -> &ModelManager {
        &self.manager
    }

    fn check_exiting(&self) -> Result<()> {
        if self.exiting.load(Ordering::Acquire) {
            return Err(Error::unavailable("Server exiting"));
        }
        Ok(())
    }

    /// Liveness: the server answers. Fails once shutdown has begun.
    pub fn is_live(&self) -> Result<bool> {
        self.check_exiting()?;
        Ok(true)
    }

    /// Readiness: false until the startup models were attempted
    /// ([`Server::start`]); then, with strict readiness, true while every
    /// model the server should serve is ready (see
    /// [`ModelManager::all_ready`]), and without it, true. Fails once
    /// shutdown has begun.
    pub fn is_ready(&self) -> Result<bool> {
        self.check_exiting()?;
        Ok(self.started.load(Ordering::Acquire)
            && (!self.strict_readiness || self.manager.all_ready()))
    }

    /// Server name, version and extensions.
    pub fn metadata(&self) -> ServerMetadata {
        ServerMetadata {
            name: self.id.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            extensions: EXTENSIONS.to_vec(),
        }
    }

    /// The ready model version a call is for (`None`: the latest ready).
    pub fn model(&self, name: &str, version: Option<i64>) -> Result<Arc<LoadedModel>> {
        self.manager.get(name, version)
    }

    /// Whether the model version is ready; an unknown model or version is
    /// an error with Triton's wording.
    pub fn model_ready(&self, name: &str, version: Option<i64>) -> Result<bool> {
        if self.exiting.load(Ordering::Acquire) {
            return Err(not_ready());
        }
        self.model(name, version).map(|_| true)
    }

    /// Model metadata: for `version` `None`, every ready version is listed.
    pub fn model_metadata(&self, name: &str, version: Option<i64>) -> Result<ModelMetadata> {
        let model = self.model(name, version)?;
        if self.exiting.load(Ordering::Acquire) {
            return Err(not_ready());
        }
        let versions = match version {
            Some(v) if v != -1 => vec![v.to_string()],
            _ => self
                .manager
                .ready_versions(name)
                .iter()
                .map(i64::to_string)
                .collect(),
        };
        let config = &model.config;
        let batching = config.max_batch_size >= 1;
        let tensor = |name: &str, data_type: i32, dims: &[i64]| {
            let mut shape = Vec::with_capacity(dims.len() + 1);
            if batching {
                shape.push(-1);
            }
            shape.extend_from_slice(dims);
            TensorMetadata {
                name: name.to_owned(),
                datatype: DataType::from_config_enum(data_type).map_or("", DataType::wire_name),
                shape,
            }
        };
        Ok(ModelMetadata {
            name: name.to_owned(),
            versions,
            platform: if config.platform.is_empty() {
                config.backend.clone()
            } else {
                config.platform.clone()
            },
            inputs: config
                .input
                .iter()
                .map(|i| tensor(&i.name, i.data_type, &i.dims))
                .collect(),
            outputs: config
                .output
                .iter()
                .map(|o| tensor(&o.name, o.data_type, &o.dims))
                .collect(),
        })
    }

    /// The model configuration as JSON.
    pub fn model_config_json(&self, name: &str, version: Option<i64>) -> Result<String> {
        Ok(self.model(name, version)?.config_json.clone())
    }

    /// Runs `request` on the model version it names; `completion` is called
    /// once, on whichever thread finishes it.
    pub fn infer(&self, request: InferRequest, completion: Completion) {
        match self.model(&request.model_name, request.model_version) {
            Ok(model) => self.infer_on(&model, request, completion),
            Err(e) => completion(Err(e)),
        }
    }

    /// Runs `request` and answers through `sender`: zero or more responses
    /// and one final mark for a decoupled model
    /// ([`crate::scheduler::is_decoupled`]), one final response (or error)
    /// for every other. The front ends that stream (gRPC
    /// `ModelStreamInfer`, HTTP `generate_stream`) use this; the sender's
    /// cancel flag is the request's.
    pub fn infer_stream(&self, request: InferRequest, sender: ResponseSender) {
        let complete = sender.clone();
        self.infer(
            request,
            Box::new(move |outcome| {
                let _ = complete.send_result(outcome, true);
            }),
        );
        drop(sender);
    }

    /// The shared-memory registry the extension's endpoints manage.
    pub fn shared_memory(&self) -> &Registry {
        &self.shm
    }

    /// Runs `request` on `model` (looked up by the caller, who needed its
    /// configuration first). Inputs in shared memory are read from their
    /// regions and outputs bound to regions are written there; outputs
    /// requested with a class count are replaced by their classification.
    pub fn infer_on(
        &self,
        model: &Arc<LoadedModel>,
        mut request: InferRequest,
        completion: Completion,
    ) {
        if (!request.shm_inputs.is_empty() || request.outputs.iter().any(|o| o.shm.is_some()))
            && let Err(e) = self.bind_shared_memory(model, &mut request)
        {
            return completion(Err(e));
        }
        if request.bindings.sinks.is_empty() {
            return self.submit(model, request, completion);
        }
        let sinks = request.bindings.sinks.clone();
        self.submit(
            model,
            request,
            Box::new(move |result: Result<InferResponse>| {
                completion(result.and_then(|response| deliver(response, &sinks)));
            }),
        );
    }

    /// Looks up the regions a request names: inputs become bytes of their
    /// region (system memory: no copy; CUDA memory: device bytes, which a
    /// backend that takes device memory reads in place and the scheduler
    /// stages to host for any other), outputs become sinks.
    fn bind_shared_memory(&self, model: &LoadedModel, request: &mut InferRequest) -> Result<()> {
        for (name, shm) in std::mem::take(&mut request.shm_inputs) {
            let bytes = self.shm.input(&shm.region, shm.offset, shm.byte_size)?;
            let Some(tensor) = request.inputs.iter_mut().find(|t| t.name == name) else {
                continue;
            };
            match bytes {
                InputBytes::Host(bytes) => tensor.data = bytes,
                // An ensemble's steps take host tensors: staged here. A
                // model with instances gets the device bytes; the scheduler
                // stages them on the instance's thread when its backend
                // reads host memory.
                InputBytes::Device(device) if model.backend.is_empty() => {
                    tensor.data = crate::gpu::stage_to_host(&device)?;
                }
                InputBytes::Device(device) => request.bindings.device_inputs.push((name, device)),
            }
        }
        for output in &request.outputs {
            if let Some(shm) = &output.shm {
                let sink = self.shm.sink(&shm.region, shm.offset, shm.byte_size)?;
                request.bindings.sinks.push((output.name.clone(), sink));
            }
        }
        Ok(())
    }

    fn submit(&self, model: &Arc<LoadedModel>, request: InferRequest, completion: Completion) {
        let guard = InFlightGuard::enter(&self.inflight);
        // Labels are looked up before the request runs: an ensemble's come
        // from its composing models, which only the manager can find.
        let composing = |name: &str, version: i64| {
            self.manager
                .get(name, (version >= 0).then_some(version))
                .ok()
        };
        let classified: Result<Vec<Classified>> = request
            .outputs
            .iter()
            .filter(|o| o.class_count > 0)
            .map(|o| {
                let labels = self.labels.labels(model, &o.name, &composing)?;
                Ok((o.name.clone(), o.class_count, labels))
            })
            .collect();
        let classified = match classified {
            Ok(classified) => classified,
            Err(e) => {
                completion(Err(e));
                drop(guard);
                return;
            }
        };
        if classified.is_empty() {
            model.scheduler.submit(
                request,
                Box::new(move |result| {
                    completion(result);
                    drop(guard);
                }),
            );
            return;
        }
        // The completion runs on the model's own instance thread; it must
        // not hold the last reference to the model (dropping it there would
        // join that thread), so it keeps a weak one.
        let weak = Arc::downgrade(model);
        model.scheduler.submit(
            request,
            Box::new(move |result| {
                let result = result.and_then(|response| match weak.upgrade() {
                    Some(model) => apply_classification(response, &model, &classified),
                    None => Err(Error::unavailable(
                        "model was unloaded before its response could be classified",
                    )),
                });
                completion(result);
                drop(guard);
            }),
        );
    }

    /// The repository index (blocking: reads the repository directories).
    pub fn repository_index(&self, ready_only: bool) -> Result<Vec<IndexEntry>> {
        self.manager.index(ready_only)
    }

    /// Loads or reloads a model, optionally with a JSON configuration that
    /// replaces its `config.pbtxt` (blocking until done).
    pub fn load_model(&self, name: &str, config_json: Option<&str>) -> Result<()> {
        self.load_model_files(name, config_json, &[])
    }

    /// [`Server::load_model`] with model file overrides: `files` holds the
    /// `file:<path>` load parameters with their decoded contents, which the
    /// model then loads from instead of its repository directory (see
    /// [`ModelManager::load_with_files`]).
    pub fn load_model_files(
        &self,
        name: &str,
        config_json: Option<&str>,
        files: &[(String, Vec<u8>)],
    ) -> Result<()> {
        if self.exiting.load(Ordering::Acquire) {
            return Err(not_ready());
        }
        self.manager.load_with_files(name, config_json, files)
    }

    /// Unloads a model, and with `unload_dependents` the composing models
    /// of an ensemble that no other loaded ensemble uses (blocking until
    /// done).
    pub fn unload_model(&self, name: &str, unload_dependents: bool) -> Result<()> {
        if self.exiting.load(Ordering::Acquire) {
            return Err(not_ready());
        }
        self.manager.unload(name, unload_dependents)
    }

    /// The logging settings in force.
    pub fn log_settings(&self) -> LogSettings {
        logging::settings()
    }

    /// Applies a logging update and returns the settings now in force.
    pub fn update_log_settings(&self, update: LogUpdate) -> Result<LogSettings> {
        if update.log_file.is_some() {
            return Err(Error::unsupported(
                "log file location can not be updated through network protocol",
            ));
        }
        let mut settings = logging::settings();
        if let Some(v) = update.log_info {
            settings.log_info = v;
        }
        if let Some(v) = update.log_warning {
            settings.log_warning = v;
        }
        if let Some(v) = update.log_error {
            settings.log_error = v;
        }
        if let Some(v) = update.log_verbose_level {
            settings.log_verbose_level = v;
        }
        if let Some(format) = update.log_format {
            if !logging::is_known_format(&format) {
                return Err(Error::unavailable(format!(
                    "invalid argument for --log_format, got: {format}"
                )));
            }
            settings.log_format = format;
        }
        logging::set_settings(settings).map_err(Error::internal)?;
        Ok(logging::settings())
    }

    fn trace_model(&self, model: Option<&str>) -> Result<()> {
        if let Some(name) = model
            && !self.model_ready(name, None)?
        {
            return Err(Error::invalid_arg(format!(
                "Request for unknown model : {name}"
            )));
        }
        Ok(())
    }

    /// The trace setting in force for `model` (`None`: global).
    pub fn trace_settings(&self, model: Option<&str>) -> Result<TraceSettings> {
        self.trace_model(model)?;
        Ok(self
            .trace
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(model))
    }

    /// Updates the trace setting of `model` (`None`: global) and returns
    /// the setting now in force there.
    pub fn update_trace_settings(
        &self,
        model: Option<&str>,
        update: &TraceUpdate,
    ) -> Result<TraceSettings> {
        self.trace_model(model)?;
        self.trace
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update(model, update)
    }

    /// Statistics of the ready versions of one model (`name`, optionally one
    /// `version`) or, with no name, of every ready model version: `(name,
    /// version, statistics)` rows.
    pub fn model_statistics(
        &self,
        name: Option<&str>,
        version: Option<i64>,
    ) -> Result<Vec<(String, i64, ModelStats)>> {
        let models = match (name, version) {
            (None, _) => self.manager.ready_models(),
            (Some(name), Some(v)) => vec![self.manager.get(name, Some(v))?],
            (Some(name), None) => {
                // Fails with Triton's unknown-model wording when none is ready.
                self.manager.get(name, None)?;
                self.manager
                    .ready_versions(name)
                    .into_iter()
                    .filter_map(|v| self.manager.get(name, Some(v)).ok())
                    .collect()
            }
        };
        Ok(models
            .into_iter()
            .map(|m| (m.name.clone(), m.version, m.scheduler.statistics()))
            .collect())
    }

    /// Every ready model version's statistics with its queue length, for
    /// the metrics endpoint, ordered by name and version.
    pub fn model_metrics(&self) -> Vec<ModelMetrics> {
        self.manager
            .ready_models()
            .into_iter()
            .map(|m| ModelMetrics {
                name: m.name.clone(),
                version: m.version,
                stats: m.scheduler.statistics(),
                pending: m.scheduler.queued(),
            })
            .collect()
    }

    /// Requests accepted by [`Server::infer`] and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().count
    }

    /// Starts shutting down: liveness and readiness fail from now on
    /// (inference is still accepted, so work in progress can finish).
    pub fn begin_shutdown(&self) {
        self.exiting.store(true, Ordering::Release);
    }

    /// Whether shutdown has begun.
    pub fn is_exiting(&self) -> bool {
        self.exiting.load(Ordering::Acquire)
    }

    /// Waits until no request is in flight or `deadline` passes; true when
    /// everything finished.
    pub fn drain(&self, deadline: Instant) -> bool {
        self.inflight.wait_idle(deadline)
    }

    /// Begins shutdown and unloads every model (their queued requests
    /// finish first), then lets go of every shared-memory region.
    pub fn shutdown(&self) {
        self.begin_shutdown();
        self.manager.shutdown();
        self.shm.clear();
    }
}

/// Writes each output bound to a sink into it and leaves the response's
/// copy empty: the client reads it from its region. An output a GPU
/// backend already wrote into its device sink (empty data) is left as is.
fn deliver(
    mut response: InferResponse,
    sinks: &[(String, Arc<dyn OutputSink>)],
) -> Result<InferResponse> {
    for t in &mut response.outputs {
        let Some((_, sink)) = sinks.iter().find(|(n, _)| *n == t.name) else {
            continue;
        };
        if t.data.is_empty() {
            continue;
        }
        if t.data.len() > sink.byte_size() {
            return Err(Error::internal(format!(
                "shared memory size specified with the request for output '{}' ({} bytes) should be at least {} bytes to hold the results",
                t.name,
                sink.byte_size(),
                t.data.len()
            )));
        }
        sink.write(&t.data)?;
        t.data = bytes::Bytes::new();
    }
    Ok(response)
}

/// An output to classify: its name, the class count and its labels.
type Classified = (String, u32, Option<Arc<Vec<String>>>);

/// Replaces each classified output of `response` by its top-k entries.
fn apply_classification(
    mut response: InferResponse,
    model: &Arc<LoadedModel>,
    classified: &[Classified],
) -> Result<InferResponse> {
    let batching = model.config.max_batch_size > 0;
    for t in &mut response.outputs {
        let Some((_, count, labels)) = classified.iter().find(|(n, _, _)| *n == t.name) else {
            continue;
        };
        let labels = labels.as_deref().map(Vec::as_slice);
        *t = classification::classify(t, *count, batching, labels)?;
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn readiness_follows_startup_strictness_and_shutdown() {
        let root = std::env::temp_dir().join(format!("nereid-ready-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (name, config) in [
            (
                "good",
                "backend: \"identity\" input [ { name: \"INPUT0\" data_type: TYPE_FP32 dims: [ 1 ] } ] output [ { name: \"OUTPUT0\" data_type: TYPE_FP32 dims: [ 1 ] } ]",
            ),
            ("broken", "max_batch_size: -1"),
        ] {
            std::fs::create_dir_all(root.join(name).join("1")).unwrap();
            std::fs::write(root.join(name).join("config.pbtxt"), config).unwrap();
        }
        for strict in [true, false] {
            let server = Server::new(ServerOptions {
                strict_readiness: strict,
                manager: ManagerOptions {
                    repositories: vec![root.clone()],
                    ..ManagerOptions::default()
                },
                ..ServerOptions::default()
            })
            .unwrap();
            assert!(server.is_live().unwrap());
            assert!(!server.is_ready().unwrap(), "not ready before start");
            assert!(server.start().is_err(), "'broken' fails");
            assert!(server.model_ready("good", None).unwrap());
            assert_eq!(server.is_ready().unwrap(), !strict, "strict: {strict}");
            server.begin_shutdown();
            assert!(server.is_ready().is_err());
            assert!(server.model_ready("good", None).is_err());
            server.shutdown();
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn ensemble_classification_takes_labels_from_the_producing_step_unless_it_has_its_own() {
        let root = std::env::temp_dir().join(format!("nereid-labels-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let io = |label: &str| {
            format!(
                "input [ {{ name: \"IN\" data_type: TYPE_INT32 dims: [ 3 ] }} ] output [ {{ name: \"OUT\" data_type: TYPE_INT32 dims: [ 3 ] {label} }} ]"
            )
        };
        let ensemble = |label: &str| {
            format!(
                "platform: \"ensemble\" {} ensemble_scheduling {{ step [ {{ model_name: \"labelled\" model_version: -1 input_map {{ key: \"IN\" value: \"IN\" }} output_map {{ key: \"OUT\" value: \"OUT\" }} }} ] }}",
                io(label)
            )
        };
        for (name, config, labels) in [
            (
                "labelled",
                format!("backend: \"identity\" {}", io("label_filename: \"l.txt\"")),
                "zero\none\ntwo\n",
            ),
            ("via", ensemble(""), ""),
            ("own", ensemble("label_filename: \"l.txt\""), "a\nb\nc\n"),
        ] {
            std::fs::create_dir_all(root.join(name).join("1")).unwrap();
            std::fs::write(root.join(name).join("config.pbtxt"), config).unwrap();
            if !labels.is_empty() {
                std::fs::write(root.join(name).join("l.txt"), labels).unwrap();
            }
        }
        let server = Server::new(ServerOptions {
            manager: ManagerOptions {
                repositories: vec![root.clone()],
                ..ManagerOptions::default()
            },
            ..ServerOptions::default()
        })
        .unwrap();
        server.start().unwrap();
        let classify = |model: &str| {
            let data: Vec<u8> = [5i32, 9, 7].iter().flat_map(|x| x.to_le_bytes()).collect();
            let request = InferRequest {
                model_name: model.to_owned(),
                inputs: vec![
                    crate::core::Tensor::new("IN", DataType::Int32, vec![3], data.into()).unwrap(),
                ],
                outputs: vec![crate::core::RequestedOutput {
                    name: "OUT".to_owned(),
                    class_count: 2,
                    ..Default::default()
                }],
                ..Default::default()
            };
            let (tx, rx) = std::sync::mpsc::channel();
            server.infer(request, Box::new(move |r| tx.send(r).unwrap()));
            let response = rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
            crate::core::tensor::split_bytes_elements(&response.outputs[0].data)
                .unwrap()
                .into_iter()
                .map(|b| String::from_utf8(b.to_vec()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(classify("labelled"), ["9:1:one", "7:2:two"]);
        assert_eq!(classify("via"), ["9:1:one", "7:2:two"]);
        assert_eq!(classify("own"), ["9:1:b", "7:2:c"]);
        server.shutdown();
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn drain_wakes_when_the_last_request_ends() {
        let inflight = Arc::new(InFlight::default());
        let first = InFlightGuard::enter(&inflight);
        let second = InFlightGuard::enter(&inflight);
        assert!(!inflight.wait_idle(Instant::now() + Duration::from_millis(10)));
        let ender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(first);
            drop(second);
        });
        let start = Instant::now();
        assert!(inflight.wait_idle(start + Duration::from_secs(30)));
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "woken, not timed out"
        );
        ender.join().unwrap();
        assert_eq!(inflight.lock().waiters, 0);
        assert!(inflight.wait_idle(Instant::now()));
    }
}
