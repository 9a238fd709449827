//! The data shipped in assets/demo and built into the binary, shared by the demonstration
//! (`bitgrad finetune` with no arguments) and the normalization study (`bitgrad study norms`):
//! five Fashion-MNIST classes, relabelled 0–4 — the first 100 training images of each (the
//! few-shot pool / the study's training set) and the first 300 test images of each (held out).
//! How they were made and why these classes: assets/demo/README.md, scripts/make_demo_data.py.

use std::path::Path;
use std::sync::Arc;

use bitgrad::models::data::{idx_from_bytes, Dataset};
use bitgrad::models::Result;

const TRAIN_IMAGES: &[u8] = include_bytes!("../../assets/demo/train-images-idx3-ubyte.gz");
const TRAIN_LABELS: &[u8] = include_bytes!("../../assets/demo/train-labels-idx1-ubyte.gz");
const TEST_IMAGES: &[u8] = include_bytes!("../../assets/demo/t10k-images-idx3-ubyte.gz");
const TEST_LABELS: &[u8] = include_bytes!("../../assets/demo/t10k-labels-idx1-ubyte.gz");

/// The shipped classes in label order: Fashion-MNIST's 3, 4, 6, 8, 9.
pub const CLASSES: [&str; 5] = ["Dress", "Coat", "Shirt", "Bag", "Ankle boot"];

/// The 500 training images (100 per class).
pub fn train_set() -> Result<Arc<dyn Dataset>> {
    dataset(TRAIN_IMAGES, TRAIN_LABELS, "assets/demo/train")
}

/// The 1 500 held-out images (300 per class), from Fashion-MNIST's test split.
pub fn test_set() -> Result<Arc<dyn Dataset>> {
    dataset(TEST_IMAGES, TEST_LABELS, "assets/demo/t10k")
}

fn dataset(images: &[u8], labels: &[u8], name: &str) -> Result<Arc<dyn Dataset>> {
    let ds = idx_from_bytes(
        images,
        Path::new(&format!("{name}-images-idx3-ubyte.gz")),
        labels,
        Path::new(&format!("{name}-labels-idx1-ubyte.gz")),
    )?;
    Ok(Arc::new(ds.with_classes(CLASSES.iter().map(|c| c.to_string()).collect())?))
}
