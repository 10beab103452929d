//! CUDA regions: a [`gpu::IpcMapping`] as the registry's [`CudaMapping`].

use std::sync::Arc;

use crate::core::{DeviceBytes, Result};
use crate::gpu;

use super::CudaMapping;

impl CudaMapping for gpu::IpcMapping {
    fn ptr(&self) -> u64 {
        gpu::IpcMapping::ptr(self)
    }

    fn allocation_len(&self) -> usize {
        self.len()
    }

    fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        // The registry checked that `offset + data.len()` lies inside the
        // region; the DeviceBytes made here lives only for the copy, while
        // the caller holds the region (and with it this mapping).
        let dst = DeviceBytes::new(
            self.device(),
            gpu::IpcMapping::ptr(self) + offset as u64,
            data.len(),
            Arc::new(()),
        );
        gpu::copy_from_host(data, &dst)
    }
}

/// Opens `handle` on `device` through the driver.
pub(super) fn open(device: i32, handle: &[u8]) -> Result<Box<dyn CudaMapping>> {
    Ok(Box::new(gpu::IpcMapping::open(device, handle)?))
}
