//! `bitgrad info`: what this machine offers bitgrad; with `--weights`, what a weight file holds.

use std::collections::BTreeMap;

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
}

pub fn run(args: Args) -> Result<()> {
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
