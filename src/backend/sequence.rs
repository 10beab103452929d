//! Built-in stateful backends for the models Triton's SDK sequence example
//! clients target. Both read the control inputs the sequence batcher adds
//! (`sequence_batching.control_input`: START and READY, optionally END and
//! CORRID, in any of the configured encodings) and take one TYPE_INT32
//! input and give one TYPE_INT32 output, each of dims `[1]`.
//!
//! | backend         | models | per row with READY true |
//! | --------------- | ------ | ----------------------- |
//! | `sequence`      | `simple_sequence`, `simple_dyna_sequence` | `OUTPUT = INPUT + START` (START as 0/1), plus the correlation id on the END row when the model has a CORRID control |
//! | `dyna_sequence` | `simple_string_dyna_sequence` | a running sum per correlation id: START sets it to INPUT, later rows add INPUT; `OUTPUT` is the sum, plus the correlation id on the END row, which forgets the sequence |
//!
//! These are the rules the example clients check: for the integer-id
//! models they expect the first result to be the input plus one and every
//! later result to be the input (with the id added at the end for the dyna
//! model); for the string-id dyna model they expect the running sum. Rows
//! whose READY is false (the sequence batcher's filler rows) produce 0 and
//! change nothing. `dyna_sequence` keeps its sums in the instance, keyed by
//! the CORRID value, which is enough because the sequence batcher keeps
//! every sequence on one instance; it needs a CORRID control, and a string
//! id must hold an integer to be added.

use std::collections::HashMap;

use bytes::Bytes;

use super::{Backend, ExecRequest, ModelContext, ModelInstance};
use crate::core::proto::ModelConfig;
use crate::core::proto::inference::model_config::SchedulingChoice;
use crate::core::proto::inference::model_sequence_batching::Control;
use crate::core::proto::inference::model_sequence_batching::control::Kind;
use crate::core::tensor::split_bytes_elements;
use crate::core::{DataType, Error, Result, Tensor};

/// The `sequence` backend.
pub struct Sequence;

/// The `dyna_sequence` backend.
pub struct DynaSequence;

/// How to read one boolean control: its input name and its true value.
#[derive(Debug, Clone)]
struct FlagInput {
    name: String,
    truth: Truth,
}

#[derive(Debug, Clone, Copy)]
enum Truth {
    Int32(i32),
    Fp32(f32),
    Bool(bool),
}

/// The model's interface, read from its configuration.
#[derive(Debug, Clone)]
struct Interface {
    input: String,
    output: String,
    start: FlagInput,
    ready: FlagInput,
    end: Option<FlagInput>,
    corrid: Option<String>,
}

fn flag_input(name: &str, c: &Control) -> Option<FlagInput> {
    let truth = match (
        c.int32_false_true.as_slice(),
        c.fp32_false_true.as_slice(),
        c.bool_false_true.as_slice(),
    ) {
        (&[_, t], [], []) => Truth::Int32(t),
        ([], &[_, t], []) => Truth::Fp32(t),
        ([], [], &[_, t]) => Truth::Bool(t),
        _ => return None,
    };
    Some(FlagInput {
        name: name.to_owned(),
        truth,
    })
}

impl Interface {
    fn from_config(backend: &str, c: &ModelConfig) -> Result<Interface> {
        let model = &c.name;
        let fail =
            |what: &str| Error::invalid_arg(format!("model '{model}': backend '{backend}' {what}"));
        let Some(SchedulingChoice::SequenceBatching(sb)) = &c.scheduling_choice else {
            return Err(fail("needs sequence_batching"));
        };
        let int32 = DataType::Int32.config_enum();
        let ([input], [output]) = (c.input.as_slice(), c.output.as_slice()) else {
            return Err(fail("needs exactly one input and one output"));
        };
        if input.data_type != int32
            || output.data_type != int32
            || input.dims != [1]
            || output.dims != [1]
        {
            return Err(fail(
                "needs its input and output to be TYPE_INT32 with dims [ 1 ]",
            ));
        }
        let mut start = None;
        let mut ready = None;
        let mut end = None;
        let mut corrid = None;
        for ci in &sb.control_input {
            for control in &ci.control {
                match Kind::try_from(control.kind) {
                    Ok(Kind::ControlSequenceStart) => start = flag_input(&ci.name, control),
                    Ok(Kind::ControlSequenceReady) => ready = flag_input(&ci.name, control),
                    Ok(Kind::ControlSequenceEnd) => end = flag_input(&ci.name, control),
                    Ok(Kind::ControlSequenceCorrid) => corrid = Some(ci.name.clone()),
                    Err(_) => {}
                }
            }
        }
        Ok(Interface {
            input: input.name.clone(),
            output: output.name.clone(),
            start: start.ok_or_else(|| fail("needs a CONTROL_SEQUENCE_START control input"))?,
            ready: ready.ok_or_else(|| fail("needs a CONTROL_SEQUENCE_READY control input"))?,
            end,
            corrid,
        })
    }

    /// One flag per row of `request`'s batch.
    fn flags(&self, request: &ExecRequest<'_>, flag: &FlagInput, rows: usize) -> Result<Vec<bool>> {
        let t = request.input(&flag.name)?;
        let values: Vec<bool> = match flag.truth {
            Truth::Int32(v) => int32s(t)?.into_iter().map(|x| x == v).collect(),
            Truth::Fp32(v) => t
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) == v)
                .collect(),
            Truth::Bool(v) => t.data.iter().map(|&b| (b != 0) == v).collect(),
        };
        if values.len() != rows {
            return Err(Error::invalid_arg(format!(
                "control input '{}' has {} values for {rows} rows",
                flag.name,
                values.len()
            )));
        }
        Ok(values)
    }

    /// The correlation id of each row, as text.
    fn corrids(&self, request: &ExecRequest<'_>, rows: usize) -> Result<Option<Vec<String>>> {
        let Some(name) = &self.corrid else {
            return Ok(None);
        };
        let t = request.input(name)?;
        let ids: Vec<String> = match t.datatype {
            DataType::Uint64 => t
                .data
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")).to_string())
                .collect(),
            DataType::Int64 => t
                .data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")).to_string())
                .collect(),
            DataType::Uint32 => t
                .data
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")).to_string())
                .collect(),
            DataType::Int32 => int32s(t)?.iter().map(i32::to_string).collect(),
            DataType::Bytes => split_bytes_elements(&t.data)?
                .into_iter()
                .map(|e| String::from_utf8_lossy(e).into_owned())
                .collect(),
            other => {
                return Err(Error::invalid_arg(format!(
                    "control input '{name}' is {other}, not a correlation id type"
                )));
            }
        };
        if ids.len() != rows {
            return Err(Error::invalid_arg(format!(
                "control input '{name}' has {} values for {rows} rows",
                ids.len()
            )));
        }
        Ok(Some(ids))
    }

    /// The rows of a batch: (INPUT, START, END, READY, correlation id).
    fn rows(&self, request: &ExecRequest<'_>) -> Result<Vec<Row>> {
        let values = int32s(request.input(&self.input)?)?;
        let n = values.len();
        let start = self.flags(request, &self.start, n)?;
        let ready = self.flags(request, &self.ready, n)?;
        let end = match &self.end {
            Some(flag) => self.flags(request, flag, n)?,
            None => vec![false; n],
        };
        let ids = self.corrids(request, n)?;
        Ok((0..n)
            .map(|i| Row {
                value: values[i],
                start: start[i],
                end: end[i],
                ready: ready[i],
                corrid: ids.as_ref().map(|ids| ids[i].clone()),
            })
            .collect())
    }

    fn output(&self, values: &[i32]) -> Result<Vec<Tensor>> {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Ok(vec![Tensor::new(
            self.output.as_str(),
            DataType::Int32,
            vec![values.len() as i64, 1],
            Bytes::from(data),
        )?])
    }
}

struct Row {
    value: i32,
    start: bool,
    end: bool,
    ready: bool,
    corrid: Option<String>,
}

impl Row {
    /// The correlation id as a number to add, on the END row only.
    fn end_bonus(&self) -> Result<i32> {
        match (&self.corrid, self.end) {
            (Some(id), true) => id.parse::<i64>().map(|n| n as i32).map_err(|_| {
                Error::invalid_arg(format!(
                    "sequence id '{id}' is not an integer, so it cannot be added to the result"
                ))
            }),
            _ => Ok(0),
        }
    }
}

fn int32s(t: &Tensor) -> Result<Vec<i32>> {
    if t.datatype != DataType::Int32 {
        return Err(Error::invalid_arg(format!(
            "input '{}' is {}, expected INT32",
            t.name, t.datatype
        )));
    }
    Ok(t.data
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Shapes a batch as the model's configuration says (batched or not).
fn unbatched(c: &ModelConfig, mut out: Vec<Tensor>) -> Vec<Tensor> {
    if c.max_batch_size == 0 {
        for t in &mut out {
            t.shape = vec![1];
        }
    }
    out
}

struct SequenceInstance {
    config: std::sync::Arc<ModelConfig>,
    interface: Interface,
}

impl Backend for Sequence {
    fn name(&self) -> &str {
        "sequence"
    }

    fn create_instance(&self, ctx: &ModelContext, _index: usize) -> Result<Box<dyn ModelInstance>> {
        Ok(Box::new(SequenceInstance {
            interface: Interface::from_config(self.name(), &ctx.config)?,
            config: ctx.config.clone(),
        }))
    }
}

impl ModelInstance for SequenceInstance {
    fn execute(&mut self, request: &ExecRequest<'_>) -> Result<Vec<Tensor>> {
        let values = self
            .interface
            .rows(request)?
            .iter()
            .map(|r| {
                if !r.ready {
                    return Ok(0);
                }
                Ok(r.value
                    .wrapping_add(i32::from(r.start))
                    .wrapping_add(r.end_bonus()?))
            })
            .collect::<Result<Vec<i32>>>()?;
        Ok(unbatched(&self.config, self.interface.output(&values)?))
    }
}

struct DynaSequenceInstance {
    config: std::sync::Arc<ModelConfig>,
    interface: Interface,
    /// Running sums by correlation id.
    sums: HashMap<String, i32>,
}

impl Backend for DynaSequence {
    fn name(&self) -> &str {
        "dyna_sequence"
    }

    fn create_instance(&self, ctx: &ModelContext, _index: usize) -> Result<Box<dyn ModelInstance>> {
        let interface = Interface::from_config(self.name(), &ctx.config)?;
        if interface.corrid.is_none() {
            return Err(Error::invalid_arg(format!(
                "model '{}': backend 'dyna_sequence' needs a CONTROL_SEQUENCE_CORRID control input",
                ctx.config.name
            )));
        }
        Ok(Box::new(DynaSequenceInstance {
            config: ctx.config.clone(),
            interface,
            sums: HashMap::new(),
        }))
    }
}

impl ModelInstance for DynaSequenceInstance {
    fn execute(&mut self, request: &ExecRequest<'_>) -> Result<Vec<Tensor>> {
        let rows = self.interface.rows(request)?;
        // Checked before any sum changes, so a bad row fails the batch
        // without touching the other sequences.
        let bonuses = rows
            .iter()
            .map(Row::end_bonus)
            .collect::<Result<Vec<i32>>>()?;
        let mut values = Vec::with_capacity(rows.len());
        for (row, bonus) in rows.into_iter().zip(bonuses) {
            let Some(id) = row.corrid.filter(|_| row.ready) else {
                values.push(0);
                continue;
            };
            let sum = if row.start {
                row.value
            } else {
                self.sums
                    .get(&id)
                    .copied()
                    .unwrap_or(0)
                    .wrapping_add(row.value)
            };
            if row.end {
                self.sums.remove(&id);
            } else {
                self.sums.insert(id, sum);
            }
            values.push(sum.wrapping_add(bonus));
        }
        Ok(unbatched(&self.config, self.interface.output(&values)?))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::proto::inference::model_sequence_batching::ControlInput;
    use crate::core::proto::{ModelInput, ModelOutput, ModelSequenceBatching};
    use crate::core::tensor::push_bytes_element;
    use crate::core::{CancelFlag, Parameters};

    fn control(name: &str, kind: Kind, corrid: Option<DataType>) -> ControlInput {
        let mut c = Control {
            kind: kind as i32,
            ..Default::default()
        };
        match corrid {
            Some(dt) => c.data_type = dt.config_enum(),
            None => c.int32_false_true = vec![0, 1],
        }
        ControlInput {
            name: name.into(),
            control: vec![c],
        }
    }

    fn ctx(corrid: Option<DataType>) -> ModelContext {
        let io = |name: &str| (name.to_owned(), DataType::Int32.config_enum(), vec![1i64]);
        let (i, dt, dims) = io("INPUT");
        let mut controls = vec![
            control("START", Kind::ControlSequenceStart, None),
            control("END", Kind::ControlSequenceEnd, None),
            control("READY", Kind::ControlSequenceReady, None),
        ];
        if let Some(dt) = corrid {
            controls.push(control("CORRID", Kind::ControlSequenceCorrid, Some(dt)));
        }
        let config = ModelConfig {
            name: "m".into(),
            max_batch_size: 8,
            input: vec![ModelInput {
                name: i,
                data_type: dt,
                dims: dims.clone(),
                ..Default::default()
            }],
            output: vec![ModelOutput {
                name: "OUTPUT".into(),
                data_type: dt,
                dims,
                ..Default::default()
            }],
            scheduling_choice: Some(SchedulingChoice::SequenceBatching(ModelSequenceBatching {
                control_input: controls,
                ..Default::default()
            })),
            ..Default::default()
        };
        ModelContext {
            name: "m".into(),
            version: 1,
            model_path: Default::default(),
            version_path: Default::default(),
            config: Arc::new(config),
        }
    }

    fn column(name: &str, values: &[i32]) -> Tensor {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::new(
            name,
            DataType::Int32,
            vec![values.len() as i64, 1],
            Bytes::from(data),
        )
        .unwrap()
    }

    /// Runs one batch; `rows` are (INPUT, START, END, READY, corrid).
    fn run(
        instance: &mut dyn ModelInstance,
        rows: &[(i32, i32, i32, i32, &str)],
        corrid: Option<DataType>,
    ) -> Result<Vec<i32>> {
        let pick =
            |f: fn(&(i32, i32, i32, i32, &str)) -> i32| rows.iter().map(f).collect::<Vec<i32>>();
        let mut inputs = vec![
            column("INPUT", &pick(|r| r.0)),
            column("START", &pick(|r| r.1)),
            column("END", &pick(|r| r.2)),
            column("READY", &pick(|r| r.3)),
        ];
        if let Some(datatype) = corrid {
            let mut data = Vec::new();
            for r in rows {
                match datatype {
                    DataType::Bytes => push_bytes_element(&mut data, r.4.as_bytes()),
                    _ => data.extend_from_slice(&r.4.parse::<u64>().unwrap().to_le_bytes()),
                }
            }
            let shape = vec![rows.len() as i64, 1];
            inputs.push(Tensor::new("CORRID", datatype, shape, Bytes::from(data)).unwrap());
        }
        let out = instance.execute(&ExecRequest {
            inputs: &inputs,
            outputs: &["OUTPUT".to_owned()],
            parameters: &Parameters::default(),
            cancel: &CancelFlag::default(),
            bindings: &crate::core::NO_BINDINGS,
        })?;
        Ok(int32s(&out[0]).unwrap())
    }

    #[test]
    fn sequence_adds_start_and_the_id_at_the_end() {
        let c = ctx(Some(DataType::Uint64));
        let mut m = Sequence.create_instance(&c, 0).unwrap();
        let got = run(
            m.as_mut(),
            &[
                (0, 1, 0, 1, "1000"),
                (9, 0, 0, 0, "0"),
                (100, 1, 0, 1, "1001"),
            ],
            Some(DataType::Uint64),
        );
        assert_eq!(got.unwrap(), vec![1, 0, 101]);
        let got = run(
            m.as_mut(),
            &[(11, 0, 0, 1, "1000"), (-1, 0, 1, 1, "1001")],
            Some(DataType::Uint64),
        );
        assert_eq!(got.unwrap(), vec![11, 1000]);
        // Without a CORRID control nothing is added at the end.
        let c = ctx(None);
        let mut m = Sequence.create_instance(&c, 0).unwrap();
        assert_eq!(run(m.as_mut(), &[(5, 0, 1, 1, "")], None).unwrap(), vec![5]);
    }

    #[test]
    fn dyna_sequence_keeps_a_running_sum_per_id() {
        let c = ctx(Some(DataType::Bytes));
        let mut m = DynaSequence.create_instance(&c, 0).unwrap();
        let b = Some(DataType::Bytes);
        assert_eq!(
            run(m.as_mut(), &[(20, 1, 0, 1, "1002"), (3, 1, 0, 1, "7")], b).unwrap(),
            vec![20, 3]
        );
        assert_eq!(
            run(m.as_mut(), &[(-11, 0, 0, 1, "1002"), (0, 0, 0, 0, "")], b).unwrap(),
            vec![9, 0]
        );
        assert_eq!(
            run(m.as_mut(), &[(-1, 0, 1, 1, "1002"), (4, 0, 0, 1, "7")], b).unwrap(),
            vec![1010, 7]
        );
        let e = run(m.as_mut(), &[(1, 1, 1, 1, "x")], b).unwrap_err();
        assert!(e.message().contains("'x' is not an integer"), "{e}");
        assert_eq!(run(m.as_mut(), &[(1, 0, 0, 1, "7")], b).unwrap(), vec![8]);
        let e = DynaSequence.create_instance(&ctx(None), 0).err().unwrap();
        assert!(
            e.message().contains("needs a CONTROL_SEQUENCE_CORRID"),
            "{e}"
        );
    }
}
