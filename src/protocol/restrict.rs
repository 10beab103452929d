//! Restricted endpoint groups (Triton's `--http-restricted-api` and
//! `--grpc-restricted-protocol`): each front end maps a request to one
//! [`Category`]; a category that is restricted answers only requests that
//! carry its header with its value.
//!
//! The table is built once at startup, one slot per category, so a request
//! costs one array index, and a header scan only when its category is
//! restricted.

use std::fmt;

/// The groups of endpoints a restriction names, as Triton names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// Liveness and readiness (server and model), gRPC health checks.
    Health,
    /// Server and model metadata.
    Metadata,
    /// Inference.
    Inference,
    /// Shared-memory registration and status.
    SharedMemory,
    /// Model configuration.
    ModelConfig,
    /// Repository index, load and unload.
    ModelRepository,
    /// Inference statistics.
    Statistics,
    /// Trace settings.
    Trace,
    /// Log settings.
    Logging,
}

impl Category {
    /// Every category, in table order.
    pub const ALL: [Category; 9] = [
        Category::Health,
        Category::Metadata,
        Category::Inference,
        Category::SharedMemory,
        Category::ModelConfig,
        Category::ModelRepository,
        Category::Statistics,
        Category::Trace,
        Category::Logging,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Category::Health => "health",
            Category::Metadata => "metadata",
            Category::Inference => "inference",
            Category::SharedMemory => "shared-memory",
            Category::ModelConfig => "model-config",
            Category::ModelRepository => "model-repository",
            Category::Statistics => "statistics",
            Category::Trace => "trace",
            Category::Logging => "logging",
        }
    }

    /// The category a command-line name denotes.
    pub fn from_name(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The header a restricted category requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    /// Header name as configured (prefix included); matched without
    /// regard to ASCII case, as HTTP field names are.
    pub header: String,
    /// The value it must have, exactly.
    pub value: String,
}

impl Restriction {
    /// Whether `headers` carry this restriction's header with its value.
    pub fn allows<N: AsRef<[u8]>, V: AsRef<[u8]>>(&self, headers: &[(N, V)]) -> bool {
        headers.iter().any(|(n, v)| {
            n.as_ref().eq_ignore_ascii_case(self.header.as_bytes())
                && v.as_ref() == self.value.as_bytes()
        })
    }
}

/// Which categories are restricted, and to what header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restrictions {
    slots: [Option<Restriction>; 9],
}

impl Restrictions {
    /// Adds one group, `<category>[,<category>...]:<key>=<value>`; the
    /// required header is `header_prefix` followed by `<key>`. `what`
    /// ("api", "protocol") names a category in errors. A category may be in
    /// one group only.
    pub fn add_group(&mut self, spec: &str, header_prefix: &str, what: &str) -> Result<(), String> {
        let malformed =
            || format!("'{spec}' is not of the form <{what}>[,<{what}>...]:<key>=<value>");
        let (names, setting) = spec.split_once(':').ok_or_else(malformed)?;
        let (key, value) = setting.split_once('=').ok_or_else(malformed)?;
        if names.is_empty() || key.is_empty() || value.is_empty() {
            return Err(malformed());
        }
        for name in names.split(',') {
            let category = Category::from_name(name)
                .ok_or_else(|| format!("unknown restricted {what} '{name}'"))?;
            let slot = &mut self.slots[category.index()];
            if slot.is_some() {
                return Err(format!(
                    "restricted {what} '{name}' can not be specified in multiple config groups"
                ));
            }
            *slot = Some(Restriction {
                header: format!("{header_prefix}{key}"),
                value: value.to_owned(),
            });
        }
        Ok(())
    }

    /// The restriction on `category`, if any.
    pub fn get(&self, category: Category) -> Option<&Restriction> {
        self.slots[category.index()].as_ref()
    }

    /// The restriction a request of `category` with `headers` fails, if
    /// any.
    pub fn refusal<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        category: Category,
        headers: &[(N, V)],
    ) -> Option<&Restriction> {
        self.get(category).filter(|r| !r.allows(headers))
    }

    /// Whether nothing is restricted.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Category::ALL {
            assert_eq!(Category::from_name(c.name()), Some(c));
            assert_eq!(Category::ALL[c.index()], c);
        }
        assert_eq!(Category::from_name("model-reposit"), None);
        assert_eq!(Category::from_name("Health"), None);
    }

    #[test]
    fn groups_parse() {
        let mut r = Restrictions::default();
        assert!(r.is_empty());
        r.add_group("model-repository:admin-key=admin-value", "p-", "api")
            .unwrap();
        r.add_group("inference,health:infer-key=a=b", "p-", "api")
            .unwrap();
        let admin = r.get(Category::ModelRepository).unwrap();
        assert_eq!(admin.header, "p-admin-key");
        assert_eq!(admin.value, "admin-value");
        let infer = r.get(Category::Health).unwrap();
        assert_eq!(
            (infer.header.as_str(), infer.value.as_str()),
            ("p-infer-key", "a=b")
        );
        assert_eq!(r.get(Category::Inference), Some(infer));
        assert_eq!(r.get(Category::Metadata), None);
        assert!(!r.is_empty());
    }

    #[test]
    fn bad_groups_are_refused() {
        let mut r = Restrictions::default();
        let err = r
            .add_group("model-reposit,health:k1=v1", "", "api")
            .unwrap_err();
        assert_eq!(err, "unknown restricted api 'model-reposit'");
        r.add_group("model-repository,health:k1=v1", "", "protocol")
            .unwrap();
        let err = r
            .add_group("metadata,health:k2=v2", "", "protocol")
            .unwrap_err();
        assert_eq!(
            err,
            "restricted protocol 'health' can not be specified in multiple config groups"
        );
        for bad in [
            "health",
            "health:k",
            "health:=v",
            "health:k=",
            ":k=v",
            "health,:k=v",
        ] {
            assert!(
                Restrictions::default().add_group(bad, "", "api").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn requests_need_the_header_and_value() {
        let mut r = Restrictions::default();
        r.add_group("inference:infer-key=infer-value", "", "api")
            .unwrap();
        let with = [("Infer-Key", "infer-value")];
        let wrong = [("infer-key", "other")];
        let none: [(&str, &str); 0] = [];
        assert_eq!(r.refusal(Category::Inference, &with), None);
        assert!(r.refusal(Category::Inference, &wrong).is_some());
        assert!(r.refusal(Category::Inference, &none).is_some());
        assert_eq!(r.refusal(Category::Health, &none), None);
    }
}
