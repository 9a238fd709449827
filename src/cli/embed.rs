//! `bitgrad embed --weights W --data DIR --out features.safetensors`: the pre-logits features
//! (the globally pooled output of the final norm, what the head sees) of every example of a
//! dataset split, with their labels, for linear probes and retrieval. The evaluation transform
//! (BiT's direct resize to the HyperRule's crop size, or `--size`), batched, with progress.
//!
//! The file holds `features` [N, C] f32, `labels` [N] i64 and `indices` [N] i64 (the dataset
//! indices: an image that fails to decode is skipped and named, so N can be below the split's
//! size), and in its metadata the class names, the split, the size and the weights.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use bitgrad::models::data::{Dataset, Loader, LoaderConfig, Position, Resize, Transform};
use bitgrad::models::schedule::resolution_for;
use bitgrad::models::{Error, Module, Result};
use bitgrad::{no_grad, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};

use super::common::{load_model, save_tensors, WeightArgs};
use super::finetune::{open_split, Format};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    weights: WeightArgs,
    /// The dataset: an ImageFolder root, a CIFAR or IDX folder, or a safetensors file.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum, default_value = "imagefolder")]
    format: Format,
    /// Which split to embed (the validation split of CIFAR and IDX is their test set).
    #[arg(long, default_value = "train", value_parser = ["train", "val"])]
    split: String,
    /// Validation fraction for an ImageFolder without train/ and val/ (or a safetensors file).
    #[arg(long, default_value_t = 0.2)]
    val_split: f64,
    /// Seed of that split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Input size in pixels; default: the HyperRule's crop size for the images (128 below 96×96
    /// pixels, else 480).
    #[arg(long)]
    size: Option<u32>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// cpu, emu or cuda[:i].
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// The output safetensors file.
    #[arg(long, short = 'o')]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let mut model = load_model(&args.weights, args.device)?;
    model.set_training(false);
    let (train, val) = open_split(&args.data, args.format, args.val_split, args.seed)?;
    let ds: Arc<dyn Dataset> = if args.split == "train" { train } else { val };
    let size = match (args.size, ds.image_size()) {
        (Some(s), _) => s,
        (None, Some((h, w))) => resolution_for(h, w).crop,
        (None, None) => return Err(Error::Config("the images differ in size: give --size".into())),
    };
    let transform = Transform::Eval { size, resize: Resize::Direct };
    let loader = Loader::new(ds.clone(), transform, LoaderConfig::eval(args.batch))?;
    let bar = progress(ds.len() as u64);
    let (mut feats, mut labels, mut indices) = (Vec::<f32>::new(), Vec::<i64>::new(), Vec::<i64>::new());
    let mut width = 0;
    let _no_graph = no_grad();
    for batch in loader.iter(Position::default(), Some(Position { epoch: 1, batch: 0 }))? {
        let batch = batch?;
        let x = batch.images.to_device(args.device)?;
        let pooled = model.forward_with_activations(&x)?.pre_logits;
        width = pooled.numel() / batch.labels.len();
        feats.extend(pooled.to_device(Device::Cpu)?.to_dtype(bitgrad::DType::F32)?.to_vec::<f32>()?);
        labels.extend(&batch.labels);
        indices.extend(batch.indices.iter().map(|&i| i as i64));
        bar.inc(batch.labels.len() as u64);
    }
    bar.finish_and_clear();
    let n = labels.len();
    for s in loader.skipped() {
        eprintln!("skipped {}: {}", s.item, s.reason);
    }
    if n == 0 {
        return Err(Error::Msg("no example could be read".into()));
    }
    let tensors = vec![
        ("features".to_string(), Tensor::from_vec(feats, [n, width], Device::Cpu)?),
        ("labels".to_string(), Tensor::from_vec(labels, [n], Device::Cpu)?),
        ("indices".to_string(), Tensor::from_vec(indices, [n], Device::Cpu)?),
    ];
    let meta = [
        ("classes", ds.classes().join("\n")),
        ("split", args.split.clone()),
        ("size", size.to_string()),
        ("weights", args.weights.weights.0.clone()),
    ];
    save_tensors(&args.out, tensors, &meta)?;
    println!(
        "{}: features [{n}, {width}] of the {} split at {size} px, {} classes",
        args.out.display(),
        args.split,
        ds.classes().len()
    );
    Ok(())
}

/// A bar over the examples on a terminal; logs get the final line only.
fn progress(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("embedding {pos}/{len} {bar:30} {per_sec} ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}
