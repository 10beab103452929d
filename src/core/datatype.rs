//! Tensor element types: the KServe v2 wire names, the `config.pbtxt`
//! `TYPE_*` enum values, and element sizes.

use std::fmt;

/// One tensor element type, as KServe v2 and Triton's model configuration
/// name it. `Bytes` elements are variable-length byte strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// Boolean, one byte per element (0 or 1).
    Bool,
    /// Unsigned 8-bit integer.
    Uint8,
    /// Unsigned 16-bit integer.
    Uint16,
    /// Unsigned 32-bit integer.
    Uint32,
    /// Unsigned 64-bit integer.
    Uint64,
    /// Signed 8-bit integer.
    Int8,
    /// Signed 16-bit integer.
    Int16,
    /// Signed 32-bit integer.
    Int32,
    /// Signed 64-bit integer.
    Int64,
    /// IEEE half precision.
    Fp16,
    /// bfloat16.
    Bf16,
    /// IEEE single precision.
    Fp32,
    /// IEEE double precision.
    Fp64,
    /// Variable-length bytes; serialized as a 4-byte little-endian length
    /// followed by the bytes, per element.
    Bytes,
}

impl DataType {
    /// Every datatype, in wire-name order of the KServe spec.
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Bf16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// Parses a KServe v2 wire name ("INT32", "FP16", "BYTES", ...).
    pub fn from_wire(s: &str) -> Option<DataType> {
        Some(match s {
            "BOOL" => DataType::Bool,
            "UINT8" => DataType::Uint8,
            "UINT16" => DataType::Uint16,
            "UINT32" => DataType::Uint32,
            "UINT64" => DataType::Uint64,
            "INT8" => DataType::Int8,
            "INT16" => DataType::Int16,
            "INT32" => DataType::Int32,
            "INT64" => DataType::Int64,
            "FP16" => DataType::Fp16,
            "BF16" => DataType::Bf16,
            "FP32" => DataType::Fp32,
            "FP64" => DataType::Fp64,
            "BYTES" => DataType::Bytes,
            _ => return None,
        })
    }

    /// The KServe v2 wire name.
    pub fn wire_name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Bf16 => "BF16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses the model configuration's enum value name (`TYPE_INT32`,
    /// `TYPE_STRING`, ...). `TYPE_STRING` is Triton's name for BYTES.
    pub fn from_config_name(s: &str) -> Option<DataType> {
        match s {
            "TYPE_STRING" => Some(DataType::Bytes),
            _ => s.strip_prefix("TYPE_").and_then(DataType::from_wire),
        }
    }

    /// The model configuration's enum value name.
    pub fn config_name(self) -> &'static str {
        match self {
            DataType::Bool => "TYPE_BOOL",
            DataType::Uint8 => "TYPE_UINT8",
            DataType::Uint16 => "TYPE_UINT16",
            DataType::Uint32 => "TYPE_UINT32",
            DataType::Uint64 => "TYPE_UINT64",
            DataType::Int8 => "TYPE_INT8",
            DataType::Int16 => "TYPE_INT16",
            DataType::Int32 => "TYPE_INT32",
            DataType::Int64 => "TYPE_INT64",
            DataType::Fp16 => "TYPE_FP16",
            DataType::Bf16 => "TYPE_BF16",
            DataType::Fp32 => "TYPE_FP32",
            DataType::Fp64 => "TYPE_FP64",
            DataType::Bytes => "TYPE_STRING",
        }
    }

    /// Maps the `DataType` enum number of `model_config.proto`.
    pub fn from_config_enum(v: i32) -> Option<DataType> {
        Some(match v {
            1 => DataType::Bool,
            2 => DataType::Uint8,
            3 => DataType::Uint16,
            4 => DataType::Uint32,
            5 => DataType::Uint64,
            6 => DataType::Int8,
            7 => DataType::Int16,
            8 => DataType::Int32,
            9 => DataType::Int64,
            10 => DataType::Fp16,
            11 => DataType::Fp32,
            12 => DataType::Fp64,
            13 => DataType::Bytes,
            14 => DataType::Bf16,
            _ => return None,
        })
    }

    /// The `DataType` enum number of `model_config.proto`.
    pub fn config_enum(self) -> i32 {
        match self {
            DataType::Bool => 1,
            DataType::Uint8 => 2,
            DataType::Uint16 => 3,
            DataType::Uint32 => 4,
            DataType::Uint64 => 5,
            DataType::Int8 => 6,
            DataType::Int16 => 7,
            DataType::Int32 => 8,
            DataType::Int64 => 9,
            DataType::Fp16 => 10,
            DataType::Fp32 => 11,
            DataType::Fp64 => 12,
            DataType::Bytes => 13,
            DataType::Bf16 => 14,
        }
    }

    /// Size of one element in bytes; `None` for variable-length BYTES.
    pub fn element_size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => Some(1),
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => Some(2),
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => Some(4),
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wire_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for dt in DataType::ALL {
            assert_eq!(DataType::from_wire(dt.wire_name()), Some(dt));
            assert_eq!(DataType::from_config_name(dt.config_name()), Some(dt));
            assert_eq!(DataType::from_config_enum(dt.config_enum()), Some(dt));
        }
        assert_eq!(DataType::from_wire("int32"), None);
        assert_eq!(DataType::from_config_enum(0), None);
    }
}
