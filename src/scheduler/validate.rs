//! Checks a request against the model configuration before it is queued,
//! and checks what a backend produced before it is returned. The messages
//! follow Triton's wording where clients and users match on it.

use crate::core::proto::ModelConfig;
use crate::core::tensor::{byte_size, element_count, shape_to_string, split_bytes_elements};
use crate::core::{DataType, Error, InferRequest, Result, Tensor};

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
        check_data_size(&p, model, t)?;
    }
    Ok(outputs)
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

/// Keeps the `wanted` outputs of what a backend produced, in order, and
/// checks each against the configuration.
pub fn collect_outputs(
    config: &ModelConfig,
    mut produced: Vec<Tensor>,
    wanted: &[String],
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
