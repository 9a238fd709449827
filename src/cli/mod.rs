//! Subcommand dispatch.

mod bench;
mod finetune;
mod info;
mod pretrain;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bitgrad", version, about = "BiT ResNet-v2 on a from-scratch tensor engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report the machine: CPU, threads, SIMD level, CUDA availability.
    Info,
    /// Run a benchmark program (prints GFLOP/s or GB/s, with the reference in the same run).
    Bench(bench::BenchArgs),
    /// Fine-tune BiT weights (or train from scratch) with the BiT-HyperRule on an image dataset.
    Finetune(finetune::Args),
    /// Pre-train a model from an architecture on all classes of a dataset (upstream training).
    Pretrain(pretrain::Args),
}

pub fn run() -> bitgrad::models::Result<()> {
    match Cli::parse().command {
        Command::Info => Ok(info::run()?),
        Command::Bench(args) => Ok(bench::run(args)?),
        Command::Finetune(args) => finetune::run(args),
        Command::Pretrain(args) => pretrain::run(args),
    }
}
