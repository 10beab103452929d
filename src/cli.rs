//! Command-line options, parsed by hand the way `tritonserver` users type
//! them: `--flag=value` and `--flag value`, booleans as
//! `true/false/1/0/on/off/yes/no` or bare, repeatable flags collected in
//! order. An unknown flag is not fatal: it is reported in
//! [`Options::warnings`] and the server starts anyway. A bad value (a port
//! that is not a number) is an error.
//!
//! Also here: Triton's startup options table ([`Options::table`],
//! [`format_table`]). May call `net`, `protocol` and [`crate::logging`] to
//! build their configurations.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::logging::{self, LogSettings};
use crate::net::{GrpcServerConfig, HttpConfig, TlsConfig};
use crate::protocol::grpc::{
    CompressionLevel, DEFAULT_MAX_MESSAGE_SIZE, GrpcConfig, RESTRICTED_HEADER_PREFIX,
};
use crate::protocol::restrict::Restrictions;
use crate::protocol::{http1, http2};

/// Repository served when no `--model-repository` is given.
pub const DEFAULT_MODEL_REPOSITORY: &str = "model_repository";
/// Default pinned host memory pool, as Triton's.
pub const DEFAULT_PINNED_POOL_BYTES: u64 = 256 * 1024 * 1024;
/// Default device memory pool per GPU, as Triton's.
pub const DEFAULT_CUDA_POOL_BYTES: u64 = 64 * 1024 * 1024;

/// How models get loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelControlMode {
    /// Everything in the repository at startup; no load/unload API.
    None,
    /// Only `--load-model` models at startup; load/unload through the API.
    Explicit,
    /// Everything at startup, then the repository is re-scanned every
    /// `--repository-poll-secs` and changed models are reloaded.
    Poll,
}

impl ModelControlMode {
    /// The name Triton prints in its options table.
    pub fn table_name(self) -> &'static str {
        match self {
            ModelControlMode::None => "MODE_NONE",
            ModelControlMode::Explicit => "MODE_EXPLICIT",
            ModelControlMode::Poll => "MODE_POLL",
        }
    }
}

/// Every option the server takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// `--model-repository` / `--model-store`, in order given.
    pub model_repositories: Vec<String>,
    /// `--http-port`.
    pub http_port: u16,
    /// `--http-address`.
    pub http_address: String,
    /// `--http-thread-count`; 0 means one event loop per core.
    pub http_thread_count: usize,
    /// `--allow-http`.
    pub allow_http: bool,
    /// `--http-max-header-bytes`: largest request head.
    pub http_max_header_bytes: usize,
    /// `--http-max-input-size` (alias `--http-max-body-bytes`): largest
    /// request body, before and after decompression.
    pub http_max_body_bytes: usize,
    /// `--http-body-timeout-secs`: time to send a request body, before
    /// `--http-min-body-rate` extends it.
    pub http_body_timeout_secs: u64,
    /// `--http-min-body-rate`: bytes per second of body that earn a second
    /// more; 0 for none.
    pub http_min_body_rate: u64,
    /// `--http-idle-timeout-secs`: keep-alive idle limit.
    pub http_idle_timeout_secs: u64,
    /// `--http-header-timeout-secs`: time to send a request head.
    pub http_header_timeout_secs: u64,
    /// `--grpc-port`.
    pub grpc_port: u16,
    /// `--grpc-address`.
    pub grpc_address: String,
    /// `--allow-grpc`.
    pub allow_grpc: bool,
    /// `--grpc-use-ssl`: serve gRPC over TLS.
    pub grpc_use_ssl: bool,
    /// `--grpc-use-ssl-mutual`: TLS with client certificates checked
    /// against `--grpc-root-cert` (implies `--grpc-use-ssl`).
    pub grpc_use_ssl_mutual: bool,
    /// `--grpc-server-cert`: PEM certificate chain.
    pub grpc_server_cert: String,
    /// `--grpc-server-key`: PEM private key.
    pub grpc_server_key: String,
    /// `--grpc-root-cert`: PEM roots for client certificates.
    pub grpc_root_cert: String,
    /// `--grpc-infer-response-compression-level`.
    pub grpc_infer_response_compression_level: CompressionLevel,
    /// `--grpc-max-message-size`: largest gRPC message taken or sent, in
    /// bytes.
    pub grpc_max_message_size: usize,
    /// `--http-use-ssl`: serve HTTPS on the HTTP port.
    pub http_use_ssl: bool,
    /// `--http-server-cert`: PEM certificate chain for HTTPS.
    pub http_server_cert: String,
    /// `--http-server-key`: PEM private key for HTTPS.
    pub http_server_key: String,
    /// `--metrics-port`.
    pub metrics_port: u16,
    /// `--metrics-address`; empty means the HTTP address.
    pub metrics_address: String,
    /// `--allow-metrics`.
    pub allow_metrics: bool,
    /// `--metrics-interval-ms`: how often CPU and memory are sampled.
    pub metrics_interval_ms: u64,
    /// `--model-control-mode`.
    pub model_control_mode: ModelControlMode,
    /// `--load-model`, in order given (`*` means all).
    pub load_models: Vec<String>,
    /// `--strict-readiness`.
    pub strict_readiness: bool,
    /// `--exit-on-error`.
    pub exit_on_error: bool,
    /// `--exit-timeout-secs`: how long shutdown waits for in-flight work.
    pub exit_timeout_secs: u64,
    /// `--repository-poll-secs`.
    pub repository_poll_secs: u64,
    /// `--log-verbose`.
    pub log_verbose: u32,
    /// `--log-info`.
    pub log_info: bool,
    /// `--log-warning`.
    pub log_warning: bool,
    /// `--log-error`.
    pub log_error: bool,
    /// `--log-format` (`default` or `ISO8601`).
    pub log_format: String,
    /// `--log-file`; empty means standard error.
    pub log_file: String,
    /// `--id`: the server id reported in metadata.
    pub server_id: String,
    /// `--strict-model-config`, or `--disable-auto-complete-config`.
    pub strict_model_config: bool,
    /// `--rate-limit` (`off` or `execution_count`).
    pub rate_limit: String,
    /// `--pinned-memory-pool-byte-size`.
    pub pinned_memory_pool_byte_size: u64,
    /// `--cuda-memory-pool-byte-size <gpu>:<bytes>`, in order given.
    pub cuda_memory_pool_byte_size: Vec<(u32, u64)>,
    /// `--memory-pool-exhaustion`: what a request does when the pinned or
    /// CUDA pool is full (`fallback`, `warn` or `fail`).
    pub memory_pool_exhaustion: String,
    /// `--allow-client-shm`: clients may register system and CUDA shared
    /// memory regions (off by default, as in Triton).
    pub allow_client_shm: bool,
    /// `--min-supported-compute-capability`.
    pub min_supported_compute_capability: f64,
    /// `--onnxruntime-library` (or `--backend-config=onnxruntime,library-path=...`):
    /// the ONNX Runtime shared library; empty looks in the environment and
    /// the fetch script's cache.
    pub onnxruntime_library: String,
    /// `--backend-config=default-max-batch-size=N`: the `max_batch_size`
    /// auto-complete gives a model that can batch.
    pub default_max_batch_size: i32,
    /// `--backend-config=onnxruntime,enable-global-threadpool=1`: every ONNX
    /// Runtime session shares one thread pool.
    pub onnxruntime_global_threadpool: bool,
    /// `--backend-config=onnxruntime,intra_op_thread_count=N` and
    /// `...,inter_op_thread_count=N`: the global pool's threads (0 = ONNX
    /// Runtime's choice).
    pub onnxruntime_thread_counts: (usize, usize),
    /// `--http-restricted-api` groups.
    pub http_restrictions: Restrictions,
    /// `--grpc-restricted-protocol` groups (headers prefixed as Triton's).
    pub grpc_restrictions: Restrictions,
    /// Problems that did not stop parsing (unknown flags, flags accepted
    /// for compatibility only); log them once logging is up.
    pub warnings: Vec<String>,
}

impl Default for Options {
    fn default() -> Options {
        let http = http1::Config::default();
        Options {
            model_repositories: Vec::new(),
            http_port: 8000,
            http_address: "0.0.0.0".to_owned(),
            http_thread_count: 0,
            allow_http: true,
            http_max_header_bytes: http.max_header_bytes,
            http_max_body_bytes: http.max_body_bytes,
            http_body_timeout_secs: http.body_timeout.as_secs(),
            http_min_body_rate: http.min_body_rate,
            http_idle_timeout_secs: http.idle_timeout.as_secs(),
            http_header_timeout_secs: http.header_timeout.as_secs(),
            grpc_port: 8001,
            grpc_address: "0.0.0.0".to_owned(),
            allow_grpc: true,
            grpc_use_ssl: false,
            grpc_use_ssl_mutual: false,
            grpc_server_cert: String::new(),
            grpc_server_key: String::new(),
            grpc_root_cert: String::new(),
            grpc_infer_response_compression_level: CompressionLevel::None,
            grpc_max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            http_use_ssl: false,
            http_server_cert: String::new(),
            http_server_key: String::new(),
            metrics_port: 8002,
            metrics_address: String::new(),
            allow_metrics: true,
            metrics_interval_ms: 2000,
            model_control_mode: ModelControlMode::None,
            load_models: Vec::new(),
            strict_readiness: true,
            exit_on_error: true,
            exit_timeout_secs: 30,
            repository_poll_secs: 15,
            log_verbose: 0,
            log_info: true,
            log_warning: true,
            log_error: true,
            log_format: logging::FORMAT_DEFAULT.to_owned(),
            log_file: String::new(),
            server_id: "triton".to_owned(),
            strict_model_config: false,
            rate_limit: "off".to_owned(),
            pinned_memory_pool_byte_size: DEFAULT_PINNED_POOL_BYTES,
            cuda_memory_pool_byte_size: Vec::new(),
            memory_pool_exhaustion: "warn".to_owned(),
            allow_client_shm: false,
            min_supported_compute_capability: 6.0,
            onnxruntime_library: String::new(),
            default_max_batch_size: 4,
            onnxruntime_global_threadpool: false,
            onnxruntime_thread_counts: (0, 0),
            http_restrictions: Restrictions::default(),
            grpc_restrictions: Restrictions::default(),
            warnings: Vec::new(),
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run the server.
    Run(Box<Options>),
    /// Print [`usage`] and exit.
    Help,
    /// Print the version and exit.
    Version,
}

/// A command line that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

/// Flags `tritonserver` takes that nereid accepts and ignores for now.
/// Each takes a value.
const IGNORED_FLAGS: &[&str] = &[
    "backend-directory",
    "repoagent-directory",
    "model-load-thread-count",
    "model-load-retry-count",
    "model-namespacing",
    "model-config-name",
    "buffer-manager-thread-count",
    "host-policy",
    "rate-limit-resource",
    "trace-config",
    "trace-file",
    "trace-level",
    "trace-rate",
    "trace-count",
    "trace-log-frequency",
    "cache-config",
    "cache-directory",
    "response-cache-byte-size",
    "metrics-config",
    "allow-gpu-metrics",
    "allow-cpu-metrics",
    "allow-sagemaker",
    "allow-vertex-ai",
    "grpc-infer-allocation-pool-size",
    "grpc-keepalive-time",
    "grpc-keepalive-timeout",
    "grpc-http2-max-pings-without-data",
    "log-frequency",
];

/// Parses the arguments after the program name.
pub fn parse<I, S>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let mut o = Options::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(flag) = arg.strip_prefix("--") else {
            o.warnings.push(format!(
                "ignoring unexpected argument '{arg}' (options start with --)"
            ));
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (flag, None),
        };
        let mut args_left = Args {
            args: &args,
            next: &mut i,
            name,
            inline,
        };
        match name {
            "help" => return Ok(Command::Help),
            "version" => return Ok(Command::Version),
            "model-repository" | "model-store" => o.model_repositories.push(args_left.value()?),
            "http-port" => o.http_port = args_left.number("a port number (0-65535)")?,
            "http-address" => o.http_address = args_left.value()?,
            "http-thread-count" => {
                o.http_thread_count = args_left.number("a thread count")?;
                if o.http_thread_count == 0 {
                    return Err(CliError(
                        "--http-thread-count must be at least 1".to_owned(),
                    ));
                }
            }
            "allow-http" => o.allow_http = args_left.flag()?,
            "http-max-header-bytes" => {
                o.http_max_header_bytes = args_left.number("a byte count")?
            }
            "http-max-input-size" | "http-max-body-bytes" => {
                // Triton's check and wording (its tests look for them).
                let size: i64 = args_left.number("a byte count")?;
                o.http_max_body_bytes = usize::try_from(size)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| CliError(format!("Error: --{name} must be greater than 0.")))?;
            }
            "http-body-timeout-secs" => o.http_body_timeout_secs = args_left.number("seconds")?,
            "http-min-body-rate" => o.http_min_body_rate = args_left.number("bytes per second")?,
            "http-idle-timeout-secs" => o.http_idle_timeout_secs = args_left.number("seconds")?,
            "http-header-timeout-secs" => {
                o.http_header_timeout_secs = args_left.number("seconds")?
            }
            "grpc-port" => o.grpc_port = args_left.number("a port number (0-65535)")?,
            "grpc-address" => o.grpc_address = args_left.value()?,
            "allow-grpc" => o.allow_grpc = args_left.flag()?,
            "grpc-use-ssl" => o.grpc_use_ssl = args_left.flag()?,
            "grpc-use-ssl-mutual" => o.grpc_use_ssl_mutual = args_left.flag()?,
            "grpc-server-cert" => o.grpc_server_cert = args_left.value()?,
            "grpc-server-key" => o.grpc_server_key = args_left.value()?,
            "grpc-root-cert" => o.grpc_root_cert = args_left.value()?,
            "grpc-infer-response-compression-level" => {
                let v = args_left.value()?;
                o.grpc_infer_response_compression_level =
                    CompressionLevel::parse(&v.to_ascii_lowercase()).ok_or_else(|| {
                        CliError(format!(
                            "invalid value '{v}' for --grpc-infer-response-compression-level: \
                             expected none, low, medium or high"
                        ))
                    })?;
            }
            "http-restricted-api" => o
                .http_restrictions
                .add_group(&args_left.value()?, "", "api")
                .map_err(|e| CliError(format!("--{name}: {e}")))?,
            "grpc-restricted-protocol" => o
                .grpc_restrictions
                .add_group(&args_left.value()?, RESTRICTED_HEADER_PREFIX, "protocol")
                .map_err(|e| CliError(format!("--{name}: {e}")))?,
            "grpc-max-message-size" => {
                o.grpc_max_message_size = args_left.number("a byte count")?;
                if o.grpc_max_message_size == 0 {
                    return Err(CliError(
                        "--grpc-max-message-size must be at least 1".to_owned(),
                    ));
                }
            }
            "http-use-ssl" => o.http_use_ssl = args_left.flag()?,
            "http-server-cert" => o.http_server_cert = args_left.value()?,
            "http-server-key" => o.http_server_key = args_left.value()?,
            "metrics-port" => o.metrics_port = args_left.number("a port number (0-65535)")?,
            "metrics-address" => o.metrics_address = args_left.value()?,
            "allow-metrics" => o.allow_metrics = args_left.flag()?,
            "metrics-interval-ms" => {
                o.metrics_interval_ms = args_left.number("milliseconds")?;
                if o.metrics_interval_ms == 0 {
                    return Err(CliError(
                        "--metrics-interval-ms must be at least 1".to_owned(),
                    ));
                }
            }
            "model-control-mode" => {
                let v = args_left.value()?;
                o.model_control_mode = match v.to_ascii_lowercase().as_str() {
                    "none" => ModelControlMode::None,
                    "explicit" => ModelControlMode::Explicit,
                    "poll" => ModelControlMode::Poll,
                    _ => {
                        return Err(CliError(format!(
                            "invalid value '{v}' for --model-control-mode: expected none, explicit or poll"
                        )));
                    }
                };
            }
            "load-model" => o.load_models.push(args_left.value()?),
            "strict-readiness" => o.strict_readiness = args_left.flag()?,
            "exit-on-error" => o.exit_on_error = args_left.flag()?,
            "exit-timeout-secs" => o.exit_timeout_secs = args_left.number("seconds")?,
            "repository-poll-secs" => o.repository_poll_secs = args_left.number("seconds")?,
            "log-verbose" => o.log_verbose = args_left.number("a verbose level")?,
            "log-info" => o.log_info = args_left.flag()?,
            "log-warning" => o.log_warning = args_left.flag()?,
            "log-error" => o.log_error = args_left.flag()?,
            "log-format" => {
                let v = args_left.value()?;
                o.log_format = match v.as_str() {
                    f if f.eq_ignore_ascii_case(logging::FORMAT_DEFAULT) => {
                        logging::FORMAT_DEFAULT.to_owned()
                    }
                    f if f.eq_ignore_ascii_case(logging::FORMAT_ISO8601) => {
                        logging::FORMAT_ISO8601.to_owned()
                    }
                    _ => {
                        return Err(CliError(format!(
                            "invalid value '{v}' for --log-format: expected default or ISO8601"
                        )));
                    }
                };
            }
            "log-file" => o.log_file = args_left.value()?,
            "id" => o.server_id = args_left.value()?,
            "strict-model-config" => o.strict_model_config = args_left.flag()?,
            "disable-auto-complete-config" => {
                if args_left.flag()? {
                    o.strict_model_config = true;
                }
            }
            "rate-limit" => {
                let v = args_left.value()?;
                o.rate_limit = match v.to_ascii_lowercase().as_str() {
                    "off" => "off".to_owned(),
                    "execution_count" => {
                        o.warnings.push(
                            "--rate-limit=execution_count is accepted but not enforced yet"
                                .to_owned(),
                        );
                        "execution_count".to_owned()
                    }
                    _ => {
                        return Err(CliError(format!(
                            "invalid value '{v}' for --rate-limit: expected off or execution_count"
                        )));
                    }
                };
            }
            "pinned-memory-pool-byte-size" => {
                o.pinned_memory_pool_byte_size = args_left.number("a byte count")?
            }
            "cuda-memory-pool-byte-size" => {
                let v = args_left.value()?;
                let parsed = v.split_once(':').and_then(|(gpu, bytes)| {
                    Some((gpu.trim().parse().ok()?, bytes.trim().parse().ok()?))
                });
                match parsed {
                    Some((gpu, bytes)) => {
                        o.cuda_memory_pool_byte_size.retain(|(g, _)| *g != gpu);
                        o.cuda_memory_pool_byte_size.push((gpu, bytes));
                    }
                    None => {
                        return Err(CliError(format!(
                            "invalid value '{v}' for --cuda-memory-pool-byte-size: expected <gpu>:<bytes>"
                        )));
                    }
                }
            }
            "memory-pool-exhaustion" => {
                let v = args_left.value()?;
                if !matches!(v.as_str(), "fallback" | "warn" | "fail") {
                    return Err(CliError(format!(
                        "invalid value '{v}' for --memory-pool-exhaustion: expected fallback, warn or fail"
                    )));
                }
                o.memory_pool_exhaustion = v;
            }
            "allow-client-shm" => o.allow_client_shm = args_left.flag()?,
            "min-supported-compute-capability" => {
                o.min_supported_compute_capability =
                    args_left.number("a compute capability such as 6.0")?;
            }
            "onnxruntime-library" => o.onnxruntime_library = args_left.value()?,
            "backend-config" => {
                let v = args_left.value()?;
                backend_config(&mut o, &v)?;
            }
            _ if IGNORED_FLAGS.contains(&name) => {
                args_left.optional_value();
                o.warnings.push(format!(
                    "--{name} is accepted for compatibility and has no effect yet"
                ));
            }
            _ => {
                let consumed = args_left.optional_value();
                o.warnings.push(match consumed {
                    Some(v) => format!("unknown option --{name} (value '{v}') ignored"),
                    None => format!("unknown option --{name} ignored"),
                });
            }
        }
    }
    if o.model_repositories.is_empty() {
        o.model_repositories
            .push(DEFAULT_MODEL_REPOSITORY.to_owned());
    }
    if o.grpc_use_ssl || o.grpc_use_ssl_mutual {
        if o.grpc_server_cert.is_empty() || o.grpc_server_key.is_empty() {
            return Err(CliError(
                "--grpc-use-ssl needs --grpc-server-cert and --grpc-server-key".to_owned(),
            ));
        }
        if o.grpc_use_ssl_mutual && o.grpc_root_cert.is_empty() {
            return Err(CliError(
                "--grpc-use-ssl-mutual needs --grpc-root-cert".to_owned(),
            ));
        }
    }
    if o.http_use_ssl && (o.http_server_cert.is_empty() || o.http_server_key.is_empty()) {
        return Err(CliError(
            "--http-use-ssl needs --http-server-cert and --http-server-key".to_owned(),
        ));
    }
    if !o.load_models.is_empty() && o.model_control_mode != ModelControlMode::Explicit {
        o.warnings.push(
            "--load-model has effect only with --model-control-mode=explicit; every model in the \
             repository is loaded"
                .to_owned(),
        );
    }
    Ok(Command::Run(Box::new(o)))
}

/// Applies one `--backend-config` value: `<backend>,<setting>=<value>`, or
/// `<setting>=<value>` for every backend, as Triton takes them. Settings
/// nereid has no use for are reported, not fatal.
fn backend_config(o: &mut Options, v: &str) -> Result<(), CliError> {
    let (backend, setting) = match v.split_once(',') {
        Some((backend, setting)) if !backend.contains('=') => (Some(backend), setting),
        _ => (None, v),
    };
    let Some((key, value)) = setting.split_once('=') else {
        return Err(CliError(format!(
            "invalid value '{v}' for --backend-config: expected <backend>,<setting>=<value> or <setting>=<value>"
        )));
    };
    let threads = || {
        value.trim().parse::<usize>().map_err(|_| {
            CliError(format!(
                "invalid value '{v}' for --backend-config: {key} must be a thread count"
            ))
        })
    };
    match (backend, key) {
        (Some("onnxruntime"), "library-path") => o.onnxruntime_library = value.to_owned(),
        (Some("onnxruntime"), "enable-global-threadpool") => {
            o.onnxruntime_global_threadpool = parse_bool(value).ok_or_else(|| {
                CliError(format!(
                    "invalid value '{v}' for --backend-config: enable-global-threadpool must be 0 or 1"
                ))
            })?;
        }
        (Some("onnxruntime"), "intra_op_thread_count") => {
            o.onnxruntime_thread_counts.0 = threads()?;
        }
        (Some("onnxruntime"), "inter_op_thread_count") => {
            o.onnxruntime_thread_counts.1 = threads()?;
        }
        (None | Some("onnxruntime"), "default-max-batch-size") => {
            o.default_max_batch_size = value
                .trim()
                .parse()
                .ok()
                .filter(|&n: &i32| n >= 0)
                .ok_or_else(|| {
                    CliError(format!(
                        "invalid value '{v}' for --backend-config: default-max-batch-size must be a batch size (0 or more)"
                    ))
                })?;
        }
        _ => o.warnings.push(format!(
            "--backend-config={v} is accepted for compatibility and has no effect"
        )),
    }
    Ok(())
}

/// The arguments still to be read, seen from one flag.
struct Args<'a> {
    args: &'a [String],
    next: &'a mut usize,
    name: &'a str,
    inline: Option<String>,
}

impl Args<'_> {
    /// The flag's value: after `=`, or the next argument.
    fn value(&mut self) -> Result<String, CliError> {
        if let Some(v) = self.inline.take() {
            return Ok(v);
        }
        match self.args.get(*self.next) {
            Some(v) => {
                *self.next += 1;
                Ok(v.clone())
            }
            None => Err(CliError(format!("--{} needs a value", self.name))),
        }
    }

    /// A value for a flag of unknown arity: after `=`, or the next argument
    /// when that is not itself a flag.
    fn optional_value(&mut self) -> Option<String> {
        if let Some(v) = self.inline.take() {
            return Some(v);
        }
        let v = self.args.get(*self.next).filter(|v| !v.starts_with("--"))?;
        *self.next += 1;
        Some(v.clone())
    }

    /// A boolean: bare means true; a value after `=` must be a boolean; a
    /// following argument is taken only when it is one.
    fn flag(&mut self) -> Result<bool, CliError> {
        if let Some(v) = self.inline.take() {
            return parse_bool(&v).ok_or_else(|| {
                CliError(format!(
                    "invalid value '{v}' for --{}: expected true or false",
                    self.name
                ))
            });
        }
        if let Some(b) = self.args.get(*self.next).and_then(|v| parse_bool(v)) {
            *self.next += 1;
            return Ok(b);
        }
        Ok(true)
    }

    /// A number of type `T`, described as `what` in the error.
    fn number<T: std::str::FromStr>(&mut self, what: &str) -> Result<T, CliError> {
        let v = self.value()?;
        v.trim().parse().map_err(|_| {
            CliError(format!(
                "invalid value '{v}' for --{}: expected {what}",
                self.name
            ))
        })
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "on" | "yes" => Some(true),
        "false" | "0" | "off" | "no" => Some(false),
        _ => None,
    }
}

impl Options {
    /// The HTTP front end's configuration.
    pub fn http_config(&self) -> HttpConfig {
        HttpConfig {
            address: self.http_address.clone(),
            port: self.http_port,
            threads: self.http_thread_count,
            http1: http1::Config {
                max_header_bytes: self.http_max_header_bytes,
                max_body_bytes: self.http_max_body_bytes,
                max_decoded_body_bytes: self.http_max_body_bytes,
                header_timeout: Duration::from_secs(self.http_header_timeout_secs),
                body_timeout: Duration::from_secs(self.http_body_timeout_secs),
                min_body_rate: self.http_min_body_rate,
                idle_timeout: Duration::from_secs(self.http_idle_timeout_secs),
                ..http1::Config::default()
            },
            tls: self.http_use_ssl.then(|| TlsConfig {
                cert: PathBuf::from(&self.http_server_cert),
                key: PathBuf::from(&self.http_server_key),
                client_ca: None,
            }),
        }
    }

    /// The gRPC endpoint's configuration: address, port, as many event
    /// loops as HTTP, TLS.
    pub fn grpc_server_config(&self) -> GrpcServerConfig {
        let tls = (self.grpc_use_ssl || self.grpc_use_ssl_mutual).then(|| TlsConfig {
            cert: PathBuf::from(&self.grpc_server_cert),
            key: PathBuf::from(&self.grpc_server_key),
            client_ca: self
                .grpc_use_ssl_mutual
                .then(|| PathBuf::from(&self.grpc_root_cert)),
        });
        GrpcServerConfig {
            address: self.grpc_address.clone(),
            port: self.grpc_port,
            threads: self.http_thread_count,
            http2: http2::Config::default(),
            tls,
        }
    }

    /// The metrics endpoint's configuration: `--metrics-address`, else the
    /// HTTP address while HTTP is served, else `0.0.0.0` (as Triton binds
    /// it); one event loop, plain HTTP.
    pub fn metrics_config(&self) -> HttpConfig {
        let address = if !self.metrics_address.is_empty() {
            self.metrics_address.clone()
        } else if self.allow_http {
            self.http_address.clone()
        } else {
            "0.0.0.0".to_owned()
        };
        HttpConfig {
            address,
            port: self.metrics_port,
            threads: 1,
            http1: http1::Config::default(),
            tls: None,
        }
    }

    /// How often the metrics endpoint samples CPU and memory.
    pub fn metrics_interval(&self) -> Duration {
        Duration::from_millis(self.metrics_interval_ms)
    }

    /// The gRPC service's settings.
    pub fn grpc_config(&self) -> GrpcConfig {
        GrpcConfig {
            max_message_size: self.grpc_max_message_size,
            response_compression: self.grpc_infer_response_compression_level,
            restrictions: self.grpc_restrictions.clone(),
        }
    }

    /// The logger's settings.
    pub fn log_settings(&self) -> LogSettings {
        LogSettings {
            log_info: self.log_info,
            log_warning: self.log_warning,
            log_error: self.log_error,
            log_verbose_level: self.log_verbose,
            log_format: self.log_format.clone(),
            log_file: self.log_file.clone(),
        }
    }

    /// How long shutdown waits for in-flight work.
    pub fn exit_timeout(&self) -> Duration {
        Duration::from_secs(self.exit_timeout_secs)
    }

    /// The rows of Triton's startup options table, in Triton's order.
    /// `server_version` and `extensions` come from the server.
    pub fn table(&self, server_version: &str, extensions: &[&str]) -> Vec<(String, String)> {
        let mut rows = vec![
            ("server_id".to_owned(), self.server_id.clone()),
            ("server_version".to_owned(), server_version.to_owned()),
            ("server_extensions".to_owned(), extensions.join(" ")),
        ];
        for (i, path) in self.model_repositories.iter().enumerate() {
            rows.push((format!("model_repository_path[{i}]"), path.clone()));
        }
        rows.push((
            "model_control_mode".to_owned(),
            self.model_control_mode.table_name().to_owned(),
        ));
        if self.model_control_mode == ModelControlMode::Explicit {
            for (i, model) in self.load_models.iter().enumerate() {
                rows.push((format!("startup_models_{i}"), model.clone()));
            }
        }
        let flag = |b: bool| if b { "1" } else { "0" }.to_owned();
        rows.push((
            "strict_model_config".to_owned(),
            flag(self.strict_model_config),
        ));
        rows.push((
            "rate_limit".to_owned(),
            if self.rate_limit == "off" {
                "OFF"
            } else {
                "EXEC_COUNT"
            }
            .to_owned(),
        ));
        rows.push((
            "pinned_memory_pool_byte_size".to_owned(),
            self.pinned_memory_pool_byte_size.to_string(),
        ));
        if self.cuda_memory_pool_byte_size.is_empty() {
            rows.push((
                "cuda_memory_pool_byte_size{0}".to_owned(),
                DEFAULT_CUDA_POOL_BYTES.to_string(),
            ));
        }
        for (gpu, bytes) in &self.cuda_memory_pool_byte_size {
            rows.push((
                format!("cuda_memory_pool_byte_size{{{gpu}}}"),
                bytes.to_string(),
            ));
        }
        rows.push((
            "min_supported_compute_capability".to_owned(),
            format!("{:.1}", self.min_supported_compute_capability),
        ));
        rows.push(("strict_readiness".to_owned(), flag(self.strict_readiness)));
        rows.push((
            "exit_timeout".to_owned(),
            self.exit_timeout_secs.to_string(),
        ));
        rows.push(("cache_enabled".to_owned(), "0".to_owned()));
        rows
    }
}

/// Longest cell line before a value wraps onto the next line.
const MAX_CELL_WIDTH: usize = 80;

/// Renders a table with Triton's ASCII borders:
///
/// ```text
/// +--------+-------+
/// | Option | Value |
/// +--------+-------+
/// | a      | b     |
/// +--------+-------+
/// ```
///
/// Cells wider than 80 characters wrap at spaces.
pub fn format_table<R: AsRef<[String]>>(header: &[&str], rows: &[R]) -> String {
    let columns = header.len();
    let wrapped: Vec<Vec<Vec<String>>> = rows
        .iter()
        .map(|row| {
            (0..columns)
                .map(|c| wrap(row.as_ref().get(c).map_or("", String::as_str)))
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &wrapped {
        for (c, lines) in row.iter().enumerate() {
            for line in lines {
                widths[c] = widths[c].max(line.chars().count());
            }
        }
    }
    let border: String = widths.iter().fold("+".to_owned(), |mut s, w| {
        s.push_str(&"-".repeat(w + 2));
        s.push('+');
        s
    });
    let line = |cells: &[&str]| -> String {
        let mut s = "|".to_owned();
        for (cell, w) in cells.iter().zip(&widths) {
            let pad = w - cell.chars().count();
            s.push(' ');
            s.push_str(cell);
            s.push_str(&" ".repeat(pad + 1));
            s.push('|');
        }
        s
    };
    let mut out = vec![border.clone(), line(header), border.clone()];
    for row in &wrapped {
        let height = row.iter().map(Vec::len).max().unwrap_or(1);
        for i in 0..height {
            let cells: Vec<&str> = row
                .iter()
                .map(|l| l.get(i).map_or("", String::as_str))
                .collect();
            out.push(line(&cells));
        }
    }
    out.push(border);
    out.join("\n")
}

/// Splits a cell into lines of at most [`MAX_CELL_WIDTH`] characters,
/// breaking at spaces (a single longer word stays whole).
fn wrap(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split(' ') {
        if !current.is_empty()
            && current.chars().count() + 1 + word.chars().count() > MAX_CELL_WIDTH
        {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    lines.push(current);
    lines
}

/// The `--help` text.
pub fn usage() -> String {
    let d = Options::default();
    format!(
        "Usage: nereid [options]\n\
         \n\
         Serves models from Triton-layout model repositories over KServe v2 HTTP/REST and gRPC.\n\
         Options take --flag=value or --flag value; booleans accept true/false/1/0/on/off\n\
         or stand alone for true. Unknown options are reported and ignored.\n\
         \n\
         Model repository:\n\
         \x20 --model-repository <path>        repository to serve (repeatable; alias --model-store;\n\
         \x20                                  default {DEFAULT_MODEL_REPOSITORY})\n\
         \x20 --model-control-mode <mode>      none | explicit | poll [none]\n\
         \x20 --load-model <name>              model to load at startup in explicit mode (repeatable; * = all)\n\
         \x20 --repository-poll-secs <n>       poll interval [{poll}]\n\
         \x20 --strict-model-config <bool>     require complete config.pbtxt files [false]\n\
         \x20 --disable-auto-complete-config   same as --strict-model-config=true\n\
         \x20 --exit-on-error <bool>           exit when a model fails to load at startup [true]\n\
         \x20 --strict-readiness <bool>        ready only when every model is ready [true]\n\
         \n\
         HTTP:\n\
         \x20 --allow-http <bool>              serve HTTP/REST [true]\n\
         \x20 --http-address <addr>            address to bind [{addr}]\n\
         \x20 --http-port <port>               port to bind; 0 picks a free one [{http}]\n\
         \x20 --http-thread-count <n>          event-loop threads [one per core, 2..16]\n\
         \x20 --http-max-header-bytes <n>      largest request head [{hdr}]\n\
         \x20 --http-max-input-size <n>        largest request body, also after decompression\n\
         \x20                                  (alias --http-max-body-bytes) [{body}]\n\
         \x20 --http-header-timeout-secs <n>   time to send a request head [{hto}]\n\
         \x20 --http-body-timeout-secs <n>     time to send a request body [{bto}]; 408 after it\n\
         \x20 --http-min-body-rate <n>         bytes received that earn the body a second more\n\
         \x20                                  (0: none) [{rate}]\n\
         \x20 --http-idle-timeout-secs <n>     keep-alive idle limit [{ito}]\n\
         \x20 --http-use-ssl <bool>            serve HTTPS (ALPN http/1.1) on the HTTP port [false]\n\
         \x20 --http-server-cert <pem>, --http-server-key <pem>   its certificate chain and key\n\
         \x20 --http-restricted-api <apis>:<key>=<value>   answer those APIs (comma-separated\n\
         \x20                                  groups, as Triton's) only with header <key>: <value>\n\
         \n\
         gRPC (KServe v2 GRPCInferenceService and grpc.health.v1 over HTTP/2):\n\
         \x20 --allow-grpc <bool>              serve gRPC [true]\n\
         \x20 --grpc-address <addr>            address to bind [{addr}]\n\
         \x20 --grpc-port <port>               port to bind; 0 picks a free one [{grpc}]\n\
         \x20                                  (as many event loops as --http-thread-count)\n\
         \x20 --grpc-use-ssl <bool>            TLS with ALPN h2 [false]\n\
         \x20 --grpc-use-ssl-mutual <bool>     TLS requiring client certificates [false]\n\
         \x20 --grpc-server-cert <pem>, --grpc-server-key <pem>   certificate chain and key\n\
         \x20 --grpc-root-cert <pem>           roots client certificates must chain to\n\
         \x20 --grpc-infer-response-compression-level <none|low|medium|high> [none]\n\
         \x20 --grpc-max-message-size <n>      largest message in bytes [{gmsg}]\n\
         \x20 --grpc-restricted-protocol <protocols>:<key>=<value>   answer those only with\n\
         \x20                                  metadata triton-grpc-protocol-<key>: <value>\n\
         \n\
         Metrics:\n\
         \x20 --allow-metrics <bool>           serve Prometheus metrics at /metrics [true]\n\
         \x20 --metrics-address <addr>         address to bind [the HTTP address]\n\
         \x20 --metrics-port <port>            port to bind; 0 picks a free one [{metrics}]\n\
         \x20 --metrics-interval-ms <n>        CPU and memory sampling interval [{interval}]\n\
         \n\
         ONNX Runtime backend:\n\
         \x20 --onnxruntime-library <path>     libonnxruntime.so to load [$NEREID_ONNXRUNTIME_LIBRARY,\n\
         \x20                                  $ORT_DYLIB_PATH, else what scripts/fetch-onnxruntime.sh cached]\n\
         \x20 --backend-config onnxruntime,library-path=<path>   the same, Triton-style\n\
         \x20 --backend-config default-max-batch-size=<n>        max_batch_size auto-complete gives\n\
         \x20                                  a model that can batch [4]\n\
         \x20 --backend-config onnxruntime,enable-global-threadpool=<0|1>   one thread pool for\n\
         \x20                                  every session [0]; its size: onnxruntime,\n\
         \x20                                  intra_op_thread_count=<n>, inter_op_thread_count=<n>\n\
         \n\
         Memory:\n\
         \x20 --pinned-memory-pool-byte-size <n>            [{pinned}]\n\
         \x20 --cuda-memory-pool-byte-size <gpu>:<bytes>    (repeatable) [0:{cuda}]\n\
         \x20 --memory-pool-exhaustion <fallback|warn|fail> when a pool is full: allocate\n\
         \x20                                  outside it, the same with a warning, or fail [warn]\n\
         \x20 --allow-client-shm <bool>        clients may register shared memory [false]\n\
         \x20 --min-supported-compute-capability <cc>       [6.0]\n\
         \x20 --rate-limit <off|execution_count>            [off]\n\
         \n\
         Logging and process:\n\
         \x20 --log-verbose <n>, --log-info <bool>, --log-warning <bool>, --log-error <bool>\n\
         \x20 --log-format <default|ISO8601>, --log-file <path>\n\
         \x20 --id <name>                      server id [{id}]\n\
         \x20 --exit-timeout-secs <n>          shutdown grace period [{exit}]\n\
         \x20 --help, --version\n",
        poll = d.repository_poll_secs,
        addr = d.http_address,
        http = d.http_port,
        hdr = d.http_max_header_bytes,
        body = d.http_max_body_bytes,
        hto = d.http_header_timeout_secs,
        bto = d.http_body_timeout_secs,
        rate = d.http_min_body_rate,
        ito = d.http_idle_timeout_secs,
        grpc = d.grpc_port,
        gmsg = d.grpc_max_message_size,
        metrics = d.metrics_port,
        interval = d.metrics_interval_ms,
        pinned = d.pinned_memory_pool_byte_size,
        cuda = DEFAULT_CUDA_POOL_BYTES,
        id = d.server_id,
        exit = d.exit_timeout_secs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Options {
        match parse(args.iter().copied()).expect("parses") {
            Command::Run(o) => *o,
            other => panic!("expected run, got {other:?}"),
        }
    }

    fn error(args: &[&str]) -> String {
        parse(args.iter().copied()).expect_err("fails").0
    }

    #[test]
    fn restricted_groups() {
        use crate::protocol::restrict::Category;
        let o = run(&[
            "--http-restricted-api=model-repository:admin-key=admin-value",
            "--http-restricted-api",
            "inference,metadata:infer-key=infer-value",
            "--grpc-restricted-protocol=health:k=v",
        ]);
        let admin = o.http_restrictions.get(Category::ModelRepository).unwrap();
        assert_eq!(
            (admin.header.as_str(), admin.value.as_str()),
            ("admin-key", "admin-value")
        );
        assert_eq!(
            o.http_restrictions.get(Category::Metadata).unwrap().header,
            "infer-key"
        );
        assert_eq!(o.http_restrictions.get(Category::Health), None);
        let health = o.grpc_config().restrictions;
        let health = health.get(Category::Health).unwrap();
        assert_eq!(health.header, "triton-grpc-protocol-k");
        assert!(Options::default().grpc_config().restrictions.is_empty());
        assert_eq!(
            error(&[
                "--grpc-restricted-protocol=model-repository,health:k1=v1",
                "--grpc-restricted-protocol=metadata,health:k2=v2",
            ]),
            "--grpc-restricted-protocol: restricted protocol 'health' can not be specified \
             in multiple config groups"
        );
        assert_eq!(
            error(&["--http-restricted-api=model-reposit,health:k1=v1"]),
            "--http-restricted-api: unknown restricted api 'model-reposit'"
        );
        assert!(error(&["--http-restricted-api=health"]).contains("<key>=<value>"));
    }

    #[test]
    fn defaults() {
        let o = run(&[]);
        assert_eq!(o.http_port, 8000);
        assert_eq!(o.grpc_port, 8001);
        assert_eq!(o.metrics_port, 8002);
        assert_eq!(o.model_repositories, vec![DEFAULT_MODEL_REPOSITORY]);
        assert!(o.allow_http && o.strict_readiness && o.exit_on_error);
        assert_eq!(o.exit_timeout_secs, 30);
        assert_eq!(o.server_id, "triton");
        assert!(o.warnings.is_empty());
    }

    #[test]
    fn both_value_styles_and_repeats() {
        let o = run(&[
            "--model-repository=/a",
            "--model-store",
            "/b",
            "--http-port",
            "9000",
            "--grpc-port=9001",
            "--model-control-mode=explicit",
            "--load-model",
            "add_sub",
            "--load-model=*",
            "--cuda-memory-pool-byte-size=0:1024",
            "--cuda-memory-pool-byte-size",
            "1:2048",
            "--log-verbose=1",
            "--id",
            "edge",
        ]);
        assert_eq!(o.model_repositories, vec!["/a", "/b"]);
        assert_eq!((o.http_port, o.grpc_port), (9000, 9001));
        assert_eq!(o.model_control_mode, ModelControlMode::Explicit);
        assert_eq!(o.load_models, vec!["add_sub", "*"]);
        assert_eq!(o.cuda_memory_pool_byte_size, vec![(0, 1024), (1, 2048)]);
        assert_eq!(o.log_verbose, 1);
        assert_eq!(o.server_id, "edge");
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    }

    #[test]
    fn metrics_endpoint() {
        let o = run(&["--http-address=127.0.0.1", "--metrics-port=0"]);
        let c = o.metrics_config();
        assert_eq!((c.address.as_str(), c.port, c.threads), ("127.0.0.1", 0, 1));
        assert_eq!(o.metrics_interval(), Duration::from_millis(2000));
        let o = run(&["--http-address=127.0.0.1", "--allow-http=false"]);
        assert_eq!(o.metrics_config().address, "0.0.0.0");
        let o = run(&["--metrics-address", "::1", "--metrics-interval-ms=250"]);
        assert_eq!(o.metrics_config().address, "::1");
        assert_eq!(o.metrics_interval(), Duration::from_millis(250));
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    }

    #[test]
    fn booleans() {
        let o = run(&[
            "--allow-grpc=false",
            "--allow-metrics",
            "0",
            "--strict-readiness=off",
        ]);
        assert!(!o.allow_grpc && !o.allow_metrics && !o.strict_readiness);
        assert!(error(&["--metrics-interval-ms=0"]).contains("at least 1"));
        // A bare boolean followed by another flag, or by a non-boolean.
        let o = run(&[
            "--allow-http",
            "--log-info",
            "no",
            "--exit-on-error",
            "--http-port",
            "1",
        ]);
        assert!(o.allow_http && !o.log_info && o.exit_on_error);
        assert_eq!(o.http_port, 1);
        let o = run(&["--disable-auto-complete-config"]);
        assert!(o.strict_model_config);
        assert!(error(&["--allow-http=maybe"]).contains("--allow-http"));
    }

    #[test]
    fn bad_values_are_errors() {
        assert_eq!(
            error(&["--http-port", "eighty"]),
            "invalid value 'eighty' for --http-port: expected a port number (0-65535)"
        );
        assert!(error(&["--http-port=70000"]).contains("70000"));
        assert!(error(&["--grpc-port"]).contains("needs a value"));
        assert!(error(&["--model-control-mode=sometimes"]).contains("none, explicit or poll"));
        assert!(error(&["--cuda-memory-pool-byte-size=1024"]).contains("<gpu>:<bytes>"));
        assert!(error(&["--log-format=xml"]).contains("ISO8601"));
        assert!(error(&["--http-thread-count=0"]).contains("at least 1"));
    }

    #[test]
    fn unknown_and_compatibility_flags_warn() {
        let o = run(&[
            "--frobnicate=3",
            "--mystery",
            "value",
            "--backend-directory",
            "/opt/backends",
            "--http-port",
            "1234",
            "stray",
            "--model-control-mode=poll",
        ]);
        assert_eq!(o.http_port, 1234);
        assert_eq!(o.model_control_mode, ModelControlMode::Poll);
        assert_eq!(o.warnings.len(), 4, "{:?}", o.warnings);
        assert!(o.warnings[0].contains("--frobnicate"));
        assert!(o.warnings[1].contains("--mystery") && o.warnings[1].contains("value"));
        assert!(o.warnings[2].contains("--backend-directory"));
        assert!(o.warnings[3].contains("stray"));
    }

    #[test]
    fn onnxruntime_settings() {
        let o = run(&[]);
        assert_eq!(
            (o.onnxruntime_library.as_str(), o.default_max_batch_size),
            ("", 4)
        );
        let o = run(&["--onnxruntime-library", "/opt/ort/libonnxruntime.so"]);
        assert_eq!(o.onnxruntime_library, "/opt/ort/libonnxruntime.so");
        let o = run(&[
            "--backend-config=onnxruntime,library-path=/x/libonnxruntime.so",
            "--backend-config",
            "default-max-batch-size=16",
            "--backend-config=python,shm-default-byte-size=1024",
        ]);
        assert_eq!(o.onnxruntime_library, "/x/libonnxruntime.so");
        assert_eq!(o.default_max_batch_size, 16);
        assert_eq!(o.warnings.len(), 1, "{:?}", o.warnings);
        assert!(o.warnings[0].contains("python,shm-default-byte-size"));
        let o = run(&["--backend-config=onnxruntime,default-max-batch-size=0"]);
        assert_eq!(o.default_max_batch_size, 0);
        assert!(!o.onnxruntime_global_threadpool);
        let o = run(&[
            "--backend-config=onnxruntime,enable-global-threadpool=1",
            "--backend-config=onnxruntime,intra_op_thread_count=2",
            "--backend-config=onnxruntime,inter_op_thread_count=1",
        ]);
        assert!(o.onnxruntime_global_threadpool);
        assert_eq!(o.onnxruntime_thread_counts, (2, 1));
        assert!(
            error(&["--backend-config=onnxruntime,intra_op_thread_count=many"])
                .contains("thread count")
        );
        assert!(error(&["--backend-config=onnxruntime"]).contains("<setting>=<value>"));
        assert!(error(&["--backend-config=default-max-batch-size=-2"]).contains("batch size"));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(["--help"]).unwrap(), Command::Help);
        assert_eq!(
            parse(["--http-port=1", "--version"]).unwrap(),
            Command::Version
        );
        assert!(usage().contains("--model-repository"));
    }

    #[test]
    fn derived_configs() {
        let o = run(&[
            "--http-max-input-size=1000",
            "--http-body-timeout-secs=9",
            "--http-min-body-rate=0",
            "--http-idle-timeout-secs=7",
            "--http-address=127.0.0.1",
            "--http-thread-count=3",
            "--log-format=iso8601",
        ]);
        let http = o.http_config();
        assert_eq!(http.address, "127.0.0.1");
        assert_eq!(http.threads, 3);
        assert_eq!(http.http1.max_body_bytes, 1000);
        assert_eq!(http.http1.max_decoded_body_bytes, 1000);
        assert_eq!(http.http1.body_timeout, Duration::from_secs(9));
        assert_eq!(http.http1.min_body_rate, 0);
        assert_eq!(http.http1.idle_timeout, Duration::from_secs(7));
        assert_eq!(
            run(&["--http-max-body-bytes", "77"]).http_max_body_bytes,
            77
        );
        assert_eq!(
            Options::default().http_max_body_bytes,
            64 * 1024 * 1024,
            "Triton's default"
        );
        for bad in ["0", "-1024"] {
            assert_eq!(
                error(&[&format!("--http-max-input-size={bad}")]),
                "Error: --http-max-input-size must be greater than 0."
            );
        }
        assert_eq!(o.log_settings().log_format, "ISO8601");
    }

    #[test]
    fn grpc_and_tls_flags() {
        let o = run(&[]);
        let grpc = o.grpc_server_config();
        assert_eq!((grpc.address.as_str(), grpc.port), ("0.0.0.0", 8001));
        assert!(grpc.tls.is_none() && o.http_config().tls.is_none());
        assert_eq!(o.grpc_config(), GrpcConfig::default());

        let o = run(&[
            "--grpc-use-ssl",
            "--grpc-server-cert=/c.pem",
            "--grpc-server-key",
            "/k.pem",
            "--grpc-infer-response-compression-level=HIGH",
            "--grpc-max-message-size=1024",
            "--http-use-ssl=true",
            "--http-server-cert=/h.pem",
            "--http-server-key=/hk.pem",
            "--http-thread-count=3",
        ]);
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
        let grpc = o.grpc_server_config();
        let tls = grpc.tls.expect("gRPC TLS");
        assert_eq!(tls.cert, PathBuf::from("/c.pem"));
        assert_eq!(tls.key, PathBuf::from("/k.pem"));
        assert_eq!(tls.client_ca, None);
        assert_eq!(grpc.threads, 3);
        let service = o.grpc_config();
        assert_eq!(service.max_message_size, 1024);
        assert_eq!(service.response_compression, CompressionLevel::High);
        let http_tls = o.http_config().tls.expect("HTTPS");
        assert_eq!(http_tls.cert, PathBuf::from("/h.pem"));

        let o = run(&[
            "--grpc-use-ssl-mutual=true",
            "--grpc-server-cert=/c.pem",
            "--grpc-server-key=/k.pem",
            "--grpc-root-cert=/ca.pem",
        ]);
        let tls = o.grpc_server_config().tls.expect("mutual TLS implies TLS");
        assert_eq!(tls.client_ca, Some(PathBuf::from("/ca.pem")));

        assert!(error(&["--grpc-use-ssl"]).contains("--grpc-server-cert"));
        assert!(
            error(&[
                "--grpc-use-ssl-mutual",
                "--grpc-server-cert=/c",
                "--grpc-server-key=/k"
            ])
            .contains("--grpc-root-cert")
        );
        assert!(error(&["--http-use-ssl", "--http-server-cert=/c"]).contains("--http-server-key"));
        assert!(error(&["--grpc-infer-response-compression-level=max"]).contains("none, low"));
        assert!(error(&["--grpc-max-message-size=0"]).contains("at least 1"));
        assert!(usage().contains("--grpc-use-ssl-mutual") && usage().contains("--http-use-ssl"));
    }

    #[test]
    fn options_table() {
        let o = run(&["--model-repository=/models", "--model-repository=/more"]);
        let rows = o.table("2.50.0", &["classification", "sequence"]);
        let get = |k: &str| rows.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(rows[0].0, "server_id");
        assert_eq!(get("server_extensions"), Some("classification sequence"));
        assert_eq!(get("model_repository_path[1]"), Some("/more"));
        assert_eq!(get("model_control_mode"), Some("MODE_NONE"));
        assert_eq!(get("strict_model_config"), Some("0"));
        assert_eq!(get("rate_limit"), Some("OFF"));
        assert_eq!(get("cuda_memory_pool_byte_size{0}"), Some("67108864"));
        assert_eq!(get("min_supported_compute_capability"), Some("6.0"));
        assert_eq!(get("exit_timeout"), Some("30"));

        let table = format_table(
            &["Option", "Value"],
            &[
                vec!["server_id".to_owned(), "triton".to_owned()],
                vec!["x".to_owned(), "y".to_owned()],
            ],
        );
        assert_eq!(
            table,
            "+-----------+--------+\n\
             | Option    | Value  |\n\
             +-----------+--------+\n\
             | server_id | triton |\n\
             | x         | y      |\n\
             +-----------+--------+"
        );
        let long = vec!["ext".to_owned(), "word ".repeat(30).trim_end().to_owned()];
        let table = format_table(&["Option", "Value"], &[long]);
        assert!(
            table.lines().all(|l| l.chars().count() <= 80 + 12),
            "{table}"
        );
        assert_eq!(table.lines().count(), 6);
    }
}
