//! `bitgrad convert IN OUT`: between timm's safetensors and the original BiT .npz (formats by
//! content on input, by extension on output), optionally changing the float dtype. The
//! architecture is inferred and stored in the safetensors metadata, so the file describes itself.

use std::path::PathBuf;

use bitgrad::models::io::{self, LoadOptions};
use bitgrad::models::{Error, ResNetV2Config, Result};
use bitgrad::DType;

use super::common::{describe, parse_dtype};
use super::export::batches_tracked;
use super::weights::WeightsSource;

#[derive(clap::Args)]
pub struct Args {
    /// Input weights (.safetensors or .npz, recognised by content, or a weight name); a training
    /// checkpoint's optimizer state is left out, BatchNorm counters are kept (safetensors).
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
    let full = io::load_weights(&input, &opts)?;
    let count = batches_tracked(&full);
    let mut sd = io::model_only(full).map_err(|e| Error::Msg(format!("{}: {e}", input.display())))?;
    let config = ResNetV2Config::infer(&sd)?;
    sd.metadata_mut().extend(config.to_metadata());
    let npz = args.output.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz"));
    if !npz {
        // A PyTorch BatchNorm state dict stays one: its counters go back in.
        sd = io::add_num_batches_tracked(sd, count)?;
    }
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
