//! The outgoing byte queue of a connection state machine (HTTP/1.1 and
//! HTTP/2 alike): chunks waiting for the socket, handed out as `IoSlice`s
//! for one vectored write and consumed as the write reports progress.
//! Chunks are `Bytes`, so tensor payloads queue without being copied.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// Queued output, front first.
#[derive(Debug, Default)]
pub struct OutputQueue {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl OutputQueue {
    /// Appends a chunk (empty ones are dropped).
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Fills `slices` with the queued chunks, front first; returns how many
    /// were filled.
    pub fn fill<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, chunk) in slices.iter_mut().zip(self.chunks.iter()) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    /// Drops the first `n` bytes, which the socket has taken.
    pub fn consume(&mut self, mut n: usize) {
        self.len = self.len.saturating_sub(n);
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_writes_advance_across_chunks() {
        let mut q = OutputQueue::default();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::new());
        q.push(Bytes::from_static(b"defg"));
        assert_eq!(q.len(), 7);
        q.consume(4);
        let mut slices = [IoSlice::new(&[]); 4];
        let n = q.fill(&mut slices);
        assert_eq!(n, 1);
        assert_eq!(&*slices[0], b"efg");
        q.consume(3);
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
    }
}
