//! `bitgrad bench …`: benchmark programs. Each prints bitgrad's speed next to a reference measured
//! in the same run (NumPy through `scripts/bench_reference.py`, and memcpy for memory-bound ops),
//! so that a ratio, not an absolute number from another day or machine, is what is judged.
//!
//! Method, shared by all benchmarks (see `timing`): rounds in which every case runs a block of
//! untimed and timed runs in bitgrad, then in NumPy, until each has enough runs undisturbed by
//! other processes; the median of those is the main number, the fastest run is shown too. Every
//! timed run includes allocating (and freeing) the result, as a tensor op must.

mod elementwise;
mod gpu;
mod json;
mod layers;
mod loader;
mod matmul;
mod model;
mod plan;
mod reference;
mod timing;

use clap::{Args, Subcommand};
use reference::Reference;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// f32 matmul GFLOP/s through `Tensor::matmul`, against NumPy (its BLAS) in the same run.
    Matmul(matmul::Args),
    /// add, mul, relu on 64 MiB f32 tensors in GB/s, against memcpy and NumPy in the same run.
    Elementwise(elementwise::Args),
    /// A GPU device: copy, add/relu, sum (GB/s) and f32 GEMM (TFLOP/s), against PyTorch on the same GPU.
    Gpu(gpu::Args),
    /// A model's layers on a GPU: each conv's fprop/dgrad/wgrad against cuDNN (PyTorch bf16
    /// channels_last), GroupNorm, WS and SGD as a share of the HBM roof.
    Layers(layers::Args),
    /// A whole model's inference forward in img/s, against timm's in PyTorch in the same run.
    Forward(model::Args),
    /// A whole model's training step (fwd, xent, bwd, SGD) in img/s, against timm's in PyTorch.
    Train(model::Args),
    /// The data pipeline alone (decode, train transform, batching) in img/s.
    Loader(loader::Args),
}

/// Options every benchmark takes (the method is described in `timing`).
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Clean timed runs wanted per case and implementation.
    #[arg(long, default_value_t = 7, value_parser = positive)]
    pub reps: usize,
    /// Timed runs per block (a case's turn in one round, per implementation).
    #[arg(long, default_value_t = 3, value_parser = positive)]
    pub block: usize,
    /// Untimed runs before each block.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Stop after this many rounds even if some case still lacks clean runs.
    #[arg(long, default_value_t = 12, value_parser = positive)]
    pub max_rounds: usize,
    /// A run is clean when its threads waited for a CPU at most this fraction of its time.
    #[arg(long, default_value_t = 0.1)]
    pub max_wait: f64,
    /// Pause before each block, in milliseconds, so the other implementation's threads sleep.
    #[arg(long, default_value_t = 200)]
    pub pause_ms: u64,
    /// Also print every timed run with how long its threads waited for a CPU.
    #[arg(long)]
    pub raw: bool,
    /// Do not run the NumPy reference.
    #[arg(long)]
    pub no_reference: bool,
    /// The Python interpreter that runs the NumPy reference [default: $BITGRAD_PYTHON, else python3].
    #[arg(long)]
    pub python: Option<String>,
}

pub fn run(args: BenchArgs) -> bitgrad::models::Result<()> {
    match args.what {
        Bench::Matmul(a) => Ok(matmul::run(a)?),
        Bench::Elementwise(a) => Ok(elementwise::run(a)?),
        Bench::Gpu(a) => Ok(gpu::run(a)?),
        Bench::Layers(a) => layers::run(a),
        Bench::Forward(a) => model::run(model::Mode::Forward, a),
        Bench::Train(a) => model::run(model::Mode::Train, a),
        Bench::Loader(a) => loader::run(a),
    }
}

/// A count that must be at least 1.
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse() {
        Ok(0) | Err(_) => Err(format!("`{s}` is not a positive integer")),
        Ok(v) => Ok(v),
    }
}

/// The 1-minute load average, to show how busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// The header lines every benchmark prints: machine, threads, load, method.
pub fn print_header(title: &str, common: &Common) {
    println!("{title}");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "machine:   {}, {} cores available, bitgrad on {} rayon threads, simd {}",
        bitgrad::engine::info::cpu_model().unwrap_or_else(|| "unknown CPU".into()),
        cores,
        rayon::current_num_threads(),
        bitgrad::engine::info::simd_level()
    );
    println!(
        "isa:       bitgrad's kernels at {} (of {} here; BITGRAD_CPU_ISA lowers it), gemm crate at {}",
        bitgrad::engine::cpu::isa::active(),
        bitgrad::engine::cpu::isa::detected(),
        bitgrad::engine::cpu::isa::gemm_crate_level()
    );
    println!("fusions:   {} (BITGRAD_FUSE=none turns them off)", bitgrad::ops::fusion::current());
    println!("load:      1-minute load average {} at start", load_average());
    println!(
        "method:    rounds of blocks ({} warm-up + {} timed runs per case and implementation, {} ms pause before",
        common.warmup, common.block, common.pause_ms
    );
    println!(
        "           each) until {} clean runs each (threads waited for a CPU ≤ {}% of the run; ≤ {} rounds)",
        common.reps,
        common.max_wait * 100.0,
        common.max_rounds
    );
    if timing::run_wait_us().is_none() {
        println!("           /proc/self/task/*/schedstat is not readable here: every run counts as clean");
    }
}

/// Starts the NumPy reference unless disabled, printing what it is or why it is skipped.
pub fn start_reference(common: &Common) -> Option<Reference> {
    start_reference_of(common, reference::Kind::Numpy)
}

/// Starts a reference of the given kind unless disabled, printing what it is or why it is skipped.
pub fn start_reference_of(common: &Common, kind: reference::Kind) -> Option<Reference> {
    if common.no_reference {
        println!("reference: skipped (--no-reference)");
        return None;
    }
    let python = common.python.clone().or_else(|| std::env::var("BITGRAD_PYTHON").ok());
    match Reference::start(python.as_deref().unwrap_or("python3"), kind) {
        Ok(r) => {
            println!("reference: {}", r.describe());
            if !r.removed_vars().is_empty() {
                println!("           removed from the reference's environment: {}", r.removed_vars().join(", "));
            }
            Some(r)
        }
        Err(why) => {
            println!("reference: {why}, reference skipped");
            None
        }
    }
}

/// The footer: load again, since a busy machine makes every number slower.
pub fn print_footer() {
    println!("load:      1-minute load average {} at end", load_average());
}

/// Formats an optional number, or a dash.
pub fn opt(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}
