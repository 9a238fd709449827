//! The ImageFolder layout: `root/<class>/*.{jpg,jpeg,png}`, either as `root/train` + `root/val`
//! or one folder split by a seeded, per-class ratio.
//!
//! Classes are the sub-folders sorted by name, files are sorted by name, so the label of a file
//! and the dataset's order do not depend on the file system. When the folder is opened every
//! image's header is read (in parallel, cheap next to decoding): files that are not PNG/JPEG or
//! whose header is broken are reported by name and skipped ([`Dataset::skipped`]); images whose
//! pixel data turn out corrupt later are skipped by the loader, which reports them likewise.
//! An empty class folder, a single class or no images at all are refused with a message.

use std::path::{Path, PathBuf};

use ::image::{ImageReader, RgbImage};
use bitgrad_engine::Rng;
use rayon::prelude::*;

use super::dataset::{check_index, shuffle, Dataset, Skipped};
use super::image::read_rgb;
use crate::{Error, Result};

const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Images in class folders.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    files: Vec<(PathBuf, u32)>,
    /// `(height, width)` of every kept file, from its header.
    sizes: Vec<(u32, u32)>,
    skipped: Vec<Skipped>,
}

impl ImageFolder {
    /// Opens `dir/<class>/*` (one split).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let classes = class_dirs(dir)?;
        let mut candidates = Vec::new();
        let mut skipped = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let n_before = candidates.len();
            for path in sorted_entries(&dir.join(class))? {
                let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
                if path.is_file() && ext.is_some_and(|e| EXTENSIONS.contains(&e.as_str())) {
                    candidates.push((path, label as u32));
                }
            }
            if candidates.len() == n_before {
                return Err(Error::Msg(format!(
                    "{}: class folder {class:?} has no .jpg/.jpeg/.png images; remove it or add images",
                    dir.display()
                )));
            }
        }
        let headers: Vec<_> = candidates.par_iter().map(|(p, _)| header_size(p)).collect();
        let mut files = Vec::with_capacity(candidates.len());
        let mut sizes = Vec::with_capacity(candidates.len());
        for ((path, label), header) in candidates.into_iter().zip(headers) {
            match header {
                Ok(hw) => {
                    files.push((path, label));
                    sizes.push(hw);
                }
                Err(reason) => skipped.push(Skipped { item: path.display().to_string(), reason }),
            }
        }
        for (label, class) in classes.iter().enumerate() {
            if !files.iter().any(|&(_, l)| l as usize == label) {
                return Err(Error::Msg(format!(
                    "{}: every image of class {class:?} is unreadable (first: {})",
                    dir.display(),
                    skipped.first().map_or("?".to_string(), |s| format!("{}: {}", s.item, s.reason))
                )));
            }
        }
        Ok(ImageFolder { root: dir.to_path_buf(), classes, files, sizes, skipped })
    }

    /// `root/train` and `root/val` if both exist (their class lists must agree); otherwise
    /// `root/<class>` split with [`split`](Self::split)`(val_fraction, seed)`.
    pub fn open_train_val(root: impl AsRef<Path>, val_fraction: f64, seed: u64) -> Result<(Self, Self)> {
        let root = root.as_ref();
        let (train_dir, val_dir) = (root.join("train"), root.join("val"));
        if train_dir.is_dir() && val_dir.is_dir() {
            let train = ImageFolder::open(&train_dir)?;
            let val = ImageFolder::open(&val_dir)?;
            if train.classes != val.classes {
                return Err(Error::Msg(format!(
                    "{}: train has classes {:?}, val has {:?}; they must be the same folders",
                    root.display(),
                    train.classes,
                    val.classes
                )));
            }
            return Ok((train, val));
        }
        ImageFolder::open(root)?.split(val_fraction, seed)
    }

    /// Splits into (train, val): from each class, `round(n · val_fraction)` files (at least one,
    /// at most n − 1) chosen by a seeded shuffle go to val. Both parts keep file order.
    pub fn split(&self, val_fraction: f64, seed: u64) -> Result<(Self, Self)> {
        if !(val_fraction > 0.0 && val_fraction < 1.0) {
            return Err(Error::Config(format!("the validation fraction must be in (0, 1), got {val_fraction}")));
        }
        let mut to_val = vec![false; self.files.len()];
        for c in 0..self.classes.len() {
            let mut idx: Vec<usize> = (0..self.files.len()).filter(|&i| self.files[i].1 as usize == c).collect();
            if idx.len() < 2 {
                return Err(Error::Msg(format!(
                    "{}: class {:?} has {} image(s); splitting needs at least 2 per class",
                    self.root.display(),
                    self.classes[c],
                    idx.len()
                )));
            }
            let n_val = ((idx.len() as f64 * val_fraction).round() as usize).clamp(1, idx.len() - 1);
            let mut rng = Rng::new(bitgrad_engine::rng::bits(seed, c as u64));
            shuffle(&mut idx, &mut rng);
            for &i in &idx[..n_val] {
                to_val[i] = true;
            }
        }
        // Files skipped when the folder was opened belong to neither part; the train part
        // reports them, so a trainer printing both parts' reports counts each once.
        let part = |want: bool| ImageFolder {
            root: self.root.clone(),
            classes: self.classes.clone(),
            files: (0..self.files.len()).filter(|&i| to_val[i] == want).map(|i| self.files[i].clone()).collect(),
            sizes: (0..self.files.len()).filter(|&i| to_val[i] == want).map(|i| self.sizes[i]).collect(),
            skipped: if want { Vec::new() } else { self.skipped.clone() },
        };
        Ok((part(false), part(true)))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The path of example `i`.
    pub fn path(&self, i: usize) -> Option<&Path> {
        self.files.get(i).map(|(p, _)| p.as_path())
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn label(&self, i: usize) -> Result<usize> {
        check_index(i, self.len())?;
        Ok(self.files[i].1 as usize)
    }
    fn load(&self, i: usize) -> Result<RgbImage> {
        check_index(i, self.len())?;
        read_rgb(&self.files[i].0)
    }
    fn describe(&self, i: usize) -> String {
        self.path(i).map_or_else(|| format!("example {i} (out of range)"), |p| p.display().to_string())
    }
    /// The size of the median-area image: ImageFolders mix sizes and the rule only needs to know
    /// on which side of 96×96 the data sits.
    fn image_size(&self) -> Option<(u32, u32)> {
        let mut s = self.sizes.clone();
        s.sort_by_key(|&(h, w)| h as u64 * w as u64);
        s.get(s.len() / 2).copied()
    }
    fn skipped(&self) -> Vec<Skipped> {
        self.skipped.clone()
    }
}

/// The class folders of `dir`, sorted; at least two.
fn class_dirs(dir: &Path) -> Result<Vec<String>> {
    let mut classes = Vec::new();
    for path in sorted_entries(dir)? {
        if path.is_dir() {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::Msg(format!("{}: a class folder name is not UTF-8", path.display())))?;
            if !name.starts_with('.') {
                classes.push(name.to_string());
            }
        }
    }
    match classes.len() {
        0 => Err(Error::Msg(format!(
            "{}: no class folders (expected {0}/<class>/*.jpg|png, or {0}/train and {0}/val)",
            dir.display()
        ))),
        1 => Err(Error::Msg(format!(
            "{}: only one class ({:?}); classification needs at least two class folders",
            dir.display(),
            classes[0]
        ))),
        _ => Ok(classes),
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        out.push(entry.map_err(|e| Error::io(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

/// `(height, width)` from the header, or why the file cannot be an image.
fn header_size(path: &Path) -> std::result::Result<(u32, u32), String> {
    let reader = ImageReader::open(path).map_err(|e| e.to_string())?;
    let reader = reader.with_guessed_format().map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("unrecognised format (PNG and JPEG are supported)".into());
    }
    let (w, h) = reader.into_dimensions().map_err(|e| e.to_string())?;
    if w == 0 || h == 0 {
        return Err("the image has no pixels".into());
    }
    Ok((h, w))
}
