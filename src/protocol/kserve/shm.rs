//! JSON bodies of the shared-memory extension's REST endpoints: register
//! requests (system: `key`, `offset`, `byte_size`; CUDA: `raw_handle.b64`,
//! `device_id`, `byte_size`) and status answers.

use serde_json::Value;

use super::json;
use crate::core::{Error, Result};
use crate::shm::{Kind, RegionStatus};

/// A system region registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemRegister {
    /// `shm_open` key.
    pub key: String,
    /// Offset of the region in the object.
    pub offset: u64,
    /// Size of the region.
    pub byte_size: u64,
}

/// A CUDA region registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaRegister {
    /// The decoded `cudaIpcMemHandle_t`.
    pub raw_handle: Vec<u8>,
    /// The GPU the memory is on.
    pub device_id: i64,
    /// Size of the region.
    pub byte_size: u64,
}

fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::invalid_arg(
            "Shared memory register request must be a JSON object",
        )),
        Err(e) => Err(Error::invalid_arg(format!(
            "failed to parse the request JSON buffer: {e}"
        ))),
    }
}

fn unsigned(map: &serde_json::Map<String, Value>, field: &str, required: bool) -> Result<u64> {
    match map.get(field) {
        None if required => Err(Error::invalid_arg(format!(
            "Shared memory register request has no '{field}' field"
        ))),
        None => Ok(0),
        Some(v) => v.as_u64().ok_or_else(|| {
            Error::invalid_arg(format!(
                "Unable to parse '{field}': attempt to access JSON non-unsigned-integer as unsigned-integer"
            ))
        }),
    }
}

/// Parses `{"key": ..., "offset": ..., "byte_size": ...}` (`offset`
/// optional).
pub fn parse_system_register(body: &[u8]) -> Result<SystemRegister> {
    let map = object(body)?;
    let key = match map.get("key") {
        None => {
            return Err(Error::invalid_arg(
                "Shared memory register request has no 'key' field",
            ));
        }
        Some(v) => v.as_str().ok_or_else(|| {
            Error::invalid_arg("Unable to parse 'key': attempt to access JSON non-string as string")
        })?,
    };
    Ok(SystemRegister {
        key: key.to_owned(),
        offset: unsigned(&map, "offset", false)?,
        byte_size: unsigned(&map, "byte_size", true)?,
    })
}

/// Parses `{"raw_handle": {"b64": ...}, "device_id": ..., "byte_size": ...}`.
pub fn parse_cuda_register(body: &[u8]) -> Result<CudaRegister> {
    let map = object(body)?;
    let b64 = map
        .get("raw_handle")
        .ok_or_else(|| {
            Error::invalid_arg("Shared memory register request has no 'raw_handle' field")
        })?
        .get("b64")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid_arg("'raw_handle' must hold a base64 string in 'b64'"))?;
    let raw_handle = base64_decode(b64).ok_or_else(|| {
        Error::invalid_arg("'raw_handle' must be a valid base64 encoded cudaIpcMemHandle_t")
    })?;
    let device_id = unsigned(&map, "device_id", true)?;
    Ok(CudaRegister {
        raw_handle,
        device_id: i64::try_from(device_id).unwrap_or(i64::MAX),
        byte_size: unsigned(&map, "byte_size", true)?,
    })
}

/// Standard base64 (RFC 4648, padding optional; line breaks and spaces
/// skipped, as perf_analyzer wraps the handle it sends). Written here rather
/// than taken from a crate: it decodes CUDA handles and the files of a
/// model load request, which do not justify a dependency.
pub(super) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    fn value(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let trimmed = text.trim_end_matches('=');
    if text.len() - trimmed.len() > 2 || trimmed.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    for chunk in trimmed.as_bytes().chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// The status answer: an array of regions.
pub fn status(kind: Kind, regions: &[RegionStatus]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + regions.len() * 96);
    out.push(b'[');
    for (i, r) in regions.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        json::write_key(&mut out, "name");
        json::write_str(&mut out, &r.name);
        match kind {
            Kind::System => {
                out.push(b',');
                json::write_key(&mut out, "key");
                json::write_str(&mut out, &r.key);
                out.extend_from_slice(b",\"offset\":");
                json::write_u64(&mut out, r.offset);
            }
            Kind::Cuda => {
                out.extend_from_slice(b",\"device_id\":");
                json::write_u64(&mut out, u64::try_from(r.device_id).unwrap_or(0));
            }
        }
        out.extend_from_slice(b",\"byte_size\":");
        json::write_u64(&mut out, r.byte_size);
        out.push(b'}');
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_bodies() {
        assert_eq!(
            parse_system_register(br#"{"key":"/k","offset":4,"byte_size":64}"#).unwrap(),
            SystemRegister {
                key: "/k".into(),
                offset: 4,
                byte_size: 64
            }
        );
        assert_eq!(
            parse_system_register(br#"{"key":"/k","byte_size":8}"#)
                .unwrap()
                .offset,
            0
        );
        let e = |b: &[u8]| parse_system_register(b).unwrap_err().message().to_owned();
        assert_eq!(
            e(br#"{"byte_size":8}"#),
            "Shared memory register request has no 'key' field"
        );
        assert_eq!(
            e(br#"{"key":"/k"}"#),
            "Shared memory register request has no 'byte_size' field"
        );
        assert!(e(br#"{"key":"/k","byte_size":-1}"#).contains("unsigned"));
        assert!(e(b"[1]").contains("JSON object"));
        assert!(e(b"{").contains("failed to parse"));

        let handle: Vec<u8> = (0..64).collect();
        let body = format!(
            r#"{{"raw_handle":{{"b64":"{}"}},"device_id":0,"byte_size":1024}}"#,
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw=="
        );
        let c = parse_cuda_register(body.as_bytes()).unwrap();
        assert_eq!((c.raw_handle, c.device_id, c.byte_size), (handle, 0, 1024));
        let e = |b: &[u8]| parse_cuda_register(b).unwrap_err().message().to_owned();
        assert!(
            e(br#"{"raw_handle":{"b64":"!!"},"device_id":0,"byte_size":1}"#).contains("base64")
        );
        assert!(e(br#"{"device_id":0,"byte_size":1}"#).contains("'raw_handle'"));
        assert!(e(br#"{"raw_handle":{"b64":"AA=="},"byte_size":1}"#).contains("'device_id'"));
    }

    #[test]
    fn base64_edges() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64_decode("Zm8").unwrap(), b"fo");
        assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
        assert!(base64_decode("Z").is_none());
        assert!(base64_decode("Zg===").is_none());
        assert_eq!(base64_decode("Zm9v\nYQ==\n").unwrap(), b"fooa");
        assert_eq!(base64_decode(" Zm9v\r\nYQ").unwrap(), b"fooa");
        assert!(base64_decode("Zm9v*YQ==").is_none());
    }

    #[test]
    fn status_bodies() {
        let r = RegionStatus {
            name: "in".into(),
            key: "/k".into(),
            offset: 0,
            device_id: 1,
            byte_size: 64,
        };
        assert_eq!(
            String::from_utf8(status(Kind::System, std::slice::from_ref(&r))).unwrap(),
            r#"[{"name":"in","key":"/k","offset":0,"byte_size":64}]"#
        );
        assert_eq!(
            String::from_utf8(status(Kind::Cuda, &[r])).unwrap(),
            r#"[{"name":"in","device_id":1,"byte_size":64}]"#
        );
        assert_eq!(status(Kind::System, &[]), b"[]");
    }
}
