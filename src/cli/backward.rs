//! `bitgrad backward`: one forward and backward of the mean softmax cross-entropy on a tensor
//! batch; writes the loss, the logits and the gradient of every parameter under timm's names —
//! for checks against other frameworks (the model is in training mode, as in a training step).

use std::path::PathBuf;

use bitgrad::models::{Error, Module, Precision, Result};
use bitgrad::ops::softmax_xent::{cross_entropy, Target};
use bitgrad::{DType, Device, Tensor};

use super::common::{load_model, read_batch, save_tensors, WeightArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    weights: WeightArgs,
    /// A safetensors file with "input" [N, 3, H, W] and, unless --labels is given, "labels" [N] (integers).
    #[arg(long)]
    input: PathBuf,
    /// Class labels, comma-separated, one per image (overrides the file's "labels").
    #[arg(long, value_delimiter = ',')]
    labels: Option<Vec<i64>>,
    /// Output safetensors file: "loss", "logits" and every parameter's gradient under its name.
    #[arg(long, short = 'o')]
    out: PathBuf,
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
    model.set_training(true);
    let (x, file_labels) = read_batch(&args.input, args.device)?;
    let n = x.dims()[0];
    let labels = match (&args.labels, file_labels) {
        (Some(l), _) => Tensor::from_vec(l.clone(), [l.len()], Device::Cpu)?,
        (None, Some(t)) if !t.dtype().is_float() => t.to_dtype(DType::I64)?,
        (None, Some(t)) => {
            return Err(Error::Msg(format!("\"labels\" must hold integers, got {:?}", t.dtype())));
        }
        (None, None) => {
            return Err(Error::Msg(format!(
                "no labels: pass --labels 3,917,… or store an integer tensor \"labels\" [N] in {}",
                args.input.display()
            )));
        }
    };
    if labels.dims() != [n] {
        return Err(Error::Msg(format!("{} labels for a batch of {n} images", labels.numel())));
    }
    let classes = model.config().num_classes as i64;
    if let Some(bad) = labels.to_vec::<i64>()?.into_iter().find(|&l| l < 0 || l >= classes) {
        return Err(Error::Msg(format!("label {bad} is outside the model's {classes} classes")));
    }
    let labels = labels.to_device(args.device)?;

    let logits = model.forward(&x)?;
    let loss = cross_entropy(&logits, Target::Hard(&labels), 0.0)?;
    loss.backward()?;
    let mut tensors = vec![("loss".to_string(), loss.detach()), ("logits".to_string(), logits.detach())];
    for (name, p) in model.named_parameters() {
        let g = p.grad().ok_or_else(|| Error::Msg(format!("no gradient reached {name}")))?;
        tensors.push((name, g));
    }
    let count = tensors.len() - 2;
    let precision = model.precision().to_string();
    save_tensors(&args.out, tensors, &[("bitgrad.command", "backward".into()), ("bitgrad.precision", precision)])?;
    println!(
        "loss {:.6} on a batch {} ({}): {count} parameter gradients written to {}",
        loss.to_scalar()?,
        x.shape(),
        args.device,
        args.out.display()
    );
    Ok(())
}
