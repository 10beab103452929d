//! Shapes and tensors. A tensor's bytes are kept in the wire's raw form:
//! little-endian elements, row-major; BYTES as a 4-byte little-endian length
//! before each element. The bytes live in a [`bytes::Bytes`], so a tensor can
//! borrow a slice of the request body without copying it.

use bytes::Bytes;

use super::datatype::DataType;
use super::error::{Error, Result};

/// Number of elements of a fully specified shape, or an error if a dimension
/// is negative or the product overflows.
pub fn element_count(shape: &[i64]) -> Result<u64> {
    shape.iter().try_fold(1u64, |acc, &d| {
        let d = u64::try_from(d).map_err(|_| {
            Error::invalid_arg(format!(
                "shape {} has a negative dimension",
                shape_to_string(shape)
            ))
        })?;
        acc.checked_mul(d).ok_or_else(|| {
            Error::invalid_arg(format!(
                "shape {} has more elements than can be addressed",
                shape_to_string(shape)
            ))
        })
    })
}

/// Byte size of a tensor of fixed-size `datatype` and `shape`; `None` for
/// BYTES, whose size depends on the content.
pub fn byte_size(datatype: DataType, shape: &[i64]) -> Result<Option<u64>> {
    let Some(elem) = datatype.element_size() else {
        return Ok(None);
    };
    let count = element_count(shape)?;
    count.checked_mul(elem as u64).map(Some).ok_or_else(|| {
        Error::invalid_arg(format!(
            "{} tensor of shape {} is larger than can be addressed",
            datatype,
            shape_to_string(shape)
        ))
    })
}

/// Formats a shape the way Triton's messages do: `[1,16]`.
pub fn shape_to_string(shape: &[i64]) -> String {
    let mut s = String::with_capacity(2 + shape.len() * 3);
    s.push('[');
    for (i, d) in shape.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&d.to_string());
    }
    s.push(']');
    s
}

/// Whether `actual` (fully specified) matches `expected`, where `-1` in
/// `expected` matches any size.
pub fn shape_matches(expected: &[i64], actual: &[i64]) -> bool {
    expected.len() == actual.len()
        && expected
            .iter()
            .zip(actual)
            .all(|(&e, &a)| e == -1 || e == a)
}

/// Splits BYTES raw data into its elements, checking every length prefix.
pub fn split_bytes_elements(data: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(Error::invalid_arg(
                "BYTES tensor data ends inside a 4-byte length prefix",
            ));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        if rest.len() < len {
            return Err(Error::invalid_arg(format!(
                "BYTES element declares {len} bytes but only {} remain",
                rest.len()
            )));
        }
        out.push(&rest[..len]);
        rest = &rest[len..];
    }
    Ok(out)
}

/// Appends one BYTES element (length prefix + bytes) to `out`.
pub fn push_bytes_element(out: &mut Vec<u8>, element: &[u8]) {
    let len = u32::try_from(element.len()).expect("BYTES element longer than 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(element);
}

/// A named tensor with its datatype, shape and raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Tensor name as the model declares it.
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Fully specified shape (batch dimension included when batching).
    pub shape: Vec<i64>,
    /// Raw bytes in wire form.
    pub data: Bytes,
}

impl Tensor {
    /// Builds a tensor, checking that `data` has the size the datatype and
    /// shape call for (or, for BYTES, that it holds exactly as many
    /// well-formed elements as the shape has).
    pub fn new(
        name: impl Into<String>,
        datatype: DataType,
        shape: Vec<i64>,
        data: Bytes,
    ) -> Result<Tensor> {
        let name = name.into();
        match byte_size(datatype, &shape)? {
            Some(expected) => {
                if data.len() as u64 != expected {
                    return Err(Error::invalid_arg(format!(
                        "tensor '{name}' of {datatype} {} needs {expected} bytes, got {}",
                        shape_to_string(&shape),
                        data.len()
                    )));
                }
            }
            None => {
                let count = element_count(&shape)?;
                let got = split_bytes_elements(&data)?.len() as u64;
                if got != count {
                    return Err(Error::invalid_arg(format!(
                        "tensor '{name}' of BYTES {} needs {count} elements, got {got}",
                        shape_to_string(&shape)
                    )));
                }
            }
        }
        Ok(Tensor {
            name,
            datatype,
            shape,
            data,
        })
    }

    /// Number of elements.
    pub fn element_count(&self) -> u64 {
        element_count(&self.shape).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_overflow() {
        assert_eq!(element_count(&[]).unwrap(), 1);
        assert_eq!(element_count(&[2, 3, 4]).unwrap(), 24);
        assert!(element_count(&[-1, 3]).is_err());
        assert!(element_count(&[i64::MAX, i64::MAX]).is_err());
        assert!(byte_size(DataType::Fp64, &[1 << 61]).is_err());
        assert_eq!(byte_size(DataType::Bytes, &[4]).unwrap(), None);
    }

    #[test]
    fn bytes_elements() {
        let mut raw = Vec::new();
        push_bytes_element(&mut raw, b"ab");
        push_bytes_element(&mut raw, b"");
        assert_eq!(
            split_bytes_elements(&raw).unwrap(),
            vec![&b"ab"[..], &b""[..]]
        );
        assert!(split_bytes_elements(&raw[..5]).is_err());
        assert!(split_bytes_elements(&[9, 0, 0, 0, 1]).is_err());
        assert!(Tensor::new("x", DataType::Bytes, vec![3], Bytes::from(raw)).is_err());
    }

    #[test]
    fn shape_matching() {
        assert!(shape_matches(&[-1, 16], &[3, 16]));
        assert!(!shape_matches(&[-1, 16], &[3, 15]));
        assert!(!shape_matches(&[16], &[1, 16]));
        assert_eq!(shape_to_string(&[1, 16]), "[1,16]");
    }
}
