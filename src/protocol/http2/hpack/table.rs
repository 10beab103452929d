//! HPACK's indexing tables (RFC 7541 §2.3): the static table of Appendix A
//! and the dynamic table, a FIFO bounded by the byte size of its entries.
//!
//! Part of `protocol::http2::hpack`; calls nothing outside it.

use std::collections::VecDeque;

/// The static table (RFC 7541 Appendix A); index 1 is the first entry.
pub const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Per-entry overhead counted in a table's size (§4.1).
pub const ENTRY_OVERHEAD: usize = 32;

/// Size of an entry as §4.1 counts it.
pub fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + ENTRY_OVERHEAD
}

/// One entry of the dynamic table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: Box<[u8]>,
    value: Box<[u8]>,
}

/// The dynamic table: newest entry first, evicting the oldest to stay
/// within `max_size` bytes.
#[derive(Debug, Clone)]
pub struct DynamicTable {
    entries: VecDeque<Entry>,
    size: usize,
    max_size: usize,
}

impl DynamicTable {
    /// An empty table that may grow to `max_size` bytes.
    pub fn new(max_size: usize) -> DynamicTable {
        DynamicTable {
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes in use, as §4.1 counts them.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Current size limit.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Changes the size limit, evicting entries that no longer fit.
    pub fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    /// The entry at `i`, 0 being the newest (HPACK index 62).
    pub fn get(&self, i: usize) -> Option<(&[u8], &[u8])> {
        self.entries.get(i).map(|e| (&*e.name, &*e.value))
    }

    /// Adds an entry at the front, evicting old ones to make room. An entry
    /// larger than the whole table empties it and is not added (§4.4).
    pub fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = entry_size(name, value);
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.entries.push_front(Entry {
            name: name.into(),
            value: value.into(),
        });
        self.size += size;
    }

    /// Looks for `name: value`: the index (0-based, newest first) of an
    /// exact match, else of an entry with the same name.
    pub fn find(&self, name: &[u8], value: &[u8]) -> Option<(usize, bool)> {
        let mut name_only = None;
        for (i, e) in self.entries.iter().enumerate() {
            if &*e.name == name {
                if &*e.value == value {
                    return Some((i, true));
                }
                name_only.get_or_insert((i, false));
            }
        }
        name_only
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.entries.pop_back() {
                Some(e) => self.size -= entry_size(&e.name, &e.value),
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

/// Looks `name: value` up in the static table: the 1-based index of an
/// exact match, else of the first entry with the same name.
pub fn find_static(name: &[u8], value: &[u8]) -> Option<(usize, bool)> {
    let mut name_only = None;
    for (i, &(n, v)) in STATIC.iter().enumerate() {
        if n.as_bytes() == name {
            if v.as_bytes() == value {
                return Some((i + 1, true));
            }
            name_only.get_or_insert((i + 1, false));
        }
    }
    name_only
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_keeps_the_size_bound() {
        let mut t = DynamicTable::new(100);
        t.insert(b"aaaa", b"bbbb"); // 40
        t.insert(b"cccc", b"dddd"); // 80
        assert_eq!((t.len(), t.size()), (2, 80));
        t.insert(b"eeee", b"ffff"); // evicts the oldest
        assert_eq!((t.len(), t.size()), (2, 80));
        assert_eq!(t.get(0), Some((&b"eeee"[..], &b"ffff"[..])));
        assert_eq!(t.get(1), Some((&b"cccc"[..], &b"dddd"[..])));
        assert_eq!(t.find(b"cccc", b"x"), Some((1, false)));
        assert_eq!(t.find(b"eeee", b"ffff"), Some((0, true)));
        t.insert(&[b'x'; 80], b""); // larger than the table: empties it
        assert_eq!((t.len(), t.size()), (0, 0));
        t.insert(b"a", b"b");
        t.set_max_size(10);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn static_lookup() {
        assert_eq!(find_static(b":method", b"POST"), Some((3, true)));
        assert_eq!(find_static(b":status", b"503"), Some((8, false)));
        assert_eq!(
            find_static(b"content-type", b"application/grpc"),
            Some((31, false))
        );
        assert_eq!(find_static(b"grpc-status", b"0"), None);
    }
}
