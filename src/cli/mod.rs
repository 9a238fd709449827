//! Subcommand dispatch: one file per subcommand.

mod backward;
mod bench;
mod common;
mod convert;
mod demo;
mod embed;
mod export;
mod finetune;
mod forward;
mod info;
mod predict;
mod pretrain;
mod shipped;
mod study;
mod weights;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bitgrad", version, about = "BiT ResNet-v2 on a from-scratch tensor engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report the machine (CPU, threads, SIMD, CUDA), or with --weights what a weight file holds.
    Info(info::Args),
    /// Classify images: BiT preprocessing and the top-5 classes.
    Predict(predict::Args),
    /// Logits (and activations) of a batch, written to a safetensors file.
    Forward(forward::Args),
    /// Loss, logits and every parameter's gradient of one batch, written to a safetensors file.
    Backward(backward::Args),
    /// Convert weights between timm's safetensors and the original BiT .npz.
    Convert(convert::Args),
    /// A fine-tuned checkpoint as a model file for timm/PyTorch (or a BiT .npz): model only.
    Export(export::Args),
    /// Pre-logits features (and labels) of a dataset, for linear probes and retrieval.
    Embed(embed::Args),
    /// Weight names: `weights list` (known names, what is cached), `weights get NAME`.
    Weights(weights::Args),
    /// Run a benchmark program (prints GFLOP/s, GB/s or img/s, with the reference in the same run).
    Bench(bench::BenchArgs),
    /// Fine-tune BiT weights (or train from scratch) with the BiT-HyperRule on an image dataset.
    Finetune(finetune::Args),
    /// Pre-train a model from an architecture on all classes of a dataset (upstream training).
    Pretrain(pretrain::Args),
    /// Research studies: `study norms` compares normalizations across batch sizes.
    Study(study::Args),
}

pub fn run() -> bitgrad::models::Result<()> {
    let cli = Cli::parse();
    // The main thread runs the steps: it becomes one of rayon's workers instead of competing
    // with them for the cores (engine/src/cpu/pool.rs).
    bitgrad::engine::cpu::pool::join_global_pool();
    // Each step frees its buffers and the next takes as many again: keep the memory mapped
    // instead of faulting every page in again (engine/src/cpu/malloc.rs).
    bitgrad::engine::cpu::malloc::keep_freed_memory();
    // A level the CPU lacks (or a typo) is refused before any work, not silently ignored.
    if let Ok(v) = std::env::var("BITGRAD_CPU_ISA") {
        if !v.trim().is_empty() {
            bitgrad::engine::cpu::isa::parse_forced(&v).map_err(bitgrad::models::Error::Msg)?;
        }
    }
    bitgrad::ops::fusion::from_env().map_err(bitgrad::models::Error::Msg)?;
    match cli.command {
        Command::Info(args) => info::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Forward(args) => forward::run(args),
        Command::Backward(args) => backward::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Export(args) => export::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Weights(args) => weights::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Finetune(args) => finetune::run(args),
        Command::Pretrain(args) => pretrain::run(args),
        Command::Study(args) => study::run(args),
    }
}
