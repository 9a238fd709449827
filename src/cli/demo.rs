//! The embedded demonstration: what `bitgrad finetune` does with no arguments.
//!
//! Transfer learning in miniature, entirely from files built into the binary (assets/demo/):
//! a BiT-architecture ResNetV2 (`resnetv2_tiny_bit`) that bitgrad pre-trained upstream on five
//! Fashion-MNIST classes (T-shirt/top, Trouser, Pullover, Sandal, Sneaker), fine-tuned few-shot —
//! 1, 5 and 10 examples per class — on the five *other* classes (Dress, Coat, Shirt, Bag, Ankle
//! boot), with the BiT recipe (zero head, SGD momentum 0.9, warm-up then step decay, random crop +
//! flip) scaled down to the demonstration's size. Each row also trains the same architecture
//! from scratch on the same examples with the same recipe, so the table shows what the
//! pre-training is worth. Accuracy is on 1 500 held-out images (300 per class), averaged over
//! five draws of the few-shot examples; the gain is the mean of the per-draw differences (both
//! columns of a draw see the same examples, so the pairing removes most of the draw's luck).
//!
//! How the checkpoint was made: assets/demo/README.md (one `bitgrad pretrain` command).
//!
//! `--device` and `--precision` apply (`bitgrad finetune --device cuda --precision bf16`). On the
//! emulator, which runs every GPU thread in software, the table would take hours: there the
//! demonstration shrinks to a check that the device trains the model — one draw of 1 shot,
//! 10 steps, 100 of the held-out images — and says so.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bitgrad::models::data::Subset;
use bitgrad::models::data::{shots, Dataset};
use bitgrad::models::io::{self, LoadOptions};
use bitgrad::models::schedule::{HyperRule, Resolution};
use bitgrad::models::train::{train, TrainConfig};
use bitgrad::models::{Precision, ResNetV2Config, Result, StateDict};
use bitgrad::Device;

use super::shipped;

const UPSTREAM: &[u8] = include_bytes!("../../assets/demo/upstream.safetensors");
/// What the shipped checkpoint was pre-trained on (Fashion-MNIST's 0, 1, 2, 5, 7).
const UPSTREAM_CLASSES: [&str; 5] = ["T-shirt/top", "Trouser", "Pullover", "Sandal", "Sneaker"];
/// What one demonstration runs: the rows (shots per class), the draws of each row, the steps of
/// each run and how many held-out images it is validated on (`None`: all 1 500).
struct Plan {
    shots: &'static [usize],
    draws: &'static [u64],
    steps: u64,
    val_images: Option<usize>,
}

/// The demonstration.
const FULL: Plan = Plan { shots: &[1, 5, 10], draws: &[0, 1, 2, 3, 4], steps: STEPS, val_images: None };
/// On the emulator: a check that training runs there, not a result.
const EMULATOR: Plan = Plan { shots: &[1], draws: &[0], steps: 10, val_images: Some(100) };

/// The HyperRule scaled to the demonstration (bit-spec §4, docs/data.md): the 28×28 images are
/// resized to 36 and randomly cropped to 32 (BiT: 160 → 128 below 96×96 px; scaled with the
/// model), the rule's schedule for datasets under 20 k examples (500 steps, supports at 100, 200,
/// 300, 400) scaled to `STEPS` steps — warm-up to 20, ×0.1 at 40, 60 and 80 —, the whole few-shot
/// set as one batch (≤ 50 images; BiT: 512), no MixUp (BiT: none below 20 k examples), momentum
/// 0.9, no weight decay, zero head: what `bitgrad finetune --shots k --seed draw --steps 100
/// --lr 0.03 --resolution 36,32 --batch 5k` does (same numbers). The base lr is 0.03 instead of
/// BiT's 0.003: in 100 steps BiT's value under-trains both columns (docs/benchmarks.md, "The
/// demonstration", has the sweep).
const STEPS: u64 = 100;
const LR: f64 = 0.03;

fn hyper(examples: usize, steps: u64) -> Result<HyperRule> {
    let mut h = HyperRule::for_dataset(examples, 28, 28).with_total_steps(steps)?.with_base_lr(LR)?;
    h.resolution = Resolution { precrop: 36, crop: 32 };
    h.mixup_alpha = 0.0;
    h.batch = examples.min(50);
    h.batch_split = 1;
    h.validate()?;
    Ok(h)
}

/// Top-1 accuracy of one fine-tuning run (transfer from `weights`, or from scratch).
fn run_one(
    weights: Option<&StateDict>,
    config: &ResNetV2Config,
    train_set: Arc<dyn Dataset>,
    val: Arc<dyn Dataset>,
    seed: u64,
    run: &Run,
) -> Result<f64> {
    let h = hyper(train_set.len(), run.plan.steps)?;
    let mut cfg = match weights {
        Some(w) => TrainConfig::finetune(w.clone(), h),
        None => TrainConfig::scratch(config.clone(), h),
    };
    cfg.seed = seed;
    cfg.device = run.device;
    cfg.precision = run.precision;
    cfg.workers = 1;
    cfg.eval_batch = 250;
    let s = train(&cfg, train_set, Some(val))?;
    Ok(s.final_eval.as_ref().map_or(0.0, |e| e.top1))
}

/// Where and how the runs train.
struct Run {
    plan: &'static Plan,
    device: Device,
    precision: Precision,
}

/// The demonstration on `device` with `precision` (the device's default when `None`).
pub fn run(device: Device, precision: Option<Precision>) -> Result<()> {
    let started = Instant::now();
    device.check_available()?;
    let run = Run {
        plan: if device == Device::Emu { &EMULATOR } else { &FULL },
        device,
        precision: Precision::resolve(precision, device),
    };
    let plan = run.plan;
    let weights = io::safetensors::from_reader(
        Cursor::new(UPSTREAM),
        UPSTREAM.len() as u64,
        Path::new("assets/demo/upstream.safetensors"),
        &LoadOptions::new(),
    )?;
    let config = ResNetV2Config::infer(&weights)?;
    let pool = shipped::train_set()?;
    let val = shipped::test_set()?;
    let val: Arc<dyn Dataset> = match plan.val_images {
        // n images spread evenly over the set (300 per class, in the order of the file).
        Some(n) => Arc::new(Subset::new(val.clone(), (0..n).map(|i| i * val.len() / n).collect())?),
        None => val,
    };
    println!(
        "bitgrad finetune — the built-in demonstration (give --weights W --data DIR to fine-tune your own; --help)"
    );
    println!();
    println!(
        "upstream:   {} ({} parameters), pre-trained by bitgrad on Fashion-MNIST {}",
        config.name().unwrap_or("resnetv2"),
        config.param_count(),
        UPSTREAM_CLASSES.join(", ")
    );
    println!("            (assets/demo/README.md has the command)");
    println!("downstream: five other classes — {} — few-shot,", shipped::CLASSES.join(", "));
    println!(
        "            validated on {} held-out images; BiT-HyperRule scaled down: {} steps, 36→32 px, lr {LR}",
        val.len(),
        plan.steps
    );
    println!("device:     {}, precision {}", run.device, run.precision);
    if plan.val_images.is_some() {
        println!(
            "            (the emulator runs each GPU thread in software: this is a check that the model trains on it,"
        );
        println!("            one short run per column, not the demonstration's result — that needs the CPU or a GPU)");
    }
    println!();
    println!("{:>6}  {:>16}  {:>16}  {:>12}  {:>10}", "shots", "BiT transfer", "from scratch", "gain", "draws won");
    for &k in plan.shots {
        let (mut transfer, mut scratch) = (Vec::new(), Vec::new());
        for &draw in plan.draws {
            let subset: Arc<dyn Dataset> = Arc::new(shots(pool.clone(), k, draw)?);
            transfer.push(run_one(Some(&weights), &config, subset.clone(), val.clone(), draw, &run)?);
            scratch.push(run_one(None, &config, subset, val.clone(), draw, &run)?);
        }
        let gains: Vec<f64> = transfer.iter().zip(&scratch).map(|(t, s)| t - s).collect();
        let won = gains.iter().filter(|g| **g > 0.0).count();
        println!(
            "{k:>6}  {:>9.1}% ± {:>4.1}  {:>9.1}% ± {:>4.1}  {:>+6.1} ± {:>3.1}  {:>7} / {}",
            mean(&transfer) * 100.0,
            sd(&transfer) * 100.0,
            mean(&scratch) * 100.0,
            sd(&scratch) * 100.0,
            mean(&gains) * 100.0,
            sd(&gains) * 100.0,
            won,
            plan.draws.len()
        );
    }
    println!();
    println!(
        "top-1 on the held-out images, mean ± std over {} draws of the examples (chance is 20%); gain: the",
        plan.draws.len()
    );
    println!("per-draw difference, mean ± std; draws won: how many draws transfer beat from-scratch training.");
    println!("Both columns use the same architecture, examples and recipe; only the starting weights differ.");
    println!("done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn sd(v: &[f64]) -> f64 {
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() as f64 - 1.0).max(1.0)).sqrt()
}
