//! The `nereid` binary: parse the command line, start logging, build the
//! service, serve HTTP, wait for SIGINT or SIGTERM, drain in-flight
//! requests for up to `--exit-timeout-secs`, exit.
//!
//! Exit codes: 0 after a clean shutdown (or `--help`/`--version`), 1 for a
//! bad command line or a server that cannot start.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use nereid::cli::{self, Command, Options};
use nereid::logging;
use nereid::net::{HttpServer, HttpService, Responder};
use nereid::protocol::http1::{Request, Response};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Protocol extensions reported in the startup table.
const SERVER_EXTENSIONS: &[&str] = &[
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
    "trace",
    "logging",
];

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

/// Runs the server until a termination signal, then drains and stops it.
fn serve(options: &Options) -> Result<(), String> {
    // Registered before anything starts so an early signal is not lost.
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;

    let rows = options.table(env!("CARGO_PKG_VERSION"), SERVER_EXTENSIONS);
    let rows: Vec<[String; 2]> = rows.into_iter().map(|(k, v)| [k, v]).collect();
    log::info!("\n{}", cli::format_table(&["Option", "Value"], &rows));

    let service: Arc<dyn HttpService> = Arc::new(LivenessOnly);
    let http = if options.allow_http {
        let handle = HttpServer::start(options.http_config(), service)
            .map_err(|e| format!("failed to start the HTTP service: {e}"))?;
        Some(handle)
    } else {
        None
    };
    if http.is_none() {
        log::warn!("no endpoint is enabled (--allow-http=false)");
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

    let deadline = Instant::now() + options.exit_timeout();
    log::info!(
        "Waiting for in-flight requests to complete (timeout {}s).",
        options.exit_timeout_secs
    );
    if let Some(http) = http {
        http.shutdown(deadline);
    }
    log::info!("All endpoints stopped.");
    Ok(())
}

/// The HTTP service used until the server layer and the KServe router are
/// wired in: answers liveness, and says for every other route that it is
/// not being served.
struct LivenessOnly;

impl HttpService for LivenessOnly {
    fn handle(&self, request: Request, responder: Responder) {
        let response = match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/v2/health/live") => Response::new(200),
            (_, path) => Response::error(404, &format!("no route for '{path}'")),
        };
        responder.respond(response);
    }
}
