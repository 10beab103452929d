//! The `cuda` backend: models computed by nereid's own CUDA kernels
//! ([`crate::gpu::kernels`]) on a GPU instance.
//!
//! A model picks its kernel with the `kernel` parameter of its
//! configuration:
//!
//! | kernel       | inputs → outputs | behaviour |
//! | ------------ | ---------------- | --------- |
//! | `add_sub`    | 2 → 2, INT32 or FP32 | `OUTPUT0 = INPUT0 + INPUT1`, `OUTPUT1 = INPUT0 - INPUT1` (INT32 wraps), as the CPU `add_sub` backend |
//! | `identity`   | 1 → 1, same type | the input's bytes, copied device to device (or downloaded straight from where they were staged) |
//! | `preprocess` | UINT8 `[H, W, C]` → FP32/FP16 `[C, out_height, out_width]` | bilinear resize (half-pixel centres), `(x * scale - mean[c]) / std[c]`, HWC → CHW |
//!
//! `preprocess` reads the parameters `out_height` and `out_width` (default:
//! the output's dims), `mean` and `std` (one number, or three
//! comma-separated; defaults 0 and 1) and `scale` (a number or a fraction
//! such as `1/255`; default 1); the output's `data_type` chooses FP32 or
//! FP16. With `max_batch_size > 0` every dimension gains a leading batch
//! dimension and each image of a batch is processed in turn.
//!
//! Instances must be KIND_GPU; each owns one [`Stream`] on its GPU. Inputs
//! already on that GPU (CUDA shared memory) are used in place; host inputs
//! go through a pinned staging buffer. Outputs bound to CUDA shared memory
//! on the same GPU are written there directly and returned without data
//! (the [`crate::core::Bindings`] convention); others are downloaded into
//! pinned memory that becomes the output tensor's bytes without a further
//! copy. An execution ends with one stream synchronization, also for a
//! whole batch. Calls `gpu/` for everything CUDA; safe Rust only.

use std::sync::Arc;

use bytes::Bytes;

use super::{Backend, ExecRequest, ModelContext, ModelInstance, placements};
use crate::core::proto::ModelConfig;
use crate::core::proto::inference::model_instance_group::Kind as GroupKind;
use crate::core::tensor::{byte_size, shape_to_string};
use crate::core::{DataType, DeviceBytes, Error, Result, Tensor};
use crate::gpu::kernels::{self, Image, Kernel, Preprocess};
use crate::gpu::{PinnedBuffer, Stream};

/// The `cuda` backend.
pub fn backend() -> Arc<dyn Backend> {
    Arc::new(Cuda)
}

struct Cuda;

/// What a model computes, from its configuration.
#[derive(Debug, Clone, PartialEq)]
enum Spec {
    AddSub {
        inputs: [String; 2],
        outputs: [String; 2],
        datatype: DataType,
    },
    Identity {
        input: String,
        output: String,
        datatype: DataType,
    },
    Preprocess {
        input: String,
        output: String,
        params: Preprocess,
        /// Whether tensors carry a leading batch dimension.
        batched: bool,
    },
}

impl Spec {
    fn kernels(&self) -> Vec<Kernel> {
        match self {
            Spec::AddSub { datatype, .. } => Kernel::add_sub(*datatype).into_iter().collect(),
            Spec::Identity { .. } => Vec::new(),
            Spec::Preprocess { params, .. } => vec![Kernel::preprocess(params.fp16)],
        }
    }
}

fn invalid(config: &ModelConfig, message: impl std::fmt::Display) -> Error {
    Error::invalid_arg(format!(
        "model '{}': backend 'cuda': {message}",
        config.name
    ))
}

fn datatype_of(config: &ModelConfig, name: &str, v: i32) -> Result<DataType> {
    DataType::from_config_enum(v)
        .ok_or_else(|| invalid(config, format!("'{name}' has no valid data_type")))
}

fn parameter<'a>(config: &'a ModelConfig, key: &str) -> Option<&'a str> {
    config.parameters.get(key).map(|p| p.string_value.trim())
}

/// A number, or a fraction `a/b` (so `1/255` can be written as such).
fn parse_number(s: &str) -> Option<f32> {
    let value = match s.split_once('/') {
        Some((a, b)) => a.trim().parse::<f64>().ok()? / b.trim().parse::<f64>().ok()?,
        None => s.parse::<f64>().ok()?,
    };
    let value = value as f32;
    value.is_finite().then_some(value)
}

fn number_parameter(config: &ModelConfig, key: &str, default: f32) -> Result<f32> {
    match parameter(config, key) {
        None => Ok(default),
        Some(s) => parse_number(s).ok_or_else(|| {
            invalid(
                config,
                format!("parameter '{key}' must be a finite number or fraction, got '{s}'"),
            )
        }),
    }
}

/// One number for every channel, or three comma-separated ones.
fn channels_parameter(config: &ModelConfig, key: &str, default: f32) -> Result<[f32; 3]> {
    let Some(s) = parameter(config, key) else {
        return Ok([default; 3]);
    };
    let values: Option<Vec<f32>> = s.split(',').map(|v| parse_number(v.trim())).collect();
    match values.as_deref() {
        Some(&[v]) => Ok([v; 3]),
        Some(&[a, b, c]) => Ok([a, b, c]),
        _ => Err(invalid(
            config,
            format!(
                "parameter '{key}' must be one number or three comma-separated numbers, got '{s}'"
            ),
        )),
    }
}

fn dimension_parameter(config: &ModelConfig, key: &str, from_dims: i64) -> Result<u32> {
    let value = match parameter(config, key) {
        Some(s) => s.parse::<u32>().ok().filter(|&v| v > 0).ok_or_else(|| {
            invalid(
                config,
                format!("parameter '{key}' must be a positive integer, got '{s}'"),
            )
        })?,
        None => u32::try_from(from_dims)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| {
                invalid(
                    config,
                    format!("set parameter '{key}' or give the output a fixed size for it"),
                )
            })?,
    };
    if from_dims != -1 && i64::from(value) != from_dims {
        return Err(invalid(
            config,
            format!("parameter '{key}' is {value} but the output's dims say {from_dims}"),
        ));
    }
    Ok(value)
}

fn parse_spec(config: &ModelConfig) -> Result<Spec> {
    let kernel = parameter(config, "kernel").ok_or_else(|| {
        invalid(
            config,
            "set parameter 'kernel' to 'add_sub', 'identity' or 'preprocess'",
        )
    })?;
    let counts = |inputs: usize, outputs: usize| {
        if config.input.len() == inputs && config.output.len() == outputs {
            Ok(())
        } else {
            Err(invalid(
                config,
                format!(
                    "kernel '{kernel}' needs {inputs} input(s) and {outputs} output(s), the config has {} and {}",
                    config.input.len(),
                    config.output.len()
                ),
            ))
        }
    };
    match kernel {
        "add_sub" => {
            counts(2, 2)?;
            let datatype = datatype_of(config, &config.input[0].name, config.input[0].data_type)?;
            if Kernel::add_sub(datatype).is_none() {
                return Err(invalid(
                    config,
                    format!(
                        "kernel 'add_sub' takes TYPE_INT32 or TYPE_FP32, not {}",
                        datatype.config_name()
                    ),
                ));
            }
            let all = config
                .input
                .iter()
                .map(|i| (&i.name, i.data_type))
                .chain(config.output.iter().map(|o| (&o.name, o.data_type)));
            for (name, dt) in all {
                if dt != datatype.config_enum() {
                    return Err(invalid(
                        config,
                        format!(
                            "kernel 'add_sub' needs one data_type throughout; '{name}' is not {}",
                            datatype.config_name()
                        ),
                    ));
                }
            }
            Ok(Spec::AddSub {
                inputs: [config.input[0].name.clone(), config.input[1].name.clone()],
                outputs: [config.output[0].name.clone(), config.output[1].name.clone()],
                datatype,
            })
        }
        "identity" => {
            counts(1, 1)?;
            let (i, o) = (&config.input[0], &config.output[0]);
            let datatype = datatype_of(config, &i.name, i.data_type)?;
            if datatype.element_size().is_none() || o.data_type != i.data_type {
                return Err(invalid(
                    config,
                    format!(
                        "kernel 'identity' needs one fixed-size data_type for '{}' and '{}'",
                        i.name, o.name
                    ),
                ));
            }
            Ok(Spec::Identity {
                input: i.name.clone(),
                output: o.name.clone(),
                datatype,
            })
        }
        "preprocess" => {
            counts(1, 1)?;
            let (i, o) = (&config.input[0], &config.output[0]);
            if i.data_type != DataType::Uint8.config_enum() || i.dims.len() != 3 {
                return Err(invalid(
                    config,
                    format!(
                        "kernel 'preprocess' takes a TYPE_UINT8 image [height, width, channels]; '{}' is {} {}",
                        i.name,
                        DataType::from_config_enum(i.data_type)
                            .map_or("TYPE_INVALID", DataType::config_name),
                        shape_to_string(&i.dims)
                    ),
                ));
            }
            let fp16 = match DataType::from_config_enum(o.data_type) {
                Some(DataType::Fp32) => false,
                Some(DataType::Fp16) => true,
                _ => {
                    return Err(invalid(
                        config,
                        format!(
                            "kernel 'preprocess' writes TYPE_FP32 or TYPE_FP16; set '{}' to one",
                            o.name
                        ),
                    ));
                }
            };
            let channels = i.dims[2];
            if o.dims.len() != 3 || ![1, 3, -1].contains(&channels) || o.dims[0] != channels {
                return Err(invalid(
                    config,
                    format!(
                        "kernel 'preprocess' maps an image [H, W, C] with C 1 or 3 to [C, out_height, out_width]; the config has {} -> {}",
                        shape_to_string(&i.dims),
                        shape_to_string(&o.dims)
                    ),
                ));
            }
            let params = Preprocess {
                out_height: dimension_parameter(config, "out_height", o.dims[1])?,
                out_width: dimension_parameter(config, "out_width", o.dims[2])?,
                mean: channels_parameter(config, "mean", 0.0)?,
                std: channels_parameter(config, "std", 1.0)?,
                scale: number_parameter(config, "scale", 1.0)?,
                fp16,
            };
            // Validated here against any image, so a bad mean/std fails the
            // load rather than every request.
            let probe = Image {
                height: 1,
                width: 1,
                channels: if channels == 1 { 1 } else { 3 },
            };
            params.validate(&probe).map_err(|e| invalid(config, e))?;
            Ok(Spec::Preprocess {
                input: i.name.clone(),
                output: o.name.clone(),
                params,
                batched: config.max_batch_size > 0,
            })
        }
        other => Err(invalid(
            config,
            format!("unknown kernel '{other}' (available: add_sub, identity, preprocess)"),
        )),
    }
}

impl Backend for Cuda {
    fn name(&self) -> &str {
        "cuda"
    }

    fn takes_device_memory(&self) -> bool {
        true
    }

    fn create_instance(&self, ctx: &ModelContext, index: usize) -> Result<Box<dyn ModelInstance>> {
        let config = &ctx.config;
        let spec = parse_spec(config)?;
        let placement = placements(config).into_iter().nth(index).ok_or_else(|| {
            Error::internal(format!("model '{}' has no instance {index}", config.name))
        })?;
        if placement.kind != GroupKind::Gpu {
            return Err(invalid(
                config,
                format!(
                    "instances run on GPUs only, and {placement} is not one; set `kind: KIND_GPU` in its instance_group"
                ),
            ));
        }
        // A KIND_GPU group without a `gpus` list runs on the first GPU.
        let device = placement.device.unwrap_or(0);
        let unavailable = |e: Error| {
            Error::unavailable(format!(
                "model '{}': instance {placement} cannot start: {}",
                config.name,
                e.message()
            ))
        };
        crate::gpu::init().map_err(unavailable)?;
        let stream = Stream::new(device).map_err(unavailable)?;
        kernels::prepare(device, &spec.kernels()).map_err(unavailable)?;
        Ok(Box::new(CudaInstance {
            spec,
            device,
            stream,
        }))
    }
}

struct CudaInstance {
    spec: Spec,
    device: i32,
    stream: Stream,
}

/// An output of an enqueued request, before the stream is synchronized.
enum Pending {
    /// Written straight into the client's CUDA shared memory: no data.
    InSink(Tensor),
    /// Being downloaded into this pinned buffer.
    Host {
        tensor: Tensor,
        pinned: PinnedBuffer,
    },
}

impl Pending {
    fn finish(self) -> Tensor {
        match self {
            Pending::InSink(tensor) => tensor,
            Pending::Host { mut tensor, pinned } => {
                // The pinned buffer becomes the tensor's bytes: no copy.
                tensor.data = pinned.into_bytes();
                tensor
            }
        }
    }
}

/// Where an output is computed.
enum Target {
    /// The client's CUDA shared memory on this GPU.
    Sink(DeviceBytes),
    /// Scratch memory, downloaded afterwards.
    Scratch(DeviceBytes),
}

impl Target {
    fn bytes(&self) -> &DeviceBytes {
        match self {
            Target::Sink(d) | Target::Scratch(d) => d,
        }
    }
}

/// Device memory of `len` bytes (at least one byte is allocated, so an
/// empty tensor still has an address).
fn alloc(device: i32, len: usize) -> Result<DeviceBytes> {
    let buffer = crate::gpu::device_alloc(device, len.max(1))?.into_bytes();
    Ok(buffer
        .slice(0, len)
        .expect("an allocation holds the bytes asked for"))
}

impl CudaInstance {
    /// The input `name`'s bytes on this GPU: in place when the client put
    /// them in CUDA shared memory here, else uploaded from host memory
    /// through pinned staging (the stream keeps what it uses until
    /// synchronized).
    fn input(&self, request: &ExecRequest<'_>, name: &str) -> Result<(Vec<i64>, DeviceBytes)> {
        let tensor = request.input(name)?;
        let len = match byte_size(tensor.datatype, &tensor.shape)? {
            Some(len) => usize::try_from(len).map_err(|_| {
                Error::invalid_arg(format!("input '{name}' is too large for this host"))
            })?,
            None => tensor.data.len(),
        };
        if let Some(device_bytes) = request.bindings.device_input(name) {
            if device_bytes.device() != self.device {
                return Err(Error::invalid_arg(format!(
                    "input '{name}' is in CUDA shared memory on GPU {} but the instance runs on GPU {}",
                    device_bytes.device(),
                    self.device
                )));
            }
            let bytes = device_bytes.slice(0, len).ok_or_else(|| {
                Error::invalid_arg(format!(
                    "input '{name}': its CUDA shared memory holds {} bytes, {} expected for shape {}",
                    device_bytes.len(),
                    len,
                    shape_to_string(&tensor.shape)
                ))
            })?;
            return Ok((tensor.shape.clone(), bytes));
        }
        if tensor.data.len() != len {
            return Err(Error::invalid_arg(format!(
                "input '{name}': {} bytes for shape {}, {len} expected",
                tensor.data.len(),
                shape_to_string(&tensor.shape)
            )));
        }
        let device_bytes = alloc(self.device, len)?;
        // The one copy a host input costs: `upload` stages the bytes in
        // pinned memory, from which the transfer is a true asynchronous DMA.
        self.stream.upload(&tensor.data, &device_bytes)?;
        Ok((tensor.shape.clone(), device_bytes))
    }

    /// Where output `name` (`len` bytes) is computed: the client's CUDA
    /// shared memory when it is on this GPU and large enough, else scratch.
    fn target(&self, request: &ExecRequest<'_>, name: &str, len: usize) -> Result<Target> {
        let sink = request
            .bindings
            .sink(name)
            .and_then(|s| s.device())
            .filter(|d| d.device() == self.device)
            .and_then(|d| d.slice(0, len));
        match sink {
            Some(sink) => Ok(Target::Sink(sink)),
            None => Ok(Target::Scratch(alloc(self.device, len)?)),
        }
    }

    /// Finishes output `name` computed into `target`: nothing more for a
    /// sink, a download into pinned memory otherwise.
    fn output(
        &self,
        name: &str,
        datatype: DataType,
        shape: Vec<i64>,
        target: Target,
    ) -> Result<Pending> {
        let tensor = Tensor {
            name: name.to_string(),
            datatype,
            shape,
            data: Bytes::new(),
        };
        match target {
            Target::Sink(_) => Ok(Pending::InSink(tensor)),
            Target::Scratch(scratch) => {
                let mut pinned = crate::gpu::pinned(scratch.len())?;
                self.stream.download(&scratch, &mut pinned)?;
                Ok(Pending::Host { tensor, pinned })
            }
        }
    }

    /// Enqueues one request on the stream; its outputs are ready once the
    /// stream is synchronized.
    fn enqueue(&self, request: &ExecRequest<'_>) -> Result<Vec<Pending>> {
        let wanted = |name: &str| request.outputs.iter().any(|o| o == name);
        match &self.spec {
            Spec::AddSub {
                inputs,
                outputs,
                datatype,
            } => {
                let (shape0, a) = self.input(request, &inputs[0])?;
                let (shape1, b) = self.input(request, &inputs[1])?;
                if shape0 != shape1 {
                    return Err(Error::invalid_arg(format!(
                        "inputs '{}' and '{}' must have the same shape, got {} and {}",
                        inputs[0],
                        inputs[1],
                        shape_to_string(&shape0),
                        shape_to_string(&shape1)
                    )));
                }
                let len = a.len();
                let sum = self.target(request, &outputs[0], len)?;
                let diff = self.target(request, &outputs[1], len)?;
                kernels::add_sub(
                    &self.stream,
                    *datatype,
                    &a,
                    &b,
                    sum.bytes(),
                    diff.bytes(),
                    len / 4,
                )?;
                let mut done = Vec::with_capacity(2);
                for (name, target) in outputs.iter().zip([sum, diff]) {
                    if wanted(name) {
                        done.push(self.output(name, *datatype, shape0.clone(), target)?);
                    }
                }
                Ok(done)
            }
            Spec::Identity {
                input,
                output,
                datatype,
            } => {
                let (shape, src) = self.input(request, input)?;
                if !wanted(output) {
                    return Ok(Vec::new());
                }
                // A sink on this GPU gets a device-to-device copy; otherwise
                // the input's device bytes are downloaded as they are.
                let target = match self.target(request, output, src.len())? {
                    Target::Sink(sink) => {
                        if !src.is_empty() {
                            self.stream.copy(&src, &sink)?;
                        }
                        Target::Sink(sink)
                    }
                    Target::Scratch(_) => Target::Scratch(src),
                };
                Ok(vec![self.output(output, *datatype, shape, target)?])
            }
            Spec::Preprocess {
                input,
                output,
                params,
                batched,
            } => {
                let (shape, src) = self.input(request, input)?;
                let (batch, image) = image_shape(input, &shape, *batched)?;
                params
                    .validate(&image)
                    .map_err(|e| Error::invalid_arg(format!("input '{input}': {e}")))?;
                let per_out = params.output_bytes(&image);
                let target = self.target(request, output, per_out * batch)?;
                for b in 0..batch {
                    let one_src = src
                        .slice(b * image.bytes(), image.bytes())
                        .expect("the input holds every image of the batch");
                    let one_dst = target
                        .bytes()
                        .slice(b * per_out, per_out)
                        .expect("the output holds every image of the batch");
                    kernels::preprocess(&self.stream, &one_src, &image, &one_dst, params)?;
                }
                if !wanted(output) {
                    return Ok(Vec::new());
                }
                let channels = i64::from(image.channels);
                let mut out_shape = vec![
                    channels,
                    i64::from(params.out_height),
                    i64::from(params.out_width),
                ];
                if *batched {
                    out_shape.insert(0, batch as i64);
                }
                let datatype = if params.fp16 {
                    DataType::Fp16
                } else {
                    DataType::Fp32
                };
                Ok(vec![self.output(output, datatype, out_shape, target)?])
            }
        }
    }

    fn synchronize(&self) -> Result<()> {
        self.stream.synchronize()
    }
}

/// `(batch size, image)` of a preprocess input of `shape`: `[H, W, C]`, or
/// `[B, H, W, C]` when the model batches.
fn image_shape(name: &str, shape: &[i64], batched: bool) -> Result<(usize, Image)> {
    let (batch, hwc) = match (batched, shape) {
        (true, [b, rest @ ..]) => (*b, rest),
        (false, rest) => (1, rest),
        (true, []) => (0, shape),
    };
    let dim = |d: i64| u32::try_from(d).ok();
    match (usize::try_from(batch).ok(), hwc) {
        (Some(batch), &[h, w, c]) => match (dim(h), dim(w), dim(c)) {
            (Some(height), Some(width), Some(channels)) => Ok((
                batch,
                Image {
                    height,
                    width,
                    channels,
                },
            )),
            _ => Err(Error::invalid_arg(format!(
                "input '{name}': image dimensions out of range: {}",
                shape_to_string(shape)
            ))),
        },
        _ => Err(Error::invalid_arg(format!(
            "input '{name}': expected an image [height, width, channels]{}, got {}",
            if batched {
                " after the batch dimension"
            } else {
                ""
            },
            shape_to_string(shape)
        ))),
    }
}

impl ModelInstance for CudaInstance {
    fn execute(&mut self, request: &ExecRequest<'_>) -> Result<Vec<Tensor>> {
        let pending = self.enqueue(request);
        // Synchronize even after an error: work enqueued before it still
        // reads buffers this call is about to drop.
        self.synchronize()?;
        Ok(pending?.into_iter().map(Pending::finish).collect())
    }

    /// Every request of a batch is enqueued back to back on the stream, on
    /// its own buffers (no gather copy), and the stream is synchronized
    /// once.
    fn execute_batch(&mut self, batch: &[ExecRequest<'_>]) -> Vec<Result<Vec<Tensor>>> {
        let pending: Vec<Result<Vec<Pending>>> = batch.iter().map(|r| self.enqueue(r)).collect();
        if let Err(e) = self.synchronize() {
            return batch.iter().map(|_| Err(e.clone())).collect();
        }
        pending
            .into_iter()
            .map(|p| Ok(p?.into_iter().map(Pending::finish).collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
