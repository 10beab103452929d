//! The sequence batcher's rules (module doc), driven by a simulated clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::core::proto::inference::model_sequence_batching::Control;
use crate::core::proto::inference::model_sequence_batching::{
    ControlInput, InitialState, State, StrategyDirect, StrategyOldest,
};
use crate::core::proto::{ModelInput, ModelOutput};

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

fn control(name: &str, kind: Kind) -> ControlInput {
    let mut c = Control {
        kind: kind as i32,
        ..Default::default()
    };
    if kind == Kind::ControlSequenceCorrid {
        c.data_type = DataType::Uint64.config_enum();
    } else {
        c.int32_false_true = vec![0, 1];
    }
    ControlInput {
        name: name.into(),
        control: vec![c],
    }
}

fn all_controls() -> Vec<ControlInput> {
    vec![
        control("START", Kind::ControlSequenceStart),
        control("END", Kind::ControlSequenceEnd),
        control("READY", Kind::ControlSequenceReady),
        control("CORRID", Kind::ControlSequenceCorrid),
    ]
}

fn config(max_batch: i32, sb: ModelSequenceBatching) -> ModelConfig {
    ModelConfig {
        name: "seq".into(),
        max_batch_size: max_batch,
        input: vec![ModelInput {
            name: "INPUT".into(),
            data_type: DataType::Int32.config_enum(),
            dims: vec![1],
            ..Default::default()
        }],
        output: vec![ModelOutput {
            name: "OUTPUT".into(),
            data_type: DataType::Int32.config_enum(),
            dims: vec![1],
            ..Default::default()
        }],
        scheduling_choice: Some(SchedulingChoice::SequenceBatching(sb)),
        ..Default::default()
    }
}

fn direct(max_batch: i32) -> ModelConfig {
    config(
        max_batch,
        ModelSequenceBatching {
            max_sequence_idle_microseconds: 1000,
            control_input: all_controls(),
            ..Default::default()
        },
    )
}

fn oldest(max_batch: i32, preferred: &[i32], delay_us: u64) -> ModelConfig {
    config(
        max_batch,
        ModelSequenceBatching {
            max_sequence_idle_microseconds: 1_000_000,
            control_input: all_controls(),
            strategy_choice: Some(StrategyChoice::Oldest(StrategyOldest {
                max_candidate_sequences: 8,
                preferred_batch_size: preferred.to_vec(),
                max_queue_delay_microseconds: delay_us,
                ..Default::default()
            })),
            ..Default::default()
        },
    )
}

fn batching_of(c: &mut ModelConfig) -> &mut ModelSequenceBatching {
    match &mut c.scheduling_choice {
        Some(SchedulingChoice::SequenceBatching(sb)) => sb,
        _ => unreachable!("every test config has sequence_batching"),
    }
}

fn ctx(config: ModelConfig) -> ModelContext {
    ModelContext {
        name: config.name.clone(),
        version: 1,
        model_path: Default::default(),
        version_path: Default::default(),
        config: Arc::new(config),
    }
}

fn policy(config: ModelConfig, instances: usize) -> SequencePolicy {
    SequencePolicy::new(&ctx(config), instances).unwrap()
}

/// A request of sequence `id` carrying `value`, answered into nothing.
fn request(id: ParamValue, value: i32, start: bool, end: bool, at: Instant) -> Job {
    let input = Tensor::new(
        "INPUT",
        DataType::Int32,
        vec![1, 1],
        Bytes::copy_from_slice(&value.to_le_bytes()),
    )
    .unwrap();
    let mut request = InferRequest {
        id: Some(format!("{id:?}/{value}")),
        inputs: vec![input],
        ..Default::default()
    };
    request.parameters.set("sequence_id", id);
    if start {
        request
            .parameters
            .set("sequence_start", ParamValue::Bool(true));
    }
    if end {
        request
            .parameters
            .set("sequence_end", ParamValue::Bool(true));
    }
    Job::new(
        request,
        vec!["OUTPUT".into()],
        Some(Box::new(|_| {})),
        1,
        at,
    )
}

fn seq(id: u64, value: i32, start: bool, end: bool, at: Instant) -> Job {
    request(ParamValue::Int(id as i64), value, start, end, at)
}

fn admit(p: &mut SequencePolicy, job: Job, now: Instant) -> Wake {
    match p.admit(job, now) {
        Ok(a) => a.wake,
        Err(r) => panic!("refused: {}", r.error),
    }
}

fn refusal(p: &mut SequencePolicy, job: Job, now: Instant) -> String {
    match p.admit(job, now) {
        Ok(_) => panic!("admitted"),
        Err(r) => {
            assert_eq!(r.error.code(), Code::InvalidArg);
            r.error.message().to_owned()
        }
    }
}

fn run(p: &mut SequencePolicy, instance: usize, now: Instant) -> Batch {
    let mut dropped = Vec::new();
    match p.next(instance, now, &mut dropped) {
        Next::Run(b) => b,
        Next::Until(at) => panic!("waits until {:?}", at - now),
        Next::Idle => panic!("idle"),
    }
}

fn i32_of(job: &Job, name: &str) -> i64 {
    let t = job.request.inputs.iter().find(|t| t.name == name).unwrap();
    match t.datatype {
        DataType::Int32 => i64::from(i32::from_le_bytes(t.data[..4].try_into().unwrap())),
        DataType::Uint64 => u64::from_le_bytes(t.data[..8].try_into().unwrap()) as i64,
        other => panic!("{other}"),
    }
}

/// Per row: (INPUT, START, END, READY, CORRID).
fn rows(b: &Batch) -> Vec<[i64; 5]> {
    b.jobs
        .iter()
        .map(|j| ["INPUT", "START", "END", "READY", "CORRID"].map(|n| i32_of(j, n)))
        .collect()
}

#[test]
fn direct_rows_are_slots_with_fillers_below_the_highest() {
    let t0 = Instant::now();
    let mut p = policy(direct(4), 1);
    for id in [11, 12, 13] {
        assert!(matches!(
            admit(&mut p, seq(id, id as i32, true, false, t0), t0),
            Wake::Instance(0)
        ));
    }
    let b = run(&mut p, 0, t0);
    assert_eq!(b.reason, DispatchReason::QueueDrained);
    assert_eq!(
        rows(&b),
        vec![[11, 1, 0, 1, 11], [12, 1, 0, 1, 12], [13, 1, 0, 1, 13]]
    );
    // Only slots 0 and 2 have a request: slot 1 is a filler, READY false.
    admit(&mut p, seq(11, 5, false, false, t0), t0);
    admit(&mut p, seq(13, 7, false, true, t0), t0);
    let b = run(&mut p, 0, t0);
    assert_eq!(
        rows(&b),
        vec![[5, 0, 0, 1, 11], [0, 0, 0, 0, 0], [7, 0, 1, 1, 13]]
    );
    assert!(b.jobs[1].complete.is_none(), "a filler is never answered");
    assert!(b.jobs[0].complete.is_some() && b.jobs[2].complete.is_some());
    assert_eq!(p.pending(), 0);
    // 13 ended: its slot 2 is free, so 14 takes the lowest free slot (2).
    admit(&mut p, seq(14, 1, true, false, t0), t0);
    admit(&mut p, seq(12, 2, false, false, t0), t0);
    let b = run(&mut p, 0, t0);
    assert_eq!(
        rows(&b),
        vec![[0, 0, 0, 0, 0], [2, 0, 0, 1, 12], [1, 1, 0, 1, 14]]
    );
}

#[test]
fn a_sequence_runs_one_request_per_batch_in_arrival_order() {
    let t0 = Instant::now();
    let mut p = policy(direct(2), 1);
    admit(&mut p, seq(1, 10, true, false, t0), t0);
    admit(&mut p, seq(1, 11, false, false, t0), t0);
    admit(&mut p, seq(2, 20, true, false, t0), t0);
    admit(&mut p, seq(1, 12, false, true, t0), t0);
    admit(&mut p, seq(2, 21, false, true, t0), t0);
    let firsts: Vec<i64> = rows(&run(&mut p, 0, t0)).iter().map(|r| r[0]).collect();
    assert_eq!(firsts, vec![10, 20]);
    let b = run(&mut p, 0, t0);
    assert_eq!(b.reason, DispatchReason::MaxSize);
    assert_eq!(
        rows(&b).iter().map(|r| r[0]).collect::<Vec<_>>(),
        vec![11, 21]
    );
    assert_eq!(rows(&b)[1][2], 1, "21 ends sequence 2");
    // Sequence 2 has ended: only sequence 1 is left, in slot 0.
    assert_eq!(rows(&run(&mut p, 0, t0)), vec![[12, 0, 1, 1, 1]]);
    let mut dropped = Vec::new();
    assert!(matches!(p.next(0, t0, &mut dropped), Next::Idle));
}

#[test]
fn sequences_spread_over_instances_and_wait_for_a_free_slot() {
    let t0 = Instant::now();
    let mut p = policy(direct(1), 2);
    assert!(matches!(
        admit(&mut p, seq(1, 1, true, false, t0), t0),
        Wake::Instance(0)
    ));
    assert!(matches!(
        admit(&mut p, seq(2, 2, true, false, t0), t0),
        Wake::Instance(1)
    ));
    // Every slot is taken: sequence 3 waits in the backlog.
    assert!(matches!(
        admit(&mut p, seq(3, 3, true, false, t0), t0),
        Wake::Nobody
    ));
    assert_eq!(rows(&run(&mut p, 1, t0)), vec![[2, 1, 0, 1, 2]]);
    admit(&mut p, seq(2, 4, false, true, t0), t0);
    // Sequence 2's END frees its slot on instance 1, where 3 goes next.
    assert_eq!(rows(&run(&mut p, 1, t0)), vec![[4, 0, 1, 1, 2]]);
    assert_eq!(rows(&run(&mut p, 1, t0)), vec![[3, 1, 0, 1, 3]]);
    assert_eq!(rows(&run(&mut p, 0, t0)), vec![[1, 1, 0, 1, 1]]);
    assert!(matches!(
        admit(&mut p, seq(3, 5, false, false, t0), t0),
        Wake::Instance(1)
    ));
}

#[test]
fn an_idle_sequence_is_released_and_needs_a_start_again() {
    let t0 = Instant::now();
    let mut p = policy(direct(1), 1);
    admit(&mut p, seq(7, 1, true, false, t0), t0);
    admit(&mut p, seq(8, 1, true, false, t0), t0);
    run(&mut p, 0, t0);
    let mut dropped = Vec::new();
    // Idle time counts from the hand-out; sequence 8 waits for the slot.
    assert_eq!(p.expire(t0 + us(999), &mut dropped), Some(t0 + us(1000)));
    assert!(
        matches!(p.next(0, t0 + us(999), &mut dropped), Next::Until(at) if at == t0 + us(1000))
    );
    assert_eq!(p.expire(t0 + us(1000), &mut dropped), None);
    assert!(dropped.is_empty());
    let message = refusal(
        &mut p,
        seq(7, 2, false, false, t0 + us(1001)),
        t0 + us(1001),
    );
    assert_eq!(
        message,
        "inference request for sequence 7 to model 'seq' must specify the START flag on the first request of the sequence"
    );
    // The released slot went to sequence 8.
    assert_eq!(rows(&run(&mut p, 0, t0 + us(1001))), vec![[1, 1, 0, 1, 8]]);
}

#[test]
fn requests_without_a_usable_sequence_are_refused() {
    let t0 = Instant::now();
    let mut p = policy(direct(4), 1);
    let mut none = seq(1, 1, true, false, t0);
    none.request.parameters = Parameters::default();
    assert_eq!(
        refusal(&mut p, none, t0),
        "inference request to model 'seq' must specify a non-zero or non-empty correlation ID"
    );
    assert!(refusal(&mut p, seq(0, 1, true, false, t0), t0).contains("non-zero or non-empty"));
    let empty = request(ParamValue::String(String::new()), 1, true, false, t0);
    assert!(refusal(&mut p, empty, t0).contains("non-zero or non-empty"));
    assert!(
        refusal(&mut p, seq(5, 1, false, false, t0), t0).contains("must specify the START flag")
    );
    let mut two = seq(5, 1, true, false, t0);
    two.rows = 2;
    assert_eq!(
        refusal(&mut p, two, t0),
        "inference request to model 'seq' must specify batch-size 1 due to requirements of sequence batcher"
    );
    // After END the id is closed again.
    admit(&mut p, seq(5, 1, true, true, t0), t0);
    assert!(refusal(&mut p, seq(5, 1, false, false, t0), t0).contains("START flag"));
    assert_eq!(p.pending(), 1);
}

#[test]
fn oldest_forms_batches_from_the_oldest_sequences() {
    let t0 = Instant::now();
    let mut p = policy(oldest(4, &[], 100), 1);
    admit(&mut p, seq(1, 10, true, false, t0), t0);
    admit(&mut p, seq(2, 20, true, false, t0 + us(10)), t0 + us(10));
    admit(&mut p, seq(1, 11, false, false, t0 + us(20)), t0 + us(20));
    let mut dropped = Vec::new();
    // Two sequences ready, no preferred size reached: wait for the delay.
    assert!(matches!(p.next(0, t0 + us(20), &mut dropped), Next::Until(at) if at == t0 + us(100)));
    let b = run(&mut p, 0, t0 + us(100));
    assert_eq!(b.reason, DispatchReason::DelayExpired);
    assert_eq!(rows(&b), vec![[10, 1, 0, 1, 1], [20, 1, 0, 1, 2]]);
    // Four sequences ready: the maximum batch goes at once, oldest first,
    // one request per sequence (sequence 1's 12 waits for the next batch).
    let t1 = t0 + us(200);
    admit(&mut p, seq(3, 30, true, false, t1), t1);
    admit(&mut p, seq(2, 21, false, false, t1 + us(1)), t1 + us(1));
    admit(&mut p, seq(4, 40, true, false, t1 + us(2)), t1 + us(2));
    admit(&mut p, seq(1, 12, false, false, t1 + us(3)), t1 + us(3));
    admit(&mut p, seq(5, 50, true, false, t1 + us(4)), t1 + us(4));
    let b = run(&mut p, 0, t1 + us(4));
    assert_eq!(b.reason, DispatchReason::MaxSize);
    assert_eq!(
        rows(&b).iter().map(|r| r[0]).collect::<Vec<_>>(),
        vec![11, 30, 21, 40]
    );
    let b = run(&mut p, 0, t1 + us(104));
    assert_eq!(
        rows(&b).iter().map(|r| r[0]).collect::<Vec<_>>(),
        vec![12, 50]
    );
}

#[test]
fn oldest_dispatches_a_preferred_size_without_waiting() {
    let t0 = Instant::now();
    let mut p = policy(oldest(8, &[2, 4], 1000), 1);
    for id in 1..=3 {
        admit(
            &mut p,
            seq(id, id as i32, true, false, t0 + us(id)),
            t0 + us(id),
        );
    }
    let b = run(&mut p, 0, t0 + us(3));
    assert_eq!(b.reason, DispatchReason::PreferredSize);
    assert_eq!(
        rows(&b).iter().map(|r| r[0]).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let mut dropped = Vec::new();
    assert!(matches!(p.next(0, t0 + us(3), &mut dropped), Next::Until(at) if at == t0 + us(1003)));
    p.close();
    assert_eq!(
        run(&mut p, 0, t0 + us(4)).reason,
        DispatchReason::QueueDrained
    );
}

#[test]
fn string_ids_and_corrid_types() {
    let t0 = Instant::now();
    let mut p = policy(direct(2), 1);
    // A string id that is a number fits a UINT64 CORRID; other strings do not.
    admit(
        &mut p,
        request(ParamValue::String("1002".into()), 1, true, false, t0),
        t0,
    );
    let message = refusal(
        &mut p,
        request(ParamValue::String("abc".into()), 1, true, false, t0),
        t0,
    );
    assert!(message.contains("'abc' is not an integer"), "{message}");
    assert_eq!(rows(&run(&mut p, 0, t0)), vec![[1, 1, 0, 1, 1002]]);
    // String and integer ids are different sequences.
    assert!(refusal(&mut p, seq(1002, 1, false, false, t0), t0).contains("START flag"));

    let mut c = direct(2);
    let sb = batching_of(&mut c);
    sb.control_input[3].control[0].data_type = DataType::Bytes.config_enum();
    let mut p = policy(c, 1);
    admit(
        &mut p,
        request(ParamValue::String("a-b".into()), 1, true, false, t0),
        t0,
    );
    admit(&mut p, seq(77, 2, true, false, t0), t0);
    let b = run(&mut p, 0, t0);
    let corrids: Vec<Vec<u8>> = b
        .jobs
        .iter()
        .map(|j| {
            j.request
                .inputs
                .iter()
                .find(|t| t.name == "CORRID")
                .unwrap()
                .data
                .to_vec()
        })
        .collect();
    assert_eq!(
        corrids,
        vec![b"\x03\0\0\0a-b".to_vec(), b"\x02\0\0\x0077".to_vec()]
    );
}

#[test]
fn control_encodings_and_shapes() {
    let t0 = Instant::now();
    let mut sb = ModelSequenceBatching::default();
    let mut start = control("S", Kind::ControlSequenceStart);
    start.control[0].int32_false_true.clear();
    start.control[0].fp32_false_true = vec![-1.5, 2.5];
    let mut ready = control("R", Kind::ControlSequenceReady);
    ready.control[0].int32_false_true.clear();
    ready.control[0].bool_false_true = vec![false, true];
    sb.control_input = vec![start, ready];
    // No batching: control tensors are [1], one request per batch.
    let mut p = policy(config(0, sb), 1);
    let mut job = seq(3, 1, false, false, t0);
    job.request
        .parameters
        .set("sequence_start", ParamValue::Bool(false));
    assert!(refusal(&mut p, job, t0).contains("START flag"));
    admit(&mut p, seq(3, 1, true, false, t0), t0);
    admit(&mut p, seq(3, 2, false, false, t0), t0);
    for want_start in [2.5f32, -1.5] {
        let b = run(&mut p, 0, t0);
        assert_eq!(b.reason, DispatchReason::Single);
        let find = |n: &str| {
            b.jobs[0]
                .request
                .inputs
                .iter()
                .find(|t| t.name == n)
                .unwrap()
                .clone()
        };
        let (s, r) = (find("S"), find("R"));
        assert_eq!((s.datatype, s.shape.clone()), (DataType::Fp32, vec![1]));
        assert_eq!(
            f32::from_le_bytes(s.data[..].try_into().unwrap()),
            want_start
        );
        assert_eq!((r.datatype, &r.data[..]), (DataType::Bool, &[1u8][..]));
    }
}

fn with_state(initial: Option<InitialState>) -> ModelConfig {
    let mut c = direct(2);
    let sb = batching_of(&mut c);
    sb.state = vec![State {
        input_name: "STATE_IN".into(),
        output_name: "STATE_OUT".into(),
        data_type: DataType::Int32.config_enum(),
        dims: vec![2],
        initial_state: initial.into_iter().collect(),
        ..Default::default()
    }];
    c
}

fn state_of(job: &Job) -> Vec<i32> {
    let t = job
        .request
        .inputs
        .iter()
        .find(|t| t.name == "STATE_IN")
        .unwrap();
    assert_eq!(t.shape, vec![1, 2]);
    t.data
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn produced(values: [i32; 2]) -> Result<Vec<Tensor>> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok(vec![
        zeros("OUTPUT", DataType::Int32, vec![1, 1]).unwrap(),
        Tensor::new("STATE_OUT", DataType::Int32, vec![1, 2], Bytes::from(data)).unwrap(),
    ])
}

#[test]
fn implicit_state_carries_from_one_request_to_the_next() {
    let t0 = Instant::now();
    let mut p = policy(with_state(None), 1);
    assert!(p.observes_outputs());
    admit(&mut p, seq(1, 1, true, false, t0), t0);
    admit(&mut p, seq(2, 1, true, false, t0), t0);
    let b = run(&mut p, 0, t0);
    assert_eq!(
        b.jobs.iter().map(state_of).collect::<Vec<_>>(),
        vec![vec![0, 0]; 2]
    );
    p.executed(0, &b.jobs, &[produced([1, 2]), produced([3, 4])]);
    admit(&mut p, seq(2, 1, false, false, t0), t0);
    admit(&mut p, seq(1, 1, false, false, t0), t0);
    let b = run(&mut p, 0, t0);
    assert_eq!(
        b.jobs.iter().map(state_of).collect::<Vec<_>>(),
        vec![vec![1, 2], vec![3, 4]]
    );
    // A failed execution keeps the state; a START resets it.
    p.executed(
        0,
        &b.jobs,
        &[produced([5, 6]), Err(Error::internal("boom"))],
    );
    admit(&mut p, seq(1, 1, false, true, t0), t0);
    admit(&mut p, seq(2, 1, true, false, t0), t0);
    let b = run(&mut p, 0, t0);
    assert_eq!(
        b.jobs.iter().map(state_of).collect::<Vec<_>>(),
        vec![vec![5, 6], vec![0, 0]]
    );
}

#[test]
fn initial_state_from_a_file_and_filler_rows_get_it() {
    let dir = std::env::temp_dir().join(format!("nereid-seq-state-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("initial_state")).unwrap();
    let data: Vec<u8> = [7i32, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("initial_state").join("s.bin"), data).unwrap();
    let initial = InitialState {
        data_type: DataType::Int32.config_enum(),
        dims: vec![2],
        state_data: Some(StateData::DataFile("s.bin".into())),
        ..Default::default()
    };
    let mut context = ctx(with_state(Some(initial.clone())));
    context.model_path = dir.clone();
    let mut p = SequencePolicy::new(&context, 1).unwrap();
    let t0 = Instant::now();
    admit(&mut p, seq(1, 1, true, false, t0), t0);
    admit(&mut p, seq(2, 1, true, false, t0), t0);
    run(&mut p, 0, t0);
    admit(&mut p, seq(2, 1, false, false, t0), t0);
    let b = run(&mut p, 0, t0);
    assert_eq!(b.jobs.len(), 2);
    assert_eq!(state_of(&b.jobs[0]), vec![7, 9], "the filler row");
    context.model_path = dir.join("missing");
    let e = SequencePolicy::new(&context, 1).err().unwrap();
    assert!(
        e.message()
            .contains("cannot read the initial state of 'STATE_IN'"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cancelled_requests_leave_their_sequence() {
    let t0 = Instant::now();
    let mut p = policy(direct(2), 1);
    let job = seq(1, 1, true, false, t0);
    let cancel = job.request.cancel.clone();
    admit(&mut p, job, t0);
    admit(&mut p, seq(2, 2, true, false, t0), t0);
    cancel.cancel();
    p.cancelled();
    let mut dropped = Vec::new();
    let Next::Run(b) = p.next(0, t0, &mut dropped) else {
        panic!("expected a batch")
    };
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].error.code(), Code::Cancelled);
    assert_eq!(rows(&b), vec![[0, 0, 0, 0, 0], [2, 1, 0, 1, 2]]);
    assert_eq!(p.pending(), 0);
}

#[test]
fn configuration_and_request_checks() {
    let bad = |edit: &dyn Fn(&mut ModelSequenceBatching), want: &str| {
        let mut c = direct(2);
        let sb = batching_of(&mut c);
        edit(sb);
        let e = SequencePolicy::new(&ctx(c), 1).err().expect("refused");
        assert!(e.message().contains(want), "{e}");
    };
    bad(
        &|sb| sb.control_input[0].control[0].fp32_false_true = vec![0.0, 1.0],
        "needs exactly one of int32_false_true",
    );
    bad(
        &|sb| sb.control_input[2].control[0].int32_false_true = vec![1],
        "with two values",
    );
    bad(
        &|sb| sb.control_input[3].control[0].data_type = DataType::Fp32.config_enum(),
        "TYPE_UINT64, TYPE_INT64",
    );
    bad(
        &|sb| sb.control_input[1].control[0].kind = Kind::ControlSequenceStart as i32,
        "more than one sequence control input of kind CONTROL_SEQUENCE_START",
    );
    bad(
        &|sb| sb.control_input[1].control[0].kind = 9,
        "unknown kind 9",
    );
    bad(
        &|sb| sb.iterative_sequence = true,
        "iterative_sequence is not supported",
    );
    bad(
        &|sb| sb.control_input[0].name = "INPUT".into(),
        "also a model input",
    );
    bad(
        &|sb| {
            sb.state = vec![State {
                input_name: "INPUT".into(),
                output_name: "X".into(),
                data_type: DataType::Int32.config_enum(),
                dims: vec![1],
                ..Default::default()
            }]
        },
        "clashes with a model input",
    );
    bad(
        &|sb| {
            sb.state = vec![State {
                input_name: "S".into(),
                output_name: "X".into(),
                data_type: DataType::Int32.config_enum(),
                dims: vec![-1],
                ..Default::default()
            }]
        },
        "variable dimension",
    );

    let c = direct(2);
    let mut job = seq(1, 1, true, false, Instant::now());
    job.request
        .inputs
        .push(zeros("READY", DataType::Int32, vec![1, 1]).unwrap());
    let e = validate::validate(&c, &job.request).unwrap_err();
    assert_eq!(
        e.message(),
        "[request id: Int(1)/1] input 'READY' of model 'seq' is a sequence control input: the sequence batcher supplies it, a request must not"
    );
}

#[test]
fn direct_waits_for_slot_utilization_or_the_delay() {
    let t0 = Instant::now();
    let mut c = direct(4);
    let sb = batching_of(&mut c);
    sb.strategy_choice = Some(StrategyChoice::Direct(StrategyDirect {
        max_queue_delay_microseconds: 100,
        minimum_slot_utilization: 0.5,
    }));
    let mut p = policy(c, 1);
    admit(&mut p, seq(1, 1, true, false, t0), t0);
    let mut dropped = Vec::new();
    assert!(matches!(p.next(0, t0 + us(5), &mut dropped), Next::Until(at) if at == t0 + us(100)));
    let b = run(&mut p, 0, t0 + us(100));
    assert_eq!(b.reason, DispatchReason::DelayExpired);
    assert_eq!(rows(&b), vec![[1, 1, 0, 1, 1]]);
    // Two of four slots ready: half the slots, the batch goes at once.
    admit(&mut p, seq(2, 2, true, false, t0 + us(200)), t0 + us(200));
    assert!(matches!(
        p.next(0, t0 + us(200), &mut dropped),
        Next::Until(_)
    ));
    admit(&mut p, seq(1, 3, false, false, t0 + us(201)), t0 + us(201));
    let b = run(&mut p, 0, t0 + us(201));
    assert_eq!(b.reason, DispatchReason::QueueDrained);
    assert_eq!(rows(&b), vec![[3, 0, 0, 1, 1], [2, 1, 0, 1, 2]]);
}
