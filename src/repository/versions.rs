//! Version directories: which numbered subdirectories of a model directory
//! exist, and which of them a version policy selects.

use std::fs;
use std::path::Path;

use log::{error, warn};

use crate::core::proto::ModelVersionPolicy;
use crate::core::proto::inference::model_version_policy::PolicyChoice;
use crate::core::{Error, Result};

/// Subdirectories of a model directory that hold data, not versions.
const NON_VERSION_DIRS: [&str; 3] = ["warmup", "initial_state", "configs"];

/// The versions present in `model_dir`, ascending. A version directory's
/// name is a plain decimal number without leading zeros; other directories
/// are skipped (with a warning, unless they are known data directories).
pub fn scan_versions(model_dir: &Path) -> Result<Vec<i64>> {
    let entries = fs::read_dir(model_dir).map_err(|e| {
        Error::internal(format!(
            "cannot read model directory '{}': {e}",
            model_dir.display()
        ))
    })?;
    let mut versions = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            Error::internal(format!(
                "cannot read model directory '{}': {e}",
                model_dir.display()
            ))
        })?;
        if !entry.path().is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if NON_VERSION_DIRS.contains(&name.as_str()) {
            continue;
        }
        match parse_version(&name) {
            Some(v) => versions.push(v),
            None => warn!(
                "ignoring directory '{name}' in '{}': version directories are named by a number without leading zeros",
                model_dir.display()
            ),
        }
    }
    versions.sort_unstable();
    Ok(versions)
}

fn parse_version(name: &str) -> Option<i64> {
    let plain = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_digit())
        && (name == "0" || !name.starts_with('0'));
    if plain { name.parse().ok() } else { None }
}

/// The versions `policy` selects from `present` (ascending), ascending.
/// Specific versions that have no directory are logged and skipped.
pub fn select_versions(model: &str, policy: &ModelVersionPolicy, present: &[i64]) -> Vec<i64> {
    match &policy.policy_choice {
        Some(PolicyChoice::All(_)) => present.to_vec(),
        Some(PolicyChoice::Specific(specific)) => {
            let mut chosen = Vec::new();
            for &v in &specific.versions {
                if present.contains(&v) {
                    chosen.push(v);
                } else {
                    error!(
                        "version {v} is listed in the version policy of model '{model}', but the model has no directory '{v}'"
                    );
                }
            }
            chosen.sort_unstable();
            chosen.dedup();
            chosen
        }
        Some(PolicyChoice::Latest(latest)) => {
            let n = usize::try_from(latest.num_versions).unwrap_or(usize::MAX);
            present[present.len().saturating_sub(n)..].to_vec()
        }
        None => present.last().map(|&v| vec![v]).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::proto::inference::model_version_policy::{All, Latest, Specific};

    fn policy(choice: PolicyChoice) -> ModelVersionPolicy {
        ModelVersionPolicy {
            policy_choice: Some(choice),
        }
    }

    #[test]
    fn version_names() {
        assert_eq!(parse_version("1"), Some(1));
        assert_eq!(parse_version("0"), Some(0));
        assert_eq!(parse_version("120"), Some(120));
        assert_eq!(parse_version("01"), None);
        assert_eq!(parse_version("-1"), None);
        assert_eq!(parse_version("1a"), None);
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("99999999999999999999"), None);
    }

    #[test]
    fn scans_numbered_directories() {
        let dir = std::env::temp_dir().join(format!("nereid-versions-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for d in ["1", "3", "10", "02", "warmup", "notes"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        fs::write(dir.join("7"), b"a file, not a version").unwrap();
        assert_eq!(scan_versions(&dir).unwrap(), vec![1, 3, 10]);
        fs::remove_dir_all(&dir).unwrap();
        assert!(scan_versions(&dir).is_err());
    }

    #[test]
    fn policies() {
        let present = [1, 2, 5, 9];
        assert_eq!(
            select_versions(
                "m",
                &policy(PolicyChoice::Latest(Latest { num_versions: 1 })),
                &present
            ),
            vec![9]
        );
        assert_eq!(
            select_versions(
                "m",
                &policy(PolicyChoice::Latest(Latest { num_versions: 3 })),
                &present
            ),
            vec![2, 5, 9]
        );
        assert_eq!(
            select_versions(
                "m",
                &policy(PolicyChoice::Latest(Latest { num_versions: 10 })),
                &present
            ),
            vec![1, 2, 5, 9]
        );
        assert_eq!(
            select_versions("m", &policy(PolicyChoice::All(All {})), &present),
            present.to_vec()
        );
        assert_eq!(
            select_versions(
                "m",
                &policy(PolicyChoice::Specific(Specific {
                    versions: vec![5, 3, 1, 5]
                })),
                &present
            ),
            vec![1, 5]
        );
        assert!(select_versions("m", &policy(PolicyChoice::All(All {})), &[]).is_empty());
    }
}
