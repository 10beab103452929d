//! Per model version inference statistics (Triton's statistics extension):
//! cumulative counts and durations of each phase a request goes through,
//! and the same per batch size. The scheduler records; the server reads
//! snapshots.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A count and the total time spent, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatDuration {
    /// How many times.
    pub count: u64,
    /// Total nanoseconds over all of them.
    pub ns: u64,
}

impl StatDuration {
    fn add(&mut self, d: Duration) {
        self.count += 1;
        self.ns = self
            .ns
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
}

/// Compute phases of executions of one batch size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Gathering inputs for the backend.
    pub compute_input: StatDuration,
    /// The backend's execution.
    pub compute_infer: StatDuration,
    /// Checking and collecting outputs.
    pub compute_output: StatDuration,
}

/// A snapshot of one model version's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// Requests that succeeded, from arrival at the model to response.
    pub success: StatDuration,
    /// Requests that failed (invalid, cancelled, backend error).
    pub fail: StatDuration,
    /// Time requests waited in the queue.
    pub queue: StatDuration,
    /// Input gathering, per request.
    pub compute_input: StatDuration,
    /// Backend execution, per request.
    pub compute_infer: StatDuration,
    /// Output collection, per request.
    pub compute_output: StatDuration,
    /// Inferences performed (a batch of n counts n).
    pub inference_count: u64,
    /// Backend executions.
    pub execution_count: u64,
    /// Milliseconds since the Unix epoch of the last inference; 0 if none.
    pub last_inference_ms: u64,
    /// Compute phases per batch size.
    pub batches: BTreeMap<u64, BatchStats>,
    /// Failures per reason (their sum is `fail.count`).
    pub failures: HashMap<FailureReason, u64>,
    /// Executions per dispatch reason.
    pub dispatches: HashMap<DispatchReason, u64>,
}

/// Why a request failed: the `reason` label of
/// `nv_inference_request_failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// Refused by the scheduler: a full queue, a queue timeout.
    Rejected,
    /// The client cancelled it (went away, reset the stream, timed out).
    Canceled,
    /// The backend failed or panicked.
    Backend,
    /// Anything else (an invalid request, an unloading model).
    Other,
}

impl FailureReason {
    /// Every reason, in label order.
    pub const ALL: [FailureReason; 4] = [
        FailureReason::Rejected,
        FailureReason::Canceled,
        FailureReason::Backend,
        FailureReason::Other,
    ];

    /// The label value Triton uses.
    pub fn label(self) -> &'static str {
        match self {
            FailureReason::Rejected => "REJECTED",
            FailureReason::Canceled => "CANCELED",
            FailureReason::Backend => "BACKEND",
            FailureReason::Other => "OTHER",
        }
    }
}

/// Why a batch was dispatched to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DispatchReason {
    /// No batcher: one request per execution.
    Single,
    /// The batch reached a preferred batch size.
    PreferredSize,
    /// The batch reached the maximum batch size, or the next request could
    /// not join it.
    MaxSize,
    /// The queue delay of the batch's first request expired.
    DelayExpired,
    /// Everything queued went out at once (no delay configured, or the
    /// model is unloading).
    QueueDrained,
}

impl DispatchReason {
    /// Every reason, in label order.
    pub const ALL: [DispatchReason; 5] = [
        DispatchReason::Single,
        DispatchReason::PreferredSize,
        DispatchReason::MaxSize,
        DispatchReason::DelayExpired,
        DispatchReason::QueueDrained,
    ];

    /// A label value for metrics.
    pub fn label(self) -> &'static str {
        match self {
            DispatchReason::Single => "single",
            DispatchReason::PreferredSize => "preferred_size",
            DispatchReason::MaxSize => "max_size",
            DispatchReason::DelayExpired => "delay_expired",
            DispatchReason::QueueDrained => "queue_drained",
        }
    }
}

/// One successful request, timed by the scheduler (per request, even when
/// it ran inside a larger batch).
#[derive(Debug, Clone, Copy)]
pub struct RequestTiming {
    /// Rows this request carried (1 for a model that does not batch).
    pub batch_size: u64,
    /// Arrival at the model until the response was ready.
    pub total: Duration,
    /// Time in the queue.
    pub queue: Duration,
    /// Input gathering.
    pub compute_input: Duration,
    /// Backend execution.
    pub compute_infer: Duration,
    /// Output collection.
    pub compute_output: Duration,
}

/// One backend execution (per batch).
#[derive(Debug, Clone, Copy)]
pub struct ExecutionTiming {
    /// Rows in the whole execution.
    pub batch_size: u64,
    /// Why the batch was dispatched.
    pub reason: DispatchReason,
    /// Input gathering.
    pub compute_input: Duration,
    /// Backend execution.
    pub compute_infer: Duration,
    /// Output collection.
    pub compute_output: Duration,
}

/// Collects statistics from any thread.
#[derive(Debug, Default)]
pub struct StatsCollector {
    stats: Mutex<ModelStats>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl StatsCollector {
    fn with<R>(&self, f: impl FnOnce(&mut ModelStats) -> R) -> R {
        f(&mut self.stats.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records a request that failed after `elapsed` at the model.
    pub fn record_failure(&self, elapsed: Duration, reason: FailureReason) {
        self.with(|s| {
            s.fail.add(elapsed);
            *s.failures.entry(reason).or_default() += 1;
        });
    }

    /// Records a successful request.
    pub fn record_success(&self, t: &RequestTiming) {
        let last = now_ms();
        self.with(|s| {
            s.success.add(t.total);
            s.queue.add(t.queue);
            s.compute_input.add(t.compute_input);
            s.compute_infer.add(t.compute_infer);
            s.compute_output.add(t.compute_output);
            s.inference_count += t.batch_size;
            s.last_inference_ms = last;
        });
    }

    /// Records one backend execution.
    pub fn record_execution(&self, t: &ExecutionTiming) {
        self.with(|s| {
            s.execution_count += 1;
            *s.dispatches.entry(t.reason).or_default() += 1;
            let b = s.batches.entry(t.batch_size).or_default();
            b.compute_input.add(t.compute_input);
            b.compute_infer.add(t.compute_infer);
            b.compute_output.add(t.compute_output);
        });
    }

    /// A copy of the statistics so far.
    pub fn snapshot(&self) -> ModelStats {
        self.with(|s| s.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulates() {
        let c = StatsCollector::default();
        let ms = Duration::from_millis;
        c.record_failure(ms(1), FailureReason::Backend);
        for batch_size in [1, 4, 4] {
            c.record_success(&RequestTiming {
                batch_size,
                total: ms(10),
                queue: ms(2),
                compute_input: ms(1),
                compute_infer: ms(6),
                compute_output: ms(1),
            });
            c.record_execution(&ExecutionTiming {
                batch_size,
                reason: DispatchReason::Single,
                compute_input: ms(1),
                compute_infer: ms(6),
                compute_output: ms(1),
            });
        }
        let s = c.snapshot();
        assert_eq!(
            s.fail,
            StatDuration {
                count: 1,
                ns: 1_000_000
            }
        );
        assert_eq!(s.success.count, 3);
        assert_eq!(s.compute_infer.ns, 18_000_000);
        assert_eq!((s.inference_count, s.execution_count), (9, 3));
        assert_eq!(s.batches[&4].compute_infer.count, 2);
        assert!(s.last_inference_ms > 0);
        assert_eq!(s.failures[&FailureReason::Backend], 1);
        assert_eq!(s.dispatches[&DispatchReason::Single], 3);
    }
}
