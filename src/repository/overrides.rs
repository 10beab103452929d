//! Model directories built from a load request's `file:` parameters
//! (Triton's model file override): each `file:<path>` names a file of the
//! model directory relative to it (`file:1/model.onnx`) and carries its
//! content. The files are written into a fresh private directory under the
//! system's temporary directory, which the model then loads from in place
//! of its repository directory; the directory is removed when it is
//! dropped, that is when the model is unloaded, replaced or fails to load.
//!
//! A path must stay inside the model directory: absolute paths and `..`
//! that climbs above it are refused, and so is a path component longer
//! than the 255 bytes Linux allows in a file name. The directory is new
//! and only this module writes into it, so it holds no symbolic link a
//! path could follow out of it.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::core::{Error, Result};

/// The prefix of a load parameter that carries a file.
pub const FILE_PREFIX: &str = "file:";

/// The longest file name component Linux accepts (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// A model directory written from override files; removed on drop.
#[derive(Debug)]
pub struct OverrideDir {
    path: PathBuf,
}

impl OverrideDir {
    /// Writes `files` (parameter name with its [`FILE_PREFIX`], content)
    /// into a new directory for model `name`. The messages begin as
    /// Triton's for a failed load (`failed to load '<name>', failed to poll
    /// from model repository`), which clients match on.
    pub fn create(name: &str, files: &[(String, Vec<u8>)]) -> Result<OverrideDir> {
        let fail = |e: Error| {
            Error::new(
                e.code(),
                format!(
                    "failed to load '{name}', failed to poll from model repository: {}",
                    e.message()
                ),
            )
        };
        let relative: Vec<PathBuf> = files
            .iter()
            .map(|(key, _)| relative_path(key))
            .collect::<Result<_>>()
            .map_err(fail)?;
        let dir = OverrideDir {
            path: fresh_dir(name).map_err(fail)?,
        };
        for ((key, content), rel) in files.iter().zip(&relative) {
            dir.write(key, rel, content).map_err(fail)?;
        }
        Ok(dir)
    }

    /// The model directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self, key: &str, rel: &Path, content: &[u8]) -> Result<()> {
        let target = self.path.join(rel);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| {
                Error::invalid_arg(format!(
                    "file parameter '{key}': cannot create its directory: {e} (is a file of that name given too?)"
                ))
            })?;
        }
        fs::write(&target, content).map_err(|e| {
            Error::invalid_arg(format!("file parameter '{key}': cannot write it: {e}"))
        })
    }
}

impl Drop for OverrideDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path)
            && e.kind() != ErrorKind::NotFound
        {
            log::warn!(
                "could not remove the override model directory '{}': {e}",
                self.path.display()
            );
        }
    }
}

/// The path a `file:` parameter names, relative to the model directory
/// and normalized (`.` dropped, `..` applied), or why it is refused.
pub fn relative_path(key: &str) -> Result<PathBuf> {
    let text = key.strip_prefix(FILE_PREFIX).unwrap_or(key);
    let escapes = || {
        Error::invalid_arg(format!(
            "file parameter '{key}' names a path outside the model directory; paths are relative to it and must stay within it"
        ))
    };
    let mut out = PathBuf::new();
    for component in Path::new(text).components() {
        match component {
            Component::Normal(part) => {
                if part.len() > NAME_MAX {
                    // Triton's own test pins INTERNAL (500) for this one.
                    return Err(Error::internal(format!(
                        "file parameter '{}…': a path component is {} bytes long, longer than the {NAME_MAX} bytes a file name may have",
                        key.chars().take(64).collect::<String>(),
                        part.len()
                    )));
                }
                out.push(part);
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(escapes());
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(escapes()),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(Error::invalid_arg(format!(
            "file parameter '{key}' names no file"
        )));
    }
    Ok(out)
}

/// A new directory only this process can enter, named after the model.
fn fresh_dir(name: &str) -> Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("nereid-model-{}-{n}-{safe}", std::process::id()));
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Error::internal(format!(
                    "cannot create a model directory in '{}': {e}",
                    base.display()
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Code;

    #[test]
    fn paths_stay_inside() {
        assert_eq!(
            relative_path("file:1/model.onnx").unwrap(),
            Path::new("1/model.onnx")
        );
        assert_eq!(
            relative_path("file:./1/x/../model.onnx").unwrap(),
            Path::new("1/model.onnx")
        );
        for bad in [
            "file:../x",
            "file:1/../../x",
            "file:/etc/passwd",
            "file:../../root/.bashrc",
        ] {
            let e = relative_path(bad).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArg, "{bad}");
            assert!(e.message().contains("outside the model directory"), "{bad}");
        }
        for empty in ["file:", "file:.", "file:a/.."] {
            assert_eq!(relative_path(empty).unwrap_err().code(), Code::InvalidArg);
        }
        let long = format!("file:{}", "A".repeat(256));
        let e = relative_path(&long).unwrap_err();
        assert_eq!(e.code(), Code::Internal);
        assert!(e.message().contains("256 bytes long"), "{}", e.message());
        assert!(relative_path(&format!("file:{}", "A".repeat(255))).is_ok());
    }

    #[test]
    fn directory_is_written_and_removed() {
        let files = vec![
            ("file:1/model.onnx".to_owned(), b"onnx".to_vec()),
            ("file:labels.txt".to_owned(), b"a\nb\n".to_vec()),
        ];
        let dir = OverrideDir::create("m/x", &files).unwrap();
        let path = dir.path().to_path_buf();
        assert_eq!(fs::read(path.join("1/model.onnx")).unwrap(), b"onnx");
        assert_eq!(fs::read(path.join("labels.txt")).unwrap(), b"a\nb\n");
        drop(dir);
        assert!(!path.exists());

        // A file whose name is then used as a directory fails, and the
        // half-written directory goes away with the error.
        let clash = vec![
            ("file:1".to_owned(), b"x".to_vec()),
            ("file:1/model.onnx".to_owned(), b"y".to_vec()),
        ];
        let e = OverrideDir::create("clash", &clash).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArg);
        assert!(
            e.message()
                .starts_with("failed to load 'clash', failed to poll from model repository: file parameter 'file:1/model.onnx'"),
            "{}",
            e.message()
        );
        let e = OverrideDir::create("esc", &[("file:../x".to_owned(), Vec::new())]).unwrap_err();
        assert!(
            e.message()
                .starts_with("failed to load 'esc', failed to poll from model repository")
        );
    }
}
