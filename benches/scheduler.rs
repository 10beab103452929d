//! Scheduler micro-benchmarks: what each request costs on its way through a
//! model's scheduler, measured through the public API.
//!
//! - `stats`: recording one request and its execution in a
//!   [`StatsCollector`] (counters and latency and batch-size histograms),
//!   and taking a snapshot of it.
//! - `submit`: a small `add_sub` request (two INT32 [1,16] tensors) on a
//!   model without a batcher, where the submitting thread runs it itself
//!   (caller-runs), from building the request to its completion; beside
//!   it, building the request alone, the part a front end pays anyway.
//! - `dynamic_batching`: the same request on a model with a dynamic
//!   batcher (no queue delay, one instance), which hands it to the
//!   instance's thread: one request submitted and awaited, and 8 submitted
//!   back to back and then awaited, which lets batches form. The mean batch
//!   size of the latter is printed after it.
//! - `metrics`: rendering `/metrics` for 50 model versions with populated
//!   statistics.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nereid::backend::{BackendRegistry, ModelContext};
use nereid::core::proto::inference::model_config::SchedulingChoice;
use nereid::core::proto::inference::model_instance_group::Kind as GroupKind;
use nereid::core::proto::{
    ModelConfig, ModelDynamicBatching, ModelInput, ModelInstanceGroup, ModelOutput,
};
use nereid::core::{DataType, InferRequest, InferResponse, Result, Tensor};
use nereid::metrics::system::Memory;
use nereid::metrics::{SystemSample, render};
use nereid::scheduler::ModelScheduler;
use nereid::scheduler::stats::{DispatchReason, ExecutionTiming, RequestTiming, StatsCollector};
use nereid::server::ModelMetrics;

const ELEMENTS: i64 = 16;
const BURST: usize = 8;

/// A request of `batch_size` rows whose phases add up to a few hundred
/// microseconds, varied by `i` so the histograms' buckets differ.
fn request_timing(i: u64, batch_size: u64) -> RequestTiming {
    let us = Duration::from_micros;
    RequestTiming {
        batch_size,
        total: us(50 + (i % 7) * 120),
        queue: us(10 + (i % 5) * 40),
        compute_input: us(5),
        compute_infer: us(30 + (i % 3) * 60),
        compute_output: us(5),
    }
}

fn execution_timing(i: u64, batch_size: u64, reason: DispatchReason) -> ExecutionTiming {
    let t = request_timing(i, batch_size);
    ExecutionTiming {
        batch_size,
        reason,
        compute_input: t.compute_input,
        compute_infer: t.compute_infer,
        compute_output: t.compute_output,
    }
}

/// Statistics after a thousand requests of one row, executed in batches
/// of 1 to 8 (so `batch_stats` has 8 entries).
fn populated() -> StatsCollector {
    let stats = StatsCollector::default();
    for i in 0..1000 {
        stats.record_success(&request_timing(i, 1));
        stats.record_execution(&execution_timing(i, i % 8 + 1, DispatchReason::MaxSize));
    }
    stats
}

fn stats(c: &mut Criterion) {
    let mut g = c.benchmark_group("stats");
    let collector = StatsCollector::default();
    let mut i = 0u64;
    g.bench_function("record_request", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            collector.record_success(black_box(&request_timing(i, 1)));
            collector.record_execution(black_box(&execution_timing(i, 1, DispatchReason::Single)));
        })
    });
    let collector = populated();
    g.bench_function("snapshot", |b| b.iter(|| collector.snapshot()));
    g.finish();
}

/// Triton's `simple` model: INPUT0 + INPUT1 and INPUT0 - INPUT1, INT32
/// [16], batching up to 8.
fn simple_config(name: &str) -> ModelConfig {
    let dtype = DataType::Int32.config_enum();
    let input = |n: usize| ModelInput {
        name: format!("INPUT{n}"),
        data_type: dtype,
        dims: vec![ELEMENTS],
        ..Default::default()
    };
    let output = |n: usize| ModelOutput {
        name: format!("OUTPUT{n}"),
        data_type: dtype,
        dims: vec![ELEMENTS],
        ..Default::default()
    };
    ModelConfig {
        name: name.to_string(),
        backend: "add_sub".to_string(),
        max_batch_size: BURST as i32,
        input: vec![input(0), input(1)],
        output: vec![output(0), output(1)],
        instance_group: vec![ModelInstanceGroup {
            name: name.to_string(),
            count: 1,
            kind: GroupKind::Cpu as i32,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn start(config: ModelConfig) -> ModelScheduler {
    let backend = BackendRegistry::with_builtins()
        .resolve(&config)
        .expect("add_sub is built in");
    let ctx = ModelContext {
        name: config.name.clone(),
        version: 1,
        model_path: Default::default(),
        version_path: Default::default(),
        config: Arc::new(config),
    };
    ModelScheduler::start(ctx, backend).expect("the model starts")
}

/// A fresh request, as a front end would decode one (the tensor bytes are
/// shared, as a decoded body's are).
fn request(data: &Bytes) -> InferRequest {
    let tensor = |name: &str| {
        Tensor::new(name, DataType::Int32, vec![1, ELEMENTS], data.clone()).expect("valid tensor")
    };
    InferRequest {
        model_name: "simple".into(),
        inputs: vec![tensor("INPUT0"), tensor("INPUT1")],
        ..Default::default()
    }
}

fn submit(s: &ModelScheduler, data: &Bytes, tx: &Sender<Result<InferResponse>>) {
    let tx = tx.clone();
    s.submit(
        request(data),
        Box::new(move |r| tx.send(r).expect("the bench waits")),
    );
}

fn answered(rx: &Receiver<Result<InferResponse>>) -> InferResponse {
    rx.recv().expect("a completion").expect("add_sub succeeds")
}

fn int32_data() -> Bytes {
    Bytes::from(
        (0..ELEMENTS as i32)
            .flat_map(i32::to_le_bytes)
            .collect::<Vec<u8>>(),
    )
}

fn caller_runs(c: &mut Criterion) {
    let data = int32_data();
    let s = start(simple_config("simple"));
    let (tx, rx) = mpsc::channel();
    let mut g = c.benchmark_group("submit");
    g.bench_function("build_request_only", |b| b.iter(|| request(&data)));
    g.bench_function("caller_runs_add_sub", |b| {
        b.iter(|| {
            submit(&s, &data, &tx);
            rx.try_recv()
                .expect("caller-runs completes before submit returns")
                .expect("add_sub succeeds")
        })
    });
    g.finish();
}

fn dynamic_batching(c: &mut Criterion) {
    let data = int32_data();
    let config = || {
        let mut c = simple_config("simple");
        c.scheduling_choice = Some(SchedulingChoice::DynamicBatching(ModelDynamicBatching {
            max_queue_delay_microseconds: 0,
            ..Default::default()
        }));
        c
    };
    let (tx, rx) = mpsc::channel();
    let mut g = c.benchmark_group("dynamic_batching");

    let s = start(config());
    g.bench_function("one_request", |b| {
        b.iter(|| {
            submit(&s, &data, &tx);
            answered(&rx)
        })
    });
    drop(s);

    let s = start(config());
    g.throughput(Throughput::Elements(BURST as u64));
    g.bench_function("burst_of_8", |b| {
        b.iter(|| {
            for _ in 0..BURST {
                submit(&s, &data, &tx);
            }
            for _ in 0..BURST {
                black_box(answered(&rx));
            }
        })
    });
    g.finish();
    let st = s.statistics();
    println!(
        "dynamic_batching/burst_of_8: {} requests in {} executions, mean batch size {:.2}",
        st.inference_count,
        st.execution_count,
        st.batch_size.sum() as f64 / st.batch_size.count().max(1) as f64
    );
}

fn metrics(c: &mut Criterion) {
    let stats = populated().snapshot();
    let models: Vec<ModelMetrics> = (0..50)
        .map(|i| ModelMetrics {
            name: format!("model_{}", i / 2),
            version: i64::from(i % 2 + 1),
            stats: stats.clone(),
            pending: (i % 3) as usize,
        })
        .collect();
    let system = SystemSample {
        cpu_utilization: Some(0.25),
        memory: Some(Memory {
            total: 64 << 30,
            used: 12 << 30,
        }),
    };
    println!(
        "metrics/render_50_versions: {} bytes of exposition text",
        render(&models, &system).len()
    );
    let mut g = c.benchmark_group("metrics");
    g.sample_size(30);
    g.bench_function("render_50_versions", |b| {
        b.iter(|| render(black_box(&models), &system))
    });
    g.finish();
}

criterion_group!(benches, stats, caller_runs, dynamic_batching, metrics);
criterion_main!(benches);
