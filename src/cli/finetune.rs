//! `bitgrad finetune`: BiT fine-tuning with the HyperRule on an image dataset (ImageFolder, CIFAR,
//! IDX or safetensors tensors), from `--weights` or, without them, from scratch (`--arch`), for
//! comparing transfer with training from nothing. Every HyperRule value can be overridden.
//! Ctrl-C stops after the current step with a checkpoint; a second Ctrl-C exits at once.
//! The data, HyperRule and run options are shared with `bitgrad pretrain`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bitgrad::engine::Rng;
use bitgrad::models::data::{open_idx_dir, open_safetensors, shots, Cifar, Dataset, ImageFolder, Subset};
use bitgrad::models::dist::{self, DistKind, Launch};
use bitgrad::models::io::{load_model_weights, LoadOptions};
use bitgrad::models::schedule::{HyperRule, Resolution, Schedule};
use bitgrad::models::train::{train, Summary, TrainConfig};
use bitgrad::models::{Error, Precision, ResNetV2Config, Result};
use bitgrad::Device;
use clap::{Args as ClapArgs, ValueEnum};

use super::weights::WeightsSource;

#[derive(ClapArgs)]
pub struct Args {
    /// Pre-trained weights: timm safetensors, a BiT .npz, a checkpoint, or a name (BiT-M-R50x1,
    /// hf-hub:timm/NAME; downloaded once). Without them the model is trained from scratch with
    /// the architecture of --arch.
    #[arg(long, short = 'w')]
    weights: Option<WeightsSource>,
    /// Architecture for a from-scratch run (e.g. resnetv2_50x1_bit, resnetv2_tiny_bit).
    #[arg(long)]
    arch: Option<String>,
    /// Normalization of a from-scratch model: gn_ws (BiT's default), gn, gnK_ws, gnK, bn_ws,
    /// bn, ln_ws, ln, in_ws, in, ws, none. With --weights the file decides (an error if it
    /// disagrees).
    #[arg(long)]
    norm: Option<String>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    hyper: HyperArgs,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Imagefolder,
    Cifar10,
    Cifar100,
    Idx,
    Safetensors,
}

/// The dataset.
#[derive(ClapArgs)]
pub struct DataArgs {
    /// ImageFolder root (train/ and val/, or class folders split by --val-split), CIFAR or IDX
    /// folder, or a safetensors file.
    /// (Without --data, --weights and --arch: the built-in demonstration.)
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "imagefolder")]
    format: Format,
    /// Validation fraction for an ImageFolder without train/ and val/, or a safetensors file
    /// (CIFAR and IDX use their test split).
    #[arg(long, default_value_t = 0.2)]
    val_split: f64,
    /// Few-shot: k training examples per class (seeded).
    #[arg(long)]
    shots: Option<usize>,
}

/// Overrides of the BiT-HyperRule (defaults: bit-spec §4 for the training set's size).
#[derive(ClapArgs)]
pub struct HyperArgs {
    /// Total optimiser steps: the schedule's supports scaled to this many.
    #[arg(long)]
    steps: Option<u64>,
    /// Explicit supports: warm-up end, decay boundaries…, total (e.g. 100,200,300,400,500).
    #[arg(long, value_delimiter = ',')]
    supports: Option<Vec<u64>>,
    /// Examples per optimiser step (BiT: 512).
    #[arg(long)]
    batch: Option<usize>,
    /// Micro-batches per step (gradient accumulation).
    #[arg(long)]
    batch_split: Option<usize>,
    /// Base learning rate (BiT: 0.003).
    #[arg(long)]
    lr: Option<f64>,
    /// Pre-crop and crop size, e.g. 160,128.
    #[arg(long, value_delimiter = ',', num_args = 1)]
    resolution: Option<Vec<u32>>,
    /// MixUp α (0 disables).
    #[arg(long)]
    mixup: Option<f64>,
    #[arg(long)]
    momentum: Option<f64>,
    #[arg(long)]
    weight_decay: Option<f64>,
}

/// How the run is done and where its output goes.
#[derive(ClapArgs)]
pub struct RunArgs {
    /// Evaluate every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    eval_every: u64,
    /// Write last.safetensors every N steps (0: at the end and on Ctrl-C).
    #[arg(long, default_value_t = 0)]
    checkpoint_every: u64,
    /// Output folder: checkpoints, metrics.jsonl, chart.png.
    #[arg(long, default_value = "runs/finetune")]
    pub out: PathBuf,
    /// Continue the run of this checkpoint (its HyperRule and seed are used).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// cpu, emu or cuda[:i].
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Activations in bf16 or f32 [default: bf16 on a CUDA GPU of compute capability 8.0 or
    /// newer, f32 elsewhere]. Master weights, momentum, loss and checkpoints are f32 either way.
    #[arg(long)]
    precision: Option<Precision>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Loader threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Evaluation batch size (0: the micro-batch).
    #[arg(long, default_value_t = 0)]
    eval_batch: usize,
    /// Stop (with a checkpoint) after this many steps in total.
    #[arg(long)]
    stop_after: Option<u64>,
    /// No per-step output.
    #[arg(long)]
    quiet: bool,
    /// Data-parallel engine: auto (MPI under mpirun/srun on the CPU, NCCL on GPUs, one process
    /// without a launcher), mpi, nccl or none. docs/distributed.md.
    #[arg(long, default_value = "auto")]
    dist: DistKind,
    /// Seconds a collective may wait for the other ranks before this rank exits with an error
    /// (a rank that died or hangs).
    #[arg(long, default_value_t = 600.0)]
    dist_timeout: f64,
}

pub fn run(args: Args) -> Result<()> {
    let source = match (&args.weights, &args.arch) {
        (Some(w), _) => Source::Weights { path: w.resolve()?, norm: args.norm.clone(), arch: w.implied_arch() },
        (None, Some(arch)) => Source::Scratch { arch: arch.clone(), norm: args.norm.clone(), zero_head: true },
        (None, None) if args.run.resume.is_some() => {
            Source::Scratch { arch: String::new(), norm: args.norm.clone(), zero_head: true }
        }
        (None, None) if args.data.data.is_none() => return super::demo::run(args.run.device, args.run.precision),
        (None, None) => {
            return Err(Error::Config("give --weights to fine-tune, or --arch to train from scratch".into()))
        }
    };
    run_training(source, &args.data, &args.hyper, &args.run).map(|_| ())
}

/// The model a run starts from.
pub enum Source {
    /// Pre-trained weights; `norm`, when given, must be the file's own normalization, `arch`
    /// (what a `hf-hub:timm/<arch>.<tag>` name promises) its architecture.
    Weights { path: PathBuf, norm: Option<String>, arch: Option<String> },
    /// A fresh model of `arch` with the normalization spec `norm` (the architecture's own when
    /// `None`).
    Scratch { arch: String, norm: Option<String>, zero_head: bool },
}

/// Errors unless `spec` describes the normalization the weights' config already has.
fn check_norm_agrees(config: &ResNetV2Config, spec: &str, path: &std::path::Path) -> Result<()> {
    if config.clone().with_norm(spec).ok().as_ref() == Some(config) {
        return Ok(());
    }
    let has = bitgrad::models::norm_spec(&config.norm, config.ws).unwrap_or_else(|| config.norm.name());
    Err(Error::Config(format!(
        "--norm {spec} disagrees with {}, whose normalization is {has}: the weights decide (drop --norm)",
        path.display()
    )))
}

/// Opens the data, builds the HyperRule with the overrides, trains and prints the summary.
pub fn run_training(source: Source, data: &DataArgs, h: &HyperArgs, run: &RunArgs) -> Result<Summary> {
    let launch = Launch::from_env()?;
    // A GPU rank takes the device of its local rank (one process per GPU).
    let device = match run.device {
        Device::Cuda(_) if launch.world_size > 1 => Device::Cuda(launch.local_rank),
        d => d,
    };
    if !(run.dist_timeout > 0.0 && run.dist_timeout.is_finite()) {
        return Err(Error::Config(format!(
            "--dist-timeout must be a positive number of seconds, got {}",
            run.dist_timeout
        )));
    }
    let timeout = std::time::Duration::from_secs_f64(run.dist_timeout);
    let comm = dist::connect(run.dist, &launch, matches!(device, Device::Cuda(_)), timeout)?;
    let lead = comm.rank() == 0;
    device.check_available()?;
    let (train_set, val_set) = open_data(data, run.seed)?;
    let train_set: Arc<dyn Dataset> = match data.shots {
        Some(k) => Arc::new(shots(train_set, k, run.seed)?),
        None => train_set,
    };
    let hyper = hyper_rule(train_set.as_ref(), h)?;
    if lead {
        println!(
        "{} training examples, {} classes, {} validation examples; lr {} supports {:?}, batch {} / {}, {}→{} px, MixUp α {}",
        train_set.len(),
        train_set.num_classes(),
        val_set.len(),
        hyper.schedule.base_lr(),
        hyper.schedule.supports(),
        hyper.batch,
        hyper.batch_split,
        hyper.resolution.precrop,
        hyper.resolution.crop,
        hyper.mixup_alpha
        );
        println!("device {device}, precision {}", Precision::resolve(run.precision, device));
    }
    let mut cfg = match (&run.resume, source) {
        (Some(_), Source::Weights { norm: Some(_), .. } | Source::Scratch { norm: Some(_), .. }) => {
            return Err(Error::Config("--norm with --resume: the checkpoint decides the normalization".into()))
        }
        (Some(ck), _) => TrainConfig::resume(ck, hyper),
        (None, Source::Weights { path, norm, arch }) => {
            let sd = load_model_weights(&path, &LoadOptions::new())?;
            if let Some(arch) = arch {
                super::common::check_arch(&ResNetV2Config::infer(&sd)?, Some(&arch), &path)?;
            }
            if let Some(spec) = norm {
                check_norm_agrees(&ResNetV2Config::infer(&sd)?, &spec, &path)?;
            }
            TrainConfig::finetune(sd, hyper)
        }
        (None, Source::Scratch { arch, norm, zero_head }) => {
            let mut config = ResNetV2Config::named(&arch, train_set.num_classes())?;
            if let Some(spec) = norm {
                config = config.with_norm(&spec)?;
            }
            match zero_head {
                true => TrainConfig::scratch(config, hyper),
                false => TrainConfig::pretrain(config, hyper),
            }
        }
    };
    cfg.seed = run.seed;
    cfg.eval_every = run.eval_every;
    cfg.checkpoint_every = run.checkpoint_every;
    cfg.out_dir = Some(run.out.clone());
    cfg.device = device;
    cfg.precision = Precision::resolve(run.precision, device);
    cfg.workers = run.workers;
    cfg.eval_batch = run.eval_batch;
    cfg.progress = !run.quiet;
    cfg.stop_after = run.stop_after;
    cfg.stop = ctrl_c_flag();
    cfg.dist = comm;
    let summary = train(&cfg, train_set, Some(val_set))?;
    if lead {
        print!("{}", summary.report());
    }
    Ok(summary)
}

/// A flag set by the first Ctrl-C (the trainer checkpoints and returns after the current step);
/// a second Ctrl-C exits at once.
fn ctrl_c_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let installed = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("\nCtrl-C: stopping after this step and writing a checkpoint (Ctrl-C again to quit now)");
    });
    if let Err(e) = installed {
        eprintln!("warning: cannot install the Ctrl-C handler ({e}); Ctrl-C will end the run without a checkpoint");
    }
    flag
}

pub(crate) type Split = (Arc<dyn Dataset>, Arc<dyn Dataset>);

pub(crate) fn open_data(d: &DataArgs, seed: u64) -> Result<Split> {
    let Some(data) = &d.data else {
        return Err(Error::Config("give the dataset with --data DIR (or FILE for --format safetensors)".into()));
    };
    open_split(data, d.format, d.val_split, seed)
}

/// The train and validation sets of `data` in `format` (`val_split`: see [`DataArgs`]).
pub(crate) fn open_split(data: &std::path::Path, format: Format, val_split: f64, seed: u64) -> Result<Split> {
    Ok(match format {
        Format::Imagefolder => {
            let (t, v) = ImageFolder::open_train_val(data, val_split, seed)?;
            (Arc::new(t), Arc::new(v))
        }
        Format::Cifar10 | Format::Cifar100 => {
            let c = if matches!(format, Format::Cifar10) { Cifar::Ten } else { Cifar::HundredFine };
            (Arc::new(c.open(data, true)?), Arc::new(c.open(data, false)?))
        }
        Format::Idx => (Arc::new(open_idx_dir(data, true)?), Arc::new(open_idx_dir(data, false)?)),
        Format::Safetensors => split(Arc::new(open_safetensors(data)?), val_split, seed)?,
    })
}

/// A seeded random split: `fraction` of the examples to validation.
fn split(ds: Arc<dyn Dataset>, fraction: f64, seed: u64) -> Result<Split> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::Config(format!("--val-split must be in (0, 1), got {fraction}")));
    }
    let mut idx: Vec<usize> = (0..ds.len()).collect();
    let mut rng = Rng::new(seed ^ 0x0073_706c_6974);
    for i in (1..idx.len()).rev() {
        idx.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let n_val = ((ds.len() as f64 * fraction).round() as usize).clamp(1, ds.len().saturating_sub(1));
    let (mut val, mut train) = (idx[..n_val].to_vec(), idx[n_val..].to_vec());
    val.sort_unstable();
    train.sort_unstable();
    Ok((Arc::new(Subset::new(ds.clone(), train)?), Arc::new(Subset::new(ds, val)?)))
}

/// The HyperRule for the training set, with the flags' overrides applied and checked.
fn hyper_rule(train: &dyn Dataset, h: &HyperArgs) -> Result<HyperRule> {
    let (height, width) = match (train.image_size(), &h.resolution) {
        (Some(s), _) => s,
        // The size only picks the resolution, which the flag replaces.
        (None, Some(_)) => (0, 0),
        (None, None) => return Err(Error::Config("the image size is unknown: give --resolution P,C".into())),
    };
    let mut r = HyperRule::for_dataset(train.len(), height, width);
    if let Some(s) = &h.supports {
        r.schedule = Schedule::new(s.clone(), r.schedule.base_lr())?;
    }
    if let Some(n) = h.steps {
        r = r.with_total_steps(n)?;
    }
    if let Some(lr) = h.lr {
        r = r.with_base_lr(lr)?;
    }
    if let Some(v) = &h.resolution {
        let [precrop, crop] = v[..] else {
            return Err(Error::Config(format!("--resolution takes two sizes (pre-crop,crop), got {v:?}")));
        };
        r.resolution = Resolution { precrop, crop };
    }
    r.batch = h.batch.unwrap_or(r.batch);
    r.batch_split = h.batch_split.unwrap_or(r.batch_split);
    r.mixup_alpha = h.mixup.unwrap_or(r.mixup_alpha);
    r.momentum = h.momentum.unwrap_or(r.momentum);
    r.weight_decay = h.weight_decay.unwrap_or(r.weight_decay);
    r.validate()?;
    Ok(r)
}
