//! `bitgrad pretrain`: upstream pre-training of a model from an architecture on all the dataset's
//! classes — the fine-tuning loop with a random (timm-initialised) head — so that a demonstration's
//! upstream checkpoint can be reproduced with one command. Same data, HyperRule and run options
//! as `bitgrad finetune`. Besides the checkpoints, a finished run writes `<out>/weights.safetensors`:
//! the model alone (no momentum buffers, half the size) with its config in the metadata — the
//! file to ship and to fine-tune with `--weights`.

use clap::Args as ClapArgs;

use super::finetune::{run_training, DataArgs, HyperArgs, RunArgs, Source};
use bitgrad::models::{save_weights, Result, StateDict};

#[derive(ClapArgs)]
pub struct Args {
    /// Architecture, e.g. resnetv2_tiny_bit or resnetv2_50x1_bit.
    #[arg(long, default_value = "resnetv2_tiny_bit")]
    arch: String,
    /// Normalization: gn_ws (BiT's default), gn, gnK_ws, gnK, bn_ws, bn, ln_ws, ln, in_ws, in,
    /// ws, none (default: the architecture's own).
    #[arg(long)]
    norm: Option<String>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    hyper: HyperArgs,
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(args: Args) -> Result<()> {
    let out = args.run.out.clone();
    let summary = run_training(
        Source::Scratch { arch: args.arch, norm: args.norm, zero_head: false },
        &args.data,
        &args.hyper,
        &args.run,
    )?;
    if !summary.interrupted {
        let mut sd = StateDict::new();
        for (name, t) in summary.model.state_dict().iter() {
            sd.insert(name, t.clone());
        }
        sd.metadata_mut().extend(summary.model.config().to_metadata());
        let path = out.join("weights.safetensors");
        save_weights(&path, &sd)?;
        println!("weights: {}", path.display());
    }
    Ok(())
}
