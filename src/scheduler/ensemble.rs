//! The ensemble scheduler: runs a `platform: "ensemble"` model as a DAG of
//! steps over other models' schedulers.
//!
//! [`Plan::new`] turns `ensemble_scheduling` into a checked graph of steps
//! and tensors: every tensor a step reads is an ensemble input or exactly
//! one step's output, every step output and ensemble input is used, every
//! ensemble output is produced, and the steps have no cycle. Errors name the
//! step (numbered from 1 in configuration order, with its model) and the
//! tensor. The checks that need the composing models' configurations
//! (datatypes, shapes, batching) live in the repository, which has them.
//!
//! An [`EnsembleScheduler`] owns no threads and no queue. A request starts
//! every step whose inputs are ready; each finished step hands its outputs
//! to the steps waiting for them and starts those that became ready, so
//! independent steps run in parallel on their models' own instances. Every
//! step runs, whichever outputs the client asked for, with the request's
//! id and parameters. A tensor moves from one step to the next as the same
//! [`bytes::Bytes`]: only its name changes; the request lets go of it once
//! its last reader has started, unless the client gets it.
//!
//! A tensor crossing between a batching and a non-batching model changes
//! shape as Triton's ensembles do: each tensor remembers the batch size of
//! the request that produced it (0 from a non-batching one). A batching
//! step whose input came unbatched gets a batch dimension of 1 in front
//! when the shape matches the input's dims as it is; a non-batching step
//! whose input came in a batch of 1 loses that dimension when the shape
//! does not match its dims as it is; the ensemble's outputs follow the
//! same rule against the ensemble's own batching. So a non-batching
//! ensemble over batching models hands them `[1, ...]` and answers with
//! the shapes it declares. The first step that fails fails the request
//! with Triton's wording, `in ensemble 'name', ` before the step's own
//! message (the step is named in a verbose log line), and cancels the
//! steps still running; cancelling the ensemble request cancels its steps.
//!
//! The scheduler never calls the repository: a [`StepRouter`] it is given
//! submits each step to whichever version of the composing model serves at
//! that moment, so a reload of a composing model is picked up by the next
//! request. The ensemble's own statistics count its requests (success and
//! failure) and, as Triton's do, one execution per successful request at
//! its batch size (at least 1), so `execution_count` and `batch_stats` of
//! an ensemble around a sequence model read like the model's; the
//! composing models count their steps under their own names.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::stats::{
    DispatchReason, ExecutionTiming, FailureReason, ModelStats, RequestTiming, StatsCollector,
};
use super::{Completion, lock, request_rows, validate};
use crate::core::proto::ModelConfig;
use crate::core::proto::inference::model_config::SchedulingChoice;
use crate::core::{
    Bindings, CancelFlag, Code, Error, InferRequest, InferResponse, RequestedOutput, Result, Tensor,
};

/// How an ensemble reaches its composing models.
pub trait StepRouter: Send + Sync {
    /// Submits `request` to the version of model `request.model_name` that
    /// serves now (`model_version` `None`: the latest ready one); `complete`
    /// is called exactly once, with the lookup's error when no such version
    /// is ready.
    fn submit(&self, request: InferRequest, complete: Completion);

    /// The configuration the version of `model` that [`StepRouter::submit`]
    /// would reach now serves with; `None` when none is ready.
    fn config(&self, model: &str, version: Option<i64>) -> Option<Arc<ModelConfig>>;
}

/// One step of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanStep {
    /// The composing model.
    pub model: String,
    /// Its version; -1 is the latest ready one.
    pub version: i64,
    /// The model's inputs, each with the ensemble tensor (an index into
    /// [`Plan::tensors`]) it reads, sorted by input name.
    pub inputs: Vec<(String, usize)>,
    /// The model's outputs, each with the ensemble tensor it writes,
    /// sorted by output name.
    pub outputs: Vec<(String, usize)>,
}

/// An ensemble's steps as a checked DAG over its tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    name: String,
    tensors: Vec<String>,
    steps: Vec<PlanStep>,
    /// Per tensor, the steps that read it.
    readers: Vec<Vec<usize>>,
    /// Ensemble inputs: their tensor indices, in configuration order.
    inputs: Vec<usize>,
    /// Ensemble outputs: their tensor indices, in configuration order.
    outputs: Vec<usize>,
    /// Steps in an order where each comes after the steps it reads from.
    order: Vec<usize>,
}

/// Which step a tensor comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Input,
    Step(usize),
}

impl Plan {
    /// Builds the graph of an ensemble configuration and checks its
    /// structure (see the module documentation).
    pub fn new(config: &ModelConfig) -> Result<Plan> {
        let name = config.name.clone();
        let fail =
            |message: String| Err(Error::invalid_arg(format!("ensemble '{name}': {message}")));
        let Some(SchedulingChoice::EnsembleScheduling(ensembling)) = &config.scheduling_choice
        else {
            return fail("needs an ensemble_scheduling section listing its steps".to_owned());
        };
        if ensembling.step.is_empty() {
            return fail("ensemble_scheduling lists no step".to_owned());
        }
        let mut tensors: Vec<String> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut sources: Vec<Option<Source>> = Vec::new();
        let mut intern =
            |tensor: &str, tensors: &mut Vec<String>, sources: &mut Vec<Option<Source>>| {
                *index.entry(tensor.to_owned()).or_insert_with(|| {
                    tensors.push(tensor.to_owned());
                    sources.push(None);
                    tensors.len() - 1
                })
            };
        let mut inputs = Vec::with_capacity(config.input.len());
        for input in &config.input {
            let t = intern(&input.name, &mut tensors, &mut sources);
            sources[t] = Some(Source::Input);
            inputs.push(t);
        }
        let label = |s: usize, model: &str| format!("step {} '{model}'", s + 1);
        let mut steps = Vec::with_capacity(ensembling.step.len());
        for (s, step) in ensembling.step.iter().enumerate() {
            let here = label(s, &step.model_name);
            if step.model_name.is_empty() {
                return fail(format!("{here} names no model"));
            }
            if step.output_map.is_empty() {
                return fail(format!("{here} maps no output (output_map is empty)"));
            }
            let mut outputs: Vec<(String, usize)> = Vec::with_capacity(step.output_map.len());
            for (output, tensor) in &step.output_map {
                let t = intern(tensor, &mut tensors, &mut sources);
                match sources[t] {
                    Some(Source::Input) => {
                        return fail(format!(
                            "{here} writes output '{output}' to ensemble tensor '{tensor}', which is an ensemble input"
                        ));
                    }
                    Some(Source::Step(other)) => {
                        return fail(format!(
                            "{here} writes output '{output}' to ensemble tensor '{tensor}', which {} also writes",
                            label(other, &ensembling.step[other].model_name)
                        ));
                    }
                    None => sources[t] = Some(Source::Step(s)),
                }
                outputs.push((output.clone(), t));
            }
            outputs.sort();
            let mut step_inputs: Vec<(String, usize)> = step
                .input_map
                .iter()
                .map(|(input, tensor)| (input.clone(), intern(tensor, &mut tensors, &mut sources)))
                .collect();
            step_inputs.sort();
            steps.push(PlanStep {
                model: step.model_name.clone(),
                version: step.model_version,
                inputs: step_inputs,
                outputs,
            });
        }
        let mut readers: Vec<Vec<usize>> = vec![Vec::new(); tensors.len()];
        for (s, step) in steps.iter().enumerate() {
            for (input, t) in &step.inputs {
                if sources[*t].is_none() {
                    return fail(format!(
                        "{} reads input '{input}' from ensemble tensor '{}', which is neither an ensemble input nor any step's output",
                        label(s, &step.model),
                        tensors[*t]
                    ));
                }
                if !readers[*t].contains(&s) {
                    readers[*t].push(s);
                }
            }
        }
        let mut outputs = Vec::with_capacity(config.output.len());
        for output in &config.output {
            match index.get(&output.name) {
                Some(&t) if matches!(sources[t], Some(Source::Step(_))) => outputs.push(t),
                _ => {
                    return fail(format!(
                        "ensemble output '{}' is not written by any step",
                        output.name
                    ));
                }
            }
        }
        for (s, step) in steps.iter().enumerate() {
            for (output, t) in &step.outputs {
                if readers[*t].is_empty() && !outputs.contains(t) {
                    return fail(format!(
                        "{} writes output '{output}' to ensemble tensor '{}', which no step reads and is not an ensemble output",
                        label(s, &step.model),
                        tensors[*t]
                    ));
                }
            }
        }
        for &t in &inputs {
            if readers[t].is_empty() {
                return fail(format!(
                    "ensemble input '{}' is not read by any step",
                    tensors[t]
                ));
            }
        }
        let order = topological_order(&steps, &sources).map_err(|available| {
            let links: Vec<String> = find_cycle(&steps, &sources, &available)
                .iter()
                .map(|&(s, t)| {
                    let from = match sources[t] {
                        Some(Source::Step(w)) => label(w, &steps[w].model),
                        _ => "no step".to_owned(),
                    };
                    format!(
                        "{} reads ensemble tensor '{}' from {from}",
                        label(s, &steps[s].model),
                        tensors[t]
                    )
                })
                .collect();
            Error::invalid_arg(format!(
                "ensemble '{name}': the steps form a cycle: {}",
                links.join("; ")
            ))
        })?;
        Ok(Plan {
            name,
            tensors,
            steps,
            readers,
            inputs,
            outputs,
            order,
        })
    }

    /// The steps, in configuration order.
    pub fn steps(&self) -> &[PlanStep] {
        &self.steps
    }

    /// Ensemble tensor names; [`PlanStep`] refers to them by index.
    pub fn tensors(&self) -> &[String] {
        &self.tensors
    }

    /// Step indices in an order where every step comes after the steps
    /// whose outputs it reads.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// How many of step `s`'s distinct input tensors are not ensemble
    /// inputs: what it waits for before it can start.
    fn waits_for(&self, s: usize) -> usize {
        let mut tensors: Vec<usize> = self.steps[s]
            .inputs
            .iter()
            .map(|(_, t)| *t)
            .filter(|t| !self.inputs.contains(t))
            .collect();
        tensors.sort_unstable();
        tensors.dedup();
        tensors.len()
    }
}

/// Kahn's algorithm over the steps; on a cycle, which tensors were
/// available when no more step could run.
fn topological_order(
    steps: &[PlanStep],
    sources: &[Option<Source>],
) -> std::result::Result<Vec<usize>, Vec<bool>> {
    let mut available: Vec<bool> = sources.iter().map(|s| *s == Some(Source::Input)).collect();
    let mut done = vec![false; steps.len()];
    let mut order = Vec::with_capacity(steps.len());
    loop {
        let ready: Vec<usize> = (0..steps.len())
            .filter(|&s| !done[s] && steps[s].inputs.iter().all(|(_, t)| available[*t]))
            .collect();
        if ready.is_empty() {
            break;
        }
        for s in ready {
            done[s] = true;
            order.push(s);
            for (_, t) in &steps[s].outputs {
                available[*t] = true;
            }
        }
    }
    if order.len() == steps.len() {
        Ok(order)
    } else {
        Err(available)
    }
}

/// A cycle among the steps that could not run, as (step, tensor it waits
/// for) pairs, each tensor written by the next step and the last by the
/// first. Every tensor is written by someone (checked before), so walking
/// from a waiting step to the writer of what it waits for must come back
/// to a step already seen.
fn find_cycle(
    steps: &[PlanStep],
    sources: &[Option<Source>],
    available: &[bool],
) -> Vec<(usize, usize)> {
    let mut path: Vec<(usize, usize)> = Vec::new();
    let mut s = (0..steps.len())
        .find(|&s| steps[s].inputs.iter().any(|(_, t)| !available[*t]))
        .unwrap_or_default();
    loop {
        let Some(&(_, t)) = steps[s].inputs.iter().find(|(_, t)| !available[*t]) else {
            return path;
        };
        path.push((s, t));
        let Some(Source::Step(writer)) = sources[t] else {
            return path;
        };
        if let Some(start) = path.iter().position(|&(p, _)| p == writer) {
            return path.split_off(start);
        }
        s = writer;
    }
}

/// What every request of one ensemble version shares.
struct Shared {
    config: Arc<ModelConfig>,
    version: i64,
    plan: Plan,
    router: Arc<dyn StepRouter>,
    stats: StatsCollector,
    closed: AtomicBool,
}

/// The shape a tensor of `shape`, written by a request of batch size
/// `batch` (0: not batched), takes when read against `dims` by a reader
/// that batches or not (module doc).
fn batch_converted(dims: &[i64], batching: bool, batch: u64, shape: &[i64]) -> Vec<i64> {
    let fits = |s: &[i64]| {
        s.len() == dims.len()
            && s.iter()
                .zip(dims)
                .all(|(&a, &d)| a == d || a == -1 || d == -1)
    };
    match (batching, batch) {
        (true, 0) if fits(shape) => std::iter::once(1).chain(shape.iter().copied()).collect(),
        (false, 1) if !fits(shape) && !shape.is_empty() => shape[1..].to_vec(),
        _ => shape.to_vec(),
    }
}

/// Runs one ensemble version's requests through its steps.
pub struct EnsembleScheduler {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EnsembleScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnsembleScheduler")
            .field("model", &self.shared.plan.name)
            .field("version", &self.shared.version)
            .finish()
    }
}

impl EnsembleScheduler {
    /// A scheduler for version `version` of the ensemble `config` describes,
    /// reaching its composing models through `router`.
    pub fn new(
        config: Arc<ModelConfig>,
        version: i64,
        router: Arc<dyn StepRouter>,
    ) -> Result<EnsembleScheduler> {
        let plan = Plan::new(&config)?;
        Ok(EnsembleScheduler {
            shared: Arc::new(Shared {
                config,
                version,
                plan,
                router,
                stats: StatsCollector::default(),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The checked graph of steps.
    pub fn plan(&self) -> &Plan {
        &self.shared.plan
    }

    /// Validates `request` against the ensemble's inputs and outputs and
    /// starts the steps that can start; `complete` is called exactly once.
    pub fn submit(&self, request: InferRequest, complete: Completion) {
        let received = Instant::now();
        let shared = &self.shared;
        let checked = if shared.closed.load(Ordering::Acquire) {
            Err(super::unloading(&shared.plan.name, shared.version))
        } else {
            validate::validate(&shared.config, &request)
        };
        let outputs = match checked {
            Ok(outputs) => outputs,
            Err(e) => {
                shared
                    .stats
                    .record_failure(received.elapsed(), FailureReason::Other);
                return complete(Err(e));
            }
        };
        Run::start(Arc::clone(shared), request, outputs, complete, received);
    }

    /// This ensemble version's own statistics (its requests; the steps are
    /// counted by the composing models).
    pub fn statistics(&self) -> ModelStats {
        self.shared.stats.snapshot()
    }

    /// Refuses new requests; requests already started finish on the
    /// composing models. Idempotent.
    pub fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }
}

/// One ensemble request on its way through the steps.
struct Run {
    shared: Arc<Shared>,
    id: Option<String>,
    parameters: crate::core::Parameters,
    cancel: CancelFlag,
    /// One per step, so cancelling the request reaches each step's queue.
    step_cancels: Vec<CancelFlag>,
    /// Requested outputs, in response order.
    outputs: Vec<String>,
    rows: u64,
    received: Instant,
    state: Mutex<RunState>,
}

struct RunState {
    /// Per tensor, its value once written.
    values: Vec<Option<Tensor>>,
    /// Per tensor, the batch size of the request that wrote it: 0 from a
    /// non-batching model (or a non-batching ensemble's request).
    batch: Vec<u64>,
    /// Per step, the input tensors it still waits for.
    waiting: Vec<usize>,
    /// Per tensor, the steps that will still read it: a tensor no step
    /// will read and the client does not get is let go at once.
    unread: Vec<usize>,
    /// Steps not finished.
    left: usize,
    /// Taken by whoever answers the request.
    complete: Option<Completion>,
}

impl Run {
    fn start(
        shared: Arc<Shared>,
        request: InferRequest,
        outputs: Vec<String>,
        complete: Completion,
        received: Instant,
    ) {
        let plan = &shared.plan;
        let rows = request_rows(&shared.config, &request);
        let mut values: Vec<Option<Tensor>> = vec![None; plan.tensors.len()];
        for tensor in request.inputs {
            if let Some(&t) = plan
                .inputs
                .iter()
                .find(|&&t| plan.tensors[t] == tensor.name)
            {
                values[t] = Some(tensor);
            }
        }
        let waiting: Vec<usize> = (0..plan.steps.len()).map(|s| plan.waits_for(s)).collect();
        let input_batch = if shared.config.max_batch_size > 0 {
            rows
        } else {
            0
        };
        let run = Arc::new(Run {
            id: request.id,
            parameters: request.parameters,
            cancel: request.cancel,
            step_cancels: (0..plan.steps.len())
                .map(|_| CancelFlag::default())
                .collect(),
            outputs,
            rows,
            received,
            state: Mutex::new(RunState {
                values,
                batch: vec![input_batch; plan.tensors.len()],
                waiting,
                unread: plan.readers.iter().map(Vec::len).collect(),
                left: plan.steps.len(),
                complete: Some(complete),
            }),
            shared: Arc::clone(&shared),
        });
        let weak: Weak<Run> = Arc::downgrade(&run);
        run.cancel.on_cancel(move || {
            if let Some(run) = weak.upgrade() {
                for flag in &run.step_cancels {
                    flag.cancel();
                }
            }
        });
        let first: Vec<(usize, Vec<(Tensor, u64)>)> = {
            let mut st = lock(&run.state);
            let ready: Vec<usize> = plan
                .order
                .iter()
                .copied()
                .filter(|&s| st.waiting[s] == 0)
                .collect();
            ready
                .into_iter()
                .map(|s| (s, run.step_inputs(&mut st, s)))
                .collect()
        };
        for (s, inputs) in first {
            run.launch(s, inputs);
        }
    }

    /// Step `s`'s inputs: the ensemble tensors it reads, under the names
    /// its model gives them (the data is shared, not copied). A tensor this
    /// was the last reader of is dropped from the run unless it is an
    /// ensemble output: the step's request holds what it needs.
    fn step_inputs(&self, st: &mut RunState, s: usize) -> Vec<(Tensor, u64)> {
        let plan = &self.shared.plan;
        let inputs = plan.steps[s]
            .inputs
            .iter()
            .filter_map(|(input, t)| {
                st.values[*t].as_ref().map(|tensor| {
                    let tensor = Tensor {
                        name: input.clone(),
                        datatype: tensor.datatype,
                        shape: tensor.shape.clone(),
                        data: tensor.data.clone(),
                    };
                    (tensor, st.batch[*t])
                })
            })
            .collect();
        for (t, readers) in plan.readers.iter().enumerate() {
            if readers.contains(&s) {
                st.unread[t] -= 1;
                if st.unread[t] == 0 && !plan.outputs.contains(&t) {
                    st.values[t] = None;
                }
            }
        }
        inputs
    }

    fn launch(self: &Arc<Run>, s: usize, inputs: Vec<(Tensor, u64)>) {
        if self.cancel.is_cancelled() {
            return self.fail(s, Error::new(Code::Cancelled, "request was cancelled"));
        }
        let step = &self.shared.plan.steps[s];
        let version = (step.version != -1).then_some(step.version);
        // Without a configuration the step's lookup fails in submit, which
        // reports it; the tensors pass unchanged until then.
        let config = self.shared.router.config(&step.model, version);
        let batching = config.as_ref().is_some_and(|c| c.max_batch_size > 0);
        let inputs: Vec<Tensor> = match config {
            Some(config) => inputs
                .into_iter()
                .map(|(mut tensor, batch)| {
                    if let Some(declared) = config.input.iter().find(|i| i.name == tensor.name) {
                        tensor.shape =
                            batch_converted(&declared.dims, batching, batch, &tensor.shape);
                    }
                    tensor
                })
                .collect(),
            None => inputs.into_iter().map(|(tensor, _)| tensor).collect(),
        };
        let request = InferRequest {
            model_name: step.model.clone(),
            model_version: version,
            id: self.id.clone(),
            inputs,
            outputs: step
                .outputs
                .iter()
                .map(|(name, _)| RequestedOutput {
                    name: name.clone(),
                    ..RequestedOutput::default()
                })
                .collect(),
            parameters: self.parameters.clone(),
            cancel: self.step_cancels[s].clone(),
            shm_inputs: Vec::new(),
            bindings: Bindings::default(),
        };
        // The request's batch size, which its outputs carry on.
        let batch = match request.inputs.first().and_then(|t| t.shape.first()) {
            Some(&rows) if batching => u64::try_from(rows).unwrap_or(0),
            _ => 0,
        };
        let run = Arc::clone(self);
        self.shared.router.submit(
            request,
            Box::new(move |result| run.finished(s, batch, result)),
        );
    }

    /// Step `s` answered: its outputs become ensemble tensors, the steps
    /// they complete start, and the last step answers the request.
    fn finished(self: &Arc<Run>, s: usize, batch: u64, result: Result<InferResponse>) {
        let response = match result {
            Ok(response) => response,
            Err(e) => return self.fail(s, e),
        };
        let plan = &self.shared.plan;
        let step = &plan.steps[s];
        let mut st = lock(&self.state);
        if st.complete.is_none() {
            return;
        }
        let mut ready = Vec::new();
        for (output, t) in &step.outputs {
            let Some(tensor) = response.outputs.iter().find(|o| o.name == *output) else {
                drop(st);
                return self.fail(
                    s,
                    Error::internal(format!("the model returned no output '{output}'")),
                );
            };
            st.values[*t] = Some(Tensor {
                name: plan.tensors[*t].clone(),
                datatype: tensor.datatype,
                shape: tensor.shape.clone(),
                data: tensor.data.clone(),
            });
            st.batch[*t] = batch;
            for &reader in &plan.readers[*t] {
                st.waiting[reader] -= 1;
                if st.waiting[reader] == 0 {
                    ready.push(reader);
                }
            }
        }
        st.left -= 1;
        let launches: Vec<(usize, Vec<(Tensor, u64)>)> = ready
            .into_iter()
            .map(|r| (r, self.step_inputs(&mut st, r)))
            .collect();
        let answer = if st.left == 0 {
            let config = &self.shared.config;
            let batching = config.max_batch_size > 0;
            let outputs = self
                .outputs
                .iter()
                .filter_map(|name| {
                    let t = plan.tensors.iter().position(|n| n == name)?;
                    let mut tensor = st.values[t].take()?;
                    if let Some(declared) = config.output.iter().find(|o| &o.name == name) {
                        let dims = declared
                            .reshape
                            .as_ref()
                            .map_or(&declared.dims, |r| &r.shape);
                        tensor.shape = batch_converted(dims, batching, st.batch[t], &tensor.shape);
                    }
                    Some(tensor)
                })
                .collect();
            st.complete.take().map(|complete| (complete, outputs))
        } else {
            None
        };
        drop(st);
        for (r, inputs) in launches {
            self.launch(r, inputs);
        }
        if let Some((complete, outputs)) = answer {
            self.cancel.clear_hook();
            self.shared.stats.record_success(&RequestTiming {
                batch_size: self.rows,
                total: self.received.elapsed(),
                queue: Duration::ZERO,
                compute_input: Duration::ZERO,
                compute_infer: Duration::ZERO,
                compute_output: Duration::ZERO,
            });
            self.shared.stats.record_execution(&ExecutionTiming {
                batch_size: self.rows.max(1),
                reason: DispatchReason::Single,
                compute_input: Duration::ZERO,
                compute_infer: Duration::ZERO,
                compute_output: Duration::ZERO,
            });
            complete(Ok(InferResponse {
                model_name: plan.name.clone(),
                model_version: self.shared.version,
                id: self.id.clone(),
                outputs,
                parameters: crate::core::Parameters::default(),
            }));
        }
    }

    /// Fails the request with step `s`'s error (once) and cancels the
    /// steps still running.
    fn fail(&self, s: usize, e: Error) {
        let Some(complete) = lock(&self.state).complete.take() else {
            return;
        };
        self.cancel.clear_hook();
        for flag in &self.step_cancels {
            flag.cancel();
        }
        let (error, reason) = if self.cancel.is_cancelled() {
            (
                Error::new(Code::Cancelled, "request was cancelled"),
                FailureReason::Canceled,
            )
        } else {
            let step = &self.shared.plan.steps[s];
            log::debug!(
                "ensemble '{}': step {} '{}' failed: {}",
                self.shared.plan.name,
                s + 1,
                step.model,
                e.message()
            );
            // Triton's wording, which clients match the start of.
            (
                Error::new(
                    e.code(),
                    format!("in ensemble '{}', {}", self.shared.plan.name, e.message()),
                ),
                FailureReason::Backend,
            )
        };
        self.shared
            .stats
            .record_failure(self.received.elapsed(), reason);
        complete(Err(error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::DataType;
    use crate::repository::config::parse_config_text;
    use bytes::Bytes;

    /// An ensemble over FP32 tensors with inputs `A`, `B` and output `OUT`
    /// (or those given), and the steps given as text.
    fn config(inputs: &[&str], outputs: &[&str], steps: &str) -> ModelConfig {
        let io = |names: &[&str]| {
            names
                .iter()
                .map(|n| format!("{{ name: \"{n}\" data_type: TYPE_FP32 dims: [ -1 ] }}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let text = format!(
            "name: \"e\" platform: \"ensemble\" input [ {} ] output [ {} ] ensemble_scheduling {{ step [ {steps} ] }}",
            io(inputs),
            io(outputs)
        );
        parse_config_text(&text).unwrap()
    }

    /// A step of model `model` reading `inputs` and writing `outputs`, as
    /// (model tensor, ensemble tensor) pairs.
    fn step(model: &str, inputs: &[(&str, &str)], outputs: &[(&str, &str)]) -> String {
        let map = |kind: &str, pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| format!("{kind} {{ key: \"{k}\" value: \"{v}\" }}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "{{ model_name: \"{model}\" model_version: -1 {} {} }}",
            map("input_map", inputs),
            map("output_map", outputs)
        )
    }

    fn plan_error(inputs: &[&str], outputs: &[&str], steps: &[String]) -> String {
        Plan::new(&config(inputs, outputs, &steps.join(", ")))
            .unwrap_err()
            .message()
            .to_owned()
    }

    /// Steps, ensemble inputs, ensemble outputs, and the error expected.
    type Case<'a> = (Vec<String>, &'a [&'a str], &'a [&'a str], &'a str);

    #[test]
    fn structure_errors_name_the_step_and_the_tensor() {
        let ab = &["A", "B"];
        let out = &["OUT"];
        let cases: Vec<Case<'_>> = vec![
            (
                vec![
                    step("x", &[("IN", "A")], &[("O", "OUT")]),
                    step("y", &[("IN", "NOPE")], &[("O", "T")]),
                ],
                ab,
                out,
                "step 2 'y' reads input 'IN' from ensemble tensor 'NOPE', which is neither an ensemble input nor any step's output",
            ),
            (
                vec![step("x", &[("IN", "A"), ("IN2", "B")], &[("O", "T")])],
                ab,
                out,
                "ensemble output 'OUT' is not written by any step",
            ),
            (
                vec![step(
                    "x",
                    &[("IN", "A"), ("IN2", "B")],
                    &[("O", "OUT"), ("P", "SPARE")],
                )],
                ab,
                out,
                "step 1 'x' writes output 'P' to ensemble tensor 'SPARE', which no step reads and is not an ensemble output",
            ),
            (
                vec![step("x", &[("IN", "A")], &[("O", "OUT")])],
                ab,
                out,
                "ensemble input 'B' is not read by any step",
            ),
            (
                vec![
                    step("x", &[("IN", "A")], &[("O", "OUT")]),
                    step("y", &[("IN", "B")], &[("O", "OUT")]),
                ],
                ab,
                out,
                "step 2 'y' writes output 'O' to ensemble tensor 'OUT', which step 1 'x' also writes",
            ),
            (
                vec![step("x", &[("IN", "A")], &[("O", "OUT"), ("P", "B")])],
                ab,
                out,
                "step 1 'x' writes output 'P' to ensemble tensor 'B', which is an ensemble input",
            ),
            (
                vec![step("x", &[("IN", "A")], &[])],
                &["A"],
                out,
                "step 1 'x' maps no output (output_map is empty)",
            ),
            (
                vec![
                    step("x", &[("IN", "A")], &[("O", "OUT")]),
                    step("y", &[("IN", "T2")], &[("O", "T1")]),
                    step("z", &[("IN", "T1")], &[("O", "T2")]),
                ],
                &["A"],
                out,
                "the steps form a cycle: step 2 'y' reads ensemble tensor 'T2' from step 3 'z'; step 3 'z' reads ensemble tensor 'T1' from step 2 'y'",
            ),
        ];
        for (steps, inputs, outputs, expected) in cases {
            assert_eq!(
                plan_error(inputs, outputs, &steps),
                format!("ensemble 'e': {expected}")
            );
        }
        let empty = parse_config_text("name: \"e\" platform: \"ensemble\" ensemble_scheduling { }")
            .unwrap();
        assert_eq!(
            Plan::new(&empty).unwrap_err().message(),
            "ensemble 'e': ensemble_scheduling lists no step"
        );
    }

    /// A diamond listed backwards: join, right, left, split.
    fn diamond() -> ModelConfig {
        config(
            &["A"],
            &["OUT"],
            &[
                step("join", &[("L", "LEFT"), ("R", "RIGHT")], &[("O", "OUT")]),
                step("right", &[("IN", "MID")], &[("O", "RIGHT")]),
                step("left", &[("IN", "MID")], &[("O", "LEFT")]),
                step("split", &[("IN", "A")], &[("O", "MID")]),
            ]
            .join(", "),
        )
    }

    #[test]
    fn plan_orders_steps_after_what_they_read() {
        let plan = Plan::new(&diamond()).unwrap();
        assert_eq!(plan.order(), &[3, 1, 2, 0]);
        assert_eq!(plan.steps()[0].model, "join");
        assert_eq!(
            plan.steps()[0]
                .inputs
                .iter()
                .map(|(name, t)| (name.as_str(), plan.tensors()[*t].as_str()))
                .collect::<Vec<_>>(),
            vec![("L", "LEFT"), ("R", "RIGHT")]
        );
    }

    /// Keeps every step it is handed until the test answers it.
    #[derive(Default)]
    struct Held {
        calls: Mutex<Vec<(InferRequest, Completion)>>,
        /// The composing models' configurations; a step of a model not
        /// here gets its tensors unchanged.
        configs: Mutex<HashMap<String, Arc<ModelConfig>>>,
    }

    impl StepRouter for Held {
        fn submit(&self, request: InferRequest, complete: Completion) {
            lock(&self.calls).push((request, complete));
        }

        fn config(&self, model: &str, _version: Option<i64>) -> Option<Arc<ModelConfig>> {
            lock(&self.configs).get(model).cloned()
        }
    }

    impl Held {
        fn waiting(&self) -> Vec<String> {
            let mut models: Vec<String> = lock(&self.calls)
                .iter()
                .map(|(r, _)| r.model_name.clone())
                .collect();
            models.sort();
            models
        }

        fn take(&self, model: &str) -> (InferRequest, Completion) {
            let mut calls = lock(&self.calls);
            let at = calls
                .iter()
                .position(|(r, _)| r.model_name == model)
                .unwrap_or_else(|| panic!("no step of model '{model}' is waiting"));
            calls.remove(at)
        }

        /// Answers the step of `model` with its first input's data under
        /// every output name it asked for (shared, not copied).
        fn echo(&self, model: &str) -> Bytes {
            let (request, complete) = self.take(model);
            let data = request.inputs[0].data.clone();
            let outputs = request
                .outputs
                .iter()
                .map(|o| Tensor {
                    name: o.name.clone(),
                    datatype: DataType::Fp32,
                    shape: vec![1],
                    data: data.clone(),
                })
                .collect();
            complete(Ok(InferResponse {
                model_name: model.to_owned(),
                model_version: 1,
                outputs,
                ..InferResponse::default()
            }));
            data
        }
    }

    fn start(config: ModelConfig) -> (EnsembleScheduler, Arc<Held>) {
        let held = Arc::new(Held::default());
        let router: Arc<dyn StepRouter> = Arc::clone(&held) as Arc<dyn StepRouter>;
        (
            EnsembleScheduler::new(Arc::new(config), 1, router).unwrap(),
            held,
        )
    }

    type Answer = Arc<Mutex<Option<Result<InferResponse>>>>;

    fn submit(scheduler: &EnsembleScheduler, cancel: &CancelFlag) -> Answer {
        let answer: Answer = Arc::default();
        let slot = Arc::clone(&answer);
        scheduler.submit(
            InferRequest {
                model_name: "e".to_owned(),
                inputs: vec![
                    Tensor::new(
                        "A",
                        DataType::Fp32,
                        vec![1],
                        Bytes::copy_from_slice(&1.5f32.to_le_bytes()),
                    )
                    .unwrap(),
                ],
                cancel: cancel.clone(),
                ..InferRequest::default()
            },
            Box::new(move |r| {
                assert!(lock(&slot).replace(r).is_none(), "answered twice");
            }),
        );
        answer
    }

    #[test]
    fn independent_steps_run_together_and_tensors_are_shared() {
        let (scheduler, held) = start(diamond());
        let answer = submit(&scheduler, &CancelFlag::default());
        assert_eq!(held.waiting(), vec!["split"]);
        let input = held.echo("split");
        // Both branches are out at once: neither waits for the other.
        assert_eq!(held.waiting(), vec!["left", "right"]);
        held.echo("right");
        assert_eq!(held.waiting(), vec!["left"]);
        held.echo("left");
        let (join, complete) = held.take("join");
        assert!(lock(&answer).is_none());
        // The tensors reach the join under its input names, with the
        // bytes the first step was given: no copy on the way.
        let names: Vec<&str> = join.inputs.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["L", "R"]);
        assert!(
            join.inputs
                .iter()
                .all(|t| t.data.as_ptr() == input.as_ptr())
        );
        held.calls.lock().unwrap().push((join, complete));
        held.echo("join");
        let response = lock(&answer).take().unwrap().unwrap();
        assert_eq!(response.model_name, "e");
        assert_eq!(response.outputs.len(), 1);
        assert_eq!(response.outputs[0].name, "OUT");
        assert_eq!(response.outputs[0].data.as_ptr(), input.as_ptr());
        let stats = scheduler.statistics();
        assert_eq!((stats.success.count, stats.fail.count), (1, 0));
        assert_eq!(stats.inference_count, 1);
        // One execution per successful request, at its batch size.
        assert_eq!(stats.execution_count, 1);
        assert_eq!(stats.batches.keys().copied().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn a_failing_step_fails_the_request_with_its_name() {
        let (scheduler, held) = start(diamond());
        let answer = submit(&scheduler, &CancelFlag::default());
        held.echo("split");
        let (left, _) = held.take("left");
        let (_, fail_right) = held.take("right");
        fail_right(Err(Error::new(Code::Internal, "boom")));
        let error = lock(&answer).take().unwrap().unwrap_err();
        assert_eq!(error.code(), Code::Internal);
        assert_eq!(error.message(), "in ensemble 'e', boom");
        // The branch still running is told to stop; the join never starts.
        assert!(left.cancel.is_cancelled());
        assert!(held.waiting().is_empty());
        let stats = scheduler.statistics();
        assert_eq!((stats.success.count, stats.fail.count), (0, 1));
    }

    #[test]
    fn cancelling_the_request_cancels_its_steps() {
        let (scheduler, held) = start(diamond());
        let cancel = CancelFlag::default();
        let answer = submit(&scheduler, &cancel);
        let (split, complete) = held.take("split");
        assert!(!split.cancel.is_cancelled());
        cancel.cancel();
        assert!(split.cancel.is_cancelled());
        complete(Err(Error::new(Code::Cancelled, "request was cancelled")));
        let error = lock(&answer).take().unwrap().unwrap_err();
        assert_eq!(error.code(), Code::Cancelled);
        assert_eq!(error.message(), "request was cancelled");
        assert!(held.waiting().is_empty());
        assert_eq!(
            scheduler
                .statistics()
                .failures
                .iter()
                .find(|(r, _)| *r == FailureReason::Canceled),
            Some((FailureReason::Canceled, 1))
        );
    }

    #[test]
    fn invalid_requests_and_shutdown_are_refused_before_any_step() {
        let (scheduler, held) = start(diamond());
        let answer: Answer = Arc::default();
        let slot = Arc::clone(&answer);
        scheduler.submit(
            InferRequest {
                model_name: "e".to_owned(),
                ..InferRequest::default()
            },
            Box::new(move |r| {
                lock(&slot).replace(r);
            }),
        );
        let error = lock(&answer).take().unwrap().unwrap_err();
        assert_eq!(error.code(), Code::InvalidArg);
        scheduler.shutdown();
        let answer = submit(&scheduler, &CancelFlag::default());
        let error = lock(&answer).take().unwrap().unwrap_err();
        assert_eq!(error.message(), "model 'e' version 1 is unloading");
        assert!(held.waiting().is_empty());
        assert_eq!(scheduler.statistics().fail.count, 2);
    }

    /// Answers the waiting step of `model` with its first input, under its
    /// one output name, shape and all; returns the shape it was given.
    fn reflect(held: &Held, model: &str) -> Vec<i64> {
        let (request, complete) = held.take(model);
        let input = request.inputs[0].clone();
        let shape = input.shape.clone();
        complete(Ok(InferResponse {
            model_name: model.to_owned(),
            model_version: 1,
            outputs: vec![Tensor {
                name: request.outputs[0].name.clone(),
                ..input
            }],
            ..InferResponse::default()
        }));
        shape
    }

    #[test]
    fn tensors_gain_and_lose_the_batch_dimension_between_batching_and_non_batching_models() {
        let steps = [
            step("batched", &[("IN", "A")], &[("OUT", "mid")]),
            step("plain", &[("IN", "mid")], &[("OUT", "OUT")]),
        ]
        .join(", ");
        let (scheduler, held) = start(config(&["A"], &["OUT"], &steps));
        for (name, mbs) in [("batched", 8), ("plain", 0)] {
            let text = format!(
                "name: \"{name}\" max_batch_size: {mbs} input [{{name: \"IN\" data_type: TYPE_FP32 dims: [-1]}}] output [{{name: \"OUT\" data_type: TYPE_FP32 dims: [-1]}}]"
            );
            lock(&held.configs)
                .insert(name.to_owned(), Arc::new(parse_config_text(&text).unwrap()));
        }
        // The ensemble does not batch: its [1] reaches the batching model
        // as a batch of one row, [1, 1].
        let answer = submit(&scheduler, &CancelFlag::default());
        assert_eq!(reflect(&held, "batched"), vec![1, 1]);
        // That batch of one reaches the non-batching model without its
        // batch dimension, as [1] matches its dims.
        assert_eq!(reflect(&held, "plain"), vec![1]);
        let response = lock(&answer).take().unwrap().unwrap();
        assert_eq!(response.outputs[0].shape, vec![1]);

        // The ensemble's own output loses a batch of one it does not
        // declare: an ensemble of just the batching model answers [1].
        let one = step("batched", &[("IN", "A")], &[("OUT", "OUT")]);
        let (scheduler, single) = start(config(&["A"], &["OUT"], &one));
        *lock(&single.configs) = lock(&held.configs).clone();
        let answer = submit(&scheduler, &CancelFlag::default());
        assert_eq!(reflect(&single, "batched"), vec![1, 1]);
        let response = lock(&answer).take().unwrap().unwrap();
        assert_eq!(response.outputs[0].shape, vec![1]);
    }
}
