//! A weight file's model tensors apart from what travels with them: a training checkpoint's
//! optimizer state (`optim.*`) and PyTorch's BatchNorm counters (`*.num_batches_tracked`), plus
//! the class names a file may carry in its metadata.
//!
//! The model itself has no place for either extra: SGD momentum belongs to a run, not to the
//! weights, and `num_batches_tracked` only matters to PyTorch's BatchNorm with `momentum=None`
//! (a cumulative average), which no BiT config uses. So loading for inference, conversion or
//! fine-tuning drops them ([`model_only`]), and [`add_num_batches_tracked`] puts the counters
//! back when a file is written for PyTorch, whose strict `load_state_dict` expects them.

use bitgrad_engine::{DType, Device, Tensor};

use super::StateDict;
use crate::{Error, Result};

/// Name prefix of optimizer state in a training checkpoint.
pub const OPTIM_PREFIX: &str = "optim.";
/// PyTorch's per-BatchNorm counter of training forward passes (an i64 scalar).
pub const NUM_BATCHES_TRACKED: &str = "num_batches_tracked";
/// Metadata key of the class names, one per line, in the head's order (written by `export`).
pub const CLASSES_KEY: &str = "bitgrad.classes";
/// Metadata key under which training checkpoints keep their class names.
pub const TRAIN_CLASSES_KEY: &str = "bitgrad.train.classes";

/// `sd` without optimizer entries and `num_batches_tracked` counters. A counter must be an
/// integer scalar beside a BatchNorm's `running_mean`; anything else is an error naming it (a
/// counter where no BatchNorm is means the file is not what it claims).
pub fn model_only(mut sd: StateDict) -> Result<StateDict> {
    let extra: Vec<String> = sd
        .names()
        .filter(|n| n.starts_with(OPTIM_PREFIX) || n.rsplit('.').next() == Some(NUM_BATCHES_TRACKED))
        .map(str::to_string)
        .collect();
    let mut bad = Vec::new();
    for name in extra {
        if let Some(prefix) = name.strip_suffix(NUM_BATCHES_TRACKED) {
            let t = sd.get(&name).expect("name just listed");
            let running = format!("{prefix}running_mean");
            if t.numel() != 1 || t.dtype().is_float() || !sd.contains(&running) {
                bad.push(format!("{name} ({:?} {:?})", t.dtype(), t.dims()));
                continue;
            }
        }
        sd.remove(&name);
    }
    if !bad.is_empty() {
        return Err(Error::Msg(format!(
            "num_batches_tracked must be an integer scalar beside a BatchNorm's running_mean; not so: {}",
            bad.join(", ")
        )));
    }
    Ok(sd)
}

/// Adds `<bn>.num_batches_tracked = count` (i64 scalar, as PyTorch stores it) right after each
/// BatchNorm's `running_var`, keeping timm's state_dict order. Files without BatchNorm are
/// returned unchanged.
pub fn add_num_batches_tracked(sd: StateDict, count: i64) -> Result<StateDict> {
    let mut out = StateDict::new();
    *out.metadata_mut() = sd.metadata().clone();
    for (name, t) in sd.iter() {
        out.insert(name, t.clone());
        if let Some(prefix) = name.strip_suffix("running_var") {
            let counter = Tensor::from_vec(vec![count], (), Device::Cpu)?;
            debug_assert_eq!(counter.dtype(), DType::I64);
            out.insert(format!("{prefix}{NUM_BATCHES_TRACKED}"), counter);
        }
    }
    Ok(out)
}

/// The class names a file carries: an exported model's `bitgrad.classes`, else a training
/// checkpoint's `bitgrad.train.classes`; `None` when neither is there or the count is not
/// `num_classes` (a head replaced since).
pub fn class_names(sd: &StateDict, num_classes: usize) -> Option<Vec<String>> {
    let meta = sd.metadata();
    let text = meta.get(CLASSES_KEY).or_else(|| meta.get(TRAIN_CLASSES_KEY))?;
    let names: Vec<String> = text.split('\n').map(str::to_string).collect();
    (names.len() == num_classes).then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: f32) -> Tensor {
        Tensor::from_vec(vec![v], [1], Device::Cpu).unwrap()
    }
    fn i(v: i64) -> Tensor {
        Tensor::from_vec(vec![v], (), Device::Cpu).unwrap()
    }

    #[test]
    fn strips_optimizer_and_counters_and_puts_counters_back() {
        let mut sd = StateDict::new();
        for n in ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"] {
            sd.insert(n, f(1.0));
        }
        sd.insert("bn.num_batches_tracked", i(7));
        sd.insert("head.fc.weight", f(2.0));
        sd.insert("optim.momentum.head.fc.weight", f(3.0));
        let clean = model_only(sd).unwrap();
        assert_eq!(
            clean.names().collect::<Vec<_>>(),
            ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "head.fc.weight"]
        );
        let back = add_num_batches_tracked(clean, 12).unwrap();
        let names: Vec<_> = back.names().collect();
        assert_eq!(names[4], "bn.num_batches_tracked");
        let t = back.get("bn.num_batches_tracked").unwrap();
        assert_eq!((t.dtype(), t.dims().len(), t.to_vec::<i64>().unwrap()), (DType::I64, 0, vec![12]));
    }

    #[test]
    fn a_counter_without_batchnorm_or_of_the_wrong_kind_is_named() {
        let mut sd = StateDict::new();
        sd.insert("norm1.weight", f(1.0));
        sd.insert("norm1.num_batches_tracked", i(3));
        let e = model_only(sd).unwrap_err().to_string();
        assert!(e.contains("norm1.num_batches_tracked"), "{e}");
        let mut sd = StateDict::new();
        sd.insert("bn.running_mean", f(1.0));
        sd.insert("bn.num_batches_tracked", f(3.0));
        let e = model_only(sd).unwrap_err().to_string();
        assert!(e.contains("bn.num_batches_tracked (F32"), "{e}");
    }

    #[test]
    fn class_names_prefer_the_exported_key_and_need_the_right_count() {
        let mut sd = StateDict::new();
        sd.metadata_mut().insert(TRAIN_CLASSES_KEY.into(), "cat\ndog".into());
        assert_eq!(class_names(&sd, 2).unwrap(), ["cat", "dog"]);
        assert!(class_names(&sd, 3).is_none());
        sd.metadata_mut().insert(CLASSES_KEY.into(), "a\nb".into());
        assert_eq!(class_names(&sd, 2).unwrap(), ["a", "b"]);
    }
}
