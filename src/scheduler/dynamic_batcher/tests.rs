//! The batch-forming rule of the module doc, driven by a simulated clock.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::core::proto::inference::model_config::SchedulingChoice;
use crate::core::proto::{ModelDynamicBatching, ModelQueuePolicy};
use crate::core::{DataType, InferRequest, ParamValue};

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

fn config(max_batch: i32, db: Option<ModelDynamicBatching>) -> ModelConfig {
    ModelConfig {
        name: "m".into(),
        max_batch_size: max_batch,
        scheduling_choice: db.map(SchedulingChoice::DynamicBatching),
        ..Default::default()
    }
}

fn batching(preferred: &[i32], delay_us: u64) -> ModelDynamicBatching {
    ModelDynamicBatching {
        preferred_batch_size: preferred.to_vec(),
        max_queue_delay_microseconds: delay_us,
        ..Default::default()
    }
}

/// A job of `rows` rows whose one input has `width` columns; `id` names it.
fn job(id: &str, rows: i64, width: i64, at: Instant) -> Job {
    let elements = usize::try_from(rows * width).unwrap();
    let input = Tensor::new(
        "INPUT0",
        DataType::Int32,
        vec![rows, width],
        Bytes::from(vec![0u8; elements * 4]),
    )
    .unwrap();
    let request = InferRequest {
        id: Some(id.into()),
        inputs: vec![input],
        ..Default::default()
    };
    Job::new(request, Vec::new(), None, rows as u64, at)
}

fn with_param(mut j: Job, name: &str, value: i64) -> Job {
    j.request.parameters.set(name, ParamValue::Int(value));
    j
}

fn ids(batch: &Batch) -> Vec<String> {
    batch
        .jobs
        .iter()
        .map(|j| j.request.id.clone().unwrap())
        .collect()
}

/// `next` must dispatch: returns the batch's ids and reason.
fn run(b: &mut DynamicBatcher, now: Instant) -> (Vec<String>, DispatchReason) {
    let mut dropped = Vec::new();
    match b.next(0, now, &mut dropped) {
        Next::Run(batch) => {
            assert!(dropped.is_empty());
            (ids(&batch), batch.reason)
        }
        Next::Until(at) => panic!("waits until +{:?}", at - now),
        Next::Idle => panic!("idle"),
    }
}

fn admit(b: &mut DynamicBatcher, j: Job, now: Instant) {
    assert!(b.admit(j, now).is_ok());
}

#[test]
fn without_a_batcher_requests_run_one_at_a_time_in_order() {
    let t0 = Instant::now();
    let mut b = DynamicBatcher::new(&config(8, None));
    for id in ["a", "b"] {
        admit(&mut b, job(id, 1, 4, t0), t0);
    }
    assert_eq!(run(&mut b, t0), (vec!["a".into()], DispatchReason::Single));
    assert_eq!(run(&mut b, t0), (vec!["b".into()], DispatchReason::Single));
    assert!(matches!(b.next(0, t0, &mut Vec::new()), Next::Idle));
}

#[test]
fn a_full_batch_goes_at_once() {
    let t0 = Instant::now();
    let mut b = DynamicBatcher::new(&config(4, Some(batching(&[], 1_000_000))));
    for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        admit(&mut b, job(id, 1, 4, t0 + us(i as u64)), t0 + us(i as u64));
    }
    let (batch, reason) = run(&mut b, t0 + us(5));
    assert_eq!(batch, ["a", "b", "c", "d"]);
    assert_eq!(reason, DispatchReason::MaxSize);
    assert_eq!(b.pending(), 1);
}

#[test]
fn the_largest_preferred_size_goes_at_once_and_the_rest_waits_for_the_delay() {
    let t0 = Instant::now();
    let mut b = DynamicBatcher::new(&config(8, Some(batching(&[2, 4], 100))));
    admit(&mut b, job("a", 1, 4, t0), t0);
    // One row is no preferred size: wait for the delay from its arrival.
    match b.next(0, t0 + us(10), &mut Vec::new()) {
        Next::Until(at) => assert_eq!(at, t0 + us(100)),
        _ => panic!("should wait"),
    }
    for (i, id) in ["b", "c", "d", "e"].iter().enumerate() {
        let at = t0 + us(20 + i as u64);
        admit(&mut b, job(id, 1, 4, at), at);
    }
    // Five rows queued: prefixes 1..5; the longest preferred prefix is 4.
    let (batch, reason) = run(&mut b, t0 + us(30));
    assert_eq!(batch, ["a", "b", "c", "d"]);
    assert_eq!(reason, DispatchReason::PreferredSize);
    // "e" waits for its own delay, then goes alone.
    match b.next(0, t0 + us(30), &mut Vec::new()) {
        Next::Until(at) => assert_eq!(at, t0 + us(123)),
        _ => panic!("should wait"),
    }
    let (batch, reason) = run(&mut b, t0 + us(123));
    assert_eq!(batch, ["e"]);
    assert_eq!(reason, DispatchReason::DelayExpired);
}

#[test]
fn with_no_delay_the_queue_drains_into_one_batch() {
    let t0 = Instant::now();
    let mut b = DynamicBatcher::new(&config(8, Some(batching(&[], 0))));
    for id in ["a", "b", "c"] {
        admit(&mut b, job(id, 1, 4, t0), t0);
    }
    assert_eq!(
        run(&mut b, t0),
        (
            vec!["a".into(), "b".into(), "c".into()],
            DispatchReason::QueueDrained
        )
    );
}

#[test]
fn a_request_that_cannot_join_closes_the_batch() {
    let t0 = Instant::now();
    let mut b = DynamicBatcher::new(&config(4, Some(batching(&[], 1_000_000))));
    admit(&mut b, job("wide", 1, 4, t0), t0);
    admit(&mut b, job("narrow", 1, 3, t0), t0);
    assert_eq!(
        run(&mut b, t0),
        (vec!["wide".into()], DispatchReason::MaxSize)
    );
    // Alone, "narrow" waits for its delay.
    assert!(matches!(b.next(0, t0, &mut Vec::new()), Next::Until(_)));

    // Rows: 3 + 3 > 4.
    let mut b = DynamicBatcher::new(&config(4, Some(batching(&[], 1_000_000))));
    admit(&mut b, job("x", 3, 4, t0), t0);
    admit(&mut b, job("y", 3, 4, t0), t0);
    assert_eq!(run(&mut b, t0), (vec!["x".into()], DispatchReason::MaxSize));
}

#[test]
fn higher_priority_goes_first_and_levels_have_their_own_limits() {
    let t0 = Instant::now();
    let mut db = batching(&[], 0);
    db.priority_levels = 2;
    db.default_priority_level = 2;
    db.priority_queue_policy.insert(
        2,
        ModelQueuePolicy {
            max_queue_size: 2,
            ..Default::default()
        },
    );
    let mut b = DynamicBatcher::new(&config(3, Some(db)));
    admit(&mut b, job("low1", 1, 4, t0), t0);
    admit(&mut b, with_param(job("low2", 1, 4, t0), "priority", 0), t0);
    // Level 2 holds two: the third is refused; out-of-range means default.
    let refused = b
        .admit(with_param(job("low3", 1, 4, t0), "priority", 7), t0)
        .err()
        .expect("queue full");
    assert_eq!(refused.error.code(), Code::Unavailable);
    assert_eq!(refused.error.message(), "Exceeds maximum queue size");
    assert_eq!(refused.reason, FailureReason::Rejected);
    // Level 1 is unbounded.
    admit(&mut b, with_param(job("high", 1, 4, t0), "priority", 1), t0);
    let (batch, reason) = run(&mut b, t0);
    assert_eq!(batch, ["high", "low1", "low2"]);
    assert_eq!(reason, DispatchReason::MaxSize);
}

#[test]
fn timeouts_reject_or_demote() {
    let t0 = Instant::now();
    let mut db = batching(&[], 1_000);
    db.default_queue_policy = Some(ModelQueuePolicy {
        default_timeout_microseconds: 50,
        allow_timeout_override: true,
        ..Default::default()
    });
    let mut b = DynamicBatcher::new(&config(4, Some(db.clone())));
    admit(&mut b, job("a", 1, 4, t0), t0);
    admit(&mut b, with_param(job("b", 1, 4, t0), "timeout", 500), t0);
    let mut dropped = Vec::new();
    assert_eq!(b.expire(t0 + us(10), &mut dropped), Some(t0 + us(50)));
    assert!(dropped.is_empty());
    assert_eq!(b.expire(t0 + us(50), &mut dropped), Some(t0 + us(500)));
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].error.message(), "Request timeout expired");
    assert_eq!(dropped[0].reason, FailureReason::Rejected);
    assert_eq!(b.pending(), 1);

    // DELAY: the timed-out request goes behind the others.
    db.default_queue_policy = Some(ModelQueuePolicy {
        timeout_action: TimeoutAction::Delay as i32,
        default_timeout_microseconds: 50,
        ..Default::default()
    });
    let mut b = DynamicBatcher::new(&config(2, Some(db)));
    admit(&mut b, job("late", 1, 4, t0), t0);
    let mut dropped = Vec::new();
    b.expire(t0 + us(60), &mut dropped);
    assert!(dropped.is_empty());
    admit(&mut b, job("fresh1", 1, 4, t0 + us(60)), t0 + us(60));
    admit(&mut b, job("fresh2", 1, 4, t0 + us(61)), t0 + us(61));
    assert_eq!(
        run(&mut b, t0 + us(62)),
        (
            vec!["fresh1".into(), "fresh2".into()],
            DispatchReason::MaxSize
        )
    );
}

#[test]
fn cancelled_requests_leave_the_queue() {
    let t0 = Instant::now();
    let mut b = DynamicBatcher::new(&config(4, Some(batching(&[], 1_000))));
    let a = job("a", 1, 4, t0);
    let flag = a.request.cancel.clone();
    admit(&mut b, a, t0);
    admit(&mut b, job("b", 1, 4, t0), t0);
    flag.cancel();
    b.cancelled();
    let mut dropped = Vec::new();
    b.expire(t0, &mut dropped);
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].reason, FailureReason::Canceled);
    assert_eq!(dropped[0].error.code(), Code::Cancelled);
    assert_eq!(b.pending(), 1);
}

#[test]
fn closing_sends_partial_batches_and_drain_hands_back_the_rest() {
    let t0 = Instant::now();
    let mut b = DynamicBatcher::new(&config(4, Some(batching(&[4], 1_000_000))));
    admit(&mut b, job("a", 1, 4, t0), t0);
    assert!(matches!(b.next(0, t0, &mut Vec::new()), Next::Until(_)));
    b.close();
    assert_eq!(
        run(&mut b, t0),
        (vec!["a".into()], DispatchReason::QueueDrained)
    );
    admit(&mut b, job("b", 1, 4, t0), t0);
    let mut dropped = Vec::new();
    b.drain(&mut dropped);
    assert_eq!(dropped.len(), 1);
    assert_eq!(b.pending(), 0);
}

#[test]
fn more_rows_than_the_largest_preferred_size_go_at_once() {
    let t0 = Instant::now();
    // L0_batcher's *_gt_max_preferred shape: preferred [2, 6], max 8, a
    // long delay, then 3 + 3 + 3 rows queued: 9 > 6, so waiting cannot
    // make a better batch.
    let mut b = DynamicBatcher::new(&config(8, Some(batching(&[2, 6], 10_000_000))));
    for id in ["a", "b", "c"] {
        admit(&mut b, job(id, 3, 4, t0), t0);
    }
    let (batch, reason) = run(&mut b, t0 + us(1));
    // Prefix totals 3, 6, 9: 6 is preferred.
    assert_eq!(batch, ["a", "b"]);
    assert_eq!(reason, DispatchReason::PreferredSize);

    // No prefix is preferred: totals 4, 8 (> 6): the first goes at once.
    let mut b = DynamicBatcher::new(&config(8, Some(batching(&[2, 6], 10_000_000))));
    admit(&mut b, job("x", 4, 4, t0), t0);
    admit(&mut b, job("y", 4, 4, t0), t0);
    let (batch, reason) = run(&mut b, t0 + us(1));
    assert_eq!(batch, ["x"]);
    assert_eq!(reason, DispatchReason::MaxSize);
    // Alone, "y" (4 rows, no preferred size, under 6) waits for its delay.
    match b.next(0, t0 + us(1), &mut Vec::new()) {
        Next::Until(at) => assert_eq!(at, t0 + us(10_000_000)),
        _ => panic!("should wait"),
    }
}

#[test]
fn a_first_request_larger_than_the_largest_preferred_size_goes_alone() {
    let t0 = Instant::now();
    let mut b = DynamicBatcher::new(&config(16, Some(batching(&[4], 10_000_000))));
    admit(&mut b, job("big", 5, 4, t0), t0);
    // Alone it already holds more rows than 4: nothing to wait for.
    let (batch, reason) = run(&mut b, t0);
    assert_eq!(batch, ["big"]);
    assert_eq!(reason, DispatchReason::MaxSize);

    admit(&mut b, job("big", 5, 4, t0), t0);
    admit(&mut b, job("small", 1, 4, t0), t0);
    let (batch, _) = run(&mut b, t0);
    assert_eq!(batch, ["big"]);
}

#[test]
fn a_preferred_size_goes_before_a_full_batch() {
    let t0 = Instant::now();
    let mut b = DynamicBatcher::new(&config(4, Some(batching(&[2], 10_000_000))));
    for id in ["a", "b", "c", "d"] {
        admit(&mut b, job(id, 1, 4, t0), t0);
    }
    assert_eq!(
        run(&mut b, t0),
        (vec!["a".into(), "b".into()], DispatchReason::PreferredSize)
    );
}

#[test]
fn an_expired_delay_sends_the_whole_run_not_a_preferred_prefix() {
    let t0 = Instant::now();
    let mut b = DynamicBatcher::new(&config(8, Some(batching(&[2, 6], 100))));
    for id in ["a", "b", "c"] {
        admit(&mut b, job(id, 1, 4, t0), t0);
    }
    // Before the delay: the preferred prefix of 2.
    assert_eq!(run(&mut b, t0 + us(50)).0, ["a", "b"]);
    for id in ["d", "e"] {
        admit(&mut b, job(id, 1, 4, t0 + us(60)), t0 + us(60));
    }
    // "c" has waited out its delay: c, d, e go together, though 2 is
    // preferred.
    assert_eq!(
        run(&mut b, t0 + us(100)),
        (
            vec!["c".into(), "d".into(), "e".into()],
            DispatchReason::DelayExpired
        )
    );
}
