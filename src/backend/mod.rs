//! Backends: the trait every model implementation sits behind, and the
//! table that maps a configuration's `backend` / `platform` to one.
//!
//! A [`Backend`] turns a loaded model version into [`ModelInstance`]s; each
//! instance is driven by its own scheduler thread and never sees wire
//! formats, only validated [`Tensor`]s. The table of backends is data
//! ([`BackendRegistry`]), not a ladder of `cfg`s.

#![warn(missing_docs)]

pub mod batch;
pub mod builtin;
pub mod cuda;
pub mod ocr;
pub mod onnx;
pub mod sequence;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::core::proto::ModelConfig;
use crate::core::proto::inference::model_config::SchedulingChoice;
use crate::core::proto::inference::model_instance_group::Kind as GroupKind;
use crate::core::proto::inference::model_sequence_batching::control::Kind as ControlKind;
use crate::core::{Bindings, CancelFlag, DataType, Error, NO_BINDINGS, Result, Tensor};

/// What a backend knows about the model version it serves.
#[derive(Debug, Clone)]
pub struct ModelContext {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: i64,
    /// The model's directory (holding `config.pbtxt`).
    pub model_path: PathBuf,
    /// The version's directory (`<model_path>/<version>`).
    pub version_path: PathBuf,
    /// The validated, completed configuration.
    pub config: Arc<ModelConfig>,
}

/// Where one instance runs, as its instance group placed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `<group name>_<n>`.
    pub name: String,
    /// KIND_CPU, KIND_GPU or KIND_MODEL (AUTO is resolved at load).
    pub kind: GroupKind,
    /// The GPU of a KIND_GPU instance.
    pub device: Option<i32>,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.kind, self.device) {
            (GroupKind::Gpu, Some(device)) => write!(f, "{} (GPU device {device})", self.name),
            (GroupKind::Model, _) => write!(f, "{} (device chosen by the model)", self.name),
            _ => write!(f, "{} (CPU)", self.name),
        }
    }
}

/// Every instance a configuration asks for, in group order: `count` per
/// group, per listed GPU for KIND_GPU; one CPU instance when no group is
/// configured.
pub fn placements(config: &ModelConfig) -> Vec<Placement> {
    let mut all = Vec::new();
    for group in &config.instance_group {
        let kind = GroupKind::try_from(group.kind).unwrap_or(GroupKind::Cpu);
        let devices: Vec<Option<i32>> = if kind == GroupKind::Gpu && !group.gpus.is_empty() {
            group.gpus.iter().copied().map(Some).collect()
        } else {
            vec![None]
        };
        let mut n = 0;
        for device in devices {
            for _ in 0..group.count.max(1) {
                all.push(Placement {
                    name: format!("{}_{n}", group.name),
                    kind: if kind == GroupKind::Auto {
                        GroupKind::Cpu
                    } else {
                        kind
                    },
                    device,
                });
                n += 1;
            }
        }
    }
    if all.is_empty() {
        all.push(Placement {
            name: format!("{}_0", config.name),
            kind: GroupKind::Cpu,
            device: None,
        });
    }
    all
}

/// An input the sequence batcher adds to every request of a model with
/// `sequence_batching`: a control input or an implicit state's
/// `input_name`. It is an input the model may have beside the
/// configuration's `input`s.
#[derive(Debug, Clone, PartialEq)]
pub struct SuppliedInput {
    /// The input's name.
    pub name: String,
    /// Its datatype: the control's false/true pair's type, the CORRID
    /// control's or the state's `data_type`; `None` when the configuration
    /// gives none (the scheduler's validation refuses such a model).
    pub datatype: Option<DataType>,
    /// Its dims after the batch dimension: `[1]` for a control, the
    /// state's `dims` for a state.
    pub dims: Vec<i64>,
}

/// The inputs `config`'s `sequence_batching` supplies (none without one).
pub fn supplied_inputs(config: &ModelConfig) -> Vec<SuppliedInput> {
    let Some(SchedulingChoice::SequenceBatching(sb)) = &config.scheduling_choice else {
        return Vec::new();
    };
    let controls = sb.control_input.iter().map(|ci| {
        let datatype = ci.control.first().and_then(|c| {
            if c.kind() == ControlKind::ControlSequenceCorrid {
                DataType::from_config_enum(c.data_type)
            } else if !c.int32_false_true.is_empty() {
                Some(DataType::Int32)
            } else if !c.fp32_false_true.is_empty() {
                Some(DataType::Fp32)
            } else if !c.bool_false_true.is_empty() {
                Some(DataType::Bool)
            } else {
                None
            }
        });
        SuppliedInput {
            name: ci.name.clone(),
            datatype,
            dims: vec![1],
        }
    });
    let states = sb.state.iter().map(|s| SuppliedInput {
        name: s.input_name.clone(),
        datatype: DataType::from_config_enum(s.data_type),
        dims: s.dims.clone(),
    });
    controls.chain(states).collect()
}

/// The outputs `config`'s implicit states are read back from after every
/// run: a backend produces them whether or not the client asked for them.
pub fn state_outputs(config: &ModelConfig) -> Vec<String> {
    match &config.scheduling_choice {
        Some(SchedulingChoice::SequenceBatching(sb)) => {
            sb.state.iter().map(|s| s.output_name.clone()).collect()
        }
        _ => Vec::new(),
    }
}

/// One execution: inputs already validated against the configuration
/// (shapes include the batch dimension when the model batches).
#[derive(Debug)]
pub struct ExecRequest<'a> {
    /// Input tensors in the order the client sent them.
    pub inputs: &'a [Tensor],
    /// Names of the outputs to produce; a backend may produce more, the
    /// scheduler keeps only these.
    pub outputs: &'a [String],
    /// Request parameters, for backends that take per-request options.
    pub parameters: &'a crate::core::Parameters,
    /// Set when the client has gone away; long-running backends poll it.
    pub cancel: &'a CancelFlag,
    /// Inputs already on a GPU and outputs bound to client memory; only
    /// backends that take device memory see device inputs.
    pub bindings: &'a Bindings,
}

impl ExecRequest<'_> {
    /// The input of that name.
    pub fn input(&self, name: &str) -> Result<&Tensor> {
        self.inputs
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::invalid_arg(format!("input '{name}' is missing")))
    }
}

/// A model implementation family.
pub trait Backend: Send + Sync {
    /// Name used in `config.pbtxt`'s `backend` field.
    fn name(&self) -> &str;

    /// Fills configuration fields the backend can derive (inputs, outputs,
    /// `max_batch_size`, ...). Called before validation unless auto-complete
    /// is disabled.
    fn auto_complete(&self, _config: &mut ModelConfig, _model_path: &Path) -> Result<()> {
        Ok(())
    }

    /// Whether the backend's instances read inputs from GPU memory
    /// ([`ExecRequest::bindings`]); the server stages CUDA shared-memory
    /// inputs to host for every other backend.
    fn takes_device_memory(&self) -> bool {
        false
    }

    /// Creates instance `index` of a model version. Errors become the
    /// version's UNAVAILABLE reason.
    fn create_instance(&self, ctx: &ModelContext, index: usize) -> Result<Box<dyn ModelInstance>>;
}

/// One instance of a model, owned by one scheduler thread.
pub trait ModelInstance: Send {
    /// Runs one request and returns its output tensors.
    fn execute(&mut self, request: &ExecRequest<'_>) -> Result<Vec<Tensor>>;

    /// Runs several requests as one execution and returns each one's
    /// outputs (or error), in order. The default runs a single request
    /// as is and gathers a larger batch into one contiguous tensor per
    /// input ([`batch::gather`], the one copy batching costs), calls
    /// [`ModelInstance::execute`] once and splits the outputs back
    /// ([`batch::scatter`], no copy). A backend that can take the requests'
    /// tensors where they are overrides this and skips the copy.
    fn execute_batch(&mut self, batch: &[ExecRequest<'_>]) -> Vec<Result<Vec<Tensor>>> {
        if let [one] = batch {
            return vec![self.execute(one)];
        }
        let rows: Vec<u64> = batch.iter().map(batch::rows).collect();
        let outcome = batch::gather(batch).and_then(|inputs| {
            // Every output any request wants; the scheduler keeps each
            // request's own.
            let mut outputs: Vec<String> = Vec::new();
            for name in batch.iter().flat_map(|r| r.outputs) {
                if !outputs.contains(name) {
                    outputs.push(name.clone());
                }
            }
            // The batch goes on while any of its requests is wanted, so it
            // gets a flag of its own that nobody cancels.
            let cancel = CancelFlag::default();
            let produced = self.execute(&ExecRequest {
                inputs: &inputs,
                outputs: &outputs,
                parameters: batch[0].parameters,
                cancel: &cancel,
                bindings: &NO_BINDINGS,
            })?;
            batch::scatter(produced, &rows)
        });
        match outcome {
            Ok(per_request) => per_request.into_iter().map(Ok).collect(),
            Err(e) => batch.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    /// Whether `request` is cheap enough (a few microseconds, no blocking)
    /// for the submitting thread, an event loop, to run it itself when this
    /// instance is idle. Defaults to no.
    fn runs_inline(&self, _request: &ExecRequest<'_>) -> bool {
        false
    }
}

/// Maps backend and platform names to backends.
#[derive(Clone, Default)]
pub struct BackendRegistry {
    backends: HashMap<String, Arc<dyn Backend>>,
}

impl BackendRegistry {
    /// A registry holding nereid's built-in backends.
    pub fn with_builtins() -> BackendRegistry {
        let mut registry = BackendRegistry::default();
        for backend in builtin::all().into_iter().chain(ocr::all()) {
            registry.register(backend);
        }
        registry.register(cuda::backend());
        registry
    }

    /// Adds (or replaces) a backend under its name.
    pub fn register(&mut self, backend: Arc<dyn Backend>) {
        self.backends.insert(backend.name().to_string(), backend);
    }

    /// Names of every registered backend, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.backends.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The backend a configuration asks for: by `backend`, else by
    /// `platform`.
    pub fn resolve(&self, config: &ModelConfig) -> Result<Arc<dyn Backend>> {
        let key = if config.backend.is_empty() {
            config.platform.as_str()
        } else {
            config.backend.as_str()
        };
        if key.is_empty() {
            return Err(Error::invalid_arg(format!(
                "model '{}' names neither a backend nor a platform; set `backend` in config.pbtxt (built-in backends: {})",
                config.name,
                self.names().join(", ")
            )));
        }
        self.backends.get(key).cloned().ok_or_else(|| {
            Error::invalid_arg(format!(
                "model '{}' asks for backend '{key}', which this server does not have (available: {})",
                config.name,
                self.names().join(", ")
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::config::parse_config_text;

    #[test]
    fn sequence_batching_supplies_its_controls_and_states() {
        let config = parse_config_text(
            r#"name: "s" max_batch_size: 4
            input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
            output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
            sequence_batching {
              control_input [
                { name: "START" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] },
                { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY bool_false_true: [ false, true ] } ] },
                { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING } ] }
              ]
              state [ { input_name: "IN_S" output_name: "OUT_S" data_type: TYPE_INT64 dims: [ 2, 3 ] } ]
            }"#,
        )
        .unwrap();
        let supplied = supplied_inputs(&config);
        let got: Vec<(&str, Option<DataType>, &[i64])> = supplied
            .iter()
            .map(|s| (s.name.as_str(), s.datatype, s.dims.as_slice()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("START", Some(DataType::Fp32), &[1][..]),
                ("READY", Some(DataType::Bool), &[1][..]),
                ("CORRID", Some(DataType::Bytes), &[1][..]),
                ("IN_S", Some(DataType::Int64), &[2, 3][..]),
            ]
        );
        assert_eq!(state_outputs(&config), vec!["OUT_S".to_owned()]);
        // Without sequence_batching nothing is supplied.
        let plain = parse_config_text(r#"name: "p" max_batch_size: 4"#).unwrap();
        assert!(supplied_inputs(&plain).is_empty());
        assert!(state_outputs(&plain).is_empty());
    }
}
