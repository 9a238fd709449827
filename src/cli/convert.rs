//! `bitgrad convert IN OUT`: between timm's safetensors and the original BiT .npz (formats by
//! content on input, by extension on output), optionally changing the float dtype. The
//! architecture is inferred and stored in the safetensors metadata, so the file describes itself.

use std::path::PathBuf;

use bitgrad::models::io::{self, LoadOptions};
use bitgrad::models::{Error, ResNetV2Config, Result};
use bitgrad::DType;

use super::common::{describe, parse_dtype};
use super::weights::WeightsSource;

#[derive(clap::Args)]
pub struct Args {
    /// Input weights (.safetensors or .npz, recognised by content, or a weight name); a training
    /// checkpoint's optimizer state is left out.
    input: WeightsSource,
    /// Output file: .safetensors (timm names, OIHW) or .npz (BiT names, HWIO).
    output: PathBuf,
    /// Convert float tensors to this dtype (f32, f16, bf16, f64).
    #[arg(long, value_parser = parse_dtype)]
    dtype: Option<DType>,
}

pub fn run(args: Args) -> Result<()> {
    let input = args.input.resolve()?;
    if input == args.output {
        return Err(Error::Msg("the output must be a different file from the input".into()));
    }
    let mut opts = LoadOptions::new();
    if let Some(d) = args.dtype {
        opts = opts.dtype(d);
    }
    let mut sd = io::load_model_weights(&input, &opts)?;
    let config = ResNetV2Config::infer(&sd)?;
    sd.metadata_mut().extend(config.to_metadata());
    io::save_weights(&args.output, &sd)?;
    println!(
        "{} → {}: {} tensors, {} parameters, {}",
        input.display(),
        args.output.display(),
        sd.len(),
        sd.numel(),
        config.name().map_or_else(|| describe(&config), |n| format!("{n} with {} classes", config.num_classes))
    );
    Ok(())
}
