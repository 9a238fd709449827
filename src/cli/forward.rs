//! `bitgrad forward`: logits (and with `--activations` the stem, stage, feature and pooled
//! activations) of a batch, written to a safetensors file — for checks against other frameworks.
//!
//! The batch is either a tensor file with "input" (NCHW, already normalised) or image files,
//! preprocessed as `bitgrad predict` does.

use std::path::PathBuf;

use bitgrad::models::{Precision, Result};
use bitgrad::{no_grad, Device};

use super::common::{load_model, read_batch, save_tensors, WeightArgs};
use super::predict::{load_images, PreprocessArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    weights: WeightArgs,
    /// A safetensors file holding the batch as "input" [N, 3, H, W] (already normalised).
    #[arg(long, conflicts_with = "images")]
    input: Option<PathBuf>,
    /// Image files, preprocessed as `bitgrad predict` does.
    #[arg(required_unless_present = "input")]
    images: Vec<PathBuf>,
    #[command(flatten)]
    pre: PreprocessArgs,
    /// Output safetensors file: "logits", plus activations with --activations.
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Also write "stem", "stages.0" … "stages.3", "features" and "pre_logits".
    #[arg(long)]
    activations: bool,
    /// cpu, emu or cuda[:i].
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Activations in bf16 or f32 [default: bf16 on a CUDA GPU of compute capability 8.0 or
    /// newer, f32 elsewhere]; the logits are f32 either way.
    #[arg(long)]
    precision: Option<Precision>,
}

pub fn run(args: Args) -> Result<()> {
    let mut model = load_model(&args.weights, args.device)?;
    model.set_precision(Precision::resolve(args.precision, args.device))?;
    bitgrad::models::Module::set_training(&mut model, false);
    let x = match &args.input {
        Some(path) => read_batch(path, args.device)?.0,
        None => load_images(&args.images, &args.pre, args.device)?,
    };
    let _no_graph = no_grad();
    let out = model.forward_with_activations(&x)?;
    let mut tensors = vec![("logits".to_string(), out.logits.clone())];
    if args.activations {
        tensors.push(("stem".into(), out.stem));
        for (i, s) in out.stages.into_iter().enumerate() {
            tensors.push((format!("stages.{i}"), s));
        }
        tensors.push(("features".into(), out.features));
        tensors.push(("pre_logits".into(), out.pre_logits));
    }
    let n = tensors.len();
    let precision = model.precision().to_string();
    save_tensors(&args.out, tensors, &[("bitgrad.command", "forward".into()), ("bitgrad.precision", precision)])?;
    println!(
        "logits {} for a batch {} on {}: {} tensors written to {}",
        out.logits.shape(),
        x.shape(),
        args.device,
        n,
        args.out.display()
    );
    Ok(())
}
