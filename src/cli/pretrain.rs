//! `bitgrad pretrain`: upstream pre-training of a model from an architecture on all the dataset's
//! classes — the fine-tuning loop with a random (timm-initialised) head — so that a demonstration's
//! upstream checkpoint can be reproduced with one command. Same data, HyperRule and run options
//! as `bitgrad finetune`; the result is `<out>/last.safetensors`, loadable with `--weights`.

use clap::Args as ClapArgs;

use super::finetune::{run_training, DataArgs, HyperArgs, RunArgs, Source};
use bitgrad::models::Result;

#[derive(ClapArgs)]
pub struct Args {
    /// Architecture, e.g. resnetv2_tiny_bit or resnetv2_50x1_bit.
    #[arg(long, default_value = "resnetv2_tiny_bit")]
    arch: String,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    hyper: HyperArgs,
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(args: Args) -> Result<()> {
    run_training(Source::Scratch { arch: args.arch, zero_head: false }, &args.data, &args.hyper, &args.run)
}
