//! The on-disk cache of compiled kernel images, so a server restart does not
//! pay for NVRTC again.
//!
//! An entry is keyed by a hash of everything that shapes the compiled code
//! (source text, compiler options, NVRTC version, target architecture) and
//! lives in one file, written to a temporary name in the same directory and
//! renamed into place, so a reader never sees half an entry. The file
//! carries a magic number, the full key, the kind of image and a checksum of
//! the payload: anything that does not check out (truncated, corrupt, from
//! another key) reads as a miss, and the caller compiles and overwrites it.
//! Pure host code, no CUDA.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What NVRTC produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImageKind {
    /// Machine code for one architecture (`sm_XY`).
    Cubin,
    /// PTX text for a virtual architecture (`compute_XY`), JIT-compiled by
    /// the driver at load.
    Ptx,
}

/// A compiled kernel image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Compiled {
    pub(crate) kind: ImageKind,
    pub(crate) bytes: Vec<u8>,
}

/// 64-bit FNV-1a: stable across builds and platforms (the std hasher is
/// not), enough to tell a handful of cache entries apart.
fn fnv1a(state: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(state, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The identity of one compilation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    /// Source family (file stem), for readable file names.
    family: &'static str,
    /// `sm_XY` or `compute_XY`.
    target: String,
    hash: u64,
}

impl Key {
    /// Hashes every input of the compilation; each field is length-prefixed
    /// so no two different inputs concatenate to the same bytes.
    pub(crate) fn new(
        family: &'static str,
        source: &str,
        options: &[String],
        nvrtc_version: (i32, i32),
        target: &str,
    ) -> Key {
        let mut h = FNV_OFFSET;
        let mut field = |bytes: &[u8]| {
            h = fnv1a(h, &(bytes.len() as u64).to_le_bytes());
            h = fnv1a(h, bytes);
        };
        field(family.as_bytes());
        field(source.as_bytes());
        for option in options {
            field(option.as_bytes());
        }
        field(&nvrtc_version.0.to_le_bytes());
        field(&nvrtc_version.1.to_le_bytes());
        field(target.as_bytes());
        Key {
            family,
            target: target.to_string(),
            hash: h,
        }
    }

    fn file_name(&self) -> String {
        format!("{}-{}-{:016x}.bin", self.family, self.target, self.hash)
    }
}

/// The cache directory: `$NEREID_KERNEL_CACHE`, else
/// `$XDG_CACHE_HOME/nereid/kernels`, else `$HOME/.cache/nereid/kernels`;
/// `None` (no disk cache) when none is set.
pub(crate) fn default_dir() -> Option<PathBuf> {
    dir_from(
        std::env::var_os("NEREID_KERNEL_CACHE"),
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
}

fn dir_from(
    nereid: Option<OsString>,
    xdg: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    set(nereid)
        .or_else(|| set(xdg).map(|d| d.join("nereid").join("kernels")))
        .or_else(|| set(home).map(|d| d.join(".cache").join("nereid").join("kernels")))
}

const MAGIC: &[u8; 8] = b"NRDKERN1";
/// Magic, key hash, kind, payload length, payload checksum.
const HEADER_LEN: usize = 8 + 8 + 1 + 8 + 8;

/// Unique temporary names within this process; the pid separates processes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A directory of compiled images.
#[derive(Debug, Clone)]
pub(crate) struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    pub(crate) fn new(dir: PathBuf) -> DiskCache {
        DiskCache { dir }
    }

    pub(crate) fn path(&self, key: &Key) -> PathBuf {
        self.dir.join(key.file_name())
    }

    /// The entry for `key`, or `None` when there is none or it does not
    /// check out (logged: the caller recompiles and overwrites it).
    pub(crate) fn load(&self, key: &Key) -> Option<Compiled> {
        let path = self.path(key);
        let data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                log::warn!("kernel cache: cannot read {}: {e}", path.display());
                return None;
            }
        };
        let parsed = decode(key, &data);
        if parsed.is_none() {
            log::warn!(
                "kernel cache: {} is corrupt or stale; recompiling",
                path.display()
            );
        }
        parsed
    }

    /// Writes the entry for `key` atomically (temporary file + rename).
    pub(crate) fn store(&self, key: &Key, compiled: &Compiled) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let path = self.path(key);
        let temp = self.dir.join(format!(
            ".{}.{}.{}.tmp",
            key.file_name(),
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written =
            write_file(&temp, &encode(key, compiled)).and_then(|()| fs::rename(&temp, &path));
        if written.is_err() {
            // Best effort: a stray temporary file is harmless, only untidy.
            let _ = fs::remove_file(&temp);
        }
        written
    }
}

fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(data)?;
    file.sync_all()
}

fn encode(key: &Key, compiled: &Compiled) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + compiled.bytes.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key.hash.to_le_bytes());
    out.push(match compiled.kind {
        ImageKind::Cubin => 0,
        ImageKind::Ptx => 1,
    });
    out.extend_from_slice(&(compiled.bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&fnv1a(FNV_OFFSET, &compiled.bytes).to_le_bytes());
    out.extend_from_slice(&compiled.bytes);
    out
}

fn decode(key: &Key, data: &[u8]) -> Option<Compiled> {
    let (header, payload) = data.split_at_checked(HEADER_LEN)?;
    let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    if &header[..8] != MAGIC || u64_at(8) != key.hash {
        return None;
    }
    let kind = match header[16] {
        0 => ImageKind::Cubin,
        1 => ImageKind::Ptx,
        _ => return None,
    };
    if u64_at(17) != payload.len() as u64 || u64_at(25) != fnv1a(FNV_OFFSET, payload) {
        return None;
    }
    Some(Compiled {
        kind,
        bytes: payload.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(
            "elementwise",
            "src",
            &["--fmad=false".into()],
            (13, 0),
            "sm_90",
        )
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nereid-kernel-cache-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn key_covers_every_input() {
        let base = key();
        let variants = [
            Key::new(
                "preprocess",
                "src",
                &["--fmad=false".into()],
                (13, 0),
                "sm_90",
            ),
            Key::new(
                "elementwise",
                "src2",
                &["--fmad=false".into()],
                (13, 0),
                "sm_90",
            ),
            Key::new("elementwise", "src", &[], (13, 0), "sm_90"),
            Key::new(
                "elementwise",
                "src",
                &["--fmad=false".into()],
                (13, 1),
                "sm_90",
            ),
            Key::new(
                "elementwise",
                "src",
                &["--fmad=false".into()],
                (13, 0),
                "sm_80",
            ),
            // Field boundaries matter: "ab" + "c" is not "a" + "bc".
            Key::new(
                "elementwise",
                "src--fmad",
                &["=false".into()],
                (13, 0),
                "sm_90",
            ),
        ];
        for v in &variants {
            assert_ne!(v.hash, base.hash, "{v:?}");
        }
        assert_eq!(key(), base, "the hash is deterministic");
        assert!(base.file_name().starts_with("elementwise-sm_90-"));
    }

    #[test]
    fn directory_follows_the_environment_order() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            dir_from(os("/k"), os("/x"), os("/h")),
            Some(PathBuf::from("/k"))
        );
        assert_eq!(
            dir_from(None, os("/x"), os("/h")),
            Some(PathBuf::from("/x/nereid/kernels"))
        );
        assert_eq!(
            dir_from(os(""), os(""), os("/h")),
            Some(PathBuf::from("/h/.cache/nereid/kernels"))
        );
        assert_eq!(dir_from(None, None, None), None);
    }

    #[test]
    fn round_trip_and_miss() {
        let dir = temp_dir("round-trip");
        let cache = DiskCache::new(dir.join("nested"));
        let k = key();
        assert_eq!(cache.load(&k), None, "empty cache misses");
        let compiled = Compiled {
            kind: ImageKind::Ptx,
            bytes: b".version 8.0\n.target sm_90\n".to_vec(),
        };
        cache.store(&k, &compiled).unwrap();
        assert_eq!(cache.load(&k), Some(compiled.clone()));
        // Overwriting replaces the entry.
        let cubin = Compiled {
            kind: ImageKind::Cubin,
            bytes: vec![0x7f, b'E', b'L', b'F', 0, 1, 2],
        };
        cache.store(&k, &cubin).unwrap();
        assert_eq!(cache.load(&k), Some(cubin));
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.join("nested"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from(k.file_name())]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_entries_read_as_misses() {
        let dir = temp_dir("corrupt");
        let cache = DiskCache::new(dir.clone());
        let k = key();
        let compiled = Compiled {
            kind: ImageKind::Cubin,
            bytes: (0..=255u8).collect(),
        };
        cache.store(&k, &compiled).unwrap();
        let path = cache.path(&k);
        let good = fs::read(&path).unwrap();

        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let mut bad_kind = good.clone();
        bad_kind[16] = 7;
        let mut other_key = good.clone();
        other_key[8] ^= 1;
        let corruptions: Vec<Vec<u8>> = vec![
            Vec::new(),
            good[..HEADER_LEN - 1].to_vec(),
            good[..good.len() - 1].to_vec(),
            flipped,
            bad_kind,
            other_key,
            [good.clone(), vec![0]].concat(),
        ];
        for (i, bytes) in corruptions.into_iter().enumerate() {
            fs::write(&path, bytes).unwrap();
            assert_eq!(cache.load(&k), None, "corruption {i}");
        }
        // A recompiled entry overwrites the corrupt one.
        cache.store(&k, &compiled).unwrap();
        assert_eq!(cache.load(&k), Some(compiled));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_directory_is_an_error_not_a_panic() {
        let dir = temp_dir("unwritable");
        fs::write(&dir, b"a file where the directory should be").unwrap();
        let cache = DiskCache::new(dir.join("kernels"));
        let compiled = Compiled {
            kind: ImageKind::Ptx,
            bytes: b"x".to_vec(),
        };
        assert!(cache.store(&key(), &compiled).is_err());
        assert_eq!(cache.load(&key()), None);
        fs::remove_file(&dir).unwrap();
    }
}
