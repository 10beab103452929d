//! How a batch of requests is presented to a backend that needs one
//! contiguous tensor per input: [`gather`] concatenates the requests' inputs
//! along the batch dimension, [`scatter`] splits the outputs back into one
//! set per request.
//!
//! Gathering copies every input once; it is the one copy batching costs,
//! and only backends that need contiguous memory pay it (the default
//! [`super::ModelInstance::execute_batch`]). Scattering copies nothing: each
//! request's outputs are slices of the batch's output buffers.

use bytes::{Bytes, BytesMut};

use super::ExecRequest;
use crate::core::tensor::{shape_to_string, split_bytes_elements};
use crate::core::{DataType, Error, Result, Tensor};

/// The batch rows a request carries: the first dimension of its first
/// input.
pub fn rows(request: &ExecRequest<'_>) -> u64 {
    request
        .inputs
        .first()
        .and_then(|t| t.shape.first())
        .map_or(1, |&b| u64::try_from(b).unwrap_or(0))
}

/// One tensor per input of `batch[0]`, each the concatenation along the
/// first dimension of that input in every request. The scheduler only
/// batches requests whose inputs agree in names, datatypes and non-batch
/// dimensions; a mismatch here is an internal error.
pub fn gather(batch: &[ExecRequest<'_>]) -> Result<Vec<Tensor>> {
    let Some(first) = batch.first() else {
        return Ok(Vec::new());
    };
    first
        .inputs
        .iter()
        .map(|model_input| {
            let parts = batch
                .iter()
                .map(|r| {
                    let t = r.input(&model_input.name)?;
                    if t.datatype != model_input.datatype
                        || t.shape.get(1..) != model_input.shape.get(1..)
                        || t.shape.is_empty()
                    {
                        return Err(Error::internal(format!(
                            "cannot batch input '{}': {} {} and {} {} differ beyond the batch dimension",
                            model_input.name,
                            model_input.datatype,
                            shape_to_string(&model_input.shape),
                            t.datatype,
                            shape_to_string(&t.shape)
                        )));
                    }
                    Ok(t)
                })
                .collect::<Result<Vec<&Tensor>>>()?;
            let total_rows: i64 = parts.iter().map(|t| t.shape[0]).sum();
            let mut shape = model_input.shape.clone();
            shape[0] = total_rows;
            let mut data = BytesMut::with_capacity(parts.iter().map(|t| t.data.len()).sum());
            for t in &parts {
                data.extend_from_slice(&t.data);
            }
            Ok(Tensor {
                name: model_input.name.clone(),
                datatype: model_input.datatype,
                shape,
                data: data.freeze(),
            })
        })
        .collect()
}

/// Splits a batch's outputs into one set per request; `rows[i]` is request
/// `i`'s share of the batch dimension.
pub fn scatter(outputs: Vec<Tensor>, rows: &[u64]) -> Result<Vec<Vec<Tensor>>> {
    let total: u64 = rows.iter().sum();
    let mut per_request: Vec<Vec<Tensor>> = rows
        .iter()
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for output in outputs {
        let batch_dim = output.shape.first().copied().unwrap_or(-1);
        if u64::try_from(batch_dim).ok() != Some(total) {
            return Err(Error::internal(format!(
                "output '{}' has shape {}, but the batch has {total} rows",
                output.name,
                shape_to_string(&output.shape)
            )));
        }
        let bounds = row_bounds(&output, total)?;
        let mut row = 0usize;
        for (share, slot) in rows.iter().zip(per_request.iter_mut()) {
            let end = row + usize::try_from(*share).unwrap_or(usize::MAX);
            let mut shape = output.shape.clone();
            shape[0] = i64::try_from(*share).unwrap_or(i64::MAX);
            slot.push(Tensor {
                name: output.name.clone(),
                datatype: output.datatype,
                shape,
                data: output.data.slice(bounds[row]..bounds[end]),
            });
            row = end;
        }
    }
    Ok(per_request)
}

/// Byte offsets where each of the `rows` rows of `t` starts, plus the end.
fn row_bounds(t: &Tensor, rows: u64) -> Result<Vec<usize>> {
    let rows = usize::try_from(rows).map_err(|_| Error::internal("batch too large"))?;
    let len = t.data.len();
    if rows == 0 {
        return Ok(vec![0]);
    }
    match t.datatype {
        DataType::Bytes => {
            let elements = split_bytes_elements(&t.data)?;
            if elements.len() % rows != 0 {
                return Err(Error::internal(format!(
                    "output '{}' has {} elements, not a multiple of its {rows} rows",
                    t.name,
                    elements.len()
                )));
            }
            let per_row = elements.len() / rows;
            // starts[i]: where element i begins; starts[n]: the end.
            let mut starts = Vec::with_capacity(elements.len() + 1);
            let mut offset = 0usize;
            for e in &elements {
                starts.push(offset);
                offset += 4 + e.len();
            }
            starts.push(offset);
            Ok((0..=rows).map(|r| starts[r * per_row]).collect())
        }
        _ => {
            if !len.is_multiple_of(rows) {
                return Err(Error::internal(format!(
                    "output '{}' has {len} bytes, not a multiple of its {rows} rows",
                    t.name
                )));
            }
            let row = len / rows;
            Ok((0..=rows).map(|i| i * row).collect())
        }
    }
}

/// A tensor of `rows` copies of nothing but zeros shaped like `like` with
/// its batch dimension replaced: the inputs of a filler row.
pub fn zeros_like(like: &Tensor, rows: i64) -> Result<Tensor> {
    let mut shape = like.shape.clone();
    if let Some(first) = shape.first_mut() {
        *first = rows;
    }
    let data = match crate::core::tensor::byte_size(like.datatype, &shape)? {
        Some(size) => Bytes::from(vec![0u8; usize::try_from(size).unwrap_or(0)]),
        None => {
            let count = crate::core::tensor::element_count(&shape)?;
            Bytes::from(vec![0u8; usize::try_from(count * 4).unwrap_or(0)])
        }
    };
    Tensor::new(like.name.clone(), like.datatype, shape, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::tensor::push_bytes_element;
    use crate::core::{CancelFlag, Parameters};

    fn i32s(name: &str, shape: Vec<i64>, v: &[i32]) -> Tensor {
        let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Tensor::new(name, DataType::Int32, shape, Bytes::from(data)).unwrap()
    }

    fn strings(name: &str, shape: Vec<i64>, v: &[&str]) -> Tensor {
        let mut raw = Vec::new();
        for s in v {
            push_bytes_element(&mut raw, s.as_bytes());
        }
        Tensor::new(name, DataType::Bytes, shape, Bytes::from(raw)).unwrap()
    }

    #[test]
    fn gather_then_scatter_round_trips_without_copying_outputs() {
        let p = Parameters::default();
        let c = CancelFlag::default();
        let a = [
            i32s("X", vec![1, 2], &[1, 2]),
            strings("S", vec![1, 1], &["a"]),
        ];
        let b = [
            strings("S", vec![2, 1], &["bb", ""]),
            i32s("X", vec![2, 2], &[3, 4, 5, 6]),
        ];
        let req = |inputs| ExecRequest {
            inputs,
            outputs: &[],
            parameters: &p,
            cancel: &c,
            bindings: &crate::core::NO_BINDINGS,
        };
        let batch = [req(&a[..]), req(&b[..])];
        assert_eq!(rows(&batch[1]), 2);
        let gathered = gather(&batch).unwrap();
        assert_eq!(gathered[0].shape, vec![3, 2]);
        assert_eq!(gathered[1].shape, vec![3, 1]);
        let gathered_x = gathered[0].data.as_ptr();
        let split = scatter(gathered, &[1, 2]).unwrap();
        assert_eq!(split[0][0], a[0]);
        assert_eq!(split[1][0], b[1]);
        assert_eq!(split[0][1], a[1]);
        assert_eq!(split[1][1], b[0]);
        assert_eq!(split[0][0].data.as_ptr(), gathered_x);
    }

    #[test]
    fn mismatches_are_errors() {
        let p = Parameters::default();
        let c = CancelFlag::default();
        let a = [i32s("X", vec![1, 2], &[1, 2])];
        let b = [i32s("X", vec![1, 1], &[3])];
        let req = |inputs| ExecRequest {
            inputs,
            outputs: &[],
            parameters: &p,
            cancel: &c,
            bindings: &crate::core::NO_BINDINGS,
        };
        assert!(gather(&[req(&a[..]), req(&b[..])]).is_err());
        let e = scatter(vec![i32s("Y", vec![2, 1], &[1, 2])], &[1, 2]).unwrap_err();
        assert!(e.message().contains("batch has 3 rows"), "{e}");
    }

    #[test]
    fn zeros_like_fills_bytes_with_empty_elements() {
        let t = zeros_like(&strings("S", vec![1, 2], &["x", "y"]), 3).unwrap();
        assert_eq!(t.shape, vec![3, 2]);
        assert_eq!(split_bytes_elements(&t.data).unwrap().len(), 6);
        let t = zeros_like(&i32s("X", vec![1, 2], &[1, 2]), 2).unwrap();
        assert_eq!(t.data.len(), 16);
    }
}
