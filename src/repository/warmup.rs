//! Model warmup: turns the `model_warmup` entries of a configuration into
//! inference requests that the manager runs on every instance of a version
//! before the version is published as READY.
//!
//! Each entry is validated against the model's inputs when the model loads
//! (known input, same datatype, fully specified dims that fit the input's,
//! one data choice, every required input present, a batch size the model
//! accepts), so a bad entry fails the load with a message naming the sample
//! and the input. The data of an input is, per batch row:
//!
//! - `zero_data`: zero bytes; for BYTES, empty elements;
//! - `random_data`: pseudo-random values from a fixed seed (floating point
//!   in `[0, 1)`, integers over their whole range, booleans 0 or 1); BYTES
//!   elements are empty, as with `zero_data`, since random bytes are rarely
//!   a meaningful string;
//! - `input_data_file`: the raw bytes of `<model dir>/warmup/<file>`, in
//!   wire form (little-endian elements; BYTES as length-prefixed elements),
//!   holding exactly one batch row; it is repeated `batch_size` times.
//!
//! This module only builds requests; it calls `core` and reads files, and
//! knows nothing of schedulers.

use std::path::{Component, Path};

use bytes::Bytes;
use half::{bf16, f16};

use crate::core::proto::ModelConfig;
use crate::core::proto::inference::ModelWarmup;
use crate::core::proto::inference::model_warmup::input::InputDataType;
use crate::core::tensor::{self, shape_to_string, split_bytes_elements};
use crate::core::{DataType, Error, InferRequest, Result, Tensor};

/// The directory under a model directory that holds `input_data_file`s.
pub const WARMUP_DIR: &str = "warmup";

/// One warmup sample, ready to run.
#[derive(Debug, Clone)]
pub struct WarmupSample {
    /// The entry's `name`.
    pub name: String,
    /// How many times it runs on each instance (`count`, at least 1).
    pub count: u32,
    /// The request to run.
    pub request: InferRequest,
}

/// Builds (and validates) the warmup samples of `config`, whose model
/// directory is `model_dir`. An empty list when the model has no warmup.
pub fn build_samples(config: &ModelConfig, model_dir: &Path) -> Result<Vec<WarmupSample>> {
    config
        .model_warmup
        .iter()
        .map(|entry| build_sample(config, model_dir, entry))
        .collect()
}

fn sample_error(config: &ModelConfig, sample: &str, message: impl std::fmt::Display) -> Error {
    Error::invalid_arg(format!(
        "model '{}': warmup sample '{sample}': {message}",
        config.name
    ))
}

fn build_sample(
    config: &ModelConfig,
    model_dir: &Path,
    entry: &ModelWarmup,
) -> Result<WarmupSample> {
    let fail = |message: String| sample_error(config, &entry.name, message);
    if entry.name.is_empty() {
        return Err(sample_error(config, "", "a warmup sample needs a name"));
    }
    let batching = config.max_batch_size > 0;
    let batch = entry.batch_size.max(1);
    if batching && i64::from(batch) > i64::from(config.max_batch_size) {
        return Err(fail(format!(
            "batch_size {} exceeds the model's max_batch_size {}",
            entry.batch_size, config.max_batch_size
        )));
    }
    if !batching && entry.batch_size > 1 {
        return Err(fail(format!(
            "batch_size {} needs a batching model (max_batch_size is 0)",
            entry.batch_size
        )));
    }
    if let Some(missing) = config
        .input
        .iter()
        .find(|i| !i.optional && !entry.inputs.contains_key(&i.name))
    {
        return Err(fail(format!("input '{}' is missing", missing.name)));
    }
    // Inputs in configuration order, so requests (and seeds) do not depend
    // on the map's iteration order.
    let mut names: Vec<&String> = entry.inputs.keys().collect();
    names.sort_by_key(|n| config.input.iter().position(|i| &i.name == *n));
    let mut inputs = Vec::with_capacity(names.len());
    for (position, name) in names.into_iter().enumerate() {
        let fail = |message: String| fail(format!("input '{name}': {message}"));
        let declared = config
            .input
            .iter()
            .find(|i| &i.name == name)
            .ok_or_else(|| fail("the model has no such input".to_owned()))?;
        let input = &entry.inputs[name];
        let datatype = DataType::from_config_enum(input.data_type)
            .ok_or_else(|| fail(format!("invalid data_type {}", input.data_type)))?;
        if input.data_type != declared.data_type {
            let expected = DataType::from_config_enum(declared.data_type)
                .map_or("an invalid type", DataType::config_name);
            return Err(fail(format!(
                "data_type {} does not match the input's {expected}",
                datatype.config_name()
            )));
        }
        if input.dims.iter().any(|&d| d < 0) {
            return Err(fail(format!(
                "dims {} must be fully specified",
                shape_to_string(&input.dims)
            )));
        }
        if !tensor::shape_matches(&declared.dims, &input.dims) {
            return Err(fail(format!(
                "dims {} do not fit the input's dims {}",
                shape_to_string(&input.dims),
                shape_to_string(&declared.dims)
            )));
        }
        let row = match &input.input_data_type {
            None => {
                return Err(fail(
                    "no data: set one of zero_data, random_data or input_data_file".to_owned(),
                ));
            }
            Some(InputDataType::ZeroData(_)) => generated_row(datatype, &input.dims, None),
            Some(InputDataType::RandomData(_)) => {
                let seed = 0x6e65_7265_6964 ^ (position as u64);
                generated_row(datatype, &input.dims, Some(&mut SplitMix(seed)))
            }
            Some(InputDataType::InputDataFile(file)) => {
                file_row(model_dir, file, datatype, &input.dims)
            }
        }
        .map_err(|e| fail(e.message().to_owned()))?;
        let mut shape = Vec::with_capacity(input.dims.len() + 1);
        if batching {
            shape.push(i64::from(batch));
        }
        shape.extend_from_slice(&input.dims);
        let data = Bytes::from(row.repeat(batch as usize));
        inputs.push(
            Tensor::new(name.clone(), datatype, shape, data)
                .map_err(|e| fail(e.message().to_owned()))?,
        );
    }
    Ok(WarmupSample {
        name: entry.name.clone(),
        count: entry.count.max(1),
        request: InferRequest {
            model_name: config.name.clone(),
            id: Some(entry.name.clone()),
            inputs,
            ..InferRequest::default()
        },
    })
}

/// SplitMix64: a tiny, well-mixed generator; warmup data needs variety,
/// not cryptographic quality.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `[0, 1)` with 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One batch row of zero (`random` `None`) or random data.
fn generated_row(
    datatype: DataType,
    dims: &[i64],
    random: Option<&mut SplitMix>,
) -> Result<Vec<u8>> {
    let count = usize::try_from(tensor::element_count(dims)?)
        .map_err(|_| Error::invalid_arg("too many elements"))?;
    let Some(size) = datatype.element_size() else {
        // BYTES: empty elements, each a zero length prefix.
        return Ok(vec![0; count * 4]);
    };
    let Some(rng) = random else {
        return Ok(vec![0; count * size]);
    };
    let mut row = Vec::with_capacity(count * size);
    for _ in 0..count {
        match datatype {
            DataType::Bool => row.push(u8::from(rng.next() & 1 == 1)),
            DataType::Fp16 => row.extend_from_slice(&f16::from_f64(rng.unit()).to_le_bytes()),
            DataType::Bf16 => row.extend_from_slice(&bf16::from_f64(rng.unit()).to_le_bytes()),
            DataType::Fp32 => row.extend_from_slice(&(rng.unit() as f32).to_le_bytes()),
            DataType::Fp64 => row.extend_from_slice(&rng.unit().to_le_bytes()),
            _ => row.extend_from_slice(&rng.next().to_le_bytes()[..size]),
        }
    }
    Ok(row)
}

/// One batch row read from `<model_dir>/warmup/<file>`, checked against the
/// datatype and dims.
fn file_row(model_dir: &Path, file: &str, datatype: DataType, dims: &[i64]) -> Result<Vec<u8>> {
    let relative = Path::new(file);
    if file.is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(Error::invalid_arg(format!(
            "input_data_file '{file}' must be a relative path inside the '{WARMUP_DIR}' directory"
        )));
    }
    let path = model_dir.join(WARMUP_DIR).join(relative);
    let data = std::fs::read(&path).map_err(|e| {
        Error::invalid_arg(format!(
            "cannot read input_data_file '{}': {e}",
            path.display()
        ))
    })?;
    match tensor::byte_size(datatype, dims)? {
        Some(expected) if data.len() as u64 != expected => Err(Error::invalid_arg(format!(
            "input_data_file '{file}' has {} bytes; {datatype} {} needs {expected}",
            data.len(),
            shape_to_string(dims)
        ))),
        Some(_) => Ok(data),
        None => {
            let expected = tensor::element_count(dims)?;
            let got = split_bytes_elements(&data)?.len() as u64;
            if got == expected {
                Ok(data)
            } else {
                Err(Error::invalid_arg(format!(
                    "input_data_file '{file}' holds {got} BYTES elements; {} needs {expected}",
                    shape_to_string(dims)
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::config::parse_config_text;
    use std::fs;
    use std::path::PathBuf;

    const SIMPLE: &str = r#"name: "m" max_batch_size: 4
input [ { name: "A" data_type: TYPE_INT32 dims: [ 3 ] },
        { name: "S" data_type: TYPE_STRING dims: [ 2 ] },
        { name: "F" data_type: TYPE_FP32 dims: [ -1 ] optional: true } ]
output [ { name: "O" data_type: TYPE_INT32 dims: [ 3 ] } ]
"#;

    fn config(warmup: &str) -> ModelConfig {
        parse_config_text(&format!("{SIMPLE}{warmup}")).unwrap()
    }

    struct Dir(PathBuf);

    impl Dir {
        fn new(test: &str) -> Dir {
            let dir =
                std::env::temp_dir().join(format!("nereid-warmup-{}-{test}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join(WARMUP_DIR)).unwrap();
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn error(warmup: &str, dir: &Path) -> String {
        build_samples(&config(warmup), dir)
            .unwrap_err()
            .message()
            .to_owned()
    }

    #[test]
    fn zero_and_random_data_fill_every_batch_row() {
        let dir = Dir::new("data");
        let samples = build_samples(
            &config(
                r#"model_warmup [ { name: "zeros" batch_size: 2 count: 3
                   inputs { key: "A" value { data_type: TYPE_INT32 dims: [ 3 ] zero_data: true } }
                   inputs { key: "S" value { data_type: TYPE_STRING dims: [ 2 ] random_data: true } } },
                 { name: "random"
                   inputs { key: "S" value { data_type: TYPE_STRING dims: [ 2 ] zero_data: true } }
                   inputs { key: "F" value { data_type: TYPE_FP32 dims: [ 5 ] random_data: true } }
                   inputs { key: "A" value { data_type: TYPE_INT32 dims: [ 3 ] random_data: true } } } ]"#,
            ),
            &dir.0,
        )
        .unwrap();
        assert_eq!(samples.len(), 2);
        let zeros = &samples[0];
        assert_eq!((zeros.name.as_str(), zeros.count), ("zeros", 3));
        assert_eq!(zeros.request.model_name, "m");
        let a = &zeros.request.inputs[0];
        assert_eq!((a.name.as_str(), a.shape.as_slice()), ("A", &[2, 3][..]));
        assert!(a.data.iter().all(|&b| b == 0) && a.data.len() == 24);
        let s = &zeros.request.inputs[1];
        assert_eq!(
            (s.datatype, s.shape.as_slice()),
            (DataType::Bytes, &[2, 2][..])
        );
        assert_eq!(split_bytes_elements(&s.data).unwrap(), vec![&b""[..]; 4]);

        let random = &samples[1];
        assert_eq!(random.count, 1, "count 0 means once");
        let names: Vec<&str> = random
            .request
            .inputs
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(names, ["A", "S", "F"], "configuration order");
        let f = &random.request.inputs[2];
        assert_eq!(f.shape, [1, 5]);
        let values: Vec<f32> = f
            .data
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)), "{values:?}");
        assert!(values.windows(2).any(|w| w[0] != w[1]), "{values:?}");
        let again = build_samples(&config(""), &dir.0).unwrap();
        assert!(again.is_empty());
    }

    #[test]
    fn input_data_file_is_one_row_repeated() {
        let dir = Dir::new("file");
        let row: Vec<u8> = [1i32, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        fs::write(dir.0.join(WARMUP_DIR).join("a.bin"), &row).unwrap();
        let mut strings = Vec::new();
        tensor::push_bytes_element(&mut strings, b"x");
        tensor::push_bytes_element(&mut strings, b"yz");
        fs::write(dir.0.join(WARMUP_DIR).join("s.bin"), &strings).unwrap();
        let samples = build_samples(
            &config(
                r#"model_warmup [ { name: "files" batch_size: 3
                   inputs { key: "A" value { data_type: TYPE_INT32 dims: [ 3 ] input_data_file: "a.bin" } }
                   inputs { key: "S" value { data_type: TYPE_STRING dims: [ 2 ] input_data_file: "s.bin" } } } ]"#,
            ),
            &dir.0,
        )
        .unwrap();
        let a = &samples[0].request.inputs[0];
        assert_eq!(a.shape, [3, 3]);
        assert_eq!(a.data.as_ref(), row.repeat(3).as_slice());
        let s = &samples[0].request.inputs[1];
        assert_eq!(split_bytes_elements(&s.data).unwrap().len(), 6);

        fs::write(dir.0.join(WARMUP_DIR).join("short.bin"), &row[..8]).unwrap();
        let cases = [
            (
                "S",
                "zero_data: true",
                "A",
                "short.bin",
                "input 'A': input_data_file 'short.bin' has 8 bytes; INT32 [3] needs 12",
            ),
            (
                "A",
                "zero_data: true",
                "S",
                "../a.bin",
                "input 'S': input_data_file '../a.bin' must be a relative path inside the 'warmup' directory",
            ),
            (
                "A",
                "zero_data: true",
                "S",
                "none.bin",
                "input 'S': cannot read input_data_file",
            ),
        ];
        for (other, data, input, file, expected) in cases {
            let declared = |name: &str| {
                if name == "A" {
                    ("TYPE_INT32", 3)
                } else {
                    ("TYPE_STRING", 2)
                }
            };
            let (other_type, other_dims) = declared(other);
            let (input_type, input_dims) = declared(input);
            let err = error(
                &format!(
                    r#"model_warmup [ {{ name: "file"
                       inputs {{ key: "{other}" value {{ data_type: {other_type} dims: [ {other_dims} ] {data} }} }}
                       inputs {{ key: "{input}" value {{ data_type: {input_type} dims: [ {input_dims} ] input_data_file: "{file}" }} }} }} ]"#
                ),
                &dir.0,
            );
            assert!(
                err.starts_with(&format!("model 'm': warmup sample 'file': {expected}")),
                "{err}"
            );
        }
    }

    fn warmup_input(key: &str, datatype: &str, dims: &str, data: &str) -> String {
        format!(
            r#"inputs {{ key: "{key}" value {{ data_type: {datatype} dims: [ {dims} ] {data} }} }}"#
        )
    }

    #[test]
    fn invalid_entries_name_the_sample_and_input() {
        let dir = Dir::new("invalid");
        let zero = "zero_data: true";
        let both = warmup_input("S", "TYPE_STRING", "2", zero);
        let a = warmup_input("A", "TYPE_INT32", "3", zero);
        let cases = [
            (
                warmup_input("B", "TYPE_INT32", "3", zero),
                "input 'A' is missing",
            ),
            (
                format!("{a} {}", warmup_input("B", "TYPE_INT32", "3", zero)),
                "input 'B': the model has no such input",
            ),
            (
                warmup_input("A", "TYPE_FP32", "3", zero),
                "input 'A': data_type TYPE_FP32 does not match the input's TYPE_INT32",
            ),
            (
                warmup_input("A", "TYPE_INT32", "3", ""),
                "input 'A': no data: set one of zero_data, random_data or input_data_file",
            ),
            (
                warmup_input("A", "TYPE_INT32", "4", zero),
                "input 'A': dims [4] do not fit the input's dims [3]",
            ),
            (
                format!("{a} {}", warmup_input("F", "TYPE_FP32", "-1", zero)),
                "input 'F': dims [-1] must be fully specified",
            ),
            (
                format!("batch_size: 5 {a}"),
                "batch_size 5 exceeds the model's max_batch_size 4",
            ),
        ];
        for (inputs, expected) in cases {
            let warmup = format!(r#"model_warmup [ {{ name: "w" {both} {inputs} }} ]"#);
            assert_eq!(
                error(&warmup, &dir.0),
                format!("model 'm': warmup sample 'w': {expected}"),
                "{warmup}"
            );
        }
        assert_eq!(
            error(&format!("model_warmup [ {{ {both} }} ]"), &dir.0),
            "model 'm': warmup sample '': a warmup sample needs a name"
        );
        let mut unbatched = config("");
        unbatched.max_batch_size = 0;
        unbatched.model_warmup = config(&format!(
            r#"model_warmup [ {{ name: "w" batch_size: 2 {both} {a} }} ]"#
        ))
        .model_warmup;
        assert_eq!(
            build_samples(&unbatched, &dir.0).unwrap_err().message(),
            "model 'm': warmup sample 'w': batch_size 2 needs a batching model (max_batch_size is 0)"
        );
        unbatched.model_warmup[0].batch_size = 1;
        let samples = build_samples(&unbatched, &dir.0).unwrap();
        assert_eq!(
            samples[0].request.inputs[0].shape,
            [3],
            "no batch dimension"
        );
    }
}
