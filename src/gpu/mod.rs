//! The only place that touches CUDA: device discovery, contexts, streams,
//! events, the pinned host pool and the per-GPU device pools, CUDA IPC
//! mappings and the NVRTC kernel cache. The driver is loaded at run time
//! (cudarc with dynamic loading), so the crate builds and its CPU tests pass
//! on a machine with no CUDA; without a driver every entry point answers a
//! clear "no CUDA driver" error instead.

#![allow(unsafe_code)]

pub mod kernels;

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

/// Sizes of the memory pools and what happens when one is full.
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
