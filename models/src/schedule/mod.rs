//! Training schedules: the BiT-HyperRule (bit-spec §4) — resolution, MixUp α, the step schedule
//! with warm-up and strict decay boundaries, and the optimiser constants.

pub mod hyperrule;

pub use hyperrule::{
    mixup_alpha_for, resolution_for, supports_for, HyperRule, Resolution, Schedule, BASE_LR, BATCH, MOMENTUM,
};
