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
//! `nv_cpu_memory_used_bytes` (left out where unknown); per GPU
//! (`gpu_uuid` label) `nv_gpu_utilization`, `nv_gpu_memory_total_bytes`,
//! `nv_gpu_memory_used_bytes`, sampled with the machine figures (absent on
//! a machine without GPUs, as Triton's are).
//!
//! nereid adds, under the `nereid_` prefix: histograms of request, queue
//! and compute (backend) durations in seconds and of execution batch
//! sizes (bounds in [`crate::scheduler::stats`]), executions per dispatch
//! reason, and cancelled requests; the memory pools' occupancy
//! (`nereid_pinned_pool_bytes{state}`, `nereid_cuda_pool_bytes{gpu,state}`
//! with `state` `capacity` or `used`) and the allocations served outside a
//! full pool (`nereid_memory_pool_fallbacks_total{pool="pinned"|"cuda"}`,
//! with `gpu` for `cuda`). The pool families are always present, at zero
//! on a machine without CUDA (where a pinned fallback is heap memory), so
//! queries need not special-case it.

pub mod exposition;
pub mod system;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gpu::{self, GpuSample, PoolStats};
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

/// The GPUs' figures and the memory pools' occupancy at a scrape.
#[derive(Debug, Clone, Default)]
pub struct GpuFigures {
    /// The sampler's latest figures, one per GPU.
    pub gpus: Vec<GpuSample>,
    /// The pools now.
    pub pools: PoolStats,
}

/// Renders every metric as on a machine without GPUs and with the pools
/// untouched (see [`render_with_gpus`]).
pub fn render(models: &[ModelMetrics], system: &SystemSample) -> String {
    render_with_gpus(models, system, &GpuFigures::default())
}

/// Renders every metric: per model version, then the machine's, the GPUs'
/// and the memory pools'.
pub fn render_with_gpus(
    models: &[ModelMetrics],
    system: &SystemSample,
    gpu: &GpuFigures,
) -> String {
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
    render_gpus(&mut e, &gpu.gpus);
    render_pools(&mut e, &gpu.pools);
    e.finish()
}

fn gpu_uuid(g: &GpuSample) -> [(&'static str, &str); 1] {
    [("gpu_uuid", g.uuid.as_str())]
}

fn render_gpus(e: &mut Exposition, gpus: &[GpuSample]) {
    if gpus.iter().any(|g| g.utilization.is_some()) {
        e.family(
            "nv_gpu_utilization",
            Kind::Gauge,
            "GPU utilization over the driver's last sample period [0.0 - 1.0]",
        );
        for g in gpus {
            if let Some(u) = g.utilization {
                e.sample_f64("nv_gpu_utilization", &gpu_uuid(g), u);
            }
        }
    }
    if gpus.is_empty() {
        return;
    }
    e.family(
        "nv_gpu_memory_total_bytes",
        Kind::Gauge,
        "Memory of the GPU, in bytes",
    );
    for g in gpus {
        e.sample("nv_gpu_memory_total_bytes", &gpu_uuid(g), g.memory_total);
    }
    e.family(
        "nv_gpu_memory_used_bytes",
        Kind::Gauge,
        "Memory of the GPU in use by any process, in bytes",
    );
    for g in gpus {
        e.sample("nv_gpu_memory_used_bytes", &gpu_uuid(g), g.memory_used);
    }
}

fn render_pools(e: &mut Exposition, pools: &PoolStats) {
    let pinned = "nereid_pinned_pool_bytes";
    e.family(
        pinned,
        Kind::Gauge,
        "Pinned host memory pool size (state=capacity) and bytes handed out (state=used)",
    );
    e.sample(pinned, &[("state", "capacity")], pools.pinned_capacity);
    e.sample(pinned, &[("state", "used")], pools.pinned_used);
    let cuda = "nereid_cuda_pool_bytes";
    e.family(
        cuda,
        Kind::Gauge,
        "Device memory pool size (state=capacity) and bytes handed out (state=used), per GPU",
    );
    let ordinals: Vec<String> = pools.devices.iter().map(|d| d.device.to_string()).collect();
    for (d, gpu) in pools.devices.iter().zip(&ordinals) {
        e.sample(cuda, &[("gpu", gpu), ("state", "capacity")], d.capacity);
        e.sample(cuda, &[("gpu", gpu), ("state", "used")], d.used);
    }
    let fallbacks = "nereid_memory_pool_fallbacks_total";
    e.family(
        fallbacks,
        Kind::Counter,
        "Allocations served outside a memory pool because it was full (pinned: also heap memory without a CUDA driver)",
    );
    e.sample(fallbacks, &[("pool", "pinned")], pools.pinned_fallbacks);
    for (d, gpu) in pools.devices.iter().zip(&ordinals) {
        e.sample(fallbacks, &[("pool", "cuda"), ("gpu", gpu)], d.fallbacks);
    }
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
            let gpu = GpuFigures {
                gpus: self.sampler.latest_gpus(),
                pools: gpu::pool_stats(),
            };
            let text = render_with_gpus(&self.server.model_metrics(), &self.sampler.latest(), &gpu);
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
        let gpu = GpuFigures {
            gpus: vec![GpuSample {
                device: 0,
                uuid: "GPU-00112233-4455-6677-8899-aabbccddeeff".to_owned(),
                utilization: Some(0.25),
                memory_total: 80 << 30,
                memory_used: 1 << 30,
            }],
            pools: PoolStats {
                pinned_capacity: 1 << 28,
                pinned_used: 4096,
                pinned_fallbacks: 2,
                devices: vec![gpu::DevicePoolStats {
                    device: 0,
                    capacity: 1 << 26,
                    used: 512,
                    fallbacks: 1,
                }],
            },
        };
        let text = render_with_gpus(&[model("m")], &system, &gpu);
        let golden = include_str!("golden.txt");
        assert_eq!(text, golden, "\n{text}");
    }

    #[test]
    fn unknown_machine_figures_are_left_out() {
        let text = render(&[], &SystemSample::default());
        assert!(!text.contains("nv_cpu"), "{text}");
        assert!(text.contains("# TYPE nv_inference_request_success counter\n"));
    }

    #[test]
    fn without_gpus_the_pool_families_stay_at_zero() {
        let text = render(&[], &SystemSample::default());
        assert!(!text.contains("nv_gpu"), "{text}");
        for line in [
            "# TYPE nereid_pinned_pool_bytes gauge\n",
            "nereid_pinned_pool_bytes{state=\"capacity\"} 0\n",
            "nereid_pinned_pool_bytes{state=\"used\"} 0\n",
            "# TYPE nereid_cuda_pool_bytes gauge\n",
            "# TYPE nereid_memory_pool_fallbacks_total counter\n",
            "nereid_memory_pool_fallbacks_total{pool=\"pinned\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("nereid_cuda_pool_bytes{"), "{text}");
    }

    #[test]
    fn utilization_is_left_out_where_unknown() {
        let gpu = GpuFigures {
            gpus: vec![GpuSample {
                device: 1,
                uuid: "GPU-x".to_owned(),
                utilization: None,
                memory_total: 10,
                memory_used: 3,
            }],
            pools: PoolStats::default(),
        };
        let text = render_with_gpus(&[], &SystemSample::default(), &gpu);
        assert!(!text.contains("nv_gpu_utilization"), "{text}");
        assert!(text.contains("nv_gpu_memory_used_bytes{gpu_uuid=\"GPU-x\"} 3\n"));
    }
}
