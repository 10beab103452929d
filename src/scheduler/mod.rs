//! Scheduling: validates requests against a model's configuration, queues
//! them, and runs them on the model's instances, one thread per instance.
//!
//! The direct scheduler here is first-come first-served: every instance
//! thread takes the oldest queued request when it is free. Requests whose
//! client went away are dropped when they reach the head of the queue, and
//! a backend that panics fails only the request it was running (the
//! instance is then re-created). Completions are callbacks: the front end
//! decides how to get back to its event loop.

pub mod validate;

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::backend::{Backend, ExecRequest, ModelContext, ModelInstance};
use crate::core::{Code, Error, InferRequest, InferResponse, Result};

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

struct Shared {
    ctx: ModelContext,
    queue: Mutex<Queue>,
    ready: Condvar,
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
        let shared = Arc::new(Shared {
            ctx,
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        let count = instance_count(&shared.ctx);
        let (report, reports) = mpsc::channel::<Result<()>>();
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let thread_shared = Arc::clone(&shared);
            let backend = Arc::clone(&backend);
            let thread_report = report.clone();
            let name = format!("nereid-{}-{}", shared.ctx.name, index);
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                match backend.create_instance(&thread_shared.ctx, index) {
                    Ok(instance) => {
                        let _ = thread_report.send(Ok(()));
                        drop(thread_report);
                        run_instance(&thread_shared, backend.as_ref(), index, instance);
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
        let outputs = match validate::validate(&self.shared.ctx.config, &request) {
            Ok(outputs) => outputs,
            Err(e) => return complete(Err(e)),
        };
        let mut queue = self.shared.queue.lock().expect("scheduler queue poisoned");
        if queue.closed {
            drop(queue);
            return complete(Err(Error::unavailable(format!(
                "model '{}' version {} is unloading",
                self.shared.ctx.name, self.shared.ctx.version
            ))));
        }
        queue.jobs.push_back(Job {
            request,
            outputs,
            complete,
            enqueued: Instant::now(),
        });
        drop(queue);
        self.shared.ready.notify_one();
    }

    /// Requests queued and not yet taken by an instance.
    pub fn queued(&self) -> usize {
        self.shared
            .queue
            .lock()
            .expect("scheduler queue poisoned")
            .jobs
            .len()
    }

    /// Stops taking requests, lets the instances finish what is queued, and
    /// joins their threads. Idempotent.
    pub fn shutdown(&self) {
        self.shared
            .queue
            .lock()
            .expect("scheduler queue poisoned")
            .closed = true;
        self.shared.ready.notify_all();
        let threads =
            std::mem::take(&mut *self.threads.lock().expect("scheduler threads poisoned"));
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

fn run_instance(
    shared: &Shared,
    backend: &dyn Backend,
    index: usize,
    mut instance: Box<dyn ModelInstance>,
) {
    let ctx = &shared.ctx;
    loop {
        let job = {
            let mut queue = shared.queue.lock().expect("scheduler queue poisoned");
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                if queue.closed {
                    return;
                }
                queue = shared.ready.wait(queue).expect("scheduler queue poisoned");
            }
        };
        let Job {
            request,
            outputs,
            complete,
            enqueued,
        } = job;
        if request.cancel.is_cancelled() {
            complete(Err(Error::new(Code::Cancelled, "request was cancelled")));
            continue;
        }
        log::trace!(
            "model '{}' instance {index}: request queued for {:?}",
            ctx.name,
            enqueued.elapsed()
        );
        let exec = ExecRequest {
            inputs: &request.inputs,
            outputs: &outputs,
            parameters: &request.parameters,
            cancel: &request.cancel,
        };
        let result = catch_unwind(AssertUnwindSafe(|| instance.execute(&exec)));
        let result = match result {
            Ok(r) => {
                r.and_then(|produced| validate::collect_outputs(&ctx.config, produced, &outputs))
            }
            Err(payload) => {
                let msg = panic_message(payload.as_ref());
                log::error!(
                    "model '{}' version {} instance {index} panicked: {msg}",
                    ctx.name,
                    ctx.version
                );
                // The instance may be half-way through a mutation; start afresh.
                match backend.create_instance(ctx, index) {
                    Ok(fresh) => instance = fresh,
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
        complete(result.map(|outputs| InferResponse {
            model_name: ctx.name.clone(),
            model_version: ctx.version,
            id: request.id.clone(),
            outputs,
            parameters: Default::default(),
        }));
    }
}
