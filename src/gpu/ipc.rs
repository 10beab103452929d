//! CUDA IPC: device memory another process exported with
//! `cudaIpcGetMemHandle`, opened in this process (Triton's CUDA shared
//! memory). The mapping lives in the device's primary context and is
//! closed on drop.

use std::sync::Arc;

use cudarc::driver::{CudaContext, sys};

use super::driver::{bind, describe};
use crate::core::{Error, Result};

/// Size of a `cudaIpcMemHandle_t`.
pub const HANDLE_BYTES: usize = 64;

/// An IPC handle opened on one GPU: device memory of another process,
/// mapped here until dropped. `Send + Sync`: it is a number and a
/// context, and closing happens once, on drop.
pub struct IpcMapping {
    device: i32,
    ptr: u64,
    len: usize,
    ctx: Arc<CudaContext>,
}

impl IpcMapping {
    /// Opens `handle` (the 64 bytes of a `cudaIpcMemHandle_t`) in
    /// `device`'s primary context, enabling peer access lazily when the
    /// memory is on another GPU. A handle of the wrong size or one the
    /// driver refuses is an invalid argument.
    pub fn open(device: i32, handle: &[u8]) -> Result<IpcMapping> {
        let bytes: [u8; HANDLE_BYTES] = handle.try_into().map_err(|_| {
            Error::invalid_arg(format!(
                "a CUDA IPC handle is {HANDLE_BYTES} bytes, got {}",
                handle.len()
            ))
        })?;
        let ctx = bind(device)?;
        let raw = sys::CUipcMemHandle_st {
            reserved: bytes.map(|b| b as std::ffi::c_char),
        };
        let mut ptr: sys::CUdeviceptr = 0;
        // SAFETY: `ptr` is a valid out-pointer; the handle is passed by
        // value; the device's context is current (bind).
        unsafe {
            sys::cuIpcOpenMemHandle_v2(
                &mut ptr,
                raw,
                sys::CUipcMem_flags::CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS as u32,
            )
        }
        .result()
        .map_err(|e| {
            Error::invalid_arg(format!(
                "GPU {device}: {}",
                describe("cuIpcOpenMemHandle_v2", e)
            ))
        })?;
        let mut mapping = IpcMapping {
            device,
            ptr,
            len: 0,
            ctx,
        };
        let (mut base, mut size): (sys::CUdeviceptr, usize) = (0, 0);
        // SAFETY: valid out-pointers; `ptr` is mapped (just opened).
        unsafe { sys::cuMemGetAddressRange_v2(&mut base, &mut size, ptr) }
            .result()
            .map_err(|e| {
                Error::internal(format!(
                    "GPU {device}: {}",
                    describe("cuMemGetAddressRange_v2", e)
                ))
            })?;
        // `mapping` closes the handle on the error path above.
        mapping.len = (base + size as u64).saturating_sub(ptr) as usize;
        Ok(mapping)
    }

    /// The GPU ordinal.
    pub fn device(&self) -> i32 {
        self.device
    }

    /// The device address the handle maps to.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Bytes from [`IpcMapping::ptr`] to the end of the exported
    /// allocation.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for IpcMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IpcMapping(gpu {} @ {:#x}, {} bytes)",
            self.device, self.ptr, self.len
        )
    }
}

impl Drop for IpcMapping {
    fn drop(&mut self) {
        if let Err(e) = self.ctx.bind_to_thread() {
            log::error!("GPU {}: {}", self.device, describe("cuCtxSetCurrent", e));
        }
        // SAFETY: `ptr` was returned by cuIpcOpenMemHandle_v2 in this
        // context and is closed once, here.
        if let Err(e) = unsafe { sys::cuIpcCloseMemHandle(self.ptr) }.result() {
            log::error!(
                "GPU {}: {}",
                self.device,
                describe("cuIpcCloseMemHandle", e)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Code;
    use crate::gpu::{DRIVER_PRESENT, require_gpu};

    #[test]
    fn handle_length_is_checked_first() {
        for len in [0, 63, 65] {
            let e = IpcMapping::open(0, &vec![0; len]).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArg);
            assert_eq!(
                e.message(),
                format!("a CUDA IPC handle is 64 bytes, got {len}")
            );
        }
    }

    #[test]
    fn without_a_driver_open_says_so() {
        assert!(crate::gpu::init().is_err(), "{DRIVER_PRESENT}");
        let e = IpcMapping::open(0, &[0; 64]).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.message().starts_with("no CUDA driver"), "{e}");
    }

    /// Set in the helper process that exports memory for
    /// [`opens_memory_another_process_exported`].
    const EXPORTER: &str = "NEREID_TEST_IPC_EXPORTER";
    const PATTERN_BYTES: usize = 4096;

    fn pattern() -> Vec<u8> {
        (0..PATTERN_BYTES).map(|i| (i % 253) as u8).collect()
    }

    /// The helper process: allocates device memory, fills it, prints its
    /// IPC handle and keeps it until stdin closes. Run on its own it fails
    /// (scripts/gpu/run.sh skips it).
    #[test]
    #[ignore = "the helper process of opens_memory_another_process_exported"]
    fn ipc_exporter() {
        use std::io::{Read, Write};
        assert!(
            std::env::var_os(EXPORTER).is_some(),
            "ipc_exporter is the helper process of opens_memory_another_process_exported, which runs it with {EXPORTER} set"
        );
        bind(0).unwrap();
        // SAFETY: a context is current; the memory is freed below.
        let ptr = unsafe { cudarc::driver::result::malloc_sync(PATTERN_BYTES) }.unwrap();
        let bytes = crate::core::DeviceBytes::new(0, ptr, PATTERN_BYTES, Arc::new(()));
        crate::gpu::copy_from_host(&pattern(), &bytes).unwrap();
        let mut handle = sys::CUipcMemHandle_st { reserved: [0; 64] };
        // SAFETY: valid out-pointer; `ptr` is a cuMemAlloc allocation.
        unsafe { sys::cuIpcGetMemHandle(&mut handle, ptr) }
            .result()
            .unwrap();
        let hex: String = handle
            .reserved
            .iter()
            .map(|&b| format!("{:02x}", b as u8))
            .collect();
        println!("HANDLE {hex}");
        std::io::stdout().flush().unwrap();
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        // SAFETY: allocated above, freed once; the importer has closed it.
        unsafe { cudarc::driver::result::free_sync(ptr) }.unwrap();
    }

    #[test]
    #[ignore = "needs a CUDA driver: scripts/gpu/run.sh runs it"]
    fn opens_memory_another_process_exported() {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        require_gpu();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "gpu::ipc::tests::ipc_exporter",
                "--include-ignored",
                "--nocapture",
            ])
            .env(EXPORTER, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map(Result::unwrap);
        let line = lines
            .find(|l| l.starts_with("HANDLE "))
            .expect("the exporter printed no handle");
        let hex = &line["HANDLE ".len()..];
        let handle: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let mapping = IpcMapping::open(0, &handle).unwrap();
        assert!(mapping.len() >= PATTERN_BYTES, "{mapping:?}");
        assert_eq!(mapping.device(), 0);
        let bytes =
            crate::core::DeviceBytes::new(0, mapping.ptr(), PATTERN_BYTES, Arc::new(mapping));
        let mut back = vec![0; PATTERN_BYTES];
        crate::gpu::copy_to_host(&bytes, &mut back).unwrap();
        assert!(back == pattern());
        drop(bytes);
        drop(child.stdin.take());
        // Read what the helper's test harness still prints, or it fails on
        // a broken pipe.
        lines.for_each(drop);
        assert!(child.wait().unwrap().success());
    }

    #[test]
    #[ignore = "needs a CUDA driver: scripts/gpu/run.sh runs it"]
    fn a_bogus_handle_is_refused() {
        require_gpu();
        let e = IpcMapping::open(0, &[0x5a; 64]).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArg, "{e}");
        assert!(e.message().contains("cuIpcOpenMemHandle_v2"), "{e}");
    }
}
