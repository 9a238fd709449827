//! The embedded demonstration: what `bitgrad finetune` does with no arguments.
//!
//! Transfer learning in miniature, entirely from files built into the binary (assets/demo/):
//! a BiT-architecture ResNetV2 (`resnetv2_tiny_bit`) that bitgrad pre-trained upstream on five
//! Fashion-MNIST classes (T-shirt/top, Trouser, Pullover, Dress, Coat), fine-tuned few-shot — 1, 5
//! and 10 examples per class — on the five *other* classes (Sandal, Shirt, Sneaker, Bag, Ankle
//! boot), with the BiT recipe (zero head, SGD momentum 0.9, warm-up then step decay, random crop +
//! flip) scaled down to the demonstration's size. Each row also trains the same architecture
//! from scratch on the same examples with the same recipe, so the table shows what the
//! pre-training is worth. Accuracy is on 1 500 held-out images (300 per class), averaged over
//! three draws of the few-shot examples.
//!
//! How the checkpoint was made: assets/demo/README.md (one `bitgrad pretrain` command).

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bitgrad::models::data::{idx_from_bytes, shots, Dataset};
use bitgrad::models::io::{self, LoadOptions};
use bitgrad::models::schedule::{HyperRule, Resolution, Schedule};
use bitgrad::models::train::{train, TrainConfig};
use bitgrad::models::{ResNetV2Config, Result, StateDict};

const UPSTREAM: &[u8] = include_bytes!("../../assets/demo/upstream.safetensors");
const TRAIN_IMAGES: &[u8] = include_bytes!("../../assets/demo/train-images-idx3-ubyte.gz");
const TRAIN_LABELS: &[u8] = include_bytes!("../../assets/demo/train-labels-idx1-ubyte.gz");
const VAL_IMAGES: &[u8] = include_bytes!("../../assets/demo/t10k-images-idx3-ubyte.gz");
const VAL_LABELS: &[u8] = include_bytes!("../../assets/demo/t10k-labels-idx1-ubyte.gz");

/// The downstream classes, in label order (Fashion-MNIST's 5–9).
const CLASSES: [&str; 5] = ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
const SHOTS: [usize; 3] = [1, 5, 10];
const DRAWS: [u64; 3] = [0, 1, 2];

/// The HyperRule scaled to the demonstration (bit-spec §4, docs/data.md): the 28×28 images are
/// resized to 36 and randomly cropped to 32 (BiT: 160 → 128 below 96×96 px; scaled with the
/// model), BiT's five-point schedule scaled to `STEPS` steps (warm-up 10 %, ×0.1 at 30/60/90 %),
/// the whole few-shot set as one batch (≤ 50 images; BiT: 512), no MixUp (BiT: none below 20 k
/// examples), momentum 0.9, no weight decay, zero head. The base lr is 0.01 instead of BiT's
/// 0.003, which under-trains both columns in 100 steps (measured: docs/benchmarks.md, "The
/// demonstration" — where it also says that this upstream checkpoint does not yet beat training
/// from scratch).
const STEPS: u64 = 100;
const LR: f64 = 0.01;

fn hyper(examples: usize) -> Result<HyperRule> {
    let mut h = HyperRule::for_dataset(examples, 28, 28);
    h.resolution = Resolution { precrop: 36, crop: 32 };
    h.mixup_alpha = 0.0;
    h.schedule = Schedule::new(vec![STEPS / 10, STEPS * 3 / 10, STEPS * 6 / 10, STEPS * 9 / 10, STEPS], LR)?;
    h.batch = examples.min(50);
    h.batch_split = 1;
    h.validate()?;
    Ok(h)
}

fn dataset(images: &[u8], labels: &[u8], name: &str) -> Result<Arc<dyn Dataset>> {
    let ds =
        idx_from_bytes(images, Path::new(&format!("{name}-images")), labels, Path::new(&format!("{name}-labels")))?;
    Ok(Arc::new(ds.with_classes(CLASSES.iter().map(|c| c.to_string()).collect())?))
}

/// Top-1 accuracy of one fine-tuning run (transfer from `weights`, or from scratch).
fn run_one(
    weights: Option<&StateDict>,
    config: &ResNetV2Config,
    train_set: Arc<dyn Dataset>,
    val: Arc<dyn Dataset>,
    seed: u64,
) -> Result<(f64, f64)> {
    let h = hyper(train_set.len())?;
    let mut cfg = match weights {
        Some(w) => TrainConfig::finetune(w.clone(), h),
        None => TrainConfig::scratch(config.clone(), h),
    };
    cfg.seed = seed;
    cfg.workers = 1;
    cfg.eval_batch = 250;
    let s = train(&cfg, train_set, Some(val))?;
    let top1 = s.final_eval.as_ref().map_or(0.0, |e| e.top1);
    Ok((top1, s.seconds))
}

pub fn run() -> Result<()> {
    let started = Instant::now();
    let weights = io::safetensors::from_reader(
        Cursor::new(UPSTREAM),
        UPSTREAM.len() as u64,
        Path::new("assets/demo/upstream.safetensors"),
        &LoadOptions::new(),
    )?;
    let config = ResNetV2Config::infer(&weights)?;
    let pool = dataset(TRAIN_IMAGES, TRAIN_LABELS, "demo-train")?;
    let val = dataset(VAL_IMAGES, VAL_LABELS, "demo-val")?;
    println!(
        "bitgrad finetune — the built-in demonstration (give --weights W --data DIR to fine-tune your own; --help)"
    );
    println!();
    println!(
        "upstream:   {} ({} parameters), pre-trained by bitgrad on Fashion-MNIST T-shirt/top, Trouser,",
        config.name().unwrap_or("resnetv2"),
        config.param_count()
    );
    println!("            Pullover, Dress, Coat (assets/demo/README.md has the command)");
    println!("downstream: the other five classes — {} — few-shot,", CLASSES.join(", "));
    println!(
        "            validated on {} held-out images; BiT-HyperRule scaled down: {STEPS} steps, 36→32 px, lr {LR}",
        val.len()
    );
    println!();
    println!("{:>6}  {:>16}  {:>16}  {:>8}", "shots", "BiT transfer", "from scratch", "gain");
    let mut rows = Vec::new();
    for k in SHOTS {
        let (mut transfer, mut scratch) = (Vec::new(), Vec::new());
        for draw in DRAWS {
            let subset: Arc<dyn Dataset> = Arc::new(shots(pool.clone(), k, draw)?);
            transfer.push(run_one(Some(&weights), &config, subset.clone(), val.clone(), draw)?.0);
            scratch.push(run_one(None, &config, subset, val.clone(), draw)?.0);
        }
        let (t, s) = (mean(&transfer), mean(&scratch));
        println!(
            "{k:>6}  {:>9.1}% ± {:>3.1}  {:>9.1}% ± {:>3.1}  {:>+7.1}",
            t * 100.0,
            sd(&transfer) * 100.0,
            s * 100.0,
            sd(&scratch) * 100.0,
            (t - s) * 100.0
        );
        rows.push((k, t, s));
    }
    println!();
    println!(
        "accuracy: top-1 on the held-out images, mean ± std over {} draws of the examples; chance is 20%.",
        DRAWS.len()
    );
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
