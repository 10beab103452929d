//! The ONNX Runtime backend: `backend: "onnxruntime"` (or `platform:
//! "onnxruntime_onnx"`), serving `model.onnx` (or the configuration's
//! `default_model_filename`) from each version directory.
//!
//! ONNX Runtime's C API comes through the `ort` crate, loaded at run time:
//! nothing is downloaded or linked at build time. The shared library is
//! found, in this order, at `--onnxruntime-library` (or
//! `--backend-config=onnxruntime,library-path=...`), `$NEREID_ONNXRUNTIME_LIBRARY`,
//! `$ORT_DYLIB_PATH`, and the cache that `scripts/fetch-onnxruntime.sh`
//! fills (`${XDG_CACHE_HOME:-$HOME/.cache}/nereid/onnxruntime/<version>/`).
//! It is loaded once per process, by the first ONNX model that needs it; when
//! it cannot be found or loaded, that model is UNAVAILABLE with a message
//! naming the script, and every other model serves as usual.
//!
//! Auto-complete follows Triton's onnxruntime backend: when the
//! configuration lacks inputs or outputs, they are read from the model (names,
//! datatypes, dims); a model whose every input and output has a variable
//! first dimension batches, and gets `max_batch_size` = the
//! `default-max-batch-size` backend setting (4) when none is set, plus
//! `dynamic_batching { }` when that is above 1 and no scheduler is set.
//! Every instance checks the configuration against the model (names,
//! datatypes, dims), naming the tensor that differs; the inputs the
//! sequence batcher supplies (`sequence_batching`'s control inputs and
//! implicit states) count as configured, and state outputs are produced on
//! every run so the batcher can carry them to the sequence's next request.
//!
//! Each instance owns one ONNX Runtime session: `Session::run` needs the
//! session exclusively, so per-instance sessions let instances run in
//! parallel without a lock, as Triton's backend does by default. Session
//! options come from the configuration's `parameters`
//! (`intra_op_thread_count`, `inter_op_thread_count`, `execution_mode`,
//! `enable_mem_pattern`) and `optimization.graph.level`. KIND_GPU instances
//! use the CUDA execution provider on their device, with TensorRT in front
//! when `optimization.execution_accelerators.gpu_execution_accelerator`
//! names `tensorrt` (Triton's parameter names map to its options) and a
//! `cuda` accelerator's parameters passed to CUDA; a library built without
//! them (the `onnxruntime` wheel is CPU-only) fails the instance with a
//! message that says so.
//!
//! Tensors cross without copies where the API allows: inputs are handed to
//! ONNX Runtime as views of the request's bytes when they are aligned for
//! their element type, and outputs become [`Bytes`] that own ONNX Runtime's
//! buffers. BOOL and BYTES (ONNX strings) are converted element by element.
//!
//! Calls `core` and, for which group an instance index belongs to,
//! [`super::placements`] (a function of the configuration alone).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytemuck::Pod;
use bytes::Bytes;
use half::{bf16, f16};
use ort::environment::{Environment, GlobalThreadPoolOptions};
use ort::ep::{
    self, ArbitrarilyConfigurableExecutionProvider, ExecutionProvider, ExecutionProviderDispatch,
};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::{
    DynValue, Outlet, PrimitiveTensorElementType, Tensor as OrtTensor, TensorElementType,
    TensorRef, ValueType,
};

use super::{Backend, ExecRequest, ModelContext, ModelInstance};
use crate::core::proto::inference::model_config::SchedulingChoice;
use crate::core::proto::inference::model_instance_group::Kind as GroupKind;
use crate::core::proto::{ModelConfig, ModelDynamicBatching, ModelInput, ModelOutput};
use crate::core::tensor::{push_bytes_element, shape_to_string, split_bytes_elements};
use crate::core::{Code, DataType, Error, Result, Tensor};

/// The ONNX Runtime release `scripts/fetch-onnxruntime.sh` fetches and the
/// default cache location is named after. Any library of release 1.17 or
/// later works when named explicitly.
pub const ONNXRUNTIME_VERSION: &str = "1.31.1";

/// The script that fetches the library into the default cache location.
pub const FETCH_SCRIPT: &str = "scripts/fetch-onnxruntime.sh";

/// nereid's environment variable naming the library.
pub const LIBRARY_ENV: &str = "NEREID_ONNXRUNTIME_LIBRARY";

/// `ort`'s own environment variable naming the library, honoured too.
pub const ORT_LIBRARY_ENV: &str = "ORT_DYLIB_PATH";

/// Triton's default for the `default-max-batch-size` backend setting.
pub const DEFAULT_MAX_BATCH_SIZE: i32 = 4;

/// The backend's settings, from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnnxOptions {
    /// The library to load; `None` looks in the environment and the cache.
    pub library: Option<PathBuf>,
    /// `max_batch_size` auto-complete gives a model that can batch
    /// (`--backend-config=default-max-batch-size=N`).
    pub default_max_batch_size: i32,
    /// One pool of threads every session shares
    /// (`--backend-config=onnxruntime,enable-global-threadpool=1`); `None`
    /// gives each session its own, sized by the model's `parameters`.
    pub global_thread_pool: Option<ThreadCounts>,
}

/// Thread counts of ONNX Runtime's global pool; 0 lets ONNX Runtime choose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadCounts {
    /// Threads that parallelize within an operator
    /// (`--backend-config=onnxruntime,intra_op_thread_count=N`).
    pub intra_op: usize,
    /// Threads that run independent operators at once in parallel
    /// execution mode (`--backend-config=onnxruntime,inter_op_thread_count=N`).
    pub inter_op: usize,
}

impl Default for OnnxOptions {
    fn default() -> OnnxOptions {
        OnnxOptions {
            library: None,
            default_max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            global_thread_pool: None,
        }
    }
}

/// Where the library is looked for, and which setting chose that place.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LibraryLocation {
    path: PathBuf,
    /// The setting that named it, for messages.
    origin: String,
}

/// The default cache location of the pinned release's library, given the
/// values of `XDG_CACHE_HOME` and `HOME`.
fn default_library(xdg_cache_home: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    let cache = xdg_cache_home
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| h.join(".cache")))?;
    Some(
        cache
            .join("nereid/onnxruntime")
            .join(ONNXRUNTIME_VERSION)
            .join("libonnxruntime.so"),
    )
}

/// Resolves the library location from `options` and the environment as
/// `env` reads it (the first non-empty setting wins).
fn locate_library_with(
    options: &OnnxOptions,
    env: impl Fn(&str) -> Option<PathBuf>,
) -> Result<LibraryLocation> {
    if let Some(path) = &options.library {
        return Ok(LibraryLocation {
            path: path.clone(),
            origin: "--onnxruntime-library".to_owned(),
        });
    }
    let set = |name: &str| env(name).filter(|p| !p.as_os_str().is_empty());
    for name in [LIBRARY_ENV, ORT_LIBRARY_ENV] {
        if let Some(path) = set(name) {
            return Ok(LibraryLocation {
                path,
                origin: format!("${name}"),
            });
        }
    }
    default_library(set("XDG_CACHE_HOME"), set("HOME"))
        .map(|path| LibraryLocation {
            path,
            origin: "the default cache location".to_owned(),
        })
        .ok_or_else(|| {
            Error::unavailable(format!(
                "ONNX Runtime library not found: neither --onnxruntime-library, ${LIBRARY_ENV} nor ${ORT_LIBRARY_ENV} is set, and without $HOME there is no default cache location; run {FETCH_SCRIPT} with HOME set, or name a libonnxruntime.so with --onnxruntime-library"
            ))
        })
}

/// Where the library is looked for under `options` and this process's
/// environment.
fn locate_library(options: &OnnxOptions) -> Result<LibraryLocation> {
    locate_library_with(options, |name| std::env::var_os(name).map(PathBuf::from))
}

/// The loaded library: one per process, since ONNX Runtime allows one
/// environment and `ort` one library.
struct Runtime {
    env: Environment,
    library: PathBuf,
    /// Whether sessions share the environment's thread pool (and ignore
    /// per-model thread counts).
    shared_pool: bool,
}

static RUNTIME: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);

fn how_to_fetch() -> String {
    format!(
        "run {FETCH_SCRIPT} to download ONNX Runtime {ONNXRUNTIME_VERSION} (from the onnxruntime package on PyPI) into the default cache location, or name a libonnxruntime.so with --onnxruntime-library or ${LIBRARY_ENV}"
    )
}

/// The process's ONNX Runtime, loading the library on first use. A failed
/// load is not remembered: a later model load tries again (after the script
/// has fetched the library, say).
fn runtime(options: &OnnxOptions) -> Result<Arc<Runtime>> {
    let mut slot = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(rt) = slot.as_ref() {
        return Ok(Arc::clone(rt));
    }
    let location = locate_library(options)?;
    if !location.path.exists() {
        return Err(Error::unavailable(format!(
            "ONNX Runtime library not found: '{}' (from {}) does not exist; {}",
            location.path.display(),
            location.origin,
            how_to_fetch()
        )));
    }
    let mut builder = ort::init_from(&location.path)
        .map_err(|e| {
            Error::unavailable(format!(
                "cannot load the ONNX Runtime library '{}' (from {}): {e}; {}",
                location.path.display(),
                location.origin,
                how_to_fetch()
            ))
        })?
        .with_name("nereid");
    if let Some(threads) = options.global_thread_pool {
        let fail = |e| ort_error("cannot configure ONNX Runtime's global thread pool", e);
        let mut pool = GlobalThreadPoolOptions::default();
        if threads.intra_op > 0 {
            pool = pool.with_intra_threads(threads.intra_op).map_err(fail)?;
        }
        if threads.inter_op > 0 {
            pool = pool.with_inter_threads(threads.inter_op).map_err(fail)?;
        }
        builder = builder.with_global_thread_pool(pool);
    }
    let env = builder
        .build()
        .map_err(|e| ort_error("cannot create the ONNX Runtime environment", e))?;
    log::info!(
        "loaded ONNX Runtime from '{}' (from {})",
        location.path.display(),
        location.origin
    );
    let rt = Arc::new(Runtime {
        env,
        library: location.path,
        shared_pool: options.global_thread_pool.is_some(),
    });
    *slot = Some(Arc::clone(&rt));
    Ok(rt)
}

/// The process's ONNX Runtime environment, loading the library under
/// `options` on first use; the error says why it cannot be loaded and how to
/// fetch it. For code that drives `ort` directly beside this backend (a
/// process has one environment), such as the overhead benchmark.
pub fn environment(options: &OnnxOptions) -> Result<Environment> {
    runtime(options).map(|rt| rt.env.clone())
}

fn ort_error<R>(context: &str, e: ort::Error<R>) -> Error {
    Error::internal(format!("{context}: {e}"))
}

/// nereid's datatype for an ONNX tensor element type, if KServe has one.
fn datatype_of(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Bfloat16 => DataType::Bf16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

/// One model input or output as the ONNX graph declares it.
#[derive(Debug, Clone, PartialEq)]
struct ModelTensor {
    name: String,
    datatype: DataType,
    /// `-1` for a variable (symbolic or unknown) dimension.
    dims: Vec<i64>,
}

fn model_tensors(model: &str, kind: &str, outlets: &[Outlet]) -> Result<Vec<ModelTensor>> {
    outlets
        .iter()
        .map(|outlet| {
            let name = outlet.name();
            let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
                return Err(Error::invalid_arg(format!(
                    "model '{model}': {kind} '{name}' is {}, not a tensor; nereid serves tensor inputs and outputs only",
                    outlet.dtype()
                )));
            };
            let datatype = datatype_of(*ty).ok_or_else(|| {
                Error::invalid_arg(format!(
                    "model '{model}': {kind} '{name}' has ONNX element type {ty}, which has no KServe datatype"
                ))
            })?;
            Ok(ModelTensor {
                name: name.to_owned(),
                datatype,
                dims: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
            })
        })
        .collect()
}

/// The model file of `version_dir` under `config`.
fn model_file(config: &ModelConfig, version_dir: &Path) -> PathBuf {
    let name = if config.default_model_filename.is_empty() {
        "model.onnx"
    } else {
        config.default_model_filename.as_str()
    };
    version_dir.join(name)
}

/// The model file auto-complete reads: the one in the highest-numbered
/// version directory that has it.
fn newest_model_file(config: &ModelConfig, model_dir: &Path) -> Result<PathBuf> {
    let mut versions: Vec<(i64, PathBuf)> = std::fs::read_dir(model_dir)
        .map_err(|e| {
            Error::invalid_arg(format!(
                "cannot read model directory '{}': {e}",
                model_dir.display()
            ))
        })?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<i64>().ok()?;
            Some((version, entry.path()))
        })
        .collect();
    versions.sort_unstable_by_key(|&(v, _)| std::cmp::Reverse(v));
    versions
        .iter()
        .map(|(_, dir)| model_file(config, dir))
        .find(|file| file.is_file())
        .ok_or_else(|| {
            Error::invalid_arg(format!(
                "model '{}': no version directory of '{}' holds '{}' to complete the configuration from",
                config.name,
                model_dir.display(),
                model_file(config, Path::new("")).display()
            ))
        })
}

/// A configuration `parameters` value, parsed.
fn parameter<T: std::str::FromStr>(
    config: &ModelConfig,
    key: &str,
    what: &str,
) -> Result<Option<T>> {
    let Some(p) = config.parameters.get(key) else {
        return Ok(None);
    };
    p.string_value.trim().parse().map(Some).map_err(|_| {
        Error::invalid_arg(format!(
            "model '{}': parameter '{key}' must be {what}, found '{}'",
            config.name, p.string_value
        ))
    })
}

fn parse_bool_parameter(config: &ModelConfig, key: &str) -> Result<Option<bool>> {
    let Some(p) = config.parameters.get(key) else {
        return Ok(None);
    };
    match p.string_value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "on" | "yes" => Ok(Some(true)),
        "false" | "0" | "off" | "no" => Ok(Some(false)),
        _ => Err(Error::invalid_arg(format!(
            "model '{}': parameter '{key}' must be true or false, found '{}'",
            config.name, p.string_value
        ))),
    }
}

/// Session options from the configuration: threads (unless the sessions
/// share the global pool, as in Triton), execution mode, memory pattern,
/// `session.*` configuration entries and graph optimization level.
fn configure(
    config: &ModelConfig,
    shared_pool: bool,
    mut builder: SessionBuilder,
) -> Result<SessionBuilder> {
    let fail = |e| ort_error("cannot set ONNX Runtime session options", e);
    let count = "a thread count (0 lets ONNX Runtime choose)";
    let intra = parameter::<usize>(config, "intra_op_thread_count", count)?;
    let inter = parameter::<usize>(config, "inter_op_thread_count", count)?;
    if let Some(n) = intra.filter(|&n| n > 0 && !shared_pool) {
        builder = builder.with_intra_threads(n).map_err(fail)?;
    }
    if let Some(n) = inter.filter(|&n| n > 0 && !shared_pool) {
        builder = builder.with_inter_threads(n).map_err(fail)?;
    }
    match parameter::<i32>(config, "execution_mode", "0 (sequential) or 1 (parallel)")? {
        None | Some(0) => {}
        Some(1) => builder = builder.with_parallel_execution(true).map_err(fail)?,
        Some(other) => {
            return Err(Error::invalid_arg(format!(
                "model '{}': parameter 'execution_mode' must be 0 (sequential) or 1 (parallel), found {other}",
                config.name
            )));
        }
    }
    if let Some(enable) = parse_bool_parameter(config, "enable_mem_pattern")? {
        builder = builder.with_memory_pattern(enable).map_err(fail)?;
    }
    // ONNX Runtime's session configuration keys pass through by name, as
    // Triton passes `session.use_device_allocator_for_initializers`.
    for (key, value) in config
        .parameters
        .iter()
        .filter(|(k, _)| k.starts_with("session."))
    {
        builder = builder
            .with_config_entry(key, &value.string_value)
            .map_err(|e| {
                Error::invalid_arg(format!("model '{}': parameter '{key}': {e}", config.name))
            })?;
    }
    // Triton's levels: -1 basic, 1 extended, 2 none, anything else all.
    let level = match config.optimization.as_ref().and_then(|o| o.graph.as_ref()) {
        Some(g) if g.level == -1 => GraphOptimizationLevel::Level1,
        Some(g) if g.level == 1 => GraphOptimizationLevel::Level2,
        Some(g) if g.level == 2 => GraphOptimizationLevel::Disable,
        _ => GraphOptimizationLevel::All,
    };
    builder.with_optimization_level(level).map_err(fail)
}

/// The execution providers for an instance: none (CPU) unless it is a
/// KIND_GPU instance, which gets CUDA on its device, behind TensorRT when
/// the configuration asks for it.
fn execution_providers(
    config: &ModelConfig,
    rt: &Runtime,
    kind: GroupKind,
    device: Option<i32>,
) -> Result<Vec<ExecutionProviderDispatch>> {
    let accelerators = config
        .optimization
        .as_ref()
        .and_then(|o| o.execution_accelerators.as_ref());
    if let Some(cpu) = accelerators.and_then(|a| a.cpu_execution_accelerator.first()) {
        return Err(Error::unsupported(format!(
            "model '{}': cpu_execution_accelerator '{}' is not supported by nereid's onnxruntime backend; remove it to run on ONNX Runtime's CPU provider",
            config.name, cpu.name
        )));
    }
    if kind != GroupKind::Gpu {
        return Ok(Vec::new());
    }
    let device = device.unwrap_or(0);
    let unavailable = |provider: &str| {
        Error::unavailable(format!(
            "model '{}' has a KIND_GPU instance, but the ONNX Runtime library '{}' has no {provider} (the onnxruntime wheel is CPU-only); fetch a GPU build with NEREID_ONNXRUNTIME_PACKAGE=onnxruntime-gpu {FETCH_SCRIPT} and name it with --onnxruntime-library, or use KIND_CPU",
            config.name,
            rt.library.display()
        ))
    };
    let available = |available: ort::Result<bool>| {
        available.map_err(|e| ort_error("cannot list ONNX Runtime's execution providers", e))
    };
    let mut tensorrt: Option<ep::TensorRT> = None;
    let mut cuda = ep::CUDA::default().with_device_id(device);
    for accelerator in accelerators.map_or(&[][..], |a| &a.gpu_execution_accelerator[..]) {
        match accelerator.name.as_str() {
            "tensorrt" => {
                if !available(ep::TensorRT::is_available())? {
                    return Err(unavailable(ep::TensorRT::NAME));
                }
                let mut trt = ep::TensorRT::default().with_device_id(device);
                for (key, value) in &accelerator.parameters {
                    let (key, value) = tensorrt_option(&config.name, key, value)?;
                    trt = trt.with_arbitrary_config(key, value);
                }
                tensorrt = Some(trt);
            }
            // CUDA options go to ONNX Runtime by their own names.
            "cuda" => {
                for (key, value) in &accelerator.parameters {
                    cuda = cuda.with_arbitrary_config(key, value);
                }
            }
            other => {
                return Err(Error::unsupported(format!(
                    "model '{}': gpu_execution_accelerator '{other}' is not supported by nereid's onnxruntime backend (supported: tensorrt, cuda)",
                    config.name
                )));
            }
        }
    }
    if !available(ep::CUDA::is_available())? {
        return Err(unavailable(ep::CUDA::NAME));
    }
    // TensorRT first; CUDA runs what TensorRT does not take.
    let providers = tensorrt
        .map(|trt| trt.build().error_on_failure())
        .into_iter()
        .chain([cuda.build().error_on_failure()])
        .collect();
    Ok(providers)
}

/// A TensorRT execution provider option from one of Triton's
/// `gpu_execution_accelerator` parameters: `precision_mode` (FP32, FP16,
/// BF16, INT8), `max_workspace_size_bytes`, the `int8_*` calibration keys,
/// and every `trt_*` key as ONNX Runtime names it.
fn tensorrt_option(model: &str, key: &str, value: &str) -> Result<(String, String)> {
    let option = match key {
        "precision_mode" => match value.to_ascii_uppercase().as_str() {
            "FP32" => return Ok(("trt_fp16_enable".into(), "0".into())),
            "FP16" => "trt_fp16_enable",
            "BF16" => "trt_bf16_enable",
            "INT8" => "trt_int8_enable",
            _ => {
                return Err(Error::invalid_arg(format!(
                    "model '{model}': tensorrt precision_mode must be FP32, FP16, BF16 or INT8, found '{value}'"
                )));
            }
        },
        "max_workspace_size_bytes" => {
            return Ok(("trt_max_workspace_size".into(), value.into()));
        }
        "int8_calibration_table_name" | "int8_use_native_calibration_table" => {
            return Ok((format!("trt_{key}"), value.into()));
        }
        _ if key.starts_with("trt_") => return Ok((key.into(), value.into())),
        _ => {
            return Err(Error::invalid_arg(format!(
                "model '{model}': unknown tensorrt parameter '{key}' (precision_mode, max_workspace_size_bytes, int8_calibration_table_name, int8_use_native_calibration_table or a trt_* option)"
            )));
        }
    };
    Ok((option.into(), "1".into()))
}

/// Opens the model file in a session with the configuration's options.
fn open_session(
    rt: &Runtime,
    config: &ModelConfig,
    providers: Vec<ExecutionProviderDispatch>,
    file: &Path,
) -> Result<Session> {
    let builder = Session::builder(&rt.env)
        .map_err(|e| ort_error("cannot create an ONNX Runtime session", e))?;
    let mut builder = configure(config, rt.shared_pool, builder)?;
    if !providers.is_empty() {
        builder = builder.with_execution_providers(providers).map_err(|e| {
            Error::unavailable(format!(
                "model '{}': cannot enable the GPU execution providers: {e}",
                config.name
            ))
        })?;
    }
    if !file.is_file() {
        return Err(Error::not_found(format!(
            "model '{}': model file '{}' does not exist",
            config.name,
            file.display()
        )));
    }
    builder.commit_from_file(file).map_err(|e| {
        Error::invalid_arg(format!(
            "model '{}': ONNX Runtime cannot load '{}': {e}",
            config.name,
            file.display()
        ))
    })
}

/// Whether every input and output has a variable first dimension, Triton's
/// test for a model that can batch.
fn can_batch(inputs: &[ModelTensor], outputs: &[ModelTensor]) -> bool {
    inputs
        .iter()
        .chain(outputs)
        .all(|t| t.dims.first() == Some(&-1))
}

/// Configuration dims (and reshape) for a model tensor, the batch dimension
/// left out when the model batches. A scalar becomes `dims: [1]`, with an
/// empty reshape when batching (the configuration cannot say "scalar"
/// otherwise).
fn config_dims(t: &ModelTensor, max_batch_size: i32) -> (Vec<i64>, Option<Vec<i64>>) {
    let skip = usize::from(max_batch_size > 0);
    let dims: Vec<i64> = t.dims.iter().skip(skip).copied().collect();
    if dims.is_empty() {
        (vec![1], (max_batch_size > 0).then(Vec::new))
    } else {
        (dims, None)
    }
}

/// Fills what the configuration leaves out from the model, Triton's way.
fn complete(
    config: &mut ModelConfig,
    inputs: &[ModelTensor],
    outputs: &[ModelTensor],
    default_max_batch_size: i32,
) -> Result<()> {
    if can_batch(inputs, outputs) {
        if config.max_batch_size == 0 {
            config.max_batch_size = default_max_batch_size.max(0);
            log::warn!(
                "model '{}': auto-complete set max_batch_size to {} since the model can batch; set max_batch_size in config.pbtxt for another limit",
                config.name,
                config.max_batch_size
            );
        }
        if config.max_batch_size > 1 && config.scheduling_choice.is_none() {
            config.scheduling_choice = Some(SchedulingChoice::DynamicBatching(
                ModelDynamicBatching::default(),
            ));
        }
    } else if config.max_batch_size != 0 {
        return Err(Error::invalid_arg(format!(
            "model '{}': max_batch_size is {}, but the model cannot batch (every input and output needs a variable first dimension); set max_batch_size: 0",
            config.name, config.max_batch_size
        )));
    }
    let mbs = config.max_batch_size;
    let reshape = |shape: Option<Vec<i64>>| {
        shape.map(|shape| crate::core::proto::ModelTensorReshape { shape })
    };
    if config.input.is_empty() {
        config.input = inputs
            .iter()
            .map(|t| {
                let (dims, shape) = config_dims(t, mbs);
                ModelInput {
                    name: t.name.clone(),
                    data_type: t.datatype.config_enum(),
                    dims,
                    reshape: reshape(shape),
                    ..ModelInput::default()
                }
            })
            .collect();
    }
    if config.output.is_empty() {
        config.output = outputs
            .iter()
            .map(|t| {
                let (dims, shape) = config_dims(t, mbs);
                ModelOutput {
                    name: t.name.clone(),
                    data_type: t.datatype.config_enum(),
                    dims,
                    reshape: reshape(shape),
                    ..ModelOutput::default()
                }
            })
            .collect();
    }
    Ok(())
}

/// Checks one configured tensor against the model's: datatype, and dims
/// where the model fixes them.
fn check_tensor(
    model: &str,
    kind: &str,
    declared: &ModelTensor,
    config_type: i32,
    config_dims: &[i64],
    max_batch_size: i32,
) -> Result<()> {
    let name = &declared.name;
    let config_type = DataType::from_config_enum(config_type);
    if config_type != Some(declared.datatype) {
        return Err(Error::invalid_arg(format!(
            "model '{model}': configuration expects datatype {} for {kind} '{name}', the model has {}",
            config_type.map_or("TYPE_INVALID", DataType::config_name),
            declared.datatype.config_name()
        )));
    }
    if declared.dims.is_empty() {
        // A scalar: the configuration says [1] (with an empty reshape when
        // batching, which leaves only the batch dimension).
        return if config_dims.iter().all(|&d| d == 1) {
            Ok(())
        } else {
            Err(Error::invalid_arg(format!(
                "model '{model}': {kind} '{name}' is a scalar in the model, so the configuration must give dims [1], found {}",
                shape_to_string(config_dims)
            )))
        };
    }
    let model_dims: &[i64] = if max_batch_size > 0 {
        if declared.dims.first() != Some(&-1) {
            return Err(Error::invalid_arg(format!(
                "model '{model}': {kind} '{name}' has shape {} in the model, whose first dimension is not variable, so the model cannot batch; set max_batch_size: 0",
                shape_to_string(&declared.dims)
            )));
        }
        &declared.dims[1..]
    } else {
        &declared.dims
    };
    let fits = model_dims.len() == config_dims.len()
        && model_dims
            .iter()
            .zip(config_dims)
            .all(|(&m, &c)| m == -1 || m == c);
    if !fits {
        return Err(Error::invalid_arg(format!(
            "model '{model}': {kind} '{name}' has shape {} in the model{}, the configuration gives dims {}",
            shape_to_string(&declared.dims),
            if max_batch_size > 0 {
                " (batch dimension first)"
            } else {
                ""
            },
            shape_to_string(config_dims)
        )));
    }
    Ok(())
}

/// The model's tensor for a configured input or output (`kind`) of `name`,
/// checked against the configured datatype and dims (the reshape's when
/// there is one).
fn find_checked<'m>(
    model: &str,
    kind: &str,
    declared: &'m [ModelTensor],
    name: &str,
    config_type: i32,
    config_dims: &[i64],
    max_batch_size: i32,
) -> Result<&'m ModelTensor> {
    let tensor = declared.iter().find(|t| t.name == name).ok_or_else(|| {
        let names: Vec<String> = declared.iter().map(|t| format!("'{}'", t.name)).collect();
        Error::invalid_arg(format!(
            "model '{model}': configuration {kind} '{name}' is not an {kind} of the model (model {kind}s: {})",
            names.join(", ")
        ))
    })?;
    check_tensor(
        model,
        kind,
        tensor,
        config_type,
        config_dims,
        max_batch_size,
    )?;
    Ok(tensor)
}

/// How one configured input reaches the model.
#[derive(Debug)]
struct InputPlan {
    name: String,
    /// The model's shape without the batch dimension when the configuration
    /// reshapes, or the model takes a scalar; `None` passes the request's
    /// shape through.
    model_shape: Option<Vec<i64>>,
    batched: bool,
}

impl InputPlan {
    /// The shape ONNX Runtime gets for a request tensor of `shape`.
    fn shape_for(&self, shape: &[i64]) -> Result<Vec<i64>> {
        let Some(inner) = &self.model_shape else {
            return Ok(shape.to_vec());
        };
        let batch = if self.batched { &shape[..1] } else { &[][..] };
        let elements: i64 = shape[batch.len()..].iter().product();
        let known: i64 = inner.iter().filter(|&&d| d != -1).product();
        let mut out = batch.to_vec();
        for &d in inner {
            // The one variable dimension a reshape may keep takes whatever
            // the fixed ones leave.
            out.push(if d == -1 { elements / known.max(1) } else { d });
        }
        if out.iter().product::<i64>() != shape.iter().product::<i64>() {
            return Err(Error::invalid_arg(format!(
                "input '{}' of shape {} cannot be reshaped to the model's {}",
                self.name,
                shape_to_string(shape),
                shape_to_string(inner)
            )));
        }
        Ok(out)
    }
}

/// How one configured output leaves the model.
#[derive(Debug)]
struct OutputPlan {
    name: String,
    /// The configuration's dims, reported instead of the model's shape when
    /// the configuration reshapes or the model produces a scalar.
    config_dims: Option<Vec<i64>>,
    batched: bool,
}

impl OutputPlan {
    fn shape_for(&self, model_shape: &[i64]) -> Vec<i64> {
        let Some(dims) = &self.config_dims else {
            return model_shape.to_vec();
        };
        let mut out: Vec<i64> = if self.batched {
            model_shape.first().copied().into_iter().collect()
        } else {
            Vec::new()
        };
        let elements: i64 = model_shape[out.len()..].iter().product();
        let known: i64 = dims.iter().filter(|&&d| d != -1).product();
        out.extend(
            dims.iter()
                .map(|&d| if d == -1 { elements / known.max(1) } else { d }),
        );
        out
    }
}

/// The ONNX Runtime backend.
#[derive(Debug, Default)]
pub struct OnnxRuntime {
    options: OnnxOptions,
}

impl OnnxRuntime {
    /// A backend that loads the library per `options` on first use.
    pub fn new(options: OnnxOptions) -> OnnxRuntime {
        OnnxRuntime { options }
    }
}

impl Backend for OnnxRuntime {
    fn name(&self) -> &str {
        "onnxruntime"
    }

    fn auto_complete(&self, config: &mut ModelConfig, model_path: &Path) -> Result<()> {
        if !config.input.is_empty() && !config.output.is_empty() {
            return Ok(());
        }
        let rt = runtime(&self.options)?;
        let file = newest_model_file(config, model_path)?;
        let session = open_session(&rt, config, Vec::new(), &file)?;
        let inputs = model_tensors(&config.name, "input", session.inputs())?;
        let outputs = model_tensors(&config.name, "output", session.outputs())?;
        complete(
            config,
            &inputs,
            &outputs,
            self.options.default_max_batch_size,
        )
    }

    fn create_instance(&self, ctx: &ModelContext, index: usize) -> Result<Box<dyn ModelInstance>> {
        let rt = runtime(&self.options)?;
        let config = &ctx.config;
        let placement = super::placements(config)
            .into_iter()
            .nth(index)
            .ok_or_else(|| {
                Error::internal(format!(
                    "model '{}' has no instance {index} in its instance groups",
                    config.name
                ))
            })?;
        let providers = execution_providers(config, &rt, placement.kind, placement.device)?;
        let file = model_file(config, &ctx.version_path);
        let session = open_session(&rt, config, providers, &file)?;
        OnnxInstance::new(config, session)
            .map(|instance| Box::new(instance) as Box<dyn ModelInstance>)
    }
}

/// One instance: its own session and the plans derived from checking the
/// configuration against the model.
struct OnnxInstance {
    session: Session,
    inputs: Vec<InputPlan>,
    outputs: Vec<OutputPlan>,
    /// The implicit states' outputs the model has: produced on every run,
    /// since the sequence batcher reads them back whether or not the
    /// client asked for them.
    state_outputs: Vec<String>,
    /// The `memory.*` parameters: ONNX Runtime run configuration entries
    /// (`memory.enable_memory_arena_shrinkage`), set on every run.
    run_entries: Vec<(String, String)>,
}

impl OnnxInstance {
    fn new(config: &ModelConfig, session: Session) -> Result<OnnxInstance> {
        let model = config.name.as_str();
        let mbs = config.max_batch_size;
        let model_inputs = model_tensors(model, "input", session.inputs())?;
        let model_outputs = model_tensors(model, "output", session.outputs())?;
        let mut inputs = Vec::with_capacity(config.input.len());
        for input in &config.input {
            let dims = input.reshape.as_ref().map_or(&input.dims, |r| &r.shape);
            let declared = find_checked(
                model,
                "input",
                &model_inputs,
                &input.name,
                input.data_type,
                dims,
                mbs,
            )?;
            inputs.push(InputPlan {
                name: input.name.clone(),
                model_shape: match &input.reshape {
                    Some(r) => Some(r.shape.clone()),
                    None => declared.dims.is_empty().then(Vec::new),
                },
                batched: mbs > 0,
            });
        }
        // The sequence batcher's control and state inputs are the model's
        // too, though the configuration lists them elsewhere; a model may
        // leave out any of them (Triton's example models take only some).
        for supplied in super::supplied_inputs(config) {
            if config.input.iter().any(|i| i.name == supplied.name) {
                continue;
            }
            let Some(declared) = model_inputs.iter().find(|t| t.name == supplied.name) else {
                continue;
            };
            let config_type = supplied.datatype.map_or(0, DataType::config_enum);
            check_tensor(model, "input", declared, config_type, &supplied.dims, mbs)?;
            inputs.push(InputPlan {
                name: supplied.name,
                model_shape: declared.dims.is_empty().then(Vec::new),
                batched: mbs > 0,
            });
        }
        if let Some(missing) = model_inputs
            .iter()
            .find(|t| !inputs.iter().any(|i| i.name == t.name))
        {
            return Err(Error::invalid_arg(format!(
                "model '{model}': model input '{}' is missing from the configuration, which declares {} of the model's {} inputs",
                missing.name,
                inputs.len(),
                model_inputs.len()
            )));
        }
        let mut outputs = Vec::with_capacity(config.output.len());
        for output in &config.output {
            let dims = output.reshape.as_ref().map_or(&output.dims, |r| &r.shape);
            let declared = find_checked(
                model,
                "output",
                &model_outputs,
                &output.name,
                output.data_type,
                dims,
                mbs,
            )?;
            outputs.push(OutputPlan {
                name: output.name.clone(),
                config_dims: (output.reshape.is_some() || declared.dims.is_empty())
                    .then(|| output.dims.clone()),
                batched: mbs > 0,
            });
        }
        let run_entries = config
            .parameters
            .iter()
            .filter(|(k, _)| k.starts_with("memory."))
            .map(|(k, v)| (k.clone(), v.string_value.clone()))
            .collect();
        let state_outputs = super::state_outputs(config)
            .into_iter()
            .filter(|name| model_outputs.iter().any(|t| &t.name == name))
            .collect();
        Ok(OnnxInstance {
            session,
            inputs,
            outputs,
            state_outputs,
            run_entries,
        })
    }
}

impl ModelInstance for OnnxInstance {
    fn execute(&mut self, request: &ExecRequest<'_>) -> Result<Vec<Tensor>> {
        if request.cancel.is_cancelled() {
            return Err(Error::new(
                Code::Cancelled,
                "the request was cancelled before ONNX Runtime ran it",
            ));
        }
        let mut feeds: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(self.inputs.len());
        for plan in &self.inputs {
            let tensor = request.input(&plan.name)?;
            let shape = plan.shape_for(&tensor.shape)?;
            feeds.push((plan.name.as_str(), input_value(tensor, shape)?));
        }
        let wanted: Vec<&String> = request
            .outputs
            .iter()
            .chain(
                self.state_outputs
                    .iter()
                    .filter(|s| !request.outputs.contains(s)),
            )
            .collect();
        let mut selector = OutputSelector::no_default();
        for name in &wanted {
            selector = selector.with(name.as_str());
        }
        let mut options = RunOptions::new()
            .map_err(|e| ort_error("cannot create ONNX Runtime run options", e))?;
        for (key, value) in &self.run_entries {
            options
                .set(key, value)
                .map_err(|e| Error::invalid_arg(format!("model parameter '{key}': {e}")))?;
        }
        let options = options.with_outputs(selector);
        let mut produced = self
            .session
            .run_with_options(feeds, &options)
            .map_err(|e| Error::internal(format!("ONNX Runtime failed to run the model: {e}")))?;
        let mut outputs = Vec::with_capacity(wanted.len());
        for name in wanted {
            let plan = self.outputs.iter().find(|p| &p.name == name);
            let value = produced.remove(name.as_str()).ok_or_else(|| {
                Error::internal(format!("ONNX Runtime produced no output '{name}'"))
            })?;
            let ValueType::Tensor { shape, .. } = value.dtype() else {
                return Err(Error::internal(format!(
                    "ONNX Runtime output '{name}' is not a tensor"
                )));
            };
            let shape = match plan {
                Some(plan) => plan.shape_for(shape),
                None => shape.to_vec(),
            };
            let (datatype, data) = output_data(name, value)?;
            outputs.push(Tensor::new(name.clone(), datatype, shape, data)?);
        }
        Ok(outputs)
    }
}

/// An ONNX Runtime input over a nereid tensor of the model's `shape`.
fn input_value(tensor: &Tensor, shape: Vec<i64>) -> Result<SessionInputValue<'_>> {
    match tensor.datatype {
        DataType::Uint8 => numeric_input::<u8>(tensor, shape),
        DataType::Uint16 => numeric_input::<u16>(tensor, shape),
        DataType::Uint32 => numeric_input::<u32>(tensor, shape),
        DataType::Uint64 => numeric_input::<u64>(tensor, shape),
        DataType::Int8 => numeric_input::<i8>(tensor, shape),
        DataType::Int16 => numeric_input::<i16>(tensor, shape),
        DataType::Int32 => numeric_input::<i32>(tensor, shape),
        DataType::Int64 => numeric_input::<i64>(tensor, shape),
        DataType::Fp16 => numeric_input::<f16>(tensor, shape),
        DataType::Bf16 => numeric_input::<bf16>(tensor, shape),
        DataType::Fp32 => numeric_input::<f32>(tensor, shape),
        DataType::Fp64 => numeric_input::<f64>(tensor, shape),
        DataType::Bool => {
            // ONNX Runtime reads BOOL as one byte per element too, but Rust's
            // bool may only hold 0 or 1, so the bytes are checked and copied.
            let values = tensor
                .data
                .iter()
                .enumerate()
                .map(|(i, &b)| match b {
                    0 => Ok(false),
                    1 => Ok(true),
                    other => Err(Error::invalid_arg(format!(
                        "input '{}' element {i} is {other}, not a BOOL (0 or 1)",
                        tensor.name
                    ))),
                })
                .collect::<Result<Vec<bool>>>()?;
            owned(&tensor.name, OrtTensor::from_array((shape, values)))
        }
        DataType::Bytes => {
            // ONNX strings are C strings: each element is checked for UTF-8
            // (the API takes &str) and copied into the string tensor.
            let elements = split_bytes_elements(&tensor.data)?
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    String::from_utf8(e.to_vec()).map_err(|_| {
                        Error::invalid_arg(format!(
                            "input '{}' element {i} is not UTF-8 text, which an ONNX string tensor needs",
                            tensor.name
                        ))
                    })
                })
                .collect::<Result<Vec<String>>>()?;
            owned(
                &tensor.name,
                OrtTensor::from_string_array((shape, &elements[..])),
            )
        }
    }
}

fn owned<T: ort::value::IntoTensorElementType + std::fmt::Debug>(
    name: &str,
    tensor: ort::Result<OrtTensor<T>>,
) -> Result<SessionInputValue<'static>> {
    tensor
        .map(SessionInputValue::from)
        .map_err(|e| Error::invalid_arg(format!("input '{name}': {e}")))
}

/// A fixed-size input: a view of the request's bytes when they are aligned
/// for `T`, else one copy into an aligned buffer (a binary request body
/// packs tensors back to back, so an element may start at any byte).
fn numeric_input<T: PrimitiveTensorElementType + Pod + std::fmt::Debug>(
    tensor: &Tensor,
    shape: Vec<i64>,
) -> Result<SessionInputValue<'_>> {
    match bytemuck::try_cast_slice::<u8, T>(&tensor.data) {
        Ok(elements) => TensorRef::from_array_view((shape, elements))
            .map(SessionInputValue::from)
            .map_err(|e| Error::invalid_arg(format!("input '{}': {e}", tensor.name))),
        Err(_) => {
            let copy: Vec<T> = tensor
                .data
                .chunks_exact(size_of::<T>())
                .map(bytemuck::pod_read_unaligned)
                .collect();
            owned(&tensor.name, OrtTensor::from_array((shape, copy)))
        }
    }
}

/// An ONNX Runtime output tensor that backs a [`Bytes`]: the response reads
/// ONNX Runtime's buffer in place and frees it when the last slice goes.
struct OutputBuffer<T> {
    value: DynValue,
    element: std::marker::PhantomData<T>,
}

impl<T: PrimitiveTensorElementType + Pod> AsRef<[u8]> for OutputBuffer<T> {
    fn as_ref(&self) -> &[u8] {
        let (_, elements) = self
            .value
            .try_extract_tensor::<T>()
            .expect("the element type was checked when the buffer was made");
        bytemuck::cast_slice(elements)
    }
}

fn numeric_output<T: PrimitiveTensorElementType + Pod + Send + 'static>(
    name: &str,
    value: DynValue,
) -> Result<Bytes> {
    value
        .try_extract_tensor::<T>()
        .map_err(|e| Error::internal(format!("ONNX Runtime output '{name}': {e}")))?;
    Ok(Bytes::from_owner(OutputBuffer::<T> {
        value,
        element: std::marker::PhantomData,
    }))
}

/// The datatype and wire bytes of an output.
fn output_data(name: &str, value: DynValue) -> Result<(DataType, Bytes)> {
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(Error::internal(format!(
            "ONNX Runtime output '{name}' is not a tensor"
        )));
    };
    let ty = *ty;
    let datatype = datatype_of(ty).ok_or_else(|| {
        Error::internal(format!(
            "ONNX Runtime output '{name}' has element type {ty}, which has no KServe datatype"
        ))
    })?;
    let extract = |e| Error::internal(format!("ONNX Runtime output '{name}': {e}"));
    let data = match datatype {
        DataType::Uint8 => numeric_output::<u8>(name, value)?,
        DataType::Uint16 => numeric_output::<u16>(name, value)?,
        DataType::Uint32 => numeric_output::<u32>(name, value)?,
        DataType::Uint64 => numeric_output::<u64>(name, value)?,
        DataType::Int8 => numeric_output::<i8>(name, value)?,
        DataType::Int16 => numeric_output::<i16>(name, value)?,
        DataType::Int32 => numeric_output::<i32>(name, value)?,
        DataType::Int64 => numeric_output::<i64>(name, value)?,
        DataType::Fp16 => numeric_output::<f16>(name, value)?,
        DataType::Bf16 => numeric_output::<bf16>(name, value)?,
        DataType::Fp32 => numeric_output::<f32>(name, value)?,
        DataType::Fp64 => numeric_output::<f64>(name, value)?,
        DataType::Bool => {
            let (_, elements) = value.try_extract_tensor::<bool>().map_err(extract)?;
            elements
                .iter()
                .map(|&b| u8::from(b))
                .collect::<Vec<u8>>()
                .into()
        }
        DataType::Bytes => {
            let (_, strings) = value.try_extract_strings().map_err(extract)?;
            let mut raw = Vec::with_capacity(strings.iter().map(|s| s.len() + 4).sum());
            for s in &strings {
                push_bytes_element(&mut raw, s.as_bytes());
            }
            raw.into()
        }
    };
    Ok((datatype, data))
}

/// An ONNX model (`ModelProto` bytes) with one `Identity` node from
/// `INPUT0` to `OUTPUT0`, both of `datatype` and `dims` (`-1` for a variable
/// dimension): a model for tests and benchmarks that need one without the
/// `onnx` Python package. Opset 21, IR version 10.
pub fn identity_model(datatype: DataType, dims: &[i64]) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn int(out: &mut Vec<u8>, field: u64, v: i64) {
        varint(out, field << 3);
        varint(out, v as u64);
    }
    fn bytes(out: &mut Vec<u8>, field: u64, v: &[u8]) {
        varint(out, (field << 3) | 2);
        varint(out, v.len() as u64);
        out.extend_from_slice(v);
    }
    let elem_type = match datatype {
        DataType::Fp32 => 1,
        DataType::Uint8 => 2,
        DataType::Int8 => 3,
        DataType::Uint16 => 4,
        DataType::Int16 => 5,
        DataType::Int32 => 6,
        DataType::Int64 => 7,
        DataType::Bytes => 8,
        DataType::Bool => 9,
        DataType::Fp16 => 10,
        DataType::Fp64 => 11,
        DataType::Uint32 => 12,
        DataType::Uint64 => 13,
        DataType::Bf16 => 16,
    };
    // TypeProto { tensor_type: { elem_type, shape: { dim: [...] } } }
    let mut shape = Vec::new();
    for (i, &d) in dims.iter().enumerate() {
        let mut dim = Vec::new();
        if d < 0 {
            bytes(&mut dim, 2, format!("d{i}").as_bytes());
        } else {
            int(&mut dim, 1, d);
        }
        bytes(&mut shape, 1, &dim);
    }
    let mut tensor_type = Vec::new();
    int(&mut tensor_type, 1, elem_type);
    bytes(&mut tensor_type, 2, &shape);
    let mut type_proto = Vec::new();
    bytes(&mut type_proto, 1, &tensor_type);
    let value_info = |name: &str| {
        let mut v = Vec::new();
        bytes(&mut v, 1, name.as_bytes());
        bytes(&mut v, 2, &type_proto);
        v
    };
    let mut node = Vec::new();
    bytes(&mut node, 1, b"INPUT0");
    bytes(&mut node, 2, b"OUTPUT0");
    bytes(&mut node, 4, b"Identity");
    let mut graph = Vec::new();
    bytes(&mut graph, 1, &node);
    bytes(&mut graph, 2, b"identity");
    bytes(&mut graph, 11, &value_info("INPUT0"));
    bytes(&mut graph, 12, &value_info("OUTPUT0"));
    let mut opset = Vec::new();
    bytes(&mut opset, 1, b"");
    int(&mut opset, 2, 21);
    let mut model = Vec::new();
    int(&mut model, 1, 10);
    bytes(&mut model, 7, &graph);
    bytes(&mut model, 8, &opset);
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, datatype: DataType, dims: &[i64]) -> ModelTensor {
        ModelTensor {
            name: name.to_owned(),
            datatype,
            dims: dims.to_vec(),
        }
    }

    #[test]
    fn library_location_order() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| PathBuf::from(v))
            }
        };
        let explicit = OnnxOptions {
            library: Some(PathBuf::from("/opt/ort/libonnxruntime.so")),
            ..OnnxOptions::default()
        };
        let all = env(&[
            (LIBRARY_ENV, "/nereid.so"),
            (ORT_LIBRARY_ENV, "/ort.so"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(
            locate_library_with(&explicit, all).unwrap().path,
            PathBuf::from("/opt/ort/libonnxruntime.so")
        );
        let defaults = OnnxOptions::default();
        let found = locate_library_with(&defaults, all).unwrap();
        assert_eq!(
            (found.path, found.origin),
            (PathBuf::from("/nereid.so"), format!("${LIBRARY_ENV}"))
        );
        let ort_only = env(&[(LIBRARY_ENV, ""), (ORT_LIBRARY_ENV, "/ort.so")]);
        assert_eq!(
            locate_library_with(&defaults, ort_only).unwrap().path,
            PathBuf::from("/ort.so")
        );
        let home = locate_library_with(&defaults, env(&[("HOME", "/home/u")])).unwrap();
        assert_eq!(
            home.path,
            PathBuf::from(format!(
                "/home/u/.cache/nereid/onnxruntime/{ONNXRUNTIME_VERSION}/libonnxruntime.so"
            ))
        );
        let xdg = env(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg")]);
        assert!(
            locate_library_with(&defaults, xdg)
                .unwrap()
                .path
                .starts_with("/xdg/nereid/onnxruntime")
        );
        let nothing = locate_library_with(&defaults, env(&[])).unwrap_err();
        assert_eq!(nothing.code(), Code::Unavailable);
        assert!(nothing.message().contains(FETCH_SCRIPT));
    }

    #[test]
    fn auto_complete_batching_model() {
        let inputs = [
            tensor("x", DataType::Fp32, &[-1, 3]),
            tensor("s", DataType::Int64, &[-1]),
        ];
        let outputs = [tensor("y", DataType::Fp32, &[-1, 3])];
        let mut config = ModelConfig {
            name: "m".into(),
            ..ModelConfig::default()
        };
        complete(&mut config, &inputs, &outputs, DEFAULT_MAX_BATCH_SIZE).unwrap();
        assert_eq!(config.max_batch_size, 4);
        assert!(matches!(
            config.scheduling_choice,
            Some(SchedulingChoice::DynamicBatching(_))
        ));
        assert_eq!(config.input[0].dims, vec![3]);
        assert_eq!(config.input[0].data_type, DataType::Fp32.config_enum());
        assert_eq!(config.input[1].dims, vec![1]);
        assert_eq!(
            config.input[1].reshape.as_ref().unwrap().shape,
            Vec::<i64>::new()
        );
        assert_eq!(config.output[0].name, "y");
    }

    #[test]
    fn auto_complete_fixed_model_and_errors() {
        let inputs = [
            tensor("x", DataType::Bytes, &[2, -1]),
            tensor("k", DataType::Bool, &[]),
        ];
        let outputs = [tensor("y", DataType::Bytes, &[2, -1])];
        let mut config = ModelConfig {
            name: "m".into(),
            ..ModelConfig::default()
        };
        complete(&mut config, &inputs, &outputs, DEFAULT_MAX_BATCH_SIZE).unwrap();
        assert_eq!(config.max_batch_size, 0);
        assert!(config.scheduling_choice.is_none());
        assert_eq!(config.input[0].dims, vec![2, -1]);
        assert_eq!(config.input[1].dims, vec![1]);
        assert!(config.input[1].reshape.is_none());

        let mut batching = ModelConfig {
            name: "m".into(),
            max_batch_size: 8,
            ..ModelConfig::default()
        };
        let err = complete(&mut batching, &inputs, &outputs, 4).unwrap_err();
        assert!(err.message().contains("cannot batch"), "{}", err.message());

        // A configured max_batch_size of 1 keeps the default scheduler.
        let mut one = ModelConfig {
            name: "m".into(),
            max_batch_size: 1,
            ..ModelConfig::default()
        };
        let batchable = [tensor("x", DataType::Fp32, &[-1])];
        complete(&mut one, &batchable, &batchable, 4).unwrap();
        assert!(one.scheduling_choice.is_none());
    }

    #[test]
    fn config_checked_against_model() {
        let x = tensor("x", DataType::Fp32, &[-1, 3, -1]);
        let fp32 = DataType::Fp32.config_enum();
        assert!(check_tensor("m", "input", &x, fp32, &[3, 5], 4).is_ok());
        assert!(check_tensor("m", "input", &x, fp32, &[3, -1], 4).is_ok());
        let e = check_tensor("m", "input", &x, fp32, &[4, 5], 4).unwrap_err();
        assert!(e.message().contains("input 'x'") && e.message().contains("[4,5]"));
        let e =
            check_tensor("m", "input", &x, DataType::Int32.config_enum(), &[3, 5], 4).unwrap_err();
        assert!(e.message().contains("TYPE_INT32") && e.message().contains("TYPE_FP32"));
        assert!(check_tensor("m", "input", &x, fp32, &[-1, 3, 5], 0).is_ok());
        let fixed = tensor("f", DataType::Fp32, &[2, 3]);
        let e = check_tensor("m", "output", &fixed, fp32, &[3], 4).unwrap_err();
        assert!(e.message().contains("cannot batch"));
        let scalar = tensor("s", DataType::Fp32, &[]);
        assert!(check_tensor("m", "input", &scalar, fp32, &[1], 0).is_ok());
        assert!(check_tensor("m", "input", &scalar, fp32, &[2], 0).is_err());
    }

    #[test]
    fn tensorrt_options_map_tritons_names() {
        let opt = |k: &str, v: &str| tensorrt_option("m", k, v);
        assert_eq!(
            opt("precision_mode", "fp16").unwrap(),
            ("trt_fp16_enable".into(), "1".into())
        );
        assert_eq!(opt("precision_mode", "INT8").unwrap().0, "trt_int8_enable");
        assert_eq!(
            opt("precision_mode", "FP32").unwrap(),
            ("trt_fp16_enable".into(), "0".into())
        );
        assert!(opt("precision_mode", "FP8").is_err());
        assert_eq!(
            opt("max_workspace_size_bytes", "1073741824").unwrap(),
            ("trt_max_workspace_size".into(), "1073741824".into())
        );
        assert_eq!(
            opt("int8_calibration_table_name", "t").unwrap().0,
            "trt_int8_calibration_table_name"
        );
        assert_eq!(
            opt("trt_engine_cache_enable", "1").unwrap().0,
            "trt_engine_cache_enable"
        );
        assert!(
            opt("engine_cache", "1")
                .unwrap_err()
                .message()
                .contains("'engine_cache'")
        );
    }

    #[test]
    fn reshapes() {
        let plan = InputPlan {
            name: "x".into(),
            model_shape: Some(vec![2, -1]),
            batched: true,
        };
        assert_eq!(plan.shape_for(&[3, 8]).unwrap(), vec![3, 2, 4]);
        let scalar = InputPlan {
            name: "s".into(),
            model_shape: Some(Vec::new()),
            batched: false,
        };
        assert_eq!(scalar.shape_for(&[1]).unwrap(), Vec::<i64>::new());
        assert!(scalar.shape_for(&[2]).is_err());
        let out = OutputPlan {
            name: "y".into(),
            config_dims: Some(vec![1]),
            batched: true,
        };
        assert_eq!(out.shape_for(&[5]), vec![5, 1]);
        let flat = OutputPlan {
            name: "y".into(),
            config_dims: Some(vec![-1]),
            batched: false,
        };
        assert_eq!(flat.shape_for(&[2, 3]), vec![6]);
    }

    /// The backend with the library under this process's settings. These
    /// tests need the library (scripts/test.sh fetches it before `cargo
    /// test`); without it they fail, saying how to get it, rather than
    /// pass without having run.
    fn library() -> OnnxRuntime {
        if let Err(e) = environment(&OnnxOptions::default()) {
            panic!(
                "this test needs the ONNX Runtime library: run {FETCH_SCRIPT} first ({})",
                e.message()
            );
        }
        OnnxRuntime::default()
    }

    /// A model directory holding `identity_model(datatype, dims)` as
    /// version 1.
    fn model_dir(name: &str, datatype: DataType, dims: &[i64]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nereid-onnx-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("1")).unwrap();
        std::fs::write(dir.join("1/model.onnx"), identity_model(datatype, dims)).unwrap();
        dir
    }

    fn context(dir: &Path, config: ModelConfig) -> ModelContext {
        ModelContext {
            name: config.name.clone(),
            version: 1,
            model_path: dir.to_path_buf(),
            version_path: dir.join("1"),
            config: Arc::new(config),
        }
    }

    fn fp32(name: &str, shape: Vec<i64>, values: &[f32]) -> Tensor {
        Tensor::new(
            name,
            DataType::Fp32,
            shape,
            Bytes::copy_from_slice(bytemuck::cast_slice(values)),
        )
        .unwrap()
    }

    fn run(
        instance: &mut dyn ModelInstance,
        inputs: &[Tensor],
        cancel: &crate::core::CancelFlag,
    ) -> Result<Vec<Tensor>> {
        instance.execute(&ExecRequest {
            inputs,
            outputs: &["OUTPUT0".to_owned()],
            parameters: &crate::core::Parameters::default(),
            cancel,
            bindings: &crate::core::NO_BINDINGS,
        })
    }

    #[test]
    fn completes_loads_and_runs_an_identity_model() {
        let backend = library();
        let dir = model_dir("complete", DataType::Fp32, &[-1, 3]);
        let mut config = ModelConfig {
            name: "complete".into(),
            ..ModelConfig::default()
        };
        for (key, value) in [
            ("intra_op_thread_count", "1"),
            ("execution_mode", "1"),
            ("enable_mem_pattern", "false"),
            ("session.intra_op.allow_spinning", "0"),
            ("memory.enable_memory_arena_shrinkage", "cpu:0"),
        ] {
            let value = crate::core::proto::ModelParameter {
                string_value: value.into(),
            };
            config.parameters.insert(key.into(), value);
        }
        backend.auto_complete(&mut config, &dir).unwrap();
        assert_eq!(config.max_batch_size, DEFAULT_MAX_BATCH_SIZE);
        assert_eq!(config.input[0].name, "INPUT0");
        assert_eq!(config.input[0].dims, vec![3]);
        assert_eq!(config.output[0].name, "OUTPUT0");
        let ctx = context(&dir, config);
        let mut instance = backend.create_instance(&ctx, 0).unwrap();
        let cancel = crate::core::CancelFlag::default();

        let values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let out = run(
            &mut *instance,
            &[fp32("INPUT0", vec![2, 3], &values)],
            &cancel,
        )
        .unwrap();
        assert_eq!(out[0].shape, vec![2, 3]);
        assert_eq!(
            out[0].data,
            Bytes::copy_from_slice(bytemuck::cast_slice(&values))
        );

        // An input that starts at an odd address is copied, not refused.
        let mut raw = vec![0u8];
        raw.extend_from_slice(bytemuck::cast_slice(&values[..3]));
        let odd = Bytes::from(raw).slice(1..);
        let misaligned = Tensor::new("INPUT0", DataType::Fp32, vec![1, 3], odd.clone()).unwrap();
        let out = run(&mut *instance, &[misaligned], &cancel).unwrap();
        assert_eq!(out[0].data, odd);

        // Two requests batched by the default gather come back apart.
        let a = [fp32("INPUT0", vec![1, 3], &values[..3])];
        let b = [fp32("INPUT0", vec![1, 3], &values[3..])];
        let outputs = ["OUTPUT0".to_owned()];
        let parameters = crate::core::Parameters::default();
        let request = |inputs| ExecRequest {
            inputs,
            outputs: &outputs,
            parameters: &parameters,
            cancel: &cancel,
            bindings: &crate::core::NO_BINDINGS,
        };
        let results = instance.execute_batch(&[request(&a), request(&b)]);
        assert_eq!(results[0].as_ref().unwrap()[0].data, a[0].data);
        assert_eq!(results[1].as_ref().unwrap()[0].data, b[0].data);

        cancel.cancel();
        let e = run(&mut *instance, &a, &cancel).unwrap_err();
        assert_eq!(e.code(), Code::Cancelled);
    }

    #[test]
    fn instance_checks_config_against_model() {
        let backend = library();
        let dir = model_dir("mismatch", DataType::Int32, &[4]);
        let io = |name: &str, dt: DataType, dims: Vec<i64>| ModelInput {
            name: name.into(),
            data_type: dt.config_enum(),
            dims,
            ..ModelInput::default()
        };
        let output = ModelOutput {
            name: "OUTPUT0".into(),
            data_type: DataType::Int32.config_enum(),
            dims: vec![4],
            ..ModelOutput::default()
        };
        let config = |input: ModelInput| ModelConfig {
            name: "mismatch".into(),
            input: vec![input],
            output: vec![output.clone()],
            ..ModelConfig::default()
        };
        let err = |c: ModelConfig| {
            backend
                .create_instance(&context(&dir, c), 0)
                .err()
                .expect("the instance is refused")
        };
        let e = err(config(io("INPUT0", DataType::Fp32, vec![4])));
        assert!(
            e.message().contains("input 'INPUT0'") && e.message().contains("TYPE_FP32"),
            "{}",
            e.message()
        );
        let e = err(config(io("INPUT0", DataType::Int32, vec![5])));
        assert!(e.message().contains("[5]"), "{}", e.message());
        let e = err(config(io("OTHER", DataType::Int32, vec![4])));
        assert!(
            e.message().contains("'OTHER' is not an input"),
            "{}",
            e.message()
        );
        assert!(
            backend
                .create_instance(
                    &context(&dir, config(io("INPUT0", DataType::Int32, vec![4]))),
                    0
                )
                .is_ok()
        );
    }

    #[test]
    fn bad_parameters_are_refused() {
        let backend = library();
        let dir = model_dir("params", DataType::Fp32, &[2]);
        for (key, value, says) in [
            ("intra_op_thread_count", "many", "a thread count"),
            ("execution_mode", "3", "0 (sequential) or 1 (parallel)"),
            ("enable_mem_pattern", "maybe", "true or false"),
            (
                "session.no_such_entry_has_a_nul",
                "a\0b",
                "session.no_such_entry_has_a_nul",
            ),
        ] {
            let mut config = ModelConfig {
                name: "params".into(),
                ..ModelConfig::default()
            };
            backend.auto_complete(&mut config, &dir).unwrap();
            let value = crate::core::proto::ModelParameter {
                string_value: value.into(),
            };
            config.parameters.insert(key.into(), value);
            let e = backend
                .create_instance(&context(&dir, config), 0)
                .err()
                .unwrap();
            assert!(e.message().contains(says), "{key}: {}", e.message());
        }
    }

    #[test]
    fn gpu_instance_needs_a_gpu_build() {
        let backend = library();
        // The check is about the CPU-only build the fetch script gets by
        // default; a GPU build named instead has nothing to refuse.
        assert!(
            !ep::CUDA::is_available().unwrap_or(false),
            "this test needs the CPU-only ONNX Runtime of {FETCH_SCRIPT}; the library named has the CUDA provider"
        );
        let dir = model_dir("gpu", DataType::Fp32, &[2]);
        let mut config = ModelConfig {
            name: "gpu".into(),
            instance_group: vec![crate::core::proto::ModelInstanceGroup {
                name: "gpu".into(),
                kind: GroupKind::Gpu as i32,
                count: 1,
                gpus: vec![0],
                ..Default::default()
            }],
            ..ModelConfig::default()
        };
        backend.auto_complete(&mut config, &dir).unwrap();
        let e = backend
            .create_instance(&context(&dir, config), 0)
            .err()
            .unwrap();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(
            e.message().contains("CUDAExecutionProvider") && e.message().contains(FETCH_SCRIPT),
            "{}",
            e.message()
        );
    }
}
