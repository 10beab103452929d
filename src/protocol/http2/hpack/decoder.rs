//! HPACK header block decoder (RFC 7541 §3, §6).
//!
//! Decodes one complete header block at a time against the connection's
//! dynamic table. Hostile input ends in a [`DecodeError`], never a panic;
//! memory stays bounded by the block, the table size the connection
//! advertised and the header list limit the caller passes.
//!
//! Part of `protocol::http2::hpack`; calls nothing outside it.

use std::fmt;

use super::huffman::{self, HuffmanError};
use super::table::{DynamicTable, STATIC, entry_size};

/// Scratch buffers larger than this are given back after a block.
const KEEP_SCRATCH: usize = 16 * 1024;
/// Largest integer accepted in a representation; anything larger cannot
/// be a valid index, length or table size for this decoder.
const MAX_INTEGER: u64 = u32::MAX as u64;

/// Why a header block could not be decoded. Any of these is a connection
/// error of type COMPRESSION_ERROR: the dynamic table can no longer be
/// trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The block ended inside an integer or a string.
    Truncated,
    /// An integer larger than any valid value.
    IntegerOverflow,
    /// Index 0, which no representation may use.
    ZeroIndex,
    /// An index past the end of the static and dynamic tables.
    BadIndex(u64),
    /// A Huffman-coded string that does not decode.
    Huffman(HuffmanError),
    /// A dynamic table size update after the first field of a block.
    LateSizeUpdate,
    /// A dynamic table size update above the advertised limit.
    SizeUpdateTooLarge {
        /// Size the encoder asked for.
        requested: u64,
        /// `SETTINGS_HEADER_TABLE_SIZE` as advertised.
        allowed: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("header block ends inside a field"),
            DecodeError::IntegerOverflow => f.write_str("integer too large"),
            DecodeError::ZeroIndex => f.write_str("index 0"),
            DecodeError::BadIndex(i) => write!(f, "index {i} is past the end of the table"),
            DecodeError::Huffman(HuffmanError::Eos) => f.write_str("EOS inside a Huffman string"),
            DecodeError::Huffman(HuffmanError::Padding) => {
                f.write_str("invalid padding in a Huffman string")
            }
            DecodeError::LateSizeUpdate => {
                f.write_str("dynamic table size update after the first field")
            }
            DecodeError::SizeUpdateTooLarge { requested, allowed } => write!(
                f,
                "dynamic table size update to {requested}, above the limit of {allowed}"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// How a block that decoded compared with the header list limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every field was handed out.
    Complete,
    /// The list grew past the limit; fields from that point on were decoded
    /// (to keep the dynamic table right) but not handed out.
    TooLarge,
}

/// The decoding side of one connection's HPACK context.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// `SETTINGS_HEADER_TABLE_SIZE` as we advertised it: the most the
    /// peer's encoder may set the table to.
    max_allowed: usize,
    name: Vec<u8>,
    value: Vec<u8>,
}

/// Where a field's name comes from.
enum Name {
    /// Index into the static or dynamic table.
    Indexed(u64),
    /// A literal that follows.
    Literal,
}

impl Decoder {
    /// A decoder whose table may hold `max_table_size` bytes (the
    /// `SETTINGS_HEADER_TABLE_SIZE` we advertise).
    pub fn new(max_table_size: usize) -> Decoder {
        Decoder {
            table: DynamicTable::new(max_table_size),
            max_allowed: max_table_size,
            name: Vec::new(),
            value: Vec::new(),
        }
    }

    /// Bytes the dynamic table holds now.
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// The dynamic table's entries, newest first (for tests and
    /// diagnostics).
    pub fn table_entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        (0..self.table.len()).filter_map(|i| self.table.get(i))
    }

    /// Decodes one complete header block, handing each field to `emit` as
    /// (name, value) in order. Once the list size (§4.1 counting: name +
    /// value + 32 per field) passes `max_list_size`, the rest of the block
    /// is still decoded but not handed out, and the result says so.
    pub fn decode(
        &mut self,
        block: &[u8],
        max_list_size: usize,
        mut emit: impl FnMut(&[u8], &[u8]),
    ) -> Result<Outcome, DecodeError> {
        let mut pos = 0;
        let mut fields = false;
        let mut list_size = 0usize;
        let mut outcome = Outcome::Complete;
        let mut deliver = |name: &[u8], value: &[u8], outcome: &mut Outcome| {
            list_size = list_size.saturating_add(entry_size(name, value));
            if list_size > max_list_size {
                *outcome = Outcome::TooLarge;
            }
            if *outcome == Outcome::Complete {
                emit(name, value);
            }
        };
        while pos < block.len() {
            let first = block[pos];
            if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = decode_integer(block, &mut pos, 7)?;
                fields = true;
                match index {
                    0 => return Err(DecodeError::ZeroIndex),
                    1..=61 => {
                        let (n, v) = STATIC[(index - 1) as usize];
                        deliver(n.as_bytes(), v.as_bytes(), &mut outcome);
                    }
                    _ => {
                        let (n, v) = self
                            .table
                            .get((index - 62) as usize)
                            .ok_or(DecodeError::BadIndex(index))?;
                        deliver(n, v, &mut outcome);
                    }
                }
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3): only before any field.
                if fields {
                    return Err(DecodeError::LateSizeUpdate);
                }
                let size = decode_integer(block, &mut pos, 5)?;
                if size > self.max_allowed as u64 {
                    return Err(DecodeError::SizeUpdateTooLarge {
                        requested: size,
                        allowed: self.max_allowed,
                    });
                }
                self.table.set_max_size(size as usize);
            } else {
                // Literal field (§6.2): with incremental indexing (01),
                // without indexing (0000) or never indexed (0001).
                let (prefix, index_it) = if first & 0xc0 == 0x40 {
                    (6, true)
                } else {
                    (4, false)
                };
                fields = true;
                let name = match decode_integer(block, &mut pos, prefix)? {
                    0 => Name::Literal,
                    i => Name::Indexed(i),
                };
                self.name.clear();
                match name {
                    Name::Literal => read_string(block, &mut pos, &mut self.name)?,
                    Name::Indexed(i @ 1..=61) => self
                        .name
                        .extend_from_slice(STATIC[(i - 1) as usize].0.as_bytes()),
                    Name::Indexed(i) => {
                        let (n, _) = self
                            .table
                            .get((i - 62) as usize)
                            .ok_or(DecodeError::BadIndex(i))?;
                        self.name.extend_from_slice(n);
                    }
                }
                self.value.clear();
                read_string(block, &mut pos, &mut self.value)?;
                deliver(&self.name, &self.value, &mut outcome);
                if index_it {
                    self.table.insert(&self.name, &self.value);
                }
            }
        }
        if self.name.capacity() > KEEP_SCRATCH {
            self.name = Vec::new();
        }
        if self.value.capacity() > KEEP_SCRATCH {
            self.value = Vec::new();
        }
        Ok(outcome)
    }
}

/// Decodes an integer with an N-bit prefix (§5.1) starting at `*pos`.
pub fn decode_integer(block: &[u8], pos: &mut usize, prefix_bits: u8) -> Result<u64, DecodeError> {
    let first = *block.get(*pos).ok_or(DecodeError::Truncated)?;
    *pos += 1;
    let max_prefix = (1u64 << prefix_bits) - 1;
    let mut value = u64::from(first) & max_prefix;
    if value < max_prefix {
        return Ok(value);
    }
    let mut shift = 0u32;
    loop {
        let b = *block.get(*pos).ok_or(DecodeError::Truncated)?;
        *pos += 1;
        value += u64::from(b & 0x7f) << shift;
        if value > MAX_INTEGER {
            return Err(DecodeError::IntegerOverflow);
        }
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        // Four continuation bytes already carry 28 bits; a fifth with more
        // to follow (even zeros) is padding no encoder needs.
        if shift > 28 {
            return Err(DecodeError::IntegerOverflow);
        }
    }
}

/// Reads a string literal (§5.2) at `*pos` into `dst`, undoing Huffman
/// coding.
fn read_string(block: &[u8], pos: &mut usize, dst: &mut Vec<u8>) -> Result<(), DecodeError> {
    let huffman = block.get(*pos).ok_or(DecodeError::Truncated)? & 0x80 != 0;
    let len = decode_integer(block, pos, 7)?;
    let rest = &block[*pos..];
    if len > rest.len() as u64 {
        return Err(DecodeError::Truncated);
    }
    let data = &rest[..len as usize];
    *pos += data.len();
    if huffman {
        huffman::decode(data, dst).map_err(DecodeError::Huffman)
    } else {
        dst.extend_from_slice(data);
        Ok(())
    }
}
