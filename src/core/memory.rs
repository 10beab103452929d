//! Tensor bytes that live outside the request body: inputs already in GPU
//! memory (a CUDA shared-memory region the client registered) and outputs
//! the client wants written into its own memory (system or CUDA shared
//! memory).
//!
//! Host bytes, wherever they come from (the request body, a system
//! shared-memory mapping, a pinned staging buffer), are a
//! [`bytes::Bytes`] in [`crate::core::Tensor::data`]; only what cannot be
//! a host slice is described here. These types hold numbers and owners,
//! never dereference a device pointer: that happens in `gpu/` alone.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use super::error::Result;

/// A range of GPU memory on one device, kept mapped and allocated by its
/// owner for as long as any clone of it lives.
#[derive(Clone)]
pub struct DeviceBytes {
    device: i32,
    ptr: u64,
    len: usize,
    owner: Arc<dyn Any + Send + Sync>,
}

impl DeviceBytes {
    /// Describes `len` bytes at device address `ptr` on `device`; `owner`
    /// keeps the memory valid (a CUDA IPC mapping, a pool block).
    pub fn new(device: i32, ptr: u64, len: usize, owner: Arc<dyn Any + Send + Sync>) -> Self {
        DeviceBytes {
            device,
            ptr,
            len,
            owner,
        }
    }

    /// The CUDA device ordinal.
    pub fn device(&self) -> i32 {
        self.device
    }

    /// The device address of the first byte.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sub-range `offset..offset + len`, or `None` when it does not
    /// fit (checked without overflow).
    pub fn slice(&self, offset: usize, len: usize) -> Option<DeviceBytes> {
        let end = offset.checked_add(len)?;
        (end <= self.len).then(|| DeviceBytes {
            device: self.device,
            ptr: self.ptr + offset as u64,
            len,
            owner: Arc::clone(&self.owner),
        })
    }
}

impl fmt::Debug for DeviceBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DeviceBytes(gpu {} @ {:#x}, {} bytes)",
            self.device, self.ptr, self.len
        )
    }
}

/// Client memory an output is to be written into: a slice of a registered
/// shared-memory region.
pub trait OutputSink: Send + Sync {
    /// The region's registered name, for messages.
    fn region(&self) -> &str;

    /// Bytes available to the output.
    fn byte_size(&self) -> usize;

    /// The sink as GPU memory, when it is CUDA shared memory; a GPU
    /// backend may write there directly.
    fn device(&self) -> Option<DeviceBytes>;

    /// Copies `data` (host memory, at most [`OutputSink::byte_size`]
    /// bytes) to the start of the sink.
    fn write(&self, data: &[u8]) -> Result<()>;
}

/// Where a request's tensors live when that is not the request body.
///
/// An input listed in `device_inputs` has an empty `data` in the request's
/// [`crate::core::Tensor`]; only backends that take device memory are
/// handed such inputs (the server stages them to host for the others).
///
/// An output listed in `sinks` is written into the sink after execution
/// and returned without data. A backend that writes such an output
/// directly into a device sink returns it with empty `data`: the sink then
/// already holds the bytes.
#[derive(Clone, Default)]
pub struct Bindings {
    /// Inputs whose bytes are in GPU memory, by input name.
    pub device_inputs: Vec<(String, DeviceBytes)>,
    /// Outputs the client wants in its shared memory, by output name.
    pub sinks: Vec<(String, Arc<dyn OutputSink>)>,
}

/// Bindings of a request that has none, for callers that need a reference.
pub static NO_BINDINGS: Bindings = Bindings {
    device_inputs: Vec::new(),
    sinks: Vec::new(),
};

impl Bindings {
    /// The device bytes of input `name`, if it is on a GPU.
    pub fn device_input(&self, name: &str) -> Option<&DeviceBytes> {
        self.device_inputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d)
    }

    /// The sink of output `name`, if the client gave one.
    pub fn sink(&self, name: &str) -> Option<&Arc<dyn OutputSink>> {
        self.sinks.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    /// Whether nothing is bound.
    pub fn is_empty(&self) -> bool {
        self.device_inputs.is_empty() && self.sinks.is_empty()
    }
}

impl fmt::Debug for Bindings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bindings")
            .field("device_inputs", &self.device_inputs)
            .field(
                "sinks",
                &self
                    .sinks
                    .iter()
                    .map(|(n, s)| (n, s.region(), s.byte_size()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_bounds_checked_without_overflow() {
        let d = DeviceBytes::new(0, 0x1000, 64, Arc::new(()));
        let s = d.slice(16, 48).unwrap();
        assert_eq!((s.ptr(), s.len()), (0x1010, 48));
        assert!(d.slice(16, 49).is_none());
        assert!(d.slice(usize::MAX, 2).is_none());
        assert!(d.slice(64, 0).unwrap().is_empty());
    }
}
