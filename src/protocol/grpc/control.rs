//! The RPCs other than inference, each a function from its request message
//! to its response message over a [`Server`]: health, metadata, model
//! configuration, statistics, repository control, shared memory, trace and
//! log settings, and `grpc.health.v1.Health/Check`.
//!
//! Field checks and their wording follow Triton's gRPC front end; the
//! server itself already answers in Triton's words. The repository
//! functions block until the repository is done; the caller runs them off
//! the event loop.

use std::collections::BTreeMap;

use crate::core::proto::grpc::health::v1::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
};
use crate::core::proto::inference::cuda_shared_memory_status_response::RegionStatus as CudaRegion;
use crate::core::proto::inference::log_settings_request::setting_value::ParameterChoice as LogIn;
use crate::core::proto::inference::log_settings_response::SettingValue as LogValue;
use crate::core::proto::inference::log_settings_response::setting_value::ParameterChoice as LogOut;
use crate::core::proto::inference::model_metadata_response::TensorMetadata as TensorMessage;
use crate::core::proto::inference::model_repository_parameter::ParameterChoice as RepoParam;
use crate::core::proto::inference::repository_index_response::ModelIndex;
use crate::core::proto::inference::system_shared_memory_status_response::RegionStatus as SystemRegion;
use crate::core::proto::inference::trace_setting_response::SettingValue as TraceValue;
use crate::core::proto::inference::{
    CudaSharedMemoryRegisterRequest, CudaSharedMemoryRegisterResponse,
    CudaSharedMemoryStatusRequest, CudaSharedMemoryStatusResponse,
    CudaSharedMemoryUnregisterRequest, CudaSharedMemoryUnregisterResponse,
    SystemSharedMemoryRegisterRequest, SystemSharedMemoryRegisterResponse,
    SystemSharedMemoryStatusRequest, SystemSharedMemoryStatusResponse,
    SystemSharedMemoryUnregisterRequest, SystemSharedMemoryUnregisterResponse,
};
use crate::core::proto::inference::{
    InferBatchStatistics, InferStatistics, LogSettingsRequest, LogSettingsResponse,
    ModelConfigRequest, ModelConfigResponse, ModelMetadataRequest, ModelMetadataResponse,
    ModelReadyRequest, ModelReadyResponse, ModelStatistics, ModelStatisticsRequest,
    ModelStatisticsResponse, RepositoryIndexRequest, RepositoryIndexResponse,
    RepositoryModelLoadRequest, RepositoryModelLoadResponse, RepositoryModelUnloadRequest,
    RepositoryModelUnloadResponse, ServerLiveResponse, ServerMetadataResponse, ServerReadyResponse,
    StatisticDuration, TraceSettingRequest, TraceSettingResponse,
};
use crate::core::{Error, Result};
use crate::logging::{self, LogSettings};
use crate::protocol::kserve::control::trace_number;
use crate::protocol::kserve::decode::parse_leading_int;
use crate::scheduler::stats::StatDuration;
use crate::server::{
    Change, LogUpdate, Server, TensorMetadata, TraceLevel, TraceMode, TraceSettings, TraceUpdate,
};
use crate::shm::Kind;

use super::infer::parse_model_version;

/// The service name `grpc.health.v1` callers use for the inference service.
pub const INFERENCE_SERVICE: &str = "inference.GRPCInferenceService";

/// `ServerLive`.
pub fn server_live(server: &Server) -> Result<ServerLiveResponse> {
    Ok(ServerLiveResponse {
        live: server.is_live()?,
    })
}

/// `ServerReady`.
pub fn server_ready(server: &Server) -> Result<ServerReadyResponse> {
    Ok(ServerReadyResponse {
        ready: server.is_ready()?,
    })
}

/// `ModelReady`: an unknown model or version is an error, as in Triton.
pub fn model_ready(server: &Server, request: &ModelReadyRequest) -> Result<ModelReadyResponse> {
    let version = parse_model_version(&request.version)?;
    Ok(ModelReadyResponse {
        ready: server.model_ready(&request.name, version)?,
    })
}

/// `ServerMetadata`.
pub fn server_metadata(server: &Server) -> ServerMetadataResponse {
    let m = server.metadata();
    ServerMetadataResponse {
        name: m.name,
        version: m.version,
        extensions: m.extensions.iter().map(|e| (*e).to_owned()).collect(),
    }
}

fn tensor_message(t: TensorMetadata) -> TensorMessage {
    TensorMessage {
        name: t.name,
        datatype: t.datatype.to_owned(),
        shape: t.shape,
    }
}

/// `ModelMetadata`.
pub fn model_metadata(
    server: &Server,
    request: &ModelMetadataRequest,
) -> Result<ModelMetadataResponse> {
    let version = parse_model_version(&request.version)?;
    let m = server.model_metadata(&request.name, version)?;
    Ok(ModelMetadataResponse {
        name: m.name,
        versions: m.versions,
        platform: m.platform,
        inputs: m.inputs.into_iter().map(tensor_message).collect(),
        outputs: m.outputs.into_iter().map(tensor_message).collect(),
    })
}

/// `ModelConfig`: the configuration the version runs with.
pub fn model_config(server: &Server, request: &ModelConfigRequest) -> Result<ModelConfigResponse> {
    let version = parse_model_version(&request.version)?;
    let model = server.model(&request.name, version)?;
    Ok(ModelConfigResponse {
        config: Some(model.config.as_ref().clone()),
    })
}

/// `ModelStatistics`: one model's ready versions (optionally one version),
/// or, with an empty name, every ready model version. nereid has no
/// response cache and no decoupled models, so cache and per-response
/// statistics are zero and empty; memory usage is not tracked.
pub fn model_statistics(
    server: &Server,
    request: &ModelStatisticsRequest,
) -> Result<ModelStatisticsResponse> {
    let rows = if request.name.is_empty() {
        server.model_statistics(None, None)?
    } else {
        let version = parse_model_version(&request.version)?;
        server.model_statistics(Some(&request.name), version)?
    };
    let duration = |d: &StatDuration| {
        Some(StatisticDuration {
            count: d.count,
            ns: d.ns,
        })
    };
    let model_stats = rows
        .into_iter()
        .map(|(name, version, s)| ModelStatistics {
            name,
            version: version.to_string(),
            last_inference: s.last_inference_ms,
            inference_count: s.inference_count,
            execution_count: s.execution_count,
            inference_stats: Some(InferStatistics {
                success: duration(&s.success),
                fail: duration(&s.fail),
                queue: duration(&s.queue),
                compute_input: duration(&s.compute_input),
                compute_infer: duration(&s.compute_infer),
                compute_output: duration(&s.compute_output),
                cache_hit: duration(&s.cache_hit),
                cache_miss: duration(&s.cache_miss),
            }),
            batch_stats: s
                .batches
                .iter()
                .map(|(&batch_size, b)| InferBatchStatistics {
                    batch_size,
                    compute_input: duration(&b.compute_input),
                    compute_infer: duration(&b.compute_infer),
                    compute_output: duration(&b.compute_output),
                })
                .collect(),
            memory_usage: Vec::new(),
            response_stats: BTreeMap::new(),
        })
        .collect();
    Ok(ModelStatisticsResponse { model_stats })
}

/// `SystemSharedMemoryStatus`: one region or all of them.
pub fn system_shm_status(
    server: &Server,
    r: &SystemSharedMemoryStatusRequest,
) -> Result<SystemSharedMemoryStatusResponse> {
    let regions = server
        .shared_memory()
        .status(Kind::System, Some(&r.name))?
        .into_iter()
        .map(|s| {
            (
                s.name.clone(),
                SystemRegion {
                    name: s.name,
                    key: s.key,
                    offset: s.offset,
                    byte_size: s.byte_size,
                },
            )
        })
        .collect();
    Ok(SystemSharedMemoryStatusResponse { regions })
}

/// `SystemSharedMemoryRegister`.
pub fn system_shm_register(
    server: &Server,
    r: &SystemSharedMemoryRegisterRequest,
) -> Result<SystemSharedMemoryRegisterResponse> {
    server
        .shared_memory()
        .register_system(&r.name, &r.key, r.offset, r.byte_size)?;
    Ok(SystemSharedMemoryRegisterResponse {})
}

/// `SystemSharedMemoryUnregister`: one region, or all when the name is
/// empty.
pub fn system_shm_unregister(
    server: &Server,
    r: &SystemSharedMemoryUnregisterRequest,
) -> Result<SystemSharedMemoryUnregisterResponse> {
    server
        .shared_memory()
        .unregister(Kind::System, Some(&r.name))?;
    Ok(SystemSharedMemoryUnregisterResponse {})
}

/// `CudaSharedMemoryStatus`: one region or all of them.
pub fn cuda_shm_status(
    server: &Server,
    r: &CudaSharedMemoryStatusRequest,
) -> Result<CudaSharedMemoryStatusResponse> {
    let regions = server
        .shared_memory()
        .status(Kind::Cuda, Some(&r.name))?
        .into_iter()
        .map(|s| {
            (
                s.name.clone(),
                CudaRegion {
                    name: s.name,
                    device_id: u64::try_from(s.device_id).unwrap_or(0),
                    byte_size: s.byte_size,
                },
            )
        })
        .collect();
    Ok(CudaSharedMemoryStatusResponse { regions })
}

/// `CudaSharedMemoryRegister`: the handle travels as raw bytes.
pub fn cuda_shm_register(
    server: &Server,
    r: &CudaSharedMemoryRegisterRequest,
) -> Result<CudaSharedMemoryRegisterResponse> {
    server
        .shared_memory()
        .register_cuda(&r.name, &r.raw_handle, r.device_id, r.byte_size)?;
    Ok(CudaSharedMemoryRegisterResponse {})
}

/// `CudaSharedMemoryUnregister`: one region, or all when the name is
/// empty.
pub fn cuda_shm_unregister(
    server: &Server,
    r: &CudaSharedMemoryUnregisterRequest,
) -> Result<CudaSharedMemoryUnregisterResponse> {
    server
        .shared_memory()
        .unregister(Kind::Cuda, Some(&r.name))?;
    Ok(CudaSharedMemoryUnregisterResponse {})
}

fn check_repository_name(name: &str) -> Result<()> {
    if name.is_empty() {
        Ok(())
    } else {
        Err(Error::unsupported(
            "'repository_name' specification is not supported",
        ))
    }
}

/// `RepositoryIndex` (blocking).
pub fn repository_index(
    server: &Server,
    request: &RepositoryIndexRequest,
) -> Result<RepositoryIndexResponse> {
    check_repository_name(&request.repository_name)?;
    let models = server
        .repository_index(request.ready)?
        .into_iter()
        .map(|e| ModelIndex {
            name: e.name,
            version: e.version.unwrap_or_default(),
            state: e.state,
            reason: e.reason,
        })
        .collect();
    Ok(RepositoryIndexResponse { models })
}

/// `RepositoryModelLoad` (blocking): `config` overrides the configuration,
/// `file:<path>` parameters (bytes) replace the model's directory.
pub fn repository_load(
    server: &Server,
    request: &RepositoryModelLoadRequest,
) -> Result<RepositoryModelLoadResponse> {
    check_repository_name(&request.repository_name)?;
    let mut config = None;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (key, value) in &request.parameters {
        let choice = value.parameter_choice.as_ref();
        if key == "config" {
            match choice {
                Some(RepoParam::StringParam(s)) => config = Some(s.as_str()),
                _ => {
                    return Err(Error::invalid_arg(format!(
                        "invalid value type for load parameter '{key}', expected string_param."
                    )));
                }
            }
        } else if key.starts_with(crate::repository::overrides::FILE_PREFIX) {
            let Some(RepoParam::BytesParam(content)) = choice else {
                return Err(Error::invalid_arg(format!(
                    "invalid value type for load parameter '{key}', expected bytes_param."
                )));
            };
            files.push((key.clone(), content.clone()));
        } else {
            return Err(Error::invalid_arg(format!(
                "unrecognized load parameter '{key}'."
            )));
        }
    }
    server.load_model_files(&request.model_name, config, &files)?;
    Ok(RepositoryModelLoadResponse {})
}

/// `RepositoryModelUnload` (blocking): `unload_dependents` also unloads
/// an ensemble's composing models.
pub fn repository_unload(
    server: &Server,
    request: &RepositoryModelUnloadRequest,
) -> Result<RepositoryModelUnloadResponse> {
    check_repository_name(&request.repository_name)?;
    let unload_dependents = match request
        .parameters
        .get("unload_dependents")
        .map(|p| p.parameter_choice.as_ref())
    {
        None => false,
        Some(Some(RepoParam::BoolParam(b))) => *b,
        Some(_) => {
            return Err(Error::invalid_arg(
                "invalid value type for 'unload_dependents' parameter, expected bool_param.",
            ));
        }
    };
    server.unload_model(&request.model_name, unload_dependents)?;
    Ok(RepositoryModelUnloadResponse {})
}

/// `TraceSetting`: reads, and with settings updates, the global setting
/// or a model's.
pub fn trace_setting(
    server: &Server,
    request: &TraceSettingRequest,
) -> Result<TraceSettingResponse> {
    let model = (!request.model_name.is_empty()).then_some(request.model_name.as_str());
    // The model is checked first, as Triton does.
    let mut settings = server.trace_settings(model)?;
    if !request.settings.is_empty() {
        let update = trace_update(request)?;
        settings = server.update_trace_settings(model, &update)?;
    }
    Ok(trace_response(&settings))
}

fn trace_update(request: &TraceSettingRequest) -> Result<TraceUpdate> {
    let s = &request.settings;
    if s.contains_key("trace_file") {
        return Err(Error::unsupported(
            "trace file location can not be updated through network protocol",
        ));
    }
    let mut update = TraceUpdate::default();
    if let Some(level) = s.get("trace_level") {
        if level.value.is_empty() {
            update.level = Change::Clear;
        } else {
            let names = level.value.iter().map(|n| Ok(n.as_str()));
            if let Some(parsed) = TraceLevel::from_names(names, level.value.len())? {
                update.level = Change::Set(parsed);
            }
        }
    }
    let number = |key: &str, min: i64, max: i64| -> Result<Change<i64>> {
        let Some(v) = s.get(key) else {
            return Ok(Change::Keep);
        };
        match v.value.as_slice() {
            [] => Ok(Change::Clear),
            [text] => {
                if key == "trace_count" && parse_leading_int(text).is_some_and(|n| n < min) {
                    return Err(Error::invalid_arg(format!(
                        "Unable to parse '{key}'. Expecting value >= {min}, got: {text}"
                    )));
                }
                let value = serde_json::Value::String(text.clone());
                trace_number(key, &value, min, max).map(Change::Set)
            }
            _ => Err(Error::invalid_arg(format!(
                "expect only 1 value for '{key}'"
            ))),
        }
    };
    let narrow = |c: Change<i64>| match c {
        Change::Keep => Change::Keep,
        Change::Clear => Change::Clear,
        Change::Set(n) => Change::Set(u32::try_from(n).unwrap_or(u32::MAX)),
    };
    update.rate = narrow(number("trace_rate", 0, u32::MAX.into())?);
    update.count = match number("trace_count", -1, i32::MAX.into())? {
        Change::Keep => Change::Keep,
        Change::Clear => Change::Clear,
        Change::Set(n) => Change::Set(i32::try_from(n).unwrap_or(i32::MAX)),
    };
    update.log_frequency = narrow(number("log_frequency", 0, u32::MAX.into())?);
    Ok(update)
}

fn trace_response(s: &TraceSettings) -> TraceSettingResponse {
    let value = |v: Vec<String>| TraceValue { value: v };
    let mut settings = BTreeMap::new();
    settings.insert(
        "trace_level".to_owned(),
        value(s.level.names().iter().map(|n| (*n).to_owned()).collect()),
    );
    settings.insert("trace_rate".to_owned(), value(vec![s.rate.to_string()]));
    settings.insert("trace_count".to_owned(), value(vec![s.count.to_string()]));
    if s.mode == TraceMode::Triton {
        settings.insert(
            "log_frequency".to_owned(),
            value(vec![s.log_frequency.to_string()]),
        );
        settings.insert("trace_file".to_owned(), value(vec![s.file.clone()]));
    }
    settings.insert("trace_mode".to_owned(), value(vec![s.mode.to_string()]));
    TraceSettingResponse { settings }
}

/// `LogSettings`: reads, and with settings updates, the logging settings.
pub fn log_settings(server: &Server, request: &LogSettingsRequest) -> Result<LogSettingsResponse> {
    let settings = if request.settings.is_empty() {
        server.log_settings()
    } else {
        server.update_log_settings(log_update(request)?)?
    };
    Ok(log_response(&settings))
}

fn log_update(request: &LogSettingsRequest) -> Result<LogUpdate> {
    let s = &request.settings;
    let mut update = LogUpdate::default();
    if let Some(v) = s.get("log_file") {
        // Refused by the server; kept so it answers in its own words.
        update.log_file = Some(match &v.parameter_choice {
            Some(LogIn::StringParam(p)) => p.clone(),
            _ => String::new(),
        });
        return Ok(update);
    }
    let flag = |key: &str| -> Result<Option<bool>> {
        match s.get(key).map(|v| &v.parameter_choice) {
            None => Ok(None),
            Some(Some(LogIn::BoolParam(b))) => Ok(Some(*b)),
            Some(_) => Err(Error::invalid_arg(format!("expect boolean for '{key}'"))),
        }
    };
    update.log_info = flag("log_info")?;
    update.log_warning = flag("log_warning")?;
    update.log_error = flag("log_error")?;
    update.log_verbose_level = match s.get("log_verbose_level").map(|v| &v.parameter_choice) {
        None => None,
        Some(Some(LogIn::Uint32Param(n))) => Some(*n),
        Some(_) => {
            return Err(Error::invalid_arg("expect int32 for 'log_verbose_level'"));
        }
    };
    update.log_format = match s.get("log_format").map(|v| &v.parameter_choice) {
        None => None,
        Some(Some(LogIn::StringParam(f))) if logging::is_known_format(f) => Some(f.clone()),
        Some(Some(LogIn::StringParam(f))) => {
            return Err(Error::invalid_arg(format!(
                "invalid argument for log_format, got: {f}"
            )));
        }
        Some(_) => return Err(Error::invalid_arg("expect string for 'log_format'")),
    };
    Ok(update)
}

fn log_response(s: &LogSettings) -> LogSettingsResponse {
    let value = |c: LogOut| LogValue {
        parameter_choice: Some(c),
    };
    let settings = BTreeMap::from([
        (
            "log_file".to_owned(),
            value(LogOut::StringParam(s.log_file.clone())),
        ),
        ("log_info".to_owned(), value(LogOut::BoolParam(s.log_info))),
        (
            "log_warning".to_owned(),
            value(LogOut::BoolParam(s.log_warning)),
        ),
        (
            "log_error".to_owned(),
            value(LogOut::BoolParam(s.log_error)),
        ),
        (
            "log_verbose_level".to_owned(),
            value(LogOut::Uint32Param(s.log_verbose_level)),
        ),
        (
            "log_format".to_owned(),
            value(LogOut::StringParam(s.log_format.clone())),
        ),
    ]);
    LogSettingsResponse { settings }
}

/// `grpc.health.v1.Health/Check`: the server as a whole (`""`) and the
/// inference service are SERVING while the server is ready and
/// NOT_SERVING otherwise (shutdown included); any other service is
/// NOT_FOUND, as the health protocol asks.
pub fn health_check(server: &Server, request: &HealthCheckRequest) -> Result<HealthCheckResponse> {
    if !request.service.is_empty() && request.service != INFERENCE_SERVICE {
        return Err(Error::not_found(format!(
            "unknown service '{}'",
            request.service
        )));
    }
    let serving = matches!(server.is_ready(), Ok(true));
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    Ok(HealthCheckResponse {
        status: status as i32,
    })
}
