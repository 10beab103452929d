//! Client shared memory: the registry of system (POSIX `shm_open` +
//! `mmap`) and CUDA (IPC handle) regions that requests name in their
//! `shared_memory_*` parameters.
//!
//! A registered region is an `Arc<Region>`. Looking one up for an input
//! hands out bytes that keep the region alive (a [`bytes::Bytes`] over the
//! mapping for system memory, a [`DeviceBytes`] for CUDA memory), so an
//! input tensor borrows the client's memory with no copy, and unregistering
//! a region that requests still use only removes its name: the mapping
//! goes when the last of them finishes.
//!
//! Regions share one namespace across both kinds, as in Triton. Every bound
//! (offset, byte size, their sum, the file's or allocation's real size) is
//! checked without overflow before anything is mapped or read.

#![allow(unsafe_code)]

mod cuda;
mod system;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use crate::core::{Code, DeviceBytes, Error, OutputSink, Result};

use system::SystemMapping;

/// The message Triton answers when client shared memory is off.
pub const DISABLED: &str =
    "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable.";

/// Keys with this prefix belong to the Python backend's own regions and
/// are refused, as Triton refuses them.
const RESERVED_KEY_PREFIX: &str = "triton_python_backend_shm_region_";

/// The two kinds of region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// POSIX shared memory in host RAM.
    System,
    /// GPU memory exported with `cudaIpcGetMemHandle`.
    Cuda,
}

/// One region as the status endpoints report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionStatus {
    /// Registered name.
    pub name: String,
    /// System regions: the `shm_open` key.
    pub key: String,
    /// System regions: offset of the region in the shared-memory object.
    pub offset: u64,
    /// CUDA regions: the GPU.
    pub device_id: i64,
    /// Size in bytes.
    pub byte_size: u64,
}

/// Where an input's bytes are, once its region is looked up.
#[derive(Debug, Clone)]
pub enum InputBytes {
    /// Host memory (a system region), borrowed without a copy.
    Host(Bytes),
    /// GPU memory (a CUDA region).
    Device(DeviceBytes),
}

/// A CUDA IPC mapping as the registry needs it: opened at registration,
/// closed when dropped.
pub trait CudaMapping: Send + Sync {
    /// Device address of the region's first byte.
    fn ptr(&self) -> u64;
    /// Bytes from [`CudaMapping::ptr`] to the end of the allocation.
    fn allocation_len(&self) -> usize;
    /// Copies host bytes to `ptr() + offset`.
    fn write(&self, offset: usize, data: &[u8]) -> Result<()>;
}

/// Opens a CUDA IPC handle on a device: the registry's only way into the
/// driver, so it is testable without one.
pub type CudaOpener = dyn Fn(i32, &[u8]) -> Result<Box<dyn CudaMapping>> + Send + Sync;

/// Opens a CUDA IPC handle through the driver (`gpu/`).
pub fn open_cuda(device: i32, handle: &[u8]) -> Result<Box<dyn CudaMapping>> {
    cuda::open(device, handle)
}

enum Memory {
    System {
        key: String,
        offset: u64,
        map: SystemMapping,
    },
    Cuda {
        device: i32,
        map: Box<dyn CudaMapping>,
    },
}

/// A registered region.
pub struct Region {
    name: String,
    byte_size: usize,
    memory: Memory,
}

impl Region {
    fn kind(&self) -> Kind {
        match self.memory {
            Memory::System { .. } => Kind::System,
            Memory::Cuda { .. } => Kind::Cuda,
        }
    }

    fn status(&self) -> RegionStatus {
        let (key, offset, device_id) = match &self.memory {
            Memory::System { key, offset, .. } => (key.clone(), *offset, 0),
            Memory::Cuda { device, .. } => (String::new(), 0, i64::from(*device)),
        };
        RegionStatus {
            name: self.name.clone(),
            key,
            offset,
            device_id,
            byte_size: self.byte_size as u64,
        }
    }
}

/// The registered regions of one server.
pub struct Registry {
    allow_client: bool,
    open_cuda: Box<CudaOpener>,
    regions: Mutex<BTreeMap<String, Arc<Region>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("allow_client", &self.allow_client)
            .field("regions", &self.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// A registry that opens CUDA handles through `open_cuda`; with
    /// `allow_client` false every registration is refused with [`DISABLED`].
    pub fn new(allow_client: bool, open_cuda: Box<CudaOpener>) -> Registry {
        Registry {
            allow_client,
            open_cuda,
            regions: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Region>>> {
        self.regions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_allowed(&self) -> Result<()> {
        if self.allow_client {
            Ok(())
        } else {
            Err(Error::unsupported(DISABLED))
        }
    }

    fn insert(&self, region: Region) -> Result<()> {
        let mut regions = self.lock();
        if regions.contains_key(&region.name) {
            return Err(already(&region.name));
        }
        log::info!(
            "registered {} shared memory region '{}' ({} bytes)",
            match region.kind() {
                Kind::System => "system",
                Kind::Cuda => "CUDA",
            },
            region.name,
            region.byte_size
        );
        regions.insert(region.name.clone(), Arc::new(region));
        Ok(())
    }

    /// Maps `byte_size` bytes at `offset` of the POSIX shared-memory object
    /// `key` under `name`.
    pub fn register_system(
        &self,
        name: &str,
        key: &str,
        offset: u64,
        byte_size: u64,
    ) -> Result<()> {
        self.check_allowed()?;
        if name.is_empty() {
            return Err(Error::invalid_arg(
                "'region name' is necessary to register system shared memory region",
            ));
        }
        check_key(name, key)?;
        if self.lock().contains_key(name) {
            return Err(already(name));
        }
        let map = SystemMapping::open(name, key, offset, byte_size)?;
        self.insert(Region {
            name: name.to_owned(),
            byte_size: map.len(),
            memory: Memory::System {
                key: key.to_owned(),
                offset,
                map,
            },
        })
    }

    /// Opens the CUDA IPC `raw_handle` (a 64-byte `cudaIpcMemHandle_t`) on
    /// `device_id` under `name`; `byte_size` may not exceed the allocation.
    pub fn register_cuda(
        &self,
        name: &str,
        raw_handle: &[u8],
        device_id: i64,
        byte_size: u64,
    ) -> Result<()> {
        self.check_allowed()?;
        // Triton's order: a name already in use, then the handle; a handle
        // that does not open answers its generic "invalid args" (with our
        // detail after it), and the size is checked against what opened.
        if self.lock().contains_key(name) {
            return Err(already(name));
        }
        let invalid = |detail: &str| {
            Error::invalid_arg(format!(
                "failed to register CUDA shared memory region '{name}': failed to register shared memory region: invalid args ({detail})"
            ))
        };
        if raw_handle.len() != 64 {
            return Err(invalid(&format!(
                "'raw_handle' must be a valid cudaIpcMemHandle_t (64 bytes), got {} bytes",
                raw_handle.len()
            )));
        }
        let device = i32::try_from(device_id)
            .map_err(|_| invalid(&format!("invalid device id {device_id}")))?;
        let map = (self.open_cuda)(device, raw_handle).map_err(|e| invalid(e.message()))?;
        if name.is_empty() {
            return Err(Error::invalid_arg(
                "'region name' is necessary to register cuda shared memory region",
            ));
        }
        if byte_size == 0 {
            return Err(Error::invalid_arg(format!(
                "failed to register CUDA shared memory region '{name}': byte_size must be greater than 0"
            )));
        }
        if byte_size > map.allocation_len() as u64 {
            return Err(Error::invalid_arg(format!(
                "failed to register CUDA shared memory region '{name}': byte_size {byte_size} exceeds the {} bytes of the allocation the handle names",
                map.allocation_len()
            )));
        }
        self.insert(Region {
            name: name.to_owned(),
            byte_size: byte_size as usize,
            memory: Memory::Cuda { device, map },
        })
    }

    /// Status of one region of `kind`, or of all of them.
    pub fn status(&self, kind: Kind, name: Option<&str>) -> Result<Vec<RegionStatus>> {
        let regions = self.lock();
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Ok(regions
                .values()
                .filter(|r| r.kind() == kind)
                .map(|r| r.status())
                .collect());
        };
        match regions.get(name) {
            None => Err(Error::not_found(match kind {
                Kind::System => format!("Unable to find system shared memory region: '{name}'"),
                Kind::Cuda => format!("Unable to find cuda shared memory region: '{name}'"),
            })),
            Some(r) if r.kind() != kind => Err(Error::not_found(match kind {
                Kind::System => format!(
                    "The region named '{name}' is registered as CUDA shared memory, not system shared memory"
                ),
                Kind::Cuda => format!(
                    "The region named '{name}' is registered as system shared memory, not CUDA shared memory"
                ),
            })),
            Some(r) => Ok(vec![r.status()]),
        }
    }

    /// Unregisters one region of `kind` (a name that is not registered as
    /// that kind is a no-op, as in Triton), or all of them. Requests still
    /// using a region keep it mapped until they finish.
    pub fn unregister(&self, kind: Kind, name: Option<&str>) -> Result<()> {
        self.check_allowed()?;
        let mut regions = self.lock();
        match name.filter(|n| !n.is_empty()) {
            Some(name) => {
                if regions.get(name).is_some_and(|r| r.kind() == kind) {
                    regions.remove(name);
                    log::info!("unregistered shared memory region '{name}'");
                }
            }
            None => regions.retain(|_, r| r.kind() != kind),
        }
        Ok(())
    }

    /// Unregisters every region of both kinds (server shutdown).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn slice(&self, name: &str, offset: u64, byte_size: u64) -> Result<Arc<Region>> {
        let region = self.lock().get(name).cloned().ok_or_else(|| {
            Error::not_found(format!("Unable to find shared memory region: '{name}'"))
        })?;
        let size = region.byte_size as u64;
        if offset >= size {
            return Err(Error::invalid_arg(format!(
                "Invalid offset for shared memory region: '{name}'"
            )));
        }
        let end = offset.checked_add(byte_size).ok_or_else(|| {
            Error::invalid_arg(format!(
                "Integer overflow detected: byte_size ({byte_size}) + offset ({offset}) exceeds maximum value ({}) for region '{name}'",
                u64::MAX
            ))
        })?;
        if end > size {
            return Err(Error::invalid_arg(format!(
                "Invalid offset + byte size for shared memory region: '{name}'"
            )));
        }
        Ok(region)
    }

    /// The bytes of an input read from `name` at `offset`, without a copy.
    pub fn input(&self, name: &str, offset: u64, byte_size: u64) -> Result<InputBytes> {
        let region = self.slice(name, offset, byte_size)?;
        // `slice` checked offset + byte_size <= the region's size, which
        // is a usize.
        let (offset, len) = (offset as usize, byte_size as usize);
        Ok(match &region.memory {
            Memory::System { .. } => InputBytes::Host(Bytes::from_owner(RegionBytes {
                region: Arc::clone(&region),
                offset,
                len,
            })),
            Memory::Cuda { device, map } => InputBytes::Device(DeviceBytes::new(
                *device,
                map.ptr() + offset as u64,
                len,
                Arc::clone(&region) as Arc<dyn std::any::Any + Send + Sync>,
            )),
        })
    }

    /// Where an output goes when the client asked for it in `name` at
    /// `offset`, with room for `byte_size` bytes.
    pub fn sink(&self, name: &str, offset: u64, byte_size: u64) -> Result<Arc<dyn OutputSink>> {
        let region = self.slice(name, offset, byte_size)?;
        Ok(Arc::new(RegionSink {
            region,
            offset: offset as usize,
            len: byte_size as usize,
        }))
    }
}

fn already(name: &str) -> Error {
    Error::new(
        Code::AlreadyExists,
        format!("shared memory region '{name}' already in manager"),
    )
}

fn check_key(name: &str, key: &str) -> Result<()> {
    let rest = key.trim_start_matches('/');
    if rest.is_empty() {
        return Err(Error::invalid_arg(format!(
            "cannot register shared memory region '{name}' - invalid shm key '{key}'"
        )));
    }
    if rest.starts_with(RESERVED_KEY_PREFIX) {
        return Err(Error::invalid_arg(format!(
            "cannot register shared memory region '{name}' with key '{key}' as the key contains the reserved prefix '{RESERVED_KEY_PREFIX}'"
        )));
    }
    Ok(())
}

/// A slice of a system region, as the owner of an input's `Bytes`.
struct RegionBytes {
    region: Arc<Region>,
    offset: usize,
    len: usize,
}

impl AsRef<[u8]> for RegionBytes {
    fn as_ref(&self) -> &[u8] {
        match &self.region.memory {
            Memory::System { map, .. } => &map.bytes()[self.offset..self.offset + self.len],
            Memory::Cuda { .. } => unreachable!("RegionBytes is only made for system regions"),
        }
    }
}

/// A slice of a region an output is written into.
struct RegionSink {
    region: Arc<Region>,
    offset: usize,
    len: usize,
}

impl OutputSink for RegionSink {
    fn region(&self) -> &str {
        &self.region.name
    }

    fn byte_size(&self) -> usize {
        self.len
    }

    fn device(&self) -> Option<DeviceBytes> {
        match &self.region.memory {
            Memory::System { .. } => None,
            Memory::Cuda { device, map } => Some(DeviceBytes::new(
                *device,
                map.ptr() + self.offset as u64,
                self.len,
                Arc::clone(&self.region) as Arc<dyn std::any::Any + Send + Sync>,
            )),
        }
    }

    fn write(&self, data: &[u8]) -> Result<()> {
        if data.len() > self.len {
            return Err(Error::internal(format!(
                "{} bytes do not fit the {} bytes given in shared memory region '{}'",
                data.len(),
                self.len,
                self.region.name
            )));
        }
        match &self.region.memory {
            Memory::System { map, .. } => {
                map.write(self.offset, data);
                Ok(())
            }
            Memory::Cuda { map, .. } => map.write(self.offset, data),
        }
    }
}

#[cfg(test)]
mod tests;
