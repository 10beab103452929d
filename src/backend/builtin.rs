//! Built-in backends: small, real models that need no external runtime, so
//! the example repository serves Triton's SDK example clients out of the box
//! and tests have models with known behaviour.
//!
//! | backend    | behaviour |
//! | ---------- | --------- |
//! | `add_sub`  | two inputs, two outputs: `OUTPUT0 = INPUT0 + INPUT1`, `OUTPUT1 = INPUT0 - INPUT1`, element-wise, for every numeric type (integers wrap) and for BYTES holding decimal integers |
//! | `identity` | each input `i` is returned as output `i`; the config parameter `execute_delay_ms` (or the request parameter of the same name) delays execution, watching for cancellation |
//! | `fault`    | panics in `execute`: the model for testing that a crashing backend fails one request and nothing else |

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use half::{bf16, f16};

use super::{Backend, ExecRequest, ModelContext, ModelInstance};
use crate::core::proto::ModelConfig;
use crate::core::tensor::{push_bytes_element, split_bytes_elements};
use crate::core::{Code, DataType, Error, ParamValue, Result, Tensor};

/// Every built-in backend.
pub fn all() -> Vec<Arc<dyn Backend>> {
    vec![
        Arc::new(AddSub),
        Arc::new(Identity),
        Arc::new(Fault),
        Arc::new(super::sequence::Sequence),
        Arc::new(super::sequence::DynaSequence),
    ]
}

fn config_datatype(model: &str, what: &str, name: &str, v: i32) -> Result<DataType> {
    DataType::from_config_enum(v).ok_or_else(|| {
        Error::invalid_arg(format!(
            "model '{model}': {what} '{name}' has no valid data_type"
        ))
    })
}

/// The `add_sub` backend.
struct AddSub;

struct AddSubInstance {
    inputs: [String; 2],
    outputs: [String; 2],
    datatype: DataType,
}

impl Backend for AddSub {
    fn name(&self) -> &str {
        "add_sub"
    }

    fn create_instance(&self, ctx: &ModelContext, _index: usize) -> Result<Box<dyn ModelInstance>> {
        let c = &ctx.config;
        if c.input.len() != 2 || c.output.len() != 2 {
            return Err(Error::invalid_arg(format!(
                "model '{}': backend 'add_sub' needs exactly 2 inputs and 2 outputs, the config has {} inputs and {} outputs",
                c.name,
                c.input.len(),
                c.output.len()
            )));
        }
        let datatype = config_datatype(&c.name, "input", &c.input[0].name, c.input[0].data_type)?;
        let all_types = c
            .input
            .iter()
            .map(|i| (&i.name, i.data_type))
            .chain(c.output.iter().map(|o| (&o.name, o.data_type)));
        for (name, dt) in all_types {
            if dt != datatype.config_enum() {
                return Err(Error::invalid_arg(format!(
                    "model '{}': backend 'add_sub' needs every input and output to share one data_type; '{}' is {}, expected {}",
                    c.name,
                    name,
                    DataType::from_config_enum(dt).map_or("TYPE_INVALID", DataType::config_name),
                    datatype.config_name()
                )));
            }
        }
        if datatype == DataType::Bool {
            return Err(Error::invalid_arg(format!(
                "model '{}': backend 'add_sub' does not support TYPE_BOOL",
                c.name
            )));
        }
        Ok(Box::new(AddSubInstance {
            inputs: [c.input[0].name.clone(), c.input[1].name.clone()],
            outputs: [c.output[0].name.clone(), c.output[1].name.clone()],
            datatype,
        }))
    }
}

/// Applies `f` element-wise to two little-endian byte buffers of `N`-byte
/// elements, writing sum and difference buffers.
macro_rules! add_sub_numeric {
    ($a:expr, $b:expr, $ty:ty, $add:expr, $sub:expr) => {{
        const N: usize = std::mem::size_of::<$ty>();
        let mut sum = Vec::with_capacity($a.len());
        let mut diff = Vec::with_capacity($a.len());
        for (x, y) in $a.chunks_exact(N).zip($b.chunks_exact(N)) {
            let x = <$ty>::from_le_bytes(x.try_into().expect("chunk of element size"));
            let y = <$ty>::from_le_bytes(y.try_into().expect("chunk of element size"));
            sum.extend_from_slice(&$add(x, y).to_le_bytes());
            diff.extend_from_slice(&$sub(x, y).to_le_bytes());
        }
        (sum, diff)
    }};
}

fn parse_decimal(input: &str, index: usize, element: &[u8]) -> Result<i64> {
    std::str::from_utf8(element)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .ok_or_else(|| {
            Error::invalid_arg(format!(
                "input '{input}' element {index} is not a decimal integer: {:?}",
                String::from_utf8_lossy(element)
            ))
        })
}

/// Element-wise work below this many bytes per input runs inline (a few
/// microseconds at most).
const INLINE_BYTES: usize = 64 * 1024;

impl ModelInstance for AddSubInstance {
    /// Element-wise work gains nothing from contiguous inputs, so a batch
    /// runs request by request on the requests' own buffers.
    fn execute_batch(&mut self, batch: &[ExecRequest<'_>]) -> Vec<Result<Vec<Tensor>>> {
        batch.iter().map(|r| self.execute(r)).collect()
    }

    fn runs_inline(&self, request: &ExecRequest<'_>) -> bool {
        request.inputs.iter().all(|t| t.data.len() <= INLINE_BYTES)
    }

    fn execute(&mut self, request: &ExecRequest<'_>) -> Result<Vec<Tensor>> {
        let a = request.input(&self.inputs[0])?;
        let b = request.input(&self.inputs[1])?;
        if a.shape != b.shape {
            return Err(Error::invalid_arg(format!(
                "inputs '{}' and '{}' must have the same shape, got {} and {}",
                a.name,
                b.name,
                crate::core::tensor::shape_to_string(&a.shape),
                crate::core::tensor::shape_to_string(&b.shape)
            )));
        }
        let (x, y) = (&a.data[..], &b.data[..]);
        let (sum, diff) = match self.datatype {
            DataType::Uint8 => add_sub_numeric!(x, y, u8, u8::wrapping_add, u8::wrapping_sub),
            DataType::Uint16 => add_sub_numeric!(x, y, u16, u16::wrapping_add, u16::wrapping_sub),
            DataType::Uint32 => add_sub_numeric!(x, y, u32, u32::wrapping_add, u32::wrapping_sub),
            DataType::Uint64 => add_sub_numeric!(x, y, u64, u64::wrapping_add, u64::wrapping_sub),
            DataType::Int8 => add_sub_numeric!(x, y, i8, i8::wrapping_add, i8::wrapping_sub),
            DataType::Int16 => add_sub_numeric!(x, y, i16, i16::wrapping_add, i16::wrapping_sub),
            DataType::Int32 => add_sub_numeric!(x, y, i32, i32::wrapping_add, i32::wrapping_sub),
            DataType::Int64 => add_sub_numeric!(x, y, i64, i64::wrapping_add, i64::wrapping_sub),
            DataType::Fp16 => add_sub_numeric!(x, y, f16, |p, q| p + q, |p, q| p - q),
            DataType::Bf16 => add_sub_numeric!(x, y, bf16, |p, q| p + q, |p, q| p - q),
            DataType::Fp32 => add_sub_numeric!(x, y, f32, |p, q| p + q, |p, q| p - q),
            DataType::Fp64 => add_sub_numeric!(x, y, f64, |p, q| p + q, |p, q| p - q),
            DataType::Bytes => {
                let xs = split_bytes_elements(x)?;
                let ys = split_bytes_elements(y)?;
                let mut sum = Vec::new();
                let mut diff = Vec::new();
                for (i, (p, q)) in xs.iter().zip(&ys).enumerate() {
                    let p = parse_decimal(&a.name, i, p)?;
                    let q = parse_decimal(&b.name, i, q)?;
                    push_bytes_element(&mut sum, p.wrapping_add(q).to_string().as_bytes());
                    push_bytes_element(&mut diff, p.wrapping_sub(q).to_string().as_bytes());
                }
                (sum, diff)
            }
            DataType::Bool => unreachable!("rejected when the instance was created"),
        };
        Ok(vec![
            Tensor {
                name: self.outputs[0].clone(),
                datatype: self.datatype,
                shape: a.shape.clone(),
                data: Bytes::from(sum),
            },
            Tensor {
                name: self.outputs[1].clone(),
                datatype: self.datatype,
                shape: a.shape.clone(),
                data: Bytes::from(diff),
            },
        ])
    }
}

/// The `identity` backend.
struct Identity;

struct IdentityInstance {
    /// (input name, output name) pairs by position.
    pairs: Vec<(String, String)>,
    delay: Duration,
}

/// Reads `execute_delay_ms` from the configuration's parameters.
fn config_delay(config: &ModelConfig) -> Result<Duration> {
    match config.parameters.get("execute_delay_ms") {
        None => Ok(Duration::ZERO),
        Some(p) => p
            .string_value
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| {
                Error::invalid_arg(format!(
                    "model '{}': parameter 'execute_delay_ms' must be a whole number of milliseconds, got '{}'",
                    config.name, p.string_value
                ))
            }),
    }
}

impl Backend for Identity {
    fn name(&self) -> &str {
        "identity"
    }

    fn create_instance(&self, ctx: &ModelContext, _index: usize) -> Result<Box<dyn ModelInstance>> {
        let c = &ctx.config;
        if c.input.len() != c.output.len() || c.input.is_empty() {
            return Err(Error::invalid_arg(format!(
                "model '{}': backend 'identity' needs as many outputs as inputs (at least one), the config has {} inputs and {} outputs",
                c.name,
                c.input.len(),
                c.output.len()
            )));
        }
        for (i, o) in c.input.iter().zip(&c.output) {
            if i.data_type != o.data_type {
                return Err(Error::invalid_arg(format!(
                    "model '{}': backend 'identity' returns input '{}' as output '{}', so both need the same data_type",
                    c.name, i.name, o.name
                )));
            }
        }
        Ok(Box::new(IdentityInstance {
            pairs: c
                .input
                .iter()
                .zip(&c.output)
                .map(|(i, o)| (i.name.clone(), o.name.clone()))
                .collect(),
            delay: config_delay(c)?,
        }))
    }
}

/// Sleeps for `delay`, waking every few milliseconds to see whether the
/// work is still wanted.
fn cancellable_sleep(delay: Duration, cancelled: impl Fn() -> bool) -> Result<()> {
    let end = Instant::now() + delay;
    loop {
        if cancelled() {
            return Err(Error::new(Code::Cancelled, "request was cancelled"));
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(5)));
    }
}

impl IdentityInstance {
    fn delay(&self, request: &ExecRequest<'_>) -> Result<Duration> {
        match request.parameters.get("execute_delay_ms") {
            None => Ok(self.delay),
            Some(ParamValue::Int(ms)) if *ms >= 0 => Ok(Duration::from_millis(*ms as u64)),
            Some(other) => Err(Error::invalid_arg(format!(
                "request parameter 'execute_delay_ms' must be a non-negative integer, got {other:?}"
            ))),
        }
    }
}

impl ModelInstance for IdentityInstance {
    fn runs_inline(&self, request: &ExecRequest<'_>) -> bool {
        // Outputs share the inputs' buffers, so size does not matter; a
        // delay does.
        matches!(self.delay(request), Ok(d) if d.is_zero())
    }

    fn execute(&mut self, request: &ExecRequest<'_>) -> Result<Vec<Tensor>> {
        cancellable_sleep(self.delay(request)?, || request.cancel.is_cancelled())?;
        Ok(self.echo(request))
    }

    /// One delay for the whole batch (the longest any request asks for):
    /// the cost of an execution, not of a row, which is what batching buys.
    /// No gathering: each request's outputs share its own input buffers.
    fn execute_batch(&mut self, batch: &[ExecRequest<'_>]) -> Vec<Result<Vec<Tensor>>> {
        let delays: Vec<Result<Duration>> = batch.iter().map(|r| self.delay(r)).collect();
        let longest = delays
            .iter()
            .filter_map(|d| d.as_ref().ok())
            .max()
            .copied()
            .unwrap_or_default();
        let slept = cancellable_sleep(longest, || batch.iter().all(|r| r.cancel.is_cancelled()));
        batch
            .iter()
            .zip(delays)
            .map(|(request, delay)| {
                delay?;
                slept.clone()?;
                Ok(self.echo(request))
            })
            .collect()
    }
}

impl IdentityInstance {
    /// Each input `i` that was sent, renamed to output `i`.
    fn echo(&self, request: &ExecRequest<'_>) -> Vec<Tensor> {
        let mut outputs = Vec::with_capacity(self.pairs.len());
        for (input, output) in &self.pairs {
            // Optional inputs that were not sent produce no output.
            if let Some(t) = request.inputs.iter().find(|t| &t.name == input) {
                outputs.push(Tensor {
                    name: output.clone(),
                    ..t.clone()
                });
            }
        }
        outputs
    }
}

/// The `fault` backend.
struct Fault;

struct FaultInstance {
    model: String,
}

impl Backend for Fault {
    fn name(&self) -> &str {
        "fault"
    }

    fn create_instance(&self, ctx: &ModelContext, _index: usize) -> Result<Box<dyn ModelInstance>> {
        Ok(Box::new(FaultInstance {
            model: ctx.name.clone(),
        }))
    }
}

impl ModelInstance for FaultInstance {
    fn execute(&mut self, _request: &ExecRequest<'_>) -> Result<Vec<Tensor>> {
        panic!(
            "model '{}' (backend 'fault') panics on every request",
            self.model
        )
    }
}
