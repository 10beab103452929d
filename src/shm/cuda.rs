//! CUDA regions: a `gpu::IpcMapping` seen as a [`CudaMapping`].

use crate::core::{Error, Result};

use super::CudaMapping;

/// Opens `handle` on `device` through the driver.
pub(super) fn open(_device: i32, _handle: &[u8]) -> Result<Box<dyn CudaMapping>> {
    Err(Error::unavailable(
        "no CUDA driver: GPU support is being wired",
    ))
}

/// Copies `device` bytes to host memory.
pub(super) fn stage_to_host(_device: &crate::core::DeviceBytes) -> Result<bytes::Bytes> {
    Err(Error::unavailable(
        "no CUDA driver: GPU support is being wired",
    ))
}
