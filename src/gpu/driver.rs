//! The CUDA driver: loading it, `cuInit`, device discovery and the primary
//! context of each device, plus the conversion of driver status codes into
//! [`Error`]s that name the call and the CUDA error.
//!
//! cudarc loads `libcuda.so.1` lazily and panics when it is missing, so
//! every path into the driver goes through [`init`], which checks that the
//! library can be loaded before touching it and caches the answer.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cudarc::driver::result::{self, DriverError};
use cudarc::driver::{CudaContext, sys};

use crate::core::{Error, Result};

/// A GPU the driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The CUDA device ordinal.
    pub ordinal: i32,
    /// The device's name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Device memory in bytes.
    pub total_memory: u64,
    /// Compute capability, (major, minor).
    pub compute_capability: (i32, i32),
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, as `nvidia-smi` and NVML
    /// print it.
    pub uuid: String,
}

/// Formats a driver error as `call: CUDA_ERROR_NAME (description)`.
pub(crate) fn describe(call: &str, e: DriverError) -> String {
    let name = e
        .error_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("CUresult {}", e.0 as u32));
    match e.error_string() {
        Ok(text) => format!("{call}: {name} ({})", text.to_string_lossy()),
        Err(_) => format!("{call}: {name}"),
    }
}

/// An internal error for a failed driver call.
pub(crate) fn internal(call: &str, e: DriverError) -> Error {
    Error::internal(describe(call, e))
}

/// Loads the driver and runs `cuInit` once; later calls return the cached
/// answer. Without a driver: [`crate::core::Code::Unavailable`], "no CUDA
/// driver: ...".
pub fn init() -> Result<()> {
    static INIT: OnceLock<Result<()>> = OnceLock::new();
    INIT.get_or_init(|| {
        // SAFETY: is_culib_present only tries to dlopen the library names
        // and closes what it opened; it calls nothing inside it.
        if !unsafe { sys::is_culib_present() } {
            return Err(Error::unavailable(
                "no CUDA driver: libcuda.so.1 could not be loaded",
            ));
        }
        // cudarc panics when a symbol is missing (a driver older than the
        // API it was built for); that is an unusable driver, not a crash.
        match std::panic::catch_unwind(result::init) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::unavailable(format!(
                "no CUDA driver: {}",
                describe("cuInit", e)
            ))),
            Err(_) => Err(Error::unavailable(
                "no CUDA driver: libcuda.so.1 lacks cuInit or its error functions",
            )),
        }
    })
    .clone()
}

/// Reads what the driver says about device `ordinal`.
fn discover(ordinal: i32) -> std::result::Result<DeviceInfo, String> {
    let dev = result::device::get(ordinal).map_err(|e| describe("cuDeviceGet", e))?;
    let name = result::device::get_name(dev).map_err(|e| describe("cuDeviceGetName", e))?;
    // SAFETY: `dev` was returned by cuDeviceGet just above.
    let total = unsafe { result::device::total_mem(dev) }
        .map_err(|e| describe("cuDeviceTotalMem_v2", e))?;
    let attribute = |a| {
        // SAFETY: `dev` was returned by cuDeviceGet just above.
        unsafe { result::device::get_attribute(dev, a) }
            .map_err(|e| describe("cuDeviceGetAttribute", e))
    };
    let major = attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    let uuid = result::device::get_uuid(dev).map_err(|e| describe("cuDeviceGetUuid", e))?;
    Ok(DeviceInfo {
        ordinal,
        name,
        total_memory: total as u64,
        compute_capability: (major, minor),
        uuid: format_uuid(&uuid.bytes.map(|b| b as u8)),
    })
}

/// `GPU-` and the 16 bytes as 8-4-4-4-12 lowercase hex digits.
pub(crate) fn format_uuid(bytes: &[u8; 16]) -> String {
    let mut out = String::from("GPU-");
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The GPUs of this machine, discovered once; empty without a driver (or
/// when discovery fails, which is logged).
pub fn devices() -> &'static [DeviceInfo] {
    static DEVICES: OnceLock<Vec<DeviceInfo>> = OnceLock::new();
    DEVICES.get_or_init(|| {
        if init().is_err() {
            return Vec::new();
        }
        let count = match result::device::get_count() {
            Ok(n) => n,
            Err(e) => {
                log::error!("{}", describe("cuDeviceGetCount", e));
                return Vec::new();
            }
        };
        (0..count)
            .filter_map(|ordinal| match discover(ordinal) {
                Ok(info) => Some(info),
                Err(e) => {
                    log::error!("GPU {ordinal}: {e}; left out");
                    None
                }
            })
            .collect()
    })
}

/// The primary context of GPU `device`, retained once and kept for the
/// life of the process. An ordinal the machine does not have is an
/// invalid argument naming the device count.
pub fn context(device: i32) -> Result<Arc<CudaContext>> {
    static CONTEXTS: Mutex<Vec<(i32, Arc<CudaContext>)>> = Mutex::new(Vec::new());
    init()?;
    let known = devices();
    if !known.iter().any(|d| d.ordinal == device) {
        return Err(Error::invalid_arg(format!(
            "GPU {device} does not exist: this machine has {} CUDA device{}",
            known.len(),
            if known.len() == 1 { "" } else { "s" }
        )));
    }
    let mut contexts = CONTEXTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, ctx)) = contexts.iter().find(|(d, _)| *d == device) {
        return Ok(Arc::clone(ctx));
    }
    let ordinal = usize::try_from(device).map_err(|_| Error::invalid_arg("negative GPU"))?;
    let ctx = CudaContext::new(ordinal).map_err(|e| {
        Error::unavailable(format!(
            "GPU {device}: {}",
            describe("cuDevicePrimaryCtxRetain", e)
        ))
    })?;
    contexts.push((device, Arc::clone(&ctx)));
    Ok(ctx)
}

/// Makes `device`'s primary context current on the calling thread and
/// returns it.
pub(crate) fn bind(device: i32) -> Result<Arc<CudaContext>> {
    let ctx = context(device)?;
    ctx.bind_to_thread()
        .map_err(|e| internal(&format!("GPU {device}: cuCtxSetCurrent"), e))?;
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Code;
    use crate::gpu::{DRIVER_PRESENT, require_gpu};

    #[test]
    fn uuid_format() {
        let bytes: [u8; 16] = std::array::from_fn(|i| (i * 17) as u8);
        assert_eq!(
            format_uuid(&bytes),
            "GPU-00112233-4455-6677-8899-aabbccddeeff"
        );
    }

    #[test]
    fn without_a_driver_everything_answers_unavailable() {
        assert!(!sys_present(), "{DRIVER_PRESENT}");
        let e = init().unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.message().starts_with("no CUDA driver: "), "{e}");
        assert!(devices().is_empty());
        let e = context(0).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e}");
    }

    fn sys_present() -> bool {
        // SAFETY: only tries to dlopen the library.
        unsafe { sys::is_culib_present() }
    }

    #[test]
    #[ignore = "needs a CUDA driver: scripts/gpu/run.sh runs it"]
    fn unknown_ordinal_names_the_device_count() {
        require_gpu();
        let e = context(devices().len() as i32 + 7).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArg);
        assert!(e.message().contains("this machine has"), "{e}");
        let info = &devices()[0];
        assert!(
            info.uuid.starts_with("GPU-") && info.uuid.len() == 40,
            "{info:?}"
        );
        assert!(info.total_memory > 0 && info.compute_capability.0 >= 3);
        let ctx = context(info.ordinal).unwrap();
        assert!(Arc::ptr_eq(&ctx, &context(info.ordinal).unwrap()));
    }
}
