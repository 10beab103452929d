//! One mapping of a POSIX shared-memory object: `shm_open`, `fstat` to
//! learn its real size, `mmap` of the registered window, `close`. The
//! window may start at any offset: the mapping starts at the page below it
//! and the window is an offset into the mapping.

use std::ffi::CString;
use std::ptr::NonNull;

use crate::core::{Error, Result};

/// A shared, read-write mapping of `len` bytes of a shared-memory object,
/// unmapped on drop.
pub(super) struct SystemMapping {
    /// Start of the mapping (page aligned).
    base: NonNull<u8>,
    /// Length of the mapping.
    map_len: usize,
    /// Offset of the registered window in the mapping.
    skip: usize,
    /// Length of the registered window.
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value until drop; it
// is read through `bytes` and written through `write` with raw copies, and
// nothing in it is tied to the thread that mapped it.
unsafe impl Send for SystemMapping {}
// SAFETY: as above; concurrent readers only read, and `write` copies with
// raw pointers (no `&mut` is ever formed over the shared bytes).
unsafe impl Sync for SystemMapping {}

fn register_error(name: &str, why: impl std::fmt::Display) -> Error {
    Error::invalid_arg(format!(
        "failed to register shared memory region '{name}': {why}"
    ))
}

impl SystemMapping {
    /// Maps `byte_size` bytes at `offset` of object `key` for region
    /// `name`; the window must lie inside the object. The checks run in
    /// Triton's order, so a client sees the same first error: the object
    /// opens, then the window lies inside it ("invalid args"), then the
    /// window is not empty.
    pub(super) fn open(
        name: &str,
        key: &str,
        offset: u64,
        byte_size: u64,
    ) -> Result<SystemMapping> {
        let c_key = CString::new(key)
            .map_err(|_| register_error(name, format!("invalid shm key '{key}'")))?;
        // SAFETY: `c_key` is a valid NUL-terminated string; shm_open only
        // reads it. The returned descriptor is closed below on every path.
        let fd = unsafe { libc::shm_open(c_key.as_ptr(), libc::O_RDWR, 0) };
        if fd < 0 {
            log::debug!(
                "shm_open('{key}') failed: {}",
                std::io::Error::last_os_error()
            );
            return Err(Error::internal(format!(
                "Unable to open shared memory region: '{key}'"
            )));
        }
        let mapped = map_window(name, key, fd, offset, byte_size);
        // SAFETY: `fd` is the descriptor shm_open returned above, closed
        // exactly once; the mapping (if any) stays valid after close.
        unsafe { libc::close(fd) };
        mapped
    }

    /// Length of the registered window.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The registered window.
    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: `base + skip .. base + skip + len` lies inside the live
        // mapping (checked in `map_window`), which outlives `&self`. The
        // client process may change these bytes at any time: they are read
        // as plain bytes, never as typed values whose validity could break,
        // and the shared-memory contract leaves to the client not to write
        // a tensor while a request that reads it is in flight.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(self.skip), self.len) }
    }

    /// Copies `data` into the window at `offset` (the caller checked that
    /// it fits).
    pub(super) fn write(&self, offset: usize, data: &[u8]) {
        assert!(
            offset
                .checked_add(data.len())
                .is_some_and(|end| end <= self.len),
            "write outside the shared memory window"
        );
        // SAFETY: the destination range is inside the live, writable
        // mapping (asserted above); `data` is ordinary memory of this
        // process that cannot overlap a MAP_SHARED window we never hand
        // out mutably.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.base.as_ptr().add(self.skip + offset),
                data.len(),
            );
        }
    }
}

fn map_window(
    name: &str,
    key: &str,
    fd: i32,
    offset: u64,
    byte_size: u64,
) -> Result<SystemMapping> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is open; fstat fills `stat` on success, which is the
    // only case in which it is read.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
        return Err(Error::internal(format!(
            "Invalid shared memory region: '{key}'"
        )));
    }
    // SAFETY: fstat succeeded, so `stat` is initialized.
    let size = unsafe { stat.assume_init() }.st_size;
    let size = u64::try_from(size)
        .map_err(|_| Error::internal(format!("Invalid shared memory region: '{key}'")))?;
    let end = offset.checked_add(byte_size);
    if end.is_none_or(|end| end > size) {
        return Err(register_error(
            name,
            format!(
                "invalid args: offset {offset} + byte_size {byte_size} exceeds the {size} bytes of '{key}'"
            ),
        ));
    }
    if byte_size == 0 {
        return Err(register_error(
            name,
            "invalid args: byte_size must be greater than 0",
        ));
    }
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let start = offset - offset % page;
    let skip = offset - start;
    let map_len = usize::try_from(skip + byte_size)
        .map_err(|_| register_error(name, "the region does not fit the address space"))?;
    let map_offset =
        libc::off_t::try_from(start).map_err(|_| register_error(name, "offset out of range"))?;
    // SAFETY: a fresh shared mapping chosen by the kernel (no fixed
    // address), of a range inside the object (checked above); it is
    // unmapped exactly once, in Drop.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            map_offset,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(register_error(
            name,
            format!("unable to map it: {}", std::io::Error::last_os_error()),
        ));
    }
    let base = NonNull::new(addr.cast::<u8>())
        .ok_or_else(|| register_error(name, "mmap returned a null address"))?;
    Ok(SystemMapping {
        base,
        map_len,
        skip: skip as usize,
        len: byte_size as usize,
    })
}

impl Drop for SystemMapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`map_len` are exactly what mmap returned and
        // mapped; nothing borrows the mapping any more (every `Bytes` and
        // sink over it holds the Arc that owns this value).
        if unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_len) } != 0 {
            log::error!(
                "munmap of a shared memory region failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
