//! NumPy `.npz` archives (the original BiT weights): a zip, stored or deflated, of `.npy`
//! entries; the key of an array is its entry name without `.npy`. This module reads and writes
//! the raw keys; [`super::bit_npz`] maps BiT's names to timm's.
//!
//! Each entry's declared size is checked before its buffer is allocated: a stored entry must
//! declare exactly its compressed size, a deflated one at most what deflate can expand to
//! (1032:1), and the compressed bytes must lie inside the file. Entries that are not `.npy`
//! (e.g. `__MACOSX/` junk) are skipped; an archive without any `.npy` is an error.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

use bitgrad_engine::DType;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use super::atomic::write_atomic;
use super::{npy, LoadOptions, StateDict};
use crate::{Error, Result};

const FORMAT: &str = "npz";

/// The most deflate can expand data: 258 bytes per 2 bits of a maximal-length match, ≈1032:1.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Reads every `.npy` entry of a `.npz` under its raw key, in the archive's order.
pub fn load(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<StateDict> {
    let path = path.as_ref();
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    from_reader(f, len, path, opts)
}

/// [`load`] from any seekable source of `len` bytes (a `File`, a `Cursor`, or `&mut` either);
/// `path` only names it in errors.
pub fn from_reader<R: Read + Seek>(r: R, len: u64, path: &Path, opts: &LoadOptions) -> Result<StateDict> {
    opts.check()?;
    let bad = |msg: String| Error::format(path, FORMAT, msg);
    if len == 0 {
        return Err(bad("the file is empty".into()));
    }
    let mut zip = ZipArchive::new(r).map_err(|e| bad(format!("not a zip archive ({e})")))?;
    let mut sd = StateDict::new();
    let mut others = 0usize;
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(|e| bad(format!("zip entry #{i}: {e}")))?;
        let name = f.name().to_string();
        let Some(key) = name.strip_suffix(".npy").filter(|_| !f.is_dir()) else {
            others += 1;
            continue;
        };
        check_sizes(&f, len).map_err(|m| bad(format!("entry `{name}`: {m}")))?;
        let size = f.size();
        let t = npy::read(&mut f, size).map_err(|m| bad(format!("entry `{name}`: {m}")))?;
        // Reading to the end lets the zip reader verify the CRC of what we just read.
        let mut rest = [0u8; 1];
        match f.read(&mut rest) {
            Ok(0) => {}
            Ok(_) => return Err(bad(format!("entry `{name}`: more data than its declared size"))),
            Err(e) => return Err(bad(format!("entry `{name}`: corrupt data ({e})"))),
        }
        if sd.contains(key) {
            return Err(bad(format!("the key `{key}` appears twice")));
        }
        sd.insert(key, opts.apply(t)?);
    }
    if sd.is_empty() {
        return Err(bad(format!("the zip archive holds no .npy arrays ({others} other entries): not a NumPy .npz")));
    }
    Ok(sd)
}

/// The declared sizes must be possible for the entry's compressed bytes in a file of `len`.
fn check_sizes<R: Read>(f: &zip::read::ZipFile<'_, R>, len: u64) -> std::result::Result<(), String> {
    let (size, packed) = (f.size(), f.compressed_size());
    if packed > len {
        return Err(format!("claims {packed} compressed bytes in a {len}-byte file: truncated or corrupt"));
    }
    match f.compression() {
        CompressionMethod::Stored if size != packed => {
            Err(format!("a stored entry declares {size} bytes but holds {packed}: corrupt"))
        }
        CompressionMethod::Stored => Ok(()),
        CompressionMethod::Deflated if size > packed.saturating_mul(MAX_DEFLATE_RATIO).saturating_add(64) => {
            Err(format!("declares {size} bytes, more than {packed} deflated bytes can hold: corrupt"))
        }
        CompressionMethod::Deflated => Ok(()),
        m => Err(format!("compression method {m} is not supported (stored and deflated are)")),
    }
}

/// Writes `sd` as an `.npz` under its raw names (stored entries, .npy v1), atomically. bf16 has
/// no NumPy type and is written as `<f4` (exact: every bf16 is an f32).
pub fn save(path: impl AsRef<Path>, sd: &StateDict) -> Result<()> {
    let path = path.as_ref();
    let zip_err = |e: zip::result::ZipError| Error::format(path, FORMAT, format!("writing the archive: {e}"));
    write_atomic(path, |w| {
        let mut z = ZipWriter::new(w);
        for (name, t) in sd.iter() {
            let t = if t.dtype() == DType::BF16 { t.to_dtype(DType::F32)? } else { t.clone() };
            let header = npy::header_bytes(t.dtype(), t.dims()).expect("bf16 converted above");
            let size = (header.len() + t.numel() * t.dtype().size_in_bytes()) as u64;
            let opts = SimpleFileOptions::default()
                .compression_method(CompressionMethod::Stored)
                .large_file(size >= u32::MAX as u64);
            z.start_file(format!("{name}.npy"), opts).map_err(zip_err)?;
            npy::write(&mut z, &t).map_err(|e| e.into_error(path))?;
        }
        z.finish().map_err(zip_err)?.flush().map_err(|e| Error::io(path, e))
    })
}
