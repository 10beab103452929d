//! The allocator behind the pinned host pool and the device pools, kept
//! apart from CUDA so it is tested on plain numbers: an [`Arena`] hands out
//! byte ranges (offsets) of one big allocation, and a [`Pool`] adds the
//! lock, the exhaustion policy and the counters the metrics report.
//!
//! The arena is best-fit over a free list kept twice: free ranges by offset
//! (to find the neighbours a freed range coalesces with) and by (length,
//! offset) (to find the smallest range that fits). Both are B-trees, so an
//! allocation and a free are O(log n) in the number of free ranges. Every
//! range is a multiple of [`ALIGN`] long and starts at a multiple of it, so
//! a block is aligned whenever the arena's base address is (CUDA returns
//! page-aligned host memory and 256-byte-aligned device memory).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::Exhaustion;
use crate::core::{Error, Result};

/// Alignment of every block, in bytes.
pub const ALIGN: u64 = 256;

/// How often at most an exhausted pool logs under [`Exhaustion::Warn`].
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A range of an arena: `offset..offset + len`, `len` rounded up to
/// [`ALIGN`] (and at least [`ALIGN`], so even an empty request owns a
/// distinct range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Offset from the arena's base.
    pub offset: u64,
    /// Length reserved.
    pub len: u64,
}

/// Free-list bookkeeping of one arena of `capacity` bytes.
#[derive(Debug)]
pub struct Arena {
    capacity: u64,
    used: u64,
    by_offset: BTreeMap<u64, u64>,
    by_size: BTreeSet<(u64, u64)>,
}

impl Arena {
    /// An arena of `capacity` bytes, rounded down to [`ALIGN`], all free.
    pub fn new(capacity: u64) -> Arena {
        let capacity = capacity / ALIGN * ALIGN;
        let mut arena = Arena {
            capacity,
            used: 0,
            by_offset: BTreeMap::new(),
            by_size: BTreeSet::new(),
        };
        if capacity > 0 {
            arena.insert_free(0, capacity);
        }
        arena
    }

    /// Total bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes in allocated blocks.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The largest request that would fit now.
    pub fn largest_free(&self) -> u64 {
        self.by_size.last().map_or(0, |&(len, _)| len)
    }

    /// `len` rounded up to a whole number of [`ALIGN`] units (at least
    /// one); `None` on overflow.
    pub fn round(len: u64) -> Option<u64> {
        Some(len.max(1).checked_add(ALIGN - 1)? / ALIGN * ALIGN)
    }

    /// Reserves the smallest free range that holds `len` bytes; `None`
    /// when none does.
    pub fn alloc(&mut self, len: u64) -> Option<Block> {
        let need = Arena::round(len)?;
        let &(size, offset) = self.by_size.range((need, 0)..).next()?;
        self.remove_free(offset, size);
        if size > need {
            self.insert_free(offset + need, size - need);
        }
        self.used += need;
        Some(Block { offset, len: need })
    }

    /// Returns `block` to the free list, merged with free neighbours.
    ///
    /// # Panics
    /// When `block` overlaps free space or lies outside the arena: a
    /// double free, which the owning types rule out.
    pub fn free(&mut self, block: Block) {
        let Block {
            mut offset,
            mut len,
        } = block;
        assert!(
            offset + len <= self.capacity,
            "block {block:?} does not belong to this arena"
        );
        if let Some((&prev, &prev_len)) = self.by_offset.range(..offset).next_back() {
            assert!(prev + prev_len <= offset, "double free of {block:?}");
            if prev + prev_len == offset {
                self.remove_free(prev, prev_len);
                offset = prev;
                len += prev_len;
            }
        }
        if let Some((&next, &next_len)) = self.by_offset.range(block.offset..).next() {
            assert!(next >= block.offset + block.len, "double free of {block:?}");
            if next == block.offset + block.len {
                self.remove_free(next, next_len);
                len += next_len;
            }
        }
        self.insert_free(offset, len);
        self.used -= block.len;
    }

    /// Number of free ranges (fragmentation, for tests).
    pub fn free_ranges(&self) -> usize {
        self.by_offset.len()
    }

    fn insert_free(&mut self, offset: u64, len: u64) {
        self.by_offset.insert(offset, len);
        self.by_size.insert((len, offset));
    }

    fn remove_free(&mut self, offset: u64, len: u64) {
        self.by_offset.remove(&offset);
        self.by_size.remove(&(len, offset));
    }
}

/// What a [`Pool`] answers a request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// A block of the pool.
    Block(Block),
    /// No pool room: allocate outside it (already counted as a fallback
    /// when the pool exists but was full).
    Outside,
}

/// A thread-safe arena with an exhaustion policy and counters.
///
/// A pool of capacity 0 is "no pool" (the user turned it off): every
/// request is [`Grant::Outside`], never refused and not counted, since
/// nothing was exhausted. A pool that exists but cannot hold a request
/// applies the policy: [`Exhaustion::Fallback`] and [`Exhaustion::Warn`]
/// grant [`Grant::Outside`] and count it (`Warn` also logs, at most every
/// ten seconds), [`Exhaustion::Fail`] answers `Unavailable` with a message
/// naming `flag` (the command-line option that sizes the pool).
#[derive(Debug)]
pub struct Pool {
    what: String,
    flag: String,
    policy: Exhaustion,
    arena: Mutex<Arena>,
    fallbacks: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

impl Pool {
    /// A pool of `capacity` bytes; `what` names it in messages ("pinned
    /// memory pool"), `flag` is the option that sizes it as the user
    /// would write it (`--pinned-memory-pool-byte-size=268435456`).
    pub fn new(what: String, flag: String, capacity: u64, policy: Exhaustion) -> Pool {
        Pool {
            what,
            flag,
            policy,
            arena: Mutex::new(Arena::new(capacity)),
            fallbacks: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        }
    }

    /// A block for `len` bytes, or the policy's answer when none fits.
    pub fn reserve(&self, len: usize) -> Result<Grant> {
        let (capacity, free) = {
            let mut arena = self.arena.lock().unwrap_or_else(PoisonError::into_inner);
            if arena.capacity() == 0 {
                return Ok(Grant::Outside);
            }
            if let Some(block) = arena.alloc(len as u64) {
                return Ok(Grant::Block(block));
            }
            (arena.capacity(), arena.capacity() - arena.used())
        };
        let detail = format!(
            "{} exhausted: {len} bytes requested, {free} of {capacity} bytes free",
            self.what
        );
        match self.policy {
            Exhaustion::Fail => Err(Error::unavailable(format!(
                "{detail} ({}; --memory-pool-exhaustion=fail)",
                self.flag
            ))),
            Exhaustion::Fallback => {
                self.count_fallback();
                Ok(Grant::Outside)
            }
            Exhaustion::Warn => {
                self.count_fallback();
                if self.warning_due(Instant::now()) {
                    log::warn!(
                        "{detail}; allocating outside the pool (raise {}; \
                         this warning repeats at most every {}s)",
                        self.flag,
                        WARN_EVERY.as_secs()
                    );
                }
                Ok(Grant::Outside)
            }
        }
    }

    /// Returns a block [`Pool::reserve`] granted.
    pub fn release(&self, block: Block) {
        self.arena
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .free(block);
    }

    /// Counts an allocation made outside the pool for a reason of the
    /// caller's (no driver: heap memory instead of pinned).
    pub fn count_fallback(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// (capacity, used, fallbacks).
    pub fn stats(&self) -> (u64, u64, u64) {
        let arena = self.arena.lock().unwrap_or_else(PoisonError::into_inner);
        (
            arena.capacity(),
            arena.used(),
            self.fallbacks.load(Ordering::Relaxed),
        )
    }

    /// Whether a warning may be logged at `now` (and notes it if so).
    fn warning_due(&self, now: Instant) -> bool {
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *last {
            Some(at) if now.duration_since(at) < WARN_EVERY => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Code;

    fn check_invariants(a: &Arena) {
        let free: u64 = a.by_offset.values().sum();
        assert_eq!(free + a.used(), a.capacity());
        assert_eq!(a.by_offset.len(), a.by_size.len());
        let mut end = None;
        for (&o, &l) in &a.by_offset {
            assert!(a.by_size.contains(&(l, o)));
            assert_eq!(o % ALIGN, 0);
            assert_eq!(l % ALIGN, 0);
            // Free neighbours are always merged.
            assert!(
                end.is_none_or(|e| e < o),
                "uncoalesced or overlapping at {o}"
            );
            end = Some(o + l);
        }
    }

    #[test]
    fn alignment_and_rounding() {
        let base = 0x7f00_0000_1000u64;
        let mut a = Arena::new(4096 + 100);
        assert_eq!(a.capacity(), 4096);
        let x = a.alloc(1).unwrap();
        let y = a.alloc(0).unwrap();
        let z = a.alloc(257).unwrap();
        assert_eq!((x.len, y.len, z.len), (256, 256, 512));
        for b in [x, y, z] {
            assert_eq!((base + b.offset) % ALIGN, 0);
        }
        assert_ne!(x.offset, y.offset);
        assert_eq!(a.used(), 1024);
        assert_eq!(Arena::round(u64::MAX), None);
        assert!(a.alloc(u64::MAX).is_none());
        check_invariants(&a);
    }

    #[test]
    fn free_coalesces_with_both_neighbours() {
        let mut a = Arena::new(1024);
        let b: Vec<Block> = (0..4).map(|_| a.alloc(256).unwrap()).collect();
        assert!(a.alloc(1).is_none());
        a.release_all(&[b[0], b[2]]);
        assert_eq!(a.free_ranges(), 2);
        assert!(a.alloc(512).is_none(), "no 512-byte range is free yet");
        a.free(b[1]);
        assert_eq!(a.free_ranges(), 1);
        assert_eq!(a.largest_free(), 768);
        check_invariants(&a);
        a.free(b[3]);
        assert_eq!((a.free_ranges(), a.used(), a.largest_free()), (1, 0, 1024));
        check_invariants(&a);
    }

    #[test]
    fn best_fit_keeps_large_ranges_whole() {
        let mut a = Arena::new(4096);
        let small = a.alloc(256).unwrap();
        let _gap = a.alloc(256).unwrap();
        let big = a.alloc(1024).unwrap();
        let _tail = a.alloc(256).unwrap();
        a.free(small);
        a.free(big);
        // 256 free at 0, 1024 free in the middle, 2304 at the end: a
        // 256-byte request takes the hole at 0, not a piece of the others.
        assert_eq!(a.alloc(200).unwrap().offset, 0);
        assert_eq!(a.alloc(1000).unwrap().offset, big.offset);
        check_invariants(&a);
    }

    #[test]
    fn random_traffic_keeps_the_books() {
        let mut a = Arena::new(1 << 20);
        let mut live: Vec<Block> = Vec::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..5000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if seed.is_multiple_of(3) && !live.is_empty() {
                let i = (seed as usize / 3) % live.len();
                a.free(live.swap_remove(i));
            } else if let Some(b) = a.alloc(seed % 20_000) {
                assert!(
                    live.iter()
                        .all(|l| b.offset + b.len <= l.offset || l.offset + l.len <= b.offset)
                );
                live.push(b);
            }
        }
        check_invariants(&a);
        for b in live.drain(..) {
            a.free(b);
        }
        assert_eq!((a.used(), a.free_ranges()), (0, 1));
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn double_free_is_caught() {
        let mut a = Arena::new(1024);
        let b = a.alloc(256).unwrap();
        a.free(b);
        a.free(b);
    }

    fn pool(capacity: u64, policy: Exhaustion) -> Pool {
        Pool::new(
            "pinned memory pool".into(),
            "--pinned-memory-pool-byte-size=1024".into(),
            capacity,
            policy,
        )
    }

    #[test]
    fn fallback_policy_counts() {
        let p = pool(1024, Exhaustion::Fallback);
        let Grant::Block(b) = p.reserve(1024).unwrap() else {
            panic!("the pool is empty")
        };
        assert_eq!(p.reserve(1).unwrap(), Grant::Outside);
        assert_eq!(p.reserve(4096).unwrap(), Grant::Outside);
        assert_eq!(p.stats(), (1024, 1024, 2));
        p.release(b);
        assert!(matches!(p.reserve(1).unwrap(), Grant::Block(_)));
        assert_eq!(p.stats(), (1024, 256, 2));
    }

    #[test]
    fn warn_policy_counts_and_rate_limits() {
        let p = pool(256, Exhaustion::Warn);
        assert!(matches!(p.reserve(10).unwrap(), Grant::Block(_)));
        assert_eq!(p.reserve(10).unwrap(), Grant::Outside);
        assert_eq!(p.reserve(10).unwrap(), Grant::Outside);
        assert_eq!(p.stats().2, 2);
        let now = Instant::now();
        assert!(!p.warning_due(now), "the first fallback just warned");
        assert!(p.warning_due(now + WARN_EVERY));
        assert!(!p.warning_due(now + WARN_EVERY));
    }

    #[test]
    fn fail_policy_names_the_flag() {
        let p = pool(512, Exhaustion::Fail);
        assert!(matches!(p.reserve(300).unwrap(), Grant::Block(_)));
        let e = p.reserve(300).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert_eq!(
            e.message(),
            "pinned memory pool exhausted: 300 bytes requested, 0 of 512 bytes free \
             (--pinned-memory-pool-byte-size=1024; --memory-pool-exhaustion=fail)"
        );
        assert_eq!(p.stats(), (512, 512, 0));
    }

    #[test]
    fn no_pool_means_outside_uncounted_and_never_refused() {
        for policy in [Exhaustion::Fallback, Exhaustion::Warn, Exhaustion::Fail] {
            let p = pool(0, policy);
            assert_eq!(p.reserve(1 << 30).unwrap(), Grant::Outside);
            assert_eq!(p.stats(), (0, 0, 0));
        }
    }

    impl Arena {
        fn release_all(&mut self, blocks: &[Block]) {
            for &b in blocks {
                self.free(b);
            }
        }
    }
}
