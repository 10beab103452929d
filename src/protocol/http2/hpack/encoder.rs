//! HPACK header block encoder (RFC 7541 §6) for the fields a server sends.
//!
//! Uses the static table, a dynamic table sized by the peer's
//! `SETTINGS_HEADER_TABLE_SIZE` (capped by our own limit), Huffman coding
//! where it is shorter, and "never indexed" for credentials. Table size
//! changes are announced at the start of the next block (§4.2).
//!
//! Part of `protocol::http2::hpack`; calls nothing outside it.

use super::huffman;
use super::table::{DynamicTable, entry_size, find_static};

/// The table size both sides start with (RFC 9113 §6.5.2).
const DEFAULT_TABLE_SIZE: usize = 4096;

/// Fields whose values are secrets: sent as "never indexed" so that no
/// intermediary stores them in a table.
const SENSITIVE: [&[u8]; 4] = [
    b"authorization",
    b"proxy-authorization",
    b"cookie",
    b"set-cookie",
];

/// Fields whose values change from message to message; indexing them
/// would only churn the table.
const VOLATILE: [&[u8]; 5] = [
    b"content-length",
    b"date",
    b"grpc-message",
    b"grpc-status-details-bin",
    b"etag",
];

/// The encoding side of one connection's HPACK context.
#[derive(Debug)]
pub struct Encoder {
    table: DynamicTable,
    /// The most we are willing to keep, whatever the peer allows.
    own_limit: usize,
    /// Size updates owed at the start of the next block: the smallest size
    /// the table went through since the last block, and its size now.
    pending: Option<(usize, usize)>,
}

impl Encoder {
    /// An encoder that keeps at most `own_limit` bytes of table, starting
    /// from the protocol's default of 4096 allowed by the peer.
    pub fn new(own_limit: usize) -> Encoder {
        let size = own_limit.min(DEFAULT_TABLE_SIZE);
        Encoder {
            table: DynamicTable::new(size),
            own_limit,
            pending: (size != DEFAULT_TABLE_SIZE).then_some((size, size)),
        }
    }

    /// Applies the peer's `SETTINGS_HEADER_TABLE_SIZE`.
    pub fn set_peer_max_table_size(&mut self, peer_max: usize) {
        let size = peer_max.min(self.own_limit);
        if size == self.table.max_size() {
            return;
        }
        let low = self.pending.map_or(size, |(low, _)| low.min(size));
        self.pending = Some((low, size));
        self.table.set_max_size(size);
    }

    /// Appends one header block holding `fields` to `dst`. Names must
    /// already be lowercase.
    pub fn encode<N, V>(&mut self, fields: impl IntoIterator<Item = (N, V)>, dst: &mut Vec<u8>)
    where
        N: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        if let Some((low, now)) = self.pending.take() {
            if low < now {
                encode_integer(low as u64, 5, 0x20, dst);
            }
            encode_integer(now as u64, 5, 0x20, dst);
        }
        for (name, value) in fields {
            self.encode_field(name.as_ref(), value.as_ref(), dst);
        }
    }

    fn encode_field(&mut self, name: &[u8], value: &[u8], dst: &mut Vec<u8>) {
        let sensitive = SENSITIVE.contains(&name);
        let in_static = find_static(name, value);
        if let Some((index, true)) = in_static {
            encode_integer(index as u64, 7, 0x80, dst);
            return;
        }
        let in_dynamic = self.table.find(name, value);
        if !sensitive && let Some((i, true)) = in_dynamic {
            encode_integer((62 + i) as u64, 7, 0x80, dst);
            return;
        }
        let name_index = match (in_static, in_dynamic) {
            (Some((i, _)), _) => Some(i),
            (None, Some((i, _))) => Some(62 + i),
            (None, None) => None,
        };
        let index_it = !sensitive
            && !VOLATILE.contains(&name)
            && entry_size(name, value) <= self.table.max_size() / 2;
        let (prefix, flags) = if index_it {
            (6, 0x40)
        } else if sensitive {
            (4, 0x10)
        } else {
            (4, 0x00)
        };
        match name_index {
            Some(i) => encode_integer(i as u64, prefix, flags, dst),
            None => {
                encode_integer(0, prefix, flags, dst);
                encode_string(name, dst);
            }
        }
        encode_string(value, dst);
        if index_it {
            self.table.insert(name, value);
        }
    }
}

/// Appends `value` as an integer with an N-bit prefix (§5.1); `flags` are
/// the bits above the prefix in the first byte.
pub fn encode_integer(value: u64, prefix_bits: u8, flags: u8, dst: &mut Vec<u8>) {
    let max_prefix = (1u64 << prefix_bits) - 1;
    if value < max_prefix {
        dst.push(flags | value as u8);
        return;
    }
    dst.push(flags | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 0x80 {
        dst.push((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    dst.push(rest as u8);
}

/// Appends a string literal (§5.2), Huffman-coded when that is shorter.
fn encode_string(s: &[u8], dst: &mut Vec<u8>) {
    let coded = huffman::encoded_len(s);
    if coded < s.len() {
        encode_integer(coded as u64, 7, 0x80, dst);
        huffman::encode(s, dst);
    } else {
        encode_integer(s.len() as u64, 7, 0x00, dst);
        dst.extend_from_slice(s);
    }
}
