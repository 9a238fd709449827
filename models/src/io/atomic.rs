//! Atomic file writes: the bytes go to a temporary file in the destination's directory, which is
//! fsynced and then renamed over the destination. A crash or an error mid-write leaves the old
//! file (or nothing) in place, never a truncated weight file.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Calls `write` with a buffered writer on a temporary file and renames it to `path` when `write`
/// succeeds; removes the temporary file when anything fails.
pub(crate) fn write_atomic(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path)?;
    let res = write_then_rename(path, &tmp, write);
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

fn write_then_rename(path: &Path, tmp: &Path, write: impl FnOnce(&mut BufWriter<File>) -> Result<()>) -> Result<()> {
    let f = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    write(&mut w)?;
    let f = w.into_inner().map_err(|e| Error::io(tmp, e.into_error()))?;
    f.sync_all().map_err(|e| Error::io(tmp, e))?;
    drop(f);
    fs::rename(tmp, path).map_err(|e| Error::io(path, e))?;
    // Make the rename itself durable. Best effort: some file systems refuse to fsync a directory.
    if let Ok(d) = File::open(parent(path)) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `.<name>.tmp<pid>-<n>` next to `path`: same directory (so the rename does not cross file
/// systems), hidden, and unique per process and call (concurrent saves do not collide).
fn temp_path(path: &Path) -> Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name =
        path.file_name().ok_or_else(|| Error::Msg(format!("{}: not a file name to write to", path.display())))?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(parent(path).join(format!(".{}.tmp{}-{n}", name.to_string_lossy(), std::process::id())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn replaces_on_success_keeps_old_on_error() {
        let dir = std::env::temp_dir().join(format!("bitgrad-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("w.bin");
        write_atomic(&p, |w| w.write_all(b"first").map_err(|e| Error::io("x", e))).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"first");
        let err = write_atomic(&p, |w| {
            w.write_all(b"partial").unwrap();
            Err(Error::Msg("boom".into()))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert_eq!(fs::read(&p).unwrap(), b"first", "a failed write must leave the old file");
        let left: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 1, "the temporary file is removed: {left:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
