//! `bitgrad study norms`: the normalization study (models/src/study) on the shipped data —
//! five Fashion-MNIST classes of assets/demo (src/cli/shipped.rs), built into the binary so the
//! study runs on a fresh clone: the 500 training images (100 per class) to train on, the 1 500
//! test images to measure top-1. `--data DIR` uses another IDX folder (e.g. the whole
//! Fashion-MNIST) instead.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args as ClapArgs, Subcommand};

use bitgrad::models::data::{open_idx_dir, Dataset};
use bitgrad::models::schedule::Resolution;
use bitgrad::models::study::NormStudy;
use bitgrad::models::{Error, Result};
use bitgrad::Device;

use super::shipped;

#[derive(ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    study: Study,
}

#[derive(Subcommand)]
enum Study {
    /// Train the same small model from scratch for every (normalization, batch size, seed) and
    /// write a table (mean ± std top-1, img/s) and a plot of top-1 against batch size.
    Norms(NormsArgs),
}

#[derive(ClapArgs)]
struct NormsArgs {
    /// Batch sizes (per optimiser step; BN's statistics come from the whole batch).
    #[arg(long, value_delimiter = ',', default_value = "4,8,16,32,64")]
    batch_sizes: Vec<usize>,
    /// Normalizations: gn_ws, gn, bn, bn_ws, ln, ln_ws, ws, none.
    #[arg(long, value_delimiter = ',', default_value = "gn_ws,gn,bn,ln")]
    norms: Vec<String>,
    /// Optimiser steps at the largest batch size; smaller batches take proportionally more, so
    /// every run sees the same number of examples (unless --fixed-steps).
    #[arg(long, default_value_t = 100)]
    steps: u64,
    /// Every batch size trains --steps steps (fewer examples for small batches).
    #[arg(long)]
    fixed_steps: bool,
    /// Seeds per cell (0 … N−1).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// lr for a batch of 256; a batch b uses lr·b/256.
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// Pre-crop and crop size, e.g. 36,32.
    #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = [36, 32])]
    resolution: Vec<u32>,
    /// Architecture (its widths; the norm comes from --norms).
    #[arg(long, default_value = "resnetv2_tiny_bit")]
    model: String,
    /// cpu, emu or cuda[:i].
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Loader threads per run (0: one per core).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// An IDX folder (train-*/t10k-* files) instead of the shipped data.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder: table.md, table.csv, runs.csv, accuracy.png.
    #[arg(long, default_value = "runs/norm-study")]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    match args.study {
        Study::Norms(a) => norms(a),
    }
}

fn norms(a: NormsArgs) -> Result<()> {
    let started = Instant::now();
    let (train, test): (Arc<dyn Dataset>, Arc<dyn Dataset>) = match &a.data {
        Some(dir) => (Arc::new(open_idx_dir(dir, true)?), Arc::new(open_idx_dir(dir, false)?)),
        None => (shipped::train_set()?, shipped::test_set()?),
    };
    let [precrop, crop] = a.resolution[..] else {
        return Err(Error::Config(format!("--resolution takes two sizes, got {:?}", a.resolution)));
    };
    let study = NormStudy {
        batch_sizes: a.batch_sizes,
        norms: a.norms,
        steps: a.steps,
        equal_examples: !a.fixed_steps,
        seeds: a.seeds,
        lr: a.lr,
        resolution: Resolution { precrop, crop },
        model: a.model,
        device: a.device,
        workers: a.workers,
    };
    study.validate(train.classes().len())?;
    let source = a.data.as_ref().map_or("the shipped data (assets/demo)".to_string(), |d| d.display().to_string());
    println!(
        "normalization study: {} from scratch on {source}: {} training, {} test images, {} classes; {} runs on {:?}",
        study.model,
        train.len(),
        test.len(),
        train.classes().len(),
        study.norms.len() * study.batch_sizes.len() * study.seeds as usize,
        study.device
    );
    let result = study.run(train, test, |done, total, r| {
        println!(
            "[{done}/{total}] {:<6} batch {:>3} seed {}: {:>4} steps, lr {:.5}, top-1 {:5.1} %, {:6.0} img/s, {:5.1} s",
            r.norm,
            r.batch,
            r.seed,
            r.steps,
            r.lr,
            r.top1 * 100.0,
            r.images_per_second,
            r.seconds
        );
    })?;
    let paths = result.write(&a.out)?;
    println!();
    print!("{}", result.markdown());
    println!();
    for p in paths {
        println!("wrote {}", p.display());
    }
    println!("done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
