//! The study's grid and recipe, and the normalization specs it understands.

use bitgrad_engine::Device;

use crate::schedule::Resolution;
use crate::{Error, NormKind, ResNetV2Config, Result};

/// The plot's colour of the i-th normalization of the grid (cycled past eight), with its name
/// for the table: the PNG has no legend (no font dependency), the table says which is which.
pub const COLORS: [(&str, (u8, u8, u8)); 8] = [
    ("blue", (31, 119, 180)),
    ("red", (214, 39, 40)),
    ("green", (44, 160, 44)),
    ("orange", (255, 127, 14)),
    ("purple", (148, 103, 189)),
    ("brown", (140, 86, 75)),
    ("pink", (227, 119, 194)),
    ("grey", (127, 127, 127)),
];

/// A normalization study: every (norm, batch size, seed) trains `model` from scratch with the
/// same recipe. Every field is public; [`NormStudy::default`] is the grid.
#[derive(Debug, Clone)]
pub struct NormStudy {
    /// Batch sizes (per optimiser step, one micro-batch: the per-device batch BN sees).
    pub batch_sizes: Vec<usize>,
    /// Normalization specs: `gn_ws`, `gn`, `bn`, `bn_ws`, `ln`, `ln_ws`, `ws`, `none`.
    pub norms: Vec<String>,
    /// Optimiser steps of the largest batch size. With `equal_examples` a batch `b` trains
    /// `steps · b_max / b` steps, so every run sees the same number of examples (Wu & He's
    /// fixed-epoch protocol); without it every batch size trains `steps` steps.
    pub steps: u64,
    pub equal_examples: bool,
    /// Seeds `0 … seeds − 1` per cell (initialisation, data order, crops, flips).
    pub seeds: u64,
    /// The lr for a batch of 256; a batch `b` uses `lr · b / 256` (the linear scaling rule of
    /// Goyal et al. 2017, which the GN paper uses), with BiT's schedule shape: warm-up to 10 %,
    /// ×0.1 at 30, 60 and 90 %.
    pub lr: f64,
    pub resolution: Resolution,
    /// An architecture name (`ResNetV2Config::named`); its widths, with each spec's norm.
    pub model: String,
    pub device: Device,
    /// Loader threads per run (0: one per core).
    pub workers: usize,
}

impl Default for NormStudy {
    fn default() -> Self {
        NormStudy {
            batch_sizes: vec![4, 8, 16, 32, 64],
            norms: ["gn_ws", "gn", "bn", "ln"].map(String::from).to_vec(),
            steps: 100,
            equal_examples: true,
            seeds: 3,
            lr: 0.1,
            // The demonstration's scaling of BiT's 160 → 128 for 28×28 images (docs/training.md).
            resolution: Resolution { precrop: 36, crop: 32 },
            model: "resnetv2_tiny_bit".into(),
            device: Device::Cpu,
            workers: 0,
        }
    }
}

impl NormStudy {
    /// Checks the grid before any training, so a typo fails at once and not after an hour.
    pub fn validate(&self, num_classes: usize) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.batch_sizes.is_empty() || self.batch_sizes.contains(&0) {
            return bad(format!("the batch sizes must be positive and at least one, got {:?}", self.batch_sizes));
        }
        if self.norms.is_empty() {
            return bad("the study needs at least one normalization".into());
        }
        if self.steps == 0 || self.seeds == 0 {
            return bad(format!("steps ({}) and seeds ({}) must be positive", self.steps, self.seeds));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("the lr must be finite and positive, got {}", self.lr));
        }
        for spec in &self.norms {
            self.model_config(spec, num_classes)?;
        }
        Ok(())
    }

    /// Optimiser steps for batch size `batch` (see [`NormStudy::steps`]).
    pub fn steps_for(&self, batch: usize) -> u64 {
        let largest = self.batch_sizes.iter().copied().max().unwrap_or(batch).max(1) as u64;
        if self.equal_examples {
            (self.steps * largest).div_ceil(batch.max(1) as u64)
        } else {
            self.steps
        }
    }

    /// The peak lr for batch size `batch`: `lr · batch / 256`.
    pub fn lr_for(&self, batch: usize) -> f64 {
        self.lr * batch as f64 / 256.0
    }

    /// The study's model with the normalization `spec`.
    /// The study's model with normalization `spec` (see [`crate::nn::parse_norm`]); a bare `gn` /
    /// `gn_ws` keeps the architecture's own group count (4 for `resnetv2_tiny_bit`), so the GN
    /// rows compare with the model as designed.
    pub fn model_config(&self, spec: &str, num_classes: usize) -> Result<ResNetV2Config> {
        let base = ResNetV2Config::named(&self.model, num_classes)?;
        let spec = spec.trim().to_ascii_lowercase();
        let spec = match (&base.norm, spec.as_str()) {
            (NormKind::Group { groups, .. }, "gn") => format!("gn{groups}"),
            (NormKind::Group { groups, .. }, "gn_ws") => format!("gn{groups}_ws"),
            _ => spec,
        };
        base.with_norm(&spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_map_to_norm_and_ws() {
        let study = NormStudy::default();
        let cfg = |spec: &str| study.model_config(spec, 5).map(|c| (c.norm, c.ws));
        assert_eq!(cfg("gn_ws").unwrap(), (NormKind::group(4), true), "tiny keeps its 4 groups");
        assert_eq!(cfg("bn").unwrap(), (NormKind::batch(), false));
        assert_eq!(cfg("ln_ws").unwrap(), (NormKind::layer(), true));
        assert_eq!(cfg("in").unwrap(), (NormKind::instance(), false));
        assert_eq!(cfg("ws").unwrap(), (NormKind::None, true));
        assert!(cfg("none_ws_ws").is_err());
        assert!(cfg("frn").is_err());
    }

    #[test]
    fn equal_examples_scales_steps_and_lr_is_linear() {
        let s = NormStudy { steps: 10, batch_sizes: vec![4, 64], ..NormStudy::default() };
        assert_eq!(s.steps_for(64), 10);
        assert_eq!(s.steps_for(4), 160);
        assert_eq!(NormStudy { equal_examples: false, ..s.clone() }.steps_for(4), 10);
        assert!((s.lr_for(64) - 0.025).abs() < 1e-12);
    }
}
