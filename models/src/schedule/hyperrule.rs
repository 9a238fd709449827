//! The BiT-HyperRule, transcribed from the reference `bit_hyperrule.py` (bit-spec §4.1, §4.2).
//!
//! * Resolution by the dataset's nominal image area: `H·W < 96·96` → resize 160, crop 128; else
//!   resize 512, crop 480.
//! * MixUp α: 0 for fewer than 20 000 training examples, else 0.1.
//! * Schedule "supports" by training-set size N: `[100, 200, 300, 400, 500]` for N < 20 000,
//!   `[500, 3000, 6000, 9000, 10000]` for N < 500 000, `[500, 6000, 12000, 18000, 20000]` above.
//!   The first support ends a linear warm-up from lr 0 at step 0; the last is the number of
//!   optimiser updates; the ones in between divide the lr by 10 from the step *after* them
//!   (`get_lr` counts supports `s < step`, strictly).
//! * SGD, momentum 0.9 (PyTorch form), no weight decay, batch 512, base lr 0.003.
//!
//! The reference scales nothing with the batch size: the README's GPU recipe changes batch and
//! lr by hand and keeps the step schedule (bit-spec §4.2). [`HyperRule::with_linear_lr_scaling`]
//! offers the TF2 colab's linear rule (`0.003 · B / 512`) for those who want it; it is opt-in.
//!
//! For demonstrations, [`Schedule::scaled_to`] shrinks a schedule to a given number of steps,
//! moving warm-up end and decay boundaries proportionally (`round(s · total / old_total)`), so
//! the shape (20% warm-up and decays at 40/60/80% in the small regime) is kept.

use crate::{Error, Result};

/// The reference's default base learning rate (`bit_common.py`).
pub const BASE_LR: f64 = 0.003;
/// SGD momentum (PyTorch form: `buf ← 0.9·buf + g; w ← w − lr·buf`).
pub const MOMENTUM: f64 = 0.9;
/// The reference's batch size (reached by gradient accumulation when it does not fit).
pub const BATCH: usize = 512;

/// Training resolution: resize to `precrop × precrop`, then random-crop `crop × crop`; evaluation
/// resizes straight to `crop × crop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    pub precrop: u32,
    pub crop: u32,
}

/// `get_resolution`: images smaller in area than 96×96 train at 160→128, the rest at 512→480.
pub fn resolution_for(height: u32, width: u32) -> Resolution {
    if (height as u64) * (width as u64) < 96 * 96 {
        Resolution { precrop: 160, crop: 128 }
    } else {
        Resolution { precrop: 512, crop: 480 }
    }
}

/// `get_mixup`: α = 0 (no MixUp) below 20 000 training examples, 0.1 from there on.
pub fn mixup_alpha_for(dataset_size: usize) -> f64 {
    if dataset_size < 20_000 {
        0.0
    } else {
        0.1
    }
}

/// `get_schedule`: the supports for a training set of `dataset_size` examples.
pub fn supports_for(dataset_size: usize) -> [u64; 5] {
    if dataset_size < 20_000 {
        [100, 200, 300, 400, 500]
    } else if dataset_size < 500_000 {
        [500, 3000, 6000, 9000, 10000]
    } else {
        [500, 6000, 12000, 18000, 20000]
    }
}

/// A HyperRule step schedule: `supports = [warm-up end, decay boundaries…, total steps]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    supports: Vec<u64>,
    base_lr: f64,
}

impl Schedule {
    /// A schedule from explicit supports (at least two: warm-up end and total; non-decreasing;
    /// a positive total) and a base lr (finite, ≥ 0).
    pub fn new(supports: Vec<u64>, base_lr: f64) -> Result<Self> {
        if supports.len() < 2 {
            return Err(Error::Config(format!(
                "a schedule needs at least a warm-up end and a total step count, got {supports:?}"
            )));
        }
        if supports.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::Config(format!("schedule supports must not decrease: {supports:?}")));
        }
        if *supports.last().unwrap() == 0 {
            return Err(Error::Config("a schedule needs at least one step".into()));
        }
        if !(base_lr.is_finite() && base_lr >= 0.0) {
            return Err(Error::Config(format!("the base lr must be finite and ≥ 0, got {base_lr}")));
        }
        Ok(Schedule { supports, base_lr })
    }

    /// The HyperRule schedule for a training set of `dataset_size` examples.
    pub fn for_dataset(dataset_size: usize, base_lr: f64) -> Result<Self> {
        Schedule::new(supports_for(dataset_size).to_vec(), base_lr)
    }

    pub fn supports(&self) -> &[u64] {
        &self.supports
    }
    pub fn base_lr(&self) -> f64 {
        self.base_lr
    }
    pub fn warmup_steps(&self) -> u64 {
        self.supports[0]
    }
    /// The decay boundaries (the supports between the warm-up end and the total).
    pub fn boundaries(&self) -> &[u64] {
        &self.supports[1..self.supports.len() - 1]
    }
    /// The number of optimiser updates (steps `0 … total − 1`).
    pub fn total_steps(&self) -> u64 {
        *self.supports.last().unwrap()
    }

    /// `get_lr(step)`: the lr for optimiser step `step`, or `None` once training is over.
    pub fn lr(&self, step: u64) -> Option<f64> {
        let s = &self.supports;
        if step < s[0] {
            // Linear warm-up from 0 (step 0 has lr 0 but still seeds the momentum buffer).
            return Some(self.base_lr * step as f64 / s[0] as f64);
        }
        if step >= self.total_steps() {
            return None;
        }
        // The reference divides by 10 for each support in supports[1:] strictly below `step`;
        // the last support never counts because step < total here.
        let mut lr = self.base_lr;
        for &b in &s[1..] {
            if b < step {
                lr /= 10.0;
            }
        }
        Some(lr)
    }

    /// The same schedule shrunk (or stretched) to `total` steps: every support `s` becomes
    /// `round(s · total / old_total)`, so warm-up and decays keep their fractions. For demos
    /// that cannot afford 500 steps.
    pub fn scaled_to(&self, total: u64) -> Result<Self> {
        if total == 0 {
            return Err(Error::Config("a schedule needs at least one step".into()));
        }
        let old = self.total_steps() as u128;
        let supports =
            self.supports.iter().map(|&s| ((s as u128 * total as u128 * 2 + old) / (2 * old)) as u64).collect();
        Schedule::new(supports, self.base_lr)
    }
}

/// Every BiT-HyperRule value in one place, each overridable (the CLI maps flags onto fields).
#[derive(Debug, Clone, PartialEq)]
pub struct HyperRule {
    pub resolution: Resolution,
    /// MixUp α; 0 disables MixUp.
    pub mixup_alpha: f64,
    /// Step schedule with the base lr.
    pub schedule: Schedule,
    pub momentum: f64,
    /// Always 0 in BiT ("Note: no weight-decay!"); here for completeness.
    pub weight_decay: f64,
    /// Examples per optimiser step.
    pub batch: usize,
    /// Micro-batches per step (gradient accumulation): each is `batch / batch_split` examples.
    pub batch_split: usize,
}

impl HyperRule {
    /// The rule for a training set of `dataset_size` examples whose nominal image size is
    /// `height × width` (for few-shot runs, `dataset_size` is k · classes, as in the reference).
    pub fn for_dataset(dataset_size: usize, height: u32, width: u32) -> Self {
        HyperRule {
            resolution: resolution_for(height, width),
            mixup_alpha: mixup_alpha_for(dataset_size),
            schedule: Schedule::for_dataset(dataset_size, BASE_LR).expect("the built-in supports are valid"),
            momentum: MOMENTUM,
            weight_decay: 0.0,
            batch: BATCH,
            batch_split: 1,
        }
    }

    /// `get_lr(step)` of this rule's schedule.
    pub fn lr(&self, step: u64) -> Option<f64> {
        self.schedule.lr(step)
    }

    /// The rule with its schedule rescaled to `total` steps (see [`Schedule::scaled_to`]).
    pub fn with_total_steps(mut self, total: u64) -> Result<Self> {
        self.schedule = self.schedule.scaled_to(total)?;
        Ok(self)
    }

    /// Replaces the base lr, keeping the supports.
    pub fn with_base_lr(mut self, base_lr: f64) -> Result<Self> {
        self.schedule = Schedule::new(self.schedule.supports.clone(), base_lr)?;
        Ok(self)
    }

    /// The TF2 colab's linear rule, opt-in: batch `batch` with base lr `0.003 · batch / 512`.
    /// The reference scripts do not do this (bit-spec §4.2).
    pub fn with_linear_lr_scaling(self, batch: usize) -> Result<Self> {
        let mut r = self.with_base_lr(BASE_LR * batch as f64 / BATCH as f64)?;
        r.batch = batch;
        r.validate()?;
        Ok(r)
    }

    /// The micro-batch size, `batch / batch_split`, after [`validate`](Self::validate).
    pub fn micro_batch(&self) -> Result<usize> {
        self.validate()?;
        Ok(self.batch / self.batch_split)
    }

    /// Checks the values fit together (after the CLI's overrides).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.resolution.crop == 0 || self.resolution.precrop < self.resolution.crop {
            return bad(format!(
                "the pre-crop size ({}) must be at least the crop size ({}), which must be positive",
                self.resolution.precrop, self.resolution.crop
            ));
        }
        if !(self.mixup_alpha.is_finite() && self.mixup_alpha >= 0.0) {
            return bad(format!("the MixUp α must be finite and ≥ 0, got {}", self.mixup_alpha));
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return bad(format!("the momentum must be in [0, 1), got {}", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("the weight decay must be finite and ≥ 0, got {}", self.weight_decay));
        }
        if self.batch == 0 || self.batch_split == 0 || !self.batch.is_multiple_of(self.batch_split) {
            return bad(format!(
                "the batch ({}) must be a positive multiple of the batch split ({})",
                self.batch, self.batch_split
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts `lr(step)` for each `(step, expected)`; `None` = training over.
    fn check(s: &Schedule, cases: &[(u64, Option<f64>)]) {
        for &(step, want) in cases {
            let got = s.lr(step);
            match (got, want) {
                (Some(g), Some(w)) => {
                    assert!((g - w).abs() <= 1e-15 + 1e-12 * w.abs(), "step {step}: {g} vs {w}")
                }
                _ => assert_eq!(got, want, "step {step}"),
            }
        }
    }

    // Derivations: get_lr returns base·step/s0 for step < s0; None for step ≥ s4; otherwise
    // 0.003 / 10^k with k = #{s ∈ s1..s3 : s < step}. So at a boundary b the lr is still the
    // higher value and drops from b + 1.
    #[test]
    fn small_regime_boundaries() {
        let s = Schedule::for_dataset(19_999, BASE_LR).unwrap();
        assert_eq!(s.supports(), [100, 200, 300, 400, 500]);
        check(
            &s,
            &[
                (0, Some(0.0)),      // warm-up start: 0.003·0/100
                (50, Some(0.0015)),  // middle: 0.003·50/100
                (99, Some(0.00297)), // end: 0.003·99/100
                (100, Some(0.003)),  // k = 0
                (101, Some(0.003)),
                (199, Some(0.003)),
                (200, Some(0.003)),  // 200 < 200 is false: still k = 0
                (201, Some(0.0003)), // k = 1
                (299, Some(0.0003)),
                (300, Some(0.0003)),
                (301, Some(0.00003)),
                (399, Some(0.00003)),
                (400, Some(0.00003)),
                (401, Some(0.000003)),
                (499, Some(0.000003)), // last update
                (500, None),           // stop
                (501, None),
            ],
        );
        assert_eq!(s.total_steps(), 500);
        assert_eq!(s.warmup_steps(), 100);
        assert_eq!(s.boundaries(), [200, 300, 400]);
    }

    #[test]
    fn medium_regime_boundaries() {
        for n in [20_000, 50_000, 499_999] {
            let s = Schedule::for_dataset(n, BASE_LR).unwrap();
            assert_eq!(s.supports(), [500, 3000, 6000, 9000, 10000]);
            check(
                &s,
                &[
                    (0, Some(0.0)),
                    (250, Some(0.0015)),   // 0.003·250/500
                    (499, Some(0.002994)), // 0.003·499/500
                    (500, Some(0.003)),
                    (501, Some(0.003)),
                    (2999, Some(0.003)),
                    (3000, Some(0.003)),
                    (3001, Some(0.0003)),
                    (5999, Some(0.0003)),
                    (6000, Some(0.0003)),
                    (6001, Some(0.00003)),
                    (8999, Some(0.00003)),
                    (9000, Some(0.00003)),
                    (9001, Some(0.000003)),
                    (9999, Some(0.000003)),
                    (10000, None),
                ],
            );
        }
    }

    #[test]
    fn large_regime_boundaries() {
        for n in [500_000, 1_281_167] {
            let s = Schedule::for_dataset(n, BASE_LR).unwrap();
            assert_eq!(s.supports(), [500, 6000, 12000, 18000, 20000]);
            check(
                &s,
                &[
                    (0, Some(0.0)),
                    (1, Some(0.000006)), // 0.003·1/500
                    (499, Some(0.002994)),
                    (500, Some(0.003)),
                    (5999, Some(0.003)),
                    (6000, Some(0.003)),
                    (6001, Some(0.0003)),
                    (11999, Some(0.0003)),
                    (12000, Some(0.0003)),
                    (12001, Some(0.00003)),
                    (17999, Some(0.00003)),
                    (18000, Some(0.00003)),
                    (18001, Some(0.000003)),
                    (19999, Some(0.000003)),
                    (20000, None),
                ],
            );
        }
    }

    #[test]
    fn resolution_and_mixup_rules() {
        // 95·97 = 9215 < 9216 = 96·96 → small; 96·96 is not < 96·96 → large.
        assert_eq!(resolution_for(32, 32), Resolution { precrop: 160, crop: 128 });
        assert_eq!(resolution_for(28, 28), Resolution { precrop: 160, crop: 128 });
        assert_eq!(resolution_for(95, 97), Resolution { precrop: 160, crop: 128 });
        assert_eq!(resolution_for(96, 96), Resolution { precrop: 512, crop: 480 });
        assert_eq!(resolution_for(224, 224), Resolution { precrop: 512, crop: 480 });
        assert_eq!(resolution_for(1, 10_000), Resolution { precrop: 512, crop: 480 });
        assert_eq!(mixup_alpha_for(0), 0.0);
        assert_eq!(mixup_alpha_for(19_999), 0.0);
        assert_eq!(mixup_alpha_for(20_000), 0.1);
        assert_eq!(mixup_alpha_for(1_281_167), 0.1);
        // CIFAR-10 (50 000 images of 32×32): 160→128, α 0.1, 10 000 steps.
        let r = HyperRule::for_dataset(50_000, 32, 32);
        assert_eq!(r.resolution, Resolution { precrop: 160, crop: 128 });
        assert_eq!(r.mixup_alpha, 0.1);
        assert_eq!(r.schedule.total_steps(), 10_000);
        assert_eq!((r.momentum, r.weight_decay, r.batch, r.batch_split), (0.9, 0.0, 512, 1));
        assert_eq!(r.lr(0), Some(0.0));
        // 10-shot on 10 classes: N = 100 → 500 steps, no MixUp.
        let r = HyperRule::for_dataset(100, 224, 224);
        assert_eq!((r.resolution.crop, r.mixup_alpha, r.schedule.total_steps()), (480, 0.0, 500));
    }

    #[test]
    fn scaled_demo_schedule() {
        // Small regime to 50 steps: each support ·50/500 → [10, 20, 30, 40, 50].
        let s = Schedule::for_dataset(100, BASE_LR).unwrap().scaled_to(50).unwrap();
        assert_eq!(s.supports(), [10, 20, 30, 40, 50]);
        check(
            &s,
            &[
                (0, Some(0.0)),
                (5, Some(0.0015)),
                (10, Some(0.003)),
                (20, Some(0.003)),
                (21, Some(0.0003)),
                (41, Some(0.000003)),
                (49, Some(0.000003)),
                (50, None),
            ],
        );
        // Rounding: 500·33/500 = 33, 100·33/500 = 6.6 → 7, 200·33/500 = 13.2 → 13, 19.8 → 20,
        // 26.4 → 26.
        let s = Schedule::for_dataset(100, BASE_LR).unwrap().scaled_to(33).unwrap();
        assert_eq!(s.supports(), [7, 13, 20, 26, 33]);
        // Medium regime to 1000: [50, 300, 600, 900, 1000].
        let r = HyperRule::for_dataset(50_000, 32, 32).with_total_steps(1000).unwrap();
        assert_eq!(r.schedule.supports(), [50, 300, 600, 900, 1000]);
        // One step: warm-up rounds to 0 (0.1 → 0), so step 0 runs at the full base lr.
        let s = Schedule::for_dataset(100, BASE_LR).unwrap().scaled_to(1).unwrap();
        assert_eq!(s.supports(), [0, 0, 1, 1, 1]);
        check(&s, &[(0, Some(0.003)), (1, None)]);
        assert!(s.scaled_to(0).is_err());
    }

    #[test]
    fn overrides_and_validation() {
        let r = HyperRule::for_dataset(100, 32, 32).with_base_lr(0.001).unwrap();
        assert_eq!(r.lr(100), Some(0.001));
        assert_eq!(r.lr(250), Some(0.0001));
        // Colab's linear scaling, opt-in: batch 128 → 0.003·128/512 = 0.00075.
        let r = HyperRule::for_dataset(100, 32, 32).with_linear_lr_scaling(128).unwrap();
        assert_eq!((r.batch, r.schedule.base_lr()), (128, 0.00075));
        let mut r = HyperRule::for_dataset(100, 32, 32);
        r.batch_split = 4;
        assert_eq!(r.micro_batch().unwrap(), 128);
        r.batch_split = 3;
        assert!(r.micro_batch().unwrap_err().to_string().contains("multiple"));
        r.batch_split = 1;
        r.resolution = Resolution { precrop: 100, crop: 128 };
        assert!(r.validate().is_err());
        assert!(Schedule::new(vec![5], 0.1).is_err());
        assert!(Schedule::new(vec![5, 3], 0.1).is_err());
        assert!(Schedule::new(vec![0, 0], 0.1).is_err());
        assert!(Schedule::new(vec![1, 2], f64::NAN).is_err());
        assert!(HyperRule::for_dataset(100, 32, 32).with_base_lr(-1.0).is_err());
    }
}
