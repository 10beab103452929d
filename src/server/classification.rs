//! The classification extension: replacing an output tensor by its top-k
//! entries, each a BYTES element `"<value>:<index>[:<label>]"`.
//!
//! A batching model's output is classified per batch entry, giving shape
//! `[batch, k]`; otherwise the whole tensor gives shape `[k]`. `k` is the
//! requested class count, capped by the number of entries. Values print as
//! C's `std::to_string` prints them (six decimals for floats), as Triton
//! does; the label is the line of the output's `label_filename` at that
//! index, when there is one and it is not empty. An ensemble output without
//! a `label_filename` of its own takes the labels of the composing model
//! output that produces it, as Triton does. Ties keep index order.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use half::{bf16, f16};

use crate::core::proto::ModelConfig;
use crate::core::proto::inference::model_config::SchedulingChoice;
use crate::core::tensor::push_bytes_element;
use crate::core::{DataType, Error, Result, Tensor};
use crate::repository::LoadedModel;

/// Entries per batch entry beyond which classification is refused.
const MAX_ELEMENTS: usize = 1_000_000;

/// Classifies `t`: its top `class_count` entries (per batch entry when
/// `batching`), with labels from `labels` when given.
pub fn classify(
    t: &Tensor,
    class_count: u32,
    batching: bool,
    labels: Option<&[String]>,
) -> Result<Tensor> {
    let unsupported = || {
        Error::invalid_arg(format!(
            "class result not available for output due to unsupported type '{}'",
            t.datatype
        ))
    };
    let size = match t.datatype {
        DataType::Bool | DataType::Bytes => return Err(unsupported()),
        dt => dt.element_size().ok_or_else(unsupported)?,
    };
    let batch = match t.shape.first() {
        Some(&b) if batching => Some(usize::try_from(b).unwrap_or(0)),
        _ => None,
    };
    let total = t.data.len() / size;
    let per_entry = match batch {
        Some(b) if b > 0 => total / b,
        Some(_) => 0,
        None => total,
    };
    if per_entry > MAX_ELEMENTS {
        return Err(Error::invalid_arg("classification output tensor too large"));
    }
    let k = per_entry.min(class_count as usize);
    let mut out = Vec::new();
    // With no entries to pick from there is nothing to write, however large
    // the batch dimension (a shape like [n, 0]).
    let entries = if k == 0 { 0 } else { batch.unwrap_or(1) };
    for entry in 0..entries {
        let start = entry * per_entry * size;
        let bytes = &t.data[start..start + per_entry * size];
        for (value, index) in top_k(t.datatype, bytes, k) {
            let mut s = format!("{value}:{index}");
            if let Some(label) = labels.and_then(|l| l.get(index)).filter(|l| !l.is_empty()) {
                s.push(':');
                s.push_str(label);
            }
            push_bytes_element(&mut out, s.as_bytes());
        }
    }
    let mut shape = Vec::with_capacity(2);
    if let Some(b) = batch {
        shape.push(b as i64);
    }
    shape.push(k as i64);
    Ok(Tensor {
        name: t.name.clone(),
        datatype: DataType::Bytes,
        shape,
        data: Bytes::from(out),
    })
}

/// The `k` largest entries as (printed value, index), largest first.
fn top_k(datatype: DataType, bytes: &[u8], k: usize) -> Vec<(String, usize)> {
    macro_rules! ints {
        ($t:ty, $n:literal) => {{
            let v: Vec<$t> = bytes
                .chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")))
                .collect();
            pick(&v, k, |x| x.to_string())
        }};
    }
    macro_rules! floats {
        ($n:literal, $conv:expr) => {{
            let v: Vec<f64> = bytes
                .chunks_exact($n)
                .map(|c| $conv(c.try_into().expect("chunk size")))
                .collect();
            pick(&v, k, |x| format!("{x:.6}"))
        }};
    }
    match datatype {
        DataType::Uint8 => ints!(u8, 1),
        DataType::Uint16 => ints!(u16, 2),
        DataType::Uint32 => ints!(u32, 4),
        DataType::Uint64 => ints!(u64, 8),
        DataType::Int8 => ints!(i8, 1),
        DataType::Int16 => ints!(i16, 2),
        DataType::Int32 => ints!(i32, 4),
        DataType::Int64 => ints!(i64, 8),
        DataType::Fp16 => floats!(2, |b| f64::from(f16::from_le_bytes(b))),
        DataType::Bf16 => floats!(2, |b| f64::from(bf16::from_le_bytes(b))),
        DataType::Fp32 => floats!(4, |b| f64::from(f32::from_le_bytes(b))),
        DataType::Fp64 => floats!(8, f64::from_le_bytes),
        DataType::Bool | DataType::Bytes => Vec::new(),
    }
}

/// Selects the `k` largest values (NaN below everything, ties by index)
/// without sorting all of them.
fn pick<T: PartialOrd + Copy>(
    values: &[T],
    k: usize,
    show: impl Fn(T) -> String,
) -> Vec<(String, usize)> {
    if k == 0 {
        return Vec::new();
    }
    // Only NaN is unordered against itself.
    let is_nan = |x: T| x.partial_cmp(&x).is_none();
    let order = |&a: &usize, &b: &usize| -> Ordering {
        let (x, y) = (values[a], values[b]);
        let by_value = match (is_nan(x), is_nan(y)) {
            (false, false) => y.partial_cmp(&x).unwrap_or(Ordering::Equal),
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (true, true) => Ordering::Equal,
        };
        by_value.then(a.cmp(&b))
    };
    let mut idx: Vec<usize> = (0..values.len()).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
    }
    idx.sort_unstable_by(order);
    idx.into_iter().map(|i| (show(values[i]), i)).collect()
}

/// Reads a label file: one label per line, as Triton reads it.
fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::internal(format!(
            "unable to read label file '{}': {e}",
            path.display()
        ))
    })?;
    Ok(text.lines().map(str::to_owned).collect())
}

type OutputLabels = HashMap<String, Option<Arc<Vec<String>>>>;

/// The labels read for one loaded model version; the weak pointer tells a
/// reloaded version (a new `LoadedModel`) from the one they were read for.
type VersionLabels = (Weak<LoadedModel>, OutputLabels);

/// Label files, read once per loaded model version and output.
#[derive(Debug, Default)]
pub struct LabelCache {
    /// Keyed by model and version.
    entries: Mutex<HashMap<(String, i64), VersionLabels>>,
}

impl LabelCache {
    /// The labels of output `output` of `model`: those of the label file
    /// its configuration names; for an ensemble output that names none,
    /// those of the composing model output that produces it (as Triton,
    /// which fills an ensemble's missing labels from its steps), found
    /// through `composing` (model name and version, -1 for the highest).
    pub fn labels(
        &self,
        model: &Arc<LoadedModel>,
        output: &str,
        composing: &dyn Fn(&str, i64) -> Option<Arc<LoadedModel>>,
    ) -> Result<Option<Arc<Vec<String>>>> {
        if let Some(found) = self.cached(model, output) {
            return Ok(found);
        }
        // Read without the lock held: a composing model's labels are looked
        // up (and cached) through this same cache.
        // A name the configuration lacks is refused later, when the request
        // is validated; it is not cached, so clients cannot grow the cache.
        let Some(config) = model.config.output.iter().find(|o| o.name == output) else {
            return Ok(None);
        };
        let file = Some(config.label_filename.as_str()).filter(|f| !f.is_empty());
        let labels = match file {
            Some(f) => Some(Arc::new(read_labels(&model.model_path.join(f))?)),
            None => match producer(&model.config, output) {
                Some((name, version, produced)) => match composing(name, version) {
                    Some(step) => self.labels(&step, produced, composing)?,
                    None => None,
                },
                None => None,
            },
        };
        let mut entries = self.lock();
        let slot = Self::slot(&mut entries, model);
        slot.1.insert(output.to_owned(), labels.clone());
        Ok(labels)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i64), VersionLabels>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached labels of `output` of `model`, if they were looked up for
    /// this loaded version.
    fn cached(&self, model: &Arc<LoadedModel>, output: &str) -> Option<Option<Arc<Vec<String>>>> {
        let mut entries = self.lock();
        entries.retain(|_, (weak, _)| weak.strong_count() > 0);
        Self::slot(&mut entries, model).1.get(output).cloned()
    }

    /// The entry of `model`, emptied when it was kept for an earlier load
    /// of the same name and version.
    fn slot<'a>(
        entries: &'a mut HashMap<(String, i64), VersionLabels>,
        model: &Arc<LoadedModel>,
    ) -> &'a mut VersionLabels {
        let slot = entries
            .entry((model.name.clone(), model.version))
            .or_insert_with(|| (Arc::downgrade(model), HashMap::new()));
        if !Weak::ptr_eq(&slot.0, &Arc::downgrade(model)) {
            *slot = (Arc::downgrade(model), HashMap::new());
        }
        slot
    }
}

/// The ensemble step that produces ensemble tensor `output`: its model's
/// name and version, and the name of that model's output.
fn producer<'a>(config: &'a ModelConfig, output: &str) -> Option<(&'a str, i64, &'a str)> {
    let Some(SchedulingChoice::EnsembleScheduling(ensembling)) = &config.scheduling_choice else {
        return None;
    };
    ensembling.step.iter().find_map(|step| {
        step.output_map
            .iter()
            .find(|(_, tensor)| tensor.as_str() == output)
            .map(|(produced, _)| {
                (
                    step.model_name.as_str(),
                    step.model_version,
                    produced.as_str(),
                )
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp32(shape: Vec<i64>, v: &[f32]) -> Tensor {
        let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Tensor::new("OUT", DataType::Fp32, shape, Bytes::from(data)).unwrap()
    }

    fn strings(t: &Tensor) -> Vec<String> {
        crate::core::tensor::split_bytes_elements(&t.data)
            .unwrap()
            .into_iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn top_k_with_labels_per_batch_entry() {
        let t = fp32(vec![2, 3], &[0.1, 0.7, 0.2, 5.0, -1.0, 5.0]);
        let labels = vec!["zero".to_owned(), String::new(), "two".to_owned()];
        let c = classify(&t, 2, true, Some(&labels)).unwrap();
        assert_eq!(c.shape, vec![2, 2]);
        assert_eq!(c.datatype, DataType::Bytes);
        assert_eq!(
            strings(&c),
            [
                "0.700000:1",
                "0.200000:2:two",
                "5.000000:0:zero",
                "5.000000:2:two"
            ]
        );
        // Not batching: the whole tensor; k capped by the entry count.
        let c = classify(&t, 10, false, None).unwrap();
        assert_eq!(c.shape, vec![6]);
        assert_eq!(strings(&c)[0], "5.000000:3");
        assert_eq!(strings(&c)[5], "-1.000000:4");
    }

    #[test]
    fn integers_nan_and_unsupported_types() {
        let data: Vec<u8> = [3i32, -7, 9].iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = Tensor::new("O", DataType::Int32, vec![3], Bytes::from(data)).unwrap();
        assert_eq!(
            strings(&classify(&t, 2, false, None).unwrap()),
            ["9:2", "3:0"]
        );
        let t = fp32(vec![3], &[f32::NAN, 1.0, 2.0]);
        assert_eq!(
            strings(&classify(&t, 3, false, None).unwrap())[..2],
            ["2.000000:2", "1.000000:1"]
        );
        let t = Tensor::new("B", DataType::Bool, vec![1], Bytes::from_static(&[1])).unwrap();
        assert_eq!(
            classify(&t, 1, false, None).unwrap_err().message(),
            "class result not available for output due to unsupported type 'BOOL'"
        );
    }
}
