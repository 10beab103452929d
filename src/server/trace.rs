//! Trace settings (Triton's trace extension): one global setting and
//! optional per-model overrides.
//!
//! Every field of a model's setting is either its own value or falls back
//! to the global one; every field of the global setting is either set at
//! run time or falls back to the startup value. An update can set a field,
//! clear it (back to its fallback), or leave it. A setting that would
//! enable tracing must be complete (a non-zero rate, a trace file in
//! `triton` mode, a non-zero count), as Triton requires; the file is fixed
//! at startup, so without one tracing cannot be switched on.

use std::collections::HashMap;
use std::fmt;

use crate::core::{Error, Result};

/// Which trace activities are recorded; neither means tracing is off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceLevel {
    /// `TIMESTAMPS`.
    pub timestamps: bool,
    /// `TENSORS`.
    pub tensors: bool,
}

impl TraceLevel {
    /// Tracing disabled (`OFF`).
    pub const OFF: TraceLevel = TraceLevel {
        timestamps: false,
        tensors: false,
    };

    /// Reads the `count` names of a `trace_level` setting, as both front
    /// ends receive it. `OFF` must stand alone; unknown names are ignored, as
    /// Triton ignores them. `None` when no name sets a level (the setting is
    /// then left as it was). A name the front end could not read is its
    /// error, returned when reached.
    pub fn from_names<'a>(
        names: impl IntoIterator<Item = Result<&'a str>>,
        count: usize,
    ) -> Result<Option<TraceLevel>> {
        let mut parsed = TraceLevel::OFF;
        let mut any = false;
        for name in names {
            match name? {
                "OFF" if count == 1 => any = true,
                "OFF" => {
                    return Err(Error::invalid_arg(
                        "Expect only one trace level 'OFF' is specified",
                    ));
                }
                "TIMESTAMPS" => {
                    parsed.timestamps = true;
                    any = true;
                }
                "TENSORS" => {
                    parsed.tensors = true;
                    any = true;
                }
                _ => {}
            }
        }
        Ok(any.then_some(parsed))
    }

    /// Whether anything is traced.
    pub fn is_enabled(self) -> bool {
        self.timestamps || self.tensors
    }

    /// The names Triton reports: `["OFF"]`, or the enabled levels.
    pub fn names(self) -> Vec<&'static str> {
        if !self.is_enabled() {
            return vec!["OFF"];
        }
        let mut names = Vec::with_capacity(2);
        if self.timestamps {
            names.push("TIMESTAMPS");
        }
        if self.tensors {
            names.push("TENSORS");
        }
        names
    }
}

/// The trace mode: where traces go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TraceMode {
    /// Triton's own JSON trace files.
    #[default]
    Triton,
    /// OpenTelemetry export.
    OpenTelemetry,
}

impl fmt::Display for TraceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TraceMode::Triton => "triton",
            TraceMode::OpenTelemetry => "opentelemetry",
        })
    }
}

/// A complete trace setting, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSettings {
    /// What is traced.
    pub level: TraceLevel,
    /// One request in `rate` is traced.
    pub rate: u32,
    /// How many traces to take; -1 for no limit.
    pub count: i32,
    /// Traces per file before starting a new one; 0 for one file.
    pub log_frequency: u32,
    /// Trace file (fixed at startup).
    pub file: String,
    /// Trace mode (fixed at startup).
    pub mode: TraceMode,
}

impl Default for TraceSettings {
    /// Triton's defaults: off, rate 1000, no count limit, one file.
    fn default() -> TraceSettings {
        TraceSettings {
            level: TraceLevel::OFF,
            rate: 1000,
            count: -1,
            log_frequency: 0,
            file: String::new(),
            mode: TraceMode::Triton,
        }
    }
}

/// What an update does to one field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Change<T> {
    /// Leave the field as it is.
    #[default]
    Keep,
    /// Drop the field's own value; it falls back again.
    Clear,
    /// Give the field this value.
    Set(T),
}

/// An update of the run-time settable fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceUpdate {
    /// `trace_level`.
    pub level: Change<TraceLevel>,
    /// `trace_rate`.
    pub rate: Change<u32>,
    /// `trace_count`.
    pub count: Change<i32>,
    /// `log_frequency`.
    pub log_frequency: Change<u32>,
}

/// The fields a setting has its own values for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Overrides {
    level: Option<TraceLevel>,
    rate: Option<u32>,
    count: Option<i32>,
    log_frequency: Option<u32>,
}

impl Overrides {
    fn apply(mut self, update: &TraceUpdate) -> Overrides {
        fn one<T: Copy>(slot: &mut Option<T>, change: Change<T>) {
            match change {
                Change::Keep => {}
                Change::Clear => *slot = None,
                Change::Set(v) => *slot = Some(v),
            }
        }
        one(&mut self.level, update.level);
        one(&mut self.rate, update.rate);
        one(&mut self.count, update.count);
        one(&mut self.log_frequency, update.log_frequency);
        self
    }

    fn resolve(&self, base: &TraceSettings) -> TraceSettings {
        TraceSettings {
            level: self.level.unwrap_or(base.level),
            rate: self.rate.unwrap_or(base.rate),
            count: self.count.unwrap_or(base.count),
            log_frequency: self.log_frequency.unwrap_or(base.log_frequency),
            file: base.file.clone(),
            mode: base.mode,
        }
    }

    fn is_empty(&self) -> bool {
        *self == Overrides::default()
    }
}

/// Refuses a setting that enables tracing without what tracing needs.
fn check(settings: &TraceSettings) -> Result<()> {
    if !settings.level.is_enabled() {
        return Ok(());
    }
    let reason = if settings.rate == 0 {
        "sample rate must be non-zero"
    } else if settings.mode == TraceMode::Triton && settings.file.is_empty() {
        "trace file name is not given"
    } else if settings.count == 0 {
        ""
    } else {
        return Ok(());
    };
    Err(Error::invalid_arg(format!(
        "Attempting to set invalid trace setting :{reason}"
    )))
}

/// The global setting and the per-model overrides.
#[derive(Debug, Default)]
pub struct TraceStore {
    startup: TraceSettings,
    global: Overrides,
    models: HashMap<String, Overrides>,
}

impl TraceStore {
    /// A store whose global setting starts as `startup`.
    pub fn new(startup: TraceSettings) -> TraceStore {
        TraceStore {
            startup,
            global: Overrides::default(),
            models: HashMap::new(),
        }
    }

    /// The setting in force for `model` (`None`: the global setting).
    pub fn get(&self, model: Option<&str>) -> TraceSettings {
        let global = self.global.resolve(&self.startup);
        match model.and_then(|m| self.models.get(m)) {
            Some(o) => o.resolve(&global),
            None => global,
        }
    }

    /// Applies `update` to `model`'s setting (or the global one) and returns
    /// the setting now in force there. Nothing changes if the result would
    /// be invalid.
    pub fn update(&mut self, model: Option<&str>, update: &TraceUpdate) -> Result<TraceSettings> {
        match model {
            None => {
                let next = self.global.apply(update);
                let resolved = next.resolve(&self.startup);
                check(&resolved)?;
                self.global = next;
                Ok(resolved)
            }
            Some(m) => {
                let current = self.models.get(m).copied().unwrap_or_default();
                let next = current.apply(update);
                let resolved = next.resolve(&self.global.resolve(&self.startup));
                check(&resolved)?;
                if next.is_empty() {
                    self.models.remove(m);
                } else {
                    self.models.insert(m.to_owned(), next);
                }
                Ok(resolved)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_fall_back_to_global_and_clear() {
        let mut store = TraceStore::new(TraceSettings::default());
        let set_rate = |r| TraceUpdate {
            rate: Change::Set(r),
            ..TraceUpdate::default()
        };
        assert_eq!(store.update(Some("m"), &set_rate(5)).unwrap().rate, 5);
        assert_eq!(store.update(None, &set_rate(7)).unwrap().rate, 7);
        assert_eq!(store.get(Some("m")).rate, 5);
        assert_eq!(store.get(Some("other")).rate, 7);
        store
            .update(
                Some("m"),
                &TraceUpdate {
                    rate: Change::Clear,
                    count: Change::Set(3),
                    ..TraceUpdate::default()
                },
            )
            .unwrap();
        assert_eq!(
            (store.get(Some("m")).rate, store.get(Some("m")).count),
            (7, 3)
        );
        // Clearing the global value restores the startup one.
        store
            .update(
                None,
                &TraceUpdate {
                    rate: Change::Clear,
                    ..TraceUpdate::default()
                },
            )
            .unwrap();
        assert_eq!(store.get(None).rate, 1000);
    }

    #[test]
    fn enabling_needs_a_file() {
        let mut store = TraceStore::new(TraceSettings::default());
        let on = TraceUpdate {
            level: Change::Set(TraceLevel {
                timestamps: true,
                tensors: false,
            }),
            ..TraceUpdate::default()
        };
        let e = store.update(None, &on).unwrap_err();
        assert_eq!(
            e.message(),
            "Attempting to set invalid trace setting :trace file name is not given"
        );
        assert_eq!(store.get(None).level, TraceLevel::OFF);

        let mut store = TraceStore::new(TraceSettings {
            file: "/tmp/t.json".into(),
            ..TraceSettings::default()
        });
        assert!(store.update(Some("m"), &on).unwrap().level.timestamps);
        assert_eq!(
            store.get(Some("m")).level.names(),
            vec!["TIMESTAMPS"],
            "model override"
        );
        assert_eq!(store.get(None).level.names(), vec!["OFF"]);
    }
}
