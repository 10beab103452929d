//! The only place that touches CUDA: device discovery, contexts, streams,
//! events, the pinned host pool and the per-GPU device pools, CUDA IPC
//! mappings, GPU sampling for the metrics and the NVRTC kernel cache. The
//! driver is loaded at run time (cudarc with dynamic loading), so the crate
//! builds and its CPU tests pass on a machine with no CUDA; without a
//! driver every entry point answers a clear "no CUDA driver" error instead
//! (and [`pinned`] hands out ordinary heap memory, counted as a fallback).
//!
//! Layout: [`driver`] (loading, `cuInit`, devices, primary contexts),
//! [`arena`] (the pool allocator, CUDA-free), [`memory`] (pinned and
//! device buffers, the pools, synchronous copies), [`stream`] (streams and
//! their asynchronous copies), [`ipc`] (CUDA IPC mappings), [`nvml`] (GPU
//! utilization and memory), [`kernels`] (NVRTC).
//!
//! Who keeps memory alive while the GPU works on it: synchronous calls
//! return after the copy; a [`Stream`] holds its operands (device buffers
//! and host staging) until it is synchronized, and a [`PinnedBuffer`] that
//! a download is writing into waits for that download before it can be
//! read, written or freed.

#![allow(unsafe_code)]

pub mod arena;
pub mod driver;
pub mod ipc;
pub mod kernels;
pub mod memory;
pub mod nvml;
pub mod stream;

use std::sync::{Mutex, PoisonError};

pub use driver::{DeviceInfo, context, devices, init};
pub use ipc::IpcMapping;
pub use memory::{
    DeviceBuffer, DevicePoolStats, PinnedBuffer, PoolStats, copy_from_host, copy_to_host,
    device_alloc, pinned, pool_stats, stage_to_host,
};
pub use nvml::{GpuSample, sample};
pub use stream::Stream;

/// What a request does when a memory pool has no room for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Exhaustion {
    /// Allocate outside the pool, silently (counted in metrics).
    Fallback,
    /// Allocate outside the pool and log a warning (counted in metrics).
    #[default]
    Warn,
    /// Fail the allocation, and with it the request.
    Fail,
}

impl Exhaustion {
    /// Parses `fallback`, `warn` or `fail`.
    pub fn parse(s: &str) -> Option<Exhaustion> {
        match s {
            "fallback" => Some(Exhaustion::Fallback),
            "warn" => Some(Exhaustion::Warn),
            "fail" => Some(Exhaustion::Fail),
            _ => None,
        }
    }
}

/// Sizes of the memory pools and what happens when one is full. A size of
/// 0 turns that pool off: every allocation is then a separate one, never
/// refused by the policy and not counted as a fallback (nothing was
/// exhausted; see [`arena::Pool`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    /// Pinned host pool size (`--pinned-memory-pool-byte-size`).
    pub pinned_bytes: u64,
    /// Device pool size per GPU (`--cuda-memory-pool-byte-size`); GPUs not
    /// listed get [`PoolOptions::DEFAULT_CUDA_BYTES`].
    pub cuda_bytes: Vec<(u32, u64)>,
    /// Policy on exhaustion.
    pub exhaustion: Exhaustion,
}

impl PoolOptions {
    /// Default pinned pool: 256 MiB, as Triton's.
    pub const DEFAULT_PINNED_BYTES: u64 = 256 << 20;
    /// Default device pool per GPU: 64 MiB, as Triton's.
    pub const DEFAULT_CUDA_BYTES: u64 = 64 << 20;
}

impl Default for PoolOptions {
    fn default() -> PoolOptions {
        PoolOptions {
            pinned_bytes: PoolOptions::DEFAULT_PINNED_BYTES,
            cuda_bytes: Vec::new(),
            exhaustion: Exhaustion::default(),
        }
    }
}

static POOL_OPTIONS: Mutex<Option<PoolOptions>> = Mutex::new(None);

/// Sets the pool sizes and policy; called once at server start, before
/// any allocation. Pools are created lazily (the pinned pool on the first
/// [`pinned`] call, a device pool on the first [`device_alloc`] on its
/// GPU), so a server that never touches a GPU allocates nothing; a pool
/// already created keeps the options it was created with.
pub fn configure_pools(options: &PoolOptions) {
    *POOL_OPTIONS.lock().unwrap_or_else(PoisonError::into_inner) = Some(options.clone());
}

/// The options pools are created with: those of [`configure_pools`], or
/// the defaults.
pub(crate) fn pool_options() -> PoolOptions {
    POOL_OPTIONS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .unwrap_or_default()
}

/// Panics unless a usable driver with at least one GPU is present. GPU-only
/// tests are `#[ignore]`d (reported as ignored, with the reason, by a plain
/// `cargo test`) and run with `--include-ignored` where there is a GPU
/// (scripts/gpu/run.sh), so there a missing driver is a failure, not a pass.
#[cfg(test)]
pub(crate) fn require_gpu() {
    if let Err(e) = init() {
        panic!(
            "this GPU test needs a CUDA driver (scripts/gpu/run.sh runs it on a GPU machine): {e}"
        );
    }
    assert!(
        !devices().is_empty(),
        "this GPU test needs a GPU; the CUDA driver reports none"
    );
}

/// What the `without_a_driver` tests fail with on a machine that has a CUDA
/// driver: they check what a machine without one answers, which cannot be
/// checked there (scripts/gpu/run.sh skips them on GPU machines and counts
/// them as skipped).
#[cfg(test)]
pub(crate) const DRIVER_PRESENT: &str = "this test checks a machine without a CUDA driver, and this one has one: run it where there is none (scripts/gpu/run.sh skips the without_a_driver tests)";
