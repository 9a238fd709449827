//! The IDX format of MNIST and Fashion-MNIST, gzipped or not.
//!
//! An IDX file is `0x00 0x00 <type> <ndim>`, then `ndim` big-endian u32 sizes, then the data.
//! Images are `idx3-ubyte` (type 0x08 = u8, dims N×H×W), labels `idx1-ubyte` (dims N). A file
//! starting with the gzip magic `1f 8b` is decompressed first. The header must agree with the
//! file's length exactly; grayscale becomes RGB when an image is loaded.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::dataset::InMemory;
use crate::{Error, Result};

/// Fashion-MNIST's class names (label order), for [`InMemory::with_classes`].
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Reads an IDX image file and its label file; classes are numbered `0 … max label`.
pub fn open_idx(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<InMemory> {
    let (ipath, lpath) = (images.as_ref(), labels.as_ref());
    let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io(p, e));
    idx_from_bytes(&read(ipath)?, ipath, &read(lpath)?, lpath)
}

/// [`open_idx`] on the files' bytes (gzipped or not), e.g. data built into the binary; the
/// paths only name the files in errors.
pub fn idx_from_bytes(images: &[u8], ipath: &Path, labels: &[u8], lpath: &Path) -> Result<InMemory> {
    let (idims, pixels) = parse_idx(images, ipath)?;
    let (ldims, label_bytes) = parse_idx(labels, lpath)?;
    if idims.len() != 3 {
        return Err(Error::format(ipath, "IDX", format!("images need 3 dimensions (N, H, W), found {idims:?}")));
    }
    if ldims.len() != 1 {
        return Err(Error::format(lpath, "IDX", format!("labels need 1 dimension, found {ldims:?}")));
    }
    if idims[0] != ldims[0] {
        return Err(Error::Msg(format!(
            "{} has {} images but {} has {} labels",
            ipath.display(),
            idims[0],
            lpath.display(),
            ldims[0]
        )));
    }
    let labels: Vec<u32> = label_bytes.into_iter().map(u32::from).collect();
    let classes = InMemory::numbered_classes(&labels);
    InMemory::new(ipath.display().to_string(), pixels, labels, classes, (idims[1], idims[2], 1))
}

/// Finds and reads a split in `dir`: the files whose names start with `train` (train) or `t10k`
/// (test) and contain `idx3` / `idx1`, gzipped or not — the names MNIST and Fashion-MNIST ship.
pub fn open_idx_dir(dir: impl AsRef<Path>, train: bool) -> Result<InMemory> {
    let dir = dir.as_ref();
    let prefix = if train { "train" } else { "t10k" };
    let find = |kind: &str| -> Result<PathBuf> {
        let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut hits: Vec<PathBuf> = Vec::new();
        for entry in rd {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with(prefix) && name.contains(kind) {
                hits.push(path);
            }
        }
        // Prefer the uncompressed file when both are there (no decompression needed).
        hits.sort_by_key(|p| (p.extension().is_some_and(|e| e == "gz"), p.clone()));
        hits.into_iter().next().ok_or_else(|| {
            Error::Msg(format!("{}: no {prefix}*{kind}* file (MNIST/Fashion-MNIST IDX files)", dir.display()))
        })
    };
    open_idx(find("idx3")?, find("idx1")?)
}

/// The dimensions and u8 data of an IDX file's bytes (`path` names it in errors).
fn parse_idx(raw: &[u8], path: &Path) -> Result<(Vec<u32>, Vec<u8>)> {
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw)
            .read_to_end(&mut out)
            .map_err(|e| Error::format(path, "gzip", e.to_string()))?;
        out
    } else {
        raw.to_vec()
    };
    let bad = |msg: String| Error::format(path, "IDX", msg);
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("no IDX magic (two zero bytes, type, dimension count)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!("element type 0x{:02x}; only unsigned bytes (0x08) are supported", bytes[2])));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if ndim == 0 || bytes.len() < header {
        return Err(bad(format!("{} bytes cannot hold a header of {ndim} dimensions", bytes.len())));
    }
    let dims: Vec<u32> =
        bytes[4..header].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect();
    let want = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    let have = (bytes.len() - header) as u64;
    if want != Some(have) {
        return Err(bad(format!("the header says {dims:?} = {want:?} bytes of data, the file has {have}")));
    }
    Ok((dims, bytes[header..].to_vec()))
}
