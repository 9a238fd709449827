//! `bitgrad info`: what this machine offers bitgrad; with `--weights`, what a weight file holds.

use std::collections::BTreeMap;

use bitgrad::models::dist::BucketPlan;
use bitgrad::models::io::{self, LoadOptions};
use bitgrad::models::{ResNetV2Config, Result};

use super::common::{check_arch, check_implied_arch, describe};
use super::weights::WeightsSource;

#[derive(clap::Args)]
pub struct Args {
    /// Describe this weight file or name (architecture, parameters, head, dtype) instead of the
    /// machine.
    #[arg(long, short = 'w')]
    weights: Option<WeightsSource>,
    /// With --weights: assert the architecture.
    #[arg(long, requires = "weights")]
    arch: Option<String>,
    /// Print the data-parallel gradient bucket plan of this architecture (docs/distributed.md;
    /// builds the model, 1000 classes).
    #[arg(long, conflicts_with = "weights")]
    buckets: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    if let Some(arch) = &args.buckets {
        let config = ResNetV2Config::named(arch, 1000)?;
        let model = bitgrad::models::ResNetV2::new(&config, 0)?;
        let named = bitgrad::models::Module::named_parameters(&model);
        let sizes: Vec<usize> = named.iter().map(|(_, t)| t.numel()).collect();
        let names: Vec<String> = named.into_iter().map(|(n, _)| n).collect();
        println!("{arch}: gradient buckets (reverse parameter order, 1 MiB first, 25 MiB after)");
        print!("{}", BucketPlan::new(&sizes).describe(&names));
        return Ok(());
    }
    let Some(source) = args.weights else {
        println!("bitgrad {}", env!("CARGO_PKG_VERSION"));
        print!("{}", bitgrad::engine::info::machine_report());
        return Ok(());
    };
    let path = source.resolve()?;
    let sd = io::load_model_weights(&path, &LoadOptions::new())?;
    let config = ResNetV2Config::infer(&sd)?;
    check_arch(&config, args.arch.as_deref(), &path)?;
    check_implied_arch(&config, &source, &path)?;
    let mut dtypes = BTreeMap::new();
    for (_, t) in sd.iter() {
        *dtypes.entry(format!("{:?}", t.dtype())).or_insert(0usize) += t.numel();
    }
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("file:          {} ({:.1} MB)", path.display(), bytes as f64 / 1e6);
    println!("architecture:  {}", config.name().unwrap_or("unnamed"));
    println!("               {}", describe(&config));
    println!("               WS ε {:e}, bottleneck ratio {}", config.ws_eps, config.bottle_ratio);
    println!("parameters:    {} in {} tensors", sd.numel(), sd.len());
    println!("head:          {} classes from {} features", config.num_classes, config.channels[3]);
    let dt: Vec<String> = dtypes.iter().map(|(d, n)| format!("{d} ({n} values)")).collect();
    println!("dtype:         {}", dt.join(", "));
    if let Some(names) = io::class_names(&sd, config.num_classes) {
        println!("class names:   {} (first: {})", names.len(), names[0]);
    }
    if !sd.metadata().is_empty() {
        let keys: Vec<&str> = sd.metadata().keys().map(String::as_str).collect();
        println!("metadata:      {}", keys.join(", "));
    }
    Ok(())
}
