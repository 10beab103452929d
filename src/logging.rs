//! The process logger: a `log::Log` that writes Triton's line format and
//! whose settings can be changed while the server runs (the `/v2/logging`
//! endpoint reads and writes them through [`settings`] and
//! [`set_settings`]). Depends on nothing else in the crate.
//!
//! Lines look like Triton's (glog style, UTC time, process id, source
//! file's base name):
//!
//! ```text
//! I1122 02:16:00.123456 4242 http.rs:118] Started HTTPService at 0.0.0.0:8000
//! ```
//!
//! With `log_format = "ISO8601"` the prefix is
//! `2024-11-22T02:16:00Z I 4242 http.rs:118]`. Errors, warnings and
//! information map to `E`, `W` and `I`; `log::Level::Debug` is verbose
//! level 1 and `Trace` verbose level 2, both printed as `I` lines as Triton
//! prints its verbose messages. Lines go to standard error, or to
//! `log_file` when set.
//!
//! # Escaping
//! Messages carry strings clients chose (model and input names, request
//! ids, header values), so a message is written as one JSON string, quotes
//! included, as Triton writes it: a newline or an escape sequence inside
//! it cannot start a forged line or drive a terminal. Setting
//! `TRITON_SERVER_ESCAPE_LOG_MESSAGES` to `0` or `false` writes messages
//! raw instead, as Triton does. A table (target [`TABLE_TARGET`]) is a
//! heading line, escaped like any message (nothing when empty), then the
//! table's lines as they are, only with control characters in them
//! escaped, so the table stays readable and still cannot forge a line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Logging settings, as the `/v2/logging` extension exposes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Print information lines.
    pub log_info: bool,
    /// Print warnings.
    pub log_warning: bool,
    /// Print errors.
    pub log_error: bool,
    /// Verbose level: 0 off, 1 `debug!`, 2 and up also `trace!`.
    pub log_verbose_level: u32,
    /// `default` (glog style) or `ISO8601`.
    pub log_format: String,
    /// File to append to; empty means standard error.
    pub log_file: String,
}

impl Default for LogSettings {
    fn default() -> LogSettings {
        LogSettings {
            log_info: true,
            log_warning: true,
            log_error: true,
            log_verbose_level: 0,
            log_format: FORMAT_DEFAULT.to_owned(),
            log_file: String::new(),
        }
    }
}

/// The glog-style format name.
pub const FORMAT_DEFAULT: &str = "default";
/// The ISO 8601 format name.
pub const FORMAT_ISO8601: &str = "ISO8601";

/// The `log` target of a message that is a heading line and a table
/// (module doc): `log::info!(target: TABLE_TARGET, "{heading}\n{table}")`.
pub const TABLE_TARGET: &str = "nereid::table";

/// The environment variable that turns escaping off (`0` or `false`).
pub const ESCAPE_ENVIRONMENT_VARIABLE: &str = "TRITON_SERVER_ESCAPE_LOG_MESSAGES";

/// Whether messages are escaped (module doc); read from the environment
/// once, by [`init`].
static ESCAPE: AtomicBool = AtomicBool::new(true);

/// Whether the value of [`ESCAPE_ENVIRONMENT_VARIABLE`] asks for escaping:
/// everything but `0` and `false` (any case) does, as no value does.
fn escape_wanted(value: Option<&str>) -> bool {
    value.is_none_or(|v| {
        let v = v.trim();
        v != "0" && !v.eq_ignore_ascii_case("false")
    })
}

/// Whether a format name is one the logger knows.
pub fn is_known_format(format: &str) -> bool {
    format == FORMAT_DEFAULT || format == FORMAT_ISO8601
}

struct State {
    settings: LogSettings,
    file: Option<File>,
}

struct Logger {
    state: RwLock<Option<State>>,
}

static LOGGER: Logger = Logger {
    state: RwLock::new(None),
};

/// Installs the logger with these settings. Calling it again only applies
/// the settings.
pub fn init(settings: LogSettings) -> Result<(), String> {
    let escape = escape_wanted(std::env::var(ESCAPE_ENVIRONMENT_VARIABLE).ok().as_deref());
    ESCAPE.store(escape, Ordering::Relaxed);
    set_settings(settings)?;
    // Fails only when a logger is already installed: ours, by an earlier
    // call, whose settings were just replaced.
    let _ = log::set_logger(&LOGGER);
    Ok(())
}

/// The settings in force.
pub fn settings() -> LogSettings {
    match LOGGER.state.read() {
        Ok(guard) => guard
            .as_ref()
            .map(|s| s.settings.clone())
            .unwrap_or_default(),
        Err(poisoned) => poisoned
            .into_inner()
            .as_ref()
            .map(|s| s.settings.clone())
            .unwrap_or_default(),
    }
}

/// Replaces the settings. An unknown format or a log file that cannot be
/// opened is refused with a message, and the old settings stay.
pub fn set_settings(settings: LogSettings) -> Result<(), String> {
    if !is_known_format(&settings.log_format) {
        return Err(format!(
            "unknown log format '{}': expected '{FORMAT_DEFAULT}' or '{FORMAT_ISO8601}'",
            settings.log_format
        ));
    }
    let mut guard = LOGGER.state.write().unwrap_or_else(|p| p.into_inner());
    let reopen = guard
        .as_ref()
        .is_none_or(|s| s.settings.log_file != settings.log_file);
    let file = if settings.log_file.is_empty() {
        None
    } else if reopen {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&settings.log_file)
            .map_err(|e| format!("cannot open log file '{}': {e}", settings.log_file))?;
        Some(file)
    } else {
        guard.as_mut().and_then(|s| s.file.take())
    };
    log::set_max_level(max_level(&settings));
    *guard = Some(State { settings, file });
    Ok(())
}

fn max_level(s: &LogSettings) -> log::LevelFilter {
    use log::LevelFilter;
    match s.log_verbose_level {
        0 if s.log_info => LevelFilter::Info,
        0 if s.log_warning => LevelFilter::Warn,
        0 if s.log_error => LevelFilter::Error,
        0 => LevelFilter::Off,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

fn enabled_in(s: &LogSettings, level: log::Level) -> bool {
    match level {
        log::Level::Error => s.log_error,
        log::Level::Warn => s.log_warning,
        log::Level::Info => s.log_info,
        log::Level::Debug => s.log_verbose_level >= 1,
        log::Level::Trace => s.log_verbose_level >= 2,
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let guard = self.state.read().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .is_some_and(|s| enabled_in(&s.settings, metadata.level()))
    }

    fn log(&self, record: &log::Record<'_>) {
        let guard = self.state.read().unwrap_or_else(|p| p.into_inner());
        let Some(state) = guard.as_ref() else { return };
        if !enabled_in(&state.settings, record.level()) {
            return;
        }
        let message = record.args().to_string();
        let message = if ESCAPE.load(Ordering::Relaxed) {
            escape_message(&message, record.target() == TABLE_TARGET)
        } else {
            message
        };
        let line = format_line(
            &state.settings.log_format,
            record.level(),
            SystemTime::now(),
            std::process::id(),
            record.file().unwrap_or("?"),
            record.line().unwrap_or(0),
            &message,
        );
        // A log line that cannot be written has nowhere better to go.
        let _ = match state.file.as_ref() {
            Some(mut file) => file.write_all(line.as_bytes()),
            None => std::io::stderr().lock().write_all(line.as_bytes()),
        };
    }

    fn flush(&self) {
        let guard = self.state.read().unwrap_or_else(|p| p.into_inner());
        let _ = match guard.as_ref().and_then(|s| s.file.as_ref()) {
            Some(mut file) => file.flush(),
            None => std::io::stderr().flush(),
        };
    }
}

/// A message as the log writes it when escaping (module doc): one JSON
/// string, or for a table its heading as one (nothing when empty) and
/// its lines with control characters escaped.
fn escape_message(message: &str, table: bool) -> String {
    let quoted = |text: &str| serde_json::to_string(text).unwrap_or_default();
    if !table {
        return quoted(message);
    }
    let Some((heading, rest)) = message.split_once('\n') else {
        return quoted(message);
    };
    let mut out = if heading.is_empty() {
        String::new()
    } else {
        quoted(heading)
    };
    for line in rest.split('\n') {
        out.push('\n');
        for c in line.chars() {
            if c.is_control() {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            } else {
                out.push(c);
            }
        }
    }
    out
}

/// One log line, newline included.
fn format_line(
    format: &str,
    level: log::Level,
    time: SystemTime,
    pid: u32,
    file: &str,
    line: u32,
    message: &str,
) -> String {
    let letter = match level {
        log::Level::Error => 'E',
        log::Level::Warn => 'W',
        _ => 'I',
    };
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let (hour, minute, second) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
    if format == FORMAT_ISO8601 {
        format!(
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z {letter} {pid} {base}:{line}] {message}\n"
        )
    } else {
        let micros = since.subsec_micros();
        format!(
            "{letter}{month:02}{day:02} {hour:02}:{minute:02}:{second:02}.{micros:06} {pid} {base}:{line}] {message}\n"
        )
    }
}

/// (year, month, day) of a count of days since 1970-01-01, proleptic
/// Gregorian calendar (era arithmetic over 400-year cycles).
fn civil_from_days(days: u64) -> (u64, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_683), (2023, 11, 22));
        assert_eq!(civil_from_days(20_088), (2024, 12, 31));
    }

    #[test]
    fn line_formats() {
        // 2023-11-22 02:16:00.123456 UTC
        let t = UNIX_EPOCH
            + Duration::from_secs(19_683 * 86_400 + 2 * 3600 + 16 * 60)
            + Duration::from_micros(123_456);
        assert_eq!(
            format_line(
                FORMAT_DEFAULT,
                log::Level::Info,
                t,
                1234,
                "src/net/http.rs",
                42,
                "hello"
            ),
            "I1122 02:16:00.123456 1234 http.rs:42] hello\n"
        );
        assert_eq!(
            format_line(FORMAT_DEFAULT, log::Level::Warn, t, 1, "main.rs", 7, "w"),
            "W1122 02:16:00.123456 1 main.rs:7] w\n"
        );
        assert_eq!(
            format_line(FORMAT_ISO8601, log::Level::Error, t, 1, "a/b.rs", 3, "e"),
            "2023-11-22T02:16:00Z E 1 b.rs:3] e\n"
        );
        assert_eq!(
            format_line(FORMAT_DEFAULT, log::Level::Debug, t, 1, "x.rs", 1, "v"),
            "I1122 02:16:00.123456 1 x.rs:1] v\n"
        );
    }

    #[test]
    fn messages_are_escaped_so_they_cannot_forge_lines() {
        let forged = "name '\nI0205 18:34:18.707423 1 file.cc:123] forged\u{1b}[31m\u{7}'";
        assert_eq!(
            escape_message(forged, false),
            r#""name '\nI0205 18:34:18.707423 1 file.cc:123] forged\u001b[31m\u0007'""#
        );
        assert_eq!(escape_message("say \"hi\"", false), r#""say \"hi\"""#);
        // A table keeps its lines; control characters inside them are
        // escaped, and an empty heading writes nothing.
        let table = "\n+---+\n| a\u{1b} |\n+---+";
        assert_eq!(escape_message(table, true), "\n+---+\n| a\\u001b |\n+---+");
        assert_eq!(escape_message("models\n+-+", true), "\"models\"\n+-+");
    }

    #[test]
    fn the_environment_turns_escaping_off_with_0_or_false() {
        assert!(escape_wanted(None));
        assert!(escape_wanted(Some("1")));
        assert!(escape_wanted(Some("yes")));
        assert!(!escape_wanted(Some("0")));
        assert!(!escape_wanted(Some("FALSE")));
    }

    #[test]
    fn levels_follow_settings() {
        let quiet = LogSettings {
            log_info: false,
            ..LogSettings::default()
        };
        assert!(!enabled_in(&quiet, log::Level::Info));
        assert!(enabled_in(&quiet, log::Level::Warn));
        assert_eq!(max_level(&quiet), log::LevelFilter::Warn);
        let verbose = LogSettings {
            log_verbose_level: 1,
            ..LogSettings::default()
        };
        assert!(enabled_in(&verbose, log::Level::Debug));
        assert!(!enabled_in(&verbose, log::Level::Trace));
        assert_eq!(max_level(&verbose), log::LevelFilter::Debug);
    }

    #[test]
    fn settings_round_trip_and_validation() {
        let dir = std::env::temp_dir().join(format!("nereid-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.log");
        let s = LogSettings {
            log_verbose_level: 2,
            log_format: FORMAT_ISO8601.to_owned(),
            log_file: path.to_string_lossy().into_owned(),
            ..LogSettings::default()
        };
        init(s.clone()).unwrap();
        assert_eq!(settings(), s);
        log::info!("written to the file");
        log::logger().flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(" I "), "{text}");
        assert!(text.contains(" logging.rs:"), "{text}");
        assert!(text.contains("] \"written to the file\""), "{text}");

        let bad = LogSettings {
            log_format: "xml".to_owned(),
            ..LogSettings::default()
        };
        assert!(set_settings(bad).unwrap_err().contains("xml"));
        assert_eq!(settings(), s, "a refused update changes nothing");
        let unopenable = LogSettings {
            log_file: dir.join("missing/dir/log").to_string_lossy().into_owned(),
            ..LogSettings::default()
        };
        assert!(set_settings(unopenable).is_err());
        set_settings(LogSettings::default()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
