//! A CUDA stream of one's own (one per GPU model instance) and the
//! asynchronous copies enqueued on it.
//!
//! Lifetimes of the operands are the stream's business, so callers cannot
//! get them wrong: every copy keeps a clone of its device operands
//! ([`DeviceBytes`] own their memory), and an upload first copies its host
//! bytes into a pinned staging buffer the stream keeps (the copy the driver
//! makes anyway for pageable memory); all of these are released by
//! [`Stream::synchronize`] once the work enqueued before it is done. A
//! download writes into a [`PinnedBuffer`] and leaves a fence in it, so the
//! buffer waits for the download before it is read or freed.

use std::sync::{Arc, Mutex, PoisonError};

use cudarc::driver::result;
use cudarc::driver::{CudaEvent, CudaStream};

use super::driver::{bind, context, describe, internal};
use super::memory::{PinnedBuffer, pinned};
use crate::core::{DeviceBytes, Error, Result};

/// What the stream keeps alive until it is synchronized (held, never
/// read).
enum Operand {
    Device { _bytes: DeviceBytes },
    Host { _staging: PinnedBuffer },
}

/// A non-blocking stream on one GPU.
pub struct Stream {
    device: i32,
    cuda: Arc<CudaStream>,
    operands: Mutex<Vec<Operand>>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stream(gpu {})", self.device)
    }
}

impl Stream {
    /// A new non-blocking stream in `device`'s primary context.
    pub fn new(device: i32) -> Result<Stream> {
        let ctx = context(device)?;
        let cuda = ctx
            .new_stream()
            .map_err(|e| internal(&format!("GPU {device}: cuStreamCreate"), e))?;
        Ok(Stream {
            device,
            cuda,
            operands: Mutex::new(Vec::new()),
        })
    }

    /// The GPU ordinal.
    pub fn device(&self) -> i32 {
        self.device
    }

    /// The cudarc stream, for kernel launches. Work launched on it that
    /// reads or writes memory must keep that memory alive until
    /// [`Stream::synchronize`] returns (or hand it to [`Stream::keep`]).
    pub fn cuda(&self) -> &Arc<CudaStream> {
        &self.cuda
    }

    /// Keeps `bytes` alive until the next [`Stream::synchronize`]: for
    /// device memory that kernels launched on [`Stream::cuda`] use.
    pub fn keep(&self, bytes: &DeviceBytes) {
        self.hold([Operand::Device {
            _bytes: bytes.clone(),
        }]);
    }

    fn hold<const N: usize>(&self, operands: [Operand; N]) {
        self.operands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(operands);
    }

    fn check(&self, what: &str, bytes: &DeviceBytes) -> Result<()> {
        if bytes.device() == self.device {
            return Ok(());
        }
        Err(Error::invalid_arg(format!(
            "{what}: the {bytes:?} is not on GPU {}, the stream's",
            self.device
        )))
    }

    fn check_len(what: &str, src: usize, dst: usize) -> Result<()> {
        if src == dst {
            return Ok(());
        }
        Err(Error::invalid_arg(format!(
            "{what}: the source holds {src} bytes, the destination {dst}"
        )))
    }

    /// Enqueues a copy of `src` to `dst`. `src` is first copied into a
    /// pinned staging buffer that the stream keeps until synchronized, so
    /// `src` may be dropped or reused as soon as this returns.
    pub fn upload(&self, src: &[u8], dst: &DeviceBytes) -> Result<()> {
        Self::check_len("upload", src.len(), dst.len())?;
        self.check("upload", dst)?;
        if src.is_empty() {
            return Ok(());
        }
        let mut staging = pinned(src.len())?;
        staging.copy_from_slice(src);
        bind(self.device)?;
        // SAFETY: `staging` (page-locked, `len` bytes) and `dst` (kept
        // alive by its owner) stay alive until the copy is done: both are
        // held by the stream until synchronize.
        unsafe { result::memcpy_htod_async(dst.ptr(), &staging, self.cuda.cu_stream()) }
            .map_err(|e| internal(&format!("GPU {}: cuMemcpyHtoDAsync_v2", self.device), e))?;
        self.hold([
            Operand::Host { _staging: staging },
            Operand::Device {
                _bytes: dst.clone(),
            },
        ]);
        Ok(())
    }

    /// Enqueues a copy of `src` into `dst`; `dst` waits for it before it
    /// can be read, written or freed (see [`PinnedBuffer`]).
    pub fn download(&self, src: &DeviceBytes, dst: &mut PinnedBuffer) -> Result<()> {
        Self::check_len("download", src.len(), dst.len())?;
        self.check("download", src)?;
        if src.is_empty() {
            return Ok(());
        }
        bind(self.device)?;
        let stream = self.cuda.cu_stream();
        dst.fenced(
            |ptr, len| {
                // SAFETY: `ptr` is `len` bytes of host memory owned by
                // `dst`, which cannot be read or freed before the fence
                // recorded after this copy completes; `src` is held by the
                // stream until synchronize.
                unsafe {
                    let dst = std::slice::from_raw_parts_mut(ptr, len);
                    result::memcpy_dtoh_async(dst, src.ptr(), stream)
                }
                .map_err(|e| internal(&format!("GPU {}: cuMemcpyDtoHAsync_v2", self.device), e))
            },
            || {
                self.record().inspect_err(|_| {
                    // No fence: wait here instead, so `dst` is not freed
                    // under the copy.
                    if let Err(e) = self.cuda.synchronize() {
                        log::error!(
                            "GPU {}: {}",
                            self.device,
                            describe("cuStreamSynchronize", e)
                        );
                    }
                })
            },
        )?;
        self.hold([Operand::Device {
            _bytes: src.clone(),
        }]);
        Ok(())
    }

    /// Enqueues a device-to-device copy (`dst` may be on another GPU).
    pub fn copy(&self, src: &DeviceBytes, dst: &DeviceBytes) -> Result<()> {
        Self::check_len("device copy", src.len(), dst.len())?;
        self.check("device copy", src)?;
        if src.is_empty() {
            return Ok(());
        }
        let ctx = bind(self.device)?;
        let stream = self.cuda.cu_stream();
        let done = if dst.device() == self.device {
            // SAFETY: both ranges are `len` bytes kept alive by their
            // owners, held by the stream until synchronize.
            unsafe { result::memcpy_dtod_async(dst.ptr(), src.ptr(), src.len(), stream) }
                .map_err(|e| describe("cuMemcpyDtoDAsync_v2", e))
        } else {
            let dst_ctx = context(dst.device())?;
            // SAFETY: as above; the contexts are the two GPUs' primary
            // contexts, alive for the process.
            unsafe {
                result::memcpy_peer_async(
                    dst_ctx.cu_ctx(),
                    dst.ptr(),
                    ctx.cu_ctx(),
                    src.ptr(),
                    src.len(),
                    stream,
                )
            }
            .map_err(|e| describe("cuMemcpyPeerAsync", e))
        };
        done.map_err(|e| Error::internal(format!("GPU {}: {e}", self.device)))?;
        self.hold([
            Operand::Device {
                _bytes: src.clone(),
            },
            Operand::Device {
                _bytes: dst.clone(),
            },
        ]);
        Ok(())
    }

    fn record(&self) -> Result<CudaEvent> {
        self.cuda
            .record_event(None)
            .map_err(|e| internal(&format!("GPU {}: cuEventRecord", self.device), e))
    }

    /// Waits for the work enqueued so far, via an event recorded now, then
    /// releases the operands of that work.
    pub fn synchronize(&self) -> Result<()> {
        let operands =
            std::mem::take(&mut *self.operands.lock().unwrap_or_else(PoisonError::into_inner));
        let done = self.record().and_then(|event| {
            event
                .synchronize()
                .map_err(|e| internal(&format!("GPU {}: cuEventSynchronize", self.device), e))
        });
        if done.is_err() {
            // Not known to be finished: keep them for a later attempt.
            self.hold_all(operands);
        }
        done
    }

    fn hold_all(&self, operands: Vec<Operand>) {
        self.operands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(operands);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Err(e) = self.synchronize() {
            log::error!("dropping the stream of GPU {}: {e}", self.device);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Code;
    use crate::gpu::{DRIVER_PRESENT, device_alloc, require_gpu};

    #[test]
    fn without_a_driver_streams_say_so() {
        assert!(crate::gpu::init().is_err(), "{DRIVER_PRESENT}");
        let e = Stream::new(0).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.message().starts_with("no CUDA driver"), "{e}");
    }

    #[test]
    #[ignore = "needs a CUDA driver: scripts/gpu/run.sh runs it"]
    fn async_round_trip() {
        require_gpu();
        let stream = Stream::new(0).unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let a = device_alloc(0, data.len()).unwrap().into_bytes();
        let b = device_alloc(0, data.len()).unwrap().into_bytes();
        stream.upload(&data, &a).unwrap();
        stream.copy(&a, &b).unwrap();
        let mut out = pinned(data.len()).unwrap();
        stream.download(&b, &mut out).unwrap();
        drop((a, b));
        // Reading waits for the download; the stream kept a and b alive.
        assert!(out[..] == data[..]);
        stream.synchronize().unwrap();
        let e = stream.upload(&data[1..], &device_alloc(0, 4).unwrap().into_bytes());
        assert_eq!(e.unwrap_err().code(), Code::InvalidArg);
    }

    #[test]
    #[ignore = "needs a CUDA driver: scripts/gpu/run.sh runs it"]
    fn streams_on_many_threads_keep_their_data_apart() {
        require_gpu();
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                std::thread::spawn(move || {
                    let stream = Stream::new(0).unwrap();
                    for i in 0..50usize {
                        let len = 1 + (i * 7919 + usize::from(t) * 104_729) % 300_000;
                        let data: Vec<u8> = (0..len).map(|j| (j as u8) ^ t ^ (i as u8)).collect();
                        let dev = device_alloc(0, len).unwrap().into_bytes();
                        stream.upload(&data, &dev).unwrap();
                        let mut out = pinned(len).unwrap();
                        stream.download(&dev, &mut out).unwrap();
                        let out = out.into_bytes();
                        assert!(out[..] == data[..], "thread {t} round {i}");
                    }
                    stream.synchronize().unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
