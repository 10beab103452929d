//! Per model version inference statistics (Triton's statistics extension):
//! cumulative counts and durations of each phase a request goes through,
//! and the same per batch size. The scheduler records; the server reads
//! snapshots.

use std::collections::BTreeMap;
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
}

/// The phases of one successful execution, as the instance thread timed it.
#[derive(Debug, Clone, Copy)]
pub struct Execution {
    /// Batch size (1 for a model that does not batch).
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
    pub fn record_failure(&self, elapsed: Duration) {
        self.with(|s| s.fail.add(elapsed));
    }

    /// Records a successful execution.
    pub fn record_success(&self, e: &Execution) {
        let last = now_ms();
        self.with(|s| {
            s.success.add(e.total);
            s.queue.add(e.queue);
            s.compute_input.add(e.compute_input);
            s.compute_infer.add(e.compute_infer);
            s.compute_output.add(e.compute_output);
            s.inference_count += e.batch_size;
            s.execution_count += 1;
            s.last_inference_ms = last;
            let b = s.batches.entry(e.batch_size).or_default();
            b.compute_input.add(e.compute_input);
            b.compute_infer.add(e.compute_infer);
            b.compute_output.add(e.compute_output);
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
        c.record_failure(ms(1));
        for batch_size in [1, 4, 4] {
            c.record_success(&Execution {
                batch_size,
                total: ms(10),
                queue: ms(2),
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
    }
}
