//! Page-locked host buffers ([`PinnedBuffer`]) and device buffers
//! ([`DeviceBuffer`]), carved from the pools when they fit, plus the
//! synchronous copies between host and device.
//!
//! The pinned pool is one `cuMemHostAlloc` (portable: usable from every
//! GPU's context) of `--pinned-memory-pool-byte-size` bytes, created on
//! the first [`pinned`] call; each GPU's pool is one `cuMemAlloc` of its
//! `--cuda-memory-pool-byte-size` bytes, created on the first
//! [`device_alloc`] for that GPU. Both are carved by [`super::arena`];
//! what does not fit follows the exhaustion policy (a separate
//! allocation, counted, or an error). A pool the driver cannot create
//! (memory short at start) is logged and treated as size 0: every
//! allocation is then a separate one.
//!
//! Without a driver, [`pinned`] answers ordinary zeroed heap memory
//! (counted as a pinned fallback, so the metrics show it) and everything
//! else answers "no CUDA driver".

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cudarc::driver::result;
use cudarc::driver::{CudaContext, CudaEvent, sys};

use super::arena::{Block, Grant, Pool};
use super::driver::{self, bind, describe, internal};
use super::{PoolOptions, pool_options};
use crate::core::{DeviceBytes, Error, Result};

/// The device the pinned pool and separate pinned allocations are made
/// from; portable allocations serve every GPU.
const HOST_ALLOC_DEVICE: i32 = 0;

/// The pinned pool: its arena's base address, or no driver at all.
struct PinnedPool {
    pool: Pool,
    base: usize,
    driver: bool,
}

static PINNED_POOL: OnceLock<PinnedPool> = OnceLock::new();

fn pinned_pool() -> &'static PinnedPool {
    PINNED_POOL.get_or_init(|| {
        let options = pool_options();
        let make = |capacity: u64| {
            Pool::new(
                "pinned memory pool".to_owned(),
                format!("--pinned-memory-pool-byte-size={}", options.pinned_bytes),
                capacity,
                options.exhaustion,
            )
        };
        if driver::devices().is_empty() {
            return PinnedPool {
                pool: make(0),
                base: 0,
                driver: false,
            };
        }
        let capacity = options.pinned_bytes;
        let base = match usize::try_from(capacity) {
            Ok(0) => Ok(0),
            Ok(bytes) => host_alloc(bytes),
            Err(_) => Err(Error::invalid_arg("pinned pool larger than the address space")),
        };
        match base {
            Ok(base) => PinnedPool {
                pool: make(if base == 0 { 0 } else { capacity }),
                base,
                driver: true,
            },
            Err(e) => {
                log::error!("cannot create the pinned memory pool of {capacity} bytes: {e}; pinned memory is allocated per request");
                PinnedPool {
                    pool: make(0),
                    base: 0,
                    driver: true,
                }
            }
        }
    })
}

/// `cuMemHostAlloc` of `len` (> 0) portable bytes; the address.
fn host_alloc(len: usize) -> Result<usize> {
    bind(HOST_ALLOC_DEVICE)?;
    // SAFETY: a context is current (bind); the memory is only handed out
    // as bytes, which any content is valid for.
    let ptr = unsafe { result::malloc_host(len, sys::CU_MEMHOSTALLOC_PORTABLE) }
        .map_err(|e| Error::unavailable(describe(&format!("cuMemHostAlloc of {len} bytes"), e)))?;
    Ok(ptr as usize)
}

enum Pinned {
    /// A block of the pinned pool, at this address.
    Pool { ptr: *mut u8, block: Block },
    /// A separate `cuMemHostAlloc`.
    Host { ptr: *mut u8 },
    /// No driver: heap memory.
    Heap(Box<[u8]>),
}

/// Page-locked host memory of a fixed length: a block of the pinned pool,
/// a separate `cuMemHostAlloc` when the pool is full (per policy), or heap
/// memory without a driver. Dereferences to its bytes; a pool block's
/// initial contents are whatever its last user left (callers overwrite
/// what they hand out). Dropping it returns the memory.
///
/// A [`super::Stream::download`] into the buffer leaves a fence in it:
/// reading, writing, converting or dropping the buffer first waits for
/// that download, so the bytes seen are the downloaded ones and the
/// memory is never reused while the GPU writes it.
pub struct PinnedBuffer {
    storage: Pinned,
    len: usize,
    pending: Mutex<Option<CudaEvent>>,
}

// SAFETY: the buffer owns its memory exclusively (the raw pointers are
// into a pool block or a host allocation nobody else holds); shared access
// only reads it, and the pending fence is behind a Mutex.
unsafe impl Send for PinnedBuffer {}
// SAFETY: as for Send: `&PinnedBuffer` gives only reads of the bytes and
// locked access to the fence.
unsafe impl Sync for PinnedBuffer {}

/// Pinned host memory for `len` bytes (see [`PinnedBuffer`]). Fails only
/// under [`super::Exhaustion::Fail`] with the pool full, or when the
/// driver cannot allocate.
pub fn pinned(len: usize) -> Result<PinnedBuffer> {
    let pool = pinned_pool();
    let storage = if !pool.driver {
        pool.pool.count_fallback();
        Pinned::Heap(vec![0; len].into_boxed_slice())
    } else {
        match pool.pool.reserve(len)? {
            Grant::Block(block) => Pinned::Pool {
                ptr: (pool.base + block.offset as usize) as *mut u8,
                block,
            },
            Grant::Outside => Pinned::Host {
                ptr: host_alloc(len.max(1))? as *mut u8,
            },
        }
    };
    Ok(PinnedBuffer {
        storage,
        len,
        pending: Mutex::new(None),
    })
}

impl PinnedBuffer {
    /// Whether the memory is page-locked (false only for the no-driver
    /// heap fallback).
    pub fn is_pinned(&self) -> bool {
        !matches!(self.storage, Pinned::Heap(_))
    }

    /// The bytes as [`bytes::Bytes`] owned by this buffer (no copy); the
    /// memory returns to the pool when the last clone is dropped.
    pub fn into_bytes(self) -> bytes::Bytes {
        self.settle();
        bytes::Bytes::from_owner(self)
    }

    /// Waits for a download in flight into the buffer, if any.
    fn settle(&self) {
        let event = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(event) = event
            && let Err(e) = event.synchronize()
        {
            log::error!(
                "{}; the pinned buffer's contents are undefined",
                describe("waiting for a download (cuEventSynchronize)", e)
            );
        }
    }

    /// The start of the memory, without waiting for a download.
    fn raw(&self) -> *mut u8 {
        match &self.storage {
            Pinned::Pool { ptr, .. } | Pinned::Host { ptr } => *ptr,
            Pinned::Heap(b) => b.as_ptr().cast_mut(),
        }
    }

    /// Waits for earlier downloads, then hands the raw memory to `f`
    /// (which enqueues a download into it) and keeps `fence` (recorded
    /// after that download) as the buffer's pending work.
    pub(super) fn fenced<T>(
        &mut self,
        f: impl FnOnce(*mut u8, usize) -> Result<T>,
        fence: impl FnOnce() -> Result<CudaEvent>,
    ) -> Result<T> {
        self.settle();
        let out = f(self.raw(), self.len)?;
        let event = fence()?;
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some(event);
        Ok(out)
    }
}

impl Deref for PinnedBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.settle();
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `raw()` points to at least `len` bytes this buffer owns
        // (pool block lengths are rounded up, host allocations are of
        // max(len, 1), heap boxes of len); no download writes them any
        // more (settled), and writes need `&mut self`.
        unsafe { std::slice::from_raw_parts(self.raw(), self.len) }
    }
}

impl DerefMut for PinnedBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.settle();
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as in deref, with `&mut self` making the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.raw(), self.len) }
    }
}

impl AsRef<[u8]> for PinnedBuffer {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for PinnedBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.storage {
            Pinned::Pool { .. } => "pool",
            Pinned::Host { .. } => "host alloc",
            Pinned::Heap(_) => "heap",
        };
        write!(f, "PinnedBuffer({} bytes, {kind})", self.len)
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        self.settle();
        match self.storage {
            Pinned::Pool { block, .. } => pinned_pool().pool.release(block),
            Pinned::Host { ptr } => {
                if let Err(e) = bind(HOST_ALLOC_DEVICE) {
                    log::error!("freeing pinned memory: {e}");
                }
                // SAFETY: `ptr` came from cuMemHostAlloc (host_alloc), is
                // freed once (here), and no copy uses it any more
                // (settled; uploads stage through buffers their stream
                // keeps until synchronized).
                if let Err(e) = unsafe { result::free_host(ptr.cast()) } {
                    log::error!("{}", describe("cuMemFreeHost", e));
                }
            }
            Pinned::Heap(_) => {}
        }
    }
}

/// One GPU's pool: a `cuMemAlloc` arena.
struct DevicePool {
    device: i32,
    base: u64,
    pool: Pool,
    ctx: Arc<CudaContext>,
}

impl Drop for DevicePool {
    fn drop(&mut self) {
        if self.base == 0 {
            return;
        }
        if let Err(e) = self.ctx.bind_to_thread() {
            log::error!("GPU {}: {}", self.device, describe("cuCtxSetCurrent", e));
        }
        // SAFETY: `base` came from cuMemAlloc in device_pool and every
        // block of it has been returned (blocks hold an Arc of the pool).
        if let Err(e) = unsafe { result::free_sync(self.base) } {
            log::error!("GPU {}: {}", self.device, describe("cuMemFree_v2", e));
        }
    }
}

fn cuda_bytes(options: &PoolOptions, device: i32) -> u64 {
    options
        .cuda_bytes
        .iter()
        .find(|(gpu, _)| i64::from(*gpu) == i64::from(device))
        .map_or(PoolOptions::DEFAULT_CUDA_BYTES, |&(_, bytes)| bytes)
}

static DEVICE_POOLS: Mutex<Vec<Arc<DevicePool>>> = Mutex::new(Vec::new());

/// GPU `device`'s pool, created on first use (its context is current).
fn device_pool(device: i32, ctx: &Arc<CudaContext>) -> Arc<DevicePool> {
    let mut pools = DEVICE_POOLS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(pool) = pools.iter().find(|p| p.device == device) {
        return Arc::clone(pool);
    }
    let options = pool_options();
    let capacity = cuda_bytes(&options, device);
    let base = match usize::try_from(capacity) {
        Ok(0) | Err(_) => 0,
        // SAFETY: the device's context is current (the caller bound it);
        // the arena is only addressed through device pointers.
        Ok(bytes) => match unsafe { result::malloc_sync(bytes) } {
            Ok(ptr) => ptr,
            Err(e) => {
                log::error!(
                    "cannot create the CUDA memory pool of GPU {device} ({capacity} bytes): {}; \
                     device memory is allocated per request",
                    describe("cuMemAlloc_v2", e)
                );
                0
            }
        },
    };
    let pool = Arc::new(DevicePool {
        device,
        base,
        pool: Pool::new(
            format!("CUDA memory pool of GPU {device}"),
            format!("--cuda-memory-pool-byte-size={device}:{capacity}"),
            if base == 0 { 0 } else { capacity },
            options.exhaustion,
        ),
        ctx: Arc::clone(ctx),
    });
    pools.push(Arc::clone(&pool));
    pool
}

enum DeviceStorage {
    Pool { pool: Arc<DevicePool>, block: Block },
    Direct { ctx: Arc<CudaContext> },
}

/// Device memory on one GPU: a block of that GPU's pool, or a separate
/// `cuMemAlloc` when the pool is full (per policy). Freed on drop; whoever
/// enqueues work on it keeps it alive until that work is done (a
/// [`super::Stream`] holds its operands until synchronized).
pub struct DeviceBuffer {
    device: i32,
    ptr: u64,
    len: usize,
    storage: DeviceStorage,
}

/// `len` bytes of device memory on GPU `device`, uninitialized.
pub fn device_alloc(device: i32, len: usize) -> Result<DeviceBuffer> {
    let ctx = bind(device)?;
    let pool = device_pool(device, &ctx);
    let (ptr, storage) = match pool.pool.reserve(len)? {
        Grant::Block(block) => (
            pool.base + block.offset,
            DeviceStorage::Pool { pool, block },
        ),
        Grant::Outside => {
            // SAFETY: the device's context is current (bind above).
            let ptr = unsafe { result::malloc_sync(len.max(1)) }.map_err(|e| {
                Error::unavailable(format!(
                    "GPU {device}: {}",
                    describe(&format!("cuMemAlloc_v2 of {len} bytes"), e)
                ))
            })?;
            (ptr, DeviceStorage::Direct { ctx })
        }
    };
    Ok(DeviceBuffer {
        device,
        ptr,
        len,
        storage,
    })
}

impl DeviceBuffer {
    /// The GPU ordinal.
    pub fn device(&self) -> i32 {
        self.device
    }

    /// The device address.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer as [`DeviceBytes`] owning it: freed when the last clone
    /// is dropped.
    pub fn into_bytes(self) -> DeviceBytes {
        DeviceBytes::new(self.device, self.ptr, self.len, Arc::new(self))
    }
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceBuffer(gpu {} @ {:#x}, {} bytes)",
            self.device, self.ptr, self.len
        )
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        match &self.storage {
            DeviceStorage::Pool { pool, block } => pool.pool.release(*block),
            DeviceStorage::Direct { ctx } => {
                if let Err(e) = ctx.bind_to_thread() {
                    log::error!("GPU {}: {}", self.device, describe("cuCtxSetCurrent", e));
                }
                // SAFETY: `ptr` came from cuMemAlloc in device_alloc and is
                // freed once; no work uses it any more (see the type's doc).
                if let Err(e) = unsafe { result::free_sync(self.ptr) } {
                    log::error!("GPU {}: {}", self.device, describe("cuMemFree_v2", e));
                }
            }
        }
    }
}

/// Occupancy of the pools, for the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Pinned pool size in bytes.
    pub pinned_capacity: u64,
    /// Pinned bytes handed out.
    pub pinned_used: u64,
    /// Pinned requests served outside the pool because it was full (or,
    /// without a driver, from the heap).
    pub pinned_fallbacks: u64,
    /// One entry per GPU.
    pub devices: Vec<DevicePoolStats>,
}

/// One GPU's pool occupancy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevicePoolStats {
    /// GPU ordinal.
    pub device: i32,
    /// Pool size in bytes.
    pub capacity: u64,
    /// Bytes handed out.
    pub used: u64,
    /// Requests served outside the pool because it was full.
    pub fallbacks: u64,
}

/// The pools' occupancy now. A pool not created yet reports the size it
/// will have (none used); without a driver the pinned capacity is 0 and
/// there are no GPUs.
pub fn pool_stats() -> PoolStats {
    let options = pool_options();
    let has_gpus = !driver::devices().is_empty();
    let (pinned_capacity, pinned_used, pinned_fallbacks) = match PINNED_POOL.get() {
        Some(pinned) => pinned.pool.stats(),
        None if has_gpus => (options.pinned_bytes, 0, 0),
        None => (0, 0, 0),
    };
    let pools = DEVICE_POOLS.lock().unwrap_or_else(PoisonError::into_inner);
    let devices = driver::devices()
        .iter()
        .map(|d| match pools.iter().find(|p| p.device == d.ordinal) {
            Some(p) => {
                let (capacity, used, fallbacks) = p.pool.stats();
                DevicePoolStats {
                    device: d.ordinal,
                    capacity,
                    used,
                    fallbacks,
                }
            }
            None => DevicePoolStats {
                device: d.ordinal,
                capacity: cuda_bytes(&options, d.ordinal),
                used: 0,
                fallbacks: 0,
            },
        })
        .collect();
    PoolStats {
        pinned_capacity,
        pinned_used,
        pinned_fallbacks,
        devices,
    }
}

fn check_len(what: &str, src: usize, dst: usize) -> Result<()> {
    if src == dst {
        return Ok(());
    }
    Err(Error::invalid_arg(format!(
        "{what}: the source holds {src} bytes, the destination {dst}"
    )))
}

/// Copies device bytes into host memory; returns when the copy is done.
/// Work other streams enqueued on `src` must be complete (synchronized).
pub fn copy_to_host(src: &DeviceBytes, dst: &mut [u8]) -> Result<()> {
    check_len("copy to host", src.len(), dst.len())?;
    if dst.is_empty() {
        return Ok(());
    }
    bind(src.device())?;
    // SAFETY: `src` keeps `len` device bytes alive (its owner); `dst` is an
    // exclusive host slice of the same length; the copy is synchronous.
    unsafe { result::memcpy_dtoh_sync(dst, src.ptr()) }
        .map_err(|e| internal(&format!("GPU {}: cuMemcpyDtoH_v2", src.device()), e))
}

/// Copies host bytes to the device; returns when the copy is done.
pub fn copy_from_host(src: &[u8], dst: &DeviceBytes) -> Result<()> {
    check_len("copy from host", src.len(), dst.len())?;
    if src.is_empty() {
        return Ok(());
    }
    bind(dst.device())?;
    // SAFETY: `dst` keeps `len` device bytes alive (its owner); `src` is a
    // host slice of the same length; the copy is synchronous.
    unsafe { result::memcpy_htod_sync(dst.ptr(), src) }
        .map_err(|e| internal(&format!("GPU {}: cuMemcpyHtoD_v2", dst.device()), e))
}

/// Copies device bytes into a new [`PinnedBuffer`] and returns them as
/// [`bytes::Bytes`] owned by it (no further copy).
pub fn stage_to_host(src: &DeviceBytes) -> Result<bytes::Bytes> {
    let mut buffer = pinned(src.len())?;
    copy_to_host(src, &mut buffer)?;
    Ok(buffer.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Code;
    use crate::gpu::{DRIVER_PRESENT, require_gpu};

    #[test]
    fn pinned_without_a_driver_is_counted_heap_memory() {
        assert!(driver::init().is_err(), "{DRIVER_PRESENT}");
        let before = pool_stats().pinned_fallbacks;
        let mut b = pinned(1000).unwrap();
        assert!(!b.is_pinned());
        assert_eq!(b.len(), 1000);
        assert!(b.iter().all(|&x| x == 0));
        b[999] = 7;
        let bytes = b.into_bytes();
        assert_eq!((bytes.len(), bytes[999]), (1000, 7));
        let stats = pool_stats();
        assert!(stats.pinned_fallbacks > before);
        assert_eq!(stats.pinned_capacity, 0);
        assert!(stats.devices.is_empty());
        assert!(pinned(0).unwrap().is_empty());
    }

    #[test]
    fn device_paths_without_a_driver_say_so() {
        assert!(driver::init().is_err(), "{DRIVER_PRESENT}");
        let e = device_alloc(0, 16).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.message().starts_with("no CUDA driver"), "{e}");
        let fake = DeviceBytes::new(0, 0x1000, 4, Arc::new(()));
        let e = copy_to_host(&fake, &mut [0; 4]).unwrap_err();
        assert!(e.message().starts_with("no CUDA driver"), "{e}");
        assert!(stage_to_host(&fake).is_err());
        assert!(copy_from_host(&[0; 4], &fake).is_err());
    }

    #[test]
    fn lengths_are_checked_before_the_driver() {
        let fake = DeviceBytes::new(0, 0x1000, 4, Arc::new(()));
        let e = copy_to_host(&fake, &mut [0; 5]).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArg);
        assert_eq!(
            e.message(),
            "copy to host: the source holds 4 bytes, the destination 5"
        );
        let e = copy_from_host(&[0; 3], &fake).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArg);
    }

    #[test]
    fn cuda_pool_sizes_per_gpu() {
        let options = PoolOptions {
            cuda_bytes: vec![(1, 4096)],
            ..PoolOptions::default()
        };
        assert_eq!(cuda_bytes(&options, 1), 4096);
        assert_eq!(cuda_bytes(&options, 0), PoolOptions::DEFAULT_CUDA_BYTES);
    }

    #[test]
    #[ignore = "needs a CUDA driver: scripts/gpu/run.sh runs it"]
    fn round_trips_through_the_device() {
        require_gpu();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let dev = device_alloc(0, data.len()).unwrap().into_bytes();
        copy_from_host(&data, &dev).unwrap();
        let mut back = vec![0; data.len()];
        copy_to_host(&dev, &mut back).unwrap();
        assert_eq!(back, data);
        let staged = stage_to_host(&dev.slice(100, 50).unwrap()).unwrap();
        assert_eq!(&staged[..], &data[100..150]);
        let p = pinned(100).unwrap();
        assert!(p.is_pinned());
        let stats = pool_stats();
        assert!(
            stats.pinned_used >= 256 && stats.pinned_capacity > 0,
            "{stats:?}"
        );
        assert!(stats.devices[0].used >= 10_000, "{stats:?}");
        // Far larger than the default pool: a separate allocation.
        let big = device_alloc(0, 256 << 20).unwrap();
        assert_eq!(big.len(), 256 << 20);
    }
}
