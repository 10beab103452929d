//! Hand-rolled JSON output: string escaping and number formatting straight
//! into a `Vec<u8>`, so responses are built in one pass without an
//! intermediate `serde_json::Value` tree.
//!
//! Integers and floats are formatted by `serde_json`'s serializer (the same
//! shortest round-trip float algorithm and integer formatting it uses for
//! every document), driven per element into the output buffer.

use serde::Serializer as _;

/// Appends `s` as a JSON string literal (quotes included). JSON's special
/// characters are escaped; the rest is UTF-8 already and written as it is.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends `"key":` (the key escaped).
pub fn write_key(out: &mut Vec<u8>, key: &str) {
    write_str(out, key);
    out.push(b':');
}

/// Appends a signed integer.
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::Serializer::new(&mut *out).serialize_i64(v);
}

/// Appends an unsigned integer.
pub fn write_u64(out: &mut Vec<u8>, v: u64) {
    let _ = serde_json::Serializer::new(&mut *out).serialize_u64(v);
}

/// Appends a single-precision float in its shortest form that parses back
/// to the same `f32`. NaN and infinities, which JSON cannot express, are
/// written as `NaN`, `Infinity` and `-Infinity` (accepted by Python's
/// `json` module and by RapidJSON's NaN/Inf flag).
pub fn write_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        let _ = serde_json::Serializer::new(&mut *out).serialize_f32(v);
    } else {
        write_non_finite(out, v.is_nan(), v.is_sign_negative());
    }
}

/// Appends a double-precision float in its shortest round-trip form;
/// non-finite values as [`write_f32`] writes them.
pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let _ = serde_json::Serializer::new(&mut *out).serialize_f64(v);
    } else {
        write_non_finite(out, v.is_nan(), v.is_sign_negative());
    }
}

fn write_non_finite(out: &mut Vec<u8>, nan: bool, negative: bool) {
    out.extend_from_slice(match (nan, negative) {
        (true, _) => b"NaN".as_slice(),
        (false, false) => b"Infinity".as_slice(),
        (false, true) => b"-Infinity".as_slice(),
    });
}

/// Appends `true` or `false`.
pub fn write_bool(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

/// The body Triton answers errors with: `{"error":"<message>"}`.
pub fn error_body(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 12);
    out.extend_from_slice(b"{\"error\":");
    write_str(&mut out, message);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn strings_escape_like_serde() {
        for case in [
            "plain",
            "q\"uote",
            "back\\slash",
            "nl\n\r\t",
            "\u{1}\u{1f}x",
            "é✓",
        ] {
            let ours = s(|o| write_str(o, case));
            assert_eq!(ours, serde_json::to_string(case).unwrap(), "{case:?}");
            let back: String = serde_json::from_str(&ours).unwrap();
            assert_eq!(back, case);
        }
    }

    #[test]
    fn numbers_round_trip() {
        assert_eq!(s(|o| write_i64(o, -42)), "-42");
        assert_eq!(s(|o| write_u64(o, u64::MAX)), "18446744073709551615");
        for v in [0.1f32, 1.0, -3.5e-20, f32::MAX, f32::MIN_POSITIVE] {
            let text = s(|o| write_f32(o, v));
            assert_eq!(text.parse::<f64>().unwrap() as f32, v, "{text}");
        }
        for v in [0.1f64, 1e300, -2.2250738585072014e-308] {
            let text = s(|o| write_f64(o, v));
            assert_eq!(text.parse::<f64>().unwrap(), v, "{text}");
        }
        assert_eq!(s(|o| write_f32(o, f32::NAN)), "NaN");
        assert_eq!(s(|o| write_f64(o, f64::NEG_INFINITY)), "-Infinity");
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            String::from_utf8(error_body("bad \"x\"")).unwrap(),
            r#"{"error":"bad \"x\""}"#
        );
    }
}
