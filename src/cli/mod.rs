//! Subcommand dispatch.

mod bench;
mod info;

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
}

pub fn run() -> bitgrad::Result<()> {
    match Cli::parse().command {
        Command::Info => info::run(),
        Command::Bench(args) => bench::run(args),
    }
}
