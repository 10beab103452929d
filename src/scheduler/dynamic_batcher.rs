//! The dynamic batcher: priority queues with Triton's queue policies, and
//! the rule that turns queued requests into batches. Pure: time is an
//! argument, so the rule is tested with a simulated clock. A model without
//! `dynamic_batching` uses the same queue with batches of one request.
//!
//! # Queues
//! One FIFO queue per priority level (`priority_levels`, level 1 first; one
//! level when it is 0). A request's level is its `priority` parameter; 0 or
//! a value above `priority_levels` means `default_priority_level`. Each
//! level has a queue policy (`priority_queue_policy`, else
//! `default_queue_policy`):
//! - `max_queue_size` (0 = unbounded): a request that finds its level's
//!   queue full is refused at once, "Exceeds maximum queue size"
//!   (UNAVAILABLE: HTTP 503, gRPC UNAVAILABLE), counted as REJECTED.
//! - A timeout: `default_timeout_microseconds`, or the request's `timeout`
//!   parameter (microseconds) when `allow_timeout_override` is set; 0 means
//!   none. A request still queued when its timeout passes is refused,
//!   "Request timeout expired", when `timeout_action` is REJECT; with DELAY
//!   it stays queued but is demoted behind every request that has not timed
//!   out (kept in arrival order within its level).
//!
//! Cancelled requests leave the queue at the next look at it (the scheduler
//! looks as soon as a request is cancelled).
//!
//! # Forming a batch
//! When an instance is free, the candidates are taken in this order: level
//! 1's queue, level 2's, ..., then the demoted requests level by level. The
//! run is the longest run of candidates, from the first, whose rows add up
//! to at most `max_batch_size` and whose inputs agree with the first one's
//! in names, datatypes and non-batch dimensions. With `t` the row totals of
//! the run's prefixes, `P` the largest preferred batch size
//! (`max_batch_size` when none is configured), and "expired" meaning a
//! nonzero `max_queue_delay_microseconds` has passed since the run's first
//! request arrived:
//! 1. not expired, and some prefix's total is a preferred batch size:
//!    dispatch the longest such prefix (preferred size reached), even when
//!    more rows are queued;
//! 2. not expired, and the queue holds more than `P` rows within the run
//!    (some prefix of two or more requests totals more than `P`): dispatch
//!    the longest prefix before it, at least the first request (max size
//!    reached: waiting cannot make it a better batch);
//! 3. the whole run totals `P` or more rows, or the candidate after the run
//!    could not join it (too many rows, other shapes): dispatch the run
//!    (max size reached: it cannot grow);
//! 4. expired: dispatch the run (delay expired); with no delay configured,
//!    dispatch it at once (queue drained: everything queued went out);
//! 5. else wait until the delay expires, or until another request arrives.
//!
//! This is Triton's rule, including its order: a preferred size is taken
//! before a full batch, and an expired delay sends the whole run rather
//! than a preferred prefix of it.
//!
//! With `max_batch_size` 0 (or no dynamic batching) every batch is one
//! request. Requests leave their level's queue only as part of a batch, so
//! within a level they run in arrival order.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::stats::{DispatchReason, FailureReason};
use super::{Admitted, Batch, Job, Next, Policy, Refused, Wake};
use crate::core::proto::inference::model_queue_policy::TimeoutAction;
use crate::core::proto::{ModelConfig, ModelQueuePolicy};
use crate::core::{Code, Error, ParamValue, Tensor};

#[derive(Debug, Clone, Copy)]
struct QueuePolicy {
    reject_on_timeout: bool,
    default_timeout: Option<Duration>,
    allow_override: bool,
    max_queue_size: usize,
}

impl QueuePolicy {
    fn from_config(p: Option<&ModelQueuePolicy>) -> QueuePolicy {
        let p = p.cloned().unwrap_or_default();
        QueuePolicy {
            reject_on_timeout: p.timeout_action() == TimeoutAction::Reject,
            default_timeout: (p.default_timeout_microseconds > 0)
                .then(|| Duration::from_micros(p.default_timeout_microseconds)),
            allow_override: p.allow_timeout_override,
            max_queue_size: usize::try_from(p.max_queue_size).unwrap_or(usize::MAX),
        }
    }
}

#[derive(Default)]
struct Level {
    queue: VecDeque<Job>,
    /// Timed out under the DELAY action: behind every other request.
    demoted: VecDeque<Job>,
}

/// The dynamic batcher of one model version (see the module doc).
pub struct DynamicBatcher {
    /// Rows per batch; 0 means one request per batch.
    max_batch: u64,
    preferred: Vec<u64>,
    delay: Duration,
    levels: Vec<Level>,
    policies: Vec<QueuePolicy>,
    default_level: usize,
    pending: usize,
    /// Shutting down: dispatch without waiting.
    closing: bool,
    /// The earliest queue timeout, when a sweep is due.
    next_deadline: Option<Instant>,
    /// A queued request was cancelled since the last sweep.
    cancelled: bool,
}

impl DynamicBatcher {
    /// The batcher a configuration asks for: its `dynamic_batching`, or
    /// batches of one request in arrival order when there is none.
    pub fn new(config: &ModelConfig) -> DynamicBatcher {
        use crate::core::proto::inference::model_config::SchedulingChoice;
        let db = match &config.scheduling_choice {
            Some(SchedulingChoice::DynamicBatching(db)) => Some(db),
            _ => None,
        };
        let Some(db) = db else {
            return DynamicBatcher {
                max_batch: 0,
                preferred: Vec::new(),
                delay: Duration::ZERO,
                levels: vec![Level::default()],
                policies: vec![QueuePolicy::from_config(None)],
                default_level: 0,
                pending: 0,
                closing: false,
                next_deadline: None,
                cancelled: false,
            };
        };
        let level_count = usize::try_from(db.priority_levels.max(1)).unwrap_or(1);
        let policies = (1..=level_count as u64)
            .map(|level| {
                QueuePolicy::from_config(
                    db.priority_queue_policy
                        .get(&level)
                        .or(db.default_queue_policy.as_ref()),
                )
            })
            .collect();
        let mut preferred: Vec<u64> = db
            .preferred_batch_size
            .iter()
            .filter_map(|&p| u64::try_from(p).ok())
            .collect();
        preferred.sort_unstable();
        DynamicBatcher {
            max_batch: u64::try_from(config.max_batch_size).unwrap_or(0),
            preferred,
            delay: Duration::from_micros(db.max_queue_delay_microseconds),
            levels: (0..level_count).map(|_| Level::default()).collect(),
            policies,
            default_level: usize::try_from(db.default_priority_level.max(1) - 1)
                .unwrap_or(0)
                .min(level_count - 1),
            pending: 0,
            closing: false,
            next_deadline: None,
            cancelled: false,
        }
    }

    /// Sweeps when a request may have been cancelled or timed out.
    fn sweep_if_due(&mut self, now: Instant, dropped: &mut Vec<Refused>) {
        if self.cancelled || self.next_deadline.is_some_and(|d| d <= now) {
            self.cancelled = false;
            self.next_deadline = self.sweep(now, dropped);
        }
    }

    /// The level (0-based) a request's `priority` parameter selects.
    fn level_of(&self, job: &Job) -> usize {
        match job.request.parameters.get("priority") {
            Some(ParamValue::Int(p)) if *p >= 1 && (*p as u64) <= self.levels.len() as u64 => {
                (*p - 1) as usize
            }
            _ => self.default_level,
        }
    }

    /// The request's queue timeout under its level's policy.
    fn timeout_of(&self, job: &Job, level: usize) -> Option<Duration> {
        let policy = &self.policies[level];
        if let (true, Some(ParamValue::Int(us))) =
            (policy.allow_override, job.request.parameters.get("timeout"))
        {
            return (*us > 0).then(|| Duration::from_micros(*us as u64));
        }
        policy.default_timeout
    }

    /// Removes cancelled requests and applies the timeout action to expired
    /// ones; returns the earliest timeout still ahead.
    fn sweep(&mut self, now: Instant, dropped: &mut Vec<Refused>) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut removed = 0;
        for (level, policy) in self.levels.iter_mut().zip(&self.policies) {
            let mut kept = VecDeque::with_capacity(level.queue.len());
            for job in level.queue.drain(..) {
                if job.request.cancel.is_cancelled() {
                    removed += 1;
                    dropped.push(Refused::cancelled(job));
                    continue;
                }
                match job.deadline {
                    Some(deadline) if deadline <= now => {
                        if policy.reject_on_timeout {
                            removed += 1;
                            dropped.push(Refused {
                                job,
                                error: Error::unavailable("Request timeout expired"),
                                reason: FailureReason::Rejected,
                            });
                        } else {
                            level.demoted.push_back(job);
                        }
                    }
                    Some(deadline) => {
                        next = Some(next.map_or(deadline, |n| n.min(deadline)));
                        kept.push_back(job);
                    }
                    None => kept.push_back(job),
                }
            }
            level.queue = kept;
            for job in std::mem::take(&mut level.demoted) {
                if job.request.cancel.is_cancelled() {
                    removed += 1;
                    dropped.push(Refused::cancelled(job));
                } else {
                    level.demoted.push_back(job);
                }
            }
        }
        self.pending -= removed.min(self.pending);
        next
    }

    /// Candidates in dispatch order.
    fn candidates(&self) -> impl Iterator<Item = &Job> {
        self.levels
            .iter()
            .flat_map(|l| l.queue.iter())
            .chain(self.levels.iter().flat_map(|l| l.demoted.iter()))
    }

    /// Takes the first `count` candidates out of the queues.
    fn take(&mut self, count: usize) -> Vec<Job> {
        let mut jobs = Vec::with_capacity(count);
        for level in 0..self.levels.len() {
            while jobs.len() < count {
                match self.levels[level].queue.pop_front() {
                    Some(j) => jobs.push(j),
                    None => break,
                }
            }
        }
        for level in 0..self.levels.len() {
            while jobs.len() < count {
                match self.levels[level].demoted.pop_front() {
                    Some(j) => jobs.push(j),
                    None => break,
                }
            }
        }
        self.pending -= jobs.len();
        jobs
    }
}

/// Whether `b` can share a batch with `a`: same inputs (by name), same
/// datatypes, same dimensions past the batch dimension.
fn batchable(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| {
            b.iter().any(|y| {
                y.name == x.name && y.datatype == x.datatype && y.shape.get(1..) == x.shape.get(1..)
            })
        })
}

impl Policy for DynamicBatcher {
    fn admit(&mut self, mut job: Job, now: Instant) -> Result<Admitted, Refused> {
        let level = self.level_of(&job);
        let policy = self.policies[level];
        let queued = self.levels[level].queue.len() + self.levels[level].demoted.len();
        if policy.max_queue_size > 0 && queued >= policy.max_queue_size {
            return Err(Refused {
                job,
                error: Error::unavailable("Exceeds maximum queue size"),
                reason: FailureReason::Rejected,
            });
        }
        job.priority = level as u32 + 1;
        job.deadline = self.timeout_of(&job, level).map(|t| now + t);
        let deadline = job.deadline;
        if let Some(d) = deadline {
            self.next_deadline = Some(self.next_deadline.map_or(d, |n| n.min(d)));
        }
        self.levels[level].queue.push_back(job);
        self.pending += 1;
        Ok(Admitted {
            wake: Wake::Any,
            deadline,
        })
    }

    fn next(&mut self, _instance: usize, now: Instant, dropped: &mut Vec<Refused>) -> Next {
        self.sweep_if_due(now, dropped);
        if self.pending == 0 {
            return Next::Idle;
        }
        if self.max_batch == 0 {
            return Next::Run(Batch {
                jobs: self.take(1),
                reason: DispatchReason::Single,
            });
        }
        // The run (module doc): its length, its prefixes' row totals, and
        // whether a candidate after it could not join.
        let mut totals: Vec<u64> = Vec::new();
        let mut blocked = false;
        let mut first: Option<(&[Tensor], Instant)> = None;
        for job in self.candidates() {
            let total = totals.last().copied().unwrap_or(0) + job.rows;
            let fits = total <= self.max_batch
                && first.is_none_or(|(inputs, _)| batchable(inputs, &job.request.inputs));
            if !fits {
                blocked = true;
                break;
            }
            first.get_or_insert((&job.request.inputs, job.enqueued));
            totals.push(total);
            if total == self.max_batch {
                break;
            }
        }
        let Some((_, oldest)) = first else {
            return Next::Idle;
        };
        let run = totals.len();
        let largest = self.preferred.last().copied().unwrap_or(self.max_batch);
        let expired = !self.delay.is_zero() && now >= oldest + self.delay;
        let preferred = totals
            .iter()
            .rposition(|t| self.preferred.contains(t))
            .map(|i| i + 1);
        // Rule 2: the first request after which the queue holds more than
        // `largest` rows; the first request alone always goes.
        let past_largest = totals.iter().skip(1).position(|&t| t > largest);
        let (count, reason) = match (preferred, past_largest) {
            (Some(count), _) if !expired => (count, DispatchReason::PreferredSize),
            (None, Some(before)) if !expired => (before + 1, DispatchReason::MaxSize),
            _ if blocked || totals[run - 1] >= largest => (run, DispatchReason::MaxSize),
            _ if expired => (run, DispatchReason::DelayExpired),
            _ if self.delay.is_zero() || self.closing => (run, DispatchReason::QueueDrained),
            _ => return Next::Until(oldest + self.delay),
        };
        Next::Run(Batch {
            jobs: self.take(count),
            reason,
        })
    }

    fn expire(&mut self, now: Instant, dropped: &mut Vec<Refused>) -> Option<Instant> {
        self.sweep_if_due(now, dropped);
        self.next_deadline
    }

    fn cancelled(&mut self) {
        self.cancelled = true;
    }

    fn pending(&self) -> usize {
        self.pending
    }

    fn close(&mut self) {
        self.closing = true;
    }

    fn drain(&mut self, dropped: &mut Vec<Refused>) {
        let count = self.pending;
        for job in self.take(count) {
            dropped.push(Refused {
                job,
                error: Error::new(Code::Unavailable, "the model is unloading"),
                reason: FailureReason::Other,
            });
        }
    }
}

#[cfg(test)]
mod tests;
