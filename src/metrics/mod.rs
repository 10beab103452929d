//! Prometheus metrics at `GET /metrics` on their own port, rendered at
//! scrape time from every ready model version's statistics
//! ([`Server::model_metrics`]) and the machine figures of a
//! [`SystemSampler`]. Served by the HTTP/1.1 event loops of `net` through
//! an [`HttpService`]; the format lives in [`exposition`].
//!
//! Triton's metrics keep Triton's names, types, meaning and labels, so
//! dashboards and autoscaling queries written for Triton work unchanged:
//! per model version (`model`, `version` labels)
//! `nv_inference_request_success`, `nv_inference_request_failure` (with
//! `reason`: `REJECTED`, `CANCELED`, `BACKEND`, `OTHER`),
//! `nv_inference_count`, `nv_inference_exec_count`, the cumulative
//! `nv_inference_{request,queue,compute_input,compute_infer,compute_output}_duration_us`
//! of successful requests, `nv_inference_pending_request_count`; for the
//! machine `nv_cpu_utilization`, `nv_cpu_memory_total_bytes`,
//! `nv_cpu_memory_used_bytes` (left out where unknown).
//!
//! nereid adds, under the `nereid_` prefix: histograms of request, queue
//! and compute (backend) durations in seconds and of execution batch
//! sizes (bounds in [`crate::scheduler::stats`]), executions per dispatch
//! reason, and cancelled requests.

pub mod exposition;
pub mod system;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::net::{HttpConfig, HttpServer, HttpServerHandle, HttpService, Responder};
use crate::protocol::http1::{Request, Response};
use crate::scheduler::stats::{FailureReason, Label, LatencyHistogram, ModelStats, StatDuration};
use crate::server::{ModelMetrics, Server};
use exposition::{Exposition, Fixed, Kind};
pub use system::{SystemSample, SystemSampler};

/// The path scrapes ask for.
pub const METRICS_PATH: &str = "/metrics";

/// A per-model counter or gauge read from a model's statistics.
struct PerModel {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    value: fn(&ModelMetrics) -> u64,
}

fn micros(d: &StatDuration) -> u64 {
    d.ns / 1000
}

const PER_MODEL: &[PerModel] = &[
    PerModel {
        name: "nv_inference_request_success",
        kind: Kind::Counter,
        help: "Successful inference requests, all batch sizes",
        value: |m| m.stats.success.count,
    },
    PerModel {
        name: "nv_inference_count",
        kind: Kind::Counter,
        help: "Inferences performed (a request of n batch rows counts n)",
        value: |m| m.stats.inference_count,
    },
    PerModel {
        name: "nv_inference_exec_count",
        kind: Kind::Counter,
        help: "Model executions performed (one per batch)",
        value: |m| m.stats.execution_count,
    },
    PerModel {
        name: "nv_inference_request_duration_us",
        kind: Kind::Counter,
        help: "Cumulative duration of successful inference requests, in microseconds",
        value: |m| micros(&m.stats.success),
    },
    PerModel {
        name: "nv_inference_queue_duration_us",
        kind: Kind::Counter,
        help: "Cumulative time successful requests waited in the queue, in microseconds",
        value: |m| micros(&m.stats.queue),
    },
    PerModel {
        name: "nv_inference_compute_input_duration_us",
        kind: Kind::Counter,
        help: "Cumulative input preparation time of successful requests, in microseconds",
        value: |m| micros(&m.stats.compute_input),
    },
    PerModel {
        name: "nv_inference_compute_infer_duration_us",
        kind: Kind::Counter,
        help: "Cumulative model execution time of successful requests, in microseconds",
        value: |m| micros(&m.stats.compute_infer),
    },
    PerModel {
        name: "nv_inference_compute_output_duration_us",
        kind: Kind::Counter,
        help: "Cumulative output processing time of successful requests, in microseconds",
        value: |m| micros(&m.stats.compute_output),
    },
    PerModel {
        name: "nv_inference_pending_request_count",
        kind: Kind::Gauge,
        help: "Requests waiting in the model's queue for an instance now",
        value: |m| u64::try_from(m.pending).unwrap_or(u64::MAX),
    },
    PerModel {
        name: "nereid_inference_request_cancelled_total",
        kind: Kind::Counter,
        help: "Requests cancelled by their client before they completed",
        value: |m| m.stats.failures[&FailureReason::Canceled],
    },
];

/// A per-model latency histogram.
struct Latency {
    name: &'static str,
    help: &'static str,
    histogram: fn(&ModelStats) -> &LatencyHistogram,
}

const LATENCIES: &[Latency] = &[
    Latency {
        name: "nereid_inference_request_duration_seconds",
        help: "Duration of successful inference requests, arrival at the model to response",
        histogram: |s| &s.request_duration,
    },
    Latency {
        name: "nereid_inference_queue_duration_seconds",
        help: "Time successful requests waited in the queue",
        histogram: |s| &s.queue_duration,
    },
    Latency {
        name: "nereid_inference_compute_infer_duration_seconds",
        help: "Backend time of each model execution",
        histogram: |s| &s.compute_duration,
    },
];

/// Renders every metric: per model version, then the machine's.
pub fn render(models: &[ModelMetrics], system: &SystemSample) -> String {
    let mut e = Exposition::default();
    let version: Vec<String> = models.iter().map(|m| m.version.to_string()).collect();
    let labels = |i: usize| {
        [
            ("model", models[i].name.as_str()),
            ("version", version[i].as_str()),
        ]
    };

    e.family(
        "nv_inference_request_failure",
        Kind::Counter,
        "Failed inference requests, all batch sizes, by reason",
    );
    for (i, m) in models.iter().enumerate() {
        for (reason, n) in m.stats.failures.iter() {
            let [model, version] = labels(i);
            e.sample(
                "nv_inference_request_failure",
                &[model, ("reason", reason.label()), version],
                n,
            );
        }
    }
    for metric in PER_MODEL {
        e.family(metric.name, metric.kind, metric.help);
        for (i, m) in models.iter().enumerate() {
            e.sample(metric.name, &labels(i), (metric.value)(m));
        }
    }
    for latency in LATENCIES {
        e.family(latency.name, Kind::Histogram, latency.help);
        for (i, m) in models.iter().enumerate() {
            let h = (latency.histogram)(&m.stats);
            let buckets = h.cumulative().map(|(us, n)| {
                (
                    Fixed {
                        value: us,
                        scale: 6,
                    },
                    n,
                )
            });
            let sum = Fixed {
                value: h.sum(),
                scale: 9,
            };
            e.histogram(latency.name, &labels(i), buckets, h.count(), sum);
        }
    }
    let batch = "nereid_inference_batch_size";
    e.family(batch, Kind::Histogram, "Batch rows of each model execution");
    for (i, m) in models.iter().enumerate() {
        let h = &m.stats.batch_size;
        let buckets = h.cumulative().map(|(rows, n)| {
            (
                Fixed {
                    value: rows,
                    scale: 0,
                },
                n,
            )
        });
        let sum = Fixed {
            value: h.sum(),
            scale: 0,
        };
        e.histogram(batch, &labels(i), buckets, h.count(), sum);
    }
    let dispatch = "nereid_inference_dispatch_total";
    e.family(
        dispatch,
        Kind::Counter,
        "Model executions by the reason their batch was dispatched",
    );
    for (i, m) in models.iter().enumerate() {
        for (reason, n) in m.stats.dispatches.iter() {
            let [model, version] = labels(i);
            e.sample(dispatch, &[model, ("reason", reason.label()), version], n);
        }
    }

    if let Some(u) = system.cpu_utilization {
        e.family(
            "nv_cpu_utilization",
            Kind::Gauge,
            "CPU utilization of the whole machine over the last interval [0.0 - 1.0]",
        );
        e.sample_f64("nv_cpu_utilization", &[], u);
    }
    if let Some(memory) = system.memory {
        e.family(
            "nv_cpu_memory_total_bytes",
            Kind::Gauge,
            "Memory of the machine, in bytes",
        );
        e.sample("nv_cpu_memory_total_bytes", &[], memory.total);
        e.family(
            "nv_cpu_memory_used_bytes",
            Kind::Gauge,
            "Memory of the machine in use (total less available), in bytes",
        );
        e.sample("nv_cpu_memory_used_bytes", &[], memory.used);
    }
    e.finish()
}

/// Answers scrapes: `GET /metrics`; 404 for any other path, 405 for any
/// other method. Rendering runs on the event-loop thread: it only copies
/// statistics snapshots and formats text.
struct MetricsService {
    server: Arc<Server>,
    sampler: SystemSampler,
}

impl HttpService for MetricsService {
    fn handle(&self, request: Request, responder: Responder) {
        let response = if request.path != METRICS_PATH {
            Response::new(404).with_body("Not found; metrics are at /metrics\n")
        } else if request.method != "GET" {
            Response::new(405)
                .with_header("Allow", "GET")
                .with_body(format!("Method {} not allowed; use GET\n", request.method))
        } else {
            let text = render(&self.server.model_metrics(), &self.sampler.latest());
            Response::new(200)
                .with_header("Content-Type", exposition::CONTENT_TYPE)
                .with_body(text)
        };
        responder.respond(response);
    }
}

/// The metrics endpoint: its listener and the machine sampler.
#[derive(Debug)]
pub struct MetricsEndpoint {
    http: HttpServerHandle,
}

impl MetricsEndpoint {
    /// Starts the sampler (every `interval`) and the listener on
    /// `config`'s address and port.
    pub fn start(
        config: HttpConfig,
        interval: Duration,
        server: Arc<Server>,
    ) -> io::Result<MetricsEndpoint> {
        let sampler = SystemSampler::start(interval)?;
        let service = Arc::new(MetricsService { server, sampler });
        let http = HttpServer::start(config, service)?;
        Ok(MetricsEndpoint { http })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// Stops the listener (scrapes in flight finish until `deadline`) and
    /// the sampler.
    pub fn shutdown(self, deadline: Instant) {
        self.http.shutdown(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::stats::{DispatchReason, ExecutionTiming, RequestTiming, StatsCollector};
    use system::Memory;

    fn model(name: &str) -> ModelMetrics {
        let stats = StatsCollector::default();
        let us = Duration::from_micros;
        stats.record_success(&RequestTiming {
            batch_size: 2,
            total: us(300),
            queue: us(100),
            compute_input: us(10),
            compute_infer: us(180),
            compute_output: us(10),
        });
        stats.record_execution(&ExecutionTiming {
            batch_size: 2,
            reason: DispatchReason::PreferredSize,
            compute_input: us(10),
            compute_infer: us(180),
            compute_output: us(10),
        });
        stats.record_failure(us(50), FailureReason::Canceled);
        ModelMetrics {
            name: name.to_owned(),
            version: 3,
            stats: stats.snapshot(),
            pending: 1,
        }
    }

    #[test]
    fn golden() {
        let system = SystemSample {
            cpu_utilization: Some(0.5),
            memory: Some(Memory {
                total: 4096,
                used: 1024,
            }),
        };
        let text = render(&[model("m")], &system);
        let golden = include_str!("golden.txt");
        assert_eq!(text, golden, "\n{text}");
    }

    #[test]
    fn unknown_machine_figures_are_left_out() {
        let text = render(&[], &SystemSample::default());
        assert!(!text.contains("nv_cpu"), "{text}");
        assert!(text.contains("# TYPE nv_inference_request_success counter\n"));
    }
}
