//! The sequence batcher: the policy for `sequence_batching`, where the
//! requests of one sequence (one correlation id) reach the same instance,
//! one at a time, in arrival order, with control inputs telling the model
//! where each sequence starts, ends and which batch rows are real. Pure:
//! time is an argument, so the rules below are tested with a simulated
//! clock.
//!
//! # Sequences
//! A request names its sequence with the `sequence_id` parameter, an
//! unsigned integer or a string; 0, "" or no id at all is refused ("must
//! specify a non-zero or non-empty correlation ID"), as is a request of more
//! than one batch row. `sequence_start` opens a sequence; a request for an
//! id with no open sequence and without `sequence_start` is refused ("must
//! specify the START flag on the first request of the sequence").
//! `sequence_end` closes it once that request has been queued: a later
//! request with that id must start a new sequence. A START for an id that
//! is still open continues in the open sequence (Triton's rule for a
//! sequence that never ended); the model sees the START flag again.
//!
//! Each instance has a fixed number of slots: `max_batch_size` (1 when the
//! model does not batch) with the `direct` strategy, `max_candidate_sequences`
//! (else `max_batch_size`) with `oldest`. An opening sequence takes the free
//! slot with the lowest index, instances taking turns for equal indices, and
//! keeps it, and so its instance, for its lifetime; with no free slot it
//! waits in a backlog and takes the first slot that frees, first come first
//! served. A slot frees when its sequence's END request is handed to the
//! instance, or when the sequence has been idle (no request waiting, none
//! arriving or handed out) for `max_sequence_idle_microseconds` (1 s when
//! the configuration leaves it 0). A released sequence loses its implicit
//! state; its id then needs a START again.
//!
//! # Forming a batch
//! A batch holds at most one request per sequence: the head of its queue.
//! The instance runs batches one at a time, so a sequence's next request is
//! only handed out after the previous one has executed.
//! - `direct`: the instance's ready slots (those whose sequence has a
//!   request waiting) go out when their share of the instance's slots
//!   reaches `minimum_slot_utilization` (0, the default: at once), or when
//!   the oldest waiting request has waited `max_queue_delay_microseconds`.
//!   Row `i` of the batch is slot `i`, up to the highest ready slot; a slot
//!   below it with nothing ready is a filler row (zeros, READY false, never
//!   answered), so a stateful model always sees a sequence at the same row.
//! - `oldest`: the instance's sequences with a request waiting, oldest
//!   waiting request first. `max_batch_size` of them go out at once; else
//!   the largest `preferred_batch_size` that fits; else all of them once the
//!   oldest has waited `max_queue_delay_microseconds`. No filler rows.
//!
//! On shutdown every ready request goes out without waiting. The
//! `priority` and `timeout` request parameters do not apply here: a
//! sequence's requests run in the order they arrived.
//!
//! # Control inputs and implicit state
//! Every row gets the configured control inputs, shape `[1]` (after the
//! batch dimension): START, END and READY as the false/true pair of
//! `int32_false_true`, `fp32_false_true` or `bool_false_true`, CORRID as the
//! correlation id in the control's `data_type` (an integer type or
//! TYPE_STRING; a string id for an integer CORRID must parse as one). Each
//! `state` adds its `input_name` input: for a request that starts its
//! sequence, the `initial_state` (zeros unless `data_file` names a file in
//! the model's `initial_state` directory); after that, the `output_name`
//! output the previous request produced (the policy sees every output
//! after a batch ran).
//!
//! Cancelled requests leave their sequence's queue at the next look at it.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::stats::{DispatchReason, FailureReason};
use super::validate;
use super::{Admitted, Batch, Job, Next, Policy, Refused, Wake};
use crate::backend::ModelContext;
use crate::core::proto::inference::model_config::SchedulingChoice;
use crate::core::proto::inference::model_sequence_batching::initial_state::StateData;
use crate::core::proto::inference::model_sequence_batching::{
    Control, StrategyChoice, control::Kind,
};
use crate::core::proto::{ModelConfig, ModelSequenceBatching};
use crate::core::tensor::{element_count, push_bytes_element};
use crate::core::{Code, DataType, Error, InferRequest, ParamValue, Parameters, Result, Tensor};

/// A sequence's correlation id, as the request's `sequence_id` gave it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CorrelationId {
    /// An unsigned integer id.
    Int(u64),
    /// A string id.
    Str(String),
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorrelationId::Int(n) => write!(f, "{n}"),
            CorrelationId::Str(s) => f.write_str(s),
        }
    }
}

impl CorrelationId {
    /// The request's `sequence_id`; `None` when absent, 0 or empty.
    pub fn from_parameters(parameters: &Parameters) -> Result<Option<CorrelationId>> {
        match parameters.get("sequence_id") {
            None | Some(ParamValue::Int(0)) => Ok(None),
            Some(ParamValue::String(s)) if s.is_empty() => Ok(None),
            Some(ParamValue::String(s)) => Ok(Some(CorrelationId::Str(s.clone()))),
            Some(&ParamValue::Int(n)) => u64::try_from(n)
                .map(|n| Some(CorrelationId::Int(n)))
                .map_err(|_| {
                    Error::invalid_arg(format!(
                        "'sequence_id' must be a non-negative integer or a string, got {n}"
                    ))
                }),
            Some(other) => Err(Error::invalid_arg(format!(
                "'sequence_id' must be an integer or a string, got {other:?}"
            ))),
        }
    }
}

/// How a boolean control is written: the configured [false, true] pair.
#[derive(Debug, Clone, Copy)]
enum Flag {
    Int32([i32; 2]),
    Fp32([f32; 2]),
    Bool([bool; 2]),
}

impl Flag {
    fn from_control(c: &Control) -> Option<Flag> {
        match (
            c.int32_false_true.as_slice(),
            c.fp32_false_true.as_slice(),
            c.bool_false_true.as_slice(),
        ) {
            (&[f, t], [], []) => Some(Flag::Int32([f, t])),
            ([], &[f, t], []) => Some(Flag::Fp32([f, t])),
            ([], [], &[f, t]) => Some(Flag::Bool([f, t])),
            _ => None,
        }
    }

    fn datatype(self) -> DataType {
        match self {
            Flag::Int32(_) => DataType::Int32,
            Flag::Fp32(_) => DataType::Fp32,
            Flag::Bool(_) => DataType::Bool,
        }
    }

    fn bytes(self, value: bool) -> Bytes {
        let i = usize::from(value);
        match self {
            Flag::Int32(pair) => Bytes::copy_from_slice(&pair[i].to_le_bytes()),
            Flag::Fp32(pair) => Bytes::copy_from_slice(&pair[i].to_le_bytes()),
            Flag::Bool(pair) => Bytes::copy_from_slice(&[u8::from(pair[i])]),
        }
    }
}

/// What a control input carries.
#[derive(Debug, Clone, Copy)]
enum ControlKind {
    Start(Flag),
    End(Flag),
    Ready(Flag),
    CorrId(DataType),
}

#[derive(Debug, Clone)]
struct ControlSpec {
    name: String,
    kind: ControlKind,
}

/// One implicit state: the tensor a starting request gets.
#[derive(Debug, Clone)]
struct StateSpec {
    output: String,
    initial: Tensor,
}

#[derive(Debug, Clone, Copy)]
enum Strategy {
    Direct {
        delay: Duration,
        min_utilization: f32,
    },
    Oldest {
        delay: Duration,
    },
}

/// A request waiting in its sequence's queue.
struct Queued {
    job: Job,
    start: bool,
    end: bool,
    /// The CORRID control's value, when the model has one.
    corrid: Option<Tensor>,
}

struct Sequence {
    id: CorrelationId,
    /// (instance, slot), or `None` while in the backlog.
    slot: Option<(usize, usize)>,
    queue: VecDeque<Queued>,
    /// The last arrival or hand-out: idleness counts from here.
    active: Instant,
    /// END has arrived: no request joins any more.
    ended: bool,
    /// The implicit state for the next request; `None`: the initial state.
    state: Option<Vec<Tensor>>,
}

/// The sequence batcher of one model version (see the module doc).
pub struct SequencePolicy {
    model: String,
    batching: bool,
    /// Rows per batch (1 when the model does not batch).
    max_batch: usize,
    /// Sorted ascending (`oldest` only).
    preferred: Vec<usize>,
    strategy: Strategy,
    idle: Duration,
    controls: Vec<ControlSpec>,
    states: Vec<StateSpec>,
    /// `slots[instance][slot]`: the key of the sequence holding it.
    slots: Vec<Vec<Option<u64>>>,
    sequences: HashMap<u64, Sequence>,
    /// Open (not yet ended) sequences by id.
    open: HashMap<CorrelationId, u64>,
    /// Sequences waiting for a slot, first come first served.
    backlog: VecDeque<u64>,
    next_key: u64,
    pending: usize,
    cancelled: bool,
    closing: bool,
}

fn flag_of(c: &Control, model: &str, input: &str) -> Result<Flag> {
    Flag::from_control(c).ok_or_else(|| {
        Error::invalid_arg(format!(
            "model '{model}': sequence control input '{input}' needs exactly one of int32_false_true, fp32_false_true or bool_false_true, with two values"
        ))
    })
}

/// A tensor of zeros (empty strings for BYTES) named `name`.
fn zeros(name: &str, datatype: DataType, shape: Vec<i64>) -> Result<Tensor> {
    let count = usize::try_from(element_count(&shape)?).unwrap_or(usize::MAX);
    let len = datatype.element_size().unwrap_or(4).saturating_mul(count);
    Tensor::new(name, datatype, shape, Bytes::from(vec![0u8; len]))
}

impl SequencePolicy {
    /// The batcher `ctx`'s `sequence_batching` asks for, over `instances`
    /// instances; checks the section first ([`validate::sequence_config`]).
    pub fn new(ctx: &ModelContext, instances: usize) -> Result<SequencePolicy> {
        let config: &ModelConfig = &ctx.config;
        let model = &config.name;
        let Some(SchedulingChoice::SequenceBatching(sb)) = &config.scheduling_choice else {
            return Err(Error::internal(format!(
                "model '{model}' has no sequence_batching"
            )));
        };
        validate::sequence_config(config)?;
        let max_batch = usize::try_from(config.max_batch_size.max(1)).unwrap_or(1);
        let (strategy, per_instance, preferred) = match &sb.strategy_choice {
            Some(StrategyChoice::Oldest(o)) => {
                let mut preferred: Vec<usize> = o
                    .preferred_batch_size
                    .iter()
                    .filter_map(|&p| usize::try_from(p).ok())
                    .filter(|&p| p >= 1 && p <= max_batch)
                    .collect();
                preferred.sort_unstable();
                let candidates = usize::try_from(o.max_candidate_sequences)
                    .ok()
                    .filter(|&c| c > 0)
                    .unwrap_or(max_batch);
                let delay = Duration::from_micros(o.max_queue_delay_microseconds);
                (Strategy::Oldest { delay }, candidates, preferred)
            }
            Some(StrategyChoice::Direct(d)) => (
                Strategy::Direct {
                    delay: Duration::from_micros(d.max_queue_delay_microseconds),
                    min_utilization: d.minimum_slot_utilization,
                },
                max_batch,
                Vec::new(),
            ),
            None => (
                Strategy::Direct {
                    delay: Duration::ZERO,
                    min_utilization: 0.0,
                },
                max_batch,
                Vec::new(),
            ),
        };
        let batching = config.max_batch_size > 0;
        Ok(SequencePolicy {
            model: model.clone(),
            batching,
            max_batch,
            preferred,
            strategy,
            idle: match sb.max_sequence_idle_microseconds {
                0 => DEFAULT_IDLE,
                us => Duration::from_micros(us),
            },
            controls: controls(model, sb)?,
            states: states(ctx, sb, batching)?,
            slots: vec![vec![None; per_instance]; instances.max(1)],
            sequences: HashMap::new(),
            open: HashMap::new(),
            backlog: VecDeque::new(),
            next_key: 0,
            pending: 0,
            cancelled: false,
            closing: false,
        })
    }

    /// Shape of a one-row control or state tensor with `dims` after the
    /// batch dimension.
    fn row_shape(&self, dims: &[i64]) -> Vec<i64> {
        let mut shape = Vec::with_capacity(dims.len() + 1);
        if self.batching {
            shape.push(1);
        }
        shape.extend_from_slice(dims);
        shape
    }

    /// The CORRID tensor for `id`, if the model has that control.
    fn corrid_tensor(&self, id: &CorrelationId) -> Result<Option<Tensor>> {
        let Some((name, datatype)) = self.controls.iter().find_map(|c| match c.kind {
            ControlKind::CorrId(dt) => Some((&c.name, dt)),
            _ => None,
        }) else {
            return Ok(None);
        };
        let shape = self.row_shape(&[1]);
        if datatype == DataType::Bytes {
            let mut data = Vec::new();
            push_bytes_element(&mut data, id.to_string().as_bytes());
            return Tensor::new(name.as_str(), datatype, shape, Bytes::from(data)).map(Some);
        }
        let value: i128 = match id {
            CorrelationId::Int(n) => i128::from(*n),
            CorrelationId::Str(s) => s.parse::<i128>().map_err(|_| {
                Error::invalid_arg(format!(
                    "model '{}' passes the correlation id to its control input '{name}' as {}, but sequence id '{s}' is not an integer",
                    self.model,
                    datatype.config_name()
                ))
            })?,
        };
        let out_of_range = || {
            Error::invalid_arg(format!(
                "sequence id {id} does not fit the {} control input '{name}' of model '{}'",
                datatype.config_name(),
                self.model
            ))
        };
        let bytes: Vec<u8> = match datatype {
            DataType::Uint64 => u64::try_from(value)
                .map_err(|_| out_of_range())?
                .to_le_bytes()
                .to_vec(),
            DataType::Int64 => i64::try_from(value)
                .map_err(|_| out_of_range())?
                .to_le_bytes()
                .to_vec(),
            DataType::Uint32 => u32::try_from(value)
                .map_err(|_| out_of_range())?
                .to_le_bytes()
                .to_vec(),
            _ => i32::try_from(value)
                .map_err(|_| out_of_range())?
                .to_le_bytes()
                .to_vec(),
        };
        Tensor::new(name.as_str(), datatype, shape, Bytes::from(bytes)).map(Some)
    }

    /// The control tensors of one row; `row` is `None` for a filler.
    fn control_tensors(&self, row: Option<Row<'_>>) -> Result<Vec<Tensor>> {
        let shape = self.row_shape(&[1]);
        let mut out = Vec::with_capacity(self.controls.len());
        for c in &self.controls {
            let (flag, value) = match c.kind {
                ControlKind::Start(f) => (f, row.is_some_and(|r| r.start)),
                ControlKind::End(f) => (f, row.is_some_and(|r| r.end)),
                ControlKind::Ready(f) => (f, row.is_some()),
                ControlKind::CorrId(dt) => {
                    out.push(match row.and_then(|r| r.corrid) {
                        Some(t) => t.clone(),
                        None => zeros(&c.name, dt, shape.clone())?,
                    });
                    continue;
                }
            };
            out.push(Tensor::new(
                c.name.as_str(),
                flag.datatype(),
                shape.clone(),
                flag.bytes(value),
            )?);
        }
        Ok(out)
    }

    /// Adds the control and state inputs to a job about to run.
    fn prepare(&self, job: &mut Job, row: Option<Row<'_>>, state: Option<Vec<Tensor>>) {
        match self.control_tensors(row) {
            Ok(controls) => job.request.inputs.extend(controls),
            // Built from a checked configuration and a checked id: cannot
            // fail; if it did, the model reports the missing input.
            Err(e) => log::error!("model '{}': {e}", self.model),
        }
        match state {
            Some(values) => job.request.inputs.extend(values),
            None => job
                .request
                .inputs
                .extend(self.states.iter().map(|s| s.initial.clone())),
        }
    }

    /// The free slot an opening sequence takes (module doc).
    fn free_slot(&self) -> Option<(usize, usize)> {
        let per_instance = self.slots.first().map_or(0, Vec::len);
        (0..per_instance)
            .flat_map(|s| (0..self.slots.len()).map(move |i| (i, s)))
            .find(|&(i, s)| self.slots[i][s].is_none())
    }

    /// Forgets sequence `key` and frees its slot, handing the slot to the
    /// backlog's first sequence.
    fn retire(&mut self, key: u64) {
        let Some(seq) = self.sequences.remove(&key) else {
            return;
        };
        if self.open.get(&seq.id) == Some(&key) {
            self.open.remove(&seq.id);
        }
        self.backlog.retain(|&k| k != key);
        let Some((i, s)) = seq.slot else {
            return;
        };
        self.slots[i][s] = None;
        if let Some(next) = self.backlog.pop_front() {
            self.slots[i][s] = Some(next);
            if let Some(waiting) = self.sequences.get_mut(&next) {
                waiting.slot = Some((i, s));
            }
        }
    }

    /// Drops cancelled requests and releases idle sequences; returns the
    /// earliest moment another sequence may turn idle.
    fn housekeeping(&mut self, now: Instant, dropped: &mut Vec<Refused>) -> Option<Instant> {
        if std::mem::take(&mut self.cancelled) {
            for seq in self.sequences.values_mut() {
                let mut kept = VecDeque::with_capacity(seq.queue.len());
                for q in seq.queue.drain(..) {
                    if q.job.request.cancel.is_cancelled() {
                        self.pending -= 1;
                        dropped.push(Refused::cancelled(q.job));
                    } else {
                        kept.push_back(q);
                    }
                }
                seq.queue = kept;
            }
        }
        let mut release = Vec::new();
        let mut next: Option<Instant> = None;
        for (&key, seq) in &self.sequences {
            if !seq.queue.is_empty() {
                continue;
            }
            let at = seq.active + self.idle;
            if seq.ended || at <= now {
                release.push(key);
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        for key in release {
            if let Some(seq) = self.sequences.get(&key)
                && !seq.ended
            {
                log::info!(
                    "model '{}': sequence {} was idle for {:?}; released",
                    self.model,
                    seq.id,
                    self.idle
                );
            }
            self.retire(key);
        }
        next
    }

    /// The sequences of `instance` with a request waiting, by slot:
    /// (slot, key, arrival of the waiting request).
    fn ready(&self, instance: usize) -> Vec<(usize, u64, Instant)> {
        self.slots[instance]
            .iter()
            .enumerate()
            .filter_map(|(slot, key)| {
                let key = (*key)?;
                let head = self.sequences.get(&key)?.queue.front()?;
                Some((slot, key, head.job.enqueued))
            })
            .collect()
    }

    /// Takes the waiting request of sequence `key` and readies it to run.
    fn take(&mut self, key: u64, now: Instant) -> Option<Job> {
        let seq = self.sequences.get_mut(&key)?;
        let Queued {
            mut job,
            start,
            end,
            corrid,
        } = seq.queue.pop_front()?;
        self.pending -= 1;
        seq.active = now;
        if start {
            seq.state = None;
        }
        let state = seq.state.clone();
        let row = Row {
            start,
            end,
            corrid: corrid.as_ref(),
        };
        self.prepare(&mut job, Some(row), state);
        job.tag = key;
        if end {
            self.retire(key);
        }
        Some(job)
    }

    /// A filler row shaped like `template`: zeros, READY false.
    fn filler(&self, template: &Job, now: Instant) -> Job {
        let inputs = template
            .request
            .inputs
            .iter()
            .filter(|t| !self.is_supplied(&t.name))
            .filter_map(|t| zeros(&t.name, t.datatype, t.shape.clone()).ok())
            .collect();
        let request = InferRequest {
            model_name: template.request.model_name.clone(),
            model_version: template.request.model_version,
            inputs,
            ..Default::default()
        };
        let mut job = Job::new(request, template.outputs.clone(), None, 1, now);
        self.prepare(&mut job, None, None);
        job.tag = FILLER;
        job
    }

    /// Whether `name` is an input the batcher supplies.
    fn is_supplied(&self, name: &str) -> bool {
        self.controls.iter().any(|c| c.name == name)
            || self.states.iter().any(|s| s.initial.name == name)
    }

    /// The `direct` rule (module doc): `Err` with when to look again.
    fn direct_batch(
        &mut self,
        instance: usize,
        now: Instant,
        delay: Duration,
        min_utilization: f32,
    ) -> Result<Batch, Option<Instant>> {
        let ready = self.ready(instance);
        let Some(oldest) = ready.iter().map(|r| r.2).min() else {
            return Err(None);
        };
        let all = ready.len() == self.slots[instance].len();
        let utilization = ready.len() as f32 / self.slots[instance].len() as f32;
        let expired = now >= oldest + delay;
        if !(all || self.closing || expired || utilization >= min_utilization) {
            return Err(Some(oldest + delay));
        }
        let reason = if !self.batching {
            DispatchReason::Single
        } else if all {
            DispatchReason::MaxSize
        } else if expired && !delay.is_zero() && !self.closing {
            DispatchReason::DelayExpired
        } else {
            DispatchReason::QueueDrained
        };
        let highest = ready.last().map_or(0, |r| r.0);
        let mut rows: Vec<Option<Job>> = (0..=highest).map(|_| None).collect();
        for (slot, key, _) in ready {
            rows[slot] = self.take(key, now);
        }
        let fillers: Vec<Job> = match rows.iter().flatten().next() {
            Some(template) => rows
                .iter()
                .filter(|r| r.is_none())
                .map(|_| self.filler(template, now))
                .collect(),
            None => return Err(None),
        };
        let mut fillers = fillers.into_iter();
        let jobs = rows
            .into_iter()
            .filter_map(|row| row.or_else(|| fillers.next()))
            .collect();
        Ok(Batch { jobs, reason })
    }

    /// The `oldest` rule (module doc): `Err` with when to look again.
    fn oldest_batch(
        &mut self,
        instance: usize,
        now: Instant,
        delay: Duration,
    ) -> Result<Batch, Option<Instant>> {
        let mut ready = self.ready(instance);
        ready.sort_by_key(|r| (r.2, r.0));
        let Some(oldest) = ready.first().map(|r| r.2) else {
            return Err(None);
        };
        let (count, reason) = if ready.len() >= self.max_batch {
            let reason = if self.batching {
                DispatchReason::MaxSize
            } else {
                DispatchReason::Single
            };
            (self.max_batch, reason)
        } else if let Some(&p) = self.preferred.iter().rev().find(|&&p| p <= ready.len()) {
            (p, DispatchReason::PreferredSize)
        } else if self.closing || delay.is_zero() {
            (ready.len(), DispatchReason::QueueDrained)
        } else if now >= oldest + delay {
            (ready.len(), DispatchReason::DelayExpired)
        } else {
            return Err(Some(oldest + delay));
        };
        let jobs = ready[..count]
            .iter()
            .filter_map(|&(_, key, _)| self.take(key, now))
            .collect();
        Ok(Batch { jobs, reason })
    }

    fn refuse(&self, job: Job, message: String) -> Refused {
        Refused {
            job,
            error: Error::invalid_arg(message),
            reason: FailureReason::Other,
        }
    }
}

/// Triton's idle time when `max_sequence_idle_microseconds` is 0 (the
/// repository's auto-complete writes the same into a loaded configuration).
const DEFAULT_IDLE: Duration = Duration::from_secs(1);

/// The tag of a filler row's job: no sequence key reaches it.
const FILLER: u64 = u64::MAX;

/// The flags of a real row.
#[derive(Clone, Copy)]
struct Row<'a> {
    start: bool,
    end: bool,
    corrid: Option<&'a Tensor>,
}

fn flag_param(job: &Job, name: &str) -> bool {
    matches!(
        job.request.parameters.get(name),
        Some(ParamValue::Bool(true))
    )
}

impl Policy for SequencePolicy {
    fn admit(&mut self, job: Job, now: Instant) -> Result<Admitted, Refused> {
        let model = &self.model;
        if job.rows > 1 {
            let message = format!(
                "inference request to model '{model}' must specify batch-size 1 due to requirements of sequence batcher"
            );
            return Err(self.refuse(job, message));
        }
        let id = match CorrelationId::from_parameters(&job.request.parameters) {
            Ok(Some(id)) => id,
            Ok(None) => {
                let message = format!(
                    "inference request to model '{model}' must specify a non-zero or non-empty correlation ID"
                );
                return Err(self.refuse(job, message));
            }
            Err(e) => return Err(self.refuse(job, e.message().to_owned())),
        };
        let corrid = match self.corrid_tensor(&id) {
            Ok(t) => t,
            Err(e) => return Err(self.refuse(job, e.message().to_owned())),
        };
        let start = flag_param(&job, "sequence_start");
        let end = flag_param(&job, "sequence_end");
        let key = match self.open.get(&id) {
            Some(&key) => {
                if start {
                    log::warn!(
                        "sequence {id} for model '{model}' has a conflict: the previous sequence did not end before this sequence start; it continues in the same slot"
                    );
                }
                key
            }
            None if start => {
                let key = self.next_key;
                self.next_key += 1;
                let slot = self.free_slot();
                match slot {
                    Some((i, s)) => self.slots[i][s] = Some(key),
                    None => self.backlog.push_back(key),
                }
                self.sequences.insert(
                    key,
                    Sequence {
                        id: id.clone(),
                        slot,
                        queue: VecDeque::new(),
                        active: now,
                        ended: false,
                        state: None,
                    },
                );
                self.open.insert(id.clone(), key);
                key
            }
            None => {
                let message = format!(
                    "inference request for sequence {id} to model '{model}' must specify the START flag on the first request of the sequence"
                );
                return Err(self.refuse(job, message));
            }
        };
        let seq = self
            .sequences
            .get_mut(&key)
            .expect("open sequences are known");
        if end {
            seq.ended = true;
            self.open.remove(&id);
        }
        seq.active = now;
        seq.queue.push_back(Queued {
            job,
            start,
            end,
            corrid,
        });
        self.pending += 1;
        let wake = match seq.slot {
            Some((instance, _)) => Wake::Instance(instance),
            None => Wake::Nobody,
        };
        Ok(Admitted {
            wake,
            deadline: Some(now + self.idle),
        })
    }

    fn next(&mut self, instance: usize, now: Instant, dropped: &mut Vec<Refused>) -> Next {
        let idle_at = self.housekeeping(now, dropped);
        if instance >= self.slots.len() {
            return Next::Idle;
        }
        let formed = match self.strategy {
            Strategy::Direct {
                delay,
                min_utilization,
            } => self.direct_batch(instance, now, delay, min_utilization),
            Strategy::Oldest { delay } => self.oldest_batch(instance, now, delay),
        };
        match formed {
            Ok(batch) => Next::Run(batch),
            Err(at) => match (at, idle_at) {
                (Some(a), Some(b)) => Next::Until(a.min(b)),
                (Some(a), None) | (None, Some(a)) => Next::Until(a),
                (None, None) => Next::Idle,
            },
        }
    }

    fn expire(&mut self, now: Instant, dropped: &mut Vec<Refused>) -> Option<Instant> {
        self.housekeeping(now, dropped)
    }

    fn cancelled(&mut self) {
        self.cancelled = true;
    }

    fn observes_outputs(&self) -> bool {
        !self.states.is_empty()
    }

    fn executed(&mut self, _instance: usize, jobs: &[Job], produced: &[Result<Vec<Tensor>>]) {
        for (job, result) in jobs.iter().zip(produced) {
            // Fillers carry a tag no sequence has; a sequence released
            // while its request ran has no state to keep.
            let (Some(seq), Ok(outputs)) = (self.sequences.get_mut(&job.tag), result) else {
                continue;
            };
            let next: Option<Vec<Tensor>> = self
                .states
                .iter()
                .map(|s| {
                    outputs.iter().find(|t| t.name == s.output).map(|t| Tensor {
                        name: s.initial.name.clone(),
                        ..t.clone()
                    })
                })
                .collect();
            match next {
                Some(values) => seq.state = Some(values),
                None => log::error!(
                    "model '{}': sequence {} produced no value for every implicit state output; its state is unchanged",
                    self.model,
                    seq.id
                ),
            }
        }
    }

    fn pending(&self) -> usize {
        self.pending
    }

    fn close(&mut self) {
        self.closing = true;
    }

    fn drain(&mut self, dropped: &mut Vec<Refused>) {
        for seq in self.sequences.values_mut() {
            for q in seq.queue.drain(..) {
                dropped.push(Refused {
                    job: q.job,
                    error: Error::new(Code::Unavailable, "the model is unloading"),
                    reason: FailureReason::Other,
                });
            }
        }
        self.pending = 0;
    }
}

/// The control inputs of a (validated) `sequence_batching`.
fn controls(model: &str, sb: &ModelSequenceBatching) -> Result<Vec<ControlSpec>> {
    let mut out = Vec::new();
    for ci in &sb.control_input {
        for c in &ci.control {
            let kind = match c.kind() {
                Kind::ControlSequenceStart => ControlKind::Start(flag_of(c, model, &ci.name)?),
                Kind::ControlSequenceEnd => ControlKind::End(flag_of(c, model, &ci.name)?),
                Kind::ControlSequenceReady => ControlKind::Ready(flag_of(c, model, &ci.name)?),
                Kind::ControlSequenceCorrid => ControlKind::CorrId(
                    DataType::from_config_enum(c.data_type).ok_or_else(|| {
                        Error::invalid_arg(format!(
                            "model '{model}': sequence control input '{}' has no valid data_type",
                            ci.name
                        ))
                    })?,
                ),
            };
            out.push(ControlSpec {
                name: ci.name.clone(),
                kind,
            });
        }
    }
    Ok(out)
}

/// The implicit states of a (validated) `sequence_batching`, with their
/// initial values.
fn states(
    ctx: &ModelContext,
    sb: &ModelSequenceBatching,
    batching: bool,
) -> Result<Vec<StateSpec>> {
    let model = &ctx.config.name;
    sb.state
        .iter()
        .map(|s| {
            let datatype = DataType::from_config_enum(s.data_type).ok_or_else(|| {
                Error::invalid_arg(format!(
                    "model '{model}': state '{}' has no valid data_type",
                    s.input_name
                ))
            })?;
            let initial = s.initial_state.first();
            let dims = match initial {
                Some(i) if !i.dims.is_empty() => &i.dims,
                _ => &s.dims,
            };
            let mut shape = Vec::with_capacity(dims.len() + 1);
            if batching {
                shape.push(1);
            }
            shape.extend_from_slice(dims);
            let initial = match initial.and_then(|i| i.state_data.as_ref()) {
                Some(StateData::DataFile(file)) => {
                    let path = ctx.model_path.join("initial_state").join(file);
                    let data = std::fs::read(&path).map_err(|e| {
                        Error::invalid_arg(format!(
                            "model '{model}': cannot read the initial state of '{}' from {}: {e}",
                            s.input_name,
                            path.display()
                        ))
                    })?;
                    Tensor::new(s.input_name.as_str(), datatype, shape, Bytes::from(data)).map_err(
                        |e| {
                            Error::invalid_arg(format!(
                                "model '{model}': initial state file {} of '{}': {}",
                                path.display(),
                                s.input_name,
                                e.message()
                            ))
                        },
                    )?
                }
                Some(StateData::ZeroData(_)) | None => zeros(&s.input_name, datatype, shape)?,
            };
            Ok(StateSpec {
                output: s.output_name.clone(),
                initial,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
