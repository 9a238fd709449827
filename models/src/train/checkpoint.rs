//! Training checkpoints: one safetensors file holding the model's state dict (timm names), the
//! SGD momentum buffers (`optim.momentum.<parameter name>`), and in its metadata the model config
//! ([`ResNetV2Config::to_metadata`]) and the run's state under `bitgrad.train.*`: the next step,
//! the loader position of the next micro-batch, the seed, every HyperRule value, the classes and
//! the best accuracy so far.
//!
//! That is the whole state of a run: every random draw (data order, crop/flip, MixUp λ and
//! permutation) is a counter-based function of (seed, epoch, position, step), so no generator
//! state needs saving — restoring the seed, the step and the loader position continues the run
//! bit for bit. Written atomically (temp file, fsync, rename) by `io::safetensors::save`, so an
//! interrupted write never leaves a broken `last.safetensors`.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use bitgrad_engine::Tensor;

use crate::data::Position;
use crate::io::{load_safetensors, save_safetensors, LoadOptions, StateDict};
use crate::schedule::{HyperRule, Resolution, Schedule};
use crate::{Error, ResNetV2Config, Result};

/// Name prefix of the momentum buffers in a checkpoint.
pub const MOMENTUM_PREFIX: &str = "optim.momentum.";
const KEY: &str = "bitgrad.train.";
const FORMAT: &str = "bitgrad checkpoint";

/// The non-tensor state of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    /// Optimiser steps done (the next step's index).
    pub step: u64,
    /// The loader position of the next micro-batch.
    pub position: Position,
    pub seed: u64,
    pub hyper: HyperRule,
    pub classes: Vec<String>,
    /// The best validation top-1 so far and its step.
    pub best: Option<(f64, u64)>,
    /// Data-parallel ranks the run trains on (1 for a single process): the loader position is
    /// one rank's, so a resume needs the same number (docs/distributed.md).
    pub world_size: usize,
}

/// A checkpoint as read back.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The model's tensors (no optimizer entries); its metadata holds the config.
    pub model: StateDict,
    /// Momentum buffers by parameter name (parameters without one are absent).
    pub momentum: BTreeMap<String, Tensor>,
    pub config: ResNetV2Config,
    pub state: TrainState,
}

impl Checkpoint {
    /// Writes a checkpoint of `model` (its state dict), `momentum` (buffers by parameter name)
    /// and `state` to `path`, atomically.
    pub fn save(
        path: &Path,
        model: &StateDict,
        config: &ResNetV2Config,
        momentum: &[(String, Tensor)],
        state: &TrainState,
    ) -> Result<()> {
        let mut sd = StateDict::new();
        for (name, t) in model.iter() {
            sd.insert(name, t.clone());
        }
        for (name, t) in momentum {
            sd.insert(format!("{MOMENTUM_PREFIX}{name}"), t.clone());
        }
        let meta = sd.metadata_mut();
        meta.extend(config.to_metadata());
        meta.extend(state_metadata(state));
        save_safetensors(path, &sd)
    }

    /// Reads a checkpoint; a file that is not a safetensors file, is truncated, or lacks the
    /// training metadata gives an error naming the file.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let mut sd = load_safetensors(path, &LoadOptions::default())?;
        let bad = |msg: String| Error::format(path, FORMAT, msg);
        let meta = sd.metadata().clone();
        let config = ResNetV2Config::from_metadata(&meta)
            .map_err(|e| bad(e.to_string()))?
            .ok_or_else(|| bad("no model config in the metadata (not a bitgrad training checkpoint)".into()))?;
        let state = state_from(&meta).map_err(|e| bad(e.to_string()))?;
        let names: Vec<String> = sd.names().filter(|n| n.starts_with(MOMENTUM_PREFIX)).map(String::from).collect();
        let mut momentum = BTreeMap::new();
        for name in names {
            if let Some(t) = sd.remove(&name) {
                momentum.insert(name[MOMENTUM_PREFIX.len()..].to_string(), t);
            }
        }
        Ok(Checkpoint { model: sd, momentum, config, state })
    }
}

pub(crate) fn state_metadata(s: &TrainState) -> BTreeMap<String, String> {
    let h = &s.hyper;
    let supports: Vec<String> = h.schedule.supports().iter().map(u64::to_string).collect();
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(format!("{KEY}{k}"), v);
    };
    put("step", s.step.to_string());
    put("epoch", s.position.epoch.to_string());
    put("batch", s.position.batch.to_string());
    put("seed", s.seed.to_string());
    // `{:?}` of an f64 is its shortest exact representation: the values read back are the same.
    put("base_lr", format!("{:?}", h.schedule.base_lr()));
    put("supports", supports.join(","));
    put("precrop", h.resolution.precrop.to_string());
    put("crop", h.resolution.crop.to_string());
    put("mixup_alpha", format!("{:?}", h.mixup_alpha));
    put("momentum", format!("{:?}", h.momentum));
    put("weight_decay", format!("{:?}", h.weight_decay));
    put("batch_size", h.batch.to_string());
    put("batch_split", h.batch_split.to_string());
    put("classes", s.classes.join("\n"));
    put("world_size", s.world_size.to_string());
    if let Some((acc, step)) = s.best {
        put("best_top1", format!("{acc:?}"));
        put("best_step", step.to_string());
    }
    m
}

fn get<T: FromStr>(m: &BTreeMap<String, String>, k: &str) -> Result<T> {
    let v = m.get(&format!("{KEY}{k}")).ok_or_else(|| Error::Msg(format!("the metadata lacks {KEY}{k}")))?;
    v.trim().parse().map_err(|_| Error::Msg(format!("metadata {KEY}{k} = {v:?} is not a valid value")))
}

fn state_from(m: &BTreeMap<String, String>) -> Result<TrainState> {
    let supports: String = get(m, "supports")?;
    let supports = supports
        .split(',')
        .map(|s| s.trim().parse::<u64>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| Error::Msg(format!("metadata {KEY}supports = {supports:?} is not a list of steps")))?;
    let hyper = HyperRule {
        resolution: Resolution { precrop: get(m, "precrop")?, crop: get(m, "crop")? },
        mixup_alpha: get(m, "mixup_alpha")?,
        schedule: Schedule::new(supports, get(m, "base_lr")?)?,
        momentum: get(m, "momentum")?,
        weight_decay: get(m, "weight_decay")?,
        batch: get(m, "batch_size")?,
        batch_split: get(m, "batch_split")?,
    };
    hyper.validate()?;
    let classes: String = get(m, "classes")?;
    let best = match m.contains_key(&format!("{KEY}best_top1")) {
        true => Some((get(m, "best_top1")?, get(m, "best_step")?)),
        false => None,
    };
    Ok(TrainState {
        step: get(m, "step")?,
        position: Position { epoch: get(m, "epoch")?, batch: get(m, "batch")? },
        seed: get(m, "seed")?,
        hyper,
        classes: classes.split('\n').map(String::from).collect(),
        best,
        // Checkpoints from before data-parallel training were single-process runs.
        world_size: match m.contains_key(&format!("{KEY}world_size")) {
            true => get(m, "world_size")?,
            false => 1,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::HyperRule;

    /// Every state value survives the metadata strings exactly (f64s included), and a missing
    /// key is named.
    #[test]
    fn state_round_trips_through_metadata() {
        let mut hyper = HyperRule::for_dataset(50_000, 32, 32).with_base_lr(0.1 / 3.0).unwrap();
        hyper.mixup_alpha = 0.1;
        hyper.batch_split = 8;
        let state = TrainState {
            step: 1234,
            position: Position { epoch: 7, batch: 3 },
            seed: u64::MAX,
            hyper,
            classes: vec!["a cat".into(), "dog".into()],
            best: Some((2.0 / 3.0, 1000)),
            world_size: 4,
        };
        let meta = state_metadata(&state);
        assert_eq!(state_from(&meta).unwrap(), state);
        let mut broken = meta.clone();
        broken.remove("bitgrad.train.batch_split");
        let msg = state_from(&broken).unwrap_err().to_string();
        assert!(msg.contains("bitgrad.train.batch_split"), "{msg}");
    }
}
