//! `bitgrad predict`: BiT preprocessing of image files and the top-5 classes of each, by name
//! where the names are known (`--labels`, the weight file's own, or the shipped ImageNet lists).

use std::path::{Path, PathBuf};

use bitgrad::models::data::{eval_transform, images_to_tensor, read_rgb, Resize};
use bitgrad::models::{labels, Error, Module, Result};
use bitgrad::{no_grad, Device, Tensor};

use super::common::{load_model_and_classes, WeightArgs};

/// How image files become a model input.
#[derive(clap::Args, Clone, Debug)]
pub struct PreprocessArgs {
    /// Input size in pixels (square). BiT fine-tunes at 128 (small images), 384 or 480.
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// direct: resize to size×size (original BiT); shorter: shorter side to size/crop-pct, then
    /// a centre crop (timm's eval transform).
    #[arg(long, default_value = "direct", value_parser = ["direct", "shorter"])]
    pub resize: String,
    /// The crop fraction of --resize shorter (timm's BiT configs: 0.875 at 224, 1.0 at 448/480).
    #[arg(long, default_value_t = 0.875)]
    pub crop_pct: f64,
}

impl PreprocessArgs {
    fn mode(&self) -> Resize {
        match self.resize.as_str() {
            "shorter" => Resize::ShorterSide { crop_pct: self.crop_pct },
            _ => Resize::Direct,
        }
    }
}

/// Decodes, resizes and stacks image files into a [−1, 1] NCHW batch on `device`.
pub fn load_images(paths: &[PathBuf], pre: &PreprocessArgs, device: Device) -> Result<Tensor> {
    let mut images = Vec::with_capacity(paths.len());
    for p in paths {
        images.push(eval_transform(&read_rgb(p)?, pre.size, pre.mode())?);
    }
    images_to_tensor(&images, device)
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    weights: WeightArgs,
    /// Class names, one per line, in the head's order. Default: the names the file carries (an
    /// export or a checkpoint), else the shipped ImageNet-1k or -21k list for a head of 1000 or
    /// 21843 classes, else class numbers.
    #[arg(long)]
    labels: Option<PathBuf>,
    #[command(flatten)]
    pre: PreprocessArgs,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// cpu, emu or cuda[:i].
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Images to classify (PNG or JPEG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

fn read_labels(path: &Path, classes: usize) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let names: Vec<String> = text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    if names.len() != classes {
        return Err(Error::Msg(format!(
            "{} has {} class names, the model's head has {classes} classes",
            path.display(),
            names.len()
        )));
    }
    Ok(names)
}

pub fn run(args: Args) -> Result<()> {
    let (mut model, carried) = load_model_and_classes(&args.weights, args.device)?;
    model.set_training(false);
    let classes = model.config().num_classes;
    let names = match (&args.labels, carried) {
        (Some(p), _) => Some(read_labels(p, classes)?),
        (None, Some(names)) => Some(names),
        (None, None) => labels::for_head(classes).transpose()?.map(|l| l.into_iter().map(|c| c.lemmas).collect()),
    };
    let x = load_images(&args.images, &args.pre, args.device)?;
    let _no_graph = no_grad();
    let probs = model.forward(&x)?.softmax(1)?.to_device(Device::Cpu)?.to_vec::<f32>()?;
    for (path, row) in args.images.iter().zip(probs.chunks(classes)) {
        println!("{}", path.display());
        let mut order: Vec<usize> = (0..classes).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        for &c in order.iter().take(args.top) {
            let name = names.as_ref().map_or_else(|| format!("class {c}"), |n| format!("{} ({c})", n[c]));
            println!("  {:6.2}%  {name}", row[c] * 100.0);
        }
    }
    Ok(())
}
