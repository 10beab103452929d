//! Scheduling: validates requests against a model's configuration, queues
//! them, and runs them on the model's instances, one thread per instance.
//!
//! The core here owns the threads; a [`Policy`] decides what runs when.
//! Instance threads *pull*: a free instance asks the policy for its next
//! batch, and the policy answers with a batch, a moment to ask again, or
//! nothing. The policies are pure (time is an argument) and unit-tested
//! with a simulated clock:
//! - [`dynamic_batcher::DynamicBatcher`]: priority levels, queue policies
//!   and batch forming for `dynamic_batching`; with batches of one request
//!   it is also the plain first-come first-served queue of a model without
//!   a batcher.
//! - [`sequence::SequencePolicy`]: `sequence_batching`, requests of one
//!   sequence to one slot of one instance, in order, with control inputs
//!   and implicit state.
//!
//! One more thread per model version, the timekeeper, applies queue
//! timeouts on time and lets go of cancelled requests at once: a request's
//! [`crate::core::CancelFlag`] pokes it when the client goes away, so a
//! cancelled request leaves the queue (and frees its buffers) even while
//! every instance is busy. Cancelled, refused and timed-out requests are
//! completed with their error and counted by reason.
//!
//! A batch runs through [`ModelInstance::execute_batch`]; the backend
//! decides whether the batch's inputs must be gathered into contiguous
//! buffers. A backend that panics fails only the batch it was running and
//! the instance is re-created. With `preserve_ordering`, responses leave in
//! the order the requests were admitted, whichever instance finished first.
//! Completions are callbacks: the front end decides how to get back to its
//! event loop.
//!
//! Caller-runs: for a model without a batcher, when nothing is queued, an
//! instance is idle, and the instance says this request is cheap
//! ([`ModelInstance::runs_inline`], for example `add_sub` on a few
//! elements), the submitting thread runs it itself instead of handing it to
//! the instance's thread and waiting for the answer to come back. That
//! saves two thread wake-ups (tens of microseconds, most of a small
//! request's latency) without changing the order of work or the
//! one-execution-at-a-time rule of an instance: the instance sits behind a
//! mutex that whichever thread runs it holds.
//!
//! Instances: every `instance_group` contributes `count` instances (per
//! listed GPU for `KIND_GPU`), named `<group>_<n>` as Triton names them;
//! their placement is recorded ([`Placement`], computed in `backend`, where
//! backends read it too) and logged.

pub mod dynamic_batcher;
pub mod ensemble;
pub mod sequence;
pub mod stats;
pub mod validate;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::backend::{Backend, ExecRequest, ModelContext, ModelInstance};
pub use crate::backend::{Placement, placements};
use crate::core::proto::ModelConfig;
use crate::core::{Code, Error, InferRequest, InferResponse, Result, Tensor};
use stats::{
    DispatchReason, ExecutionTiming, FailureReason, ModelStats, RequestTiming, StatsCollector,
};

/// Called exactly once with the request's outcome, on whichever thread
/// finished it.
pub type Completion = Box<dyn FnOnce(Result<InferResponse>) + Send>;

/// Whether `config` asks for decoupled responses
/// (`model_transaction_policy { decoupled: true }`): zero or more
/// responses per request, then a final mark.
pub fn is_decoupled(config: &ModelConfig) -> bool {
    config
        .model_transaction_policy
        .as_ref()
        .is_some_and(|p| p.decoupled)
}

/// A validated request on its way through a policy.
pub(crate) struct Job {
    /// The request; a policy may add inputs (control tensors, state) when
    /// it hands the job out.
    pub request: InferRequest,
    /// Output names to return, in response order (already validated).
    pub outputs: Vec<String>,
    /// `None` for a filler row a policy made up: never answered, not
    /// counted.
    pub complete: Option<Completion>,
    /// Arrival at the scheduler.
    pub enqueued: Instant,
    /// Batch rows the request carries (1 when the model does not batch).
    pub rows: u64,
    /// Priority level (1 = highest) the dynamic batcher put it at.
    pub priority: u32,
    /// When it times out in the queue, if it can.
    pub deadline: Option<Instant>,
    /// Free for the policy.
    pub tag: u64,
    /// Position in the response order under `preserve_ordering`.
    order: Option<u64>,
}

impl Job {
    /// A job for `request` with its validated `outputs`, arriving `now`.
    pub(crate) fn new(
        request: InferRequest,
        outputs: Vec<String>,
        complete: Option<Completion>,
        rows: u64,
        now: Instant,
    ) -> Job {
        Job {
            request,
            outputs,
            complete,
            enqueued: now,
            rows,
            priority: 0,
            deadline: None,
            tag: 0,
            order: None,
        }
    }
}

/// Jobs for one execution, and why they were dispatched.
pub(crate) struct Batch {
    /// In row order.
    pub jobs: Vec<Job>,
    /// Recorded in the statistics and metrics.
    pub reason: DispatchReason,
}

/// A policy's answer to a free instance.
pub(crate) enum Next {
    /// Run this.
    Run(Batch),
    /// Nothing yet; ask again at this moment (or when a request arrives).
    Until(Instant),
    /// Nothing until a request arrives.
    Idle,
}

/// A job a policy refuses or drops, with the error to complete it with.
pub(crate) struct Refused {
    /// The job.
    pub job: Job,
    /// What its client gets.
    pub error: Error,
    /// The failure's `reason` label.
    pub reason: FailureReason,
}

impl Refused {
    /// A job dropped because its client cancelled it.
    pub(crate) fn cancelled(job: Job) -> Refused {
        Refused {
            job,
            error: Error::new(Code::Cancelled, "request was cancelled"),
            reason: FailureReason::Canceled,
        }
    }
}

/// Which instance thread an admitted job should wake.
pub(crate) enum Wake {
    /// Any idle one.
    Any,
    /// This one (a job bound to an instance).
    Instance(usize),
    /// None: the job waits for something else.
    Nobody,
}

/// The outcome of admitting a job.
pub(crate) struct Admitted {
    /// Whom to wake.
    pub wake: Wake,
    /// The job's queue timeout, for the timekeeper.
    pub deadline: Option<std::time::Instant>,
}

/// What runs when. Called under the scheduler's lock, so every method is
/// short; pure (time is an argument), so it is tested with a simulated
/// clock.
pub(crate) trait Policy: Send {
    /// Takes a validated job, or refuses it.
    #[expect(
        clippy::result_large_err,
        reason = "a refusal hands the job back whole, on the rare path; boxing it would cost more than moving it"
    )]
    fn admit(&mut self, job: Job, now: Instant) -> Result<Admitted, Refused>;
    /// The next batch for free instance `instance`; jobs dropped on the way
    /// (cancelled, timed out) go to `dropped`.
    fn next(&mut self, instance: usize, now: Instant, dropped: &mut Vec<Refused>) -> Next;
    /// Housekeeping with no instance involved (cancelled and timed-out
    /// jobs, abandoned state); returns when to call it again.
    fn expire(&mut self, now: Instant, dropped: &mut Vec<Refused>) -> Option<Instant>;
    /// A queued job was cancelled: the next `next` or `expire` sweeps.
    fn cancelled(&mut self) {}
    /// Whether [`Policy::executed`] needs calling (it costs a lock).
    fn observes_outputs(&self) -> bool {
        false
    }
    /// After a batch ran: every job's outputs as the backend produced
    /// them, before they are narrowed to the requested ones.
    fn executed(&mut self, _instance: usize, _jobs: &[Job], _produced: &[Result<Vec<Tensor>>]) {}
    /// Jobs waiting.
    fn pending(&self) -> usize;
    /// The scheduler is shutting down: dispatch what is queued without
    /// waiting for batches to fill.
    fn close(&mut self) {}
    /// Hands every job still held to `dropped` (shutdown).
    fn drain(&mut self, dropped: &mut Vec<Refused>);
}

/// An instance, once its thread has created it. Whoever executes it holds
/// the lock.
type Slot = Mutex<Option<Box<dyn ModelInstance>>>;

struct State {
    policy: Box<dyn Policy>,
    closed: bool,
    /// Instance threads waiting for work, most recently idle last.
    idle: Vec<usize>,
    /// When the timekeeper will look next (None: only when poked).
    timekeeper_at: Option<Instant>,
    /// Something for the timekeeper to look at now.
    timekeeper_poked: bool,
    /// Next position in the response order (`preserve_ordering`).
    next_order: u64,
}

impl State {
    fn not_idle(&mut self, index: usize) {
        if let Some(pos) = self.idle.iter().position(|&i| i == index) {
            self.idle.remove(pos);
        }
    }
}

/// Responses held back until every earlier one has left
/// (`preserve_ordering`).
#[derive(Default)]
struct OrderGate {
    next: u64,
    held: BTreeMap<u64, (Completion, Result<InferResponse>)>,
    /// A thread is handing responses out; others only leave theirs.
    delivering: bool,
}

struct Shared {
    ctx: ModelContext,
    backend: Arc<dyn Backend>,
    stats: StatsCollector,
    placements: Vec<Placement>,
    state: Mutex<State>,
    /// One per instance thread.
    wake: Vec<Condvar>,
    timekeeper: Condvar,
    slots: Vec<Slot>,
    /// Present under `preserve_ordering`. Completions are called with it
    /// held, so they leave strictly in order.
    order: Option<Mutex<OrderGate>>,
    /// Caller-runs is allowed (no batcher).
    inline_ok: bool,
    /// The policy wants [`Policy::executed`].
    observe: bool,
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

/// The policy a configuration asks for.
fn policy_for(ctx: &ModelContext, instances: usize) -> Result<Box<dyn Policy>> {
    use crate::core::proto::inference::model_config::SchedulingChoice;
    Ok(match &ctx.config.scheduling_choice {
        Some(SchedulingChoice::SequenceBatching(_)) => {
            Box::new(sequence::SequencePolicy::new(ctx, instances)?)
        }
        _ => Box::new(dynamic_batcher::DynamicBatcher::new(&ctx.config)),
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a lock is held is caught at the backend boundary, so a
    // poisoned lock still guards consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ModelScheduler {
    /// Creates every instance (each on its own thread) and returns once all
    /// are ready, or with the first instance's error after stopping the rest.
    pub fn start(ctx: ModelContext, backend: Arc<dyn Backend>) -> Result<ModelScheduler> {
        use crate::core::proto::inference::model_config::SchedulingChoice;
        let placements = placements(&ctx.config);
        let count = placements.len();
        let policy = policy_for(&ctx, count)?;
        let batching = ctx.config.scheduling_choice.is_some();
        let preserve = matches!(
            &ctx.config.scheduling_choice,
            Some(SchedulingChoice::DynamicBatching(db)) if db.preserve_ordering
        );
        let shared = Arc::new(Shared {
            observe: policy.observes_outputs(),
            state: Mutex::new(State {
                policy,
                closed: false,
                idle: Vec::with_capacity(count),
                timekeeper_at: None,
                timekeeper_poked: false,
                next_order: 0,
            }),
            wake: (0..count).map(|_| Condvar::new()).collect(),
            timekeeper: Condvar::new(),
            slots: (0..count).map(|_| Mutex::new(None)).collect(),
            order: preserve.then(|| Mutex::new(OrderGate::default())),
            inline_ok: !batching,
            placements,
            ctx,
            backend,
            stats: StatsCollector::default(),
        });
        let (report, reports) = mpsc::channel::<Result<()>>();
        let mut threads = Vec::with_capacity(count + 1);
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
        let keeper_shared = Arc::clone(&shared);
        match std::thread::Builder::new()
            .name(format!("nereid-{}-timer", shared.ctx.name))
            .spawn(move || run_timekeeper(&keeper_shared))
        {
            Ok(handle) => threads.push(handle),
            Err(e) => log::error!(
                "model '{}': cannot start its timekeeper thread ({e}); queue timeouts apply only when an instance looks at the queue",
                shared.ctx.name
            ),
        }
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
            None => {
                for p in &scheduler.shared.placements {
                    log::info!(
                        "model '{}' version {}: instance {p} ready",
                        scheduler.shared.ctx.name,
                        scheduler.shared.ctx.version
                    );
                }
                Ok(scheduler)
            }
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

    /// Where each instance runs.
    pub fn placements(&self) -> &[Placement] {
        &self.shared.placements
    }

    /// Validates `request` and queues it; `complete` is called exactly once,
    /// with the validation error right away if there is one.
    pub fn submit(&self, request: InferRequest, complete: Completion) {
        let received = Instant::now();
        let shared = &self.shared;
        let outputs = match validate::validate(&shared.ctx.config, &request) {
            Ok(outputs) => outputs,
            Err(e) => {
                shared
                    .stats
                    .record_failure(received.elapsed(), FailureReason::Other);
                return complete(Err(e));
            }
        };
        let rows = request_rows(&shared.ctx.config, &request);
        let mut job = Job::new(request, outputs, Some(complete), rows, received);
        if shared.inline_ok {
            let quiet = {
                let st = lock(&shared.state);
                !st.closed && st.policy.pending() == 0
            };
            // Caller-runs (see the module doc). The state lock is released
            // first, so instance threads are never blocked behind it.
            if quiet {
                job = match self.try_run_inline(job) {
                    None => return,
                    Some(job) => job,
                };
            }
        }
        self.enqueue(job);
    }

    /// Hands `job` to the policy, or completes it with the refusal.
    fn enqueue(&self, mut job: Job) {
        let shared = &self.shared;
        let cancel = job.request.cancel.clone();
        let mut st = lock(&shared.state);
        if st.closed {
            drop(st);
            let error = unloading(&shared.ctx.name, shared.ctx.version);
            return finish_refused(
                shared,
                Refused {
                    job,
                    error,
                    reason: FailureReason::Other,
                },
            );
        }
        if shared.order.is_some() {
            job.order = Some(st.next_order);
            st.next_order += 1;
        }
        match st.policy.admit(job, Instant::now()) {
            Ok(admitted) => {
                wake(shared, &mut st, admitted.wake);
                if let Some(deadline) = admitted
                    .deadline
                    .filter(|d| st.timekeeper_at.is_none_or(|at| *d < at))
                {
                    st.timekeeper_at = Some(deadline);
                    shared.timekeeper.notify_one();
                }
            }
            Err(refused) => {
                drop(st);
                return finish_refused(shared, refused);
            }
        }
        drop(st);
        // Registered with the lock released: the hook takes it, and runs
        // at once if the request is already cancelled.
        let weak: Weak<Shared> = Arc::downgrade(shared);
        cancel.on_cancel(move || {
            if let Some(shared) = weak.upgrade() {
                let mut st = lock(&shared.state);
                st.policy.cancelled();
                st.timekeeper_poked = true;
                drop(st);
                shared.timekeeper.notify_one();
            }
        });
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
            let exec = exec_request(&job);
            // Copies to and from GPU memory (inputs in CUDA shared memory,
            // outputs bound to it) happen on the instance's thread, not the
            // submitter's (an event loop).
            let bindings = &job.request.bindings;
            let touches_gpu = !bindings.device_inputs.is_empty()
                || bindings.sinks.iter().any(|(_, s)| s.device().is_some());
            if touches_gpu || !instance.runs_inline(&exec) {
                return Some(job);
            }
            let batch = Batch {
                jobs: vec![job],
                reason: DispatchReason::Single,
            };
            run_batch(&self.shared, index, &mut guard, batch);
            return None;
        }
        Some(job)
    }

    /// Runs each sample once on every instance, directly (the queue is not
    /// involved), and returns the first error: model warmup, before the
    /// version is published.
    pub fn warmup(&self, samples: &[InferRequest]) -> Result<()> {
        let ctx = &self.shared.ctx;
        for (index, slot) in self.shared.slots.iter().enumerate() {
            let mut guard = lock(slot);
            let Some(instance) = guard.as_mut() else {
                return Err(Error::internal(format!(
                    "model '{}' instance {} is not available for warmup",
                    ctx.name, self.shared.placements[index].name
                )));
            };
            for sample in samples {
                let outputs = validate::validate(&ctx.config, sample)?;
                let exec = ExecRequest {
                    inputs: &sample.inputs,
                    outputs: &outputs,
                    parameters: &sample.parameters,
                    cancel: &sample.cancel,
                    bindings: &sample.bindings,
                };
                let produced = catch_unwind(AssertUnwindSafe(|| instance.execute(&exec)))
                    .map_err(|payload| {
                        Error::internal(format!(
                            "model '{}' instance {} panicked during warmup: {}",
                            ctx.name,
                            self.shared.placements[index].name,
                            panic_message(payload.as_ref())
                        ))
                    })??;
                validate::collect_outputs(&ctx.config, produced, &outputs, &sample.bindings)?;
            }
        }
        Ok(())
    }

    /// This model version's statistics so far.
    pub fn statistics(&self) -> ModelStats {
        self.shared.stats.snapshot()
    }

    /// Requests queued and not yet taken by an instance.
    pub fn queued(&self) -> usize {
        lock(&self.shared.state).policy.pending()
    }

    /// Stops taking requests, lets the instances finish what is queued
    /// (batches go out without waiting to fill), and joins the threads.
    /// Idempotent.
    pub fn shutdown(&self) {
        {
            let mut st = lock(&self.shared.state);
            st.closed = true;
            st.policy.close();
        }
        for cv in &self.shared.wake {
            cv.notify_all();
        }
        self.shared.timekeeper.notify_all();
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

/// Wakes the instance thread `w` names, if it is waiting.
fn wake(shared: &Shared, st: &mut State, w: Wake) {
    let index = match w {
        Wake::Any => st.idle.pop(),
        Wake::Instance(i) => st
            .idle
            .iter()
            .position(|&x| x == i)
            .map(|pos| st.idle.remove(pos)),
        Wake::Nobody => None,
    };
    if let Some(i) = index {
        shared.wake[i].notify_one();
    }
}

/// The error for a request that reaches a version after it began to
/// unload.
pub(crate) fn unloading(model: &str, version: i64) -> Error {
    Error::unavailable(format!("model '{model}' version {version} is unloading"))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// The rows a request carries: the first dimension of its inputs when the
/// model batches, 1 otherwise.
fn request_rows(config: &ModelConfig, request: &InferRequest) -> u64 {
    if config.max_batch_size > 0 {
        request
            .inputs
            .first()
            .and_then(|t| t.shape.first())
            .map_or(1, |&b| u64::try_from(b).unwrap_or(0))
    } else {
        1
    }
}

fn exec_request(job: &Job) -> ExecRequest<'_> {
    ExecRequest {
        inputs: &job.request.inputs,
        outputs: &job.outputs,
        parameters: &job.request.parameters,
        cancel: &job.request.cancel,
        bindings: &job.request.bindings,
    }
}

/// Copies the inputs of `jobs` that are in GPU memory (CUDA shared memory)
/// to pinned host memory, for a backend that reads host memory: the one
/// copy a CPU instance costs such an input, on the instance's thread. A job
/// whose copy fails is completed with the error and left out.
fn stage_device_inputs(shared: &Shared, jobs: Vec<Job>) -> Vec<Job> {
    let mut staged = Vec::with_capacity(jobs.len());
    for mut job in jobs {
        let request = &mut job.request;
        let outcome = std::mem::take(&mut request.bindings.device_inputs)
            .into_iter()
            .try_for_each(|(name, device)| {
                let bytes = crate::gpu::stage_to_host(&device)?;
                if let Some(tensor) = request.inputs.iter_mut().find(|t| t.name == name) {
                    tensor.data = bytes;
                }
                Ok::<(), Error>(())
            });
        match outcome {
            Ok(()) => staged.push(job),
            Err(error) => finish_refused(
                shared,
                Refused {
                    job,
                    error,
                    reason: FailureReason::Other,
                },
            ),
        }
    }
    staged
}

/// Completes `job` (unless it is a filler), in admission order under
/// `preserve_ordering`.
fn finish(shared: &Shared, job: Job, result: Result<InferResponse>) {
    let Some(complete) = job.complete else {
        return;
    };
    let (Some(gate_mutex), Some(position)) = (&shared.order, job.order) else {
        return complete(result);
    };
    // One thread at a time delivers, in order, with the lock released
    // around each completion: a completion may submit again (an ensemble's
    // next step) and come back here on the same thread.
    let mut gate = lock(gate_mutex);
    gate.held.insert(position, (complete, result));
    if gate.delivering {
        return;
    }
    gate.delivering = true;
    loop {
        let next = gate.next;
        let Some((complete, result)) = gate.held.remove(&next) else {
            gate.delivering = false;
            return;
        };
        gate.next += 1;
        drop(gate);
        complete(result);
        gate = lock(gate_mutex);
    }
}

fn finish_refused(shared: &Shared, refused: Refused) {
    let Refused { job, error, reason } = refused;
    if job.complete.is_some() {
        shared.stats.record_failure(job.enqueued.elapsed(), reason);
    }
    finish(shared, job, Err(error));
}

/// Where an instance thread is in its loop.
enum Step {
    Run(Batch),
    Exit,
    /// Dropped jobs to complete before asking again.
    Complete,
}

/// An instance thread: asks the policy for work whenever it is free.
fn run_instance(shared: &Shared, index: usize) {
    let mut dropped = Vec::new();
    loop {
        let step = {
            let mut st = lock(&shared.state);
            loop {
                st.not_idle(index);
                let now = Instant::now();
                let next = st.policy.next(index, now, &mut dropped);
                let waiting = match next {
                    Next::Run(batch) => break Step::Run(batch),
                    _ if !dropped.is_empty() => break Step::Complete,
                    Next::Until(_) | Next::Idle if st.closed => {
                        if st.policy.pending() == 0 {
                            break Step::Exit;
                        }
                        st.policy.drain(&mut dropped);
                        break Step::Complete;
                    }
                    Next::Until(at) => Some(at.saturating_duration_since(now)),
                    Next::Idle => None,
                };
                st.idle.push(index);
                st = match waiting {
                    Some(wait) => {
                        shared.wake[index]
                            .wait_timeout(st, wait)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                    None => shared.wake[index]
                        .wait(st)
                        .unwrap_or_else(PoisonError::into_inner),
                };
            }
        };
        for refused in dropped.drain(..) {
            finish_refused(shared, refused);
        }
        match step {
            Step::Run(batch) => {
                let mut slot = lock(&shared.slots[index]);
                run_batch(shared, index, &mut slot, batch);
            }
            Step::Complete => {}
            Step::Exit => {
                // The instance goes with its thread, not with the last
                // handle on the scheduler.
                drop(lock(&shared.slots[index]).take());
                return;
            }
        }
    }
}

/// The timekeeper thread: queue timeouts and cancellations, on time.
fn run_timekeeper(shared: &Shared) {
    let mut dropped = Vec::new();
    loop {
        {
            let mut st = lock(&shared.state);
            loop {
                if st.closed {
                    return;
                }
                st.timekeeper_poked = false;
                let now = Instant::now();
                st.timekeeper_at = st.policy.expire(now, &mut dropped);
                if !dropped.is_empty() {
                    // A dropped job may have been holding a batch back.
                    wake(shared, &mut st, Wake::Any);
                    break;
                }
                st = match st.timekeeper_at {
                    Some(at) => {
                        shared
                            .timekeeper
                            .wait_timeout(st, at.saturating_duration_since(now))
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                    None => shared
                        .timekeeper
                        .wait(st)
                        .unwrap_or_else(PoisonError::into_inner),
                };
            }
        }
        for refused in dropped.drain(..) {
            finish_refused(shared, refused);
        }
    }
}

/// Runs `batch` on the instance in `slot` (held by the caller) and
/// completes its jobs.
fn run_batch(
    shared: &Shared,
    index: usize,
    slot: &mut Option<Box<dyn ModelInstance>>,
    batch: Batch,
) {
    let ctx = &shared.ctx;
    let dequeued = Instant::now();
    let Batch { mut jobs, reason } = batch;
    if !shared.backend.takes_device_memory()
        && jobs
            .iter()
            .any(|j| !j.request.bindings.device_inputs.is_empty())
    {
        jobs = stage_device_inputs(shared, jobs);
    }
    let Some(instance) = slot.as_mut() else {
        for job in jobs {
            let error = Error::internal(format!(
                "model '{}' instance {} is not available",
                ctx.name, shared.placements[index].name
            ));
            finish_refused(
                shared,
                Refused {
                    job,
                    error,
                    reason: FailureReason::Other,
                },
            );
        }
        return;
    };
    let execs: Vec<ExecRequest<'_>> = jobs.iter().map(exec_request).collect();
    let infer_start = Instant::now();
    let executed = catch_unwind(AssertUnwindSafe(|| instance.execute_batch(&execs)));
    let infer_end = Instant::now();
    drop(execs);
    let results: Vec<Result<Vec<Tensor>>> = match executed {
        Ok(results) if results.len() == jobs.len() => results,
        Ok(results) => {
            let e = Error::internal(format!(
                "model '{}' returned {} results for a batch of {} requests",
                ctx.name,
                results.len(),
                jobs.len()
            ));
            jobs.iter().map(|_| Err(e.clone())).collect()
        }
        Err(payload) => {
            let msg = panic_message(payload.as_ref());
            let name = &shared.placements[index].name;
            log::error!(
                "model '{}' version {} instance {name} panicked: {msg}",
                ctx.name,
                ctx.version
            );
            // The instance may be half-way through a mutation; start afresh.
            match shared.backend.create_instance(ctx, index) {
                Ok(fresh) => *slot = Some(fresh),
                Err(e) => log::error!(
                    "model '{}' instance {name} could not be re-created after a panic, keeping the old one: {e}",
                    ctx.name
                ),
            }
            let e = Error::internal(format!(
                "model '{}' version {} failed: the backend panicked: {msg}",
                ctx.name, ctx.version
            ));
            jobs.iter().map(|_| Err(e.clone())).collect()
        }
    };
    if shared.observe {
        lock(&shared.state).policy.executed(index, &jobs, &results);
    }
    let mut rows = 0;
    let mut finished = Vec::with_capacity(jobs.len());
    for (job, result) in jobs.into_iter().zip(results) {
        rows += job.rows;
        let result = result.and_then(|produced| {
            validate::collect_outputs(&ctx.config, produced, &job.outputs, &job.request.bindings)
        });
        finished.push((job, result));
    }
    let done = Instant::now();
    shared.stats.record_execution(&ExecutionTiming {
        batch_size: rows,
        reason,
        compute_input: infer_start - dequeued,
        compute_infer: infer_end - infer_start,
        compute_output: done - infer_end,
    });
    for (job, result) in finished {
        if job.complete.is_none() {
            continue;
        }
        match result {
            Ok(outputs) => {
                shared.stats.record_success(&RequestTiming {
                    batch_size: job.rows,
                    total: done - job.enqueued,
                    queue: dequeued - job.enqueued,
                    compute_input: infer_start - dequeued,
                    compute_infer: infer_end - infer_start,
                    compute_output: done - infer_end,
                });
                let response = InferResponse {
                    model_name: ctx.name.clone(),
                    model_version: ctx.version,
                    id: job.request.id.clone(),
                    outputs,
                    parameters: Default::default(),
                };
                finish(shared, job, Ok(response));
            }
            Err(error) => {
                let reason = if error.code() == Code::Cancelled {
                    FailureReason::Canceled
                } else {
                    FailureReason::Backend
                };
                shared.stats.record_failure(done - job.enqueued, reason);
                finish(shared, job, Err(error));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendRegistry;
    use crate::core::proto::inference::model_instance_group::Kind as GroupKind;
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
        // Cancelled once the instance has taken it: the running backend
        // must notice.
        let taken = Instant::now();
        while s.queued() > 0 {
            assert!(taken.elapsed() < Duration::from_secs(2), "never taken");
            std::thread::yield_now();
        }
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

    /// A backend whose instances meet at a barrier: a batch of requests
    /// completes only if that many instances execute at the same time.
    struct Rendezvous {
        barrier: Arc<std::sync::Barrier>,
        executions: Arc<Mutex<Vec<usize>>>,
    }

    struct RendezvousInstance {
        index: usize,
        barrier: Arc<std::sync::Barrier>,
        executions: Arc<Mutex<Vec<usize>>>,
    }

    impl Backend for Rendezvous {
        fn name(&self) -> &str {
            "rendezvous"
        }

        fn create_instance(
            &self,
            _ctx: &ModelContext,
            index: usize,
        ) -> Result<Box<dyn ModelInstance>> {
            Ok(Box::new(RendezvousInstance {
                index,
                barrier: Arc::clone(&self.barrier),
                executions: Arc::clone(&self.executions),
            }))
        }
    }

    impl ModelInstance for RendezvousInstance {
        fn execute(&mut self, request: &ExecRequest<'_>) -> Result<Vec<Tensor>> {
            lock(&self.executions).push(self.index);
            if request.parameters.get("meet").is_some() {
                self.barrier.wait();
            }
            Ok(vec![Tensor {
                name: "OUTPUT0".into(),
                ..request.inputs[0].clone()
            }])
        }
    }

    fn rendezvous(instances: i32, meet: usize) -> (ModelScheduler, Arc<Mutex<Vec<usize>>>) {
        use crate::core::proto::ModelInstanceGroup;
        let mut c = config("rv", "rendezvous", DataType::Int32, 1, 0);
        c.instance_group = vec![ModelInstanceGroup {
            name: "rv".into(),
            count: instances,
            kind: GroupKind::Cpu as i32,
            ..Default::default()
        }];
        let executions = Arc::new(Mutex::new(Vec::new()));
        let backend = Arc::new(Rendezvous {
            barrier: Arc::new(std::sync::Barrier::new(meet)),
            executions: Arc::clone(&executions),
        });
        let ctx = ModelContext {
            name: c.name.clone(),
            version: 1,
            model_path: Default::default(),
            version_path: Default::default(),
            config: Arc::new(c),
        };
        (ModelScheduler::start(ctx, backend).unwrap(), executions)
    }

    fn one_input(value: i32) -> InferRequest {
        InferRequest {
            inputs: vec![i32_tensor("INPUT0", vec![4], &[value; 4])],
            ..Default::default()
        }
    }

    #[test]
    fn instances_of_one_model_run_at_the_same_time() {
        let (s, _) = rendezvous(3, 3);
        assert_eq!(
            s.placements()
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["rv_0", "rv_1", "rv_2"]
        );
        let (tx, rx) = mpsc::channel();
        for v in 0..3 {
            let mut r = one_input(v);
            r.parameters.set("meet", ParamValue::Bool(true));
            let tx = tx.clone();
            s.submit(r, Box::new(move |r| tx.send(r).unwrap()));
        }
        // Three requests meet at a barrier of three: only possible when
        // three instances execute at once.
        for _ in 0..3 {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("all three ran concurrently")
                .unwrap();
        }
    }

    #[test]
    fn warmup_runs_every_sample_on_every_instance() {
        let (s, executions) = rendezvous(3, 1);
        s.warmup(&[one_input(1), one_input(2)]).unwrap();
        let mut ran = lock(&executions).clone();
        ran.sort_unstable();
        assert_eq!(ran, [0, 0, 1, 1, 2, 2]);
        let e = s.warmup(&[InferRequest::default()]).unwrap_err();
        assert!(e.message().contains("expected 1 inputs"), "{e}");
    }

    #[test]
    fn gpu_groups_place_count_instances_per_listed_gpu() {
        use crate::core::proto::ModelInstanceGroup;
        let mut c = config("m", "identity", DataType::Int32, 1, 0);
        c.instance_group = vec![
            ModelInstanceGroup {
                name: "g".into(),
                count: 2,
                kind: GroupKind::Gpu as i32,
                gpus: vec![0, 1],
                ..Default::default()
            },
            ModelInstanceGroup {
                name: "c".into(),
                count: 1,
                kind: GroupKind::Cpu as i32,
                ..Default::default()
            },
        ];
        let placed: Vec<String> = placements(&c).iter().map(ToString::to_string).collect();
        assert_eq!(
            placed,
            [
                "g_0 (GPU device 0)",
                "g_1 (GPU device 0)",
                "g_2 (GPU device 1)",
                "g_3 (GPU device 1)",
                "c_0 (CPU)"
            ]
        );
    }

    fn delayed(value: i32, ms: i64) -> InferRequest {
        let mut r = InferRequest {
            inputs: vec![i32_tensor("INPUT0", vec![1, 4], &[value; 4])],
            ..Default::default()
        };
        r.parameters.set("execute_delay_ms", ParamValue::Int(ms));
        r
    }

    #[test]
    fn preserve_ordering_answers_in_admission_order() {
        use crate::core::proto::inference::model_config::SchedulingChoice;
        use crate::core::proto::{ModelDynamicBatching, ModelInstanceGroup};
        let mut c = config("ordered", "identity", DataType::Int32, 1, 1);
        c.instance_group = vec![ModelInstanceGroup {
            name: "ordered".into(),
            count: 2,
            kind: GroupKind::Cpu as i32,
            ..Default::default()
        }];
        c.scheduling_choice = Some(SchedulingChoice::DynamicBatching(ModelDynamicBatching {
            preserve_ordering: true,
            ..Default::default()
        }));
        let s = start(c).unwrap();
        let (tx, rx) = mpsc::channel();
        for (v, ms) in [(1, 300), (2, 0), (3, 0)] {
            let tx = tx.clone();
            s.submit(
                delayed(v, ms),
                Box::new(move |r| tx.send(as_i32(&r.unwrap().outputs[0])[0]).unwrap()),
            );
        }
        let order: Vec<i32> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(order, [1, 2, 3]);
    }

    #[test]
    fn a_cancelled_queued_request_is_answered_while_the_instance_is_busy() {
        use crate::core::proto::ModelInstanceGroup;
        let mut c = config("busy", "identity", DataType::Int32, 1, 8);
        c.instance_group = vec![ModelInstanceGroup {
            name: "busy".into(),
            count: 1,
            kind: GroupKind::Cpu as i32,
            ..Default::default()
        }];
        let s = start(c).unwrap();
        let (tx, rx) = mpsc::channel();
        let busy_tx = tx.clone();
        let busy = delayed(1, 3000);
        let busy_flag = busy.cancel.clone();
        s.submit(
            busy,
            Box::new(move |r| busy_tx.send(("busy", r.map(|_| ()))).unwrap()),
        );
        // Not cheap (a delay), so it never runs on the caller's thread,
        // which could take the instance between the first request leaving
        // the queue and its execution starting.
        let queued = delayed(2, 1);
        let flag = queued.cancel.clone();
        s.submit(
            queued,
            Box::new(move |r| tx.send(("queued", r.map(|_| ()))).unwrap()),
        );
        // The instance takes the first request; the second stays queued.
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.queued() != 1 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(s.queued(), 1);
        flag.cancel();
        let (which, result) = rx.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!(which, "queued");
        assert_eq!(result.unwrap_err().code(), Code::Cancelled);
        assert_eq!(s.queued(), 0);
        let stats = s.statistics();
        assert_eq!(stats.failures[&FailureReason::Canceled], 1);
        busy_flag.cancel();
        let (which, _) = rx.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!(which, "busy");
    }
}
