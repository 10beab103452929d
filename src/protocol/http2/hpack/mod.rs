//! HPACK, header compression for HTTP/2 (RFC 7541): the static and dynamic
//! tables, the Huffman code, a block [`Decoder`] that never panics on
//! hostile input and bounds what it hands out, and a block [`Encoder`].
//!
//! Our own implementation: the crates available were either unmaintained
//! with a known panic on hostile input, or lacked Huffman encoding and a
//! bound on the decoded header list.
//!
//! Part of `protocol::http2`; calls nothing outside it.

mod decoder;
mod encoder;
mod huffman;
mod table;

pub use decoder::{DecodeError, Decoder, Outcome};
pub use encoder::Encoder;
pub use huffman::HuffmanError;

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn decode_all(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, DecodeError> {
        let mut out = Vec::new();
        let outcome = d.decode(block, usize::MAX, |n, v| {
            out.push((
                String::from_utf8(n.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            ));
        })?;
        assert_eq!(outcome, Outcome::Complete);
        Ok(out)
    }

    fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn table(d: &Decoder) -> Vec<(String, String)> {
        d.table_entries()
            .map(|(n, v)| {
                (
                    String::from_utf8(n.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    /// C.2: one field of each representation, each on a fresh decoder.
    #[test]
    fn rfc7541_c2_field_representations() {
        let cases: [(&str, (&str, &str), usize); 4] = [
            (
                "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
                ("custom-key", "custom-header"),
                55,
            ),
            (
                "040c 2f73 616d 706c 652f 7061 7468",
                (":path", "/sample/path"),
                0,
            ),
            (
                "1008 7061 7373 776f 7264 0673 6563 7265 74",
                ("password", "secret"),
                0,
            ),
            ("82", (":method", "GET"), 0),
        ];
        for (block, field, size) in cases {
            let mut d = Decoder::new(4096);
            assert_eq!(decode_all(&mut d, &hex(block)).unwrap(), owned(&[field]));
            assert_eq!(d.table_size(), size, "{block}");
        }
    }

    const REQ1: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ];
    const REQ2: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ];
    const REQ3: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];
    const DATE1: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
    const DATE2: &str = "Mon, 21 Oct 2013 20:13:22 GMT";
    const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
    const RESP1: &[(&str, &str)] = &[
        (":status", "302"),
        ("cache-control", "private"),
        ("date", DATE1),
        ("location", "https://www.example.com"),
    ];
    const RESP2: &[(&str, &str)] = &[
        (":status", "307"),
        ("cache-control", "private"),
        ("date", DATE1),
        ("location", "https://www.example.com"),
    ];
    const RESP3: &[(&str, &str)] = &[
        (":status", "200"),
        ("cache-control", "private"),
        ("date", DATE2),
        ("location", "https://www.example.com"),
        ("content-encoding", "gzip"),
        ("set-cookie", COOKIE),
    ];

    fn chain(
        table_size: usize,
        blocks: [&str; 3],
        lists: [&[(&str, &str)]; 3],
        tables: [&[(&str, &str)]; 3],
    ) {
        let mut d = Decoder::new(table_size);
        for i in 0..3 {
            assert_eq!(
                decode_all(&mut d, &hex(blocks[i])).unwrap(),
                owned(lists[i]),
                "block {i}"
            );
            assert_eq!(table(&d), owned(tables[i]), "table after block {i}");
            let size: usize = tables[i].iter().map(|(n, v)| n.len() + v.len() + 32).sum();
            assert_eq!(d.table_size(), size);
        }
    }

    const REQ_TABLES: [&[(&str, &str)]; 3] = [
        &[(":authority", "www.example.com")],
        &[
            ("cache-control", "no-cache"),
            (":authority", "www.example.com"),
        ],
        &[
            ("custom-key", "custom-value"),
            ("cache-control", "no-cache"),
            (":authority", "www.example.com"),
        ],
    ];
    const RESP_TABLES: [&[(&str, &str)]; 3] = [
        &[
            ("location", "https://www.example.com"),
            ("date", DATE1),
            ("cache-control", "private"),
            (":status", "302"),
        ],
        &[
            (":status", "307"),
            ("location", "https://www.example.com"),
            ("date", DATE1),
            ("cache-control", "private"),
        ],
        &[
            ("set-cookie", COOKIE),
            ("content-encoding", "gzip"),
            ("date", DATE2),
        ],
    ];

    #[test]
    fn rfc7541_c3_requests_without_huffman() {
        chain(
            4096,
            [
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ],
            [REQ1, REQ2, REQ3],
            REQ_TABLES,
        );
    }

    #[test]
    fn rfc7541_c4_requests_with_huffman() {
        chain(
            4096,
            [
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                "8286 84be 5886 a8eb 1064 9cbf",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ],
            [REQ1, REQ2, REQ3],
            REQ_TABLES,
        );
    }

    #[test]
    fn rfc7541_c5_responses_without_huffman() {
        chain(
            256,
            [
                "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
                 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
                 6c65 2e63 6f6d",
                "4803 3330 37c1 c0bf",
                "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d \
                 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 \
                 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e \
                 3d31",
            ],
            [RESP1, RESP2, RESP3],
            RESP_TABLES,
        );
    }

    #[test]
    fn rfc7541_c6_responses_with_huffman() {
        chain(
            256,
            [
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
                 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                "4883 640e ffc1 c0bf",
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
                 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
                 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ],
            [RESP1, RESP2, RESP3],
            RESP_TABLES,
        );
    }

    #[test]
    fn malformed_blocks_are_errors() {
        let cases: [(&str, DecodeError); 10] = [
            ("80", DecodeError::ZeroIndex),
            ("be", DecodeError::BadIndex(62)),
            (
                "3fe21f",
                DecodeError::SizeUpdateTooLarge {
                    requested: 4097,
                    allowed: 4096,
                },
            ),
            ("400a6375", DecodeError::Truncated),
            ("41", DecodeError::Truncated),
            ("3f", DecodeError::Truncated),
            ("ff", DecodeError::Truncated),
            ("ffffffffffff0f", DecodeError::IntegerOverflow),
            ("ff80808080808000", DecodeError::IntegerOverflow),
            ("8220", DecodeError::LateSizeUpdate),
        ];
        for (block, err) in cases {
            let mut d = Decoder::new(4096);
            assert_eq!(
                d.decode(&hex(block), usize::MAX, |_, _| {}),
                Err(err),
                "{block}"
            );
        }
        let mut d = Decoder::new(4096);
        // A literal whose Huffman value is eight bits of ones.
        assert!(matches!(
            d.decode(&hex("0001 6181 ff"), usize::MAX, |_, _| {}),
            Err(DecodeError::Huffman(HuffmanError::Padding))
        ));
    }

    #[test]
    fn size_update_at_the_start_evicts() {
        let mut d = Decoder::new(4096);
        decode_all(
            &mut d,
            &hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
        )
        .unwrap();
        assert_eq!(d.table_size(), 57);
        // Two updates (to 0, then back to 4096), then an indexed field.
        assert_eq!(
            decode_all(&mut d, &hex("20 3fe11f 82")).unwrap(),
            owned(&[(":method", "GET")])
        );
        assert_eq!(d.table_size(), 0);
        assert_eq!(
            d.decode(&hex("be"), usize::MAX, |_, _| {}),
            Err(DecodeError::BadIndex(62))
        );
    }

    #[test]
    fn header_list_limit_stops_output_but_keeps_the_table() {
        let mut d = Decoder::new(4096);
        let mut seen = Vec::new();
        // 42 + 43 fits in 100; the third field (:authority, 57) does not.
        let outcome = d
            .decode(
                &hex("8286 410f 7777 772e 6578 616d 706c 652e 636f 6d84"),
                100,
                |n, _| seen.push(n.to_vec()),
            )
            .unwrap();
        assert_eq!(outcome, Outcome::TooLarge);
        assert_eq!(seen, [b":method".to_vec(), b":scheme".to_vec()]);
        // The literal with indexing still entered the table.
        assert_eq!(d.table_size(), 57);
    }

    fn round_trip(e: &mut Encoder, d: &mut Decoder, list: &[(&str, &str)]) -> usize {
        let mut block = Vec::new();
        e.encode(
            list.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            &mut block,
        );
        assert_eq!(decode_all(d, &block).unwrap(), owned(list));
        block.len()
    }

    #[test]
    fn encoder_round_trips_and_compresses_repeats() {
        let mut e = Encoder::new(4096);
        let mut d = Decoder::new(4096);
        let grpc: &[(&str, &str)] = &[
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-accept-encoding", "identity,deflate,gzip"),
        ];
        let first = round_trip(&mut e, &mut d, grpc);
        let second = round_trip(&mut e, &mut d, grpc);
        assert_eq!(second, 3, "every field indexed the second time");
        assert!(first > second);
        let trailers: &[(&str, &str)] = &[("grpc-status", "0"), ("grpc-message", "it went\tok")];
        round_trip(&mut e, &mut d, trailers);
        round_trip(&mut e, &mut d, trailers);
        for list in [RESP1, RESP2, RESP3, REQ3] {
            round_trip(&mut e, &mut d, list);
        }
        // Binary values and long values survive as well.
        let binary: String = (1..=127u8).map(char::from).collect();
        let long = "x".repeat(10_000);
        round_trip(&mut e, &mut d, &[("a-bin", &binary), ("long", &long)]);
    }

    #[test]
    fn encoder_follows_peer_table_size() {
        let mut e = Encoder::new(4096);
        let mut d = Decoder::new(4096);
        round_trip(&mut e, &mut d, RESP1);
        assert!(d.table_size() > 0);
        // Peer shrinks to 0 and back to 100 between two blocks: both sizes
        // are announced, and the table empties.
        e.set_peer_max_table_size(0);
        e.set_peer_max_table_size(100);
        let mut block = Vec::new();
        e.encode([(":status", "200")], &mut block);
        assert_eq!(&block[..3], &[0x20, 0x3f, 0x45]);
        assert_eq!(
            decode_all(&mut d, &block).unwrap(),
            owned(&[(":status", "200")])
        );
        assert_eq!(d.table_size(), 0);
        round_trip(&mut e, &mut d, RESP3);
        assert!(d.table_size() <= 100);
        // An encoder with a smaller own limit announces it in its first block.
        let mut e = Encoder::new(0);
        let mut block = Vec::new();
        e.encode([("x", "y")], &mut block);
        assert_eq!(block[0], 0x20);
    }

    #[test]
    fn sensitive_fields_are_never_indexed() {
        let mut e = Encoder::new(4096);
        let mut block = Vec::new();
        e.encode([("authorization", "secret")], &mut block);
        // 0001 with the static name index 23 (needs the 4-bit prefix
        // extension).
        assert_eq!(&block[..2], &[0x1f, 0x08]);
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode_all(&mut d, &block).unwrap(),
            owned(&[("authorization", "secret")])
        );
        assert_eq!(d.table_size(), 0);
    }

    #[test]
    fn integers_round_trip() {
        for prefix in 1..=8u8 {
            for v in [
                0u64,
                1,
                30,
                31,
                127,
                128,
                255,
                1337,
                65535,
                1 << 20,
                u32::MAX as u64,
            ] {
                let mut buf = Vec::new();
                encoder::encode_integer(v, prefix, 0, &mut buf);
                let mut pos = 0;
                assert_eq!(decoder::decode_integer(&buf, &mut pos, prefix), Ok(v));
                assert_eq!(pos, buf.len());
            }
        }
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
        let mut buf = Vec::new();
        encoder::encode_integer(1337, 5, 0, &mut buf);
        assert_eq!(buf, [0x1f, 0x9a, 0x0a]);
    }

    /// The public HPACK test-case corpus (the `hpack-test-case` repository,
    /// its story files in one directory per encoder): every block of every
    /// story decodes to the listed headers, and the raw header lists survive
    /// our encoder. Needs the corpus, so it runs only when
    /// `HPACK_TEST_CASE_DIR` names a checkout:
    /// `HPACK_TEST_CASE_DIR=/path cargo test --lib hpack_test_case -- --ignored`.
    #[test]
    #[ignore = "needs the hpack-test-case corpus in HPACK_TEST_CASE_DIR"]
    fn hpack_test_case_corpus() {
        let root = std::env::var("HPACK_TEST_CASE_DIR").expect("HPACK_TEST_CASE_DIR");
        let mut stories = 0;
        for dir in std::fs::read_dir(&root).unwrap() {
            let dir = dir.unwrap().path();
            if !dir.is_dir() {
                continue;
            }
            let raw = dir.ends_with("raw-data");
            for file in std::fs::read_dir(&dir).unwrap() {
                let file = file.unwrap().path();
                if file.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let story: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
                let mut d = Decoder::new(65_536);
                let mut e = Encoder::new(4096);
                let mut check = Decoder::new(4096);
                for case in story["cases"].as_array().unwrap() {
                    let want: Vec<(String, String)> = case["headers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .flat_map(|h| h.as_object().unwrap().iter())
                        .map(|(n, v)| (n.clone(), v.as_str().unwrap().to_owned()))
                        .collect();
                    if !raw {
                        let wire = hex(case["wire"].as_str().unwrap());
                        let got = decode_all(&mut d, &wire)
                            .unwrap_or_else(|err| panic!("{}: {err}", file.display()));
                        assert_eq!(got, want, "{}", file.display());
                    }
                    let mut block = Vec::new();
                    e.encode(
                        want.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
                        &mut block,
                    );
                    assert_eq!(decode_all(&mut check, &block).unwrap(), want);
                }
                stories += 1;
            }
        }
        assert!(stories > 100, "only {stories} stories found under {root}");
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut d = Decoder::new(256);
        for round in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let block: Vec<u8> = (0..len)
                .map(|i| (seed.rotate_left(i as u32 * 5) >> 3) as u8)
                .collect();
            let _ = d.decode(&block, 1024, |_, _| {});
            if round % 1000 == 0 {
                d = Decoder::new(256);
            }
            assert!(d.table_size() <= 256);
        }
    }
}
