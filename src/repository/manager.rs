//! The model manager: owns every model version the server knows about and
//! moves each through its lifecycle.
//!
//! ```text
//!              load ok               unload / reload drops it
//!   LOADING ───────────► READY ───────────► UNLOADING ──► UNAVAILABLE ("unloaded")
//!      │                                                       ▲
//!      └───────────── load failed (reason = the error) ────────┘
//! ```
//!
//! A model is a subdirectory of a repository; its versions are numbered
//! subdirectories, selected by the configuration's version policy. Loading
//! reads and completes the configuration (see [`super::config`]), resolves
//! the backend, starts one [`ModelScheduler`] per version and runs the
//! configuration's warmup samples on every instance (see [`super::warmup`])
//! before the version becomes READY.
//!
//! A reload is atomic. The new versions are created and warmed up next to
//! the old ones, which keep serving; only when every new version is ready
//! are they swapped into the table in one step. From then on lookups find
//! the new versions; each old one is shut down once no caller still holds
//! it between lookup and submit (bounded by [`RETIRE_GRACE`]), and its
//! queue drains: requests already submitted finish on the old version. A
//! version whose directory, shared files (everything outside the version
//! directories, `config.pbtxt` included) and completed configuration are
//! unchanged is not recreated: the running version stays in place.
//!
//! A failed load leaves what served before serving. The load call returns
//! the error and the log says it; in the index, a model that never loaded
//! shows UNAVAILABLE with the reason (per version, or on a row without a
//! version when no version was tried), while a model whose previous
//! versions still serve shows them READY with the failed load's reason in
//! their `reason` (cleared by the next successful load). Strict readiness
//! counts such a model as ready: it serves.
//!
//! An explicit load may bring the model's files itself
//! ([`ModelManager::load_with_files`], Triton's `file:` load parameters):
//! they are written to a directory of their own ([`super::overrides`]) that
//! the model loads from in place of its repository directory, so the model
//! need not be in any repository. That directory lives as long as the
//! versions loaded from it: a later load, an unload or shutdown removes it.
//!
//! Lookups of a name the manager never had a version of answer
//! INVALID_ARG ("is not found"), as Triton's do; a model whose versions
//! no longer serve answers NOT_FOUND ("has no available versions").
//!
//! In mode `poll`, [`ModelManager::poll`] compares each model directory
//! with its last load attempt through [`super::watch`]'s debounce rule:
//! new models load, changed ones reload, removed ones unload. A failed
//! attempt is retried only when the model's files change again.
//!
//! An ensemble (`platform: "ensemble"`) has no backend: its versions run
//! on an [`EnsembleScheduler`] that submits each step to the composing
//! model's serving version through a router over this table. Loading
//! an ensemble first loads the composing models that do not serve yet,
//! then checks the ensemble against their configurations. A READY ensemble
//! version serves only while every composing model does: lookups, the
//! index and strict readiness treat it as UNAVAILABLE ("composing model
//! 'x' is not ready") otherwise, and it serves again once they are back.
//! `unload_dependents` unloads an ensemble's composing models with it.
//!
//! Load and unload calls for one model are serialized; different models load
//! in parallel. Lookups ([`ModelManager::get`]) only take a short lock and
//! hand out `Arc<LoadedModel>`, so a request in flight keeps its version
//! alive through an unload.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use log::{error, info, warn};

use super::config::{self, CONFIG_FILE, ConfigSource};
use super::overrides::OverrideDir;
use super::versions;
use super::warmup::{self, WarmupSample};
use super::watch::{self, Fingerprint, Verdict};
use crate::backend::{Backend, BackendRegistry, ModelContext};
use crate::core::InferRequest;
use crate::core::proto::ModelConfig;
use crate::core::proto::inference::model_config::SchedulingChoice;
use crate::core::{Code, Error, Result};
use crate::scheduler::ensemble::{EnsembleScheduler, Plan, StepRouter};
use crate::scheduler::stats::ModelStats;
use crate::scheduler::{Completion, ModelScheduler};

/// How models get loaded and unloaded (`--model-control-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControlMode {
    /// Every model is loaded at start; the load/unload API is refused.
    #[default]
    None,
    /// Every model is loaded at start and [`ModelManager::poll`] applies
    /// changes in the repositories; the load/unload API is refused.
    Poll,
    /// Only the startup models (`--load-model`) are loaded at start; the
    /// load/unload API controls the rest.
    Explicit,
}

impl ControlMode {
    /// Parses a `--model-control-mode` value (`none`, `poll`, `explicit`).
    pub fn from_flag(value: &str) -> Option<ControlMode> {
        match value {
            "none" => Some(ControlMode::None),
            "poll" => Some(ControlMode::Poll),
            "explicit" => Some(ControlMode::Explicit),
            _ => None,
        }
    }
}

/// What the manager is told at start.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// Repository directories (`--model-repository`, repeatable).
    pub repositories: Vec<PathBuf>,
    /// `--model-control-mode`.
    pub control_mode: ControlMode,
    /// `--load-model` names for explicit mode; `*` alone means every model.
    pub startup_models: Vec<String>,
    /// Whether backends may complete configurations (and a model may lack a
    /// `config.pbtxt`); false under `--strict-model-config=true` or
    /// `--disable-auto-complete-config`.
    pub auto_complete: bool,
    /// GPU ids instance groups may use; empty on a machine without GPUs.
    pub available_gpus: Vec<i32>,
    /// Poll mode: how long the newest file of a changed model directory
    /// must have been left alone before the change is acted on (see
    /// [`super::watch`]).
    pub poll_settle: Duration,
}

impl Default for ManagerOptions {
    fn default() -> ManagerOptions {
        ManagerOptions {
            repositories: Vec::new(),
            control_mode: ControlMode::None,
            startup_models: Vec::new(),
            auto_complete: true,
            available_gpus: Vec::new(),
            poll_settle: DEFAULT_POLL_SETTLE,
        }
    }
}

/// Lifecycle state of one model version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelState {
    /// Instances are being created.
    Loading,
    /// Serving requests.
    Ready,
    /// Not serving: failed to load, or unloaded (see the reason).
    Unavailable,
    /// Finishing its queued requests before it goes away.
    Unloading,
}

impl ModelState {
    /// The name the repository index and the startup table show.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Loading => "LOADING",
            ModelState::Ready => "READY",
            ModelState::Unavailable => "UNAVAILABLE",
            ModelState::Unloading => "UNLOADING",
        }
    }
}

/// One loaded, ready model version.
#[derive(Debug)]
pub struct LoadedModel {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: i64,
    /// The completed, validated configuration.
    pub config: Arc<ModelConfig>,
    /// The configuration as the model configuration endpoint prints it.
    pub config_json: String,
    /// The model's directory.
    pub model_path: PathBuf,
    /// The version's directory.
    pub version_path: PathBuf,
    /// Name of the backend serving it (empty for an ensemble).
    pub backend: String,
    /// Whether its instances read inputs from GPU memory.
    pub takes_device_memory: bool,
    /// What runs the version's requests.
    pub scheduler: VersionScheduler,
}

/// What runs a loaded version's requests: its own instances, or, for an
/// ensemble, its steps on the composing models.
#[derive(Debug)]
pub enum VersionScheduler {
    /// A model with instances.
    Instances(ModelScheduler),
    /// An ensemble.
    Ensemble(EnsembleScheduler),
}

impl VersionScheduler {
    /// Validates and runs `request`; `complete` is called exactly once.
    pub fn submit(&self, request: InferRequest, complete: Completion) {
        match self {
            VersionScheduler::Instances(s) => s.submit(request, complete),
            VersionScheduler::Ensemble(s) => s.submit(request, complete),
        }
    }

    /// The version's statistics so far.
    pub fn statistics(&self) -> ModelStats {
        match self {
            VersionScheduler::Instances(s) => s.statistics(),
            VersionScheduler::Ensemble(s) => s.statistics(),
        }
    }

    /// Requests queued and not yet taken by an instance (an ensemble's
    /// requests wait in its composing models' queues).
    pub fn queued(&self) -> usize {
        match self {
            VersionScheduler::Instances(s) => s.queued(),
            VersionScheduler::Ensemble(_) => 0,
        }
    }

    /// Stops taking requests and lets the queued ones finish.
    pub fn shutdown(&self) {
        match self {
            VersionScheduler::Instances(s) => s.shutdown(),
            VersionScheduler::Ensemble(s) => s.shutdown(),
        }
    }

    /// The ensemble scheduler, for an ensemble.
    pub fn ensemble(&self) -> Option<&EnsembleScheduler> {
        match self {
            VersionScheduler::Ensemble(s) => Some(s),
            VersionScheduler::Instances(_) => None,
        }
    }
}

/// One row of the repository index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Model name.
    pub name: String,
    /// Version, when the row is about one version.
    pub version: Option<String>,
    /// `READY`, `UNAVAILABLE`, `LOADING`, `UNLOADING`, or empty for a model
    /// that was never loaded.
    pub state: String,
    /// Why the version is not ready; empty otherwise.
    pub reason: String,
}

/// The default [`ManagerOptions::poll_settle`].
pub const DEFAULT_POLL_SETTLE: Duration = Duration::from_secs(1);

/// How long a retired version waits for callers that looked it up before
/// the swap to submit their requests; past it, it shuts down anyway and a
/// late submit is refused.
pub const RETIRE_GRACE: Duration = Duration::from_secs(5);

/// The reason recorded for versions removed by an unload.
pub const UNLOADED_REASON: &str = "unloaded";

/// The reason shown for a model found in more than one repository.
pub const DUPLICATE_REASON: &str = "model appears in two or more repositories";

/// The message of a load/unload call in a mode that does not allow it
/// (Triton's wording, which names polling even in mode `none`).
pub const CONTROL_DISABLED: &str =
    "explicit model load / unload is not allowed if polling is enabled";

#[derive(Debug)]
struct VersionSlot {
    state: ModelState,
    /// Why the version is not ready, or, on a READY version, why the
    /// latest load of its model failed.
    reason: String,
    model: Option<Arc<LoadedModel>>,
    /// The files the serving version was created from
    /// ([`Fingerprint::for_version`]).
    files: Option<Fingerprint>,
}

#[derive(Debug, Default)]
struct ModelRecord {
    versions: BTreeMap<i64, VersionSlot>,
    /// Why the last load failed before any version was tried (bad or
    /// missing configuration, unknown backend, no version directory).
    failure: Option<String>,
    /// The model directory at the last load attempt, for poll mode.
    attempted: Option<Fingerprint>,
    /// The directory written from `file:` load parameters that the serving
    /// versions were loaded from; removed when they leave.
    override_dir: Option<OverrideDir>,
}

type Models = BTreeMap<String, ModelRecord>;

/// Owns the models of the repositories and their lifecycle.
pub struct ModelManager {
    options: ManagerOptions,
    backends: BackendRegistry,
    /// Shared with the ensembles' [`Router`], which holds it weakly.
    models: Arc<Mutex<Models>>,
    /// One lock per model name, held across a load or unload of that model.
    model_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Poll mode: each model directory as the previous poll saw it.
    seen: Mutex<HashMap<String, Fingerprint>>,
}

impl std::fmt::Debug for ModelManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelManager")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Triton's name for an error code, as it prefixes a failed version's reason.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Unknown => "Unknown",
        Code::Internal => "Internal",
        Code::NotFound => "Not found",
        Code::InvalidArg => "Invalid argument",
        Code::Unavailable => "Unavailable",
        Code::Unsupported => "Unsupported",
        Code::AlreadyExists => "Already exists",
        Code::Cancelled => "Cancelled",
    }
}

fn reason_of(e: &Error) -> String {
    format!("{}: {}", code_name(e.code()), e.message())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind that is still
    // consistent for our purposes (every update is a single assignment).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unknown_model(message: String) -> Error {
    Error::not_found(format!("Request for unknown model: {message}"))
}

/// Checks a model name handed to the load API (Triton's rules and wording).
fn validate_model_name(name: &str) -> Result<()> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid_arg(
            "Model name cannot be empty. Please enter a valid name to deploy.",
        ));
    }
    if trimmed == ".." || trimmed.contains('/') || trimmed.contains('\\') {
        return Err(Error::invalid_arg(format!(
            "invalid model name '{name}', model name must not contain path traversal characters"
        )));
    }
    Ok(())
}

/// What a version load produced.
enum VersionOutcome {
    Started(Arc<LoadedModel>),
    Failed(Error),
}

/// Shuts down a version that left the table, once the callers that looked
/// it up before it left have submitted their requests (or [`RETIRE_GRACE`]
/// passed); what it has queued finishes first.
fn retire(model: Arc<LoadedModel>) {
    let deadline = Instant::now() + RETIRE_GRACE;
    while Arc::strong_count(&model) > 1 {
        if Instant::now() >= deadline {
            warn!(
                "model '{}' version {} is still held {}s after it was replaced; shutting it down",
                model.name,
                model.version,
                RETIRE_GRACE.as_secs()
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    model.scheduler.shutdown();
}

/// Runs every warmup sample `count` times on each instance of a version.
fn run_warmup(
    name: &str,
    version: i64,
    scheduler: &ModelScheduler,
    samples: &[WarmupSample],
) -> Result<()> {
    for sample in samples {
        info!(
            "model '{name}' version {version}: running warmup sample '{}' {} time(s) on each of {} instance(s)",
            sample.name,
            sample.count,
            scheduler.placements().len()
        );
        for _ in 0..sample.count {
            scheduler
                .warmup(std::slice::from_ref(&sample.request))
                .map_err(|e| {
                    Error::new(
                        e.code(),
                        format!(
                            "model '{name}' version {version}: warmup sample '{}' failed: {}",
                            sample.name,
                            e.message()
                        ),
                    )
                })?;
        }
    }
    Ok(())
}

/// How deep [`composing_unready`] looks through ensembles of ensembles;
/// deeper (or cyclic) nesting counts as not ready.
const MAX_ENSEMBLE_NESTING: usize = 8;

/// The serving version of `name` (`version` `None` or -1: the highest one
/// that serves), or why there is none; `None` when the manager has no
/// version of `name`. An ensemble's version serves only while its composing
/// models do.
fn lookup(
    models: &Models,
    name: &str,
    version: Option<i64>,
    depth: usize,
) -> Option<Result<Arc<LoadedModel>>> {
    let record = models.get(name).filter(|r| !r.versions.is_empty())?;
    Some(match version.filter(|&v| v != -1) {
        Some(v) => match record.versions.get(&v) {
            None => Err(unknown_model(format!("'{name}' version {v} is not found"))),
            Some(slot) => match (&slot.model, slot.state) {
                (Some(model), ModelState::Ready) => match composing_unready(models, model, depth) {
                    None => Ok(Arc::clone(model)),
                    Some(why) => Err(Error::unavailable(format!(
                        "Request for unknown model: '{name}' version {v} is not at ready state: {why}"
                    ))),
                },
                _ => Err(Error::unavailable(format!(
                    "Request for unknown model: '{name}' version {v} is not at ready state"
                ))),
            },
        },
        None => {
            let mut why = None;
            record
                .versions
                .values()
                .rev()
                .filter(|s| s.state == ModelState::Ready)
                .filter_map(|s| s.model.as_ref())
                .find(|m| match composing_unready(models, m, depth) {
                    None => true,
                    Some(reason) => {
                        why.get_or_insert(reason);
                        false
                    }
                })
                .map(Arc::clone)
                .ok_or_else(|| {
                    let why = why.map_or_else(String::new, |w| format!(": {w}"));
                    unknown_model(format!("'{name}' has no available versions{why}"))
                })
        }
    })
}

/// Why some composing model of ensemble version `model` does not serve;
/// `None` when they all do, or when `model` is not an ensemble.
fn composing_unready(models: &Models, model: &LoadedModel, depth: usize) -> Option<String> {
    let ensemble = model.scheduler.ensemble()?;
    if depth >= MAX_ENSEMBLE_NESTING {
        return Some(format!(
            "ensembles nest deeper than {MAX_ENSEMBLE_NESTING} levels"
        ));
    }
    ensemble.plan().steps().iter().find_map(|step| {
        let version = (step.version != -1).then_some(step.version);
        match lookup(models, &step.model, version, depth + 1) {
            Some(Ok(_)) => None,
            _ => Some(format!("composing model '{}' is not ready", step.model)),
        }
    })
}

/// A version's state and reason as clients see them: a READY ensemble
/// version whose composing models do not all serve is UNAVAILABLE, with
/// the model that is missing as the reason.
fn effective_state(models: &Models, slot: &VersionSlot) -> (ModelState, String) {
    match (&slot.model, slot.state) {
        (Some(model), ModelState::Ready) => match composing_unready(models, model, 0) {
            Some(why) => (ModelState::Unavailable, why),
            None => (ModelState::Ready, slot.reason.clone()),
        },
        _ => (slot.state, slot.reason.clone()),
    }
}

/// Submits an ensemble's steps to the composing models' serving versions,
/// looked up per step, so a reload of a composing model is picked up.
struct Router {
    /// Weak: the table holds the ensembles that hold their routers.
    models: std::sync::Weak<Mutex<Models>>,
}

impl StepRouter for Router {
    fn submit(&self, request: InferRequest, complete: Completion) {
        let found = self.models.upgrade().and_then(|models| {
            let models = lock(&models);
            lookup(&models, &request.model_name, request.model_version, 0)
        });
        match found {
            Some(Ok(model)) => model.scheduler.submit(request, complete),
            Some(Err(e)) => complete(Err(e)),
            None => complete(Err(Error::unavailable(format!(
                "Request for unknown model: '{}' is not loaded",
                request.model_name
            )))),
        }
    }
    fn config(&self, model: &str, version: Option<i64>) -> Option<Arc<ModelConfig>> {
        let models = self.models.upgrade()?;
        let models = lock(&models);
        let found = lookup(&models, model, version, 0)?.ok()?;
        Some(Arc::clone(&found.config))
    }
}

impl ModelManager {
    /// Checks the options and the repository directories; loads nothing
    /// (call [`ModelManager::start`]).
    pub fn new(options: ManagerOptions, backends: BackendRegistry) -> Result<ModelManager> {
        if options.repositories.is_empty() {
            return Err(Error::invalid_arg(
                "at least one model repository is required (--model-repository)",
            ));
        }
        for repo in &options.repositories {
            if !repo.is_dir() {
                return Err(Error::invalid_arg(format!(
                    "repository path is not a valid directory: '{}'",
                    repo.display()
                )));
            }
        }
        if options.control_mode == ControlMode::Explicit
            && options.startup_models.iter().any(|m| m == "*")
            && options.startup_models.len() > 1
        {
            return Err(Error::invalid_arg(
                "Wildcard model name '*' must be the ONLY startup model if specified at all.",
            ));
        }
        Ok(ModelManager {
            options,
            backends,
            models: Arc::new(Mutex::new(BTreeMap::new())),
            model_locks: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// The options the manager was created with.
    pub fn options(&self) -> &ManagerOptions {
        &self.options
    }

    /// Loads the startup models: every model in modes `none` and `poll`,
    /// the `--load-model` names (or every model for `*`) in mode
    /// `explicit`. Every model is attempted; if any fails, the error is
    /// Triton's "failed to load all models" and the details are in the log,
    /// the index and [`ModelManager::model_table`].
    pub fn start(&self) -> Result<()> {
        let names: Vec<String> = match self.options.control_mode {
            ControlMode::Explicit if self.options.startup_models.iter().all(|m| m != "*") => {
                let mut names = self.options.startup_models.clone();
                names.sort();
                names.dedup();
                names
            }
            _ => self.repository_models()?.into_keys().collect(),
        };
        let failures = self.load_many(&names);
        if failures == 0 {
            Ok(())
        } else {
            Err(Error::internal("failed to load all models"))
        }
    }

    /// Loads `names` on a few threads; returns how many failed.
    fn load_many(&self, names: &[String]) -> usize {
        let workers = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, 4)
            .min(names.len());
        let next = AtomicUsize::new(0);
        let failures = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    while let Some(name) = names.get(next.fetch_add(1, Ordering::Relaxed)) {
                        if self.load_model(name, None, None).is_err() {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        failures.into_inner()
    }

    /// Every model directory of every repository: name → directories (more
    /// than one when the name appears in several repositories). Hidden
    /// directories are skipped.
    fn repository_models(&self) -> Result<BTreeMap<String, Vec<PathBuf>>> {
        let mut found: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for repo in &self.options.repositories {
            let entries = fs::read_dir(repo).map_err(|e| {
                Error::internal(format!(
                    "failed to poll model repository '{}': {e}",
                    repo.display()
                ))
            })?;
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_dir() && !name.starts_with('.') {
                    found.entry(name).or_default().push(path);
                }
            }
        }
        Ok(found)
    }

    /// The directory of model `name`, or why there is none.
    fn locate(&self, name: &str) -> Result<PathBuf> {
        let dirs: Vec<PathBuf> = self
            .options
            .repositories
            .iter()
            .map(|r| r.join(name))
            .filter(|p| p.is_dir())
            .collect();
        match dirs.as_slice() {
            [one] => Ok(one.clone()),
            // Asking for a model the repository lacks is the client's
            // error (Triton's wording, but 400 where Triton answers 500).
            [] => Err(Error::invalid_arg(format!(
                "failed to load '{name}', failed to poll from model repository: no directory '{name}' in any model repository ({})",
                self.options
                    .repositories
                    .iter()
                    .map(|r| format!("'{}'", r.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            _ => Err(Error::internal(format!(
                "failed to load '{name}', failed to poll from model repository: {DUPLICATE_REASON} ({})",
                dirs.iter()
                    .map(|d| format!("'{}'", d.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    fn model_lock(&self, name: &str) -> Arc<Mutex<()>> {
        Arc::clone(lock(&self.model_locks).entry(name.to_owned()).or_default())
    }

    fn require_explicit(&self) -> Result<()> {
        if self.options.control_mode == ControlMode::Explicit {
            Ok(())
        } else {
            Err(Error::unavailable(CONTROL_DISABLED))
        }
    }

    /// Loads (or reloads) model `name` and returns once every selected
    /// version is ready, or with the failure. `config_override` is a JSON
    /// model configuration that replaces the model's `config.pbtxt` for this
    /// load. Only allowed in mode `explicit`.
    pub fn load(&self, name: &str, config_override: Option<&str>) -> Result<()> {
        self.load_with_files(name, config_override, &[])
    }

    /// [`ModelManager::load`] with Triton's model file override: when
    /// `files` (`file:<path>` parameter names with their contents) is not
    /// empty, the model loads from a directory holding just those files,
    /// under the configuration `config_override`, which is then required;
    /// the model need not be in any repository. That directory is removed
    /// once the versions loaded from it leave (unload, a later load, a
    /// failed load, shutdown). Only allowed in mode `explicit`.
    pub fn load_with_files(
        &self,
        name: &str,
        config_override: Option<&str>,
        files: &[(String, Vec<u8>)],
    ) -> Result<()> {
        self.require_explicit()?;
        validate_model_name(name)?;
        if files.is_empty() {
            return self.load_model(name, config_override, None);
        }
        // Logged as failed loads are (load_model logs the rest).
        let Some(config_override) = config_override else {
            let e = Error::invalid_arg(format!(
                "failed to load '{name}', failed to poll from model repository: load parameter 'config' must be given with model file overrides (the files replace the model's directory)"
            ));
            error!("{}", e.message());
            return Err(e);
        };
        let dir = OverrideDir::create(name, files).inspect_err(|e| error!("{}", e.message()))?;
        self.load_model(name, Some(config_override), Some(dir))
    }

    /// Unloads every version of `name`, waiting for queued requests to
    /// finish. With `unload_dependents` (Triton's meaning: the models loaded
    /// along with it), an ensemble's composing models are unloaded too,
    /// each unless another loaded ensemble still uses it, and theirs in
    /// turn. Unloading a model that is not loaded succeeds. Only allowed in
    /// mode `explicit`.
    pub fn unload(&self, name: &str, unload_dependents: bool) -> Result<()> {
        self.require_explicit()?;
        let composing = if unload_dependents {
            self.composing(name)
        } else {
            Vec::new()
        };
        self.unload_model(name);
        for model in composing {
            if self.dependents(&model).is_empty() {
                self.unload(&model, true)?;
            }
        }
        Ok(())
    }

    /// The models the loaded versions of ensemble `name` run their steps
    /// on, sorted; empty for a model that is not an ensemble.
    pub fn composing(&self, name: &str) -> Vec<String> {
        let models = lock(&self.models);
        let mut names: Vec<String> = models
            .get(name)
            .into_iter()
            .flat_map(|r| r.versions.values())
            .filter_map(|s| s.model.as_ref()?.scheduler.ensemble())
            .flat_map(|e| e.plan().steps().iter().map(|step| step.model.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Names of the loaded ensembles with a step that uses model `name`:
    /// while there are any, `unload(ensemble, true)` leaves it loaded.
    pub fn dependents(&self, name: &str) -> Vec<String> {
        let models = lock(&self.models);
        models
            .iter()
            .filter(|(other, _)| other.as_str() != name)
            .filter(|(_, record)| {
                record
                    .versions
                    .values()
                    .filter_map(|s| s.model.as_ref())
                    .any(|m| {
                        matches!(
                            &m.config.scheduling_choice,
                            Some(SchedulingChoice::EnsembleScheduling(e))
                                if e.step.iter().any(|s| s.model_name == name)
                        )
                    })
            })
            .map(|(other, _)| other.clone())
            .collect()
    }

    /// Applies repository changes in mode `poll` (see [`ModelManager::poll_at`]).
    pub fn poll(&self) -> Result<()> {
        self.poll_at(SystemTime::now())
    }

    /// Applies repository changes in mode `poll`, judged at time `now`:
    /// unloads models whose directory is gone and loads the new and changed
    /// models that [`watch::judge`] finds stable. A model found in several
    /// repositories is left as it is (the index reports it). Failures are
    /// logged and recorded; the call fails only when a repository cannot be
    /// read.
    pub fn poll_at(&self, now: SystemTime) -> Result<()> {
        if self.options.control_mode != ControlMode::Poll {
            return Err(Error::unavailable("polling is disabled"));
        }
        let present = self.repository_models()?;
        let current: HashMap<String, Fingerprint> = present
            .iter()
            .filter_map(|(name, dirs)| match dirs.as_slice() {
                [dir] => Some((name.clone(), Fingerprint::of(dir))),
                _ => None,
            })
            .collect();
        let mut to_load = Vec::new();
        {
            let models = lock(&self.models);
            let seen = lock(&self.seen);
            for (name, print) in &current {
                let attempted = models.get(name).and_then(|r| r.attempted.as_ref());
                let verdict = watch::judge(
                    attempted,
                    seen.get(name),
                    print,
                    now,
                    self.options.poll_settle,
                );
                if verdict == Verdict::Changed {
                    to_load.push(name.clone());
                }
            }
        }
        *lock(&self.seen) = current;
        let gone: Vec<String> = lock(&self.models)
            .keys()
            .filter(|n| !present.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            self.unload_model(&name);
            lock(&self.models).remove(&name);
        }
        to_load.sort();
        self.load_many(&to_load);
        Ok(())
    }

    /// Unloads every model; the server calls it on exit.
    pub fn shutdown(&self) {
        let names: Vec<String> = lock(&self.models).keys().cloned().collect();
        for name in names {
            self.unload_model(&name);
        }
    }

    fn unload_model(&self, name: &str) {
        let model_lock = self.model_lock(name);
        let _held = lock(&model_lock);
        let leaving: Vec<(i64, Arc<LoadedModel>)> = {
            let mut models = lock(&self.models);
            let Some(record) = models.get_mut(name) else {
                return;
            };
            record.failure = None;
            record.attempted = None;
            record
                .versions
                .iter_mut()
                .filter_map(|(&v, slot)| {
                    let model = slot.model.take()?;
                    slot.state = ModelState::Unloading;
                    slot.reason.clear();
                    Some((v, model))
                })
                .collect()
        };
        let override_dir = lock(&self.models)
            .get_mut(name)
            .and_then(|r| r.override_dir.take());
        for (version, model) in leaving {
            retire(model);
            info!("successfully unloaded '{name}' version {version}");
            let mut models = lock(&self.models);
            if let Some(slot) = models
                .get_mut(name)
                .and_then(|r| r.versions.get_mut(&version))
            {
                slot.state = ModelState::Unavailable;
                slot.reason = UNLOADED_REASON.to_owned();
            }
        }
        // Only now that no version reads from it.
        drop(override_dir);
    }

    /// Loads the composing models of `name`, if its configuration is an
    /// ensemble's, that do not serve yet (Triton loads them with the
    /// ensemble), before `name` takes its own lock: two ensembles loading on
    /// different threads never wait for each other. `chain` lists the
    /// ensembles whose loads led here; a model that appears in its own chain
    /// is a cycle, refused rather than followed. A configuration that does
    /// not read is left for the load itself to report.
    fn load_composing(
        &self,
        name: &str,
        dir: &Path,
        config_override: Option<&str>,
        chain: &[&str],
    ) -> Result<()> {
        let config = match config_override {
            Some(json) => config::parse_config_json(json).ok(),
            None => config::read_config_file(name, &dir.join(CONFIG_FILE)).ok(),
        };
        let Some(ModelConfig {
            scheduling_choice: Some(SchedulingChoice::EnsembleScheduling(ensembling)),
            ..
        }) = config
        else {
            return Ok(());
        };
        let mut chain = chain.to_vec();
        chain.push(name);
        let mut steps: Vec<&str> = ensembling
            .step
            .iter()
            .map(|s| s.model_name.as_str())
            .collect();
        steps.sort_unstable();
        steps.dedup();
        for model in steps {
            let failure = if chain.contains(&model) {
                Error::invalid_arg(format!(
                    "ensemble '{name}': model '{model}' is among its own composing models ({} -> {model})",
                    chain.join(" -> ")
                ))
            } else if self.ready(model, None) {
                continue;
            } else {
                match self.try_load(model, None, None, &chain) {
                    Ok(()) => continue,
                    Err(e) => Error::new(
                        e.code(),
                        format!(
                            "ensemble '{name}': composing model '{model}' failed to load: {}",
                            e.message()
                        ),
                    ),
                }
            };
            self.record_failure(name, &failure);
            return Err(failure);
        }
        Ok(())
    }

    /// Checks an ensemble against the configurations its composing models
    /// serve with now.
    fn validate_composing(&self, config: &ModelConfig) -> Result<()> {
        let models = lock(&self.models);
        config::validate_ensemble_steps(config, &|model, version| {
            let version = (version != -1).then_some(version);
            let found = lookup(&models, model, version, 0)?.ok()?;
            Some(Arc::clone(&found.config))
        })
    }

    /// How an ensemble loaded now reaches its composing models.
    fn router(&self) -> Arc<dyn StepRouter> {
        Arc::new(Router {
            models: Arc::downgrade(&self.models),
        })
    }

    /// Records why a load of `name` failed before any version was tried: on
    /// the versions that still serve, or on the model when none does.
    fn record_failure(&self, name: &str, e: &Error) {
        let reason = reason_of(e);
        let mut models = lock(&self.models);
        let record = models.entry(name.to_owned()).or_default();
        let mut serving = record
            .versions
            .values_mut()
            .filter(|s| s.model.is_some())
            .peekable();
        if serving.peek().is_none() {
            record.failure = Some(reason);
        } else {
            for slot in serving {
                slot.reason.clone_from(&reason);
            }
        }
    }

    /// Completes a partial configuration override from the model's on-disk
    /// `config.pbtxt`, the way Triton completes one from a model file: the
    /// backend (when the override names neither backend nor platform) and the
    /// input and output lists (when the override has none). Built-in models have
    /// no model file, so their `config.pbtxt` is what describes them; for other
    /// backends their own auto-complete runs afterwards as usual.
    fn complete_override(config: &mut ModelConfig, on_disk: ModelConfig) {
        if config.backend.is_empty() && config.platform.is_empty() {
            config.backend = on_disk.backend;
            config.platform = on_disk.platform;
        }
        if config.input.is_empty() {
            config.input = on_disk.input;
        }
        if config.output.is_empty() {
            config.output = on_disk.output;
        }
    }

    /// Reads, completes and validates the configuration of `name`, and
    /// resolves its backend.
    fn prepare(
        &self,
        name: &str,
        dir: &Path,
        config_override: Option<&str>,
    ) -> Result<(ModelConfig, Option<Arc<dyn Backend>>)> {
        let config_path = dir.join(CONFIG_FILE);
        let (mut config, source) = match config_override {
            Some(json) => {
                let source = ConfigSource::config_override(name);
                let mut config = config::parse_config_json(json).map_err(|e| {
                    Error::new(
                        e.code(),
                        format!(
                            "failed to load '{name}', failed to poll from model repository: {}",
                            source.error(e.message()).message()
                        ),
                    )
                })?;
                if self.options.auto_complete && config_path.is_file() {
                    let on_disk = config::read_config_file(name, &config_path)?;
                    Self::complete_override(&mut config, on_disk);
                }
                (config, source)
            }
            None if config_path.is_file() => (
                config::read_config_file(name, &config_path)?,
                ConfigSource::file(name, &config_path),
            ),
            None if self.options.auto_complete => (
                ModelConfig::default(),
                ConfigSource::file(name, &config_path),
            ),
            None => {
                return Err(Error::invalid_arg(format!(
                    "model '{name}': no {CONFIG_FILE} in '{}'; a configuration file is required when auto-complete is disabled (--strict-model-config=true or --disable-auto-complete-config)",
                    dir.display()
                )));
            }
        };
        if config.name.is_empty() {
            config.name = name.to_owned();
        }
        config::fill_backend_fields(&mut config, dir);
        // An ensemble runs on its composing models and has no backend.
        let backend = if config.platform == config::ENSEMBLE_PLATFORM {
            None
        } else {
            // The registry's message already names the model and the field.
            let backend = self.backends.resolve(&config)?;
            if self.options.auto_complete {
                backend.auto_complete(&mut config, dir).map_err(|e| {
                    source.error(format!(
                        "backend '{}' auto-complete failed: {}",
                        backend.name(),
                        e.message()
                    ))
                })?;
            }
            Some(backend)
        };
        config::normalize(&mut config, &self.options.available_gpus);
        config::validate(&config, &source, &self.options.available_gpus)?;
        Ok((config, backend))
    }

    /// Loads or reloads `name` with no control-mode check; logs a failure.
    fn load_model(
        &self,
        name: &str,
        config_override: Option<&str>,
        files: Option<OverrideDir>,
    ) -> Result<()> {
        self.try_load(name, config_override, files, &[])
            .inspect_err(|e| error!("{}", e.message()))
    }

    /// Loads `name`; `chain` lists the ensembles whose loads led here
    /// (see [`ModelManager::load_composing`]). With `override_files` (a
    /// directory written from a load request's files) the model loads from
    /// that directory instead of its repository's; once the new versions
    /// serve, the record keeps it (and drops the one it replaces). A
    /// failed load drops it, which removes it.
    fn try_load(
        &self,
        name: &str,
        config_override: Option<&str>,
        override_files: Option<OverrideDir>,
        chain: &[&str],
    ) -> Result<()> {
        // A name with no directory leaves no trace: asking for a model that
        // does not exist must not grow the tables or affect readiness.
        let dir = match &override_files {
            Some(d) => d.path().to_path_buf(),
            None => self.locate(name)?,
        };
        self.load_composing(name, &dir, config_override, chain)?;
        let model_lock = self.model_lock(name);
        let _held = lock(&model_lock);
        // What this attempt saw, taken before anything is read: a change
        // during the load shows at the next poll, and polling retries a
        // failed model only once its files change.
        let files = Fingerprint::of(&dir);
        lock(&self.models)
            .entry(name.to_owned())
            .or_default()
            .attempted = Some(files.clone());
        let (config, backend, samples) = self
            .prepare(name, &dir, config_override)
            .and_then(|(config, backend)| {
                if backend.is_none() {
                    Plan::new(&config)?;
                    self.validate_composing(&config)?;
                }
                let samples = warmup::build_samples(&config, &dir)?;
                Ok((config, backend, samples))
            })
            .inspect_err(|e| self.record_failure(name, e))?;

        let present =
            versions::scan_versions(&dir).inspect_err(|e| self.record_failure(name, e))?;
        let policy = config.version_policy.clone().unwrap_or_default();
        let selected = versions::select_versions(name, &policy, &present);
        if selected.is_empty() {
            let e = Error::invalid_arg(format!(
                "load failed for model '{name}': at least one version must be available under the version policy of model '{name}' (version directories found: {present:?})"
            ));
            self.record_failure(name, &e);
            return Err(e);
        }

        let config = Arc::new(config);
        let config_json = config::config_to_json(&config);
        let fresh: Vec<i64> = {
            let mut models = lock(&self.models);
            let record = models.entry(name.to_owned()).or_default();
            record.failure = None;
            let mut fresh = Vec::new();
            for &v in &selected {
                let slot = record.versions.entry(v).or_insert(VersionSlot {
                    state: ModelState::Loading,
                    reason: String::new(),
                    model: None,
                    files: None,
                });
                let unchanged = slot.state == ModelState::Ready
                    && slot.model.as_ref().is_some_and(|m| *m.config == *config)
                    && slot.files.as_ref() == Some(&files.for_version(v, &present));
                if !unchanged {
                    fresh.push(v);
                }
                if slot.model.is_none() {
                    slot.state = ModelState::Loading;
                    slot.reason.clear();
                }
            }
            fresh
        };

        let outcomes: Vec<(i64, VersionOutcome)> = fresh
            .iter()
            .map(|&version| {
                let version_path = dir.join(version.to_string());
                let started = match &backend {
                    Some(backend) => {
                        let ctx = ModelContext {
                            name: name.to_owned(),
                            version,
                            version_path: version_path.clone(),
                            model_path: dir.clone(),
                            config: Arc::clone(&config),
                        };
                        ModelScheduler::start(ctx, Arc::clone(backend)).and_then(|s| {
                            run_warmup(name, version, &s, &samples)?;
                            Ok(VersionScheduler::Instances(s))
                        })
                    }
                    None => EnsembleScheduler::new(Arc::clone(&config), version, self.router())
                        .map(VersionScheduler::Ensemble),
                };
                let outcome = match started {
                    Ok(scheduler) => VersionOutcome::Started(Arc::new(LoadedModel {
                        name: name.to_owned(),
                        version,
                        config: Arc::clone(&config),
                        config_json: config_json.clone(),
                        model_path: dir.clone(),
                        version_path,
                        backend: backend
                            .as_ref()
                            .map_or_else(String::new, |b| b.name().to_owned()),
                        takes_device_memory: backend
                            .as_ref()
                            .is_some_and(|b| b.takes_device_memory()),
                        scheduler,
                    })),
                    Err(e) => {
                        error!(
                            "failed to load '{name}' version {version}: {}",
                            reason_of(&e)
                        );
                        VersionOutcome::Failed(e)
                    }
                };
                (version, outcome)
            })
            .collect();

        let failed: String = outcomes
            .iter()
            .filter_map(|(v, o)| match o {
                VersionOutcome::Failed(e) => Some(format!(
                    "version {v} is at UNAVAILABLE state: {};",
                    reason_of(e)
                )),
                VersionOutcome::Started(_) => None,
            })
            .collect();

        if failed.is_empty() {
            let files: Vec<(i64, Fingerprint)> = selected
                .iter()
                .map(|&v| (v, files.for_version(v, &present)))
                .collect();
            self.commit(name, outcomes, files, override_files);
            Ok(())
        } else {
            let e = Error::invalid_arg(format!("load failed for model '{name}': {failed}"));
            self.abort(name, &e, &failed, outcomes);
            Err(e)
        }
    }

    /// Swaps freshly started versions in and retires what they replace, in
    /// one step of the table; `files` holds every selected version (fresh
    /// or kept) with the files it now serves.
    fn commit(
        &self,
        name: &str,
        outcomes: Vec<(i64, VersionOutcome)>,
        files: Vec<(i64, Fingerprint)>,
        override_files: Option<OverrideDir>,
    ) {
        let mut retired: Vec<(i64, Arc<LoadedModel>, bool)> = Vec::new();
        let replaced_files = {
            let mut models = lock(&self.models);
            let record = models.entry(name.to_owned()).or_default();
            for (version, outcome) in outcomes {
                if let VersionOutcome::Started(model) = outcome {
                    let slot = record.versions.entry(version).or_insert(VersionSlot {
                        state: ModelState::Ready,
                        reason: String::new(),
                        model: None,
                        files: None,
                    });
                    slot.state = ModelState::Ready;
                    if let Some(old) = slot.model.replace(model) {
                        retired.push((version, old, false));
                    }
                    info!("successfully loaded '{name}' version {version}");
                }
            }
            let live: BTreeMap<i64, Fingerprint> = files.into_iter().collect();
            for (version, slot) in record.versions.iter_mut() {
                match live.get(version) {
                    Some(print) => {
                        slot.reason.clear();
                        slot.files = Some(print.clone());
                    }
                    None => {
                        if let Some(old) = slot.model.take() {
                            slot.state = ModelState::Unloading;
                            slot.files = None;
                            retired.push((*version, old, true));
                        }
                    }
                }
            }
            // The serving versions now come from `override_files` (or from
            // the repository): what the old ones came from goes with them.
            std::mem::replace(&mut record.override_dir, override_files)
        };
        for (version, old, removed) in retired {
            retire(old);
            if removed {
                info!("successfully unloaded '{name}' version {version}");
                let mut models = lock(&self.models);
                if let Some(slot) = models
                    .get_mut(name)
                    .and_then(|r| r.versions.get_mut(&version))
                {
                    slot.state = ModelState::Unavailable;
                    slot.reason = UNLOADED_REASON.to_owned();
                }
            }
        }
        drop(replaced_files);
    }

    /// Drops the versions a failed load started. Versions that were serving
    /// keep serving, with the load's error `e` as their reason; the others
    /// become UNAVAILABLE.
    fn abort(&self, name: &str, e: &Error, failed: &str, outcomes: Vec<(i64, VersionOutcome)>) {
        let mut dropped = Vec::new();
        {
            let mut models = lock(&self.models);
            let record = models.entry(name.to_owned()).or_default();
            for (version, outcome) in outcomes {
                let Some(slot) = record.versions.get_mut(&version) else {
                    continue;
                };
                if slot.model.is_none() {
                    slot.state = ModelState::Unavailable;
                    slot.reason = match &outcome {
                        VersionOutcome::Failed(e) => reason_of(e),
                        VersionOutcome::Started(_) => format!(
                            "Invalid argument: not loaded because the load of model '{name}' failed: {failed}"
                        ),
                    };
                }
                if let VersionOutcome::Started(model) = outcome {
                    dropped.push(model);
                }
            }
            for slot in record.versions.values_mut() {
                if slot.model.is_some() {
                    slot.state = ModelState::Ready;
                    slot.reason = reason_of(e);
                }
            }
        }
        for model in dropped {
            model.scheduler.shutdown();
        }
    }

    /// The ready model version a request is for: `version` `None` (or -1)
    /// means the highest ready version. An ensemble's version is ready only
    /// while its composing models are. Errors carry Triton's wording.
    pub fn get(&self, name: &str, version: Option<i64>) -> Result<Arc<LoadedModel>> {
        let models = lock(&self.models);
        lookup(&models, name, version, 0).unwrap_or_else(|| {
            // As Triton: a name the manager never had a version of is the
            // client's mistake (INVALID_ARG, 400), whether or not the
            // repository holds it; a model that had versions and has none
            // serving now is NOT_FOUND (404, "has no available versions").
            Err(Error::invalid_arg(format!(
                "Request for unknown model: '{name}' is not found"
            )))
        })
    }

    /// Whether that model version (or, for `None`, any version) is ready.
    pub fn ready(&self, name: &str, version: Option<i64>) -> bool {
        self.get(name, version).is_ok()
    }

    /// The ready versions of `name`, ascending.
    pub fn ready_versions(&self, name: &str) -> Vec<i64> {
        let models = lock(&self.models);
        models.get(name).map_or_else(Vec::new, |r| {
            r.versions
                .iter()
                .filter(|(_, s)| effective_state(&models, s).0 == ModelState::Ready)
                .map(|(&v, _)| v)
                .collect()
        })
    }

    /// Every ready model version, by name then version.
    pub fn ready_models(&self) -> Vec<Arc<LoadedModel>> {
        let guard = lock(&self.models);
        let models: &Models = &guard;
        let mut ready: Vec<(&String, i64, Arc<LoadedModel>)> = models
            .iter()
            .flat_map(|(name, record)| {
                record.versions.iter().filter_map(move |(&v, slot)| {
                    match (&slot.model, effective_state(models, slot).0) {
                        (Some(m), ModelState::Ready) => Some((name, v, Arc::clone(m))),
                        _ => None,
                    }
                })
            })
            .collect();
        ready.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        ready.into_iter().map(|(_, _, m)| m).collect()
    }

    /// Whether every model the manager should serve is ready: each version
    /// it tried to load is READY (serving, even when a later load of its
    /// model failed) or was deliberately unloaded, and no model failed
    /// before a version was tried. The server's strict readiness.
    pub fn all_ready(&self) -> bool {
        let models = lock(&self.models);
        models.values().all(|record| {
            record.failure.is_none()
                && record.versions.values().all(|s| {
                    effective_state(&models, s).0 == ModelState::Ready
                        || (s.state == ModelState::Unavailable && s.reason == UNLOADED_REASON)
                })
        })
    }

    /// The repository index: every model directory of every repository, one
    /// row per known version (or one row without a version for a model that
    /// was never loaded or failed before any version was tried). With
    /// `ready_only`, only READY versions.
    pub fn index(&self, ready_only: bool) -> Result<Vec<IndexEntry>> {
        let mut present = self.repository_models()?;
        let models = lock(&self.models);
        // Models serving from override files are listed too, including
        // those no repository holds.
        for (name, record) in models.iter() {
            if let Some(dir) = &record.override_dir {
                present
                    .entry(name.clone())
                    .or_insert_with(|| vec![dir.path().to_path_buf()]);
            }
        }
        let mut index = Vec::new();
        for (name, dirs) in present {
            let row = |version: Option<String>, state: &str, reason: &str| IndexEntry {
                name: name.clone(),
                version,
                state: state.to_owned(),
                reason: reason.to_owned(),
            };
            if dirs.len() > 1 {
                if !ready_only {
                    index.push(row(
                        None,
                        ModelState::Unavailable.as_str(),
                        DUPLICATE_REASON,
                    ));
                }
                continue;
            }
            match models.get(&name) {
                Some(record) if !record.versions.is_empty() => {
                    for (v, slot) in &record.versions {
                        let (state, reason) = effective_state(&models, slot);
                        if !ready_only || state == ModelState::Ready {
                            index.push(row(Some(v.to_string()), state.as_str(), &reason));
                        }
                    }
                }
                Some(ModelRecord {
                    failure: Some(failure),
                    ..
                }) if !ready_only => {
                    index.push(row(None, ModelState::Unavailable.as_str(), failure));
                }
                _ if !ready_only => index.push(row(None, "", "")),
                _ => {}
            }
        }
        Ok(index)
    }

    /// Rows for the startup table: (model, version, status), where status is
    /// `READY` or `<STATE>: <reason>`; version is `-` for a model that failed
    /// before any version was tried.
    pub fn model_table(&self) -> Vec<(String, String, String)> {
        let models = lock(&self.models);
        let mut rows = Vec::new();
        for (name, record) in models.iter() {
            if record.versions.is_empty() {
                if let Some(failure) = &record.failure {
                    rows.push((
                        name.clone(),
                        "-".to_owned(),
                        format!("UNAVAILABLE: {failure}"),
                    ));
                }
                continue;
            }
            for (v, slot) in &record.versions {
                let status = if slot.reason.is_empty() {
                    slot.state.as_str().to_owned()
                } else {
                    format!("{}: {}", slot.state.as_str(), slot.reason)
                };
                rows.push((name.clone(), v.to_string(), status));
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{ExecRequest, ModelInstance};
    use crate::core::{InferResponse, Tensor};
    use std::sync::Weak;
    use std::sync::atomic::AtomicUsize;

    /// Returns its input `IN` as `OUT`; refuses to create instances when the
    /// config parameter `fail` is set and to execute when `fail_execute`
    /// is; waits `delay_ms` (a config parameter) in each execution, and,
    /// with `rendezvous` set, for another execution with it set to be
    /// running too. Counts instance creations, live instances and
    /// executions.
    struct Echo {
        name: &'static str,
        counters: Arc<Counters>,
    }

    struct Counters {
        attempts: AtomicUsize,
        live: AtomicUsize,
        executed: AtomicUsize,
        rendezvous: std::sync::Barrier,
    }

    impl Default for Counters {
        fn default() -> Counters {
            Counters {
                attempts: AtomicUsize::default(),
                live: AtomicUsize::default(),
                executed: AtomicUsize::default(),
                rendezvous: std::sync::Barrier::new(2),
            }
        }
    }

    struct EchoInstance {
        counters: Arc<Counters>,
        delay: Duration,
        fail: bool,
        rendezvous: bool,
    }

    impl Drop for EchoInstance {
        fn drop(&mut self) {
            self.counters.live.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl ModelInstance for EchoInstance {
        fn execute(&mut self, request: &ExecRequest<'_>) -> Result<Vec<Tensor>> {
            self.counters.executed.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            if self.rendezvous {
                self.counters.rendezvous.wait();
            }
            if self.fail {
                return Err(Error::internal("execution refused (fail_execute)"));
            }
            let mut out = request.inputs[0].clone();
            out.name = "OUT".to_owned();
            Ok(vec![out])
        }
    }

    impl Backend for Echo {
        fn name(&self) -> &str {
            self.name
        }

        fn create_instance(
            &self,
            ctx: &ModelContext,
            _index: usize,
        ) -> Result<Box<dyn ModelInstance>> {
            self.counters.attempts.fetch_add(1, Ordering::SeqCst);
            let parameter = |name: &str| ctx.config.parameters.get(name).map(|p| &p.string_value);
            if let Some(p) = parameter("fail") {
                return Err(Error::invalid_arg(format!(
                    "model '{}' version {}: told to fail ({p})",
                    ctx.name, ctx.version
                )));
            }
            self.counters.live.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(EchoInstance {
                counters: Arc::clone(&self.counters),
                delay: Duration::from_millis(
                    parameter("delay_ms").map_or(0, |d| d.parse().unwrap()),
                ),
                fail: parameter("fail_execute").is_some(),
                rendezvous: parameter("rendezvous").is_some(),
            }))
        }
    }

    const IO: &str = r#"input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]"#;

    struct Repo {
        root: PathBuf,
        counters: Arc<Counters>,
    }

    impl Repo {
        fn new(test: &str) -> Repo {
            let root =
                std::env::temp_dir().join(format!("nereid-manager-{}-{test}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            Repo {
                root,
                counters: Arc::default(),
            }
        }

        fn model(&self, name: &str, config: Option<&str>, versions: &[i64]) -> &Repo {
            let dir = self.root.join(name);
            fs::create_dir_all(&dir).unwrap();
            if let Some(config) = config {
                fs::write(dir.join(CONFIG_FILE), config).unwrap();
            }
            for v in versions {
                fs::create_dir_all(dir.join(v.to_string())).unwrap();
            }
            self
        }

        fn echo(&self, name: &str) -> &Repo {
            self.model(name, Some(&format!("backend: \"echo\"\n{IO}")), &[1])
        }

        fn manager(&self, mode: ControlMode, startup: &[&str]) -> ModelManager {
            let mut registry = BackendRegistry::default();
            registry.register(Arc::new(Echo {
                name: "echo",
                counters: Arc::clone(&self.counters),
            }));
            let options = ManagerOptions {
                repositories: vec![self.root.clone()],
                control_mode: mode,
                startup_models: startup.iter().map(|s| s.to_string()).collect(),
                ..ManagerOptions::default()
            };
            ModelManager::new(options, registry).unwrap()
        }
    }

    impl Repo {
        fn live(&self) -> usize {
            self.counters.live.load(Ordering::SeqCst)
        }
    }

    impl Drop for Repo {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn entry(name: &str, version: Option<&str>, state: &str, reason: &str) -> IndexEntry {
        IndexEntry {
            name: name.to_owned(),
            version: version.map(str::to_owned),
            state: state.to_owned(),
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn mode_none_loads_everything_and_refuses_control() {
        let repo = Repo::new("none");
        repo.echo("simple")
            .model("bad", Some(&format!("backend: \"echo\" max_batch_size: -2\n{IO}")), &[1])
            .model("empty", Some(&format!("backend: \"echo\"\n{IO}")), &[])
            .model(
                "fails",
                Some(&format!(
                    "backend: \"echo\"\nparameters {{ key: \"fail\" value {{ string_value: \"on purpose\" }} }}\n{IO}"
                )),
                &[1],
            );
        let manager = repo.manager(ControlMode::None, &[]);
        let err = manager.start().unwrap_err();
        assert_eq!(err.message(), "failed to load all models");
        assert!(manager.ready("simple", None));
        assert!(!manager.all_ready());

        let table = manager.model_table();
        let status = |name: &str| {
            table
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, v, s)| (v.clone(), s.clone()))
                .unwrap()
        };
        assert_eq!(status("simple"), ("1".into(), "READY".into()));
        let (version, bad) = status("bad");
        assert_eq!(version, "-");
        assert!(
            bad.starts_with("UNAVAILABLE: Invalid argument: model 'bad' ("),
            "{bad}"
        );
        assert!(bad.contains("max_batch_size must be >= 0"), "{bad}");
        assert!(
            status("empty")
                .1
                .contains("at least one version must be available")
        );
        assert_eq!(
            status("fails"),
            (
                "1".into(),
                "UNAVAILABLE: Invalid argument: model 'fails' version 1: told to fail (on purpose)"
                    .into()
            )
        );

        let err = manager.load("simple", None).unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::Unavailable, CONTROL_DISABLED)
        );
        let err = manager.unload("simple", false).unwrap_err();
        assert_eq!(err.message(), CONTROL_DISABLED);
        assert_eq!(manager.poll().unwrap_err().message(), "polling is disabled");
        manager.shutdown();
        assert_eq!(repo.live(), 0);
    }

    #[test]
    fn explicit_load_get_unload() {
        let repo = Repo::new("explicit");
        repo.echo("simple").echo("other");
        let manager = repo.manager(ControlMode::Explicit, &[]);
        manager.start().unwrap();
        assert_eq!(
            manager.index(false).unwrap(),
            vec![entry("other", None, "", ""), entry("simple", None, "", "")]
        );
        assert!(manager.index(true).unwrap().is_empty());
        let err = manager.get("simple", None).unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (
                Code::InvalidArg,
                "Request for unknown model: 'simple' is not found"
            )
        );

        manager.load("simple", None).unwrap();
        assert_eq!(repo.live(), 1);
        let model = manager.get("simple", None).unwrap();
        assert_eq!((model.name.as_str(), model.version), ("simple", 1));
        assert_eq!(model.backend, "echo");
        assert!(Arc::ptr_eq(
            &model,
            &manager.get("simple", Some(1)).unwrap()
        ));
        let json: serde_json::Value = serde_json::from_str(&model.config_json).unwrap();
        assert_eq!(json["name"], "simple");
        assert_eq!(json["instance_group"][0]["kind"], "KIND_CPU");
        let err = manager.get("simple", Some(3)).unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (
                Code::NotFound,
                "Request for unknown model: 'simple' version 3 is not found"
            )
        );
        assert_eq!(
            manager.index(true).unwrap(),
            vec![entry("simple", Some("1"), "READY", "")]
        );
        assert!(manager.all_ready());

        // Loading an unchanged model keeps the running version.
        manager.load("simple", None).unwrap();
        assert!(Arc::ptr_eq(&model, &manager.get("simple", None).unwrap()));
        drop(model);

        manager.unload("simple", false).unwrap();
        assert_eq!(repo.live(), 0);
        let err = manager.get("simple", None).unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (
                Code::NotFound,
                "Request for unknown model: 'simple' has no available versions"
            )
        );
        let err = manager.get("simple", Some(1)).unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (
                Code::Unavailable,
                "Request for unknown model: 'simple' version 1 is not at ready state"
            )
        );
        assert_eq!(
            manager.index(false).unwrap(),
            vec![
                entry("other", None, "", ""),
                entry("simple", Some("1"), "UNAVAILABLE", "unloaded")
            ]
        );
        assert!(manager.all_ready());
        // Unloading what is not loaded is fine.
        manager.unload("other", false).unwrap();
        manager.unload("nonexistent", true).unwrap();
    }

    #[test]
    fn explicit_load_errors() {
        let repo = Repo::new("load-errors");
        repo.echo("simple");
        let manager = repo.manager(ControlMode::Explicit, &[]);
        let err = manager.load("missing", None).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArg);
        assert!(
            err.message()
                .starts_with("failed to load 'missing', failed to poll from model repository: no directory 'missing'"),
            "{}",
            err.message()
        );
        assert!(
            manager.all_ready(),
            "a missing model leaves readiness alone"
        );
        assert!(
            manager
                .index(false)
                .unwrap()
                .iter()
                .all(|e| e.name != "missing")
        );
        let err = manager.load("", None).unwrap_err();
        assert_eq!(
            err.message(),
            "Model name cannot be empty. Please enter a valid name to deploy."
        );
        let err = manager.load("../etc", None).unwrap_err();
        assert_eq!(
            err.message(),
            "invalid model name '../etc', model name must not contain path traversal characters"
        );
        let err = manager.load("simple", Some("{\"nme\": 1}")).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArg);
        assert!(
            err.message().starts_with(
                "failed to load 'simple', failed to poll from model repository: model 'simple' (config override): cannot parse JSON"
            ),
            "{}",
            err.message()
        );
        let err = manager
            .load("simple", Some(r#"{"name": "other", "backend": "echo"}"#))
            .unwrap_err();
        assert!(
            err.message()
                .contains("unexpected directory name 'simple' for model 'other'")
        );
        let index = manager.index(false).unwrap();
        assert_eq!(index.len(), 1);
        assert_eq!(index[0].state, "UNAVAILABLE");
        assert!(
            index[0].reason.contains("model 'simple' (config override)"),
            "{}",
            index[0].reason
        );
    }

    #[test]
    fn file_overrides_load_from_their_own_directory_until_replaced() {
        let repo = Repo::new("file-override");
        repo.echo("simple");
        let manager = repo.manager(ControlMode::Explicit, &[]);
        manager.load("simple", None).unwrap();
        let config = r#"{"backend":"echo","max_batch_size":2,
            "input":[{"name":"IN","data_type":"TYPE_FP32","dims":[-1]}],
            "output":[{"name":"OUT","data_type":"TYPE_FP32","dims":[-1]}]}"#;
        let files = vec![("file:3/weights.bin".to_owned(), vec![7u8; 3])];

        // Without `config` the files are refused and the model keeps serving.
        let e = manager.load_with_files("simple", None, &files).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArg);
        assert!(
            e.message()
                .starts_with("failed to load 'simple', failed to poll from model repository"),
            "{}",
            e.message()
        );
        assert_eq!(manager.get("simple", None).unwrap().version, 1);

        // With it, versions come from the files: version 3 replaces 1.
        manager
            .load_with_files("simple", Some(config), &files)
            .unwrap();
        let model = manager.get("simple", None).unwrap();
        assert_eq!((model.version, model.config.max_batch_size), (3, 2));
        let dir = model.model_path.clone();
        assert_ne!(dir, repo.root.join("simple"));
        assert_eq!(fs::read(dir.join("3/weights.bin")).unwrap(), vec![7u8; 3]);
        assert!(manager.get("simple", Some(1)).is_err());
        drop(model);

        // A failed override load removes its own files and keeps serving.
        let e = manager
            .load_with_files("simple", Some(r#"{"backend":"nope"}"#), &files)
            .unwrap_err();
        assert!(e.message().contains("nope"), "{}", e.message());
        assert_eq!(manager.get("simple", None).unwrap().version, 3);
        assert!(dir.is_dir());

        // A load without files goes back to the repository and removes the
        // override directory.
        manager.load("simple", None).unwrap();
        assert_eq!(manager.get("simple", None).unwrap().version, 1);
        assert!(!dir.exists());

        // A model no repository holds loads from files alone, shows in the
        // index, and its files go when it is unloaded.
        manager
            .load_with_files("fresh", Some(config), &files)
            .unwrap();
        let fresh = manager.get("fresh", None).unwrap().model_path.clone();
        assert!(
            manager
                .index(true)
                .unwrap()
                .contains(&entry("fresh", Some("3"), "READY", ""))
        );
        manager.unload("fresh", false).unwrap();
        assert!(!fresh.exists());
        assert!(matches!(manager.get("fresh", None), Err(e) if e.code() == Code::NotFound));

        // Shutdown removes what is left.
        manager
            .load_with_files("fresh", Some(config), &files)
            .unwrap();
        let fresh = manager.get("fresh", None).unwrap().model_path.clone();
        manager.shutdown();
        assert!(!fresh.exists());
    }

    #[test]
    fn override_reload_and_failed_reload_keeps_serving() {
        let repo = Repo::new("reload");
        repo.echo("simple");
        let manager = repo.manager(ControlMode::Explicit, &["simple"]);
        manager.start().unwrap();
        let first_config = Arc::clone(&manager.get("simple", None).unwrap().config);
        assert_eq!(first_config.max_batch_size, 0);
        let first = Arc::downgrade(&manager.get("simple", None).unwrap());

        let override_json = r#"{"backend":"echo","max_batch_size":4,
            "input":[{"name":"IN","data_type":"TYPE_FP32","dims":[-1]}],
            "output":[{"name":"OUT","data_type":"TYPE_FP32","dims":[-1]}]}"#;
        manager.load("simple", Some(override_json)).unwrap();
        let second = Arc::downgrade(&manager.get("simple", None).unwrap());
        assert_eq!(second.upgrade().unwrap().config.max_batch_size, 4);
        assert!(first.upgrade().is_none(), "the old version is gone");
        assert_eq!(repo.live(), 1, "old instance retired");

        let failing = r#"{"backend":"echo","parameters":{"fail":{"string_value":"x"}},
            "input":[{"name":"IN","data_type":"TYPE_FP32","dims":[-1]}],
            "output":[{"name":"OUT","data_type":"TYPE_FP32","dims":[-1]}]}"#;
        let err = manager.load("simple", Some(failing)).unwrap_err();
        assert_eq!(
            err.message(),
            "load failed for model 'simple': version 1 is at UNAVAILABLE state: Invalid argument: model 'simple' version 1: told to fail (x);"
        );
        let still = manager.get("simple", None).unwrap();
        assert!(Arc::ptr_eq(&still, &second.upgrade().unwrap()));
        drop(still);
        // The index keeps the serving version READY and says why the
        // latest load failed; readiness counts it as serving.
        assert_eq!(
            manager.index(false).unwrap(),
            vec![entry(
                "simple",
                Some("1"),
                "READY",
                &format!("Invalid argument: {}", err.message())
            )]
        );
        assert!(manager.all_ready());

        // A partial override is completed from the on-disk configuration.
        manager
            .load("simple", Some(r#"{"max_batch_size":"4"}"#))
            .unwrap();
        let partial = manager.get("simple", None).unwrap();
        assert_eq!(partial.config.max_batch_size, 4);
        assert_eq!(partial.config.backend, "echo");
        assert_eq!(partial.config.input, first_config.input);
        assert_eq!(partial.config.output, first_config.output);
        drop(partial);
        assert_eq!(
            manager.index(false).unwrap(),
            vec![entry("simple", Some("1"), "READY", "")],
            "a successful load clears the reason"
        );

        // Without an override the on-disk configuration comes back.
        manager.load("simple", None).unwrap();
        assert_eq!(
            manager.get("simple", None).unwrap().config.max_batch_size,
            0
        );
        manager.shutdown();
        assert_eq!(repo.live(), 0);
    }

    #[test]
    fn version_policies_select_and_retire_versions() {
        let repo = Repo::new("versions");
        repo.model(
            "multi",
            Some(&format!(
                "backend: \"echo\" version_policy {{ latest {{ num_versions: 2 }} }}\n{IO}"
            )),
            &[1, 2, 3],
        );
        let manager = repo.manager(ControlMode::Explicit, &["*"]);
        manager.start().unwrap();
        assert_eq!(manager.ready_versions("multi"), vec![2, 3]);
        assert_eq!(manager.get("multi", None).unwrap().version, 3);
        assert_eq!(manager.get("multi", Some(2)).unwrap().version, 2);

        let specific = r#"{"backend":"echo","version_policy":{"specific":{"versions":[1]}},
            "input":[{"name":"IN","data_type":"TYPE_FP32","dims":[-1]}],
            "output":[{"name":"OUT","data_type":"TYPE_FP32","dims":[-1]}]}"#;
        manager.load("multi", Some(specific)).unwrap();
        assert_eq!(manager.ready_versions("multi"), vec![1]);
        assert_eq!(
            manager.index(false).unwrap(),
            vec![
                entry("multi", Some("1"), "READY", ""),
                entry("multi", Some("2"), "UNAVAILABLE", "unloaded"),
                entry("multi", Some("3"), "UNAVAILABLE", "unloaded"),
            ]
        );
        assert_eq!(repo.live(), 1);
    }

    #[test]
    fn startup_wildcard_must_be_alone() {
        let repo = Repo::new("wildcard");
        let options = ManagerOptions {
            repositories: vec![repo.root.clone()],
            control_mode: ControlMode::Explicit,
            startup_models: vec!["*".into(), "simple".into()],
            ..ManagerOptions::default()
        };
        let err = ModelManager::new(options, BackendRegistry::default()).unwrap_err();
        assert_eq!(
            err.message(),
            "Wildcard model name '*' must be the ONLY startup model if specified at all."
        );
        let options = ManagerOptions {
            repositories: vec![repo.root.join("nope")],
            ..ManagerOptions::default()
        };
        assert!(ModelManager::new(options, BackendRegistry::default()).is_err());
    }

    #[test]
    fn duplicate_models_across_repositories() {
        let a = Repo::new("dup-a");
        let b = Repo::new("dup-b");
        a.echo("simple");
        b.echo("simple").echo("only_b");
        let options = ManagerOptions {
            repositories: vec![a.root.clone(), b.root.clone()],
            control_mode: ControlMode::Explicit,
            ..ManagerOptions::default()
        };
        let manager = ModelManager::new(options, {
            let mut r = BackendRegistry::default();
            r.register(Arc::new(Echo {
                name: "echo",
                counters: Arc::clone(&a.counters),
            }));
            r
        })
        .unwrap();
        let err = manager.load("simple", None).unwrap_err();
        assert!(
            err.message().contains(DUPLICATE_REASON),
            "{}",
            err.message()
        );
        manager.load("only_b", None).unwrap();
        assert_eq!(
            manager.index(false).unwrap(),
            vec![
                entry("only_b", Some("1"), "READY", ""),
                entry("simple", None, "UNAVAILABLE", DUPLICATE_REASON),
            ]
        );
    }

    #[test]
    fn missing_config_needs_auto_complete() {
        let repo = Repo::new("noconfig");
        repo.model("bare", None, &[1]);
        let mut manager = repo.manager(ControlMode::Explicit, &[]);
        // Auto-complete on: the configuration starts empty and the backend
        // is asked to complete it; 'echo' cannot, so validation explains.
        let err = manager.load("bare", None).unwrap_err();
        assert!(
            err.message()
                .contains("names neither a backend nor a platform"),
            "{}",
            err.message()
        );
        manager.options.auto_complete = false;
        let err = manager.load("bare", None).unwrap_err();
        assert!(
            err.message().contains("no config.pbtxt in"),
            "{}",
            err.message()
        );
    }

    /// An ensemble of one step running `simple` as `IN` -> `OUT`.
    fn pipeline(step_model: &str) -> String {
        format!(
            "platform: \"ensemble\"\nensemble_scheduling {{ step [ {{ model_name: \"{step_model}\" model_version: -1 input_map {{ key: \"IN\" value: \"IN\" }} output_map {{ key: \"OUT\" value: \"OUT\" }} }} ] }}\n{IO}"
        )
    }

    fn infer(model: &LoadedModel, value: f32) -> Result<InferResponse> {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut request = echo_request(value);
        request.model_name.clone_from(&model.name);
        model.scheduler.submit(
            request,
            Box::new(move |r| {
                tx.send(r).unwrap();
            }),
        );
        rx.recv().unwrap()
    }

    #[test]
    fn ensembles_follow_their_composing_models() {
        let repo = Repo::new("ensemble-lifecycle");
        repo.echo("simple")
            .model("pipeline", Some(&pipeline("simple")), &[1])
            .model("other", Some(&pipeline("simple")), &[1]);
        let manager = repo.manager(ControlMode::Explicit, &[]);
        manager.start().unwrap();
        // Loading the ensemble loads its composing model.
        manager.load("pipeline", None).unwrap();
        assert!(manager.ready("simple", None));
        let response = infer(&manager.get("pipeline", None).unwrap(), 2.5).unwrap();
        assert_eq!(response.model_name, "pipeline");
        assert_eq!(response.outputs[0].name, "OUT");
        assert_eq!(&response.outputs[0].data[..], &2.5f32.to_le_bytes());
        assert_eq!(manager.get("pipeline", None).unwrap().backend, "");
        assert_eq!(manager.composing("pipeline"), vec!["simple".to_owned()]);
        assert_eq!(manager.dependents("simple"), vec!["pipeline".to_owned()]);
        assert!(manager.composing("simple").is_empty());

        // Without its composing model the ensemble is not ready, and says why.
        manager.unload("simple", false).unwrap();
        assert!(!manager.ready("pipeline", None));
        assert!(!manager.all_ready());
        assert!(manager.ready_models().is_empty());
        let err = manager.get("pipeline", None).unwrap_err();
        assert_eq!(
            err.message(),
            "Request for unknown model: 'pipeline' has no available versions: composing model 'simple' is not ready"
        );
        assert!(manager.index(false).unwrap().contains(&entry(
            "pipeline",
            Some("1"),
            "UNAVAILABLE",
            "composing model 'simple' is not ready"
        )));
        manager.load("simple", None).unwrap();
        assert!(manager.ready("pipeline", None));
        assert!(manager.all_ready());

        // unload_dependents unloads composing models no other ensemble uses.
        manager.load("other", None).unwrap();
        manager.unload("pipeline", true).unwrap();
        assert!(!manager.ready("pipeline", None));
        assert!(manager.ready("simple", None));
        manager.unload("other", true).unwrap();
        assert!(!manager.ready("simple", None));
        assert_eq!(repo.live(), 0);
    }

    #[test]
    fn ensemble_loads_fail_with_the_step_named() {
        let repo = Repo::new("ensemble-errors");
        repo.echo("simple")
            .model("nowhere", Some(&pipeline("missing")), &[1])
            .model("loop_a", Some(&pipeline("loop_b")), &[1])
            .model("loop_b", Some(&pipeline("loop_a")), &[1])
            .model(
                "mistyped",
                Some(&pipeline("simple").replace("TYPE_FP32", "TYPE_INT32")),
                &[1],
            );
        let manager = repo.manager(ControlMode::Explicit, &[]);
        manager.start().unwrap();
        let message = |name: &str| manager.load(name, None).unwrap_err().message().to_owned();
        let nowhere = message("nowhere");
        assert!(
            nowhere.starts_with(
                "ensemble 'nowhere': composing model 'missing' failed to load: failed to load 'missing'"
            ),
            "{nowhere}"
        );
        assert_eq!(
            message("loop_a"),
            "ensemble 'loop_a': composing model 'loop_b' failed to load: ensemble 'loop_b': model 'loop_a' is among its own composing models (loop_a -> loop_b -> loop_a)"
        );
        assert!(!manager.ready("loop_b", None));
        assert_eq!(
            message("mistyped"),
            "ensemble 'mistyped': ensemble tensor 'IN': ensemble input 'IN' is TYPE_INT32 but step 1 'simple' input 'IN' takes TYPE_FP32"
        );
        assert!(manager.index(false).unwrap().contains(&entry(
            "mistyped",
            None,
            "UNAVAILABLE",
            "Invalid argument: ensemble 'mistyped': ensemble tensor 'IN': ensemble input 'IN' is TYPE_INT32 but step 1 'simple' input 'IN' takes TYPE_FP32"
        )));
    }

    #[test]
    fn ensemble_branches_run_at_the_same_time() {
        // Each branch's model waits in its execution for the other's: the
        // request completes only if both run at once.
        let repo = Repo::new("ensemble-branches");
        let meeting = |name: &str| {
            format!(
                "backend: \"echo\"\nparameters {{ key: \"rendezvous\" value {{ string_value: \"{name}\" }} }}\n{IO}"
            )
        };
        let branches = format!(
            "platform: \"ensemble\"\ninput [ {{ name: \"IN\" data_type: TYPE_FP32 dims: [ -1 ] }} ]\noutput [ {{ name: \"LEFT\" data_type: TYPE_FP32 dims: [ -1 ] }}, {{ name: \"RIGHT\" data_type: TYPE_FP32 dims: [ -1 ] }} ]\nensemble_scheduling {{ step [ {}, {} ] }}",
            "{ model_name: \"left\" model_version: -1 input_map { key: \"IN\" value: \"IN\" } output_map { key: \"OUT\" value: \"LEFT\" } }",
            "{ model_name: \"right\" model_version: -1 input_map { key: \"IN\" value: \"IN\" } output_map { key: \"OUT\" value: \"RIGHT\" } }",
        );
        repo.model("left", Some(&meeting("left")), &[1])
            .model("right", Some(&meeting("right")), &[1])
            .model("branches", Some(&branches), &[1]);
        let manager = repo.manager(ControlMode::Explicit, &["branches"]);
        manager.start().unwrap();
        let response = infer(&manager.get("branches", None).unwrap(), 4.0).unwrap();
        let names: Vec<&str> = response.outputs.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["LEFT", "RIGHT"]);
        assert_eq!(repo.counters.executed.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn ensembles_nest() {
        let repo = Repo::new("ensemble-nested");
        repo.echo("simple")
            .model("pipeline", Some(&pipeline("simple")), &[1])
            .model("outer", Some(&pipeline("pipeline")), &[1]);
        let manager = repo.manager(ControlMode::Explicit, &[]);
        manager.start().unwrap();
        manager.load("outer", None).unwrap();
        assert!(manager.ready("pipeline", None) && manager.ready("simple", None));
        let response = infer(&manager.get("outer", None).unwrap(), 1.0).unwrap();
        assert_eq!(&response.outputs[0].data[..], &1.0f32.to_le_bytes());
        manager.unload("simple", false).unwrap();
        assert!(!manager.ready("outer", None));
        manager.load("simple", None).unwrap();
        assert!(manager.ready("outer", None));
        manager.unload("outer", true).unwrap();
        assert!(!manager.ready("pipeline", None) && !manager.ready("simple", None));
        assert_eq!(repo.live(), 0);
    }

    fn write_config(repo: &Repo, name: &str, extra: &str) {
        fs::write(
            repo.root.join(name).join(CONFIG_FILE),
            format!("backend: \"echo\"\n{extra}\n{IO}"),
        )
        .unwrap();
    }

    #[test]
    fn poll_mode_follows_the_repository() {
        let repo = Repo::new("poll");
        repo.echo("simple");
        let mut manager = repo.manager(ControlMode::Poll, &[]);
        // Files written by this test are "young" at the real time and
        // settled two hours later: the outcome does not depend on timing.
        manager.options.poll_settle = Duration::from_secs(3600);
        let young = SystemTime::now;
        let settled = || SystemTime::now() + Duration::from_secs(7200);
        manager.start().unwrap();
        assert!(manager.ready("simple", None));
        assert_eq!(
            manager.load("simple", None).unwrap_err().message(),
            CONTROL_DISABLED
        );

        let first = Arc::downgrade(&manager.get("simple", None).unwrap());
        manager.poll_at(settled()).unwrap();
        manager.poll_at(settled()).unwrap();
        assert!(
            Weak::ptr_eq(
                &first,
                &Arc::downgrade(&manager.get("simple", None).unwrap())
            ),
            "an unchanged model is not reloaded"
        );

        // A new model is loaded at the second poll that sees it unchanged.
        repo.echo("added");
        manager.poll_at(settled()).unwrap();
        assert!(!manager.ready("added", None), "first sighting waits");
        manager.poll_at(settled()).unwrap();
        assert!(manager.ready("added", None));

        // A change is not acted on while its files are younger than the
        // settle interval, however many polls see it.
        write_config(&repo, "simple", "max_batch_size: 2");
        manager.poll_at(young()).unwrap();
        manager.poll_at(young()).unwrap();
        assert_eq!(
            manager.get("simple", None).unwrap().config.max_batch_size,
            0
        );
        manager.poll_at(settled()).unwrap();
        assert_eq!(
            manager.get("simple", None).unwrap().config.max_batch_size,
            2
        );
        assert!(first.upgrade().is_none(), "the old version was retired");
        assert_eq!(repo.live(), 2);

        // A broken reload keeps the old version serving, reports why, and
        // is not retried until the files change; other models still follow.
        write_config(&repo, "simple", "max_batch_size: -2");
        repo.echo("third");
        manager.poll_at(settled()).unwrap();
        manager.poll_at(settled()).unwrap();
        assert!(manager.ready("third", None), "polling goes on for others");
        assert_eq!(
            manager.get("simple", None).unwrap().config.max_batch_size,
            2
        );
        let index = manager.index(false).unwrap();
        let simple = index.iter().find(|e| e.name == "simple").unwrap();
        assert_eq!(
            (simple.version.as_deref(), simple.state.as_str()),
            (Some("1"), "READY")
        );
        assert!(
            simple.reason.contains("max_batch_size must be >= 0"),
            "{simple:?}"
        );
        assert!(manager.all_ready(), "the model still serves");
        let attempts = repo.counters.attempts.load(Ordering::SeqCst);
        write_config(
            &repo,
            "simple",
            "parameters { key: \"fail\" value { string_value: \"now\" } }",
        );
        manager.poll_at(settled()).unwrap();
        manager.poll_at(settled()).unwrap();
        let attempts_after_fail = repo.counters.attempts.load(Ordering::SeqCst);
        assert_eq!(
            attempts_after_fail,
            attempts + 1,
            "the failing version was tried once"
        );
        manager.poll_at(settled()).unwrap();
        manager.poll_at(settled()).unwrap();
        assert_eq!(
            repo.counters.attempts.load(Ordering::SeqCst),
            attempts_after_fail,
            "no retry while the files stay the same"
        );
        assert_eq!(
            manager.get("simple", None).unwrap().config.max_batch_size,
            2
        );

        // Fixed: reloaded, the reason cleared.
        write_config(&repo, "simple", "max_batch_size: 3");
        manager.poll_at(settled()).unwrap();
        manager.poll_at(settled()).unwrap();
        assert_eq!(
            manager.get("simple", None).unwrap().config.max_batch_size,
            3
        );
        assert!(
            manager
                .index(false)
                .unwrap()
                .iter()
                .all(|e| e.reason.is_empty()),
            "{:?}",
            manager.index(false)
        );

        // A new version directory follows the version policy (latest one).
        let v1 = Arc::downgrade(&manager.get("added", Some(1)).unwrap());
        fs::create_dir_all(repo.root.join("added").join("2")).unwrap();
        manager.poll_at(settled()).unwrap();
        manager.poll_at(settled()).unwrap();
        assert_eq!(manager.ready_versions("added"), vec![2]);
        assert!(v1.upgrade().is_none());
        // A change in one version leaves the other versions' instances be.
        write_config(
            &repo,
            "added",
            "version_policy { specific { versions: [ 1, 2 ] } }",
        );
        manager.poll_at(settled()).unwrap();
        manager.poll_at(settled()).unwrap();
        assert_eq!(manager.ready_versions("added"), vec![1, 2]);
        let (one, two) = (
            Arc::downgrade(&manager.get("added", Some(1)).unwrap()),
            Arc::downgrade(&manager.get("added", Some(2)).unwrap()),
        );
        fs::write(repo.root.join("added").join("2").join("weights"), "w").unwrap();
        manager.poll_at(settled()).unwrap();
        manager.poll_at(settled()).unwrap();
        assert!(one.upgrade().is_some(), "version 1 kept serving as it was");
        assert!(two.upgrade().is_none(), "version 2 was recreated");
        assert_eq!(manager.ready_versions("added"), vec![1, 2]);

        fs::remove_dir_all(repo.root.join("simple")).unwrap();
        manager.poll_at(young()).unwrap();
        assert!(
            !manager.ready("simple", None),
            "a removal is acted on at once"
        );
        assert!(
            manager
                .index(false)
                .unwrap()
                .iter()
                .all(|e| e.name != "simple")
        );
        manager.shutdown();
        assert_eq!(repo.live(), 0);
    }

    fn echo_request(value: f32) -> InferRequest {
        InferRequest {
            model_name: "simple".to_owned(),
            inputs: vec![
                Tensor::new(
                    "IN",
                    crate::core::DataType::Fp32,
                    vec![1],
                    bytes::Bytes::copy_from_slice(&value.to_le_bytes()),
                )
                .unwrap(),
            ],
            ..InferRequest::default()
        }
    }

    #[test]
    fn requests_in_flight_survive_reloads() {
        let repo = Repo::new("swap");
        repo.model(
            "simple",
            Some(&format!(
                "backend: \"echo\"\nparameters {{ key: \"delay_ms\" value {{ string_value: \"2\" }} }}\n{IO}"
            )),
            &[1],
        );
        let manager = repo.manager(ControlMode::Explicit, &["simple"]);
        manager.start().unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let answered = AtomicUsize::new(0);
        let failures = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for client in 0..3u8 {
                let (manager, stop, answered, failures) = (&manager, &stop, &answered, &failures);
                scope.spawn(move || {
                    let mut n = 0u16;
                    while !stop.load(Ordering::Acquire) {
                        n = n.wrapping_add(1);
                        let value = f32::from(n) + f32::from(client) * 1e5;
                        let model = match manager.get("simple", None) {
                            Ok(model) => model,
                            Err(e) => {
                                lock(failures).push(format!("lookup: {}", e.message()));
                                continue;
                            }
                        };
                        let (tx, rx) = std::sync::mpsc::channel();
                        model
                            .scheduler
                            .submit(echo_request(value), Box::new(move |r| tx.send(r).unwrap()));
                        drop(model);
                        match rx.recv_timeout(Duration::from_secs(60)) {
                            Ok(Ok(response))
                                if response.outputs[0].data[..] == value.to_le_bytes() =>
                            {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            other => lock(failures).push(format!("{other:?}")),
                        }
                    }
                });
            }
            for round in 0..6 {
                // Each override differs, so every round recreates the version.
                let config = format!(
                    r#"{{"parameters":{{"delay_ms":{{"string_value":"2"}},"round":{{"string_value":"{round}"}}}}}}"#
                );
                manager.load("simple", Some(&config)).unwrap();
                let current = manager.get("simple", None).unwrap();
                assert_eq!(
                    current.config.parameters["round"].string_value,
                    round.to_string()
                );
            }
            stop.store(true, Ordering::Release);
        });
        assert!(lock(&failures).is_empty(), "{:?}", lock(&failures));
        assert!(answered.load(Ordering::Relaxed) > 0);
        assert_eq!(repo.live(), 1, "every replaced version was shut down");

        // A caller that looked the old version up before the swap and
        // submits after it: the old version waits for it.
        let old = manager.get("simple", None).unwrap();
        std::thread::scope(|scope| {
            let loader = scope.spawn(|| manager.load("simple", None));
            while Arc::ptr_eq(&old, &manager.get("simple", None).unwrap()) {
                std::thread::yield_now();
            }
            assert!(
                !loader.is_finished(),
                "the swap waits for the old version's caller"
            );
            let (tx, rx) = std::sync::mpsc::channel();
            old.scheduler
                .submit(echo_request(7.0), Box::new(move |r| tx.send(r).unwrap()));
            drop(old);
            let response = rx.recv_timeout(Duration::from_secs(60)).unwrap().unwrap();
            assert_eq!(response.outputs[0].data[..], 7.0f32.to_le_bytes());
            loader.join().unwrap().unwrap();
        });
        assert_eq!(repo.live(), 1);
    }

    const WARMUP: &str = r#"model_warmup [ { name: "ones" count: 3
        inputs { key: "IN" value { data_type: TYPE_FP32 dims: [ 4 ] random_data: true } } } ]
instance_group [ { count: 2 kind: KIND_CPU } ]"#;

    #[test]
    fn warmup_runs_on_every_instance_before_ready() {
        let repo = Repo::new("warmup");
        repo.model("warm", Some(&format!("backend: \"echo\"\n{WARMUP}\n{IO}")), &[1])
            .model(
                "cold",
                Some(&format!(
                    "backend: \"echo\"\nparameters {{ key: \"fail_execute\" value {{ string_value: \"\" }} }}\n{WARMUP}\n{IO}"
                )),
                &[1],
            )
            .model(
                "invalid",
                Some(&format!(
                    "backend: \"echo\"\nmodel_warmup [ {{ name: \"w\" inputs {{ key: \"NOPE\" value {{ data_type: TYPE_FP32 dims: [ 1 ] zero_data: true }} }} }} ]\n{IO}"
                )),
                &[1],
            );
        let manager = repo.manager(ControlMode::Explicit, &[]);
        manager.load("warm", None).unwrap();
        assert!(manager.ready("warm", None));
        assert_eq!(
            repo.counters.executed.load(Ordering::SeqCst),
            6,
            "3 runs on each of 2 instances"
        );

        let err = manager.load("cold", None).unwrap_err();
        assert_eq!(
            err.message(),
            "load failed for model 'cold': version 1 is at UNAVAILABLE state: Internal: model 'cold' version 1: warmup sample 'ones' failed: execution refused (fail_execute);"
        );
        assert!(!manager.ready("cold", None));
        let index = manager.index(false).unwrap();
        let cold = index.iter().find(|e| e.name == "cold").unwrap();
        assert_eq!(cold.state, "UNAVAILABLE");
        assert!(
            cold.reason.contains("warmup sample 'ones' failed"),
            "{cold:?}"
        );

        let err = manager.load("invalid", None).unwrap_err();
        assert_eq!(
            err.message(),
            "model 'invalid': warmup sample 'w': input 'IN' is missing"
        );
        assert_eq!(repo.live(), 2, "only 'warm' has instances");
    }

    #[test]
    fn shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<ModelManager>();
        send_sync::<LoadedModel>();
    }

    #[test]
    fn control_mode_flags() {
        assert_eq!(ControlMode::from_flag("none"), Some(ControlMode::None));
        assert_eq!(ControlMode::from_flag("poll"), Some(ControlMode::Poll));
        assert_eq!(
            ControlMode::from_flag("explicit"),
            Some(ControlMode::Explicit)
        );
        assert_eq!(ControlMode::from_flag("EXPLICIT"), None);
    }
}
