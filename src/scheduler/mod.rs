//! Scheduling: validates requests against a model's configuration, queues
//! them, and runs them on the model's instances, one thread per instance.
//!
//! The direct scheduler here is first-come first-served: every instance
//! thread takes the oldest queued request when it is free. Requests whose
//! client went away are dropped when they reach the head of the queue, and
//! a backend that panics fails only the request it was running (the
//! instance is then re-created). Completions are callbacks: the front end
//! decides how to get back to its event loop.
//!
//! Caller-runs: when nothing is queued, an instance is idle, and the
//! instance says this request is cheap ([`ModelInstance::runs_inline`], for
//! example `add_sub` on a few elements), the submitting thread runs it
//! itself instead of handing it to the instance's thread and waiting for
//! the answer to come back. That saves two thread wake-ups (tens of
//! microseconds, most of a small request's latency) without changing the
//! order of work or the one-execution-at-a-time rule of an instance: the
//! instance sits behind a mutex that whichever thread runs it holds.

pub mod stats;
pub mod validate;

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::backend::{Backend, ExecRequest, ModelContext, ModelInstance};
use crate::core::{Code, Error, InferRequest, InferResponse, Result};
use stats::{Execution, ModelStats, StatsCollector};

/// Called exactly once with the request's outcome, on whichever thread
/// finished it.
pub type Completion = Box<dyn FnOnce(Result<InferResponse>) + Send>;

struct Job {
    request: InferRequest,
    /// Output names to return, in response order (already validated).
    outputs: Vec<String>,
    complete: Completion,
    enqueued: Instant,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// An instance, once its thread has created it. Whoever executes it holds
/// the lock.
type Slot = Mutex<Option<Box<dyn ModelInstance>>>;

struct Shared {
    ctx: ModelContext,
    backend: Arc<dyn Backend>,
    stats: StatsCollector,
    queue: Mutex<Queue>,
    ready: Condvar,
    slots: Vec<Slot>,
}

/// Runs one model version's instances and feeds them requests.
pub struct ModelScheduler {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for ModelScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelScheduler")
            .field("model", &self.shared.ctx.name)
            .field("version", &self.shared.ctx.version)
            .finish()
    }
}

/// Total instance count over the configuration's instance groups (one when
/// none is configured).
fn instance_count(ctx: &ModelContext) -> usize {
    let total: i64 = ctx
        .config
        .instance_group
        .iter()
        .map(|g| i64::from(g.count.max(1)))
        .sum();
    usize::try_from(total).unwrap_or(1).max(1)
}

impl ModelScheduler {
    /// Creates every instance (each on its own thread) and returns once all
    /// are ready, or with the first instance's error after stopping the rest.
    pub fn start(ctx: ModelContext, backend: Arc<dyn Backend>) -> Result<ModelScheduler> {
        let count = instance_count(&ctx);
        let shared = Arc::new(Shared {
            ctx,
            backend,
            stats: StatsCollector::default(),
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            slots: (0..count).map(|_| Mutex::new(None)).collect(),
        });
        let (report, reports) = mpsc::channel::<Result<()>>();
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let thread_shared = Arc::clone(&shared);
            let thread_report = report.clone();
            let name = format!("nereid-{}-{}", shared.ctx.name, index);
            let spawned =
                std::thread::Builder::new().name(name).spawn(move || {
                    match thread_shared
                        .backend
                        .create_instance(&thread_shared.ctx, index)
                    {
                        Ok(instance) => {
                            *lock(&thread_shared.slots[index]) = Some(instance);
                            let _ = thread_report.send(Ok(()));
                            drop(thread_report);
                            run_instance(&thread_shared, index);
                        }
                        Err(e) => {
                            let _ = thread_report.send(Err(e));
                        }
                    }
                });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    let _ = report.send(Err(Error::internal(format!(
                        "cannot start a thread for model '{}': {e}",
                        shared.ctx.name
                    ))));
                }
            }
        }
        drop(report);
        let scheduler = ModelScheduler {
            shared,
            threads: Mutex::new(threads),
        };
        let mut first_error = None;
        for _ in 0..count {
            match reports.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert_with(|| {
                        Error::internal("a model instance thread exited during creation")
                    });
                }
            }
        }
        match first_error {
            None => Ok(scheduler),
            Some(e) => {
                scheduler.shutdown();
                Err(e)
            }
        }
    }

    /// The model version this scheduler serves.
    pub fn context(&self) -> &ModelContext {
        &self.shared.ctx
    }

    /// Validates `request` and queues it; `complete` is called exactly once,
    /// with the validation error right away if there is one.
    pub fn submit(&self, request: InferRequest, complete: Completion) {
        let received = Instant::now();
        let outputs = match validate::validate(&self.shared.ctx.config, &request) {
            Ok(outputs) => outputs,
            Err(e) => {
                self.shared.stats.record_failure(received.elapsed());
                return complete(Err(e));
            }
        };
        let job = Job {
            request,
            outputs,
            complete,
            enqueued: received,
        };
        let mut queue = lock(&self.shared.queue);
        if queue.closed {
            drop(queue);
            self.shared.stats.record_failure(received.elapsed());
            return (job.complete)(Err(Error::unavailable(format!(
                "model '{}' version {} is unloading",
                self.shared.ctx.name, self.shared.ctx.version
            ))));
        }
        if queue.jobs.is_empty() {
            // Caller-runs (see the module doc). The queue lock is released
            // first, so instance threads are never blocked behind it.
            drop(queue);
            let job = match self.try_run_inline(job) {
                None => return,
                Some(job) => job,
            };
            queue = lock(&self.shared.queue);
            queue.jobs.push_back(job);
        } else {
            queue.jobs.push_back(job);
        }
        drop(queue);
        self.shared.ready.notify_one();
    }

    /// Runs `job` on this thread if an instance is idle and takes it as
    /// cheap; gives the job back otherwise.
    fn try_run_inline(&self, job: Job) -> Option<Job> {
        for (index, slot) in self.shared.slots.iter().enumerate() {
            let Ok(mut guard) = slot.try_lock() else {
                continue;
            };
            let Some(instance) = guard.as_mut() else {
                continue;
            };
            let exec = ExecRequest {
                inputs: &job.request.inputs,
                outputs: &job.outputs,
                parameters: &job.request.parameters,
                cancel: &job.request.cancel,
            };
            if !instance.runs_inline(&exec) {
                return Some(job);
            }
            execute_job(&self.shared, index, &mut guard, job);
            return None;
        }
        Some(job)
    }

    /// This model version's statistics so far.
    pub fn statistics(&self) -> ModelStats {
        self.shared.stats.snapshot()
    }

    /// Requests queued and not yet taken by an instance.
    pub fn queued(&self) -> usize {
        lock(&self.shared.queue).jobs.len()
    }

    /// Stops taking requests, lets the instances finish what is queued, and
    /// joins their threads. Idempotent.
    pub fn shutdown(&self) {
        lock(&self.shared.queue).closed = true;
        self.shared.ready.notify_all();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for ModelScheduler {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// The request's batch size: the first dimension of its inputs when the
/// model batches, 1 otherwise.
fn batch_size(ctx: &ModelContext, request: &InferRequest) -> u64 {
    if ctx.config.max_batch_size > 0 {
        request
            .inputs
            .first()
            .and_then(|t| t.shape.first())
            .map_or(1, |&b| u64::try_from(b).unwrap_or(0))
    } else {
        1
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a lock is held is caught at the backend boundary, so a
    // poisoned lock still guards consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An instance thread: takes the oldest job whenever it is free.
fn run_instance(shared: &Shared, index: usize) {
    loop {
        let job = {
            let mut queue = lock(&shared.queue);
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                if queue.closed {
                    drop(queue);
                    // The instance goes with its thread, not with the last
                    // handle on the scheduler.
                    drop(lock(&shared.slots[index]).take());
                    return;
                }
                queue = shared
                    .ready
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let mut slot = lock(&shared.slots[index]);
        execute_job(shared, index, &mut slot, job);
    }
}

/// Runs one job on the instance in `slot` (held by the caller) and
/// completes it.
fn execute_job(shared: &Shared, index: usize, slot: &mut Option<Box<dyn ModelInstance>>, job: Job) {
    let ctx = &shared.ctx;
    let Job {
        request,
        outputs,
        complete,
        enqueued,
    } = job;
    let dequeued = Instant::now();
    if request.cancel.is_cancelled() {
        shared.stats.record_failure(enqueued.elapsed());
        return complete(Err(Error::new(Code::Cancelled, "request was cancelled")));
    }
    let Some(instance) = slot.as_mut() else {
        shared.stats.record_failure(enqueued.elapsed());
        return complete(Err(Error::internal(format!(
            "model '{}' instance {index} is not available",
            ctx.name
        ))));
    };
    let exec = ExecRequest {
        inputs: &request.inputs,
        outputs: &outputs,
        parameters: &request.parameters,
        cancel: &request.cancel,
    };
    let infer_start = Instant::now();
    let executed = catch_unwind(AssertUnwindSafe(|| instance.execute(&exec)));
    let infer_end = Instant::now();
    let result = match executed {
        Ok(r) => r.and_then(|produced| validate::collect_outputs(&ctx.config, produced, &outputs)),
        Err(payload) => {
            let msg = panic_message(payload.as_ref());
            log::error!(
                "model '{}' version {} instance {index} panicked: {msg}",
                ctx.name,
                ctx.version
            );
            // The instance may be half-way through a mutation; start afresh.
            match shared.backend.create_instance(ctx, index) {
                Ok(fresh) => *slot = Some(fresh),
                Err(e) => log::error!(
                    "model '{}' instance {index} could not be re-created after a panic, keeping the old one: {e}",
                    ctx.name
                ),
            }
            Err(Error::internal(format!(
                "model '{}' version {} failed: the backend panicked: {msg}",
                ctx.name, ctx.version
            )))
        }
    };
    let done = Instant::now();
    match &result {
        Ok(_) => shared.stats.record_success(&Execution {
            batch_size: batch_size(ctx, &request),
            total: done - enqueued,
            queue: dequeued - enqueued,
            compute_input: infer_start - dequeued,
            compute_infer: infer_end - infer_start,
            compute_output: done - infer_end,
        }),
        Err(_) => shared.stats.record_failure(done - enqueued),
    }
    complete(result.map(|outputs| InferResponse {
        model_name: ctx.name.clone(),
        model_version: ctx.version,
        id: request.id,
        outputs,
        parameters: Default::default(),
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendRegistry;
    use crate::core::proto::{ModelConfig, ModelInput, ModelOutput, ModelParameter};
    use crate::core::{DataType, ParamValue, RequestedOutput, Tensor};
    use bytes::Bytes;
    use std::sync::Arc;
    use std::time::Duration;

    fn io(name: &str, dt: DataType, dims: &[i64]) -> (ModelInput, ModelOutput) {
        (
            ModelInput {
                name: name.replace("OUT", "IN"),
                data_type: dt.config_enum(),
                dims: dims.to_vec(),
                ..Default::default()
            },
            ModelOutput {
                name: name.to_string(),
                data_type: dt.config_enum(),
                dims: dims.to_vec(),
                ..Default::default()
            },
        )
    }

    fn config(
        name: &str,
        backend: &str,
        dt: DataType,
        pairs: usize,
        max_batch: i32,
    ) -> ModelConfig {
        let (input, output) = (0..pairs)
            .map(|i| io(&format!("OUTPUT{i}"), dt, &[4]))
            .unzip();
        ModelConfig {
            name: name.to_string(),
            backend: backend.to_string(),
            max_batch_size: max_batch,
            input,
            output,
            ..Default::default()
        }
    }

    fn start(config: ModelConfig) -> Result<ModelScheduler> {
        let backend = BackendRegistry::with_builtins().resolve(&config)?;
        let ctx = ModelContext {
            name: config.name.clone(),
            version: 1,
            model_path: Default::default(),
            version_path: Default::default(),
            config: Arc::new(config),
        };
        ModelScheduler::start(ctx, backend)
    }

    fn run(s: &ModelScheduler, request: InferRequest) -> Result<InferResponse> {
        let (tx, rx) = mpsc::channel();
        s.submit(request, Box::new(move |r| tx.send(r).unwrap()));
        rx.recv_timeout(Duration::from_secs(10))
            .expect("completion")
    }

    fn i32_tensor(name: &str, shape: Vec<i64>, values: &[i32]) -> Tensor {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::new(name, DataType::Int32, shape, Bytes::from(data)).unwrap()
    }

    fn as_i32(t: &Tensor) -> Vec<i32> {
        t.data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn add_sub_int32() {
        let s = start(config("simple", "add_sub", DataType::Int32, 2, 8)).unwrap();
        let r = run(
            &s,
            InferRequest {
                model_name: "simple".into(),
                id: Some("7".into()),
                inputs: vec![
                    i32_tensor("INPUT0", vec![1, 4], &[1, 2, 3, i32::MAX]),
                    i32_tensor("INPUT1", vec![1, 4], &[10, 20, 30, 1]),
                ],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.id.as_deref(), Some("7"));
        assert_eq!(r.outputs[0].name, "OUTPUT0");
        assert_eq!(as_i32(&r.outputs[0]), vec![11, 22, 33, i32::MIN]);
        assert_eq!(as_i32(&r.outputs[1]), vec![-9, -18, -27, i32::MAX - 1]);
        assert_eq!(r.outputs[1].shape, vec![1, 4]);
        let _ = run(&s, InferRequest::default()).unwrap_err();
        let stats = s.statistics();
        assert_eq!((stats.success.count, stats.fail.count), (1, 1));
        assert_eq!((stats.inference_count, stats.execution_count), (1, 1));
        assert_eq!(stats.batches[&1].compute_infer.count, 1);
    }

    #[test]
    fn add_sub_strings_and_requested_output_order() {
        let s = start(config("simple_string", "add_sub", DataType::Bytes, 2, 0)).unwrap();
        let strings = |vals: &[&str]| {
            let mut raw = Vec::new();
            for v in vals {
                crate::core::tensor::push_bytes_element(&mut raw, v.as_bytes());
            }
            Bytes::from(raw)
        };
        let r = run(
            &s,
            InferRequest {
                inputs: vec![
                    Tensor::new(
                        "INPUT0",
                        DataType::Bytes,
                        vec![4],
                        strings(&["1", "2", "3", "-4"]),
                    )
                    .unwrap(),
                    Tensor::new(
                        "INPUT1",
                        DataType::Bytes,
                        vec![4],
                        strings(&["5", "5", "5", "5"]),
                    )
                    .unwrap(),
                ],
                outputs: vec![RequestedOutput {
                    name: "OUTPUT1".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.outputs.len(), 1);
        let got = crate::core::tensor::split_bytes_elements(&r.outputs[0].data).unwrap();
        assert_eq!(got, vec![&b"-4"[..], b"-3", b"-2", b"-9"]);

        let bad = run(
            &s,
            InferRequest {
                inputs: vec![
                    Tensor::new(
                        "INPUT0",
                        DataType::Bytes,
                        vec![4],
                        strings(&["x", "2", "3", "4"]),
                    )
                    .unwrap(),
                    Tensor::new(
                        "INPUT1",
                        DataType::Bytes,
                        vec![4],
                        strings(&["5", "5", "5", "5"]),
                    )
                    .unwrap(),
                ],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(bad.message().contains("not a decimal integer"), "{bad}");
    }

    #[test]
    fn validation_messages() {
        let s = start(config("simple", "add_sub", DataType::Int32, 2, 8)).unwrap();
        let one = |t: Tensor| InferRequest {
            inputs: vec![t],
            ..Default::default()
        };
        let e = run(&s, one(i32_tensor("INPUT0", vec![1, 4], &[0; 4]))).unwrap_err();
        assert_eq!(
            e.message(),
            "expected 2 inputs but got 1 inputs for model 'simple'. Got inputs ['INPUT0'], but missing required inputs ['INPUT1']. Please provide all required inputs."
        );
        let e = run(&s, one(i32_tensor("INPUT9", vec![1, 4], &[0; 4]))).unwrap_err();
        assert_eq!(
            e.message(),
            "unexpected inference input 'INPUT9' for model 'simple'"
        );

        let two = |a: Tensor, b: Tensor| InferRequest {
            inputs: vec![a, b],
            ..Default::default()
        };
        let e = run(
            &s,
            two(
                i32_tensor("INPUT0", vec![2, 2], &[0; 4]),
                i32_tensor("INPUT1", vec![2, 2], &[0; 4]),
            ),
        )
        .unwrap_err();
        assert!(
            e.message().starts_with("unexpected shape for input 'INPUT0' for model 'simple'. Expected [-1,4], got [2,2]."),
            "{e}"
        );
        assert!(e.message().contains("batch dimension"));
        let e = run(
            &s,
            two(
                i32_tensor("INPUT0", vec![9, 4], &[0; 36]),
                i32_tensor("INPUT1", vec![9, 4], &[0; 36]),
            ),
        )
        .unwrap_err();
        assert_eq!(
            e.message(),
            "inference request batch-size must be <= 8 for 'simple'"
        );
        let fp = Tensor::new(
            "INPUT1",
            DataType::Fp32,
            vec![1, 4],
            Bytes::from(vec![0; 16]),
        )
        .unwrap();
        let e = run(&s, two(i32_tensor("INPUT0", vec![1, 4], &[0; 4]), fp)).unwrap_err();
        assert_eq!(
            e.message(),
            "inference input 'INPUT1' data-type is 'FP32', but model 'simple' expects 'INT32'"
        );
        let short = Tensor {
            name: "INPUT1".into(),
            datatype: DataType::Int32,
            shape: vec![1, 4],
            data: Bytes::from(vec![0; 12]),
        };
        let e = run(&s, two(i32_tensor("INPUT0", vec![1, 4], &[0; 4]), short)).unwrap_err();
        assert_eq!(
            e.message(),
            "input byte size mismatch for input 'INPUT1' for model 'simple'. Expected 16, got 12"
        );
        let mut dup = two(
            i32_tensor("INPUT0", vec![1, 4], &[0; 4]),
            i32_tensor("INPUT1", vec![1, 4], &[0; 4]),
        );
        dup.id = Some("abc".into());
        dup.outputs = vec![
            RequestedOutput {
                name: "OUTPUT0".into(),
                ..Default::default()
            },
            RequestedOutput {
                name: "OUTPUT0".into(),
                ..Default::default()
            },
        ];
        let e = run(&s, dup).unwrap_err();
        assert!(
            e.message()
                .starts_with("[request id: abc] output 'OUTPUT0'"),
            "{e}"
        );
    }

    #[test]
    fn panicking_backend_fails_one_request_and_stays_up() {
        let s = start(config("fault", "fault", DataType::Int32, 1, 0)).unwrap();
        for _ in 0..2 {
            let e = run(
                &s,
                InferRequest {
                    inputs: vec![i32_tensor("INPUT0", vec![4], &[1, 2, 3, 4])],
                    ..Default::default()
                },
            )
            .unwrap_err();
            assert_eq!(e.code(), Code::Internal);
            assert!(e.message().contains("panicked"), "{e}");
        }
    }

    #[test]
    fn delay_is_cancellable_and_shutdown_drains() {
        let mut c = config("delay", "identity", DataType::Int32, 1, 8);
        c.parameters.insert(
            "execute_delay_ms".into(),
            ModelParameter {
                string_value: "5000".into(),
            },
        );
        let s = start(c).unwrap();
        let request = InferRequest {
            inputs: vec![i32_tensor("INPUT0", vec![1, 4], &[1, 2, 3, 4])],
            ..Default::default()
        };
        let cancelled = request.clone();
        let (tx, rx) = mpsc::channel();
        s.submit(cancelled.clone(), Box::new(move |r| tx.send(r).unwrap()));
        std::thread::sleep(Duration::from_millis(50));
        cancelled.cancel.cancel();
        let e = rx
            .recv_timeout(Duration::from_secs(2))
            .unwrap()
            .unwrap_err();
        assert_eq!(e.code(), Code::Cancelled);

        // A clone shares the cancel flag, so the next request gets its own.
        let mut quick = InferRequest {
            cancel: Default::default(),
            ..request
        };
        quick
            .parameters
            .set("execute_delay_ms", ParamValue::Int(20));
        let (tx, rx) = mpsc::channel();
        s.submit(quick, Box::new(move |r| tx.send(r).unwrap()));
        s.shutdown();
        let r = rx
            .try_recv()
            .expect("drained before shutdown returned")
            .unwrap();
        assert_eq!(as_i32(&r.outputs[0]), vec![1, 2, 3, 4]);
        let (tx, rx) = mpsc::channel();
        s.submit(
            InferRequest {
                inputs: vec![i32_tensor("INPUT0", vec![1, 4], &[0; 4])],
                ..Default::default()
            },
            Box::new(move |r| tx.send(r).unwrap()),
        );
        assert_eq!(rx.recv().unwrap().unwrap_err().code(), Code::Unavailable);
    }

    /// Which thread completed a request, and whether it succeeded.
    fn completing_thread(
        s: &ModelScheduler,
        request: InferRequest,
    ) -> (std::thread::ThreadId, bool) {
        let (tx, rx) = mpsc::channel();
        s.submit(
            request,
            Box::new(move |r| tx.send((std::thread::current().id(), r.is_ok())).unwrap()),
        );
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn cheap_requests_run_on_the_caller_when_an_instance_is_idle() {
        let caller = std::thread::current().id();
        let s = start(config("simple", "add_sub", DataType::Int32, 2, 8)).unwrap();
        let pair = || InferRequest {
            inputs: vec![
                i32_tensor("INPUT0", vec![1, 4], &[1, 2, 3, 4]),
                i32_tensor("INPUT1", vec![1, 4], &[1, 2, 3, 4]),
            ],
            ..Default::default()
        };
        assert_eq!(completing_thread(&s, pair()), (caller, true));
        assert_eq!(s.statistics().success.count, 1);

        // A delayed identity is handed to its instance thread.
        let s = start(config("delay", "identity", DataType::Int32, 1, 8)).unwrap();
        let mut delayed = InferRequest {
            inputs: vec![i32_tensor("INPUT0", vec![1, 4], &[1, 2, 3, 4])],
            ..Default::default()
        };
        delayed
            .parameters
            .set("execute_delay_ms", ParamValue::Int(1));
        let (thread, ok) = completing_thread(&s, delayed);
        assert!(ok);
        assert_ne!(thread, caller);
    }

    #[test]
    fn bad_backend_config_fails_start() {
        let e = start(config("x", "add_sub", DataType::Int32, 1, 0)).unwrap_err();
        assert!(e.message().contains("exactly 2 inputs"), "{e}");
        let e = start(config("x", "nope", DataType::Int32, 1, 0)).unwrap_err();
        assert!(e.message().contains("backend 'nope'"), "{e}");
    }
}
