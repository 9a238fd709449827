//! Helpers for the trainer tests: a tiny GN ResNetV2, a small separable synthetic dataset and a
//! HyperRule scaled down to a handful of steps.
#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bitgrad_models::data::{Dataset, InMemory};
use bitgrad_models::schedule::{HyperRule, Resolution, Schedule};
use bitgrad_models::train::{ModelSource, TrainConfig};
use bitgrad_models::{Module, NormKind, ResNetV2, ResNetV2Config};

/// A fresh folder under cargo's per-target temporary directory, unique per test and process.
pub fn tmp_dir(tag: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A ResNetV2 with one block per stage and narrow widths (GN with 4 groups, WS on).
pub fn tiny_config(num_classes: usize) -> ResNetV2Config {
    ResNetV2Config {
        layers: [1, 1, 1, 1],
        channels: [16, 32, 32, 64],
        stem_chs: 8,
        bottle_ratio: 0.25,
        num_classes,
        in_chans: 3,
        norm: NormKind::Group { groups: 4, eps: 1e-5 },
        ws: true,
        ws_eps: 1e-8,
    }
}

/// `n` 12×12 RGB images of `classes` classes: class c is a bright bar at a class-specific row band
/// plus a class tint, on seeded noise — separable, but not by a single pixel.
pub fn synthetic(n: usize, classes: usize, seed: u64) -> Arc<dyn Dataset> {
    let (h, w) = (12usize, 12usize);
    let mut pixels = Vec::with_capacity(n * h * w * 3);
    let mut labels = Vec::with_capacity(n);
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 56) as u8 / 4
    };
    for i in 0..n {
        let c = i % classes;
        let band = c * h / classes..(c + 1) * h / classes;
        for y in 0..h {
            for _x in 0..w {
                for ch in 0..3 {
                    let base = if band.contains(&y) { 150 } else { 40 };
                    let tint = if ch == c % 3 { 30 } else { 0 };
                    pixels.push(base + tint + noise());
                }
            }
        }
        labels.push(c as u32);
    }
    let names = (0..classes).map(|c| format!("class{c}")).collect();
    Arc::new(InMemory::new(format!("synthetic-{seed}"), pixels, labels, names, (h as u32, w as u32, 3)).unwrap())
}

/// A HyperRule for the tiny runs: 16 → 12 px crops (from 12 px images), no MixUp, the given
/// supports and base lr, batch / split.
pub fn hyper(supports: &[u64], base_lr: f64, batch: usize, split: usize) -> HyperRule {
    HyperRule {
        resolution: Resolution { precrop: 14, crop: 12 },
        mixup_alpha: 0.0,
        schedule: Schedule::new(supports.to_vec(), base_lr).unwrap(),
        momentum: 0.9,
        weight_decay: 0.0,
        batch,
        batch_split: split,
    }
}

/// A from-scratch config (timm head init, so every parameter gets a gradient at step 0), one
/// loader thread, quiet.
pub fn config(hyper: HyperRule, classes: usize) -> TrainConfig {
    let mut cfg = TrainConfig::new(ModelSource::Scratch { config: tiny_config(classes), zero_head: false }, hyper);
    cfg.workers = 1;
    cfg.seed = 7;
    cfg
}

/// Every parameter's values, by name.
pub fn weights(model: &ResNetV2) -> Vec<(String, Vec<f32>)> {
    model.named_parameters().into_iter().map(|(n, t)| (n, t.to_vec::<f32>().unwrap())).collect()
}
