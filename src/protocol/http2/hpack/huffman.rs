//! The static Huffman code of HPACK (RFC 7541 §5.2, Appendix B): encoding
//! with a bit accumulator, decoding four bits at a time through a
//! transition table built once from the code table.
//!
//! Part of `protocol::http2::hpack`; calls nothing outside it.

use std::sync::OnceLock;

/// The code of every symbol (0..=255, then EOS as 256), right-aligned, and
/// its length in bits: the data of RFC 7541 Appendix B.
#[rustfmt::skip]
const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28),
    (0xfffffe4, 28), (0xfffffe5, 28), (0xfffffe6, 28), (0xfffffe7, 28),
    (0xfffffe8, 28), (0xffffea, 24), (0x3ffffffc, 30), (0xfffffe9, 28),
    (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28), (0xfffffec, 28),
    (0xfffffed, 28), (0xfffffee, 28), (0xfffffef, 28), (0xffffff0, 28),
    (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28),
    (0xffffff4, 28), (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28),
    (0xffffff8, 28), (0xffffff9, 28), (0xffffffa, 28), (0xffffffb, 28),
    // ' ' .. '/'
    (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12),
    (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11),
    (0x3fa, 10), (0x3fb, 10), (0xf9, 8), (0x7fb, 11),
    (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6),
    // '0' .. '?'
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6),
    (0x1a, 6), (0x1b, 6), (0x1c, 6), (0x1d, 6),
    (0x1e, 6), (0x1f, 6), (0x5c, 7), (0xfb, 8),
    (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10),
    // '@' .. 'O'
    (0x1ffa, 13), (0x21, 6), (0x5d, 7), (0x5e, 7),
    (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7),
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7),
    (0x67, 7), (0x68, 7), (0x69, 7), (0x6a, 7),
    // 'P' .. '_'
    (0x6b, 7), (0x6c, 7), (0x6d, 7), (0x6e, 7),
    (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7),
    (0xfc, 8), (0x73, 7), (0xfd, 8), (0x1ffb, 13),
    (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6),
    // '`' .. 'o'
    (0x7ffd, 15), (0x3, 5), (0x23, 6), (0x4, 5),
    (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6),
    (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7),
    (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5),
    // 'p' .. DEL
    (0x2b, 6), (0x76, 7), (0x2c, 6), (0x8, 5),
    (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7),
    (0x79, 7), (0x7a, 7), (0x7b, 7), (0x7ffe, 15),
    (0x7fc, 11), (0x3ffd, 14), (0x1ffd, 13), (0xffffffc, 28),
    // 128 ..
    (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20),
    (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22), (0x7fffd9, 23),
    (0x3fffd6, 22), (0x7fffda, 23), (0x7fffdb, 23), (0x7fffdc, 23),
    (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23),
    (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22), (0x7fffe0, 23),
    (0xffffee, 24), (0x7fffe1, 23), (0x7fffe2, 23), (0x7fffe3, 23),
    (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23),
    (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23), (0xffffef, 24),
    // 160 ..
    (0x3fffda, 22), (0x1fffdd, 21), (0xfffe9, 20), (0x3fffdb, 22),
    (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21),
    (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22), (0xfffff0, 24),
    (0x1fffdf, 21), (0x3fffdf, 22), (0x7fffeb, 23), (0x7fffec, 23),
    (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21),
    (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23), (0x7fffef, 23),
    (0xfffea, 20), (0x3fffe2, 22), (0x3fffe3, 22), (0x3fffe4, 22),
    (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23),
    // 192 ..
    (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19),
    (0x3fffe7, 22), (0x7ffff2, 23), (0x3fffe8, 22), (0x1ffffec, 25),
    (0x3ffffe2, 26), (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27),
    (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24), (0x1ffffed, 25),
    (0x7fff2, 19), (0x1fffe3, 21), (0x3ffffe6, 26), (0x7ffffe0, 27),
    (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24),
    (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26),
    (0xffffffd, 28), (0x7ffffe3, 27), (0x7ffffe4, 27), (0x7ffffe5, 27),
    // 224 ..
    (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20), (0x1fffe6, 21),
    (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23),
    (0x3fffea, 22), (0x3fffeb, 22), (0x1ffffee, 25), (0x1ffffef, 25),
    (0xfffff4, 24), (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23),
    (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26), (0x3ffffed, 26),
    (0x7ffffe7, 27), (0x7ffffe8, 27), (0x7ffffe9, 27), (0x7ffffea, 27),
    (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27),
    (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26),
    // EOS
    (0x3fffffff, 30),
];

/// The end-of-string symbol; never valid inside a string.
const EOS: u16 = 256;

/// Length in bytes of `data` once Huffman-encoded.
pub fn encoded_len(data: &[u8]) -> usize {
    let bits: usize = data
        .iter()
        .map(|&b| usize::from(CODES[usize::from(b)].1))
        .sum();
    bits.div_ceil(8)
}

/// Appends the Huffman encoding of `data` to `dst`, padded with the most
/// significant bits of EOS (all ones) as §5.2 requires.
pub fn encode(data: &[u8], dst: &mut Vec<u8>) {
    dst.reserve(encoded_len(data));
    // Bits wait right-aligned in `acc`; at most 7 + 30 of them at a time.
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in data {
        let (code, len) = CODES[usize::from(b)];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            dst.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        let pad = 8 - bits;
        dst.push(((acc << pad) as u8) | ((1u8 << pad) - 1));
    }
}

/// Why a Huffman string did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HuffmanError {
    /// The EOS symbol appeared inside the string.
    Eos,
    /// The string ended inside a code with more than 7 bits of padding, or
    /// padding that is not the prefix of EOS.
    Padding,
}

/// One step of the four-bit decoder: from an internal node of the code
/// tree, after reading a nibble.
#[derive(Debug, Clone, Copy, Default)]
struct Step {
    /// Node reached (0 is the root).
    next: u8,
    /// Symbol completed on the way, if any (at most one: every code is at
    /// least five bits long).
    symbol: Option<u8>,
    /// The nibble walked into EOS.
    eos: bool,
}

/// The decoder tables: a transition per (node, nibble), and whether a
/// string may end at each node.
struct Tables {
    steps: Vec<[Step; 16]>,
    may_end: Vec<bool>,
}

/// A node of the code tree while it is built: children, each either an
/// internal node (`Ok`) or a symbol (`Err`).
type Children = [Option<Result<u8, u16>>; 2];

fn build_tables() -> Tables {
    // A complete prefix code over 257 symbols has exactly 256 internal
    // nodes, so their indices fit a u8.
    let mut nodes: Vec<Children> = vec![[None, None]];
    for (symbol, &(code, len)) in CODES.iter().enumerate() {
        let mut node = 0usize;
        for i in (0..len).rev() {
            let bit = ((code >> i) & 1) as usize;
            if i == 0 {
                nodes[node][bit] = Some(Err(symbol as u16));
            } else {
                node = match nodes[node][bit] {
                    Some(Ok(next)) => usize::from(next),
                    _ => {
                        nodes.push([None, None]);
                        let next = nodes.len() - 1;
                        nodes[node][bit] = Some(Ok(next as u8));
                        next
                    }
                };
            }
        }
    }
    debug_assert_eq!(nodes.len(), 256);

    // A string may end at the root, or part-way down the all-ones path
    // (the prefix of EOS) at most seven bits deep.
    let mut may_end = vec![false; nodes.len()];
    may_end[0] = true;
    let mut node = 0usize;
    for _ in 0..7 {
        match nodes[node][1] {
            Some(Ok(next)) => {
                node = usize::from(next);
                may_end[node] = true;
            }
            _ => break,
        }
    }

    let mut steps = vec![[Step::default(); 16]; nodes.len()];
    for (start, row) in steps.iter_mut().enumerate() {
        for (nibble, step) in row.iter_mut().enumerate() {
            let mut node = start;
            for i in (0..4).rev() {
                let bit = (nibble >> i) & 1;
                match nodes[node][bit] {
                    Some(Ok(next)) => node = usize::from(next),
                    Some(Err(EOS)) => {
                        step.eos = true;
                        node = 0;
                    }
                    Some(Err(symbol)) => {
                        step.symbol = Some(symbol as u8);
                        node = 0;
                    }
                    // The code is complete: every child exists.
                    None => node = 0,
                }
            }
            step.next = node as u8;
        }
    }
    Tables { steps, may_end }
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(build_tables)
}

/// Appends the decoding of the Huffman string `data` to `dst`.
pub fn decode(data: &[u8], dst: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let tables = tables();
    dst.reserve(data.len() * 8 / 5);
    let mut node = 0u8;
    for &byte in data {
        for nibble in [byte >> 4, byte & 0x0f] {
            let step = tables.steps[usize::from(node)][usize::from(nibble)];
            if step.eos {
                return Err(HuffmanError::Eos);
            }
            if let Some(symbol) = step.symbol {
                dst.push(symbol);
            }
            node = step.next;
        }
    }
    if tables.may_end[usize::from(node)] {
        Ok(())
    } else {
        Err(HuffmanError::Padding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_table_is_canonical_and_complete() {
        // Appendix B is a canonical code: ordered by (length, symbol), each
        // code is the previous one plus one, shifted to the new length. A
        // mistyped entry breaks the chain.
        let mut order: Vec<usize> = (0..CODES.len()).collect();
        order.sort_by_key(|&s| (CODES[s].1, s));
        let mut expected: u64 = 0;
        let mut prev_len = CODES[order[0]].1;
        for (i, &s) in order.iter().enumerate() {
            let (code, len) = CODES[s];
            if i > 0 {
                expected = (expected + 1) << (len - prev_len);
            }
            assert_eq!(u64::from(code), expected, "symbol {s}");
            prev_len = len;
        }
        // Complete: the last code is all ones.
        assert_eq!(expected, (1 << prev_len) - 1);
    }

    #[test]
    fn rfc_examples() {
        // RFC 7541 C.4.1 and C.6.1 literals.
        let cases: [(&str, &[u8]); 4] = [
            (
                "www.example.com",
                &[
                    0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
                ],
            ),
            ("no-cache", &[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf]),
            ("302", &[0x64, 0x02]),
            ("private", &[0xae, 0xc3, 0x77, 0x1a, 0x4b]),
        ];
        for (text, code) in cases {
            let mut enc = Vec::new();
            encode(text.as_bytes(), &mut enc);
            assert_eq!(enc, code, "{text}");
            assert_eq!(encoded_len(text.as_bytes()), code.len());
            let mut dec = Vec::new();
            decode(code, &mut dec).unwrap();
            assert_eq!(dec, text.as_bytes());
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let mut enc = Vec::new();
        encode(&all, &mut enc);
        let mut dec = Vec::new();
        decode(&enc, &mut dec).unwrap();
        assert_eq!(dec, all);
        for b in 0..=255u8 {
            let mut enc = Vec::new();
            encode(&[b, b, b], &mut enc);
            let mut dec = Vec::new();
            decode(&enc, &mut dec).unwrap();
            assert_eq!(dec, [b, b, b]);
        }
    }

    #[test]
    fn bad_padding_and_eos() {
        let mut out = Vec::new();
        // Eight bits of ones: padding longer than seven bits.
        assert_eq!(decode(&[0xff], &mut out), Err(HuffmanError::Padding));
        // '0' is 00000; padding with zeros is not the EOS prefix.
        assert_eq!(decode(&[0x00], &mut out), Err(HuffmanError::Padding));
        // Thirty ones: EOS itself.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xfc], &mut out),
            Err(HuffmanError::Eos)
        );
        // '0' then three ones of padding is fine.
        out.clear();
        assert_eq!(decode(&[0x07], &mut out), Ok(()));
        assert_eq!(out, b"0");
        out.clear();
        assert_eq!(decode(&[], &mut out), Ok(()));
        assert!(out.is_empty());
    }
}
