//! The ONNX Runtime backend's per-request overhead on a tiny model (one
//! `Identity` node, FP32 [1,16]), against calling ONNX Runtime directly
//! through `ort` on a session of the same kind:
//!
//! - `onnx/ort_direct`: `Session::run` over a borrowed input, reading the
//!   output slice: the floor any server pays.
//! - `onnx/nereid_execute`: the backend's `ModelInstance::execute` with a
//!   request as the scheduler hands it over (input as `Bytes`, output
//!   selection, shape checks, output as `Bytes`).
//! - `onnx/nereid_scheduler`: a whole request through the model's
//!   scheduler (validation, queue, the instance thread, completion).
//!
//! The difference between the first two is the backend's overhead; the
//! third adds the scheduler's hand-off. Without the ONNX Runtime library
//! (scripts/fetch-onnxruntime.sh fetches it) the benchmarks say so and are
//! skipped.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use nereid::backend::onnx::{OnnxOptions, OnnxRuntime, environment, identity_model};
use nereid::backend::{Backend, ExecRequest, ModelContext};
use nereid::core::proto::ModelConfig;
use nereid::core::{CancelFlag, DataType, InferRequest, Parameters, Tensor};
use nereid::scheduler::ModelScheduler;
use ort::session::Session;
use ort::value::TensorRef;

const ELEMENTS: usize = 16;

/// A model directory holding the tiny model as version 1, and its completed
/// configuration (one CPU instance, one intra-op thread, no batching).
fn tiny_model(backend: &OnnxRuntime) -> ModelContext {
    let dir = std::env::temp_dir().join(format!("nereid-onnx-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("1")).expect("temp dir");
    std::fs::write(
        dir.join("1/model.onnx"),
        identity_model(DataType::Fp32, &[1, ELEMENTS as i64]),
    )
    .expect("model file");
    let mut config = ModelConfig {
        name: "tiny".into(),
        backend: "onnxruntime".into(),
        instance_group: vec![nereid::core::proto::ModelInstanceGroup {
            name: "tiny".into(),
            count: 1,
            kind: nereid::core::proto::inference::model_instance_group::Kind::Cpu as i32,
            ..Default::default()
        }],
        ..Default::default()
    };
    config.parameters.insert(
        "intra_op_thread_count".into(),
        nereid::core::proto::ModelParameter {
            string_value: "1".into(),
        },
    );
    backend
        .auto_complete(&mut config, &dir)
        .expect("auto-complete");
    ModelContext {
        name: "tiny".into(),
        version: 1,
        model_path: dir.clone(),
        version_path: dir.join("1"),
        config: Arc::new(config),
    }
}

fn overhead(c: &mut Criterion) {
    let options = OnnxOptions::default();
    let env = match environment(&options) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("skipping the ONNX benchmarks: {}", e.message());
            return;
        }
    };
    let backend = Arc::new(OnnxRuntime::new(options));
    let ctx = tiny_model(&backend);
    let file: PathBuf = ctx.version_path.join("model.onnx");
    let values: Vec<f32> = (0..ELEMENTS).map(|i| i as f32).collect();
    let data = Bytes::copy_from_slice(bytemuck::cast_slice(&values));
    let mut g = c.benchmark_group("onnx");

    let mut session = Session::builder(&env)
        .expect("session builder")
        .with_intra_threads(1)
        .expect("session options")
        .commit_from_file(&file)
        .expect("the model loads");
    g.bench_function("ort_direct", |b| {
        b.iter(|| {
            let input =
                TensorRef::from_array_view(([1usize, ELEMENTS], &values[..])).expect("input view");
            let outputs = session.run(ort::inputs!["INPUT0" => input]).expect("runs");
            let (_, out) = outputs["OUTPUT0"]
                .try_extract_tensor::<f32>()
                .expect("FP32 output");
            black_box(out[0]);
        })
    });

    let mut instance = backend.create_instance(&ctx, 0).expect("instance");
    let wanted = ["OUTPUT0".to_owned()];
    let parameters = Parameters::default();
    let cancel = CancelFlag::default();
    g.bench_function("nereid_execute", |b| {
        b.iter(|| {
            let inputs = [
                Tensor::new("INPUT0", DataType::Fp32, vec![1, 16], data.clone()).expect("tensor"),
            ];
            let out = instance
                .execute(&ExecRequest {
                    inputs: &inputs,
                    outputs: &wanted,
                    parameters: &parameters,
                    cancel: &cancel,
                    bindings: &nereid::core::NO_BINDINGS,
                })
                .expect("runs");
            black_box(out);
        })
    });

    let scheduler = ModelScheduler::start(ctx, backend).expect("the model starts");
    let (tx, rx) = mpsc::channel();
    g.bench_function("nereid_scheduler", |b| {
        b.iter(|| {
            let tx = tx.clone();
            let request = InferRequest {
                model_name: "tiny".into(),
                inputs: vec![
                    Tensor::new("INPUT0", DataType::Fp32, vec![1, 16], data.clone())
                        .expect("tensor"),
                ],
                ..Default::default()
            };
            scheduler.submit(request, Box::new(move |r| tx.send(r).expect("waited for")));
            black_box(rx.recv().expect("a completion").expect("runs"));
        })
    });
    g.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
