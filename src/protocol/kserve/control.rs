//! JSON bodies of the endpoints other than inference: server and model
//! metadata, the repository index and its load/unload requests, and the
//! logging and trace settings. Writers produce the bodies Triton sends
//! (same keys, same order, same value types: trace values are strings,
//! versions are strings); readers accept the bodies Triton accepts and
//! refuse the rest with Triton's wording. Faults in a repository request
//! (index, load, unload) are the client's: 400, where Triton answers some
//! with 500; the settings bodies keep Triton's codes.

use serde_json::Value;

use super::decode::parse_leading_int;
use super::json;
use super::shm::base64_decode;
use crate::core::{Code, Error, Result};
use crate::logging::LogSettings;
use crate::repository::IndexEntry;
use crate::scheduler::stats::{ModelStats, StatDuration};
use crate::server::{
    Change, LogUpdate, ModelMetadata, ServerMetadata, TensorMetadata, TraceLevel, TraceMode,
    TraceSettings, TraceUpdate,
};

const NON_STRING: &str = "attempt to access JSON non-string as string";
const NON_BOOL: &str = "attempt to access JSON non-boolean as boolean";
const NON_UINT: &str = "attempt to access JSON non-unsigned-integer as unsigned-integer";
const NON_ARRAY: &str = "attempt to access JSON non-array as array";
const NON_OBJECT_MEMBERS: &str = "attempt to get members for non-object";

fn internal(message: impl Into<String>) -> Error {
    Error::new(Code::Internal, message)
}

/// Parses a control request body. A malformed one is refused with
/// Triton's message, as the client's error (400; Triton answers 500).
pub fn parse_body(body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body)
        .map_err(|e| Error::invalid_arg(format!("failed to parse the request JSON buffer: {e}")))
}

/// `{"name":...,"version":...,"extensions":[...]}`.
pub fn server_metadata(m: &ServerMetadata) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"name\":");
    json::write_str(&mut out, &m.name);
    out.extend_from_slice(b",\"version\":");
    json::write_str(&mut out, &m.version);
    out.extend_from_slice(b",\"extensions\":[");
    for (i, e) in m.extensions.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_str(&mut out, e);
    }
    out.extend_from_slice(b"]}");
    out
}

fn write_tensors(out: &mut Vec<u8>, tensors: &[TensorMetadata]) {
    out.push(b'[');
    for (i, t) in tensors.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        json::write_str(out, &t.name);
        out.extend_from_slice(b",\"datatype\":");
        json::write_str(out, t.datatype);
        out.extend_from_slice(b",\"shape\":[");
        for (j, &d) in t.shape.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            json::write_i64(out, d);
        }
        out.extend_from_slice(b"]}");
    }
    out.push(b']');
}

/// `{"name":...,"versions":[...],"platform":...,"inputs":[...],"outputs":[...]}`.
pub fn model_metadata(m: &ModelMetadata) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"name\":");
    json::write_str(&mut out, &m.name);
    out.extend_from_slice(b",\"versions\":[");
    for (i, v) in m.versions.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_str(&mut out, v);
    }
    out.extend_from_slice(b"],\"platform\":");
    json::write_str(&mut out, &m.platform);
    out.extend_from_slice(b",\"inputs\":");
    write_tensors(&mut out, &m.inputs);
    out.extend_from_slice(b",\"outputs\":");
    write_tensors(&mut out, &m.outputs);
    out.push(b'}');
    out
}

const READY_NOT_BOOL: &str = "Invalid value for 'ready': expected a boolean";

/// Reads a repository index request: an empty body, or `{"ready":bool}`;
/// other members, and a body that is not an object, are ignored, as
/// Triton ignores them. Values are skipped without recursion (serde_json's
/// skipping is iterative), so a value nested far deeper than a recursive
/// parser allows is read as Triton reads it: a `ready` that is not a
/// boolean is refused at once, whatever is inside it.
pub fn parse_index_request(body: &[u8]) -> Result<bool> {
    use serde::Deserialize as _;
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
    use std::cell::Cell;
    use std::fmt;

    if body.is_empty() {
        return Ok(false);
    }

    /// The `ready` member: a boolean, or the refusal (noted in the flag, so
    /// it is told apart from a syntax error).
    struct Ready<'a>(&'a Cell<bool>);
    impl<'de> DeserializeSeed<'de> for Ready<'_> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<bool, D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Ready<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a boolean")
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<bool, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> std::result::Result<bool, E> {
            self.0.set(true);
            Err(E::custom(READY_NOT_BOOL))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<bool, E> {
            self.visit_i64(v as i64)
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> std::result::Result<bool, E> {
            self.visit_i64(0)
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> std::result::Result<bool, E> {
            self.visit_i64(0)
        }
        fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<bool, E> {
            self.visit_i64(0)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            _: A,
        ) -> std::result::Result<bool, A::Error> {
            self.visit_i64(0)
        }
        fn visit_map<A: MapAccess<'de>>(self, _: A) -> std::result::Result<bool, A::Error> {
            self.visit_i64(0)
        }
    }

    /// The body: `ready` from an object (the first one wins, as with
    /// Triton's member lookup); anything else is skipped.
    struct Body<'a>(&'a Cell<bool>);
    impl<'de> Visitor<'de> for Body<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an index request object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<bool, A::Error> {
            let mut ready = None;
            while let Some(key) = map.next_key::<String>()? {
                if key == "ready" && ready.is_none() {
                    ready = Some(map.next_value_seed(Ready(self.0))?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(ready.unwrap_or(false))
        }
    }

    let refused = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let parsed = if first == Some(&b'{') {
        de.deserialize_map(Body(&refused))
    } else {
        IgnoredAny::deserialize(&mut de).map(|_| false)
    }
    .and_then(|ready| de.end().map(|()| ready));
    parsed.map_err(|e| {
        if refused.get() {
            Error::invalid_arg(READY_NOT_BOOL)
        } else {
            Error::invalid_arg(format!("failed to parse the request JSON buffer: {e}"))
        }
    })
}

/// The index as an array of `{"name","version","state","reason"}`; a model
/// that was never loaded shows its name only, `version` appears when the
/// row is about one version, `reason` when there is one.
pub fn repository_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * entries.len() + 2);
    out.push(b'[');
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        json::write_str(&mut out, &e.name);
        if !e.state.is_empty() {
            if let Some(v) = &e.version {
                out.extend_from_slice(b",\"version\":");
                json::write_str(&mut out, v);
            }
            out.extend_from_slice(b",\"state\":");
            json::write_str(&mut out, &e.state);
            if !e.reason.is_empty() {
                out.extend_from_slice(b",\"reason\":");
                json::write_str(&mut out, &e.reason);
            }
        }
        out.push(b'}');
    }
    out.push(b']');
    out
}

/// What a load request asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoadRequest {
    /// The configuration override (`parameters.config`, JSON text).
    pub config: Option<String>,
    /// Model file overrides: each `file:<path>` parameter with its content,
    /// decoded from base64, in the order sent.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Reads a load request: an empty body, or `{"parameters":{...}}` with
/// `config` (a JSON model configuration as a string) and `file:<path>`
/// members (base64 file contents).
pub fn parse_load_request(body: &[u8]) -> Result<LoadRequest> {
    let mut request = LoadRequest::default();
    if body.is_empty() {
        return Ok(request);
    }
    let Some(params) = parse_body(body)?.get_mut("parameters").map(Value::take) else {
        return Ok(request);
    };
    let Value::Object(params) = params else {
        return Err(Error::invalid_arg(NON_OBJECT_MEMBERS));
    };
    for (key, value) in params {
        let Value::String(value) = value else {
            return Err(Error::invalid_arg(NON_STRING));
        };
        if key == "config" {
            request.config = Some(value);
        } else if key.starts_with(crate::repository::overrides::FILE_PREFIX) {
            let content = base64_decode(&value).ok_or_else(|| {
                Error::invalid_arg(format!(
                    "load parameter '{key}': the value is not valid base64"
                ))
            })?;
            request.files.push((key, content));
        } else {
            return Err(Error::invalid_arg(format!(
                "unexpected error on creating Triton parameter: load parameter '{key}' is neither 'config' nor 'file:<path>'"
            )));
        }
    }
    Ok(request)
}

/// Reads an unload request: an empty body, or
/// `{"parameters":{"unload_dependents":bool}}`.
pub fn parse_unload_request(body: &[u8]) -> Result<bool> {
    if body.is_empty() {
        return Ok(false);
    }
    match parse_body(body)?
        .get("parameters")
        .and_then(|p| p.get("unload_dependents"))
    {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(Error::invalid_arg(format!(
            "Unable to parse 'unload_dependents': {NON_BOOL}"
        ))),
    }
}

/// The logging settings object.
pub fn log_settings(s: &LogSettings) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"{\"log_file\":");
    json::write_str(&mut out, &s.log_file);
    out.extend_from_slice(b",\"log_info\":");
    json::write_bool(&mut out, s.log_info);
    out.extend_from_slice(b",\"log_warning\":");
    json::write_bool(&mut out, s.log_warning);
    out.extend_from_slice(b",\"log_error\":");
    json::write_bool(&mut out, s.log_error);
    out.extend_from_slice(b",\"log_verbose_level\":");
    json::write_u64(&mut out, s.log_verbose_level.into());
    out.extend_from_slice(b",\"log_format\":");
    json::write_str(&mut out, &s.log_format);
    out.push(b'}');
    out
}

/// Reads a logging update; `null` values leave a setting alone.
pub fn parse_log_update(body: &[u8]) -> Result<LogUpdate> {
    let v = parse_body(body)?;
    let mut update = LogUpdate::default();
    let present = |key: &str| v.get(key).filter(|x| !x.is_null());
    if let Some(file) = present("log_file") {
        update.log_file = Some(
            file.as_str()
                .map_or_else(|| file.to_string(), str::to_owned),
        );
    }
    let flag = |key: &str| -> Result<Option<bool>> {
        present(key)
            .map(|x| x.as_bool().ok_or_else(|| internal(NON_BOOL)))
            .transpose()
    };
    update.log_info = flag("log_info")?;
    update.log_warning = flag("log_warning")?;
    update.log_error = flag("log_error")?;
    update.log_verbose_level = present("log_verbose_level")
        .map(|x| {
            x.as_u64()
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                .ok_or_else(|| internal(NON_UINT))
        })
        .transpose()?;
    update.log_format = present("log_format")
        .map(|x| {
            x.as_str()
                .map(str::to_owned)
                .ok_or_else(|| internal(NON_STRING))
        })
        .transpose()?;
    Ok(update)
}

/// The trace settings object, values as strings as Triton reports them.
pub fn trace_settings(s: &TraceSettings) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"{\"trace_level\":[");
    for (i, name) in s.level.names().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_str(&mut out, name);
    }
    out.extend_from_slice(b"],\"trace_rate\":");
    json::write_str(&mut out, &s.rate.to_string());
    out.extend_from_slice(b",\"trace_count\":");
    json::write_str(&mut out, &s.count.to_string());
    if s.mode == TraceMode::Triton {
        out.extend_from_slice(b",\"log_frequency\":");
        json::write_str(&mut out, &s.log_frequency.to_string());
        out.extend_from_slice(b",\"trace_file\":");
        json::write_str(&mut out, &s.file);
    }
    out.extend_from_slice(b",\"trace_mode\":");
    json::write_str(&mut out, &s.mode.to_string());
    out.push(b'}');
    out
}

/// Reads a numeric trace value sent as a string (`"1000"`), within
/// `[min, max]`.
pub(crate) fn trace_number(key: &str, value: &Value, min: i64, max: i64) -> Result<i64> {
    let text = value.as_str().ok_or_else(|| internal(NON_STRING))?;
    let n = parse_leading_int(text)
        .ok_or_else(|| Error::invalid_arg(format!("Unable to parse '{key}', got: {text}")))?;
    if n < min || n > max {
        return Err(Error::invalid_arg(format!(
            "Unable to parse '{key}', value is out of range [ {min}, {max} ], got: {text}"
        )));
    }
    Ok(n)
}

/// Reads a trace settings update; `null` clears a value back to its
/// fallback.
pub fn parse_trace_update(body: &[u8]) -> Result<TraceUpdate> {
    let v = parse_body(body)?;
    let mut update = TraceUpdate::default();
    if v.get("trace_file").is_some() {
        return Err(Error::unsupported(
            "trace file location can not be updated through network protocol",
        ));
    }
    if let Some(level) = v.get("trace_level") {
        if level.is_null() {
            update.level = Change::Clear;
        } else {
            let items = level.as_array().ok_or_else(|| internal(NON_ARRAY))?;
            let names = items
                .iter()
                .map(|item| item.as_str().ok_or_else(|| internal(NON_STRING)));
            if let Some(parsed) = TraceLevel::from_names(names, items.len())? {
                update.level = Change::Set(parsed);
            }
        }
    }
    let number = |key: &str, min: i64, max: i64| -> Result<Change<i64>> {
        Ok(match v.get(key) {
            None => Change::Keep,
            Some(Value::Null) => Change::Clear,
            Some(x) => Change::Set(trace_number(key, x, min, max)?),
        })
    };
    let as_u32 = |c: Change<i64>| match c {
        Change::Keep => Change::Keep,
        Change::Clear => Change::Clear,
        Change::Set(n) => Change::Set(u32::try_from(n).unwrap_or(u32::MAX)),
    };
    update.rate = as_u32(number("trace_rate", 0, u32::MAX.into())?);
    update.count = match v.get("trace_count") {
        None => Change::Keep,
        Some(Value::Null) => Change::Clear,
        Some(x) => {
            let text = x.as_str().ok_or_else(|| internal(NON_STRING))?;
            match parse_leading_int(text) {
                Some(n) if n < -1 => {
                    return Err(Error::invalid_arg(format!(
                        "Unable to parse 'trace_count'. Expecting value >= -1, got:{text}"
                    )));
                }
                _ => Change::Set(
                    i32::try_from(trace_number("trace_count", x, -1, i32::MAX.into())?)
                        .unwrap_or(i32::MAX),
                ),
            }
        }
    };
    update.log_frequency = as_u32(number("log_frequency", 0, u32::MAX.into())?);
    Ok(update)
}

fn write_duration(out: &mut Vec<u8>, key: &str, d: &StatDuration) {
    json::write_key(out, key);
    out.extend_from_slice(b"{\"count\":");
    json::write_u64(out, d.count);
    out.extend_from_slice(b",\"ns\":");
    json::write_u64(out, d.ns);
    out.push(b'}');
}

/// `{"model_stats":[...]}` in Triton's statistics extension layout (cache
/// and response statistics are present and empty: nereid has no response
/// cache and no decoupled models yet).
pub fn model_statistics(rows: &[(String, i64, ModelStats)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 * rows.len().max(1));
    out.extend_from_slice(b"{\"model_stats\":[");
    for (i, (name, version, s)) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        json::write_str(&mut out, name);
        out.extend_from_slice(b",\"version\":");
        json::write_str(&mut out, &version.to_string());
        out.extend_from_slice(b",\"last_inference\":");
        json::write_u64(&mut out, s.last_inference_ms);
        out.extend_from_slice(b",\"inference_count\":");
        json::write_u64(&mut out, s.inference_count);
        out.extend_from_slice(b",\"execution_count\":");
        json::write_u64(&mut out, s.execution_count);
        out.extend_from_slice(b",\"inference_stats\":{");
        let phases = [
            ("success", &s.success),
            ("fail", &s.fail),
            ("queue", &s.queue),
            ("compute_input", &s.compute_input),
            ("compute_infer", &s.compute_infer),
            ("compute_output", &s.compute_output),
            ("cache_hit", &s.cache_hit),
            ("cache_miss", &s.cache_miss),
        ];
        for (j, (key, d)) in phases.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            write_duration(&mut out, key, d);
        }
        out.extend_from_slice(b"},\"response_stats\":{},\"batch_stats\":[");
        for (j, (size, b)) in s.batches.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"batch_size\":");
            json::write_u64(&mut out, *size);
            out.push(b',');
            write_duration(&mut out, "compute_input", &b.compute_input);
            out.push(b',');
            write_duration(&mut out, "compute_infer", &b.compute_infer);
            out.push(b',');
            write_duration(&mut out, "compute_output", &b.compute_output);
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"memory_usage\":[]}");
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn index_rows() {
        let rows = [
            IndexEntry {
                name: "a".into(),
                version: Some("1".into()),
                state: "READY".into(),
                reason: String::new(),
            },
            IndexEntry {
                name: "b".into(),
                version: Some("2".into()),
                state: "UNAVAILABLE".into(),
                reason: "unloaded".into(),
            },
            IndexEntry {
                name: "c".into(),
                version: None,
                state: String::new(),
                reason: String::new(),
            },
        ];
        assert_eq!(
            text(repository_index(&rows)),
            r#"[{"name":"a","version":"1","state":"READY"},{"name":"b","version":"2","state":"UNAVAILABLE","reason":"unloaded"},{"name":"c"}]"#
        );
        assert!(!parse_index_request(b"").unwrap());
        assert!(parse_index_request(br#"{"ready":true}"#).unwrap());
        assert_eq!(
            parse_index_request(br#"{"ready":"yes"}"#)
                .unwrap_err()
                .message(),
            "Invalid value for 'ready': expected a boolean"
        );
        // Other members and non-object bodies are ignored, however deep.
        let deep = |inner: &str| format!("{}{inner}{}", "[".repeat(250_000), "]".repeat(250_000));
        let body = format!(r#"{{"other":{},"ready":true}}"#, deep("1"));
        assert!(parse_index_request(body.as_bytes()).unwrap());
        assert!(!parse_index_request(deep("true").as_bytes()).unwrap());
        assert!(parse_index_request(br#"{"ready":true,"ready":"x"}"#).unwrap());
        // A deeply nested `ready` is refused as not a boolean (Triton's
        // test_repository_index_deeply_nested_json).
        let body = format!(r#"{{"ready":{}}}"#, deep("true"));
        let e = parse_index_request(body.as_bytes()).unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (
                Code::InvalidArg,
                "Invalid value for 'ready': expected a boolean"
            )
        );
        let e = parse_index_request(br#"{"ready":true"#).unwrap_err();
        assert!(
            e.message()
                .starts_with("failed to parse the request JSON buffer")
        );
    }

    #[test]
    fn load_and_unload_bodies() {
        assert_eq!(parse_load_request(b"").unwrap(), LoadRequest::default());
        assert_eq!(
            parse_load_request(br#"{"parameters":{"config":"{\"max_batch_size\":2}"}}"#)
                .unwrap()
                .config,
            Some(r#"{"max_batch_size":2}"#.to_owned())
        );
        let e = parse_load_request(br#"{"parameters":{"config":{}}}"#).unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArg, NON_STRING));
        let files = parse_load_request(
            br#"{"parameters":{"config":"{}","file:1/m.onnx":"AAE=","file:labels.txt":"YQo="}}"#,
        )
        .unwrap();
        assert_eq!(
            files,
            LoadRequest {
                config: Some("{}".to_owned()),
                files: vec![
                    ("file:1/m.onnx".to_owned(), vec![0, 1]),
                    ("file:labels.txt".to_owned(), b"a\n".to_vec()),
                ],
            }
        );
        let e = parse_load_request(br#"{"parameters":{"file:1/m.onnx":"A*=="}}"#).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArg);
        assert!(e.message().contains("'file:1/m.onnx'"), "{}", e.message());
        // A malformed body is the client's error.
        let e = parse_index_request(b"{\"ready\":").unwrap_err();
        assert_eq!(e.code(), Code::InvalidArg);
        assert!(
            e.message()
                .starts_with("failed to parse the request JSON buffer")
        );
        assert!(parse_unload_request(br#"{"parameters":{"unload_dependents":true}}"#).unwrap());
        assert_eq!(
            parse_unload_request(br#"{"parameters":{"unload_dependents":1}}"#)
                .unwrap_err()
                .message(),
            "Unable to parse 'unload_dependents': attempt to access JSON non-boolean as boolean"
        );
        assert!(
            parse_unload_request(b"{")
                .unwrap_err()
                .message()
                .starts_with("failed to parse the request JSON buffer: ")
        );
    }

    #[test]
    fn trace_bodies() {
        assert_eq!(
            text(trace_settings(&TraceSettings::default())),
            r#"{"trace_level":["OFF"],"trace_rate":"1000","trace_count":"-1","log_frequency":"0","trace_file":"","trace_mode":"triton"}"#
        );
        let u = parse_trace_update(
            br#"{"trace_level":["TIMESTAMPS","TENSORS"],"trace_rate":"5","trace_count":null}"#,
        )
        .unwrap();
        assert_eq!(
            u.level,
            Change::Set(TraceLevel {
                timestamps: true,
                tensors: true
            })
        );
        assert_eq!(
            (u.rate, u.count, u.log_frequency),
            (Change::Set(5), Change::Clear, Change::Keep)
        );
        for (body, msg) in [
            (
                r#"{"trace_file":"x"}"#,
                "trace file location can not be updated through network protocol",
            ),
            (
                r#"{"trace_level":["OFF","TENSORS"]}"#,
                "Expect only one trace level 'OFF' is specified",
            ),
            (
                r#"{"trace_rate":"abc"}"#,
                "Unable to parse 'trace_rate', got: abc",
            ),
            (r#"{"trace_rate":5}"#, NON_STRING),
            (
                r#"{"trace_rate":"-3"}"#,
                "Unable to parse 'trace_rate', value is out of range [ 0, 4294967295 ], got: -3",
            ),
            (
                r#"{"trace_count":"-2"}"#,
                "Unable to parse 'trace_count'. Expecting value >= -1, got:-2",
            ),
            (
                r#"{"log_frequency":"x"}"#,
                "Unable to parse 'log_frequency', got: x",
            ),
        ] {
            assert_eq!(
                parse_trace_update(body.as_bytes()).unwrap_err().message(),
                msg,
                "{body}"
            );
        }
    }

    #[test]
    fn log_bodies() {
        let u = parse_log_update(
            br#"{"log_info":false,"log_verbose_level":2,"log_format":"ISO8601","log_error":null}"#,
        )
        .unwrap();
        assert_eq!(u.log_info, Some(false));
        assert_eq!(u.log_error, None);
        assert_eq!(u.log_verbose_level, Some(2));
        assert_eq!(u.log_format.as_deref(), Some("ISO8601"));
        assert_eq!(
            parse_log_update(br#"{"log_info":1}"#)
                .unwrap_err()
                .message(),
            NON_BOOL
        );
        assert_eq!(
            parse_log_update(br#"{"log_file":"/tmp/x"}"#)
                .unwrap()
                .log_file
                .as_deref(),
            Some("/tmp/x")
        );
        assert_eq!(
            text(log_settings(&LogSettings::default())),
            r#"{"log_file":"","log_info":true,"log_warning":true,"log_error":true,"log_verbose_level":0,"log_format":"default"}"#
        );
    }

    #[test]
    fn metadata_bodies() {
        let m = ModelMetadata {
            name: "simple".into(),
            versions: vec!["1".into()],
            platform: "add_sub".into(),
            inputs: vec![TensorMetadata {
                name: "INPUT0".into(),
                datatype: "INT32",
                shape: vec![-1, 16],
            }],
            outputs: vec![],
        };
        assert_eq!(
            text(model_metadata(&m)),
            r#"{"name":"simple","versions":["1"],"platform":"add_sub","inputs":[{"name":"INPUT0","datatype":"INT32","shape":[-1,16]}],"outputs":[]}"#
        );
        let s = ServerMetadata {
            name: "triton".into(),
            version: "0.1.0".into(),
            extensions: vec!["a", "b"],
        };
        assert_eq!(
            text(server_metadata(&s)),
            r#"{"name":"triton","version":"0.1.0","extensions":["a","b"]}"#
        );
    }
}
