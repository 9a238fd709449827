//! What a training run is given: the model's source, the HyperRule (every value overridable),
//! the seeds, evaluation and checkpoint cadence, where output goes, and the stop flag.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bitgrad_engine::Device;

use crate::dist::{single, Collectives};
use crate::io::StateDict;
use crate::schedule::HyperRule;
use crate::{Precision, ResNetV2Config};

/// Where the model's weights come from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// Pre-trained weights (fine-tuning): the architecture is inferred from the state dict and
    /// the head is replaced by a zero-initialised one for the dataset's classes (BiT's
    /// `zero_head=True`).
    Pretrained(StateDict),
    /// A freshly initialised model of this architecture (from scratch, or upstream
    /// pre-training); `num_classes` is set to the dataset's. `zero_head` chooses BiT's zero head
    /// over timm's N(0, 0.01²) init.
    Scratch { config: ResNetV2Config, zero_head: bool },
    /// A checkpoint written by this trainer: the run continues exactly where it stopped. The
    /// checkpoint's HyperRule, seed and model replace the config's.
    Resume(PathBuf),
}

/// A training run's settings. [`TrainConfig::new`] gives the defaults; every field is public.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub model: ModelSource,
    /// The BiT-HyperRule (or overrides of it): resolution, MixUp α, schedule, momentum, batch.
    pub hyper: HyperRule,
    /// Seeds the data order, crops and flips, MixUp, and any fresh initialisation.
    pub seed: u64,
    /// Evaluate every this many optimiser steps (0: only at the end).
    pub eval_every: u64,
    /// Write `last.safetensors` every this many steps (0: only at the end and on a stop).
    pub checkpoint_every: u64,
    /// Output folder for checkpoints, `metrics.jsonl` and `chart.png`; `None` writes nothing.
    pub out_dir: Option<PathBuf>,
    pub device: Device,
    /// The activations' precision (crate::Precision; master weights, momentum and checkpoints
    /// are f32 either way). f32 by default; the CLI resolves its default per device.
    pub precision: Precision,
    /// Loader threads (decode + augment); 0 picks the number of cores.
    pub workers: usize,
    /// Evaluation batch size (0: the micro-batch size).
    pub eval_batch: usize,
    /// A progress bar on a terminal, plain lines otherwise; `false` prints nothing per step.
    pub progress: bool,
    /// Checked after every optimiser step: when set (Ctrl-C), the run writes a checkpoint and
    /// returns with [`Summary::interrupted`](super::Summary::interrupted) set.
    pub stop: Arc<AtomicBool>,
    /// Stop after this many optimiser steps in total, as the stop flag does (time-boxed runs,
    /// and how the resume test interrupts a run at a chosen step).
    pub stop_after: Option<u64>,
    /// The ranks of a data-parallel run ([`crate::dist`]); a world of one by default.
    pub dist: Arc<dyn Collectives>,
}

impl TrainConfig {
    pub fn new(model: ModelSource, hyper: HyperRule) -> Self {
        TrainConfig {
            model,
            hyper,
            seed: 0,
            eval_every: 0,
            checkpoint_every: 0,
            out_dir: None,
            device: Device::Cpu,
            precision: Precision::F32,
            workers: 0,
            eval_batch: 0,
            progress: false,
            stop: Arc::default(),
            stop_after: None,
            dist: single(),
        }
    }

    /// Fine-tuning pre-trained weights (zero head for the dataset's classes).
    pub fn finetune(weights: StateDict, hyper: HyperRule) -> Self {
        TrainConfig::new(ModelSource::Pretrained(weights), hyper)
    }

    /// The same recipe from a random initialisation (zero head), the transfer baseline.
    pub fn scratch(config: ResNetV2Config, hyper: HyperRule) -> Self {
        TrainConfig::new(ModelSource::Scratch { config, zero_head: true }, hyper)
    }

    /// Upstream pre-training of a model from `config` on all the dataset's classes (timm's
    /// random head init).
    pub fn pretrain(config: ResNetV2Config, hyper: HyperRule) -> Self {
        TrainConfig::new(ModelSource::Scratch { config, zero_head: false }, hyper)
    }

    /// Continuing the run saved in `checkpoint`.
    pub fn resume(checkpoint: impl Into<PathBuf>, hyper: HyperRule) -> Self {
        TrainConfig::new(ModelSource::Resume(checkpoint.into()), hyper)
    }
}
