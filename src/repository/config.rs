//! Model configuration: parsing `config.pbtxt` (protobuf text format) and
//! JSON overrides (protobuf JSON mapping) through the reflection pool,
//! printing a configuration as the JSON the configuration endpoint returns,
//! the default filling Triton performs on every model, and validation with
//! errors that name the model, the file, the field, and what was expected.
//!
//! Nothing here touches a backend or a scheduler; the repository manager
//! strings these steps together (see [`crate::repository::manager`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use prost_reflect::{DeserializeOptions, DynamicMessage, SerializeOptions};

use crate::core::proto::inference::model_config::SchedulingChoice;
use crate::core::proto::inference::model_input::Format;
use crate::core::proto::inference::model_instance_group::Kind as GroupKind;
use crate::core::proto::inference::model_optimization_policy::PinnedMemoryBuffer;
use crate::core::proto::inference::model_version_policy::{Latest, PolicyChoice};
use crate::core::proto::inference::{
    DataType as ConfigDataType, ModelOptimizationPolicy, ModelTensorReshape,
};
use crate::core::proto::{
    ModelConfig, ModelInstanceGroup, ModelVersionPolicy, model_config_descriptor,
};
use crate::core::{DataType, Error, Result};

/// File name of a model's configuration inside its directory.
pub const CONFIG_FILE: &str = "config.pbtxt";

/// The platform name that marks an ensemble.
pub const ENSEMBLE_PLATFORM: &str = "ensemble";

/// Idle time after which a sequence is released when the configuration
/// leaves `max_sequence_idle_microseconds` at 0 (one second, as Triton).
pub const DEFAULT_SEQUENCE_IDLE_MICROSECONDS: u64 = 1_000_000;

/// Where a configuration came from, for error messages: the model and the
/// file (or "config override" for one sent with a load request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSource {
    /// The model's name (its directory name).
    pub model: String,
    /// The configuration file path, or a description of the source.
    pub file: String,
}

impl ConfigSource {
    /// A configuration read from `path` for model `model`.
    pub fn file(model: &str, path: &Path) -> ConfigSource {
        ConfigSource {
            model: model.to_owned(),
            file: path.display().to_string(),
        }
    }

    /// A configuration sent as JSON with a load request.
    pub fn config_override(model: &str) -> ConfigSource {
        ConfigSource {
            model: model.to_owned(),
            file: "config override".to_owned(),
        }
    }

    /// An invalid-argument error prefixed with the model and file.
    pub fn error(&self, detail: impl std::fmt::Display) -> Error {
        Error::invalid_arg(format!("model '{}' ({}): {detail}", self.model, self.file))
    }
}

/// Parses protobuf text format into a [`ModelConfig`]. Unknown fields,
/// unknown enum values and malformed syntax are errors; nothing is filled
/// or validated. This is the entry point the `config.pbtxt` fuzz target
/// drives.
pub fn parse_config_text(text: &str) -> Result<ModelConfig> {
    let parsed = colons_before_lists(text);
    let message =
        DynamicMessage::parse_text_format(model_config_descriptor(), &parsed).map_err(|e| {
            let at = error_offset(&e)
                .map(|offset| {
                    let (line, column) = line_column(text, original_offset(text, &parsed, offset));
                    format!(" at line {line}, column {column}")
                })
                .unwrap_or_default();
            Error::invalid_arg(format!("cannot parse protobuf text format{at}: {e}"))
        })?;
    message
        .transcode_to::<ModelConfig>()
        .map_err(|e| Error::internal(format!("cannot convert the parsed configuration: {e}")))
}

/// Where in the parsed text a text-format error was found (the start of the
/// first span the parser labels).
fn error_offset(e: &prost_reflect::text_format::ParseError) -> Option<usize> {
    use miette::Diagnostic;
    e.labels()?.next().map(|label| label.offset())
}

/// Maps an offset in `parsed` (the text after [`colons_before_lists`],
/// which only inserts `:` bytes) back to the same place in `original`.
fn original_offset(original: &str, parsed: &str, offset: usize) -> usize {
    let (o, p) = (original.as_bytes(), parsed.as_bytes());
    let (mut i, mut j) = (0, 0);
    while j < offset.min(p.len()) {
        if i < o.len() && o[i] == p[j] {
            i += 1;
        }
        j += 1;
    }
    i
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |n| n + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    (line, column)
}

/// Inserts the optional `:` between a field name and a `[` list.
///
/// The protobuf text format lets a message field's list go without the
/// colon (`input [ { ... } ]`), which is how nearly every `config.pbtxt` is
/// written, but prost-reflect's parser insists on `input: [ ... ]`. This
/// pass walks the text with just enough lexing to skip strings and `#`
/// comments, and adds the colon after an identifier that is followed by `[`
/// and is not itself a value (preceded by `:`). Everything else, including
/// all syntax errors, is left for the real parser.
fn colons_before_lists(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    if !b.contains(&b'[') {
        return Cow::Borrowed(text);
    }
    let skip_blank = |mut j: usize| {
        loop {
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if j < b.len() && b[j] == b'#' {
                while j < b.len() && b[j] != b'\n' {
                    j += 1;
                }
            } else {
                return j;
            }
        }
    };
    let mut out = Vec::with_capacity(b.len() + 16);
    let mut prev = 0u8;
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let c = b[i];
        if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'"' || c == b'\'' {
            i += 1;
            while i < b.len() && b[i] != c && b[i] != b'\n' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
            prev = c;
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            while i < b.len()
                && (b[i].is_ascii_alphanumeric()
                    || b[i] == b'_'
                    || (c.is_ascii_digit() && b[i] == b'.'))
            {
                i += 1;
            }
            out.extend_from_slice(&b[start..i]);
            let field_name = !c.is_ascii_digit() && prev != b':';
            if field_name && b.get(skip_blank(i)) == Some(&b'[') {
                out.push(b':');
            }
            prev = c;
            continue;
        } else {
            i += 1;
            if !c.is_ascii_whitespace() {
                prev = c;
            }
        }
        out.extend_from_slice(&b[start..i]);
    }
    // Only ASCII ':' was inserted, and only after ASCII identifier bytes.
    Cow::Owned(String::from_utf8(out).expect("inserting ':' keeps UTF-8 valid"))
}

/// Parses a configuration in the protobuf JSON mapping (field names in
/// either proto or lowerCamel form, enums by name or number, 64-bit integers
/// as numbers or strings). Unknown fields are errors.
pub fn parse_config_json(json: &str) -> Result<ModelConfig> {
    let mut de = serde_json::Deserializer::from_str(json);
    let message = DynamicMessage::deserialize_with_options(
        model_config_descriptor(),
        &mut de,
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .and_then(|m| de.end().map(|()| m))
    .map_err(|e| Error::invalid_arg(format!("cannot parse JSON model configuration: {e}")))?;
    message
        .transcode_to::<ModelConfig>()
        .map_err(|e| Error::internal(format!("cannot convert the parsed configuration: {e}")))
}

/// Reads and parses a `config.pbtxt` file for model `model`.
pub fn read_config_file(model: &str, path: &Path) -> Result<ModelConfig> {
    let source = ConfigSource::file(model, path);
    let text = fs::read_to_string(path).map_err(|e| source.error(format!("cannot read: {e}")))?;
    parse_config_text(&text).map_err(|e| source.error(e.message()))
}

/// Prints a configuration as the model configuration endpoint returns it:
/// proto field names, every field without presence shown even at its
/// default, enums by name, 64-bit integers as JSON numbers.
pub fn config_to_json(config: &ModelConfig) -> String {
    let mut message = DynamicMessage::new(model_config_descriptor());
    // The descriptor and the prost type come from the same .proto file, so
    // the round trip through the wire format cannot fail.
    message
        .transcode_from(config)
        .expect("ModelConfig matches its own descriptor");
    let options = SerializeOptions::new()
        .skip_default_fields(false)
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .use_enum_numbers(false);
    let mut out = serde_json::Serializer::new(Vec::new());
    message
        .serialize_with_options(&mut out, &options)
        .expect("serializing to memory cannot fail");
    String::from_utf8(out.into_inner()).expect("serde_json writes UTF-8")
}

/// What a known backend implies for `platform` and `default_model_filename`.
struct BackendFiles {
    backend: &'static str,
    platform: Option<&'static str>,
    filename: &'static str,
}

/// The backends whose platform and model file name the server fills in
/// itself, as Triton does for backward compatibility. Order matters where a
/// backend has several platforms: the first is the default.
const KNOWN_BACKENDS: &[BackendFiles] = &[
    BackendFiles {
        backend: "onnxruntime",
        platform: Some("onnxruntime_onnx"),
        filename: "model.onnx",
    },
    BackendFiles {
        backend: "tensorrt",
        platform: Some("tensorrt_plan"),
        filename: "model.plan",
    },
    BackendFiles {
        backend: "python",
        platform: None,
        filename: "model.py",
    },
    BackendFiles {
        backend: "pytorch",
        platform: Some("pytorch_libtorch"),
        filename: "model.pt",
    },
    BackendFiles {
        backend: "openvino",
        platform: None,
        filename: "model.xml",
    },
    BackendFiles {
        backend: "tensorflow",
        platform: Some("tensorflow_savedmodel"),
        filename: "model.savedmodel",
    },
    BackendFiles {
        backend: "tensorflow",
        platform: Some("tensorflow_graphdef"),
        filename: "model.graphdef",
    },
];

/// Fills `backend`, `platform` and `default_model_filename` from each other
/// and from the files of the model's first version directory, the way
/// Triton's server-side auto-fill does: `platform: "onnxruntime_onnx"`
/// implies `backend: "onnxruntime"` and `model.onnx`, a lone `model.py`
/// implies the python backend, and a model named `foo.bar` with nothing
/// else set uses backend `bar`. Ensembles are left alone.
pub fn fill_backend_fields(config: &mut ModelConfig, model_dir: &Path) {
    if config.platform == ENSEMBLE_PLATFORM {
        return;
    }
    if config.backend.is_empty() {
        let found = if !config.platform.is_empty() {
            KNOWN_BACKENDS
                .iter()
                .find(|k| k.platform == Some(config.platform.as_str()))
        } else if !config.default_model_filename.is_empty() {
            KNOWN_BACKENDS
                .iter()
                .find(|k| k.filename == config.default_model_filename)
        } else {
            first_version_entries(model_dir).and_then(|entries| {
                KNOWN_BACKENDS
                    .iter()
                    .find(|k| entries.iter().any(|e| e == k.filename))
            })
        };
        if let Some(k) = found {
            config.backend = k.backend.to_owned();
            if config.platform.is_empty()
                && let Some(p) = k.platform
            {
                config.platform = p.to_owned();
            }
        } else if config.platform.is_empty()
            && config.default_model_filename.is_empty()
            && let Some((_, suffix)) = config.name.split_once('.')
            && !suffix.is_empty()
        {
            config.backend = suffix.to_owned();
            config.default_model_filename = format!("model.{suffix}");
        }
    }
    let same_backend = KNOWN_BACKENDS
        .iter()
        .filter(|k| k.backend == config.backend);
    let chosen = same_backend
        .clone()
        .find(|k| k.platform.is_some() && k.platform == Some(config.platform.as_str()))
        .or_else(|| {
            same_backend
                .clone()
                .find(|k| k.filename == config.default_model_filename)
        })
        .or_else(|| same_backend.clone().next());
    if let Some(k) = chosen {
        if config.platform.is_empty()
            && let Some(p) = k.platform
        {
            config.platform = p.to_owned();
        }
        if config.default_model_filename.is_empty() {
            config.default_model_filename = k.filename.to_owned();
        }
    }
}

/// Names of the entries of the lowest-numbered version directory.
fn first_version_entries(model_dir: &Path) -> Option<Vec<String>> {
    let version = super::versions::scan_versions(model_dir)
        .ok()?
        .into_iter()
        .next()?;
    let entries = fs::read_dir(model_dir.join(version.to_string())).ok()?;
    Some(
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
    )
}

/// Fills what Triton fills on every model after auto-completion: the
/// version policy (latest 1), preferred batch sizes and sequence idle time
/// left unset, pinned-memory buffers, and instance groups (one group named
/// after the model when none is given; `<model>_<index>` names; KIND_AUTO
/// resolved to GPU when `available_gpus` covers it, else CPU; count 1, or
/// 2 on CPU for onnxruntime and tensorflow; every GPU when a GPU group lists
/// none).
pub fn normalize(config: &mut ModelConfig, available_gpus: &[i32]) {
    if config.version_policy.is_none() {
        config.version_policy = Some(ModelVersionPolicy {
            policy_choice: Some(PolicyChoice::Latest(Latest { num_versions: 1 })),
        });
    }
    let max_batch_size = config.max_batch_size;
    match &mut config.scheduling_choice {
        Some(SchedulingChoice::DynamicBatching(db))
            if db.preferred_batch_size.is_empty() && max_batch_size > 0 =>
        {
            db.preferred_batch_size.push(max_batch_size);
        }
        Some(SchedulingChoice::SequenceBatching(sb)) => {
            if sb.max_sequence_idle_microseconds == 0 {
                sb.max_sequence_idle_microseconds = DEFAULT_SEQUENCE_IDLE_MICROSECONDS;
            }
            use crate::core::proto::inference::model_sequence_batching::StrategyChoice;
            if let Some(StrategyChoice::Oldest(oldest)) = &mut sb.strategy_choice
                && oldest.preferred_batch_size.is_empty()
                && max_batch_size > 0
            {
                oldest.preferred_batch_size.push(max_batch_size);
            }
        }
        Some(SchedulingChoice::EnsembleScheduling(_)) => return,
        Some(SchedulingChoice::DynamicBatching(_)) | None => {}
    }

    let optimization = config
        .optimization
        .get_or_insert_with(ModelOptimizationPolicy::default);
    for buffer in [
        &mut optimization.input_pinned_memory,
        &mut optimization.output_pinned_memory,
    ] {
        buffer.get_or_insert(PinnedMemoryBuffer { enable: true });
    }

    if config.instance_group.is_empty() {
        config.instance_group.push(ModelInstanceGroup {
            name: config.name.clone(),
            ..Default::default()
        });
    }
    for (index, group) in config.instance_group.iter_mut().enumerate() {
        if group.name.is_empty() {
            group.name = format!("{}_{index}", config.name);
        }
        if group.kind == GroupKind::Auto as i32 {
            let on_gpu =
                !available_gpus.is_empty() && group.gpus.iter().all(|g| available_gpus.contains(g));
            group.kind = if on_gpu {
                GroupKind::Gpu as i32
            } else {
                GroupKind::Cpu as i32
            };
        }
        if group.count < 1 {
            let cpu_default_two = matches!(config.backend.as_str(), "onnxruntime" | "tensorflow");
            group.count = if group.kind == GroupKind::Cpu as i32 && cpu_default_two {
                2
            } else {
                1
            };
        }
        if group.kind == GroupKind::Gpu as i32 && group.gpus.is_empty() {
            group.gpus = available_gpus.to_vec();
        }
    }
}

/// Formats dims the way error messages show shapes: `[8,16]`.
pub fn format_dims(dims: &[i64]) -> String {
    let inner: Vec<String> = dims.iter().map(i64::to_string).collect();
    format!("[{}]", inner.join(","))
}

/// The explanation of the implicit batch dimension, for messages about a
/// tensor's dims.
fn batch_dimension_note(max_batch_size: i32) -> String {
    if max_batch_size > 0 {
        format!(
            "with max_batch_size {max_batch_size} the first dimension of every request tensor is the batch dimension; it is implicit and must not be listed in dims"
        )
    } else {
        "with max_batch_size 0 the model does not batch and dims is the full shape".to_owned()
    }
}

/// A hint for a request tensor whose shape does not match the configured
/// dims, when the mismatch is exactly the batch dimension: the client sent
/// the shape without the batch dimension to a batching model, or with one
/// to a model that does not batch. `None` when the batch dimension does not
/// explain the mismatch.
pub fn batch_dimension_hint(max_batch_size: i32, dims: &[i64], shape: &[i64]) -> Option<String> {
    let matches = |s: &[i64]| {
        s.len() == dims.len()
            && s.iter()
                .zip(dims)
                .all(|(&got, &want)| want == -1 || got == want)
    };
    if max_batch_size > 0 && matches(shape) {
        Some(format!(
            "the model batches (max_batch_size {max_batch_size}), so the shape must start with the batch dimension: expected [batch,{}]",
            dims.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ))
    } else if max_batch_size == 0 && shape.len() == dims.len() + 1 && matches(&shape[1..]) {
        Some(format!(
            "the model does not batch (max_batch_size 0), so the shape is exactly dims {} with no leading batch dimension",
            format_dims(dims)
        ))
    } else {
        None
    }
}

/// Checks a completed configuration. `source` names the model (whose
/// directory name the configuration's `name` must equal) and the file for
/// messages; `available_gpus` is what GPU instance groups may use.
pub fn validate(config: &ModelConfig, source: &ConfigSource, available_gpus: &[i32]) -> Result<()> {
    if config.name != source.model {
        return Err(source.error(format!(
            "unexpected directory name '{}' for model '{}', directory name must equal model name",
            source.model, config.name
        )));
    }
    if config.max_batch_size < 0 {
        return Err(source.error(format!(
            "max_batch_size must be >= 0 (0 means the model does not batch), found {}",
            config.max_batch_size
        )));
    }
    validate_version_policy(config, source)?;
    validate_platform(config, source)?;

    if config.input.is_empty() {
        return Err(source.error(
            "the configuration declares no inputs; add at least one `input [ { name: ... data_type: ... dims: [...] } ]`",
        ));
    }
    if config.output.is_empty() {
        return Err(source.error(
            "the configuration declares no outputs; add at least one `output [ { name: ... data_type: ... dims: [...] } ]`",
        ));
    }
    let mbs = config.max_batch_size;
    for (index, input) in config.input.iter().enumerate() {
        let io = Io {
            kind: "input",
            index,
            name: &input.name,
            data_type: input.data_type,
            dims: &input.dims,
            reshape: input.reshape.as_ref(),
        };
        io.validate(source, mbs)?;
        if input.format != Format::None as i32 {
            let format = Format::try_from(input.format).map_err(|_| {
                source.error(format!(
                    "input '{}': unknown format value {}",
                    input.name, input.format
                ))
            })?;
            if input.dims.len() != 3 {
                return Err(source.error(format!(
                    "input '{}' has {} and needs exactly 3 dims (the image's non-batch dimensions), found {} in dims {}; {}",
                    input.name,
                    format.as_str_name(),
                    input.dims.len(),
                    format_dims(&input.dims),
                    batch_dimension_note(mbs)
                )));
            }
        }
    }
    for (index, output) in config.output.iter().enumerate() {
        let io = Io {
            kind: "output",
            index,
            name: &output.name,
            data_type: output.data_type,
            dims: &output.dims,
            reshape: output.reshape.as_ref(),
        };
        io.validate(source, mbs)?;
    }
    check_unique(
        source,
        "input",
        config.input.iter().map(|i| i.name.as_str()),
    )?;
    check_unique(
        source,
        "output",
        config.output.iter().map(|o| o.name.as_str()),
    )?;

    validate_instance_groups(config, source, available_gpus)?;
    validate_scheduling(config, source)?;
    Ok(())
}

fn validate_version_policy(config: &ModelConfig, source: &ConfigSource) -> Result<()> {
    match config.version_policy.as_ref().and_then(|p| p.policy_choice.as_ref()) {
        None => Err(source.error(
            "version_policy must choose one of latest, all or specific (leave version_policy out for the default, latest { num_versions: 1 })",
        )),
        Some(PolicyChoice::Latest(latest)) if latest.num_versions == 0 => Err(source.error(
            "version_policy latest num_versions must be >= 1, found 0",
        )),
        Some(PolicyChoice::Specific(specific)) if specific.versions.is_empty() => Err(source
            .error("version_policy specific must list at least one version, found none")),
        Some(PolicyChoice::Specific(specific)) => match specific.versions.iter().find(|&&v| v < 0)
        {
            Some(v) => Err(source.error(format!(
                "version_policy specific lists version {v}; versions are the non-negative numbers of the model's version directories"
            ))),
            None => Ok(()),
        },
        Some(_) => Ok(()),
    }
}

fn validate_platform(config: &ModelConfig, source: &ConfigSource) -> Result<()> {
    let is_ensemble_platform = config.platform == ENSEMBLE_PLATFORM;
    let has_ensemble_steps = matches!(
        config.scheduling_choice,
        Some(SchedulingChoice::EnsembleScheduling(_))
    );
    if is_ensemble_platform && !config.backend.is_empty() {
        return Err(source.error(format!(
            "an ensemble (platform 'ensemble') must leave backend empty, found backend '{}'",
            config.backend
        )));
    }
    if is_ensemble_platform && !has_ensemble_steps {
        return Err(source
            .error("platform 'ensemble' needs an ensemble_scheduling section listing its steps"));
    }
    if has_ensemble_steps && !is_ensemble_platform {
        return Err(source.error(format!(
            "ensemble_scheduling is only allowed with platform 'ensemble', found platform '{}'",
            config.platform
        )));
    }
    Ok(())
}

/// A datatype's configuration name for messages.
fn type_name(data_type: i32) -> &'static str {
    DataType::from_config_enum(data_type).map_or("TYPE_INVALID", DataType::config_name)
}

/// One end of an ensemble tensor: who writes or reads it, with what
/// datatype, dims, and full shape (batch dimension included as -1 when that
/// model batches).
struct TensorEnd {
    who: String,
    data_type: i32,
    dims: Vec<i64>,
    shape: Vec<i64>,
}

impl TensorEnd {
    fn new(who: String, data_type: i32, max_batch_size: i32, dims: &[i64]) -> TensorEnd {
        TensorEnd {
            who,
            data_type,
            dims: dims.to_vec(),
            shape: full_shape(max_batch_size, dims),
        }
    }

    /// Triton's rule: the dims agree, or the full shapes do, so a tensor
    /// may pass between a batching model's `[d...]` and a non-batching
    /// one's `[-1, d...]`; the scheduler converts at run time.
    fn agrees_with(&self, other: &TensorEnd) -> bool {
        shapes_agree(&self.dims, &other.dims) || shapes_agree(&self.shape, &other.shape)
    }
}

fn full_shape(max_batch_size: i32, dims: &[i64]) -> Vec<i64> {
    if max_batch_size > 0 {
        std::iter::once(-1).chain(dims.iter().copied()).collect()
    } else {
        dims.to_vec()
    }
}

/// Shapes agree when they have the same rank and every dimension is equal
/// or variable (-1) on either side.
fn shapes_agree(a: &[i64], b: &[i64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| x == y || x == -1 || y == -1)
}

/// Checks an ensemble's steps against its composing models' configurations:
/// `composing` finds the configuration a step's model serves with (by name
/// and version, -1 the latest), or `None` when it is not loaded. Every step
/// maps only inputs and outputs its model has and every required input of
/// it; each ensemble tensor's writer and readers agree on datatype and on
/// dims or full shape; the batching steps of an ensemble that batches
/// (`max_batch_size` > 0) batch at least as much (a non-batching step is
/// allowed: its tensors change shape at run time, see
/// [`crate::scheduler::ensemble`]). The graph's structure is checked by
/// [`crate::scheduler::ensemble::Plan::new`].
pub fn validate_ensemble_steps(
    config: &ModelConfig,
    composing: &dyn Fn(&str, i64) -> Option<Arc<ModelConfig>>,
) -> Result<()> {
    let name = &config.name;
    let fail = |message: String| Err(Error::invalid_arg(format!("ensemble '{name}': {message}")));
    let Some(SchedulingChoice::EnsembleScheduling(ensembling)) = &config.scheduling_choice else {
        return Ok(());
    };
    let mbs = config.max_batch_size;
    let mut writers: HashMap<&str, TensorEnd> = HashMap::new();
    let mut readers: Vec<(&str, TensorEnd)> = Vec::new();
    for input in &config.input {
        let dims = input.reshape.as_ref().map_or(&input.dims, |r| &r.shape);
        writers.insert(
            &input.name,
            TensorEnd::new(
                format!("ensemble input '{}'", input.name),
                input.data_type,
                mbs,
                dims,
            ),
        );
    }
    for (index, step) in ensembling.step.iter().enumerate() {
        let model = &step.model_name;
        let here = format!("step {} '{model}'", index + 1);
        let Some(step_config) = composing(model, step.model_version) else {
            let version = match step.model_version {
                -1 => String::new(),
                v => format!(" version {v}"),
            };
            return fail(format!(
                "{here}: model '{model}'{version} is not loaded (an ensemble loads after its composing models)"
            ));
        };
        let step_mbs = step_config.max_batch_size;
        if step_mbs > 0 && step_mbs < mbs {
            return fail(format!(
                "{here}: the ensemble batches up to {mbs} but model '{model}' has max_batch_size {step_mbs}; every composing model of a batching ensemble must batch at least as much"
            ));
        }
        let mut mapped: Vec<&String> = step.input_map.keys().collect();
        mapped.sort();
        for input in mapped {
            let tensor = &step.input_map[input];
            let Some(declared) = step_config.input.iter().find(|i| i.name == *input) else {
                return fail(format!(
                    "{here}: input_map names input '{input}', which model '{model}' does not have (inputs: {})",
                    names(step_config.input.iter().map(|i| i.name.as_str()))
                ));
            };
            readers.push((
                tensor,
                TensorEnd::new(
                    format!("{here} input '{input}'"),
                    declared.data_type,
                    step_mbs,
                    &declared.dims,
                ),
            ));
        }
        if let Some(missing) = step_config
            .input
            .iter()
            .find(|i| !i.optional && !step.input_map.contains_key(&i.name))
        {
            return fail(format!(
                "{here}: input_map leaves model input '{}' unmapped",
                missing.name
            ));
        }
        let mut mapped: Vec<&String> = step.output_map.keys().collect();
        mapped.sort();
        for output in mapped {
            let Some(declared) = step_config.output.iter().find(|o| o.name == *output) else {
                return fail(format!(
                    "{here}: output_map names output '{output}', which model '{model}' does not have (outputs: {})",
                    names(step_config.output.iter().map(|o| o.name.as_str()))
                ));
            };
            writers.insert(
                &step.output_map[output],
                TensorEnd::new(
                    format!("{here} output '{output}'"),
                    declared.data_type,
                    step_mbs,
                    &declared.dims,
                ),
            );
        }
    }
    for output in &config.output {
        let dims = output.reshape.as_ref().map_or(&output.dims, |r| &r.shape);
        readers.push((
            &output.name,
            TensorEnd::new(
                format!("ensemble output '{}'", output.name),
                output.data_type,
                mbs,
                dims,
            ),
        ));
    }
    for (tensor, reader) in &readers {
        let Some(writer) = writers.get(tensor) else {
            continue;
        };
        if writer.data_type != reader.data_type {
            return fail(format!(
                "ensemble tensor '{tensor}': {} is {} but {} takes {}",
                writer.who,
                type_name(writer.data_type),
                reader.who,
                type_name(reader.data_type)
            ));
        }
        if !writer.agrees_with(reader) {
            return fail(format!(
                "ensemble tensor '{tensor}': {} has shape {} but {} takes shape {} (batch dimension shown as -1)",
                writer.who,
                format_dims(&writer.shape),
                reader.who,
                format_dims(&reader.shape)
            ));
        }
    }
    Ok(())
}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The fields inputs and outputs share, for one set of checks.
struct Io<'a> {
    kind: &'static str,
    index: usize,
    name: &'a str,
    data_type: i32,
    dims: &'a [i64],
    reshape: Option<&'a ModelTensorReshape>,
}

impl Io<'_> {
    fn validate(&self, source: &ConfigSource, max_batch_size: i32) -> Result<()> {
        let kind = self.kind;
        if self.name.is_empty() {
            return Err(source.error(format!(
                "{kind} #{} has no name; every {kind} needs `name: \"...\"`",
                self.index
            )));
        }
        let name = self.name;
        match ConfigDataType::try_from(self.data_type) {
            Ok(ConfigDataType::TypeInvalid) => {
                return Err(source.error(format!(
                    "{kind} '{name}' must set data_type (TYPE_BOOL, TYPE_INT32, TYPE_FP32, TYPE_STRING, ...), found TYPE_INVALID"
                )));
            }
            Err(_) => {
                return Err(source.error(format!(
                    "{kind} '{name}' has unknown data_type value {}",
                    self.data_type
                )));
            }
            Ok(_) => {}
        }
        if self.dims.is_empty() {
            return Err(source.error(format!(
                "{kind} '{name}' must set dims, found none; for a single value per batch item use dims: [ 1 ] with reshape: {{ shape: [ ] }}; {}",
                batch_dimension_note(max_batch_size)
            )));
        }
        if let Some((position, bad)) = self
            .dims
            .iter()
            .enumerate()
            .find(|&(_, &d)| d < 1 && d != -1)
        {
            return Err(source.error(format!(
                "{kind} '{name}' dims {}: dimension {position} is {bad}; each dimension must be >= 1, or -1 for a variable-size dimension ({})",
                format_dims(self.dims),
                batch_dimension_note(max_batch_size)
            )));
        }
        if let Some(reshape) = self.reshape {
            self.validate_reshape(source, max_batch_size, &reshape.shape)?;
        }
        Ok(())
    }

    fn validate_reshape(
        &self,
        source: &ConfigSource,
        max_batch_size: i32,
        shape: &[i64],
    ) -> Result<()> {
        let (kind, name) = (self.kind, self.name);
        if shape.is_empty() && max_batch_size == 0 {
            return Err(source.error(format!(
                "{kind} '{name}' has an empty reshape, which is only allowed when the model batches (max_batch_size > 0): a non-batching model cannot have scalar tensors"
            )));
        }
        if let Some((position, bad)) = shape.iter().enumerate().find(|&(_, &d)| d < 1 && d != -1) {
            return Err(source.error(format!(
                "{kind} '{name}' reshape {}: dimension {position} is {bad}; each dimension must be >= 1, or -1 for a variable-size dimension",
                format_dims(shape)
            )));
        }
        // Compare the element counts of the runs between variable-size
        // dimensions: [2,4,-1,6] may become [8,-1,1,6] but not [8,-1,3].
        let runs = |dims: &[i64]| -> Vec<i128> {
            dims.split(|&d| d == -1)
                .map(|run| run.iter().map(|&d| i128::from(d)).product())
                .collect()
        };
        let (from, to) = (runs(self.dims), runs(shape));
        // An empty reshape stands for one element.
        let empty_reshape_ok = shape.is_empty() && from == [1];
        if from != to && !empty_reshape_ok {
            return Err(source.error(format!(
                "{kind} '{name}' has dims {} and reshape {}, which do not hold the same number of elements{}",
                format_dims(self.dims),
                format_dims(shape),
                if from.len() == to.len() {
                    String::new()
                } else {
                    " (they have different numbers of variable-size dimensions)".to_owned()
                }
            )));
        }
        Ok(())
    }
}

fn check_unique<'a>(
    source: &ConfigSource,
    kind: &str,
    names: impl Iterator<Item = &'a str>,
) -> Result<()> {
    let mut seen: Vec<&str> = Vec::new();
    for name in names {
        if seen.contains(&name) {
            return Err(source.error(format!(
                "{kind} '{name}' is declared more than once; {kind} names must be unique"
            )));
        }
        seen.push(name);
    }
    Ok(())
}

fn validate_instance_groups(
    config: &ModelConfig,
    source: &ConfigSource,
    available_gpus: &[i32],
) -> Result<()> {
    let is_ensemble = matches!(
        config.scheduling_choice,
        Some(SchedulingChoice::EnsembleScheduling(_))
    );
    if is_ensemble {
        if !config.instance_group.is_empty() {
            return Err(source.error(
                "an ensemble must not set instance_group; its steps' models own the instances",
            ));
        }
        if !config.model_warmup.is_empty() {
            return Err(source.error(
                "an ensemble must not set model_warmup; warm up its composing models instead",
            ));
        }
        if config.optimization.is_some() {
            return Err(source.error(
                "an ensemble must not set optimization; its composing models own the execution",
            ));
        }
        return Ok(());
    }
    if config.instance_group.is_empty() {
        return Err(source.error("instance_group must list at least one group"));
    }
    for group in &config.instance_group {
        let name = &group.name;
        if group.count < 1 {
            return Err(source.error(format!(
                "instance group '{name}' count must be >= 1, found {}",
                group.count
            )));
        }
        let kind = GroupKind::try_from(group.kind).map_err(|_| {
            source.error(format!(
                "instance group '{name}' has unknown kind value {}",
                group.kind
            ))
        })?;
        match kind {
            GroupKind::Cpu | GroupKind::Model if !group.gpus.is_empty() => {
                return Err(source.error(format!(
                    "instance group '{name}' has kind {} but lists gpus {:?}; only KIND_GPU and KIND_AUTO groups may list gpus",
                    kind.as_str_name(),
                    group.gpus
                )));
            }
            GroupKind::Gpu if available_gpus.is_empty() => {
                return Err(source.error(format!(
                    "instance group '{name}' has kind KIND_GPU but no GPUs are available; use KIND_CPU or KIND_AUTO"
                )));
            }
            GroupKind::Gpu => {
                if let Some(bad) = group.gpus.iter().find(|g| !available_gpus.contains(g)) {
                    return Err(source.error(format!(
                        "instance group '{name}' lists gpu {bad}, which is not available (available: {available_gpus:?})"
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn validate_scheduling(config: &ModelConfig, source: &ConfigSource) -> Result<()> {
    let mbs = config.max_batch_size;
    if let Some(SchedulingChoice::DynamicBatching(db)) = &config.scheduling_choice {
        for &size in &db.preferred_batch_size {
            if size <= 0 || size > mbs {
                return Err(source.error(format!(
                    "dynamic_batching preferred_batch_size {size} must be between 1 and max_batch_size ({mbs})"
                )));
            }
        }
        if db.priority_levels > 0
            && (db.default_priority_level < 1 || db.default_priority_level > db.priority_levels)
        {
            return Err(source.error(format!(
                "dynamic_batching default_priority_level must be in [1, {}] (priority_levels), found {}",
                db.priority_levels, db.default_priority_level
            )));
        }
        if let Some(level) = db
            .priority_queue_policy
            .keys()
            .find(|&&level| level < 1 || level > db.priority_levels)
        {
            return Err(source.error(format!(
                "dynamic_batching priority_queue_policy has priority level {level}, outside [1, {}] (priority_levels)",
                db.priority_levels
            )));
        }
    }
    if let Some(SchedulingChoice::SequenceBatching(sb)) = &config.scheduling_choice {
        use crate::core::proto::inference::model_sequence_batching::StrategyChoice;
        if let Some(StrategyChoice::Oldest(oldest)) = &sb.strategy_choice {
            for &size in &oldest.preferred_batch_size {
                if size <= 0 || size > mbs {
                    return Err(source.error(format!(
                        "sequence_batching oldest preferred_batch_size {size} must be between 1 and max_batch_size ({mbs})"
                    )));
                }
            }
        }
        if let Some(StrategyChoice::Direct(direct)) = &sb.strategy_choice {
            let u = direct.minimum_slot_utilization;
            if u != 0.0 && !(u > 0.0 && u <= 1.0) {
                return Err(source.error(format!(
                    "sequence_batching direct minimum_slot_utilization must be in (0.0, 1.0], found {u}"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Triton's `simple` example model configuration, verbatim in shape.
    const SIMPLE: &str = r#"
name: "simple"
platform: "tensorflow_graphdef"
max_batch_size: 8
input [
  {
    name: "INPUT0"
    data_type: TYPE_INT32
    dims: [ 16 ]
  },
  {
    name: "INPUT1"
    data_type: TYPE_INT32
    dims: [ 16 ]
  }
]
output [
  {
    name: "OUTPUT0"
    data_type: TYPE_INT32
    dims: [ 16 ]
  },
  {
    name: "OUTPUT1"
    data_type: TYPE_INT32
    dims: [ 16 ]
  }
]
"#;

    fn source(model: &str) -> ConfigSource {
        ConfigSource {
            model: model.to_owned(),
            file: format!("{model}/config.pbtxt"),
        }
    }

    fn completed(text: &str, model: &str) -> ModelConfig {
        let mut config = parse_config_text(text).expect("parses");
        if config.name.is_empty() {
            config.name = model.to_owned();
        }
        normalize(&mut config, &[]);
        config
    }

    fn validation_error(text: &str) -> String {
        let config = completed(text, "m");
        validate(&config, &source("m"), &[])
            .expect_err("invalid")
            .message()
            .to_owned()
    }

    #[test]
    fn parses_simple() {
        let config = parse_config_text(SIMPLE).unwrap();
        assert_eq!(config.name, "simple");
        assert_eq!(config.platform, "tensorflow_graphdef");
        assert_eq!(config.max_batch_size, 8);
        assert_eq!(config.input.len(), 2);
        assert_eq!(config.input[1].name, "INPUT1");
        assert_eq!(config.input[1].data_type, ConfigDataType::TypeInt32 as i32);
        assert_eq!(config.output[0].dims, vec![16]);
    }

    #[test]
    fn parses_the_rest_of_the_schema() {
        let text = r#"
            # comments and both separators are fine
            name: 'seq'; backend: "onnxruntime", max_batch_size: 4
            version_policy: { specific: { versions: [1, 3] } }
            input { name: "IMAGE" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [3, 224, 224] }
            input { name: "LEN" data_type: TYPE_INT64 dims: [1] reshape: { shape: [] } optional: true }
            output { name: "PROB" data_type: TYPE_FP32 dims: [1000] label_filename: "labels.txt" }
            sequence_batching {
              max_sequence_idle_microseconds: 5000000
              control_input [ { name: "START" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [0, 1] } ] } ]
              oldest { max_candidate_sequences: 4 }
              state [ { input_name: "IN_STATE" output_name: "OUT_STATE" data_type: TYPE_FP32 dims: [-1]
                        initial_state: { name: "init" data_type: TYPE_FP32 dims: [1] zero_data: true } } ]
            }
            instance_group [ { count: 2 kind: KIND_CPU rate_limiter { resources [ { name: "R1" count: 2 } ] priority: 2 } } ]
            parameters { key: "execute_delay_ms" value: { string_value: "10" } }
            model_warmup [ { name: "w" batch_size: 1 inputs { key: "LEN" value: { data_type: TYPE_INT64 dims: [1] random_data: true } } } ]
            optimization { cuda { graphs: true graph_spec [ { batch_size: 1 input { key: "IMAGE" value: { dim: [3, 224, 224] } } } ] } }
            model_transaction_policy { decoupled: false }
            response_cache { enable: true }
        "#;
        let config = parse_config_text(text).unwrap();
        assert_eq!(config.name, "seq");
        assert_eq!(config.input[0].format, Format::Nchw as i32);
        assert!(config.input[1].optional);
        assert_eq!(config.parameters["execute_delay_ms"].string_value, "10");
        assert!(matches!(
            config.version_policy.as_ref().unwrap().policy_choice,
            Some(PolicyChoice::Specific(ref s)) if s.versions == vec![1, 3]
        ));
        let mut config = config;
        normalize(&mut config, &[]);
        validate(&config, &source("seq"), &[]).unwrap();
    }

    #[test]
    fn list_colons_are_optional() {
        assert_eq!(
            colons_before_lists("input [ { name: \"a [b\" dims: [1] } ] # x [\noutput # c\n [ ]"),
            "input: [ { name: \"a [b\" dims: [1] } ] # x [\noutput: # c\n [ ]"
        );
        // Values and numbers before '[' are not field names.
        let odd = "a: B [ ] 1e5 [ 'it''s' [";
        assert_eq!(colons_before_lists(odd), odd);
        assert!(matches!(
            colons_before_lists("name: \"x\""),
            Cow::Borrowed(_)
        ));
        let with = parse_config_text("input: [ { name: \"A\" } ] output { name: \"B\" }").unwrap();
        let without =
            parse_config_text("input [ { name: \"A\" } ] output [ { name: \"B\" } ]").unwrap();
        assert_eq!(with, without);
    }

    #[test]
    fn syntax_errors_say_where() {
        let text = "name: \"m\"\ninput [ { name: \"A\" dims: [ 1 ] } ]\n  max_batch_size: @\n";
        let e = parse_config_text(text).unwrap_err();
        assert_eq!(e.code(), crate::core::Code::InvalidArg);
        assert!(
            e.message()
                .starts_with("cannot parse protobuf text format at line 3, column 19: "),
            "{}",
            e.message()
        );
        // Columns count characters, and the colon inserted before a list
        // does not shift them.
        let e = parse_config_text("input [ { name: \"é\" dims: [ 1 } ]").unwrap_err();
        assert!(
            e.message().contains("at line 1, column 31: "),
            "{}",
            e.message()
        );
    }

    #[test]
    fn arbitrary_text_never_panics() {
        // A tiny deterministic generator over the characters that matter to
        // the lexing pass; the fuzz target covers the rest.
        let alphabet: Vec<char> = "input[]{}:#\"'\\\n 1e5._-éname,;<>dims".chars().collect();
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..2000 {
            let len = (state % 40) as usize;
            let text: String = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize]
                })
                .collect();
            let rewritten = colons_before_lists(&text);
            assert_eq!(rewritten.replace(':', ""), text.replace(':', ""));
            let _ = parse_config_text(&text);
        }
    }

    #[test]
    fn parse_errors_are_reported() {
        let err = parse_config_text("name: \"x\"\nmax_batch_sise: 8\n").unwrap_err();
        assert!(
            err.message().contains("max_batch_sise"),
            "{}",
            err.message()
        );
        let err = parse_config_text("input [ { data_type: TYPE_INT33 } ]").unwrap_err();
        assert!(err.message().contains("TYPE_INT33"), "{}", err.message());
        assert!(parse_config_text("input [ { name: \"a\" ").is_err());
        assert!(parse_config_text("max_batch_size: 99999999999").is_err());
    }

    #[test]
    fn json_round_trip_keeps_defaults_and_numbers() {
        let mut config = parse_config_text(SIMPLE).unwrap();
        fill_backend_fields(&mut config, Path::new("/nonexistent"));
        normalize(&mut config, &[]);
        let json = config_to_json(&config);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["name"], "simple");
        assert_eq!(value["max_batch_size"], 8);
        // int64 dims are numbers, enums are names, defaults are present.
        assert_eq!(value["input"][0]["dims"], serde_json::json!([16]));
        assert_eq!(value["input"][0]["data_type"], "TYPE_INT32");
        assert_eq!(value["input"][0]["format"], "FORMAT_NONE");
        assert_eq!(value["input"][0]["is_shape_tensor"], false);
        assert_eq!(value["backend"], "tensorflow");
        assert_eq!(value["default_model_filename"], "model.graphdef");
        assert_eq!(value["runtime"], "");
        assert_eq!(value["version_policy"]["latest"]["num_versions"], 1);
        assert_eq!(value["instance_group"][0]["name"], "simple");
        assert_eq!(value["instance_group"][0]["kind"], "KIND_CPU");
        // Triton's CPU default for the tensorflow backend is two instances.
        assert_eq!(value["instance_group"][0]["count"], 2);
        assert_eq!(value["optimization"]["input_pinned_memory"]["enable"], true);
        assert_eq!(value["cc_model_filenames"], serde_json::json!({}));
        // ... and it parses back as the same configuration.
        assert_eq!(parse_config_json(&json).unwrap(), config);
    }

    #[test]
    fn json_override_parses_and_rejects_unknown_fields() {
        let config = parse_config_json(
            r#"{"backend":"identity","max_batch_size":2,
                "input":[{"name":"IN","data_type":"TYPE_FP32","dims":["-1", 4]}],
                "output":[{"name":"OUT","dataType":"TYPE_FP32","dims":[-1,4]}]}"#,
        )
        .unwrap();
        assert_eq!(config.input[0].dims, vec![-1, 4]);
        assert_eq!(config.output[0].data_type, ConfigDataType::TypeFp32 as i32);
        let err = parse_config_json(r#"{"max_batch_size": 1, "inputs": []}"#).unwrap_err();
        assert!(err.message().contains("inputs"), "{}", err.message());
        assert!(parse_config_json(r#"{"max_batch_size": 1} trailing"#).is_err());
    }

    #[test]
    fn normalize_fills_triton_defaults() {
        let mut config = parse_config_text(
            r#"name: "m" backend: "onnxruntime" max_batch_size: 8
               dynamic_batching { }
               instance_group [ { kind: KIND_CPU }, { count: 3 kind: KIND_AUTO } ]"#,
        )
        .unwrap();
        normalize(&mut config, &[]);
        let groups: Vec<(&str, i32, i32)> = config
            .instance_group
            .iter()
            .map(|g| (g.name.as_str(), g.kind, g.count))
            .collect();
        assert_eq!(
            groups,
            vec![
                ("m_0", GroupKind::Cpu as i32, 2),
                ("m_1", GroupKind::Cpu as i32, 3)
            ]
        );
        match &config.scheduling_choice {
            Some(SchedulingChoice::DynamicBatching(db)) => {
                assert_eq!(db.preferred_batch_size, vec![8])
            }
            other => panic!("unexpected scheduling {other:?}"),
        }

        let mut gpu = parse_config_text("name: \"g\" backend: \"x\"").unwrap();
        normalize(&mut gpu, &[0, 1]);
        assert_eq!(gpu.instance_group[0].kind, GroupKind::Gpu as i32);
        assert_eq!(gpu.instance_group[0].gpus, vec![0, 1]);
        assert_eq!(gpu.instance_group[0].count, 1);
    }

    #[test]
    fn backend_fields_follow_platform_file_and_name() {
        let dir = std::env::temp_dir().join(format!(
            "nereid-config-test-{}-backend-fields",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("1")).unwrap();
        fs::write(dir.join("1").join("model.onnx"), b"").unwrap();

        let mut c = ModelConfig {
            platform: "onnxruntime_onnx".into(),
            ..Default::default()
        };
        fill_backend_fields(&mut c, &dir);
        assert_eq!(
            (c.backend.as_str(), c.default_model_filename.as_str()),
            ("onnxruntime", "model.onnx")
        );

        let mut c = ModelConfig::default();
        fill_backend_fields(&mut c, &dir);
        assert_eq!(
            (c.backend.as_str(), c.platform.as_str()),
            ("onnxruntime", "onnxruntime_onnx")
        );

        let mut c = ModelConfig {
            backend: "python".into(),
            ..Default::default()
        };
        fill_backend_fields(&mut c, &dir);
        assert_eq!(
            (c.platform.as_str(), c.default_model_filename.as_str()),
            ("", "model.py")
        );

        let mut c = ModelConfig {
            name: "m.identity".into(),
            ..Default::default()
        };
        fill_backend_fields(&mut c, Path::new("/nonexistent"));
        assert_eq!(
            (c.backend.as_str(), c.default_model_filename.as_str()),
            ("identity", "model.identity")
        );

        let mut c = ModelConfig {
            backend: "identity".into(),
            ..Default::default()
        };
        fill_backend_fields(&mut c, &dir);
        assert_eq!(
            (c.platform.as_str(), c.default_model_filename.as_str()),
            ("", "")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn validation_accepts_simple() {
        let config = completed(SIMPLE, "simple");
        validate(&config, &source("simple"), &[]).unwrap();
    }

    #[test]
    fn validation_errors_name_model_file_and_field() {
        let config = completed(SIMPLE, "simple");
        let err = validate(&config, &source("other"), &[]).unwrap_err();
        assert_eq!(
            err.message(),
            "model 'other' (other/config.pbtxt): unexpected directory name 'other' for model 'simple', directory name must equal model name"
        );

        let err = validation_error(
            "max_batch_size: 8 input [{name: \"INPUT0\" data_type: TYPE_FP32 dims: [8, 0]}] output [{name: \"O\" data_type: TYPE_FP32 dims: [1]}]",
        );
        assert_eq!(
            err,
            "model 'm' (m/config.pbtxt): input 'INPUT0' dims [8,0]: dimension 1 is 0; each dimension must be >= 1, or -1 for a variable-size dimension (with max_batch_size 8 the first dimension of every request tensor is the batch dimension; it is implicit and must not be listed in dims)"
        );

        let err = validation_error(
            "max_batch_size: 8 input [{name: \"IMAGE\" data_type: TYPE_FP32 format: FORMAT_NHWC dims: [8, 224, 224, 3]}] output [{name: \"O\" data_type: TYPE_FP32 dims: [1]}]",
        );
        assert!(
            err.contains("FORMAT_NHWC and needs exactly 3 dims"),
            "{err}"
        );
        assert!(err.contains("must not be listed in dims"), "{err}");

        let cases: &[(&str, &str)] = &[
            ("max_batch_size: -1", "max_batch_size must be >= 0"),
            ("max_batch_size: 1", "declares no inputs"),
            (
                "input [{name: \"A\" data_type: TYPE_FP32 dims: [1]}]",
                "declares no outputs",
            ),
            (
                "input [{name: \"A\" dims: [1]}] output [{name: \"B\" data_type: TYPE_FP32 dims: [1]}]",
                "input 'A' must set data_type",
            ),
            (
                "input [{name: \"A\" data_type: TYPE_FP32}] output [{name: \"B\" data_type: TYPE_FP32 dims: [1]}]",
                "input 'A' must set dims, found none",
            ),
            (
                "input [{data_type: TYPE_FP32 dims: [1]}] output [{name: \"B\" data_type: TYPE_FP32 dims: [1]}]",
                "input #0 has no name",
            ),
            (
                "input [{name: \"A\" data_type: TYPE_FP32 dims: [1]}, {name: \"A\" data_type: TYPE_FP32 dims: [1]}] output [{name: \"B\" data_type: TYPE_FP32 dims: [1]}]",
                "input 'A' is declared more than once",
            ),
            (
                "input [{name: \"A\" data_type: TYPE_FP32 dims: [1]}] output [{name: \"B\" data_type: TYPE_FP32 dims: [-2]}]",
                "output 'B' dims [-2]: dimension 0 is -2",
            ),
            (
                "input [{name: \"A\" data_type: TYPE_FP32 dims: [2, 4, -1, 6] reshape { shape: [8, -1, 3] }}] output [{name: \"B\" data_type: TYPE_FP32 dims: [1]}]",
                "do not hold the same number of elements",
            ),
            (
                "input [{name: \"A\" data_type: TYPE_FP32 dims: [1] reshape { shape: [] }}] output [{name: \"B\" data_type: TYPE_FP32 dims: [1]}]",
                "empty reshape",
            ),
            (
                "version_policy { latest { num_versions: 0 } } input [{name: \"A\" data_type: TYPE_FP32 dims: [1]}] output [{name: \"B\" data_type: TYPE_FP32 dims: [1]}]",
                "num_versions must be >= 1, found 0",
            ),
            (
                "version_policy { specific { } } input [{name: \"A\" data_type: TYPE_FP32 dims: [1]}] output [{name: \"B\" data_type: TYPE_FP32 dims: [1]}]",
                "specific must list at least one version",
            ),
            (
                "instance_group [{kind: KIND_CPU gpus: [0]}] input [{name: \"A\" data_type: TYPE_FP32 dims: [1]}] output [{name: \"B\" data_type: TYPE_FP32 dims: [1]}]",
                "has kind KIND_CPU but lists gpus [0]",
            ),
            (
                "instance_group [{kind: KIND_GPU}] input [{name: \"A\" data_type: TYPE_FP32 dims: [1]}] output [{name: \"B\" data_type: TYPE_FP32 dims: [1]}]",
                "has kind KIND_GPU but no GPUs are available",
            ),
            (
                "max_batch_size: 4 dynamic_batching { preferred_batch_size: [8] } input [{name: \"A\" data_type: TYPE_FP32 dims: [1]}] output [{name: \"B\" data_type: TYPE_FP32 dims: [1]}]",
                "preferred_batch_size 8 must be between 1 and max_batch_size (4)",
            ),
            (
                "platform: \"ensemble\" input [{name: \"A\" data_type: TYPE_FP32 dims: [1]}] output [{name: \"B\" data_type: TYPE_FP32 dims: [1]}]",
                "needs an ensemble_scheduling section",
            ),
            (
                "platform: \"ensemble\" ensemble_scheduling { step [{model_name: \"x\"}] } model_warmup [{name: \"w\" batch_size: 1 inputs { key: \"A\" value: { data_type: TYPE_FP32 dims: [1] zero_data: true } } }] input [{name: \"A\" data_type: TYPE_FP32 dims: [1]}] output [{name: \"B\" data_type: TYPE_FP32 dims: [1]}]",
                "an ensemble must not set model_warmup",
            ),
            (
                "platform: \"ensemble\" ensemble_scheduling { step [{model_name: \"x\"}] } optimization { priority: PRIORITY_MAX } input [{name: \"A\" data_type: TYPE_FP32 dims: [1]}] output [{name: \"B\" data_type: TYPE_FP32 dims: [1]}]",
                "an ensemble must not set optimization",
            ),
        ];
        for (text, expected) in cases {
            let err = validation_error(text);
            assert!(err.starts_with("model 'm' (m/config.pbtxt): "), "{err}");
            assert!(
                err.contains(expected),
                "{text}\n=> {err}\nexpected: {expected}"
            );
        }
    }

    #[test]
    fn reshape_rules() {
        let ok = [
            "max_batch_size: 2 input [{name: \"A\" data_type: TYPE_FP32 dims: [1] reshape { shape: [] }}]",
            "input [{name: \"A\" data_type: TYPE_FP32 dims: [2, 4, -1, 6] reshape { shape: [8, -1, 1, 6] }}]",
            "input [{name: \"A\" data_type: TYPE_FP32 dims: [2, 3] reshape { shape: [6] }}]",
        ];
        for text in ok {
            let text = format!("{text} output [{{name: \"B\" data_type: TYPE_FP32 dims: [1]}}]");
            let config = completed(&text, "m");
            validate(&config, &source("m"), &[]).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn batch_dimension_hints() {
        assert_eq!(
            batch_dimension_hint(8, &[16], &[16]).as_deref(),
            Some(
                "the model batches (max_batch_size 8), so the shape must start with the batch dimension: expected [batch,16]"
            )
        );
        assert!(
            batch_dimension_hint(0, &[16], &[1, 16])
                .unwrap()
                .contains("does not batch")
        );
        assert_eq!(batch_dimension_hint(8, &[16], &[1, 15]), None);
        assert_eq!(batch_dimension_hint(0, &[16], &[15]), None);
        assert!(batch_dimension_hint(8, &[-1, 3], &[7, 3]).is_some());
    }

    /// An ensemble over INT32 `X` [4] -> `Y` [4] (batching up to `mbs`)
    /// with one step of version `version` of model `m`, mapped by `maps`.
    fn one_step_ensemble(mbs: i32, version: i64, maps: &str) -> ModelConfig {
        parse_config_text(&format!(
            "name: \"e\" platform: \"ensemble\" max_batch_size: {mbs} input [{{name: \"X\" data_type: TYPE_INT32 dims: [4]}}] output [{{name: \"Y\" data_type: TYPE_INT32 dims: [4]}}] ensemble_scheduling {{ step [ {{ model_name: \"m\" model_version: {version} {maps} }} ] }}"
        ))
        .unwrap()
    }

    #[test]
    fn ensemble_steps_checked_against_composing_models() {
        let composing = Arc::new(parse_config_text(
            "name: \"m\" max_batch_size: 8 input [{name: \"IN\" data_type: TYPE_INT32 dims: [-1]}, {name: \"OPT\" data_type: TYPE_INT32 dims: [1] optional: true}] output [{name: \"OUT\" data_type: TYPE_INT32 dims: [4]}, {name: \"WIDE\" data_type: TYPE_INT32 dims: [5]}, {name: \"F\" data_type: TYPE_FP32 dims: [4]}]",
        )
        .unwrap());
        let find = |name: &str, version: i64| {
            (name == "m" && (version == -1 || version == 1)).then(|| Arc::clone(&composing))
        };
        let good =
            "input_map { key: \"IN\" value: \"X\" } output_map { key: \"OUT\" value: \"Y\" }";
        validate_ensemble_steps(&one_step_ensemble(8, -1, good), &find).unwrap();
        validate_ensemble_steps(&one_step_ensemble(8, 1, good), &find).unwrap();
        // Triton's L0_infer_zero shape: a non-batching ensemble over a
        // batching model whose dims agree without the batch dimension.
        validate_ensemble_steps(&one_step_ensemble(0, -1, good), &find).unwrap();
        // A batching ensemble over a non-batching model whose dims are the
        // ensemble's full shape.
        let unbatched = Arc::new(parse_config_text(
            "name: \"u\" max_batch_size: 0 input [{name: \"IN\" data_type: TYPE_INT32 dims: [-1, 4]}] output [{name: \"OUT\" data_type: TYPE_INT32 dims: [-1, 4]}]",
        )
        .unwrap());
        let find_unbatched =
            |name: &str, _version: i64| (name == "m").then(|| Arc::clone(&unbatched));
        validate_ensemble_steps(&one_step_ensemble(8, -1, good), &find_unbatched).unwrap();
        let cases = [
            (
                16,
                -1,
                good.to_owned(),
                "step 1 'm': the ensemble batches up to 16 but model 'm' has max_batch_size 8; every composing model of a batching ensemble must batch at least as much",
            ),
            (
                8,
                3,
                good.to_owned(),
                "step 1 'm': model 'm' version 3 is not loaded (an ensemble loads after its composing models)",
            ),
            (
                8,
                -1,
                good.replace("\"IN\"", "\"NOPE\""),
                "step 1 'm': input_map names input 'NOPE', which model 'm' does not have (inputs: 'IN', 'OPT')",
            ),
            (
                8,
                -1,
                good.replace("\"IN\"", "\"OPT\""),
                "step 1 'm': input_map leaves model input 'IN' unmapped",
            ),
            (
                8,
                -1,
                good.replace("\"OUT\"", "\"NOPE\""),
                "step 1 'm': output_map names output 'NOPE', which model 'm' does not have (outputs: 'OUT', 'WIDE', 'F')",
            ),
            (
                8,
                -1,
                good.replace("\"OUT\"", "\"F\""),
                "ensemble tensor 'Y': step 1 'm' output 'F' is TYPE_FP32 but ensemble output 'Y' takes TYPE_INT32",
            ),
            (
                8,
                -1,
                good.replace("\"OUT\"", "\"WIDE\""),
                "ensemble tensor 'Y': step 1 'm' output 'WIDE' has shape [-1,5] but ensemble output 'Y' takes shape [-1,4] (batch dimension shown as -1)",
            ),
            (
                8,
                -1,
                format!("input_map {{ key: \"OPT\" value: \"X\" }} {good}"),
                "ensemble tensor 'X': ensemble input 'X' has shape [-1,4] but step 1 'm' input 'OPT' takes shape [-1,1] (batch dimension shown as -1)",
            ),
            (
                0,
                -1,
                format!("input_map {{ key: \"OPT\" value: \"X\" }} {good}"),
                "ensemble tensor 'X': ensemble input 'X' has shape [4] but step 1 'm' input 'OPT' takes shape [-1,1] (batch dimension shown as -1)",
            ),
        ];
        for (mbs, version, maps, expected) in cases {
            let config = one_step_ensemble(mbs, version, &maps);
            assert_eq!(
                validate_ensemble_steps(&config, &find)
                    .unwrap_err()
                    .message(),
                format!("ensemble 'e': {expected}"),
                "{maps}"
            );
        }
    }
}
