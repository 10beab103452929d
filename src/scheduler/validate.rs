//! Checks a request against the model configuration before it is queued,
//! and checks what a backend produced before it is returned. The messages
//! follow Triton's wording where clients and users match on it. The
//! `sequence_batching` section is checked here too: its control and state
//! inputs are supplied by the sequence batcher, never by a client.

use crate::core::proto::ModelConfig;
use crate::core::proto::inference::model_config::SchedulingChoice;
use crate::core::proto::inference::model_sequence_batching::control::Kind;
use crate::core::tensor::{byte_size, element_count, shape_to_string, split_bytes_elements};
use crate::core::{Bindings, DataType, Error, InferRequest, Result, Tensor};

/// Triton prefixes request errors with the request id when there is one.
fn prefix(request: &InferRequest) -> String {
    match request.id.as_deref() {
        Some(id) if !id.is_empty() => format!("[request id: {id}] "),
        _ => String::new(),
    }
}

fn quoted_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<String> = names.map(|n| format!("'{n}'")).collect();
    format!("[{}]", items.join(","))
}

/// Validates `request` for the model of `config`; returns the names of the
/// outputs to produce, in response order.
pub fn validate(config: &ModelConfig, request: &InferRequest) -> Result<Vec<String>> {
    let p = prefix(request);
    let model = &config.name;

    let mut outputs: Vec<String> = Vec::with_capacity(request.outputs.len());
    for o in &request.outputs {
        if !config.output.iter().any(|c| c.name == o.name) {
            return Err(Error::invalid_arg(format!(
                "{p}unexpected inference output '{}' for model '{model}'",
                o.name
            )));
        }
        if outputs.contains(&o.name) {
            return Err(Error::invalid_arg(format!(
                "{p}output '{}' is requested more than once for model '{model}'",
                o.name
            )));
        }
        outputs.push(o.name.clone());
    }
    if outputs.is_empty() {
        outputs = config.output.iter().map(|o| o.name.clone()).collect();
    }

    for (i, t) in request.inputs.iter().enumerate() {
        if let Some(what) = supplied_input(config, &t.name) {
            return Err(Error::invalid_arg(format!(
                "{p}input '{}' of model '{model}' is a sequence {what}: the sequence batcher supplies it, a request must not",
                t.name
            )));
        }
        if !config.input.iter().any(|c| c.name == t.name) {
            return Err(Error::invalid_arg(format!(
                "{p}unexpected inference input '{}' for model '{model}'",
                t.name
            )));
        }
        if request.inputs[..i].iter().any(|u| u.name == t.name) {
            return Err(Error::invalid_arg(format!(
                "{p}input '{}' is given more than once for model '{model}'",
                t.name
            )));
        }
    }
    let required = config.input.iter().filter(|c| !c.optional).count();
    let missing: Vec<&str> = config
        .input
        .iter()
        .filter(|c| !c.optional && !request.inputs.iter().any(|t| t.name == c.name))
        .map(|c| c.name.as_str())
        .collect();
    if !missing.is_empty() {
        let got = quoted_list(request.inputs.iter().map(|t| t.name.as_str()));
        let missing = quoted_list(missing.into_iter());
        let expected = if required == config.input.len() {
            format!("expected {} inputs", config.input.len())
        } else {
            format!(
                "expected number of inputs between {required} and {}",
                config.input.len()
            )
        };
        return Err(Error::invalid_arg(format!(
            "{p}{expected} but got {} inputs for model '{model}'. Got inputs {got}, but missing required inputs {missing}. Please provide all required inputs.",
            request.inputs.len()
        )));
    }

    let batching = config.max_batch_size > 0;
    let mut batch_size: Option<i64> = None;
    for t in &request.inputs {
        let c = config
            .input
            .iter()
            .find(|c| c.name == t.name)
            .expect("checked above");
        if let Some(&d) = t.shape.iter().find(|&&d| d < 0) {
            return Err(Error::invalid_arg(format!(
                "{p}input '{}' for model '{model}' has invalid dimension {d} in shape {}; every dimension must be 0 or more",
                t.name,
                shape_to_string(&t.shape)
            )));
        }
        if batching && !c.is_shape_tensor {
            let Some(&b) = t.shape.first() else {
                return Err(Error::invalid_arg(format!(
                    "{p}input '{}' has no shape but model requires batch dimension for '{model}'",
                    t.name
                )));
            };
            match batch_size {
                None => batch_size = Some(b),
                Some(first) if first != b => {
                    return Err(Error::invalid_arg(format!(
                        "{p}input '{}' batch size does not match other inputs for '{model}'",
                        t.name
                    )));
                }
                Some(_) => {}
            }
        }
    }
    if let Some(b) = batch_size
        && b > i64::from(config.max_batch_size)
    {
        return Err(Error::invalid_arg(format!(
            "{p}inference request batch-size must be <= {} for '{model}'",
            config.max_batch_size
        )));
    }

    // BYTES inputs have their elements counted after every other check,
    // last input first: Triton walks a request's inputs in its hash map's
    // order, which for a few inputs is the reverse of arrival, and its tests
    // pin the input that names (L0_input_validation).
    let mut bytes_inputs: Vec<&Tensor> = Vec::new();
    for t in &request.inputs {
        let c = config
            .input
            .iter()
            .find(|c| c.name == t.name)
            .expect("checked above");
        let expected_type = DataType::from_config_enum(c.data_type);
        if expected_type != Some(t.datatype) {
            return Err(Error::invalid_arg(format!(
                "{p}inference input '{}' data-type is '{}', but model '{model}' expects '{}'",
                t.name,
                t.datatype,
                expected_type.map_or("INVALID", DataType::wire_name)
            )));
        }
        let dims = if batching && !c.is_shape_tensor {
            &t.shape[1..]
        } else {
            &t.shape[..]
        };
        let matches =
            dims.len() == c.dims.len() && c.dims.iter().zip(dims).all(|(&e, &a)| e == -1 || e == a);
        if !matches {
            let mut full = Vec::with_capacity(c.dims.len() + 1);
            if batching {
                full.push(-1);
            }
            full.extend_from_slice(&c.dims);
            let note = if batching {
                format!(
                    " NOTE: model '{model}' has max_batch_size {}, so every input's shape starts with the batch dimension, which the config's dims leave out. To list the full shape in dims instead, set max_batch_size to 0.",
                    config.max_batch_size
                )
            } else {
                String::new()
            };
            return Err(Error::invalid_arg(format!(
                "{p}unexpected shape for input '{}' for model '{model}'. Expected {}, got {}.{note}",
                t.name,
                shape_to_string(&full),
                shape_to_string(&t.shape)
            )));
        }
        match request.bindings.device_input(&t.name) {
            Some(device) => check_device_size(&p, model, t, device.len())?,
            None if t.datatype == DataType::Bytes => bytes_inputs.push(t),
            None => check_data_size(&p, model, t)?,
        }
    }
    for t in bytes_inputs.into_iter().rev() {
        check_bytes_input(&p, model, t)?;
    }
    Ok(outputs)
}

/// A BYTES input must hold exactly the elements its shape calls for, each a
/// 4-byte length and that many bytes. Counting stops at the first element
/// too many, as Triton's does, and the messages are Triton's.
fn check_bytes_input(p: &str, model: &str, t: &Tensor) -> Result<()> {
    let name = &t.name;
    let expected = element_count(&t.shape)?;
    let mut rest = &t.data[..];
    let mut checked: u64 = 0;
    while !rest.is_empty() {
        let Some((len, after)) = rest.split_first_chunk::<4>() else {
            return Err(Error::invalid_arg(format!(
                "{p}incomplete string length indicator for inference input '{name}' for model '{model}', expecting 4 bytes but only {} bytes available",
                rest.len()
            )));
        };
        checked += 1;
        if checked > expected {
            return Err(Error::invalid_arg(format!(
                "{p}unexpected number of string elements {checked} for inference input '{name}' for model '{model}', expecting {expected}"
            )));
        }
        let len = u32::from_le_bytes(*len) as usize;
        if after.len() < len {
            return Err(Error::invalid_arg(format!(
                "{p}incomplete string data for inference input '{name}' for model '{model}', expecting string of length {len} but only {} bytes available",
                after.len()
            )));
        }
        rest = &after[len..];
    }
    if checked != expected {
        return Err(Error::invalid_arg(format!(
            "{p}expected {expected} string elements for inference input '{name}' for model '{model}', got {checked}"
        )));
    }
    Ok(())
}

/// What `name` is when the sequence batcher supplies it: a control input
/// or an implicit state input of `config`.
fn supplied_input(config: &ModelConfig, name: &str) -> Option<&'static str> {
    let Some(SchedulingChoice::SequenceBatching(sb)) = &config.scheduling_choice else {
        return None;
    };
    if sb.control_input.iter().any(|c| c.name == name) {
        Some("control input")
    } else if sb.state.iter().any(|s| s.input_name == name) {
        Some("state input")
    } else {
        None
    }
}

/// Checks `sequence_batching` when the model has one: every control input
/// is named once, clashes with no model input and holds exactly one
/// control of a valid kind (each kind at most once) with a valid encoding
/// (a [false, true] pair for START, END and READY; an integer or string
/// `data_type` for CORRID); every state is named, clashes with no input,
/// has a valid `data_type` and fixed dimensions (its own or its
/// `initial_state`'s). `iterative_sequence` is refused.
pub fn sequence_config(config: &ModelConfig) -> Result<()> {
    let Some(SchedulingChoice::SequenceBatching(sb)) = &config.scheduling_choice else {
        return Ok(());
    };
    let model = &config.name;
    let bad = |what: String| Err(Error::invalid_arg(format!("model '{model}': {what}")));
    let is_input = |name: &str| config.input.iter().any(|i| i.name == name);
    if sb.iterative_sequence {
        return bad("iterative_sequence is not supported by this server".into());
    }
    let mut kinds: Vec<Kind> = Vec::new();
    for (n, ci) in sb.control_input.iter().enumerate() {
        let name = &ci.name;
        if name.is_empty() {
            return bad("a sequence control input has no name".into());
        }
        if is_input(name) {
            return bad(format!(
                "sequence control input '{name}' is also a model input; the sequence batcher supplies it"
            ));
        }
        if sb.control_input[..n].iter().any(|c| &c.name == name) {
            return bad(format!("sequence control input '{name}' is listed twice"));
        }
        let [control] = ci.control.as_slice() else {
            return bad(format!(
                "sequence control input '{name}' must hold exactly one control, it holds {}",
                ci.control.len()
            ));
        };
        let Ok(kind) = Kind::try_from(control.kind) else {
            return bad(format!(
                "sequence control input '{name}' has an unknown kind {}",
                control.kind
            ));
        };
        if kinds.contains(&kind) {
            return bad(format!(
                "more than one sequence control input of kind {}",
                kind.as_str_name()
            ));
        }
        kinds.push(kind);
        let pairs = [
            control.int32_false_true.len(),
            control.fp32_false_true.len(),
            control.bool_false_true.len(),
        ];
        if kind == Kind::ControlSequenceCorrid {
            let allowed = [
                DataType::Uint64,
                DataType::Int64,
                DataType::Uint32,
                DataType::Int32,
                DataType::Bytes,
            ];
            if pairs != [0, 0, 0]
                || !DataType::from_config_enum(control.data_type)
                    .is_some_and(|d| allowed.contains(&d))
            {
                return bad(format!(
                    "sequence control input '{name}' (CONTROL_SEQUENCE_CORRID) needs a data_type of TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 or TYPE_STRING and no *_false_true values"
                ));
            }
        } else {
            let mut used = pairs.iter().filter(|&&n| n > 0);
            if used.clone().count() != 1 || used.next() != Some(&2) || control.data_type != 0 {
                return bad(format!(
                    "sequence control input '{name}' ({}) needs exactly one of int32_false_true, fp32_false_true or bool_false_true, with two values, and no data_type",
                    kind.as_str_name()
                ));
            }
        }
    }
    for (n, s) in sb.state.iter().enumerate() {
        let name = &s.input_name;
        if name.is_empty() || s.output_name.is_empty() {
            return bad("a sequence state needs both input_name and output_name".into());
        }
        if is_input(name)
            || sb.control_input.iter().any(|c| &c.name == name)
            || sb.state[..n].iter().any(|o| &o.input_name == name)
        {
            return bad(format!(
                "sequence state input '{name}' clashes with a model input, a control input or another state"
            ));
        }
        if DataType::from_config_enum(s.data_type).is_none() {
            return bad(format!("sequence state '{name}' has no valid data_type"));
        }
        if s.initial_state.len() > 1 {
            return bad(format!(
                "sequence state '{name}' has {} initial_state entries, at most one is supported",
                s.initial_state.len()
            ));
        }
        let dims = match s.initial_state.first() {
            Some(i) if !i.dims.is_empty() => &i.dims,
            _ => &s.dims,
        };
        if dims.iter().any(|&d| d < 0) {
            return bad(format!(
                "sequence state '{name}' has a variable dimension {}; give its initial_state fixed dims",
                shape_to_string(dims)
            ));
        }
    }
    Ok(())
}

/// The tensor's bytes must be exactly what its datatype and shape call for.
fn check_data_size(p: &str, model: &str, t: &Tensor) -> Result<()> {
    match byte_size(t.datatype, &t.shape)? {
        Some(expected) => {
            if t.data.len() as u64 != expected {
                return Err(Error::invalid_arg(format!(
                    "{p}input byte size mismatch for input '{}' for model '{model}'. Expected {expected}, got {}",
                    t.name,
                    t.data.len()
                )));
            }
        }
        None => {
            let expected = element_count(&t.shape)?;
            let got = split_bytes_elements(&t.data)
                .map_err(|e| {
                    Error::invalid_arg(format!(
                        "{p}input '{}' for model '{model}': {}",
                        t.name,
                        e.message()
                    ))
                })?
                .len() as u64;
            if got != expected {
                return Err(Error::invalid_arg(format!(
                    "{p}input '{}' for model '{model}' holds {got} BYTES elements, its shape {} calls for {expected}",
                    t.name,
                    shape_to_string(&t.shape)
                )));
            }
        }
    }
    Ok(())
}

/// An input in GPU memory must hold exactly what its datatype and shape
/// call for; BYTES cannot be read there.
fn check_device_size(p: &str, model: &str, t: &Tensor, len: usize) -> Result<()> {
    match byte_size(t.datatype, &t.shape)? {
        Some(expected) if expected == len as u64 => Ok(()),
        Some(expected) => Err(Error::invalid_arg(format!(
            "{p}input byte size mismatch for input '{}' for model '{model}'. Expected {expected}, got {len}",
            t.name
        ))),
        None => Err(Error::invalid_arg(format!(
            "{p}input '{}' for model '{model}' is BYTES, which this model cannot read from CUDA shared memory",
            t.name
        ))),
    }
}

/// Keeps the `wanted` outputs of what a backend produced, in order, and
/// checks each against the configuration. An output the backend wrote
/// straight into a device sink (empty data, see [`Bindings`]) is checked
/// against the sink's size instead.
pub fn collect_outputs(
    config: &ModelConfig,
    mut produced: Vec<Tensor>,
    wanted: &[String],
    bindings: &Bindings,
) -> Result<Vec<Tensor>> {
    let mut out = Vec::with_capacity(wanted.len());
    for name in wanted {
        let Some(pos) = produced.iter().position(|t| &t.name == name) else {
            // An optional input that was not sent yields no output (identity).
            continue;
        };
        let t = produced.swap_remove(pos);
        let c = config
            .output
            .iter()
            .find(|c| &c.name == name)
            .expect("validated against the config");
        if DataType::from_config_enum(c.data_type) != Some(t.datatype) {
            return Err(Error::internal(format!(
                "model '{}' produced output '{name}' as {}, but its configuration declares {}",
                config.name,
                t.datatype,
                DataType::from_config_enum(c.data_type)
                    .map_or("TYPE_INVALID", DataType::config_name)
            )));
        }
        if t.data.is_empty()
            && let Some(sink) = bindings.sink(name).filter(|s| s.device().is_some())
        {
            let needed = byte_size(t.datatype, &t.shape)?.unwrap_or(0);
            if needed > sink.byte_size() as u64 {
                return Err(Error::internal(format!(
                    "model '{}' wrote {needed} bytes of output '{name}' into the {} bytes of shared memory region '{}'",
                    config.name,
                    sink.byte_size(),
                    sink.region()
                )));
            }
            out.push(t);
            continue;
        }
        check_data_size("", &config.name, &t).map_err(|e| {
            Error::internal(format!(
                "model '{}' produced a malformed output '{name}': {}",
                config.name,
                e.message()
            ))
        })?;
        out.push(t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::proto::ModelInput;
    use crate::core::tensor::push_bytes_element;
    use bytes::Bytes;

    fn strings(name: &str, shape: Vec<i64>, n: usize) -> Tensor {
        let mut data = Vec::new();
        for i in 0..n {
            push_bytes_element(&mut data, i.to_string().as_bytes());
        }
        // Built as the decoders build it: unchecked, validation's job.
        Tensor {
            name: name.into(),
            datatype: DataType::Bytes,
            shape,
            data: Bytes::from(data),
        }
    }

    fn check(inputs: Vec<Tensor>) -> String {
        let config = ModelConfig {
            name: "m".into(),
            input: ["INPUT0", "INPUT1"]
                .map(|name| ModelInput {
                    name: name.into(),
                    data_type: DataType::Bytes.config_enum(),
                    dims: vec![-1],
                    ..Default::default()
                })
                .into(),
            ..Default::default()
        };
        let request = InferRequest {
            inputs,
            ..Default::default()
        };
        validate(&config, &request)
            .unwrap_err()
            .message()
            .to_owned()
    }

    #[test]
    fn bytes_element_counts_name_the_last_input_first_in_tritons_words() {
        assert_eq!(
            check(vec![
                strings("INPUT0", vec![4], 2),
                strings("INPUT1", vec![4], 2)
            ]),
            "expected 4 string elements for inference input 'INPUT1' for model 'm', got 2"
        );
        assert_eq!(
            check(vec![
                strings("INPUT0", vec![4], 6),
                strings("INPUT1", vec![4], 4)
            ]),
            "unexpected number of string elements 5 for inference input 'INPUT0' for model 'm', expecting 4"
        );
        let mut cut = strings("INPUT1", vec![1], 1);
        cut.data = cut.data.slice(..cut.data.len() - 1);
        assert_eq!(
            check(vec![strings("INPUT0", vec![1], 1), cut.clone()]),
            "incomplete string data for inference input 'INPUT1' for model 'm', expecting string of length 1 but only 0 bytes available"
        );
        cut.data = Bytes::from_static(&[1, 0]);
        assert_eq!(
            check(vec![strings("INPUT0", vec![1], 1), cut]),
            "incomplete string length indicator for inference input 'INPUT1' for model 'm', expecting 4 bytes but only 2 bytes available"
        );
    }
}
