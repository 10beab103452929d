//! Per model version inference statistics (Triton's statistics extension)
//! and the histograms the metrics endpoint adds to them: cumulative counts
//! and durations of each phase a request goes through, the same per batch
//! size, failures per reason, executions per dispatch reason. The
//! scheduler records from any thread; the server and the metrics endpoint
//! read snapshots.
//!
//! Recording is one short mutex hold and never allocates, except the first
//! execution of a batch size, which adds its `batch_stats` entry. Failure
//! and dispatch reasons are counted in fixed arrays, histograms have fixed
//! bucket bounds ([`LATENCY_BOUNDS_US`], [`BATCH_SIZE_BOUNDS`]).
//!
//! nereid has no response cache, so [`ModelStats::cache_hit`] and
//! [`ModelStats::cache_miss`] stay zero, and it does not know how much
//! memory a model holds, so no memory usage is reported.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::ops::Index;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

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
        self.ns = self.ns.saturating_add(nanos(d));
    }
}

/// Upper bounds, in microseconds, of the latency histograms' buckets
/// (request, queue and compute durations): 10 us to 10 s, then `+Inf`.
/// The low buckets matter: a cheap request spends tens of microseconds in
/// the server.
pub const LATENCY_BOUNDS_US: [u64; 19] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Upper bounds of the batch-size histogram's buckets: powers of two up to
/// 1024, then `+Inf`.
pub const BATCH_SIZE_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// A histogram over fixed bucket bounds: how many observations fell at or
/// below each bound (and above the previous one), how many above the last,
/// and their sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram<const B: usize> {
    bounds: &'static [u64; B],
    /// `buckets[i]` counts observations in `(bounds[i-1], bounds[i]]`.
    buckets: [u64; B],
    /// Observations above the last bound.
    overflow: u64,
    sum: u64,
}

impl<const B: usize> Histogram<B> {
    fn new(bounds: &'static [u64; B]) -> Histogram<B> {
        Histogram {
            bounds,
            buckets: [0; B],
            overflow: 0,
            sum: 0,
        }
    }

    fn observe(&mut self, value: u64, sum_by: u64) {
        match self.bounds.iter().position(|&bound| value <= bound) {
            Some(i) => self.buckets[i] += 1,
            None => self.overflow += 1,
        }
        self.sum = self.sum.saturating_add(sum_by);
    }

    /// Each bucket's upper bound with the number of observations at or
    /// below it (cumulative, as Prometheus' `le` buckets); the `+Inf`
    /// bucket is [`Histogram::count`].
    pub fn cumulative(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.bounds
            .iter()
            .zip(&self.buckets)
            .scan(0, |below, (&bound, &n)| {
                *below += n;
                Some((bound, *below))
            })
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum::<u64>() + self.overflow
    }

    /// Sum of the observations (for latencies: nanoseconds, finer than the
    /// bucket bounds).
    pub fn sum(&self) -> u64 {
        self.sum
    }
}

/// A latency histogram: buckets in microseconds, sum in nanoseconds.
pub type LatencyHistogram = Histogram<19>;
/// The batch-size histogram: buckets and sum in rows.
pub type BatchSizeHistogram = Histogram<11>;

impl LatencyHistogram {
    fn observe_duration(&mut self, d: Duration) {
        self.observe(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), nanos(d));
    }
}

/// A small set of label values (the variants of a field-less enum).
pub trait Label: Copy + 'static {
    /// Every value, in exposition order.
    const ALL: &'static [Self];
    /// Position in [`Label::ALL`].
    fn index(self) -> usize;
    /// The label value on the wire.
    fn label(self) -> &'static str;
}

/// A count per label value, in a fixed array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally<R, const N: usize> {
    counts: [u64; N],
    label: PhantomData<R>,
}

impl<R: Label, const N: usize> Default for Tally<R, N> {
    fn default() -> Tally<R, N> {
        Tally {
            counts: [0; N],
            label: PhantomData,
        }
    }
}

impl<R: Label, const N: usize> Tally<R, N> {
    fn add(&mut self, r: R) {
        self.counts[r.index()] += 1;
    }

    /// Every label value with its count, in [`Label::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (R, u64)> + '_ {
        R::ALL.iter().map(|&r| (r, self.counts[r.index()]))
    }
}

impl<R: Label, const N: usize> Index<&R> for Tally<R, N> {
    type Output = u64;

    fn index(&self, r: &R) -> &u64 {
        &self.counts[r.index()]
    }
}

/// Failures per [`FailureReason`].
pub type FailureCounts = Tally<FailureReason, 4>;
/// Executions per [`DispatchReason`].
pub type DispatchCounts = Tally<DispatchReason, 5>;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelStats {
    /// Requests that succeeded, from arrival at the model to response.
    pub success: StatDuration,
    /// Requests that failed (invalid, rejected, cancelled, backend error);
    /// `failures` splits the count by reason.
    pub fail: StatDuration,
    /// Time requests waited in the queue.
    pub queue: StatDuration,
    /// Input gathering, per request.
    pub compute_input: StatDuration,
    /// Backend execution, per request.
    pub compute_infer: StatDuration,
    /// Output collection, per request.
    pub compute_output: StatDuration,
    /// Requests answered from the response cache: always zero, nereid has
    /// no response cache.
    pub cache_hit: StatDuration,
    /// Requests that missed the response cache: always zero, as above.
    pub cache_miss: StatDuration,
    /// Inferences performed (a request of n rows counts n).
    pub inference_count: u64,
    /// Backend executions.
    pub execution_count: u64,
    /// Milliseconds since the Unix epoch of the last inference; 0 if none.
    pub last_inference_ms: u64,
    /// Compute phases per execution batch size, counted per execution.
    pub batches: BTreeMap<u64, BatchStats>,
    /// Failures per reason (their sum is `fail.count`).
    pub failures: FailureCounts,
    /// Executions per dispatch reason (their sum is `execution_count`).
    pub dispatches: DispatchCounts,
    /// Successful requests' durations (as `success`), one observation each.
    pub request_duration: LatencyHistogram,
    /// Successful requests' queue times (as `queue`), one observation each.
    pub queue_duration: LatencyHistogram,
    /// Backend time of each execution (as `batch_stats`' `compute_infer`).
    pub compute_duration: LatencyHistogram,
    /// Rows of each execution.
    pub batch_size: BatchSizeHistogram,
}

impl Default for ModelStats {
    fn default() -> ModelStats {
        ModelStats {
            success: StatDuration::default(),
            fail: StatDuration::default(),
            queue: StatDuration::default(),
            compute_input: StatDuration::default(),
            compute_infer: StatDuration::default(),
            compute_output: StatDuration::default(),
            cache_hit: StatDuration::default(),
            cache_miss: StatDuration::default(),
            inference_count: 0,
            execution_count: 0,
            last_inference_ms: 0,
            batches: BTreeMap::new(),
            failures: FailureCounts::default(),
            dispatches: DispatchCounts::default(),
            request_duration: Histogram::new(&LATENCY_BOUNDS_US),
            queue_duration: Histogram::new(&LATENCY_BOUNDS_US),
            compute_duration: Histogram::new(&LATENCY_BOUNDS_US),
            batch_size: Histogram::new(&BATCH_SIZE_BOUNDS),
        }
    }
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

impl Label for FailureReason {
    const ALL: &'static [FailureReason] = &[
        FailureReason::Rejected,
        FailureReason::Canceled,
        FailureReason::Backend,
        FailureReason::Other,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The label value Triton uses.
    fn label(self) -> &'static str {
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
    /// not join it, or would take it past the largest preferred size.
    MaxSize,
    /// The queue delay of the batch's first request expired.
    DelayExpired,
    /// Everything queued went out at once (no delay configured, or the
    /// model is unloading).
    QueueDrained,
}

impl Label for DispatchReason {
    const ALL: &'static [DispatchReason] = &[
        DispatchReason::Single,
        DispatchReason::PreferredSize,
        DispatchReason::MaxSize,
        DispatchReason::DelayExpired,
        DispatchReason::QueueDrained,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn label(self) -> &'static str {
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
            s.failures.add(reason);
        });
    }

    /// Records a successful request: `success`, `queue` and the compute
    /// phases, its rows in `inference_count`, the request and queue
    /// histograms, the time of the last inference.
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
            s.request_duration.observe_duration(t.total);
            s.queue_duration.observe_duration(t.queue);
        });
    }

    /// Records one backend execution: `execution_count`, the batch size's
    /// `batch_stats`, the dispatch reason, the compute and batch-size
    /// histograms.
    pub fn record_execution(&self, t: &ExecutionTiming) {
        self.with(|s| {
            s.execution_count += 1;
            s.dispatches.add(t.reason);
            s.compute_duration.observe_duration(t.compute_infer);
            s.batch_size.observe(t.batch_size, t.batch_size);
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
        c.record_failure(ms(1), FailureReason::Canceled);
        c.record_failure(ms(3), FailureReason::Canceled);
        for (batch_size, reason) in [
            (1, DispatchReason::Single),
            (4, DispatchReason::PreferredSize),
            (4, DispatchReason::DelayExpired),
        ] {
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
                reason,
                compute_input: ms(1),
                compute_infer: ms(6),
                compute_output: ms(1),
            });
        }
        let s = c.snapshot();
        assert_eq!(
            s.fail,
            StatDuration {
                count: 3,
                ns: 5_000_000
            }
        );
        assert_eq!(s.success.count, 3);
        assert_eq!(s.compute_infer.ns, 18_000_000);
        assert_eq!((s.inference_count, s.execution_count), (9, 3));
        assert_eq!(s.batches[&4].compute_infer.count, 2);
        assert!(s.last_inference_ms > 0);
        let failures: Vec<(&str, u64)> = s.failures.iter().map(|(r, n)| (r.label(), n)).collect();
        assert_eq!(
            failures,
            [
                ("REJECTED", 0),
                ("CANCELED", 2),
                ("BACKEND", 1),
                ("OTHER", 0)
            ]
        );
        assert_eq!(s.dispatches[&DispatchReason::PreferredSize], 1);
        assert_eq!(s.dispatches[&DispatchReason::MaxSize], 0);
        assert_eq!(s.batch_size.count(), 3);
        assert_eq!(s.batch_size.sum(), 9);
        assert_eq!(
            (s.request_duration.count(), s.request_duration.sum()),
            (3, 30_000_000)
        );
        assert_eq!(s.cache_hit, StatDuration::default());
    }

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let mut h = BatchSizeHistogram::new(&BATCH_SIZE_BOUNDS);
        for v in [1, 2, 3, 4, 5, 1024, 1025, 0] {
            h.observe(v, v);
        }
        let cumulative: Vec<(u64, u64)> = h.cumulative().collect();
        assert_eq!(&cumulative[..4], [(1, 2), (2, 3), (4, 5), (8, 6)]);
        assert_eq!(cumulative[10], (1024, 7));
        assert_eq!((h.count(), h.sum()), (8, 2064));

        let mut l = LatencyHistogram::new(&LATENCY_BOUNDS_US);
        l.observe_duration(Duration::from_micros(100));
        l.observe_duration(Duration::from_nanos(100_001));
        l.observe_duration(Duration::from_secs(11));
        let cumulative: Vec<(u64, u64)> = l.cumulative().collect();
        assert_eq!(cumulative[2], (50, 0));
        assert_eq!(cumulative[3], (100, 2), "100.001 us rounds down to 100 us");
        assert_eq!(cumulative[18], (10_000_000, 2));
        assert_eq!((l.count(), l.sum()), (3, 11_000_200_001));
    }
}
