//! `bitgrad bench loader`: images per second the data pipeline alone delivers (decode, BiT's train
//! transform, batching, on the loader's worker threads) — to check that the loader is not what
//! limits training (target: ≥ 3× the R50x1 training img/s of `bitgrad bench train`).

use std::sync::Arc;

use bitgrad::models::data::{bench_loader, Dataset, Loader, LoaderConfig, Transform};
use bitgrad::models::schedule::{resolution_for, Resolution};
use bitgrad::models::{Error, Result};

use crate::cli::finetune::{open_data, DataArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    /// Pre-crop and crop size, e.g. 160,128 (default: the HyperRule's for the images).
    #[arg(long, value_delimiter = ',', num_args = 1)]
    resolution: Option<Vec<u32>>,
    /// Images per batch.
    #[arg(long, default_value_t = 64, value_parser = super::positive)]
    batch: usize,
    /// Batches to time (after one untimed warm-up batch).
    #[arg(long, default_value_t = 40, value_parser = super::positive)]
    batches: usize,
    /// Loader threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

pub fn run(args: Args) -> Result<()> {
    let (train, _) = open_data(&args.data, 0)?;
    let res = match (&args.resolution, train.image_size()) {
        (Some(r), _) if r.len() == 2 => Resolution { precrop: r[0], crop: r[1] },
        (Some(r), _) => return Err(Error::Config(format!("--resolution takes P,C, got {r:?}"))),
        (None, Some((h, w))) => resolution_for(h, w),
        (None, None) => return Err(Error::Config("the image size is unknown: give --resolution P,C".into())),
    };
    let workers = if args.workers == 0 { rayon::current_num_threads() } else { args.workers };
    let cfg = LoaderConfig { workers, prefetch: 2 * workers, ..LoaderConfig::train(args.batch, 0) };
    let train: Arc<dyn Dataset> = train;
    let loader = Loader::new(train.clone(), Transform::train(res), cfg)?;
    bench_loader(&loader, 1)?;
    let b = bench_loader(&loader, args.batches)?;
    println!(
        "bitgrad bench loader: {} examples, {}→{} px train transform, batch {}, {workers} workers",
        train.len(),
        res.precrop,
        res.crop,
        args.batch
    );
    println!(
        "loader-only: {} images in {} batches, {:.2} s: {:.0} img/s",
        b.images, b.batches, b.seconds, b.images_per_second
    );
    Ok(())
}
