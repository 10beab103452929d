//! The `nereid` binary: parse the command line, start logging, size the
//! memory pools and discover the GPUs, build the service, serve HTTP, gRPC
//! and metrics, wait for SIGINT or SIGTERM, drain in-flight requests on
//! both for up to `--exit-timeout-secs`, exit.
//!
//! Exit codes: 0 after a clean shutdown (or `--help`/`--version`), 1 for a
//! bad command line or a server that cannot start.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nereid::backend::onnx::{OnnxOptions, ThreadCounts};
use nereid::cli::{self, Command, ModelControlMode, Options};
use nereid::gpu::{self, Exhaustion, PoolOptions};
use nereid::logging;
use nereid::metrics::MetricsEndpoint;
use nereid::net::{GrpcServer, HttpServer, HttpService};
use nereid::protocol::grpc::GrpcService;
use nereid::protocol::kserve::rest::RestService;
use nereid::repository::{ControlMode, ManagerOptions};
use nereid::server::{EXTENSIONS, Server, ServerOptions};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    let options = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print!("{}", cli::usage());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("nereid {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\nRun 'nereid --help' to list the options.");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = logging::init(options.log_settings()) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    for warning in &options.warnings {
        log::warn!("{warning}");
    }
    match serve(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn server_options(options: &Options) -> ServerOptions {
    ServerOptions {
        server_id: options.server_id.clone(),
        strict_readiness: options.strict_readiness,
        manager: ManagerOptions {
            repositories: options
                .model_repositories
                .iter()
                .map(PathBuf::from)
                .collect(),
            control_mode: match options.model_control_mode {
                ModelControlMode::None => ControlMode::None,
                ModelControlMode::Explicit => ControlMode::Explicit,
                ModelControlMode::Poll => ControlMode::Poll,
            },
            startup_models: options.load_models.clone(),
            auto_complete: !options.strict_model_config,
            // KIND_GPU instance groups are accepted on the GPUs found.
            available_gpus: gpu::devices().iter().map(|d| d.ordinal).collect(),
            ..ManagerOptions::default()
        },
        onnxruntime: OnnxOptions {
            library: Some(PathBuf::from(&options.onnxruntime_library))
                .filter(|p| !p.as_os_str().is_empty()),
            default_max_batch_size: options.default_max_batch_size,
            global_thread_pool: options
                .onnxruntime_global_threadpool
                .then_some(ThreadCounts {
                    intra_op: options.onnxruntime_thread_counts.0,
                    inter_op: options.onnxruntime_thread_counts.1,
                }),
        },
        allow_client_shm: options.allow_client_shm,
        pools: PoolOptions {
            pinned_bytes: options.pinned_memory_pool_byte_size,
            cuda_bytes: options.cuda_memory_pool_byte_size.clone(),
            exhaustion: Exhaustion::parse(&options.memory_pool_exhaustion).unwrap_or_default(),
        },
        ..ServerOptions::default()
    }
}

/// Logs the GPUs found, or why there are none.
fn log_gpus() {
    let devices = gpu::devices();
    if devices.is_empty() {
        match gpu::init() {
            Err(e) => log::info!("{e}: GPU features off"),
            Ok(()) => log::info!("no CUDA device found: GPU features off"),
        }
    }
    for d in devices {
        log::info!(
            "GPU {}: {} (compute capability {}.{}, {} MiB, {})",
            d.ordinal,
            d.name,
            d.compute_capability.0,
            d.compute_capability.1,
            d.total_memory >> 20,
            d.uuid
        );
    }
}

/// Re-scans the repository every `interval` until `stop` is set.
fn spawn_poller(server: Arc<Server>, interval: Duration, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("nereid-repo-poll".to_owned())
        .spawn(move || {
            let mut next = Instant::now() + interval;
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(100));
                if Instant::now() < next {
                    continue;
                }
                if let Err(e) = server.manager().poll() {
                    log::error!("repository poll: {e}");
                }
                next = Instant::now() + interval;
            }
        })
        .expect("spawn the repository poll thread");
}

/// Runs the server until a termination signal, then drains and stops it.
fn serve(options: &Options) -> Result<(), String> {
    // Registered before anything starts so an early signal is not lost.
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;

    let server_options = server_options(options);
    gpu::configure_pools(&server_options.pools);
    log_gpus();
    let server =
        Arc::new(Server::new(server_options).map_err(|e| format!("error: creating server: {e}"))?);
    let grpc = if options.allow_grpc {
        let service = GrpcService::new(Arc::clone(&server), options.grpc_config());
        let handle = GrpcServer::start(options.grpc_server_config(), service).map_err(|e| {
            server.shutdown();
            format!("failed to start the gRPC service: {e}")
        })?;
        log::info!("Started GRPCInferenceService at {}", handle.local_addr());
        Some(handle)
    } else {
        None
    };
    let service: Arc<dyn HttpService> = Arc::new(
        RestService::new(Arc::clone(&server)).with_restrictions(options.http_restrictions.clone()),
    );
    let http = if options.allow_http {
        let handle = HttpServer::start(options.http_config(), service).map_err(|e| {
            server.shutdown();
            format!("failed to start the HTTP service: {e}")
        })?;
        log::info!("Started HTTPService at {}", handle.local_addr());
        Some(handle)
    } else {
        None
    };
    let metrics = if options.allow_metrics {
        let endpoint = MetricsEndpoint::start(
            options.metrics_config(),
            options.metrics_interval(),
            Arc::clone(&server),
        )
        .map_err(|e| {
            server.shutdown();
            format!("failed to start the metrics service: {e}")
        })?;
        log::info!("Started Metrics Service at {}", endpoint.local_addr());
        Some(endpoint)
    } else {
        None
    };
    if http.is_none() && grpc.is_none() {
        log::warn!("no endpoint is enabled (--allow-http=false, --allow-grpc=false)");
    }

    // The endpoints are up before the startup models load, so health can
    // be asked meanwhile: live, not ready (Server::is_ready).
    let loaded = server.start();
    let models: Vec<[String; 3]> = server
        .manager()
        .model_table()
        .into_iter()
        .map(|(name, version, status)| [name, version, status])
        .collect();
    log::info!(
        target: logging::TABLE_TARGET,
        "\n{}",
        cli::format_table(&["Model", "Version", "Status"], &models)
    );
    let rows = options.table(env!("CARGO_PKG_VERSION"), EXTENSIONS);
    let rows: Vec<[String; 2]> = rows.into_iter().map(|(k, v)| [k, v]).collect();
    log::info!(
        target: logging::TABLE_TARGET,
        "\n{}",
        cli::format_table(&["Option", "Value"], &rows)
    );

    if let Err(e) = loaded {
        if options.exit_on_error {
            let now = Instant::now();
            if let Some(grpc) = grpc {
                grpc.shutdown(now);
            }
            if let Some(http) = http {
                http.shutdown(now);
            }
            server.shutdown();
            return Err(format!("error: creating server: {e}"));
        }
        log::warn!("{e}; serving the models that loaded (--exit-on-error=false)");
    }

    let stop_polling = Arc::new(AtomicBool::new(false));
    if options.model_control_mode == ModelControlMode::Poll {
        let interval = Duration::from_secs(options.repository_poll_secs.max(1));
        spawn_poller(Arc::clone(&server), interval, Arc::clone(&stop_polling));
    }

    if let Some(signal) = signals.forever().next() {
        log::info!("Signal ({signal}) received.");
    }
    // A second signal stops the process without waiting for the drain.
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            log::warn!("Signal ({signal}) received again; exiting now.");
            std::process::exit(1);
        }
    });

    stop_polling.store(true, Ordering::Release);
    server.begin_shutdown();
    let deadline = Instant::now() + options.exit_timeout();
    log::info!(
        "Waiting for in-flight requests to complete (timeout {}s).",
        options.exit_timeout_secs
    );
    // Both endpoints drain at once: each stops accepting, then lets its
    // requests in flight finish until the deadline.
    let grpc_drain = grpc.map(|grpc| std::thread::spawn(move || grpc.shutdown(deadline)));
    if let Some(http) = http {
        http.shutdown(deadline);
    }
    if let Some(drain) = grpc_drain
        && drain.join().is_err()
    {
        log::error!("the gRPC shutdown panicked");
    }
    if !server.drain(deadline) {
        log::warn!(
            "{} requests still in flight at the exit timeout",
            server.in_flight()
        );
    }
    if let Some(metrics) = metrics {
        metrics.shutdown(deadline);
    }
    server.shutdown();
    log::info!("All models unloaded; exiting.");
    Ok(())
}
