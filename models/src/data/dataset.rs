//! The `Dataset` trait every format implements, the in-memory image store the binary formats
//! decode into, and few-shot / index subsets.
//!
//! A dataset knows its size, classes and labels without decoding images (labels come from folder
//! names or label bytes), so subsets, shuffles and the HyperRule's dataset size are cheap; images
//! are produced one at a time by [`Dataset::load`], on the loader's worker threads.

use std::sync::Arc;

use ::image::RgbImage;
use bitgrad_engine::Rng;

use crate::{Error, Result};

/// A labelled image dataset.
pub trait Dataset: Send + Sync {
    /// The number of examples.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Class names; labels index into them.
    fn classes(&self) -> &[String];
    fn num_classes(&self) -> usize {
        self.classes().len()
    }
    /// The label of example `i` (`i < len()`), without decoding the image.
    fn label(&self, i: usize) -> Result<usize>;
    /// Decodes example `i` as 8-bit RGB.
    fn load(&self, i: usize) -> Result<RgbImage>;
    /// A human name for example `i` (a file name, or file and record number) for reports.
    fn describe(&self, i: usize) -> String;
    /// The nominal image size `(height, width)` for the HyperRule's resolution rule, if known.
    fn image_size(&self) -> Option<(u32, u32)>;
    /// Examples found unusable while the dataset was opened (reported, not in `len()`).
    fn skipped(&self) -> Vec<Skipped> {
        Vec::new()
    }
}

/// An item that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub item: String,
    pub reason: String,
}

/// An out-of-range index as an error (the trait returns `Result`, never panics on user input).
pub(crate) fn check_index(i: usize, len: usize) -> Result<()> {
    if i < len {
        Ok(())
    } else {
        Err(Error::Msg(format!("example {i} is out of range: the dataset has {len}")))
    }
}

/// Images held in memory as one contiguous `N × H × W × C` u8 buffer (C = 1 or 3; gray is
/// expanded to RGB on load, which keeps Fashion-MNIST at a third of the memory).
#[derive(Debug, Clone)]
pub struct InMemory {
    name: String,
    pixels: Vec<u8>,
    labels: Vec<u32>,
    classes: Vec<String>,
    height: u32,
    width: u32,
    channels: u32,
}

impl InMemory {
    /// Builds the store; `name` appears in [`Dataset::describe`]. Checks the buffer size, the
    /// channel count, and that every label names a class.
    pub fn new(
        name: impl Into<String>,
        pixels: Vec<u8>,
        labels: Vec<u32>,
        classes: Vec<String>,
        (height, width, channels): (u32, u32, u32),
    ) -> Result<Self> {
        let name = name.into();
        if channels != 1 && channels != 3 {
            return Err(Error::Msg(format!("{name}: images must have 1 or 3 channels, not {channels}")));
        }
        if height == 0 || width == 0 {
            return Err(Error::Msg(format!("{name}: images of {height}×{width} have no pixels")));
        }
        let per = height as usize * width as usize * channels as usize;
        if pixels.len() != labels.len() * per {
            return Err(Error::Msg(format!(
                "{name}: {} bytes of pixels for {} labels of {height}×{width}×{channels}",
                pixels.len(),
                labels.len()
            )));
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= classes.len()) {
            return Err(Error::Msg(format!(
                "{name}: example {i} has label {l}, but there are {} classes",
                classes.len()
            )));
        }
        Ok(InMemory { name, pixels, labels, classes, height, width, channels })
    }

    /// Class names `"0" … "n−1"` for the largest label n − 1 (formats without names).
    pub fn numbered_classes(labels: &[u32]) -> Vec<String> {
        let n = labels.iter().max().map_or(0, |&m| m as usize + 1);
        (0..n).map(|c| c.to_string()).collect()
    }

    pub fn labels(&self) -> &[u32] {
        &self.labels
    }
    /// Replaces the class names (there must be a name for every label).
    pub fn with_classes(self, classes: Vec<String>) -> Result<Self> {
        let dims = (self.height, self.width, self.channels);
        InMemory::new(self.name, self.pixels, self.labels, classes, dims)
    }
}

impl Dataset for InMemory {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn label(&self, i: usize) -> Result<usize> {
        check_index(i, self.len())?;
        Ok(self.labels[i] as usize)
    }
    fn load(&self, i: usize) -> Result<RgbImage> {
        check_index(i, self.len())?;
        let hw = self.height as usize * self.width as usize;
        let src = &self.pixels[i * hw * self.channels as usize..][..hw * self.channels as usize];
        let rgb = if self.channels == 3 { src.to_vec() } else { src.iter().flat_map(|&g| [g, g, g]).collect() };
        RgbImage::from_raw(self.width, self.height, rgb)
            .ok_or_else(|| Error::Msg(format!("{}: example {i} has the wrong size", self.name)))
    }
    fn describe(&self, i: usize) -> String {
        format!("{} example {i}", self.name)
    }
    fn image_size(&self) -> Option<(u32, u32)> {
        Some((self.height, self.width))
    }
}

/// A view on some examples of another dataset, in the order given.
#[derive(Clone)]
pub struct Subset {
    parent: Arc<dyn Dataset>,
    indices: Vec<usize>,
}

impl Subset {
    /// The examples `indices` of `parent` (each checked to be in range).
    pub fn new(parent: Arc<dyn Dataset>, indices: Vec<usize>) -> Result<Self> {
        if let Some(&i) = indices.iter().find(|&&i| i >= parent.len()) {
            check_index(i, parent.len())?;
        }
        Ok(Subset { parent, indices })
    }
    /// Indices into the parent.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn classes(&self) -> &[String] {
        self.parent.classes()
    }
    fn label(&self, i: usize) -> Result<usize> {
        check_index(i, self.len())?;
        self.parent.label(self.indices[i])
    }
    fn load(&self, i: usize) -> Result<RgbImage> {
        check_index(i, self.len())?;
        self.parent.load(self.indices[i])
    }
    fn describe(&self, i: usize) -> String {
        match self.indices.get(i) {
            Some(&j) => self.parent.describe(j),
            None => format!("example {i} (out of range)"),
        }
    }
    fn image_size(&self) -> Option<(u32, u32)> {
        self.parent.image_size()
    }
    fn skipped(&self) -> Vec<Skipped> {
        self.parent.skipped()
    }
}

/// A seeded Fisher–Yates shuffle on the engine's counter-based RNG.
pub(crate) fn shuffle<T>(items: &mut [T], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// Few-shot subset: `k` examples of every class, chosen by a seeded shuffle of each class's
/// examples (the same `(k, seed)` always picks the same ones), listed in dataset order. A class
/// with fewer than `k` examples is an error naming it.
pub fn shots(dataset: Arc<dyn Dataset>, k: usize, seed: u64) -> Result<Subset> {
    if k == 0 {
        return Err(Error::Config("few-shot needs at least one example per class".into()));
    }
    let mut by_class = vec![Vec::new(); dataset.num_classes()];
    for i in 0..dataset.len() {
        let l = dataset.label(i)?;
        let n = by_class.len();
        let slot = by_class
            .get_mut(l)
            .ok_or_else(|| Error::Msg(format!("{}: label {l} but {n} classes", dataset.describe(i))))?;
        slot.push(i);
    }
    let mut picked = Vec::with_capacity(k * by_class.len());
    for (c, mut idx) in by_class.into_iter().enumerate() {
        if idx.len() < k {
            return Err(Error::Config(format!(
                "{k}-shot: class {:?} has only {} examples",
                dataset.classes()[c],
                idx.len()
            )));
        }
        // One stream per class, so a class's picks do not depend on the other classes' sizes.
        let mut rng = Rng::new(bitgrad_engine::rng::bits(seed, c as u64));
        shuffle(&mut idx, &mut rng);
        picked.extend_from_slice(&idx[..k]);
    }
    picked.sort_unstable();
    Subset::new(dataset, picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize, classes: u32) -> InMemory {
        let labels: Vec<u32> = (0..n as u32).map(|i| i % classes).collect();
        let pixels: Vec<u8> = (0..n * 4).map(|i| (i % 251) as u8).collect();
        let names = InMemory::numbered_classes(&labels);
        InMemory::new("toy", pixels, labels, names, (2, 2, 1)).unwrap()
    }

    #[test]
    fn in_memory_gray_to_rgb_and_checks() {
        let d = toy(6, 3);
        assert_eq!((d.len(), d.num_classes(), d.image_size()), (6, 3, Some((2, 2))));
        let img = d.load(1).unwrap();
        assert_eq!(img.dimensions(), (2, 2));
        assert_eq!(img.get_pixel(1, 0).0, [5, 5, 5]); // example 1 = bytes 4..8, pixel (x1,y0) = 5
        assert_eq!(d.label(4).unwrap(), 1);
        assert!(d.load(6).is_err() && d.label(6).is_err());
        assert!(InMemory::new("x", vec![0; 7], vec![0, 0], vec!["a".into()], (2, 2, 1)).is_err());
        let e = InMemory::new("x", vec![0; 8], vec![0, 1], vec!["a".into()], (2, 2, 1)).unwrap_err();
        assert!(e.to_string().contains("label 1"), "{e}");
        assert!(InMemory::new("x", vec![0; 8], vec![0], vec!["a".into()], (2, 2, 2)).is_err());
    }

    #[test]
    fn few_shot_is_seeded_and_balanced() {
        let d: Arc<dyn Dataset> = Arc::new(toy(60, 3));
        let a = shots(d.clone(), 5, 7).unwrap();
        let b = shots(d.clone(), 5, 7).unwrap();
        let c = shots(d.clone(), 5, 8).unwrap();
        assert_eq!(a.indices(), b.indices());
        assert_ne!(a.indices(), c.indices());
        assert_eq!(a.len(), 15);
        for cls in 0..3 {
            assert_eq!((0..15).filter(|&i| a.label(i).unwrap() == cls).count(), 5);
        }
        assert!(a.indices().windows(2).all(|w| w[0] < w[1]));
        let e = shots(d.clone(), 21, 0).err().unwrap().to_string();
        assert!(e.contains("only 20"), "{e}");
        assert!(shots(d, 0, 0).is_err());
    }
}
