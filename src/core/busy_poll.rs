//! Adaptive busy polling: how long a thread that just did work keeps
//! polling for more before it sleeps (`--busy-poll-us`).
//!
//! Waking a sleeping thread (a futex, an eventfd read by `epoll_wait`) costs
//! tens of microseconds on a virtual machine, several times what a small GPU
//! request costs. An event loop that just served a request, and an instance
//! thread that just ran one, are likely to get the next piece of work (the
//! response coming back, the client's next request) within that window, so
//! they poll for it instead of sleeping. Only activity starts a window: an
//! idle server does not spin. Zero turns it off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Default window: long enough to catch a GPU request's completion and a
/// same-host client's next request, short enough to cost little CPU.
pub const DEFAULT: Duration = Duration::from_micros(50);

static WINDOW_NANOS: AtomicU64 = AtomicU64::new(DEFAULT.as_nanos() as u64);

/// Sets the window for every event loop and instance thread.
pub fn set(window: Duration) {
    WINDOW_NANOS.store(
        u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// The window now in force.
pub fn window() -> Duration {
    Duration::from_nanos(WINDOW_NANOS.load(Ordering::Relaxed))
}
