//! The CIFAR-10/100 binary format ("CIFAR-10 binary version" from the dataset's site).
//!
//! CIFAR-10: `data_batch_1.bin … data_batch_5.bin` (train) and `test_batch.bin`, records of
//! 1 label byte + 3072 pixel bytes (the R, G, B planes of a 32×32 image, row-major); class names
//! in `batches.meta.txt`. CIFAR-100: `train.bin` and `test.bin`, records of a coarse and a fine
//! label byte + 3072 pixel bytes; names in `coarse_label_names.txt` / `fine_label_names.txt`.
//! Files are checked to hold a whole number of records and labels to be in range.

use std::path::{Path, PathBuf};

use super::dataset::InMemory;
use crate::{Error, Result};

/// Which CIFAR and, for CIFAR-100, which labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cifar {
    Ten,
    /// CIFAR-100 with the 100 fine labels (the usual benchmark).
    HundredFine,
    /// CIFAR-100 with the 20 coarse superclasses.
    HundredCoarse,
}

/// The CIFAR-10 class names, used when `batches.meta.txt` is absent.
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

const PIXELS: usize = 32 * 32 * 3;

impl Cifar {
    fn label_bytes(self) -> usize {
        if self == Cifar::Ten {
            1
        } else {
            2
        }
    }
    fn num_classes(self) -> usize {
        match self {
            Cifar::Ten => 10,
            Cifar::HundredFine => 100,
            Cifar::HundredCoarse => 20,
        }
    }
    fn files(self, train: bool) -> Vec<&'static str> {
        match (self, train) {
            (Cifar::Ten, true) => {
                vec!["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"]
            }
            (Cifar::Ten, false) => vec!["test_batch.bin"],
            (_, true) => vec!["train.bin"],
            (_, false) => vec!["test.bin"],
        }
    }
    fn names_file(self) -> &'static str {
        match self {
            Cifar::Ten => "batches.meta.txt",
            Cifar::HundredFine => "fine_label_names.txt",
            Cifar::HundredCoarse => "coarse_label_names.txt",
        }
    }
    /// The folder the official archive unpacks to.
    fn archive_dir(self) -> &'static str {
        if self == Cifar::Ten {
            "cifar-10-batches-bin"
        } else {
            "cifar-100-binary"
        }
    }

    /// Loads the train (`train = true`) or test split from `dir` (the folder with the `.bin`
    /// files, or its parent holding `cifar-10-batches-bin` / `cifar-100-binary`).
    pub fn open(self, dir: impl AsRef<Path>, train: bool) -> Result<InMemory> {
        let mut dir = dir.as_ref().to_path_buf();
        if !dir.join(self.files(train)[0]).exists() && dir.join(self.archive_dir()).is_dir() {
            dir = dir.join(self.archive_dir());
        }
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for name in self.files(train) {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            self.parse(&path, &bytes, &mut pixels, &mut labels)?;
        }
        let classes = self.class_names(&dir)?;
        let split = if train { "train" } else { "test" };
        InMemory::new(format!("{} {split}", dir.display()), pixels, labels, classes, (32, 32, 3))
    }

    /// Appends the records of one file as HWC pixels and labels.
    fn parse(self, path: &PathBuf, bytes: &[u8], pixels: &mut Vec<u8>, labels: &mut Vec<u32>) -> Result<()> {
        let rec = self.label_bytes() + PIXELS;
        if bytes.is_empty() || !bytes.len().is_multiple_of(rec) {
            return Err(Error::format(
                path,
                "CIFAR binary",
                format!(
                    "{} bytes is not a whole number of {rec}-byte records (truncated, or the other CIFAR?)",
                    bytes.len()
                ),
            ));
        }
        pixels.reserve(bytes.len() / rec * PIXELS);
        for (r, record) in bytes.chunks_exact(rec).enumerate() {
            // CIFAR-100 records are <coarse><fine><pixels>.
            let label = match self {
                Cifar::Ten | Cifar::HundredCoarse => record[0],
                Cifar::HundredFine => record[1],
            } as usize;
            if label >= self.num_classes() {
                return Err(Error::format(
                    path,
                    "CIFAR binary",
                    format!("record {r} has label {label}, CIFAR has {} classes here", self.num_classes()),
                ));
            }
            labels.push(label as u32);
            let planes = &record[self.label_bytes()..];
            for p in 0..1024 {
                pixels.extend_from_slice(&[planes[p], planes[1024 + p], planes[2048 + p]]);
            }
        }
        Ok(())
    }

    /// Names from the names file if present (one per line, blank lines ignored), else CIFAR-10's
    /// built-in list or numbers.
    fn class_names(self, dir: &Path) -> Result<Vec<String>> {
        let path = dir.join(self.names_file());
        let names: Vec<String> = match std::fs::read_to_string(&path) {
            Ok(text) => text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match self {
                Cifar::Ten => CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
                _ => (0..self.num_classes()).map(|c| c.to_string()).collect(),
            },
            Err(e) => return Err(Error::io(&path, e)),
        };
        if names.len() != self.num_classes() {
            return Err(Error::format(
                &path,
                "CIFAR label names",
                format!("{} names, expected {}", names.len(), self.num_classes()),
            ));
        }
        Ok(names)
    }
}
