//! The on-disk cache of compiled kernels, so NVRTC runs once per source, architecture and
//! compiler, not once per process (a file takes ≈0.3 s to compile).
//!
//! Entries live in `$BITGRAD_KERNEL_CACHE`, else `$XDG_CACHE_HOME/bitgrad/kernels`, else
//! `~/.cache/bitgrad/kernels` (`BITGRAD_KERNEL_CACHE=off` disables the cache). The key is a
//! 128-bit FNV-1a hash of everything that changes the output: the source, every header, the
//! architecture, the NVRTC version and the options. Each entry carries a magic, its kind, its
//! length and a checksum, and is written to a temporary file and renamed into place, so a reader
//! never sees half an entry; an entry that fails any check is ignored (and rewritten after the
//! next compile). Cache failures are never errors: the cache only saves time.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::nvrtc::CodeKind;

/// 128-bit FNV-1a: stable across Rust versions and platforms (unlike `DefaultHasher`), tiny,
/// and collision-resistant enough for a cache whose inputs are not adversarial.
#[derive(Debug, Clone, Copy)]
pub struct Fnv128(u128);

impl Fnv128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;

    pub fn new() -> Self {
        Fnv128(Self::OFFSET)
    }
    fn bytes(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= b as u128;
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }
    /// Adds one field, length first, so that ("ab", "c") and ("a", "bc") hash differently.
    pub fn field(&mut self, data: &[u8]) -> &mut Self {
        self.bytes(&(data.len() as u64).to_le_bytes());
        self.bytes(data);
        self
    }
    pub fn finish(&self) -> u128 {
        self.0
    }
}

impl Default for Fnv128 {
    fn default() -> Self {
        Self::new()
    }
}

/// The cache key of one compile.
pub fn key(source: &str, headers: &[(&str, &str)], arch: &str, nvrtc_version: (i32, i32), options: &[String]) -> u128 {
    let mut h = Fnv128::new();
    h.field(b"bitgrad-kernel-cache-v1").field(source.as_bytes());
    for (name, text) in headers {
        h.field(name.as_bytes()).field(text.as_bytes());
    }
    h.field(arch.as_bytes()).field(format!("{}.{}", nvrtc_version.0, nvrtc_version.1).as_bytes());
    for o in options {
        h.field(o.as_bytes());
    }
    h.finish()
}

const MAGIC: &[u8; 8] = b"BGKC\x01\0\0\0";
/// magic, kind, length, checksum.
const HEADER_LEN: usize = 8 + 1 + 8 + 16;

/// A folder of compiled kernels (see the module docs).
#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: Option<PathBuf>,
}

impl DiskCache {
    /// The cache at the place the environment names, or a disabled one.
    pub fn from_env() -> Self {
        let env = |k| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = match env("BITGRAD_KERNEL_CACHE") {
            Some(d) if d == Path::new("off") => None,
            Some(d) => Some(d),
            None => env("XDG_CACHE_HOME")
                .or_else(|| env("HOME").map(|h| h.join(".cache")))
                .map(|c| c.join("bitgrad").join("kernels")),
        };
        DiskCache { dir }
    }

    /// A cache in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        DiskCache { dir: Some(dir.into()) }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn path(&self, key: u128) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{key:032x}.bin")))
    }

    /// The entry for `key`, if one exists and is intact.
    pub fn get(&self, key: u128) -> Option<(CodeKind, Vec<u8>)> {
        let data = std::fs::read(self.path(key)?).ok()?;
        if data.len() < HEADER_LEN || &data[..8] != MAGIC {
            return None;
        }
        let kind = CodeKind::from_byte(data[8])?;
        let len = u64::from_le_bytes(data[9..17].try_into().ok()?) as usize;
        let sum = u128::from_le_bytes(data[17..33].try_into().ok()?);
        let payload = &data[HEADER_LEN..];
        (payload.len() == len && Fnv128::new().field(payload).finish() == sum).then(|| (kind, payload.to_vec()))
    }

    /// Stores an entry: written to a temporary file in the same folder, then renamed over the
    /// final name (atomic on POSIX), so concurrent processes never read a partial entry.
    pub fn put(&self, key: u128, kind: CodeKind, code: &[u8]) -> std::io::Result<()> {
        let (Some(dir), Some(path)) = (self.dir.as_ref(), self.path(key)) else { return Ok(()) };
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{key:032x}.{}.tmp", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&[kind.to_byte()])?;
            f.write_all(&(code.len() as u64).to_le_bytes())?;
            f.write_all(&Fnv128::new().field(code).finish().to_le_bytes())?;
            f.write_all(code)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bitgrad-cache-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn fnv128_known_values() {
        // FNV-1a 128 of the empty input is the offset basis; of "a" the published test vector.
        let mut h = Fnv128::new();
        assert_eq!(h.finish(), 0x6c62272e07bb014262b821756295c58d);
        h.bytes(b"a");
        assert_eq!(h.finish(), 0xd228cb696f1a8caf78912b704e4a8964);
    }

    #[test]
    fn key_changes_with_every_input() {
        let opts = vec!["-std=c++17".to_string()];
        let base = key("src", &[("a.cuh", "x")], "sm_90", (13, 0), &opts);
        assert_eq!(base, key("src", &[("a.cuh", "x")], "sm_90", (13, 0), &opts), "stable");
        let others = [
            key("src2", &[("a.cuh", "x")], "sm_90", (13, 0), &opts),
            key("src", &[("a.cuh", "y")], "sm_90", (13, 0), &opts),
            key("src", &[("b.cuh", "x")], "sm_90", (13, 0), &opts),
            key("src", &[], "sm_90", (13, 0), &opts),
            key("src", &[("a.cuh", "x")], "sm_80", (13, 0), &opts),
            key("src", &[("a.cuh", "x")], "sm_90", (13, 1), &opts),
            key("src", &[("a.cuh", "x")], "sm_90", (13, 0), &[]),
            key("sr", &[("ca.cuh", "x")], "sm_90", (13, 0), &opts),
        ];
        for (i, k) in others.iter().enumerate() {
            assert_ne!(*k, base, "input {i} did not change the key");
        }
    }

    #[test]
    fn round_trip_and_corrupt_entries_are_ignored() {
        let dir = temp_dir("rt");
        let cache = DiskCache::at(&dir);
        assert!(cache.get(7).is_none(), "empty cache");
        cache.put(7, CodeKind::Cubin, b"\x7fELF cubin").unwrap();
        cache.put(8, CodeKind::Ptx, b".version 9.0\0").unwrap();
        assert_eq!(cache.get(7), Some((CodeKind::Cubin, b"\x7fELF cubin".to_vec())));
        assert_eq!(cache.get(8), Some((CodeKind::Ptx, b".version 9.0\0".to_vec())));
        let path = dir.join(format!("{:032x}.bin", 7u128));
        let mut data = std::fs::read(&path).unwrap();
        // A flipped payload byte, a truncated file, and garbage are all misses.
        let last = data.len() - 1;
        data[last] ^= 1;
        std::fs::write(&path, &data).unwrap();
        assert!(cache.get(7).is_none());
        std::fs::write(&path, &data[..20]).unwrap();
        assert!(cache.get(7).is_none());
        std::fs::write(&path, b"garbage").unwrap();
        assert!(cache.get(7).is_none());
        // Rewriting repairs the entry; no temporary files are left behind.
        cache.put(7, CodeKind::Cubin, b"new").unwrap();
        assert_eq!(cache.get(7), Some((CodeKind::Cubin, b"new".to_vec())));
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn disabled_cache_stores_nothing() {
        let cache = DiskCache { dir: None };
        cache.put(1, CodeKind::Cubin, b"x").unwrap();
        assert!(cache.get(1).is_none());
    }
}
