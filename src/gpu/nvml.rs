//! GPU utilization and memory for the metrics: from NVML
//! (`libnvidia-ml.so.1`, opened at run time with libloading) when it
//! loads, else memory from the driver (`cuMemGetInfo_v2` in each GPU's
//! primary context) with utilization unknown. NVML devices are matched to
//! CUDA ordinals by UUID, since the two enumerate in different orders
//! (`CUDA_VISIBLE_DEVICES`, `CUDA_DEVICE_ORDER`).

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::sync::OnceLock;

use libloading::Library;

use super::driver::{context, devices};

/// One GPU's figures at a sampling.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSample {
    /// CUDA ordinal.
    pub device: i32,
    /// `GPU-...` UUID, the `gpu_uuid` label.
    pub uuid: String,
    /// Share of the last sample period a kernel ran, 0 to 1; `None`
    /// without NVML.
    pub utilization: Option<f64>,
    /// Device memory in bytes.
    pub memory_total: u64,
    /// Device memory in use, in bytes.
    pub memory_used: u64,
}

type NvmlDevice = *mut c_void;

#[repr(C)]
#[derive(Default)]
struct NvmlUtilization {
    gpu: c_uint,
    memory: c_uint,
}

#[repr(C)]
#[derive(Default)]
struct NvmlMemory {
    total: u64,
    free: u64,
    used: u64,
}

const NVML_SUCCESS: c_int = 0;
const UUID_BUFFER: usize = 96;

/// The NVML entry points this module uses, and the devices by UUID.
struct Nvml {
    utilization: unsafe extern "C" fn(NvmlDevice, *mut NvmlUtilization) -> c_int,
    memory: unsafe extern "C" fn(NvmlDevice, *mut NvmlMemory) -> c_int,
    by_uuid: Vec<(String, NvmlDevice)>,
    _library: Library,
}

// SAFETY: NVML is thread-safe (its documentation says so for all calls);
// device handles are opaque numbers valid for the process once NVML is
// initialized, which it stays (never shut down).
unsafe impl Send for Nvml {}
// SAFETY: as for Send.
unsafe impl Sync for Nvml {}

impl Nvml {
    fn load() -> Result<Nvml, String> {
        // SAFETY: loading NVML runs its initializers, which have no
        // preconditions.
        let library = unsafe { Library::new("libnvidia-ml.so.1") }.map_err(|e| e.to_string())?;
        // SAFETY: each symbol is declared with NVML's C signature.
        unsafe {
            let init: unsafe extern "C" fn() -> c_int =
                *library.get(b"nvmlInit_v2\0").map_err(|e| e.to_string())?;
            let count: unsafe extern "C" fn(*mut c_uint) -> c_int = *library
                .get(b"nvmlDeviceGetCount_v2\0")
                .map_err(|e| e.to_string())?;
            let by_index: unsafe extern "C" fn(c_uint, *mut NvmlDevice) -> c_int = *library
                .get(b"nvmlDeviceGetHandleByIndex_v2\0")
                .map_err(|e| e.to_string())?;
            let uuid: unsafe extern "C" fn(NvmlDevice, *mut c_char, c_uint) -> c_int = *library
                .get(b"nvmlDeviceGetUUID\0")
                .map_err(|e| e.to_string())?;
            let utilization = *library
                .get(b"nvmlDeviceGetUtilizationRates\0")
                .map_err(|e| e.to_string())?;
            let memory = *library
                .get(b"nvmlDeviceGetMemoryInfo\0")
                .map_err(|e| e.to_string())?;
            let status = init();
            if status != NVML_SUCCESS {
                return Err(format!("nvmlInit_v2 returned {status}"));
            }
            let mut n: c_uint = 0;
            let status = count(&mut n);
            if status != NVML_SUCCESS {
                return Err(format!("nvmlDeviceGetCount_v2 returned {status}"));
            }
            let mut by_uuid = Vec::new();
            for i in 0..n {
                let mut device: NvmlDevice = std::ptr::null_mut();
                let mut buffer = [0 as c_char; UUID_BUFFER];
                if by_index(i, &mut device) != NVML_SUCCESS
                    || uuid(device, buffer.as_mut_ptr(), UUID_BUFFER as c_uint) != NVML_SUCCESS
                {
                    continue;
                }
                let text = CStr::from_ptr(buffer.as_ptr()).to_string_lossy();
                by_uuid.push((text.into_owned(), device));
            }
            Ok(Nvml {
                utilization,
                memory,
                by_uuid,
                _library: library,
            })
        }
    }

    /// (utilization, total, used) of the device with `uuid`.
    fn read(&self, uuid: &str) -> Option<(f64, u64, u64)> {
        let &(_, device) = self
            .by_uuid
            .iter()
            .find(|(u, _)| u.eq_ignore_ascii_case(uuid))?;
        let mut util = NvmlUtilization::default();
        let mut memory = NvmlMemory::default();
        // SAFETY: `device` is a handle NVML gave; the out-pointers are
        // valid structs of NVML's layout.
        let ok = unsafe {
            (self.utilization)(device, &mut util) == NVML_SUCCESS
                && (self.memory)(device, &mut memory) == NVML_SUCCESS
        };
        ok.then(|| {
            (
                (f64::from(util.gpu) / 100.0).clamp(0.0, 1.0),
                memory.total,
                memory.used,
            )
        })
    }
}

fn nvml() -> Option<&'static Nvml> {
    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
    NVML.get_or_init(|| match Nvml::load() {
        Ok(nvml) => Some(nvml),
        Err(e) => {
            log::info!("NVML unavailable ({e}): GPU utilization is not reported");
            None
        }
    })
    .as_ref()
}

/// The GPUs' utilization and memory now; empty without a driver. A GPU
/// neither NVML nor the driver can answer for is left out.
pub fn sample() -> Vec<GpuSample> {
    let gpus = devices();
    if gpus.is_empty() {
        return Vec::new();
    }
    let nvml = nvml();
    gpus.iter()
        .filter_map(|d| {
            if let Some((utilization, total, used)) = nvml.and_then(|n| n.read(&d.uuid)) {
                return Some(GpuSample {
                    device: d.ordinal,
                    uuid: d.uuid.clone(),
                    utilization: Some(utilization),
                    memory_total: total,
                    memory_used: used,
                });
            }
            let (free, total) = context(d.ordinal).ok()?.mem_get_info().ok()?;
            Some(GpuSample {
                device: d.ordinal,
                uuid: d.uuid.clone(),
                utilization: None,
                memory_total: total as u64,
                memory_used: total.saturating_sub(free) as u64,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{DRIVER_PRESENT, require_gpu};

    #[test]
    fn without_a_driver_nothing_is_sampled() {
        assert!(crate::gpu::init().is_err(), "{DRIVER_PRESENT}");
        assert!(sample().is_empty());
    }

    #[test]
    #[ignore = "needs a CUDA driver: scripts/gpu/run.sh runs it"]
    fn samples_every_gpu() {
        require_gpu();
        let samples = sample();
        assert_eq!(samples.len(), devices().len(), "{samples:?}");
        for s in samples {
            assert!(
                s.memory_total > 0 && s.memory_used <= s.memory_total,
                "{s:?}"
            );
            assert!(s.utilization.is_none_or(|u| (0.0..=1.0).contains(&u)));
        }
    }
}
