//! Change detection for poll mode: a [`Fingerprint`] of a model directory
//! and the debounce rule ([`judge`]) that decides when a change is acted on.
//!
//! A fingerprint lists every file and directory below the model directory
//! (`config.pbtxt`, version directories and what they hold, labels and
//! warmup files) with its size and modification time. The rule, for one
//! model at one poll, given the fingerprint of its last load attempt `L`,
//! the one seen at the previous poll `P` and the current one `C`:
//!
//! 1. `C == L`: unchanged, nothing to do;
//! 2. `C != P`: the files changed since the previous poll (a copy may be in
//!    progress): wait;
//! 3. some entry of `C` was modified less than the settle interval before
//!    `now`: wait;
//! 4. otherwise the change is stable: load (or reload) the model.
//!
//! So a change is acted on at the first poll that sees the same files as
//! the poll before it, once the newest of them is at least the settle
//! interval old. Time is an argument: nothing here reads the clock.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How deep below a model directory files are fingerprinted (model →
/// version → files → one more level for models stored as directories).
const MAX_DEPTH: usize = 4;

/// Size and modification time of one entry (`None` size for a directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    size: Option<u64>,
    modified: Option<SystemTime>,
}

/// What a model directory held at one moment: relative path → size and
/// modification time of every entry below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint {
    entries: BTreeMap<PathBuf, Stat>,
}

impl Fingerprint {
    /// Fingerprints `dir`; unreadable entries are left out (a file being
    /// replaced may vanish while it is read), so they show up as a change.
    pub fn of(dir: &Path) -> Fingerprint {
        let mut print = Fingerprint::default();
        print.walk(dir, Path::new(""), MAX_DEPTH);
        print
    }

    fn walk(&mut self, dir: &Path, relative: &Path, depth: usize) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let name = relative.join(entry.file_name());
            let is_dir = meta.is_dir();
            self.entries.insert(
                name.clone(),
                Stat {
                    size: (!is_dir).then_some(meta.len()),
                    modified: meta.modified().ok(),
                },
            );
            if is_dir && depth > 1 {
                self.walk(&entry.path(), &name, depth - 1);
            }
        }
    }

    /// The part of the fingerprint that version `version` depends on: its
    /// own directory and everything that is not a version directory.
    pub fn for_version(&self, version: i64, versions: &[i64]) -> Fingerprint {
        let own = Path::new(&version.to_string()).to_path_buf();
        let others: Vec<PathBuf> = versions
            .iter()
            .filter(|&&v| v != version)
            .map(|v| PathBuf::from(v.to_string()))
            .collect();
        Fingerprint {
            entries: self
                .entries
                .iter()
                .filter(|(path, _)| {
                    path.starts_with(&own) || !others.iter().any(|o| path.starts_with(o))
                })
                .map(|(path, stat)| (path.clone(), *stat))
                .collect(),
        }
    }

    /// The newest modification time of any entry.
    fn newest(&self) -> Option<SystemTime> {
        self.entries.values().filter_map(|s| s.modified).max()
    }
}

/// What a poll does with one model directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The files are those of the last load attempt.
    Unchanged,
    /// The files changed but are not stable yet; look again next poll.
    Settling,
    /// The files changed and are stable: load the model.
    Changed,
}

/// The debounce rule (see the module docs). `loaded` is the fingerprint of
/// the last load attempt (`None`: never tried), `previous` the one seen at
/// the previous poll (`None`: not seen), `current` the one seen now.
pub fn judge(
    loaded: Option<&Fingerprint>,
    previous: Option<&Fingerprint>,
    current: &Fingerprint,
    now: SystemTime,
    settle: Duration,
) -> Verdict {
    if loaded == Some(current) {
        return Verdict::Unchanged;
    }
    if previous != Some(current) {
        return Verdict::Settling;
    }
    let young = current.newest().is_some_and(|newest| newest + settle > now);
    if young {
        Verdict::Settling
    } else {
        Verdict::Changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print(files: &[(&str, Option<u64>, u64)]) -> Fingerprint {
        Fingerprint {
            entries: files
                .iter()
                .map(|&(path, size, secs)| {
                    (
                        PathBuf::from(path),
                        Stat {
                            size,
                            modified: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)),
                        },
                    )
                })
                .collect(),
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    const SETTLE: Duration = Duration::from_secs(2);

    #[test]
    fn a_change_waits_for_a_stable_poll_and_the_settle_interval() {
        let loaded = print(&[("config.pbtxt", Some(10), 100), ("1", None, 100)]);
        // Nothing changed.
        assert_eq!(
            judge(
                Some(&loaded),
                Some(&loaded),
                &loaded.clone(),
                at(1000),
                SETTLE
            ),
            Verdict::Unchanged
        );
        // A file is being written at 200: first sighting waits.
        let writing = print(&[("config.pbtxt", Some(4), 200), ("1", None, 100)]);
        assert_eq!(
            judge(Some(&loaded), Some(&loaded), &writing, at(200), SETTLE),
            Verdict::Settling
        );
        // It grew before the next poll: still settling.
        let written = print(&[("config.pbtxt", Some(12), 201), ("1", None, 100)]);
        assert_eq!(
            judge(Some(&loaded), Some(&writing), &written, at(201), SETTLE),
            Verdict::Settling
        );
        // Same files as the previous poll, but modified 1 s ago (< 2 s).
        assert_eq!(
            judge(Some(&loaded), Some(&written), &written, at(202), SETTLE),
            Verdict::Settling
        );
        // Stable and old enough.
        assert_eq!(
            judge(Some(&loaded), Some(&written), &written, at(203), SETTLE),
            Verdict::Changed
        );
        // Reverted to what was loaded before anything was acted on.
        assert_eq!(
            judge(Some(&loaded), Some(&written), &loaded, at(204), SETTLE),
            Verdict::Unchanged
        );
    }

    #[test]
    fn a_new_model_is_loaded_once_stable() {
        let new = print(&[("config.pbtxt", Some(10), 50)]);
        assert_eq!(judge(None, None, &new, at(1000), SETTLE), Verdict::Settling);
        assert_eq!(
            judge(None, Some(&new), &new, at(1001), SETTLE),
            Verdict::Changed
        );
        // An empty directory (being created) is a fingerprint like any other.
        let empty = Fingerprint::default();
        assert_eq!(
            judge(None, Some(&empty), &empty, at(1001), SETTLE),
            Verdict::Changed
        );
    }

    #[test]
    fn fingerprints_see_names_sizes_and_times_on_disk() {
        let dir = std::env::temp_dir().join(format!("nereid-watch-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("1")).unwrap();
        fs::create_dir_all(dir.join("2")).unwrap();
        fs::write(dir.join("config.pbtxt"), "a").unwrap();
        fs::write(dir.join("1").join("model.bin"), "xy").unwrap();
        let first = Fingerprint::of(&dir);
        assert_eq!(first, Fingerprint::of(&dir));
        let paths: Vec<_> = first.entries.keys().cloned().collect();
        assert_eq!(
            paths,
            ["1", "1/model.bin", "2", "config.pbtxt"].map(PathBuf::from)
        );
        assert_eq!(first.entries[Path::new("1/model.bin")].size, Some(2));

        fs::write(dir.join("2").join("model.bin"), "z").unwrap();
        let second = Fingerprint::of(&dir);
        assert_ne!(first, second);
        assert_eq!(
            first
                .for_version(1, &[1, 2])
                .entries
                .keys()
                .collect::<Vec<_>>(),
            second
                .for_version(1, &[1, 2])
                .entries
                .keys()
                .collect::<Vec<_>>(),
            "version 1 does not depend on version 2's files"
        );
        assert!(
            second
                .for_version(2, &[1, 2])
                .entries
                .contains_key(Path::new("2/model.bin"))
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
